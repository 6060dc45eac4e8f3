//! Setting up a clinic: registration, opening hours, resources, treatments
//! and pricing rules. Each is one `Clinic` command in one unit of work.

use clinicbook_domain::clinic::{Clinic, ClinicCommand};
use clinicbook_domain::policy::CancellationPolicy;
use clinicbook_domain::{ClinicId, Money, ResourceId, TreatmentId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use clinicbook_wire::admin::{
    parse_resource_kind, AddResource, AddTreatment, ClinicCreated, OpeningHoursInput,
    PricingRulesInput, RegisterClinic, ResourceCreated, TreatmentCreated, Updated,
};

use super::registered_clinic;
use crate::{CommandError, Commands, Ctx, Done};

/// One command on one clinic, answering `answer`: the use case behind
/// every clinic setup action. Any command but `Register` needs a
/// registered clinic, else `not_found` names the clinic.
struct OnClinic<T> {
    clinic_id: ClinicId,
    command: ClinicCommand,
    answer: T,
}

impl<T> UseCase for OnClinic<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync,
{
    type Output = T;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<T, UowError> {
        if !matches!(self.command, ClinicCommand::Register { .. }) {
            registered_clinic(uow, self.clinic_id).await?;
        }
        uow.handle::<Clinic>(&self.clinic_id.to_string(), self.command.clone())
            .await?;
        Ok(self.answer.clone())
    }
}

impl Commands {
    /// Runs `command` on the clinic `clinic_id` and answers `answer`.
    async fn on_clinic<T>(
        &self,
        ctx: &Ctx,
        clinic_id: ClinicId,
        command: ClinicCommand,
        answer: T,
    ) -> Result<Done<T>, CommandError>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync,
    {
        let use_case = OnClinic {
            clinic_id,
            command,
            answer,
        };
        self.run(ctx, &use_case).await
    }

    /// Registers a new clinic (`POST /v1/clinics`): closed until its
    /// opening hours are set, with no resources, treatments or pricing
    /// rules yet.
    ///
    /// # Errors
    /// `invalid_input` for an empty name, an unknown timezone, a currency
    /// that is not three upper-case letters or a late fee outside 0..=100;
    /// `already_exists` when `clinic_id` is taken; otherwise see
    /// [`CommandError`].
    pub async fn register_clinic(
        &self,
        ctx: &Ctx,
        input: RegisterClinic,
    ) -> Result<Done<ClinicCreated>, CommandError> {
        let clinic_id = input.clinic_id.map_or_else(ClinicId::new, ClinicId);
        let defaults = CancellationPolicy::default();
        let command = ClinicCommand::Register {
            clinic_id,
            name: input.name,
            timezone: input.timezone,
            currency: input.currency,
            cancellation_notice_hours: input
                .cancellation_notice_hours
                .unwrap_or(defaults.notice_hours),
            late_cancel_fee_percent: input
                .late_cancel_fee_percent
                .unwrap_or(defaults.late_fee_percent),
        };
        let answer = ClinicCreated {
            clinic_id: clinic_id.0,
        };
        self.on_clinic(ctx, clinic_id, command, answer).await
    }

    /// Replaces a clinic's weekly opening hours
    /// (`PUT /v1/clinics/{clinic_id}/opening-hours`). Existing bookings are
    /// kept; new ones must fit the new hours.
    ///
    /// # Errors
    /// `invalid_input` naming a malformed time (`mon[0][1]`) or
    /// `opening_hours` for empty, unsorted or overlapping ranges;
    /// `not_found` for an unknown clinic; otherwise see [`CommandError`].
    pub async fn set_opening_hours(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: OpeningHoursInput,
    ) -> Result<Done<Updated>, CommandError> {
        let command = ClinicCommand::SetOpeningHours {
            hours: input.to_domain()?,
        };
        let answer = Updated { clinic_id };
        self.on_clinic(ctx, ClinicId(clinic_id), command, answer)
            .await
    }

    /// Adds a room, device or practitioner to a clinic
    /// (`POST /v1/clinics/{clinic_id}/resources`).
    ///
    /// # Errors
    /// `invalid_input` for an empty name or an unknown `kind`;
    /// `duplicate_name` when the clinic has a resource of that name;
    /// `already_exists` when `resource_id` is taken; `not_found` for an
    /// unknown clinic; otherwise see [`CommandError`].
    pub async fn add_resource(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: AddResource,
    ) -> Result<Done<ResourceCreated>, CommandError> {
        let resource_id = input.resource_id.map_or_else(ResourceId::new, ResourceId);
        let command = ClinicCommand::AddResource {
            resource_id,
            name: input.name,
            kind: parse_resource_kind("kind", &input.kind)?,
        };
        let answer = ResourceCreated {
            resource_id: resource_id.0,
        };
        self.on_clinic(ctx, ClinicId(clinic_id), command, answer)
            .await
    }

    /// Adds a treatment to a clinic's offer
    /// (`POST /v1/clinics/{clinic_id}/treatments`).
    ///
    /// # Errors
    /// `invalid_input` for an empty name, a duration, buffer or price out of
    /// range, or an unknown `resource_kind`; `duplicate_name` when the clinic
    /// has a treatment of that name; `already_exists` when `treatment_id` is
    /// taken at this clinic; `not_found` for an unknown clinic; otherwise
    /// see [`CommandError`].
    pub async fn add_treatment(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: AddTreatment,
    ) -> Result<Done<TreatmentCreated>, CommandError> {
        let treatment_id = input
            .treatment_id
            .map_or_else(TreatmentId::new, TreatmentId);
        let command = ClinicCommand::AddTreatment {
            treatment_id,
            name: input.name,
            duration_minutes: input.duration_minutes,
            buffer_minutes: input.buffer_minutes,
            price: Money(input.price_cents),
            resource_kind: parse_resource_kind("resource_kind", &input.resource_kind)?,
        };
        let answer = TreatmentCreated {
            treatment_id: treatment_id.0,
        };
        self.on_clinic(ctx, ClinicId(clinic_id), command, answer)
            .await
    }

    /// Replaces a clinic's pricing rules
    /// (`PUT /v1/clinics/{clinic_id}/pricing-rules`). Bookings keep the
    /// price they were booked at.
    ///
    /// # Errors
    /// `invalid_input` naming the field (`rules[0].weekdays[1]`,
    /// `rules[0].from`, `rules[0].percent`, `last_minute.percent_off`, ...);
    /// `not_found` for an unknown clinic; otherwise see [`CommandError`].
    pub async fn set_pricing_rules(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: PricingRulesInput,
    ) -> Result<Done<Updated>, CommandError> {
        let command = ClinicCommand::SetPricingRules {
            rules: input.to_domain()?,
        };
        let answer = Updated { clinic_id };
        self.on_clinic(ctx, ClinicId(clinic_id), command, answer)
            .await
    }
}
