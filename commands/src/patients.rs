//! Patient use cases: register, update and erase a profile whose personal
//! fields are sealed with the patient's data key before anything is stored.
//!
//! No answer of these use cases holds personal data: answers are stored
//! with idempotency keys, and the database must hold no plaintext name,
//! email or phone (the API builds the profile it answers from the request).

use chrono::{DateTime, Utc};
use clinicbook_domain::patient::{Patient, PatientCommand, Profile};
use clinicbook_domain::{DomainError, PatientId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};
use clinicbook_wire::patients::{Checked, ErasePatient, PatientErased, PatientInput, PatientSaved};
use uuid::Uuid;

use crate::{CommandError, Commands, Ctx, Done};

/// Registers or updates a profile: seals the contact, then the command.
struct SaveProfile {
    patient_id: PatientId,
    checked: Checked,
    create: bool,
}

impl UseCase for SaveProfile {
    type Output = PatientSaved;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<PatientSaved, UowError> {
        let id = self.patient_id.to_string();
        let patient = uow.load::<Patient>(&id).await?;
        // Refusals first, so a refused command seals (and keys) nothing.
        if self.create {
            if patient.exists() {
                return Err(DomainError::AlreadyExists {
                    what: format!("patient {}", self.patient_id),
                }
                .into());
            }
        } else {
            patient.live_profile()?;
        }
        let contact = uow
            .seal_contact(self.patient_id, &self.checked.contact)
            .await?;
        let profile = Profile {
            contact,
            language: self.checked.language,
            consent: self.checked.consent,
        };
        let command = if self.create {
            PatientCommand::Register {
                patient_id: self.patient_id,
                profile,
            }
        } else {
            PatientCommand::Update { profile }
        };
        uow.handle::<Patient>(&id, command).await?;
        Ok(PatientSaved {
            patient_id: self.patient_id.0,
        })
    }
}

/// Erases a patient: `PatientErased` and the key's destruction, together.
struct Erase {
    patient_id: PatientId,
    reason: String,
    at: DateTime<Utc>,
}

impl UseCase for Erase {
    type Output = PatientErased;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<PatientErased, UowError> {
        let id = self.patient_id.to_string();
        uow.handle::<Patient>(
            &id,
            PatientCommand::Erase {
                reason: self.reason.clone(),
                at: self.at,
            },
        )
        .await?;
        uow.destroy_key(self.patient_id);
        Ok(PatientErased { erased_at: self.at })
    }
}

impl Commands {
    /// Creates a patient's profile (`POST /v1/patients`).
    ///
    /// # Errors
    /// `invalid_input` naming a malformed field (name, email, phone,
    /// language); `already_exists` when the id has a profile (or had one
    /// that was erased); otherwise see [`CommandError`].
    pub async fn register_patient(
        &self,
        ctx: &Ctx,
        input: &PatientInput,
    ) -> Result<Done<PatientSaved>, CommandError> {
        let use_case = SaveProfile {
            patient_id: input.patient_id.map_or_else(PatientId::new, PatientId),
            checked: input.check()?,
            create: true,
        };
        self.run(ctx, &use_case).await
    }

    /// Replaces a patient's profile (`PUT /v1/patients/{patient_id}`).
    ///
    /// # Errors
    /// `invalid_input` as for [`Commands::register_patient`];
    /// `inconsistent_input` when the body names another `patient_id`;
    /// `not_found` for a patient without a profile; `patient_erased` after
    /// erasure; otherwise see [`CommandError`].
    pub async fn update_patient(
        &self,
        ctx: &Ctx,
        patient_id: Uuid,
        input: &PatientInput,
    ) -> Result<Done<PatientSaved>, CommandError> {
        let checked = input.check()?;
        if input.patient_id.is_some_and(|id| id != patient_id) {
            return Err(DomainError::inconsistent(
                "patient_id",
                "must be the path's patient, if given",
            )
            .into());
        }
        let use_case = SaveProfile {
            patient_id: PatientId(patient_id),
            checked,
            create: false,
        };
        self.run(ctx, &use_case).await
    }

    /// Erases a patient's personal data (`POST /v1/patients/{patient_id}/erase`):
    /// the data key is destroyed in the transaction that records
    /// `PatientErased`.
    ///
    /// # Errors
    /// `invalid_input` for a blank reason; `not_found` for a patient
    /// without a profile; `patient_erased` when erased before; otherwise
    /// see [`CommandError`].
    pub async fn erase_patient(
        &self,
        ctx: &Ctx,
        patient_id: Uuid,
        input: &ErasePatient,
    ) -> Result<Done<PatientErased>, CommandError> {
        let use_case = Erase {
            patient_id: PatientId(patient_id),
            reason: input.reason.clone(),
            at: self.now(),
        };
        self.run(ctx, &use_case).await
    }
}
