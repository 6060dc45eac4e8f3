//! Checkpoints and the one routine that applies events: a batch and its
//! checkpoint move in one transaction, and events at or before the
//! checkpoint are skipped, so redelivery is harmless.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use clinicbook_eventstore::feed;
use clinicbook_eventstore::{FeedEvent, FeedPoint};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::{Executor, PgConnection, PgPool, Row};

use crate::cache::AvailabilityCache;
use crate::{Projection, ProjectionError};

/// The schema live read models are in.
pub const READ_SCHEMA: &str = "read";

/// The read side's handle on PostgreSQL: where projectors write and read
/// routes read. Cheap to clone; clones share the availability cache.
#[derive(Clone, Debug)]
pub struct ReadModels {
    pool: PgPool,
    availability: AvailabilityCache,
}

/// Where a projection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Projection name.
    pub projection: String,
    /// The last event it applied.
    pub point: FeedPoint,
    /// How many events it has applied (skipped ones not counted).
    pub applied: i64,
}

impl ReadModels {
    /// Reads and writes through `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            availability: AvailabilityCache::default(),
        }
    }

    /// The same read models through another pool, sharing the
    /// availability cache: `serve` reads through the API's pool while its
    /// projectors write through their own, and the projectors' batches
    /// must reach the cache the reads answer from.
    #[must_use]
    pub fn with_pool(&self, pool: PgPool) -> Self {
        Self {
            pool,
            availability: self.availability.clone(),
        }
    }

    /// The availability cache (see [`crate::cache`]).
    pub(crate) fn availability_cache(&self) -> &AvailabilityCache {
        &self.availability
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates `projection`'s live tables if they do not exist yet and its
    /// checkpoint row.
    ///
    /// # Errors
    /// The database failed or the DDL is invalid.
    pub async fn ensure(&self, projection: &Projection) -> Result<(), ProjectionError> {
        let mut tx = self.pool.begin().await?;
        // One projector at a time creates tables (CREATE IF NOT EXISTS races).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('clinicbook.read.ddl'))")
            .execute(&mut *tx)
            .await?;
        create_tables(&mut tx, READ_SCHEMA, projection).await?;
        sqlx::query(
            "INSERT INTO read.checkpoints (projection, ddl_hash) VALUES ($1, $2)
             ON CONFLICT (projection) DO NOTHING",
        )
        .bind(projection.name)
        .bind(ddl_hash(projection))
        .execute(&mut *tx)
        .await?;
        let built_with: String =
            sqlx::query_scalar("SELECT ddl_hash FROM read.checkpoints WHERE projection = $1")
                .bind(projection.name)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        if built_with != ddl_hash(projection) {
            tracing::warn!(
                projection = projection.name,
                "its tables were built by another version; starting `serve` rebuilds them \
                 (or run `clinicbook rebuild {}`)",
                projection.name
            );
        }
        Ok(())
    }

    /// Creates the live tables of every projection that lacks them, so
    /// reads answer (empty) before any projector ran, and rebuilds those
    /// built from another version's DDL
    /// ([`crate::rebuild::rebuild_if_stale`]).
    ///
    /// # Errors
    /// The database failed, a DDL is invalid or a rebuild failed.
    pub async fn ensure_all(&self) -> Result<(), ProjectionError> {
        for projection in crate::projections() {
            self.ensure(projection).await?;
            crate::rebuild::rebuild_if_stale(self, projection).await?;
        }
        Ok(())
    }

    /// `projection`'s checkpoint (the start when it has none).
    ///
    /// # Errors
    /// The database failed.
    pub async fn checkpoint(&self, projection: &str) -> Result<Checkpoint, ProjectionError> {
        let row = sqlx::query(
            "SELECT transaction_id, position, applied FROM read.checkpoints WHERE projection = $1",
        )
        .bind(projection)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Checkpoint {
                projection: projection.to_owned(),
                point: FeedPoint {
                    transaction_id: row.try_get("transaction_id")?,
                    position: row.try_get("position")?,
                },
                applied: row.try_get("applied")?,
            },
            None => Checkpoint {
                projection: projection.to_owned(),
                point: FeedPoint::START,
                applied: 0,
            },
        })
    }

    /// Applies `events` (in feed order) to `projection`'s live tables and
    /// moves its checkpoint, in one transaction. Events at or before the
    /// checkpoint are skipped. Answers the checkpoint after the batch.
    ///
    /// # Errors
    /// The database failed or an event could not be applied; nothing moved.
    pub async fn apply(
        &self,
        projection: &Projection,
        events: &[FeedEvent],
    ) -> Result<FeedPoint, ProjectionError> {
        let taken: Vec<(FeedPoint, Option<&FeedEvent>)> = events
            .iter()
            .map(|event| (event.point(), Some(event)))
            .collect();
        self.apply_taken(projection, None, &taken).await
    }

    /// What a projector calls with a batch it took after `from`, the
    /// checkpoint it last saw: every event after `from` up to the last
    /// one, each with its point, and decoded when `projection` reads its
    /// kind ([`Projection::reads`]). Moves the checkpoint to the last one.
    ///
    /// A batch without an event the projection reads applies nothing: one
    /// statement moves the checkpoint, and only from `from` (a checkpoint
    /// moved since, by another process or a rebuild, takes the
    /// transaction instead). Answers the checkpoint after the batch.
    ///
    /// # Errors
    /// The database failed or an event could not be applied (nothing
    /// moved); [`ProjectionError::CheckpointMovedBack`] when the
    /// checkpoint is behind `from`.
    pub async fn advance(
        &self,
        projection: &Projection,
        from: FeedPoint,
        taken: &[(FeedPoint, Option<&FeedEvent>)],
    ) -> Result<FeedPoint, ProjectionError> {
        let Some(&(to, _)) = taken.last() else {
            return Ok(from);
        };
        let reads_any = taken
            .iter()
            .any(|(_, event)| event.is_some_and(|event| projection.reads(event.kind())));
        if !reads_any {
            let moved = sqlx::query(
                "UPDATE read.checkpoints
                    SET transaction_id = $4, position = $5, applied = applied + $6, updated_at = now()
                  WHERE projection = $1 AND transaction_id = $2 AND position = $3",
            )
            .bind(projection.name)
            .bind(from.transaction_id)
            .bind(from.position)
            .bind(to.transaction_id)
            .bind(to.position)
            .bind(i64::try_from(taken.len()).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?
            .rows_affected();
            if moved > 0 {
                if projection.name == crate::models::schedule::PROJECTION.name {
                    // Nothing an answer depends on changed; the cache
                    // learns that the move was this process's own.
                    self.availability.applying(from, to, &[]);
                }
                return Ok(to);
            }
        }
        self.apply_taken(projection, Some(from), taken).await
    }

    /// The transaction of [`ReadModels::apply`] and [`ReadModels::advance`].
    async fn apply_taken(
        &self,
        projection: &Projection,
        from: Option<FeedPoint>,
        taken: &[(FeedPoint, Option<&FeedEvent>)],
    ) -> Result<FeedPoint, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT transaction_id, position FROM read.checkpoints
              WHERE projection = $1 FOR UPDATE",
        )
        .bind(projection.name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(ProjectionError::UnknownProjection(
                projection.name.to_owned(),
            ));
        };
        let at = FeedPoint {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        };
        if let Some(from) = from.filter(|&from| at < from) {
            // What lies between is in no batch: applying on would skip it.
            return Err(ProjectionError::CheckpointMovedBack {
                projection: projection.name.to_owned(),
                at: at.position,
                expected: from.position,
            });
        }
        let after: Vec<&(FeedPoint, Option<&FeedEvent>)> =
            taken.iter().filter(|(point, _)| *point > at).collect();
        let Some(&&(last, _)) = after.last() else {
            return Ok(at);
        };
        let fresh: Vec<FeedEvent> = after
            .iter()
            .filter_map(|(_, event)| *event)
            .filter(|event| projection.reads(event.kind()))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            apply_in(&mut tx, READ_SCHEMA, projection, &fresh).await?;
        }
        if projection.name == crate::models::schedule::PROJECTION.name {
            // Before the commit: once the checkpoint shows, the answers
            // it made old are known to be old.
            self.availability.applying(at, last, &fresh);
        }
        sqlx::query(
            "UPDATE read.checkpoints
                SET transaction_id = $2, position = $3, applied = applied + $4, updated_at = now()
              WHERE projection = $1",
        )
        .bind(projection.name)
        .bind(last.transaction_id)
        .bind(last.position)
        .bind(i64::try_from(after.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(last)
    }

    /// Applies, straight from the event store, every committed event after
    /// `projection`'s checkpoint, `batch` at a time. Answers how many it
    /// applied. Projectors use it to fill gaps and to catch up when NATS
    /// is quiet or away.
    ///
    /// # Errors
    /// The database failed or an event could not be applied.
    pub async fn catch_up(
        &self,
        projection: &Projection,
        batch: i64,
    ) -> Result<u64, ProjectionError> {
        let batch = batch.max(1);
        let mut applied = 0_u64;
        loop {
            let at = self.checkpoint(projection.name).await?.point;
            let events = feed::read_after(&self.pool, at, batch).await?;
            if events.is_empty() {
                return Ok(applied);
            }
            self.apply(projection, &events).await?;
            applied += events.len() as u64;
        }
    }

    /// Waits until `projection` has applied the event at `position`, for at
    /// most `timeout`. Position 0 or below is always reached.
    ///
    /// A position beyond the last committed event is refused at once: no
    /// command answered it, and a read that waited for it would only time
    /// out.
    ///
    /// # Errors
    /// [`ProjectionError::UnknownPosition`] when no committed event has a
    /// position that high; [`ProjectionError::Lagging`] when the time ran
    /// out; the database failed.
    pub async fn wait_for(
        &self,
        projection: &str,
        position: i64,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        if position <= 0 {
            return Ok(());
        }
        let last: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        if position > last {
            return Err(ProjectionError::UnknownPosition { position, last });
        }
        // Polled with a growing pause (2, 4, 8 … 50 ms), for `timeout` of
        // pauses in all.
        let poll = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(50))
            .without_max_times()
            .with_total_delay(Some(timeout));
        let reached = (|| self.reached(projection, position))
            .retry(poll)
            .when(|waiting| matches!(waiting, Waiting::NotYet))
            .await;
        match reached {
            Ok(()) => Ok(()),
            Err(Waiting::NotYet) => Err(ProjectionError::Lagging {
                projection: projection.to_owned(),
                position,
            }),
            Err(Waiting::Failed(e)) => Err(e),
        }
    }

    /// Whether `projection` has applied the event at `position`.
    async fn reached(&self, projection: &str, position: i64) -> Result<(), Waiting> {
        // The event's feed point is known once its transaction is below
        // the horizon; the projection has it when its checkpoint is at or
        // past that point.
        if let Some(point) = feed::point_of(&self.pool, position).await? {
            if self.checkpoint(projection).await?.point >= point {
                return Ok(());
            }
        }
        Err(Waiting::NotYet)
    }
}

/// Why [`ReadModels::wait_for`] goes on waiting, or stops.
enum Waiting {
    /// The projection has not reached the position yet.
    NotYet,
    /// The database failed.
    Failed(ProjectionError),
}

impl<E: Into<ProjectionError>> From<E> for Waiting {
    fn from(e: E) -> Self {
        Waiting::Failed(e.into())
    }
}

/// Creates `projection`'s tables in `schema` (which must exist).
///
/// # Errors
/// The database failed or the DDL is invalid.
pub fn create_tables<'a>(
    conn: &'a mut PgConnection,
    schema: &'a str,
    projection: &'a Projection,
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    // Boxed so callers' futures stay provably `Send` (sqlx's generic
    // executors otherwise trip the compiler's higher-ranked checks).
    Box::pin(async move {
        set_search_path(conn, schema).await?;
        // The trait method, not `RawSql::execute`: the latter's generic
        // executor trips the compiler's `Send` proof in spawned tasks.
        let ddl = projection.schema();
        Executor::execute(&mut *conn, sqlx::raw_sql(&ddl)).await?;
        Ok(())
    })
}

/// Applies `events` to `projection`'s tables in `schema`, inside the
/// caller's transaction.
///
/// # Errors
/// The database failed or an event could not be applied.
pub fn apply_in<'a>(
    conn: &'a mut PgConnection,
    schema: &'a str,
    projection: &'a Projection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(async move {
        set_search_path(conn, schema).await?;
        (projection.apply)(conn, events).await
    })
}

async fn set_search_path(conn: &mut PgConnection, schema: &str) -> Result<(), ProjectionError> {
    // set_config(.., true) is SET LOCAL: it ends with the transaction.
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(format!("\"{}\", public", schema.replace('"', "")))
        .execute(conn)
        .await?;
    Ok(())
}

/// A digest of the projection's DDL: a changed DDL needs a rebuild.
#[must_use]
pub fn ddl_hash(projection: &Projection) -> String {
    hex::encode(Sha256::digest(projection.schema().as_bytes()))
}

/// How far a projection (or the relay) is (a row of [`ReadModels::status`]'s
/// query, decoded by column name).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Status {
    /// Projection name, or `relay`.
    pub name: String,
    /// Position of the last event applied (or published).
    pub position: i64,
    /// Its transaction id.
    pub transaction_id: i64,
    /// Events applied (or published) in all.
    pub applied: i64,
    /// Committed events after it: how far behind the event store it is.
    pub behind: i64,
    /// When it last moved.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ReadModels {
    /// The relay's and every known projection's status.
    ///
    /// # Errors
    /// The database failed.
    pub async fn status(&self) -> Result<Vec<Status>, ProjectionError> {
        Ok(sqlx::query_as(
            "WITH points AS (
                 SELECT 'relay' AS name, transaction_id, position, published AS applied, updated_at,
                        0 AS ord
                   FROM relay_checkpoint
                 UNION ALL
                 SELECT projection, transaction_id, position, applied, updated_at, 1
                   FROM read.checkpoints)
             SELECT p.name, p.transaction_id, p.position, p.applied, p.updated_at,
                    (SELECT count(*) FROM events e
                      WHERE (e.transaction_id, e.position) > (p.transaction_id::text::xid8, p.position))
                      AS behind
               FROM points p ORDER BY p.ord, p.name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The most events the relay or any projection is behind the event
    /// store, counted up to `cap` each: bounded work however far behind
    /// they are, for `/readyz`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn max_lag_capped(&self, cap: i64) -> Result<i64, ProjectionError> {
        let lag: Option<i64> = sqlx::query_scalar(
            "WITH points AS (
                 SELECT transaction_id, position FROM relay_checkpoint
                 UNION ALL
                 SELECT transaction_id, position FROM read.checkpoints)
             SELECT max(behind) FROM points p, LATERAL (
                 SELECT count(*) AS behind FROM (
                     SELECT 1 FROM events e
                      WHERE (e.transaction_id, e.position) > (p.transaction_id::text::xid8, p.position)
                      ORDER BY e.transaction_id, e.position
                      LIMIT $1) ahead) counted",
        )
        .bind(cap.max(1))
        .fetch_one(&self.pool)
        .await?;
        Ok(lag.unwrap_or(0))
    }

    /// The most events any projection is behind the event store (counted
    /// in full: for `projections status`, not for probes).
    ///
    /// # Errors
    /// The database failed.
    pub async fn max_lag(&self) -> Result<i64, ProjectionError> {
        Ok(self
            .status()
            .await?
            .iter()
            .map(|status| status.behind)
            .max()
            .unwrap_or(0))
    }
}
