//! The projections: each module owns its tables (prefixed with its name,
//! so projections never clash in schema `read`) and their `apply`.
//!
//! Each projection is self-contained: it keeps its own copy of the
//! clinic and catalogue data it needs and never reads another
//! projection's tables, because each is rebuilt and swapped on its own
//! and may be at another point of the feed.
//!
//! The split follows who reads what: `schedule` (a clinic's day and free
//! slots), `reservations` (detail, history, waitlist), `wallets`,
//! `packages`, `reports` (analysts' facts) and `catalog` (clinics' setup
//! and programs, for the admin reads). The manager's dashboard is
//! answered from the `reports` tables rather than from a projection of
//! its own: it needs exactly the reports' facts (a day's reservations
//! with status and price, opening hours, closures, resources, waitlist),
//! so a separate copy would double the write cost of every event in a
//! rebuild and could disagree with the revenue report for the same day.

use crate::Projection;

pub mod catalog;
pub mod holds;
pub mod packages;
pub mod patients;
pub mod reports;
pub mod reservations;
pub mod schedule;
pub mod sql;
pub mod wallets;

/// Every projection, in a fixed order.
pub static ALL: &[Projection] = &[
    schedule::PROJECTION,
    reservations::PROJECTION,
    wallets::PROJECTION,
    packages::PROJECTION,
    patients::PROJECTION,
    reports::PROJECTION,
    catalog::PROJECTION,
    holds::PROJECTION,
];
