//! A clinic's setup and a program, as the admin reads answer them, from
//! the `catalog` projection.

use clinicbook_wire::admin::{ClinicView, ProgramView};
use uuid::Uuid;

use crate::models::catalog::{CLINICS, PROGRAMS};
use crate::models::sql::invalid_row;
use crate::{ProjectionError, ReadModels};

/// A count stored as `bigint` that the view answers as `u32`; one out of
/// range is an [`invalid_row`] of `table`, not a guess.
fn count(table: &'static str, column: &str, value: i64) -> Result<u32, ProjectionError> {
    u32::try_from(value)
        .map_err(|_| invalid_row(table, format!("{column} {value} is out of range")))
}

impl ReadModels {
    /// A clinic with its hours, resources, treatments, pricing rules and
    /// closures (`GET /v1/clinics/{clinic_id}`).
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for a clinic never registered; a row
    /// that does not read back; the database failed.
    pub async fn clinic(&self, clinic_id: Uuid) -> Result<ClinicView, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let row = CLINICS
            .load(&mut conn, "clinic_id", &[clinic_id])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ProjectionError::NotFound(format!("clinic {clinic_id}")))?;
        let table = CLINICS.def.name;
        Ok(ClinicView {
            clinic_id,
            name: row.name,
            timezone: row.timezone.name().to_owned(),
            currency: row.currency,
            cancellation_notice_hours: count(
                table,
                "cancellation_notice_hours",
                row.cancellation_notice_hours,
            )?,
            late_cancel_fee_percent: row.late_cancel_fee_percent,
            opening_hours: row.opening_hours,
            resources: row.resources,
            treatments: row.treatments,
            pricing_rules: row.pricing_rules,
            closures: row.closures,
        })
    }

    /// A program of the catalog (`GET /v1/programs/{program_id}`).
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for a program never created; a row
    /// that does not read back; the database failed.
    pub async fn program(&self, program_id: Uuid) -> Result<ProgramView, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let row = PROGRAMS
            .load(&mut conn, "program_id", &[program_id])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ProjectionError::NotFound(format!("program {program_id}")))?;
        Ok(row.view)
    }
}
