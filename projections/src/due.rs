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

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use clinicbook_domain::clinic::{ClinicEvent, ClinicSettings};
use clinicbook_domain::due::{self, DueChange, DueWork};
use clinicbook_domain::hold::HoldEvent;
use clinicbook_domain::reservation::ReservationEvent;
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use crate::models::sql::{apply_fn, decode, distinct, read_table_exists, row, Index, Table};
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

/// The key of a `due_work` row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct DueKey {
    kind: String,
    key: String,
}

/// An event of the batch that the projection uses, decoded once.
enum Used<'a> {
    Hold(&'a FeedEvent, HoldEvent),
    Settings(&'a FeedEvent, ClinicSettings),
    Reservation(&'a FeedEvent, ReservationEvent),
}

/// Folds the batch in feed order over what it starts from (the reminder
/// settings of the clinics it names and the clinics of the bookings it
/// reschedules, read in two statements), then writes each table once: the
/// last change of a row wins, as if the events were applied one by one.
async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mut used = Vec::with_capacity(events.len());
    for event in events {
        match event.kind() {
            Some(AggregateKind::Hold) => used.push(Used::Hold(event, decode(event)?)),
            Some(AggregateKind::Clinic) => {
                if let ClinicEvent::SettingsChanged { settings } = decode::<ClinicEvent>(event)? {
                    used.push(Used::Settings(event, settings));
                }
            }
            Some(AggregateKind::Reservation) => {
                used.push(Used::Reservation(event, decode(event)?));
            }
            _ => {}
        }
    }
    if used.is_empty() {
        return Ok(());
    }

    // Where the batch starts from.
    let rescheduled: Vec<String> = used
        .iter()
        .filter_map(|used| match used {
            Used::Reservation(event, ReservationEvent::ReservationRescheduled { .. }) => {
                Some(event.aggregate_id.clone())
            }
            _ => None,
        })
        .collect();
    let mut bookings: HashMap<String, String> = REMINDER_BOOKINGS
        .load_by(conn, &distinct(rescheduled), |row| {
            row.reservation_id.clone()
        })
        .await?
        .into_iter()
        .map(|(id, row)| (id, row.clinic_id))
        .collect();
    let clinics: Vec<String> = used
        .iter()
        .filter_map(|used| match used {
            Used::Reservation(_, ReservationEvent::ReservationBooked { clinic_id, .. }) => {
                Some(clinic_id.to_string())
            }
            _ => None,
        })
        .chain(bookings.values().cloned())
        .collect();
    let mut minutes: HashMap<String, i64> = REMINDER_CLINICS
        .load_by(conn, &distinct(clinics), |row| row.clinic_id.clone())
        .await?
        .into_iter()
        .map(|(id, row)| (id, row.minutes_before))
        .collect();

    // The fold.
    let mut clinic_rows: BTreeMap<String, ReminderClinicRow> = BTreeMap::new();
    let mut booking_rows: BTreeMap<String, ReminderBookingRow> = BTreeMap::new();
    let mut due: BTreeMap<DueKey, Option<DueRow>> = BTreeMap::new();
    let mut record = |position: i64, change: DueChange| match change {
        DueChange::Schedule { kind, key, due_at } => {
            let row = DueRow {
                kind: kind.as_str().to_owned(),
                key,
                due_at,
                position,
            };
            due.insert(
                DueKey {
                    kind: row.kind.clone(),
                    key: row.key.clone(),
                },
                Some(row),
            );
        }
        DueChange::Done { kind, key } => {
            due.insert(
                DueKey {
                    kind: kind.as_str().to_owned(),
                    key,
                },
                None,
            );
        }
    };
    for used in &used {
        match used {
            Used::Hold(event, change) => {
                record(event.position, due::of_hold(&event.aggregate_id, change));
            }
            Used::Settings(event, settings) => {
                let row = ReminderClinicRow {
                    clinic_id: event.aggregate_id.clone(),
                    minutes_before: i64::from(settings.reminder_minutes_before),
                };
                minutes.insert(row.clinic_id.clone(), row.minutes_before);
                clinic_rows.insert(row.clinic_id.clone(), row);
            }
            Used::Reservation(event, change) => {
                let id = &event.aggregate_id;
                let clinic = match change {
                    ReservationEvent::ReservationBooked { clinic_id, .. } => {
                        let row = ReminderBookingRow {
                            reservation_id: id.clone(),
                            clinic_id: clinic_id.to_string(),
                        };
                        bookings.insert(id.clone(), row.clinic_id.clone());
                        booking_rows.insert(id.clone(), row);
                        bookings.get(id)
                    }
                    ReservationEvent::ReservationRescheduled { .. } => bookings.get(id),
                    _ => None,
                };
                let minutes = clinic
                    .and_then(|clinic| minutes.get(clinic))
                    .and_then(|&m| u32::try_from(m).ok())
                    .unwrap_or(ClinicSettings::default().reminder_minutes_before);
                if let Some(change) = due::of_reservation(id, change, minutes, event.recorded_at) {
                    record(event.position, change);
                }
            }
        }
    }

    // Each table once.
    let clinic_rows: Vec<ReminderClinicRow> = clinic_rows.into_values().collect();
    REMINDER_CLINICS.upsert(conn, &clinic_rows).await?;
    let booking_rows: Vec<ReminderBookingRow> = booking_rows.into_values().collect();
    REMINDER_BOOKINGS.upsert(conn, &booking_rows).await?;
    let (done, scheduled): (Vec<_>, Vec<_>) = due.into_iter().partition(|(_, row)| row.is_none());
    let done: Vec<DueKey> = done.into_iter().map(|(key, _)| key).collect();
    DUE.delete(conn, &done).await?;
    let scheduled: Vec<DueRow> = scheduled.into_iter().filter_map(|(_, row)| row).collect();
    DUE.upsert(conn, &scheduled).await?;
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
