//! The catalog: programs (packages patients buy) and promo codes.

use clinicbook_domain::program::{Program, ProgramCommand, ProgramTerms};
use clinicbook_domain::promo::{PromoCode, PromoCommand, PromoTerms};
use clinicbook_domain::{ClinicId, DomainError, Money, ProgramId, PromoCodeKey, TreatmentId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};
use uuid::Uuid;

use clinicbook_wire::admin::{
    CreateProgram, CreatePromoCode, ProgramCreated, PromoCreated, PromoDeactivated,
};

use super::registered_clinic;
use crate::{CommandError, Commands, Ctx, Done};

/// Creates a program once every clinic it names offers its treatment.
struct NewProgram {
    command: ProgramCommand,
}

impl UseCase for NewProgram {
    type Output = ProgramCreated;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<ProgramCreated, UowError> {
        let ProgramCommand::Create(ProgramTerms {
            program_id,
            treatment_id,
            clinic_ids,
            ..
        }) = &self.command;
        for &clinic_id in clinic_ids {
            let clinic = registered_clinic(uow, clinic_id).await?;
            if clinic.treatment(*treatment_id).is_none() {
                return Err(DomainError::not_found(format!(
                    "treatment {treatment_id} at clinic {clinic_id}"
                ))
                .into());
            }
        }
        uow.handle::<Program>(&program_id.to_string(), self.command.clone())
            .await?;
        Ok(ProgramCreated {
            program_id: program_id.0,
        })
    }
}

/// Creates a promo code.
struct NewPromoCode {
    code: PromoCodeKey,
    command: PromoCommand,
}

impl UseCase for NewPromoCode {
    type Output = PromoCreated;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<PromoCreated, UowError> {
        uow.handle::<PromoCode>(self.code.as_str(), self.command.clone())
            .await?;
        Ok(PromoCreated {
            code: self.code.to_string(),
        })
    }
}

/// Deactivates a promo code; a second time writes nothing.
struct DeactivatePromoCode {
    code: PromoCodeKey,
}

impl UseCase for DeactivatePromoCode {
    type Output = PromoDeactivated;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<PromoDeactivated, UowError> {
        if !uow
            .load::<PromoCode>(self.code.as_str())
            .await?
            .is_created()
        {
            return Err(DomainError::not_found(format!("promo code {}", self.code)).into());
        }
        uow.handle::<PromoCode>(self.code.as_str(), PromoCommand::Deactivate)
            .await?;
        Ok(PromoDeactivated {
            code: self.code.to_string(),
            active: false,
        })
    }
}

impl Commands {
    /// Adds a program to the catalog (`POST /v1/programs`): a number of
    /// sessions of one treatment, sold as a package valid at the listed
    /// clinics.
    ///
    /// # Errors
    /// `not_found` for a clinic that is not registered (`clinic <id>`) or
    /// does not offer the treatment (`treatment <id> at clinic <id>`);
    /// `invalid_input` for an empty name, zero sessions, a price that is not
    /// positive, a validity outside 1..=3650 days, or an empty or repeating
    /// `clinic_ids`; `already_exists` when `program_id` is taken; otherwise
    /// see [`CommandError`].
    pub async fn create_program(
        &self,
        ctx: &Ctx,
        input: CreateProgram,
    ) -> Result<Done<ProgramCreated>, CommandError> {
        let use_case = NewProgram {
            command: ProgramCommand::Create(ProgramTerms {
                program_id: input.program_id.map_or_else(ProgramId::new, ProgramId),
                name: input.name,
                treatment_id: TreatmentId(input.treatment_id),
                sessions: input.sessions,
                price: Money(input.price_cents),
                validity_days: input.validity_days,
                clinic_ids: input.clinic_ids.into_iter().map(ClinicId).collect(),
            }),
        };
        self.run(ctx, &use_case).await
    }

    /// Creates a promo code (`POST /v1/promo-codes`).
    ///
    /// # Errors
    /// `invalid_input` for a malformed code, none or both of `percent_off`
    /// and `amount_off_cents`, a discount out of range, `valid_until` not
    /// after `valid_from`, a zero limit or an empty `treatment_ids`;
    /// `not_found` for a treatment no clinic offers; `already_exists` when
    /// the code (in any case) exists; otherwise see [`CommandError`].
    pub async fn create_promo_code(
        &self,
        ctx: &Ctx,
        input: CreatePromoCode,
    ) -> Result<Done<PromoCreated>, CommandError> {
        let code = PromoCodeKey::parse(&input.code)?;
        let discount = input.discount()?;
        let treatment_ids = match &input.treatment_ids {
            Some(ids) => Some(self.offered_treatments(ids).await?),
            None => None,
        };
        let use_case = NewPromoCode {
            command: PromoCommand::Create(PromoTerms {
                code: code.clone(),
                discount,
                valid_from: input.valid_from,
                valid_until: input.valid_until,
                max_redemptions: input.max_redemptions,
                per_patient_limit: input.per_patient_limit,
                treatment_ids,
            }),
            code,
        };
        self.run(ctx, &use_case).await
    }

    /// Deactivates a promo code (`POST /v1/promo-codes/{code}/deactivate`):
    /// it accepts no more redemptions; those made stay. Deactivating it
    /// again answers the same and writes nothing.
    ///
    /// # Errors
    /// `invalid_input` for a malformed code; `not_found` for an unknown
    /// one; otherwise see [`CommandError`].
    pub async fn deactivate_promo_code(
        &self,
        ctx: &Ctx,
        code: &str,
    ) -> Result<Done<PromoDeactivated>, CommandError> {
        let use_case = DeactivatePromoCode {
            code: PromoCodeKey::parse(code)?,
        };
        self.run(ctx, &use_case).await
    }

    /// `ids` as treatment ids, once each is offered by some clinic. Read
    /// outside any unit of work: a treatment, once added, is never removed.
    async fn offered_treatments(&self, ids: &[Uuid]) -> Result<Vec<TreatmentId>, CommandError> {
        let mut treatments = Vec::with_capacity(ids.len());
        for &id in ids {
            let clinics = self
                .store()
                .lookup(
                    clinicbook_domain::AggregateKind::Clinic,
                    "TreatmentAdded",
                    &["TreatmentAdded", "treatment", "treatment_id"],
                    &id.to_string(),
                )
                .await?;
            if clinics.is_empty() {
                return Err(DomainError::not_found(format!("treatment {id}")).into());
            }
            treatments.push(TreatmentId(id));
        }
        Ok(treatments)
    }
}
