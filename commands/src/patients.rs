//! Patient use cases: register, update and erase a profile whose personal
//! fields are sealed with the patient's data key before anything is stored.
//!
//! No answer of these use cases holds personal data: answers are stored
//! with idempotency keys, and the database must hold no plaintext name,
//! email or phone (the API builds the profile it answers from the request).

use chrono::{DateTime, Utc};
use clinicbook_domain::patient::{Consent, Contact, Language, Patient, PatientCommand, Profile};
use clinicbook_domain::{DomainError, PatientId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};
use serde::{Deserialize, Serialize};
use strum::VariantNames;
use uuid::Uuid;

use crate::{CommandError, Commands, Ctx, Done};

/// What the patient agreed to be contacted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentInput {
    /// Email messages (confirmations, reminders, notices).
    pub email: bool,
    /// SMS texts (sent through the clinic's gateway as `message.sms` webhooks).
    pub sms: bool,
}

impl From<ConsentInput> for Consent {
    fn from(c: ConsentInput) -> Self {
        Consent {
            email: c.email,
            sms: c.sms,
        }
    }
}

impl From<Consent> for ConsentInput {
    fn from(c: Consent) -> Self {
        ConsentInput {
            email: c.email,
            sms: c.sms,
        }
    }
}

/// Body of `POST /v1/patients` and `PUT /v1/patients/{patient_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientInput {
    /// Id of the patient (one bookings may already name); chosen by the
    /// server when left out. On `PUT` it must be the path's, if given.
    #[serde(default)]
    pub patient_id: Option<Uuid>,
    /// Name (stored encrypted).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Name))]
    pub name: String,
    /// Email address (stored encrypted).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::EmailAddress>))]
    pub email: Option<String>,
    /// Phone number in E.164 form (stored encrypted).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::PhoneNumber>))]
    pub phone: Option<String>,
    /// Language of the patient's messages: `en` (default) or `de`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Language>))]
    pub language: Option<String>,
    /// What the patient agreed to be contacted by.
    pub consent: ConsentInput,
}

/// A profile as the API answers it: plaintext, built in memory, never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientView {
    /// The patient.
    pub patient_id: Uuid,
    /// Name.
    pub name: String,
    /// Email address.
    pub email: Option<String>,
    /// Phone number (E.164).
    pub phone: Option<String>,
    /// Language of the patient's messages.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Language))]
    pub language: String,
    /// What the patient agreed to be contacted by.
    pub consent: ConsentInput,
}

/// Answer of `POST /v1/patients` (and, inside, of `PUT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientSaved {
    /// The patient.
    pub patient_id: Uuid,
}

/// Body of `POST /v1/patients/{patient_id}/erase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErasePatient {
    /// Why (kept in the audit trail in plaintext: write no personal data here).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Name))]
    pub reason: String,
}

/// Answer of `POST /v1/patients/{patient_id}/erase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientErased {
    /// When the data was erased.
    pub erased_at: DateTime<Utc>,
}

/// The language named by `raw` (default `en`).
fn parse_language(raw: Option<&str>) -> Result<Language, DomainError> {
    match raw {
        None => Ok(Language::default()),
        Some(name) => name.parse().map_err(|_| {
            DomainError::invalid(
                "language",
                format!("must be one of {}", Language::VARIANTS.join(", ")),
            )
        }),
    }
}

/// A request checked: the contact in plaintext (valid), language, consent.
struct Checked {
    contact: Contact,
    language: Language,
    consent: Consent,
}

impl PatientInput {
    fn check(&self) -> Result<Checked, DomainError> {
        Ok(Checked {
            contact: Contact::parse(&self.name, self.email.as_deref(), self.phone.as_deref())?,
            language: parse_language(self.language.as_deref())?,
            consent: self.consent.into(),
        })
    }

    /// The profile this input sets, as `GET` answers it (trimmed, defaults
    /// filled in).
    ///
    /// # Errors
    /// `invalid_input` naming a field that is not valid.
    pub fn view(&self, patient_id: Uuid) -> Result<PatientView, DomainError> {
        let checked = self.check()?;
        Ok(PatientView {
            patient_id,
            name: checked.contact.name,
            email: checked.contact.email.map(|e| e.as_str().to_owned()),
            phone: checked.contact.phone.map(|p| p.as_str().to_owned()),
            language: <&'static str>::from(checked.language).to_owned(),
            consent: checked.consent.into(),
        })
    }
}

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_checked_and_default_to_english() {
        assert_eq!(parse_language(None), Ok(Language::En));
        assert_eq!(parse_language(Some("de")), Ok(Language::De));
        assert_eq!(
            parse_language(Some("DE")),
            Err(DomainError::invalid("language", "must be one of en, de"))
        );
    }
}
