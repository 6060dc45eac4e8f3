//! The cancellation policy: what a cancellation, a no-show or a displacement
//! gives back to the patient.
//!
//! A cancellation is *on time* when the start is at least `notice_hours`
//! after `now` (`start - now >= notice`), otherwise it is *late* and the fee
//! is `total.percent(late_fee_percent)` (rounded half away from zero).
//!
//! | event | payment | `refund` | `fee` | `session_restored` | `late` |
//! |---|---|---|---|---|---|
//! | cancel on time | wallet | total | 0 | no | no |
//! | cancel on time | package | 0 | 0 | yes | no |
//! | cancel on time | at clinic | 0 | 0 | no | no |
//! | cancel late | wallet | total − fee | fee | no | yes |
//! | cancel late | package | 0 | 0 (the session is the fee) | no | yes |
//! | cancel late | at clinic | 0 | fee (owed by the patient) | no | yes |
//! | no-show | wallet | 0 | total | no | yes |
//! | no-show | package | 0 | 0 (the session is forfeited) | no | yes |
//! | no-show | at clinic | 0 | total (owed by the patient) | no | yes |
//! | displacement | wallet | total | 0 | no | no |
//! | displacement | package | 0 | 0 | yes | no |
//! | displacement | at clinic | 0 | 0 | no | no |
//!
//! A no-show counts as `late`: the patient gave no notice at all. A
//! displacement is the clinic's doing, so the patient always gets everything
//! back.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::reservation::PaymentMethod;
use crate::{DomainError, Money};

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

impl CancellationPolicy {
    /// A policy with a notice period and a late fee in percent of the total.
    ///
    /// # Errors
    /// `DomainError::InvalidInput` naming `late_cancel_fee_percent` (the API
    /// field) when the fee is outside `0..=100`.
    pub fn new(notice_hours: u32, late_fee_percent: i64) -> Result<Self, DomainError> {
        if !(0..=100).contains(&late_fee_percent) {
            return Err(DomainError::invalid(
                "late_cancel_fee_percent",
                format!("must be between 0 and 100, got {late_fee_percent}"),
            ));
        }
        Ok(Self {
            notice_hours,
            late_fee_percent,
        })
    }

    /// True when cancelling at `now` an appointment starting at `start` gives
    /// less notice than the policy asks for (including after the start).
    pub fn is_late(&self, start: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        start - now < TimeDelta::hours(i64::from(self.notice_hours))
    }
}

/// What cancelling (or displacing, or a no-show) a reservation settles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationOutcome {
    /// Cancelled later than the notice period allows (always set for a no-show).
    pub late: bool,
    /// Money given back to the wallet (wallet payments only).
    pub refund: Money,
    /// Fee kept by (or, at-clinic payment, owed to) the clinic.
    pub fee: Money,
    /// The package session is given back.
    pub session_restored: bool,
}

impl CancellationOutcome {
    /// Everything given back: the whole wallet payment or the package session.
    fn full_return(payment: &PaymentMethod, total: Money) -> Self {
        match payment {
            PaymentMethod::Wallet => Self {
                refund: total,
                ..Self::default()
            },
            PaymentMethod::Package { .. } => Self {
                session_restored: true,
                ..Self::default()
            },
            PaymentMethod::AtClinic => Self::default(),
        }
    }

    /// A late settlement: `fee` is kept from a wallet payment (the rest goes
    /// back) or owed for an at-clinic one; a package session is forfeited
    /// instead of any fee.
    fn late(payment: &PaymentMethod, total: Money, fee: Money) -> Self {
        let late = true;
        match payment {
            PaymentMethod::Wallet => Self {
                late,
                refund: total - fee,
                fee,
                session_restored: false,
            },
            PaymentMethod::Package { .. } => Self {
                late,
                ..Self::default()
            },
            PaymentMethod::AtClinic => Self {
                late,
                fee,
                ..Self::default()
            },
        }
    }
}

/// What cancelling at `now` a reservation starting at `start`, paid with
/// `payment` for `total`, settles under `policy` (see the module table).
pub fn cancellation_outcome(
    policy: &CancellationPolicy,
    payment: &PaymentMethod,
    total: Money,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> CancellationOutcome {
    if policy.is_late(start, now) {
        CancellationOutcome::late(payment, total, total.percent(policy.late_fee_percent))
    } else {
        CancellationOutcome::full_return(payment, total)
    }
}

/// What a no-show settles: nothing comes back. A wallet payment is kept as
/// the fee, an at-clinic price is owed, a package session is forfeited.
pub fn no_show_outcome(payment: &PaymentMethod, total: Money) -> CancellationOutcome {
    CancellationOutcome::late(payment, total, total)
}

/// What a displacement (emergency block, closure) settles: everything comes
/// back, whatever the notice.
pub fn displacement_outcome(payment: &PaymentMethod, total: Money) -> CancellationOutcome {
    CancellationOutcome::full_return(payment, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::outcome;
    use crate::PackageId;

    const WALLET: PaymentMethod = PaymentMethod::Wallet;
    const AT_CLINIC: PaymentMethod = PaymentMethod::AtClinic;

    fn package() -> PaymentMethod {
        PaymentMethod::Package {
            package_id: PackageId::default(),
        }
    }

    /// The appointment starts at hour 100 after the epoch.
    fn start() -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::hours(100)
    }

    /// `hours` before the start.
    fn before_start(hours: i64) -> DateTime<Utc> {
        start() - TimeDelta::hours(hours)
    }

    fn policy() -> CancellationPolicy {
        CancellationPolicy {
            notice_hours: 24,
            late_fee_percent: 30,
        }
    }

    #[test]
    fn new_accepts_fees_from_0_to_100() {
        assert_eq!(
            CancellationPolicy::new(12, 0),
            Ok(CancellationPolicy {
                notice_hours: 12,
                late_fee_percent: 0
            })
        );
        assert!(CancellationPolicy::new(0, 100).is_ok());
    }

    #[test]
    fn new_refuses_fees_outside_0_to_100() {
        for fee in [-1, 101, i64::MIN, i64::MAX] {
            let error = CancellationPolicy::new(24, fee);
            assert!(
                matches!(&error, Err(DomainError::InvalidInput { field, .. }) if field == "late_cancel_fee_percent"),
                "{fee}: {error:?}"
            );
        }
    }

    #[test]
    fn exactly_the_notice_period_is_on_time() {
        assert!(!policy().is_late(start(), before_start(24)));
        assert!(policy().is_late(start(), before_start(24) + TimeDelta::seconds(1)));
        assert!(policy().is_late(start(), start() + TimeDelta::hours(1)));
    }

    #[test]
    fn on_time_cancellation_gives_everything_back() {
        let now = before_start(24);
        let total = Money(10_000);
        assert_eq!(
            cancellation_outcome(&policy(), &WALLET, total, start(), now),
            outcome(false, 10_000, 0, false)
        );
        assert_eq!(
            cancellation_outcome(&policy(), &package(), total, start(), now),
            outcome(false, 0, 0, true)
        );
        assert_eq!(
            cancellation_outcome(&policy(), &AT_CLINIC, total, start(), now),
            outcome(false, 0, 0, false)
        );
    }

    #[test]
    fn late_cancellation_charges_the_fee() {
        let now = before_start(2);
        // 30 % of 10 005 = 3 001.5, rounded half away from zero: 3 002.
        let total = Money(10_005);
        assert_eq!(
            cancellation_outcome(&policy(), &WALLET, total, start(), now),
            outcome(true, 7_003, 3_002, false)
        );
        assert_eq!(
            cancellation_outcome(&policy(), &package(), total, start(), now),
            outcome(true, 0, 0, false)
        );
        assert_eq!(
            cancellation_outcome(&policy(), &AT_CLINIC, total, start(), now),
            outcome(true, 0, 3_002, false)
        );
    }

    #[test]
    fn late_cancellation_with_a_zero_or_full_fee() {
        let now = before_start(1);
        let free = CancellationPolicy {
            notice_hours: 24,
            late_fee_percent: 0,
        };
        assert_eq!(
            cancellation_outcome(&free, &WALLET, Money(8_000), start(), now),
            outcome(true, 8_000, 0, false)
        );
        let full = CancellationPolicy {
            notice_hours: 24,
            late_fee_percent: 100,
        };
        assert_eq!(
            cancellation_outcome(&full, &WALLET, Money(8_000), start(), now),
            outcome(true, 0, 8_000, false)
        );
    }

    #[test]
    fn zero_notice_is_never_late_before_the_start() {
        let policy = CancellationPolicy {
            notice_hours: 0,
            late_fee_percent: 50,
        };
        assert!(!policy.is_late(start(), start()));
        assert!(policy.is_late(start(), start() + TimeDelta::seconds(1)));
    }

    #[test]
    fn no_show_gives_nothing_back() {
        let total = Money(4_500);
        assert_eq!(
            no_show_outcome(&WALLET, total),
            outcome(true, 0, 4_500, false)
        );
        assert_eq!(
            no_show_outcome(&package(), total),
            outcome(true, 0, 0, false)
        );
        assert_eq!(
            no_show_outcome(&AT_CLINIC, total),
            outcome(true, 0, 4_500, false)
        );
    }

    #[test]
    fn displacement_gives_everything_back() {
        let total = Money(4_500);
        assert_eq!(
            displacement_outcome(&WALLET, total),
            outcome(false, 4_500, 0, false)
        );
        assert_eq!(
            displacement_outcome(&package(), total),
            outcome(false, 0, 0, true)
        );
        assert_eq!(
            displacement_outcome(&AT_CLINIC, total),
            outcome(false, 0, 0, false)
        );
    }
}
