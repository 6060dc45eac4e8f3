//! The `Program` aggregate: a catalog entry that patients buy as a package.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::clinic::checked_name;
use crate::{ClinicId, DomainError, Money, ProgramId, TreatmentId};

/// The `Program` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Program {
    /// `None` until created.
    pub program_id: Option<ProgramId>,
    /// Name.
    pub name: String,
    /// Treatment of its sessions.
    pub treatment_id: Option<TreatmentId>,
    /// Sessions per package (positive).
    pub sessions: u32,
    /// Price (positive).
    pub price: Money,
    /// Days a package stays valid after purchase.
    pub validity_days: u32,
    /// Clinics where its packages are valid.
    pub clinic_ids: Vec<ClinicId>,
}

/// What a program is: what creating one names and what its creation
/// records, field for field (one shape for the command and the event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramTerms {
    /// The stream's id, named by packages bought from it; chosen by the
    /// caller, so a retried creation is recognised.
    pub program_id: ProgramId,
    /// Shown to staff; not empty (trimmed when created).
    pub name: String,
    /// What every session of its packages books.
    pub treatment_id: TreatmentId,
    /// How many reservations a package pays for (positive).
    pub sessions: u32,
    /// What a package costs, debited from the wallet when paid so (positive).
    pub price: Money,
    /// Days from purchase until a package expires (`1..=MAX_VALIDITY_DAYS`).
    pub validity_days: u32,
    /// Where its packages may be used (a transfer changes a package's); not
    /// empty, no clinic twice.
    pub clinic_ids: Vec<ClinicId>,
}

/// Commands of the `Program` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ProgramCommand {
    /// Create the program.
    Create(ProgramTerms),
}

/// Events of the `Program` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ProgramEvent {
    /// Created: everything a package bought from it copies at purchase
    /// (stored as the terms' fields, as before they were a type of their own).
    ProgramCreated(ProgramTerms),
}

/// Longest validity of a program (ten years). A bound keeps the expiry of a
/// package (purchase + validity) far inside the range of dates.
pub const MAX_VALIDITY_DAYS: u32 = 3650;

impl Program {
    /// True once the program was created.
    pub fn exists(&self) -> bool {
        self.program_id.is_some()
    }

    /// Checks `command` and returns the event it produces.
    ///
    /// # Errors
    /// `AlreadyExists` when the program was created before; `InvalidInput`
    /// for an empty name, zero sessions, a price that is not positive, a
    /// validity outside `1..=MAX_VALIDITY_DAYS`, or an empty or repeating
    /// list of clinics.
    pub fn decide(&self, command: ProgramCommand) -> Result<ProgramEvent, DomainError> {
        let ProgramCommand::Create(mut terms) = command;
        if self.exists() {
            return Err(DomainError::AlreadyExists {
                what: format!("program {}", terms.program_id),
            });
        }
        terms.name = checked_name("name", &terms.name)?;
        if terms.sessions == 0 {
            return Err(DomainError::invalid("sessions", "must be positive"));
        }
        if terms.price.cents() <= 0 {
            return Err(DomainError::invalid("price_cents", "must be positive"));
        }
        if !(1..=MAX_VALIDITY_DAYS).contains(&terms.validity_days) {
            return Err(DomainError::invalid(
                "validity_days",
                format!("must be within 1..={MAX_VALIDITY_DAYS}"),
            ));
        }
        if terms.clinic_ids.is_empty() {
            return Err(DomainError::invalid(
                "clinic_ids",
                "must name at least one clinic",
            ));
        }
        let mut seen = HashSet::new();
        if let Some(repeated) = terms.clinic_ids.iter().find(|id| !seen.insert(**id)) {
            return Err(DomainError::invalid(
                "clinic_ids",
                format!("{repeated} is listed twice"),
            ));
        }
        Ok(ProgramEvent::ProgramCreated(terms))
    }
}

impl Program {
    /// The state after `event` (the fold of every reader).
    pub fn evolve(&mut self, event: ProgramEvent) {
        match event {
            ProgramEvent::ProgramCreated(terms) => {
                *self = Program {
                    program_id: Some(terms.program_id),
                    name: terms.name,
                    treatment_id: Some(terms.treatment_id),
                    sessions: terms.sessions,
                    price: terms.price,
                    validity_days: terms.validity_days,
                    clinic_ids: terms.clinic_ids,
                };
            }
        }
    }
}

crate::aggregate::aggregate!(Program: ProgramCommand => ProgramEvent);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a broken fixture should fail the test loudly
mod tests {
    use cqrs_es::test::TestFramework;

    use cqrs_es::{Aggregate, DomainEvent};

    use super::*;

    type Given = TestFramework<Program>;

    fn clinic(n: u128) -> ClinicId {
        ClinicId(uuid::Uuid::from_u128(n))
    }

    fn program_id() -> ProgramId {
        ProgramId(uuid::Uuid::from_u128(42))
    }

    fn treatment_id() -> TreatmentId {
        TreatmentId(uuid::Uuid::from_u128(7))
    }

    fn terms() -> ProgramTerms {
        ProgramTerms {
            program_id: program_id(),
            name: "Laser x6".to_string(),
            treatment_id: treatment_id(),
            sessions: 6,
            price: Money(60_000),
            validity_days: 365,
            clinic_ids: vec![clinic(1), clinic(2)],
        }
    }

    fn create() -> ProgramCommand {
        ProgramCommand::Create(terms())
    }

    fn created() -> ProgramEvent {
        ProgramEvent::ProgramCreated(terms())
    }

    /// `ProgramCreated` is stored as the terms' fields under the variant
    /// name, as when the fields were the variant's own.
    #[test]
    fn program_created_keeps_its_stored_shape() {
        let t = terms();
        let stored = serde_json::json!({ "ProgramCreated": {
            "program_id": t.program_id,
            "name": t.name,
            "treatment_id": t.treatment_id,
            "sessions": t.sessions,
            "price": t.price,
            "validity_days": t.validity_days,
            "clinic_ids": t.clinic_ids,
        }});
        assert_eq!(serde_json::to_value(created()).unwrap(), stored);
        assert_eq!(
            serde_json::from_value::<ProgramEvent>(stored).unwrap(),
            created()
        );
    }

    /// `create()` with one field of its terms changed.
    fn create_with(change: impl FnOnce(&mut ProgramTerms)) -> ProgramCommand {
        let mut terms = terms();
        change(&mut terms);
        ProgramCommand::Create(terms)
    }

    fn refused(command: ProgramCommand, field: &str, reason: &str) {
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(DomainError::invalid(field, reason));
    }

    #[test]
    fn create_a_program() {
        Given::with(())
            .given_no_previous_events()
            .when(create())
            .then_expect_events(vec![created()]);
        let mut program = Program::default();
        program.apply(created());
        assert!(program.exists());
        assert_eq!(program.sessions, 6);
        assert_eq!(program.treatment_id, Some(treatment_id()));
    }

    #[test]
    fn create_trims_the_name() {
        let command = create_with(|ProgramTerms { name, .. }| *name = " Laser x6 ".to_string());
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn create_twice_is_refused() {
        Given::with(())
            .given(vec![created()])
            .when(create())
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("program {}", program_id()),
            });
    }

    #[test]
    fn create_refuses_an_empty_name() {
        let command = create_with(|ProgramTerms { name, .. }| name.clear());
        refused(command, "name", "must not be empty");
    }

    #[test]
    fn create_refuses_zero_sessions() {
        let command = create_with(|ProgramTerms { sessions, .. }| *sessions = 0);
        refused(command, "sessions", "must be positive");
    }

    #[test]
    fn create_refuses_a_price_that_is_not_positive() {
        for cents in [0, -100] {
            let command = create_with(|ProgramTerms { price, .. }| *price = Money(cents));
            refused(command, "price_cents", "must be positive");
        }
    }

    #[test]
    fn create_refuses_a_validity_outside_1_to_3650_days() {
        for days in [0, MAX_VALIDITY_DAYS + 1, u32::MAX] {
            let command = create_with(|ProgramTerms { validity_days, .. }| *validity_days = days);
            refused(command, "validity_days", "must be within 1..=3650");
        }
        let longest =
            create_with(|ProgramTerms { validity_days, .. }| *validity_days = MAX_VALIDITY_DAYS);
        assert!(Given::with(())
            .given_no_previous_events()
            .when(longest)
            .inspect_result()
            .is_ok());
    }

    #[test]
    fn create_refuses_no_clinics() {
        let command = create_with(|ProgramTerms { clinic_ids, .. }| clinic_ids.clear());
        refused(command, "clinic_ids", "must name at least one clinic");
    }

    #[test]
    fn create_refuses_a_clinic_listed_twice() {
        let command = create_with(|ProgramTerms { clinic_ids, .. }| {
            *clinic_ids = vec![clinic(1), clinic(2), clinic(1)];
        });
        refused(
            command,
            "clinic_ids",
            &format!("{} is listed twice", clinic(1)),
        );
    }

    #[test]
    fn event_type_is_the_variant_name() {
        assert_eq!(created().event_type(), "ProgramCreated");
        assert_eq!(created().event_version(), crate::EVENT_VERSION);
        assert_eq!(Program::TYPE, "Program");
    }
}
