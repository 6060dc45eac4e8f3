//! The `packages` projection: every package with its sessions (total,
//! used, left), validity, clinics and price, and its history — what
//! `GET /v1/packages/{package_id}` answers.
//!
//! Sessions used are kept as the set of reservations holding one (as the
//! aggregate does), so a consumed or restored session applied twice
//! changes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use clinicbook_domain::package::{PackageEvent, PackagePayment};
use clinicbook_eventstore::FeedEvent;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{decode, split, uuid_id, Table};
use crate::query::detail::PackageChange;
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "packages",
    ddl: DDL,
    apply,
};

const DDL: &str = r"
-- One row per package: its sessions, validity, clinics and price.
-- consumed_by lists the reservations holding a session (sessions_used is
-- its length); valid_until_ns holds the nanoseconds below the microsecond.
CREATE TABLE IF NOT EXISTS packages_packages (
    package_id        uuid PRIMARY KEY,
    patient_id        uuid,
    program_id        uuid,
    treatment_id      uuid,
    sessions_total    integer NOT NULL,
    sessions_used     integer NOT NULL,
    consumed_by       uuid[]  NOT NULL,
    valid_until       timestamptz,
    valid_until_ns    smallint,
    clinic_ids        uuid[]  NOT NULL,
    price_cents       bigint  NOT NULL,
    payment_method    text,
    payment_reference text,
    purchased_at      timestamptz,
    last_position     bigint  NOT NULL
);
CREATE INDEX IF NOT EXISTS packages_packages_patient ON packages_packages (patient_id);

-- Everything that happened to a package; change is the history entry as
-- answered (tagged by its event field).
CREATE TABLE IF NOT EXISTS packages_history (
    package_id     uuid   NOT NULL,
    sequence       bigint NOT NULL,
    recorded_at    timestamptz NOT NULL,
    event          text   NOT NULL,
    reservation_id uuid,
    change         jsonb  NOT NULL,
    position       bigint NOT NULL,
    PRIMARY KEY (package_id, sequence)
);
";

pub(crate) static PACKAGES: Table = Table {
    name: "packages_packages",
    key: &["package_id"],
    columns: &[
        ("package_id", "uuid"),
        ("patient_id", "uuid"),
        ("program_id", "uuid"),
        ("treatment_id", "uuid"),
        ("sessions_total", "integer"),
        ("sessions_used", "integer"),
        ("consumed_by", "uuid[]"),
        ("valid_until", "timestamptz"),
        ("valid_until_ns", "smallint"),
        ("clinic_ids", "uuid[]"),
        ("price_cents", "bigint"),
        ("payment_method", "text"),
        ("payment_reference", "text"),
        ("purchased_at", "timestamptz"),
        ("last_position", "bigint"),
    ],
};

pub(crate) static HISTORY: Table = Table {
    name: "packages_history",
    key: &["package_id", "sequence"],
    columns: &[
        ("package_id", "uuid"),
        ("sequence", "bigint"),
        ("recorded_at", "timestamptz"),
        ("event", "text"),
        ("reservation_id", "uuid"),
        ("change", "jsonb"),
        ("position", "bigint"),
    ],
};

/// A row of `packages_packages`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    pub package_id: Uuid,
    pub patient_id: Option<Uuid>,
    pub program_id: Option<Uuid>,
    pub treatment_id: Option<Uuid>,
    pub sessions_total: i32,
    pub sessions_used: i32,
    pub consumed_by: Vec<Uuid>,
    pub valid_until: Option<DateTime<Utc>>,
    pub valid_until_ns: Option<i16>,
    pub clinic_ids: Vec<Uuid>,
    pub price_cents: i64,
    pub payment_method: Option<String>,
    pub payment_reference: Option<String>,
    pub purchased_at: Option<DateTime<Utc>>,
    pub last_position: i64,
}

/// A row of `packages_history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct HistoryRow {
    pub package_id: Uuid,
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub event: String,
    pub reservation_id: Option<Uuid>,
    pub change: PackageChange,
    pub position: i64,
}

impl Row {
    fn new(package_id: Uuid) -> Self {
        Self {
            package_id,
            ..Self::default()
        }
    }

    /// Applies `event` as the aggregate does.
    fn apply(&mut self, event: &PackageEvent, position: i64) {
        self.last_position = position;
        match event {
            PackageEvent::PackagePurchased {
                patient_id,
                program_id,
                treatment_id,
                sessions,
                price,
                valid_until,
                clinic_ids,
                payment,
                purchased_at,
                ..
            } => {
                self.patient_id = Some(patient_id.0);
                self.program_id = Some(program_id.0);
                self.treatment_id = Some(treatment_id.0);
                self.sessions_total = i32::try_from(*sessions).unwrap_or(i32::MAX);
                let (until, ns) = split(*valid_until);
                self.valid_until = Some(until);
                self.valid_until_ns = Some(ns);
                self.clinic_ids = clinic_ids.iter().map(|id| id.0).collect();
                self.price_cents = price.cents();
                (self.payment_method, self.payment_reference) = match payment {
                    PackagePayment::Wallet => (Some("wallet".to_owned()), None),
                    PackagePayment::External { reference } => {
                        (Some("external".to_owned()), Some(reference.clone()))
                    }
                };
                self.purchased_at = Some(*purchased_at);
            }
            PackageEvent::SessionConsumed { reservation_id } => {
                let left = self.sessions_total - self.sessions_used;
                if !self.consumed_by.contains(&reservation_id.0) && left > 0 {
                    self.consumed_by.push(reservation_id.0);
                }
            }
            PackageEvent::SessionRestored { reservation_id } => {
                self.consumed_by.retain(|held| *held != reservation_id.0);
            }
            PackageEvent::PackageTransferred { to_clinic_id, .. } => {
                self.clinic_ids = vec![to_clinic_id.0];
            }
        }
        self.sessions_used = i32::try_from(self.consumed_by.len()).unwrap_or(i32::MAX);
    }
}

/// The stored name of a history entry's event and its reservation.
fn event_columns(change: &PackageChange) -> (&'static str, Option<Uuid>) {
    match change {
        PackageChange::Purchased { .. } => ("purchased", None),
        PackageChange::SessionConsumed { reservation_id } => {
            ("session_consumed", Some(*reservation_id))
        }
        PackageChange::SessionRestored { reservation_id } => {
            ("session_restored", Some(*reservation_id))
        }
        PackageChange::Transferred { .. } => ("transferred", None),
    }
}

fn apply<'a>(
    conn: &'a mut PgConnection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(apply_batch(conn, events))
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mine: Vec<&FeedEvent> = events
        .iter()
        .filter(|event| event.aggregate_type == "Package")
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    for event in &mine {
        ids.push(uuid_id(event)?);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut rows: HashMap<Uuid, Row> = PACKAGES
        .load::<Row, _>(conn, "package_id", &ids)
        .await?
        .into_iter()
        .map(|row| (row.package_id, row))
        .collect();
    let mut history = Vec::with_capacity(mine.len());
    for event in mine {
        let id = uuid_id(event)?;
        let change: PackageEvent = decode(event)?;
        rows.entry(id)
            .or_insert_with(|| Row::new(id))
            .apply(&change, event.position);
        let change = PackageChange::from(change);
        let (name, reservation_id) = event_columns(&change);
        history.push(HistoryRow {
            package_id: id,
            sequence: event.sequence,
            recorded_at: event.recorded_at,
            event: name.to_owned(),
            reservation_id,
            change,
            position: event.position,
        });
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by_key(|row| row.package_id);
    PACKAGES.upsert(conn, &rows).await?;
    HISTORY.insert_new(conn, &history).await?;
    Ok(())
}
