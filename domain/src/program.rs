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

/// Commands of the `Program` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ProgramCommand {
    /// Create the program.
    Create {
        /// Chosen by the caller, so a retried creation is recognised.
        program_id: ProgramId,
        /// Non-empty name.
        name: String,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Positive sessions.
        sessions: u32,
        /// Positive price.
        price: Money,
        /// Positive validity in days.
        validity_days: u32,
        /// Non-empty list of clinics.
        clinic_ids: Vec<ClinicId>,
    },
}

/// Events of the `Program` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ProgramEvent {
    /// Created: everything a package bought from it copies at purchase.
    ProgramCreated {
        /// The stream's id, named by packages bought from it.
        program_id: ProgramId,
        /// Shown to staff; checked non-empty when created.
        name: String,
        /// What every session of its packages books.
        treatment_id: TreatmentId,
        /// How many reservations a package pays for.
        sessions: u32,
        /// What a package costs, debited from the wallet when paid so.
        price: Money,
        /// Days from purchase until a package expires.
        validity_days: u32,
        /// Where its packages may be used (a transfer changes a package's).
        clinic_ids: Vec<ClinicId>,
    },
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
        let ProgramCommand::Create {
            program_id,
            name,
            treatment_id,
            sessions,
            price,
            validity_days,
            clinic_ids,
        } = command;
        if self.exists() {
            return Err(DomainError::AlreadyExists {
                what: format!("program {program_id}"),
            });
        }
        let name = checked_name("name", &name)?;
        if sessions == 0 {
            return Err(DomainError::invalid("sessions", "must be positive"));
        }
        if price.cents() <= 0 {
            return Err(DomainError::invalid("price_cents", "must be positive"));
        }
        if !(1..=MAX_VALIDITY_DAYS).contains(&validity_days) {
            return Err(DomainError::invalid(
                "validity_days",
                format!("must be within 1..={MAX_VALIDITY_DAYS}"),
            ));
        }
        if clinic_ids.is_empty() {
            return Err(DomainError::invalid(
                "clinic_ids",
                "must name at least one clinic",
            ));
        }
        let mut seen = HashSet::new();
        if let Some(repeated) = clinic_ids.iter().find(|id| !seen.insert(**id)) {
            return Err(DomainError::invalid(
                "clinic_ids",
                format!("{repeated} is listed twice"),
            ));
        }
        Ok(ProgramEvent::ProgramCreated {
            program_id,
            name,
            treatment_id,
            sessions,
            price,
            validity_days,
            clinic_ids,
        })
    }
}

impl Program {
    /// The state after `event` (the fold of every reader).
    pub fn evolve(&mut self, event: ProgramEvent) {
        match event {
            ProgramEvent::ProgramCreated {
                program_id,
                name,
                treatment_id,
                sessions,
                price,
                validity_days,
                clinic_ids,
            } => {
                *self = Program {
                    program_id: Some(program_id),
                    name,
                    treatment_id: Some(treatment_id),
                    sessions,
                    price,
                    validity_days,
                    clinic_ids,
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

    fn create() -> ProgramCommand {
        ProgramCommand::Create {
            program_id: program_id(),
            name: "Laser x6".to_string(),
            treatment_id: treatment_id(),
            sessions: 6,
            price: Money(60_000),
            validity_days: 365,
            clinic_ids: vec![clinic(1), clinic(2)],
        }
    }

    fn created() -> ProgramEvent {
        ProgramEvent::ProgramCreated {
            program_id: program_id(),
            name: "Laser x6".to_string(),
            treatment_id: treatment_id(),
            sessions: 6,
            price: Money(60_000),
            validity_days: 365,
            clinic_ids: vec![clinic(1), clinic(2)],
        }
    }

    /// `create()` with one field changed.
    fn create_with(change: impl FnOnce(&mut ProgramCommand)) -> ProgramCommand {
        let mut command = create();
        change(&mut command);
        command
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
        let command =
            create_with(|ProgramCommand::Create { name, .. }| *name = " Laser x6 ".to_string());
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
        let command = create_with(|ProgramCommand::Create { name, .. }| name.clear());
        refused(command, "name", "must not be empty");
    }

    #[test]
    fn create_refuses_zero_sessions() {
        let command = create_with(|ProgramCommand::Create { sessions, .. }| *sessions = 0);
        refused(command, "sessions", "must be positive");
    }

    #[test]
    fn create_refuses_a_price_that_is_not_positive() {
        for cents in [0, -100] {
            let command = create_with(|ProgramCommand::Create { price, .. }| *price = Money(cents));
            refused(command, "price_cents", "must be positive");
        }
    }

    #[test]
    fn create_refuses_a_validity_outside_1_to_3650_days() {
        for days in [0, MAX_VALIDITY_DAYS + 1, u32::MAX] {
            let command =
                create_with(|ProgramCommand::Create { validity_days, .. }| *validity_days = days);
            refused(command, "validity_days", "must be within 1..=3650");
        }
        let longest = create_with(|ProgramCommand::Create { validity_days, .. }| {
            *validity_days = MAX_VALIDITY_DAYS
        });
        assert!(Given::with(())
            .given_no_previous_events()
            .when(longest)
            .inspect_result()
            .is_ok());
    }

    #[test]
    fn create_refuses_no_clinics() {
        let command = create_with(|ProgramCommand::Create { clinic_ids, .. }| clinic_ids.clear());
        refused(command, "clinic_ids", "must name at least one clinic");
    }

    #[test]
    fn create_refuses_a_clinic_listed_twice() {
        let command = create_with(|ProgramCommand::Create { clinic_ids, .. }| {
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
