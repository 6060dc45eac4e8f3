//! The message log of a reservation (`GET /v1/reservations/{id}/messages`),
//! with addresses opened by the patient's key, `"[erased]"` once it is
//! gone, and the wait for `min_position`.

use std::collections::HashMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use clinicbook_domain::patient::Sealed;
use clinicbook_domain::PatientId;
use clinicbook_eventstore::feed;
use clinicbook_eventstore::EventStore;
use clinicbook_projections::ProjectionError;
use clinicbook_wire::messages::{MessageList, MessageView};
use sqlx::Row;
use uuid::Uuid;

use super::{plan, MessageError};

/// The name the planner's progress goes by in `projection_lagging` answers.
pub const PLANNER: &str = "messages";

/// The message log, over the event store's database. Cheap to clone.
#[derive(Clone)]
pub struct Messages {
    store: EventStore,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages").finish_non_exhaustive()
    }
}

impl Messages {
    /// The log of the messages in `store`'s database.
    #[must_use]
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }

    /// The messages of `reservation_id`, oldest first (none for a
    /// reservation that has none, or does not exist).
    ///
    /// # Errors
    /// The database failed, or an address does not open with its key.
    pub async fn of_reservation(&self, reservation_id: Uuid) -> Result<MessageList, MessageError> {
        let rows = sqlx::query(
            "SELECT kind, channel, patient_id, to_sealed, language, sent_at, status, attempts
               FROM messages WHERE reservation_id = $1
              ORDER BY created_at, position, kind, channel",
        )
        .bind(reservation_id)
        .fetch_all(self.store.pool())
        .await?;
        let mut openers = HashMap::new();
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let patient: Uuid = row.try_get("patient_id")?;
            let opener = match openers.entry(patient) {
                std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                std::collections::hash_map::Entry::Vacant(new) => {
                    new.insert(self.store.opener(PatientId(patient)).await?)
                }
            };
            let to = opener.open(&Sealed(row.try_get("to_sealed")?))?;
            let decode = |what: &'static str, raw: String| MessageError::Decode {
                what,
                reason: format!("{raw:?} is not one"),
            };
            let kind: String = row.try_get("kind")?;
            let channel: String = row.try_get("channel")?;
            let status: String = row.try_get("status")?;
            messages.push(MessageView {
                kind: kind
                    .parse()
                    .map_err(|_| decode("messages.kind", kind.clone()))?,
                channel: channel
                    .parse()
                    .map_err(|_| decode("messages.channel", channel.clone()))?,
                to,
                language: row.try_get("language")?,
                sent_at: row.try_get("sent_at")?,
                status: status
                    .parse()
                    .map_err(|_| decode("messages.status", status.clone()))?,
                attempts: row.try_get("attempts")?,
            });
        }
        Ok(MessageList { messages })
    }

    /// Waits until the planner has decided on the event at `position`, for
    /// at most `timeout` (as the read models' `min_position`).
    ///
    /// # Errors
    /// `UnknownPosition` for a position no event has; `Lagging` when the
    /// time ran out; `Database` when the database failed.
    pub async fn wait_for(&self, position: i64, timeout: Duration) -> Result<(), ProjectionError> {
        if position <= 0 {
            return Ok(());
        }
        let pool = self.store.pool();
        let last: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(pool)
            .await
            .map_err(ProjectionError::from)?;
        if position > last {
            return Err(ProjectionError::UnknownPosition { position, last });
        }
        let poll = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(50))
            .without_max_times()
            .with_total_delay(Some(timeout));
        let reached = || async {
            let point = feed::point_of(pool, position).await.ok().flatten();
            let cursor = plan::cursor(pool).await.ok().flatten();
            match (point, cursor) {
                (Some(point), Some(cursor)) if cursor >= point => Ok(()),
                _ => Err(()),
            }
        };
        reached
            .retry(poll)
            .await
            .map_err(|()| ProjectionError::Lagging {
                projection: PLANNER.to_owned(),
                position,
            })
    }
}
