//! The `packages` projection: every package with its sessions (total,
//! used, left), validity, clinics and price, and its history — what
//! `GET /v1/packages/{package_id}` answers.
//!
//! Sessions used are kept as the set of reservations holding one (as the
//! aggregate does), so a consumed or restored session applied twice
//! changes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use clinicbook_domain::package::{PackageEvent, PackagePayment, PackagePaymentKind};
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{self, apply_fn, decode, row, uuid_id, Index, Table};
use crate::{Projection, ProjectionError};
use clinicbook_wire::money::PackageChange;

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "packages",
    tables: &[&PACKAGES.def, &HISTORY.def],
    ddl: "",
    kinds: &[AggregateKind::Package],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `packages_packages`: a package's sessions, validity,
    /// clinics and price. `consumed_by` lists the reservations holding a
    /// session (`sessions_used` is its length).
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Row {
        package_id: Uuid,
        patient_id: Option<Uuid>,
        program_id: Option<Uuid>,
        treatment_id: Option<Uuid>,
        sessions_total: i32,
        sessions_used: i32,
        consumed_by: Vec<Uuid>,
        valid_until: Option<DateTime<Utc>>,
        clinic_ids: Vec<Uuid>,
        price_cents: i64,
        payment_method: Option<PackagePaymentKind>,
        payment_reference: Option<String>,
        purchased_at: Option<DateTime<Utc>>,
        last_position: i64,
    }
}

pub(crate) static PACKAGES: Table<Row> = Table::new(
    "packages_packages",
    &["package_id"],
    &[Index::on("packages_packages_patient", "(patient_id)")],
);

row! {
    /// A row of `packages_history`: something that happened to a package;
    /// `change` is the history entry as answered, tagged by its `event`
    /// field, which `event` repeats for SQL.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct HistoryRow {
        package_id: Uuid,
        sequence: i64,
        recorded_at: DateTime<Utc>,
        event: String,
        reservation_id: Option<Uuid>,
        change: PackageChange,
        position: i64,
    }
}

pub(crate) static HISTORY: Table<HistoryRow> =
    Table::new("packages_history", &["package_id", "sequence"], &[]);

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
                self.valid_until = Some(*valid_until);
                self.clinic_ids = clinic_ids.iter().map(|id| id.0).collect();
                self.price_cents = price.cents();
                self.payment_method = Some(PackagePaymentKind::from(payment));
                self.payment_reference = match payment {
                    PackagePayment::Wallet => None,
                    PackagePayment::External { reference } => Some(reference.clone()),
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

/// A history entry is stored as the JSON it is answered as.
impl sql::SqlType for PackageChange {
    const SQL: &'static str = "jsonb";
}

/// The `event` tag serde gives a history entry (so its names are written
/// once, by `PackageChange`) and its reservation.
fn event_columns(
    event: &FeedEvent,
    change: &PackageChange,
) -> Result<(String, Option<Uuid>), ProjectionError> {
    let reservation_id = match change {
        PackageChange::SessionConsumed { reservation_id }
        | PackageChange::SessionRestored { reservation_id } => Some(*reservation_id),
        PackageChange::Purchased { .. } | PackageChange::Transferred { .. } => None,
    };
    let json = serde_json::to_value(change).map_err(|e| sql::invalid(event, e))?;
    let name = json
        .get("event")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| sql::invalid(event, "a package change without its event tag"))?;
    Ok((name, reservation_id))
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mine: Vec<&FeedEvent> = events
        .iter()
        .filter(|event| event.kind() == Some(AggregateKind::Package))
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let mut rows: HashMap<Uuid, Row> = PACKAGES
        .load_streams(conn, &mine, |row: &Row| row.package_id)
        .await?;
    let mut history = Vec::with_capacity(mine.len());
    for event in mine {
        let id = uuid_id(event)?;
        let change: PackageEvent = decode(event)?;
        rows.entry(id)
            .or_insert_with(|| Row::new(id))
            .apply(&change, event.position);
        let change = PackageChange::from(change);
        let (name, reservation_id) = event_columns(event, &change)?;
        history.push(HistoryRow {
            package_id: id,
            sequence: event.sequence,
            recorded_at: event.recorded_at,
            event: name,
            reservation_id,
            change,
            position: event.position,
        });
    }
    PACKAGES.upsert_all(conn, rows).await?;
    HISTORY.insert_new(conn, &history).await?;
    Ok(())
}
