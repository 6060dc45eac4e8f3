//! A hold as staff see it (`GET /v1/holds/{hold_id}`), from the `holds`
//! projection; and the open offer of a waitlisted reservation.

use clinicbook_wire::booking::PriceAnswer;
use clinicbook_wire::holds::{HoldView, Offer};
use uuid::Uuid;

use crate::models::holds::{HoldRow, HOLDS};
use crate::models::sql::json_rows;
use crate::{ProjectionError, ReadModels};

/// The view of a hold's row.
fn view(row: HoldRow) -> HoldView {
    HoldView {
        hold_id: row.hold_id,
        status: row.status.as_str().to_owned(),
        expires_at: row.expires_at,
        reservation_id: row.reservation_id,
        offer_for: row.offer_for,
        patient_id: row.patient_id,
        clinic_id: row.clinic_id,
        resource_id: row.resource_id,
        treatment_id: row.treatment_id,
        start: row.starts_at,
        end: row.ends_at,
        price: PriceAnswer {
            base_cents: row.base_cents,
            adjustments_cents: row.adjustments_cents,
            discount_cents: row.discount_cents,
            total_cents: row.total_cents,
        },
    }
}

impl ReadModels {
    /// A hold.
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for a hold the projection does not
    /// know; the database failed.
    pub async fn hold(&self, hold_id: Uuid) -> Result<HoldView, ProjectionError> {
        let mut conn = self.read_connection().await?;
        HOLDS
            .load(&mut conn, "hold_id", &[hold_id])
            .await?
            .into_iter()
            .next()
            .map(view)
            .ok_or_else(|| ProjectionError::NotFound(format!("hold {hold_id}")))
    }

    /// The open (held) offer of a waitlisted reservation, if it has one.
    ///
    /// # Errors
    /// The database failed.
    pub async fn open_offer(&self, reservation_id: Uuid) -> Result<Option<Offer>, ProjectionError> {
        let mut conn = self.read_connection().await?;
        Self::offer_in(&mut conn, reservation_id).await
    }

    /// [`ReadModels::open_offer`] in a read transaction already open.
    pub(crate) async fn offer_in(
        conn: &mut sqlx::PgConnection,
        reservation_id: Uuid,
    ) -> Result<Option<Offer>, ProjectionError> {
        let query = sqlx::query_scalar(
            "SELECT row_to_json(t) FROM holds_holds t
              WHERE offer_for = $1 AND status = 'held' ORDER BY held_at DESC LIMIT 1",
        )
        .bind(reservation_id);
        let rows: Vec<HoldRow> = json_rows(query, conn, HOLDS.def.name).await?;
        Ok(rows.into_iter().next().map(|row| Offer {
            hold_id: row.hold_id,
            expires_at: row.expires_at,
        }))
    }
}
