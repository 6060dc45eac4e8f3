//! The pure domain model of clinicbook: aggregates, their commands and events,
//! the single domain error type, dynamic pricing and the cancellation policy.
//!
//! This crate performs no I/O and owns no async runtime, database or broker
//! client: it depends only on `cqrs-es` (for the `Aggregate` trait), serde,
//! chrono, chrono-tz, uuid and thiserror. Time is always passed in (`now`
//! fields on commands), so every rule is deterministic and testable.

/// Declares an enum whose variants are named in `snake_case` wherever a
/// name is written: by serde (JSON answers, stored events, read-model
/// columns) and by strum (`&'static str` through `Into`, parsing through
/// `FromStr`, the list `VARIANTS`). The naming rule is written once, here;
/// further derives (`Default`, `Ord`) go on the enum as usual.
macro_rules! named {
    ($(#[$meta:meta])* $vis:vis enum $name:ident $body:tt) => {
        $(#[$meta])*
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Hash,
            serde::Serialize,
            serde::Deserialize,
            strum::IntoStaticStr,
            strum::EnumString,
            strum::VariantNames,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        $vis enum $name $body
    };
}

pub mod aggregate;
pub mod calendar;
pub mod clinic;
pub mod due;
pub mod error;
pub mod hold;
pub mod ids;
pub mod money;
pub mod offers;
pub mod package;
pub mod patient;
pub mod policy;
pub mod pricing;
pub mod program;
pub mod promo;
pub mod reservation;
pub mod schedule;
pub mod upcast;
pub mod waitlist;
pub mod wallet;

#[cfg(test)]
mod testing;

pub use aggregate::{AggregateKind, UnknownAggregateType};
pub use error::DomainError;
pub use ids::*;
pub use money::Money;

/// `at` cut (not rounded) to the microsecond: the precision of every
/// instant clinicbook records (PostgreSQL keeps microseconds), so what an
/// event records, what its metadata says, what a command answers and what
/// a read model stores are the same instant.
#[must_use]
pub fn micros(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    at.trunc_subsecs(6)
}

/// Version string written with every event of the current schema, except
/// those that changed shape since (see [`upcast::current_version`]).
///
/// It must parse as a semantic version: cqrs-es upcasters silently skip
/// events whose version does not.
pub const EVENT_VERSION: &str = "1.0.0";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod names {
    //! Every enum whose names are stored or answered derives them twice
    //! (serde for JSON, strum for `&str` and parsing) from one `snake_case`
    //! rule: the two must agree, and parse back.

    use std::str::FromStr;

    use serde::Serialize;
    use strum::VariantNames;

    use crate::clinic::ResourceKind;
    use crate::package::{PackagePayment, PackagePaymentKind};
    use crate::reservation::{PaymentKind, PaymentMethod, ReservationStatus};
    use crate::schedule::Weekday;
    use crate::wallet::TransactionKind;
    use crate::PackageId;

    fn serde_name(value: impl Serialize) -> String {
        serde_json::to_value(value)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn agree<T>(all: &[T])
    where
        T: Copy + Serialize + FromStr + PartialEq + std::fmt::Debug + Into<&'static str>,
    {
        for value in all {
            let name: &'static str = (*value).into();
            assert_eq!(serde_name(value), name);
            assert_eq!(T::from_str(name).ok(), Some(*value));
        }
    }

    #[test]
    fn serde_and_strum_names_agree() {
        agree(&ReservationStatus::ALL);
        agree(&Weekday::ALL);
        agree(&crate::patient::Language::ALL);
        agree(&[
            ResourceKind::Room,
            ResourceKind::Device,
            ResourceKind::Practitioner,
        ]);
        assert_eq!(ResourceKind::VARIANTS, ["room", "device", "practitioner"]);
        agree(&[
            TransactionKind::Deposit,
            TransactionKind::Debit,
            TransactionKind::Credit,
            TransactionKind::Refund,
        ]);
        agree(&crate::hold::HoldStatus::ALL);
        agree(&[
            crate::clinic::WaitlistMode::AutoBook,
            crate::clinic::WaitlistMode::Offer,
        ]);
        assert_eq!(
            crate::clinic::WaitlistMode::VARIANTS,
            ["auto_book", "offer"]
        );
        assert!(ReservationStatus::from_str("Booked").is_err());
    }

    #[test]
    fn payment_kinds_are_the_method_tags() {
        let package = PaymentMethod::Package {
            package_id: PackageId(uuid::Uuid::nil()),
        };
        for method in [package, PaymentMethod::Wallet, PaymentMethod::AtClinic] {
            let tag = serde_json::to_value(method).unwrap()["method"].clone();
            let kind = PaymentKind::from(method);
            let name: &'static str = kind.into();
            assert_eq!(tag, name);
            assert_eq!(serde_name(kind), name);
        }
        let paid = [
            PackagePayment::Wallet,
            PackagePayment::External {
                reference: "x".to_owned(),
            },
        ];
        for payment in paid {
            let tag = serde_json::to_value(&payment).unwrap()["method"].clone();
            let kind = PackagePaymentKind::from(&payment);
            let name: &'static str = kind.into();
            assert_eq!(tag, name);
            assert_eq!(serde_name(kind), name);
        }
    }
}
