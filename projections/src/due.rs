//! The scheduler's read side: one table of due work (`read.due_work`,
//! keyed by kind and key, with the instant it falls due), kept from the
//! event feed by the `due_work` projection, and the claim of what is due.
//!
//! The events say what is due ([`clinicbook_domain::due`]): a hold held
//! falls due at its `expires_at`, and any end of the hold deletes the row;
//! a booking's reminder falls due the clinic's `reminder_minutes_before`
//! its start, a reschedule moves it and any end of the booking deletes it.
//! For that the projection keeps each clinic's reminder setting and each
//! booking's clinic (`due_reminder_clinics`, `due_reminder_bookings`), so
//! that it never reads another projection's tables, which may lag it.
//! Like the waitlist matcher's tables, these rows are work to do, not a
//! view, so the projection is never rebuilt (a rebuild would replay work
//! long done; the commands would refuse it anyway).
//!
//! [`ReadModels::claim_due`] claims one due row with a transaction-scoped
//! advisory lock (not a row lock: a row lock would give the claiming
//! transaction an id while the command runs, and hold the relay's horizon
//! back), so several processes never work on the same row at once; a
//! claim dropped (a crash, an error) lets the row go for another try.
//! [`DueClaim::finish`] deletes the row once its command is done.

use chrono::{DateTime, Utc};
use clinicbook_domain::clinic::{ClinicEvent, ClinicSettings};
use clinicbook_domain::due::{self, DueChange, DueWork};
use clinicbook_domain::hold::HoldEvent;
use clinicbook_domain::reservation::ReservationEvent;
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use crate::models::sql::{apply_fn, decode, read_table_exists, row, Index, Table};
use crate::{Projection, ProjectionError, ReadModels};

/// The scheduler's projection (not among the rebuildable ones).
pub static DUE_WORK: Projection = Projection {
    name: "due_work",
    tables: &[&DUE.def, &REMINDER_CLINICS.def, &REMINDER_BOOKINGS.def],
    ddl: "",
    kinds: &[
        AggregateKind::Hold,
        AggregateKind::Clinic,
        AggregateKind::Reservation,
    ],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `due_work`: work that falls due at a time, one per kind
    /// and key; `position` is the event that scheduled it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct DueRow {
        kind: String,
        key: String,
        due_at: DateTime<Utc>,
        position: i64,
    }
}

static DUE: Table<DueRow> = Table::new(
    "due_work",
    &["kind", "key"],
    &[Index::on("due_work_due_idx", "(due_at)")],
);

row! {
    /// A clinic's `reminder_minutes_before` (clinics without a row have
    /// the default).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct ReminderClinicRow {
        clinic_id: String,
        minutes_before: i64,
    }
}

static REMINDER_CLINICS: Table<ReminderClinicRow> =
    Table::new("due_reminder_clinics", &["clinic_id"], &[]);

row! {
    /// The clinic of a booked reservation (a reschedule names none).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct ReminderBookingRow {
        reservation_id: String,
        clinic_id: String,
    }
}

static REMINDER_BOOKINGS: Table<ReminderBookingRow> =
    Table::new("due_reminder_bookings", &["reservation_id"], &[]);

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    for event in events {
        match event.kind() {
            Some(AggregateKind::Hold) => {
                let change = due::of_hold(&event.aggregate_id, &decode::<HoldEvent>(event)?);
                record(conn, event.position, change).await?;
            }
            Some(AggregateKind::Clinic) => {
                if let ClinicEvent::SettingsChanged { settings } = decode::<ClinicEvent>(event)? {
                    let row = ReminderClinicRow {
                        clinic_id: event.aggregate_id.clone(),
                        minutes_before: i64::from(settings.reminder_minutes_before),
                    };
                    REMINDER_CLINICS.upsert(conn, &[row]).await?;
                }
            }
            Some(AggregateKind::Reservation) => {
                let change: ReservationEvent = decode(event)?;
                let id = &event.aggregate_id;
                let clinic =
                    match &change {
                        ReservationEvent::ReservationBooked { clinic_id, .. } => {
                            let row = ReminderBookingRow {
                                reservation_id: id.clone(),
                                clinic_id: clinic_id.to_string(),
                            };
                            REMINDER_BOOKINGS
                                .upsert(conn, std::slice::from_ref(&row))
                                .await?;
                            Some(row.clinic_id)
                        }
                        ReservationEvent::ReservationRescheduled { .. } => sqlx::query_scalar(
                            "SELECT clinic_id FROM due_reminder_bookings WHERE reservation_id = $1",
                        )
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?,
                        _ => None,
                    };
                let minutes = match clinic {
                    Some(clinic) => reminder_minutes(conn, &clinic).await?,
                    None => ClinicSettings::default().reminder_minutes_before,
                };
                if let Some(change) = due::of_reservation(id, &change, minutes, event.recorded_at) {
                    record(conn, event.position, change).await?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The clinic's `reminder_minutes_before` as of the events applied so far.
async fn reminder_minutes(conn: &mut PgConnection, clinic: &str) -> Result<u32, ProjectionError> {
    let minutes: Option<i64> =
        sqlx::query_scalar("SELECT minutes_before FROM due_reminder_clinics WHERE clinic_id = $1")
            .bind(clinic)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(minutes
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(ClinicSettings::default().reminder_minutes_before))
}

async fn record(
    conn: &mut PgConnection,
    position: i64,
    change: DueChange,
) -> Result<(), ProjectionError> {
    match change {
        DueChange::Schedule { kind, key, due_at } => {
            let row = DueRow {
                kind: kind.as_str().to_owned(),
                key,
                due_at,
                position,
            };
            DUE.upsert(conn, &[row]).await?;
        }
        DueChange::Done { kind, key } => {
            sqlx::query("DELETE FROM due_work WHERE kind = $1 AND key = $2")
                .bind(kind.as_str())
                .bind(key)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// Advisory-lock class of due work (the object id is the row's hash).
const CLAIM_CLASS: i32 = 0x4455_4500;

/// A due row claimed by this process. The claim is a transaction-scoped
/// advisory lock: no other worker takes the row until
/// [`DueClaim::finish`], or until the claim is dropped.
pub struct DueClaim {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The work.
    pub work: DueWork,
}

impl std::fmt::Debug for DueClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueClaim")
            .field("work", &self.work)
            .finish()
    }
}

impl DueClaim {
    /// Deletes the row (unless a later event moved its due time) and lets
    /// the claim go.
    ///
    /// # Errors
    /// The database failed; the row stays, for another try.
    pub async fn finish(mut self) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM read.due_work WHERE kind = $1 AND key = $2 AND due_at = $3")
            .bind(self.work.kind.as_str())
            .bind(&self.work.key)
            .bind(self.work.due_at)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

impl ReadModels {
    /// Claims the earliest row due at `now` that no other worker holds.
    ///
    /// # Errors
    /// The database failed, or a row names a kind this version does not
    /// know.
    pub async fn claim_due(&self, now: DateTime<Utc>) -> Result<Option<DueClaim>, ProjectionError> {
        let mut tx = self.pool().begin().await?;
        if !read_table_exists(&mut *tx, DUE.def.name).await? {
            return Ok(None);
        }
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT kind, key FROM read.due_work WHERE due_at <= $1 ORDER BY due_at LIMIT 16",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = None;
        for (kind, key) in due {
            let locked: bool = sqlx::query_scalar(
                "SELECT pg_try_advisory_xact_lock($1, hashtext($2 || '/' || $3))",
            )
            .bind(CLAIM_CLASS)
            .bind(&kind)
            .bind(&key)
            .fetch_one(&mut *tx)
            .await?;
            if locked {
                claimed = Some((kind, key));
                break;
            }
        }
        let Some((kind, key)) = claimed else {
            return Ok(None);
        };
        // Read again under the lock: another worker may have finished it
        // (deleted the row) between the list and the lock.
        let row = sqlx::query(
            "SELECT kind, key, due_at FROM read.due_work WHERE kind = $1 AND key = $2 AND due_at <= $3",
        )
        .bind(&kind)
        .bind(&key)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let kind: String = row.try_get("kind")?;
        let kind = kind.parse().map_err(|_| ProjectionError::Invalid {
            field: "due_work.kind",
            reason: format!("{kind:?} is not a kind of due work"),
        })?;
        Ok(Some(DueClaim {
            tx,
            work: DueWork {
                kind,
                key: row.try_get("key")?,
                due_at: row.try_get("due_at")?,
            },
        }))
    }

    /// When the work `kind`/`key` falls due, if it is waiting (tools,
    /// tests: a reminder armed, moved or disarmed).
    ///
    /// # Errors
    /// The database failed.
    pub async fn due_at(
        &self,
        kind: due::DueKind,
        key: &str,
    ) -> Result<Option<DateTime<Utc>>, ProjectionError> {
        let mut conn = self.pool().acquire().await?;
        if !read_table_exists(&mut *conn, DUE.def.name).await? {
            return Ok(None);
        }
        Ok(
            sqlx::query_scalar("SELECT due_at FROM read.due_work WHERE kind = $1 AND key = $2")
                .bind(kind.as_str())
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?,
        )
    }

    /// When the earliest due work falls due, if any is waiting.
    ///
    /// # Errors
    /// The database failed.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, ProjectionError> {
        let mut conn = self.pool().acquire().await?;
        if !read_table_exists(&mut *conn, DUE.def.name).await? {
            return Ok(None);
        }
        Ok(sqlx::query_scalar("SELECT min(due_at) FROM read.due_work")
            .fetch_one(&mut *conn)
            .await?)
    }
}
