//! The cancellation policy: what a cancellation, a no-show or a displacement
//! gives back to the patient.

use serde::{Deserialize, Serialize};

use crate::Money;

/// A clinic's cancellation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationPolicy {
    /// Cancelling at least this many hours before the start is free.
    pub notice_hours: u32,
    /// Percent of the total kept as a fee on a late cancellation (0..=100).
    pub late_fee_percent: i64,
}

impl Default for CancellationPolicy {
    fn default() -> Self {
        Self {
            notice_hours: 24,
            late_fee_percent: 50,
        }
    }
}

/// What cancelling (or displacing, or a no-show) a reservation settles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationOutcome {
    /// Cancelled later than the notice period allows.
    pub late: bool,
    /// Money given back to the wallet (wallet payments only).
    pub refund: Money,
    /// Fee kept by (or, at-clinic payment, owed to) the clinic.
    pub fee: Money,
    /// The package session is given back.
    pub session_restored: bool,
}
