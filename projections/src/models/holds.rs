//! The `holds` projection: every hold with its slot, quoted price, expiry
//! and status — what `GET /v1/holds/{hold_id}` answers, and the offers a
//! reservation's view shows.

use chrono::{DateTime, Utc};
use clinicbook_domain::hold::{HoldEvent, HoldStatus};
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::sql::{apply_fn, decode, row, uuid_id, Index, Table};
use crate::{Projection, ProjectionError};
use uuid::Uuid;

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "holds",
    tables: &[&HOLDS.def],
    ddl: "",
    kinds: &[AggregateKind::Hold],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `holds_holds`: one hold.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct HoldRow {
        hold_id: Uuid,
        status: HoldStatus,
        patient_id: Uuid,
        clinic_id: Uuid,
        resource_id: Uuid,
        treatment_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        base_cents: i64,
        adjustments_cents: i64,
        discount_cents: i64,
        total_cents: i64,
        reservation_id: Option<Uuid>,
        offer_for: Option<Uuid>,
        held_at: DateTime<Utc>,
    }
}

pub(crate) static HOLDS: Table<HoldRow> = Table::new(
    "holds_holds",
    &["hold_id"],
    &[Index::on("holds_holds_offer", "(offer_for, status)")],
);

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let events: Vec<&FeedEvent> = events
        .iter()
        .filter(|e| e.kind() == Some(AggregateKind::Hold))
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = HOLDS
        .load_streams(conn, &events, |row: &HoldRow| row.hold_id)
        .await?;
    for event in events {
        let id = uuid_id(event)?;
        let status = match decode::<HoldEvent>(event)? {
            HoldEvent::Held { terms, held_at, .. } => {
                rows.insert(
                    id,
                    HoldRow {
                        hold_id: id,
                        status: HoldStatus::Held,
                        patient_id: terms.patient_id.0,
                        clinic_id: terms.clinic_id.0,
                        resource_id: terms.slot.resource_id.0,
                        treatment_id: terms.treatment_id.0,
                        starts_at: terms.slot.start,
                        ends_at: terms.slot.end,
                        expires_at: terms.expires_at,
                        base_cents: terms.price.base.cents(),
                        adjustments_cents: terms.price.adjustments.cents(),
                        discount_cents: terms.price.discount.cents(),
                        total_cents: terms.price.total.cents(),
                        reservation_id: None,
                        offer_for: terms.offer_for.map(|r| r.0),
                        held_at,
                    },
                );
                continue;
            }
            HoldEvent::HoldConfirmed { reservation_id, .. } => {
                if let Some(row) = rows.get_mut(&id) {
                    row.reservation_id = Some(reservation_id.0);
                }
                HoldStatus::Confirmed
            }
            HoldEvent::HoldReleased { .. } => HoldStatus::Released,
            HoldEvent::HoldExpired { .. } => HoldStatus::Expired,
        };
        if let Some(row) = rows.get_mut(&id) {
            row.status = status;
        }
    }
    HOLDS.upsert_all(conn, rows).await
}
