//! The `Program` aggregate: a catalog entry that patients buy as a package.

use serde::{Deserialize, Serialize};

use crate::{ClinicId, Money, ProgramId, TreatmentId};

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
        /// Id.
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ProgramEvent {
    /// Created.
    ProgramCreated {
        /// Id.
        program_id: ProgramId,
        /// Name.
        name: String,
        /// Treatment.
        treatment_id: TreatmentId,
        /// Sessions.
        sessions: u32,
        /// Price.
        price: Money,
        /// Validity days.
        validity_days: u32,
        /// Clinics.
        clinic_ids: Vec<ClinicId>,
    },
}
