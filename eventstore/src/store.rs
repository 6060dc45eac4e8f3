//! The event store: loading (cache, snapshot, newer events), and executing
//! use cases as one transaction with bounded, jittered retries.

use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use clinicbook_domain::{AggregateKind, DomainError, PatientId};
use cqrs_es::Aggregate;
use moka::future::Cache;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tracing::{debug, warn, Instrument};

use crate::error::{ExecuteError, StoreError};
use crate::hash::{self, ChainVersion, EventFields, Hash};
use crate::metadata::CommandMetadata;
use crate::personal::{DataKey, MasterKey, Opener};
use crate::row::{fold, EventRow, Folded, COLUMNS};
use crate::uow::{Mode, Tracked, UnitOfWork};

/// An aggregate the store can hold: a cqrs-es aggregate of the domain (no
/// services, errors are `DomainError`) that can be cloned.
pub trait StoredAggregate: Aggregate<Services = (), Error = DomainError> + Clone + 'static {}

impl<A> StoredAggregate for A where
    A: Aggregate<Services = (), Error = DomainError> + Clone + 'static
{
}

/// A staff or admin action, run inside a [`UnitOfWork`].
///
/// `run` may be called several times (once per attempt), each time with a
/// fresh unit of work, so it must not have effects outside it.
pub trait UseCase: Sync {
    /// What the action answers; stored as JSON with an idempotency key.
    type Output: Serialize + DeserializeOwned + Send;

    /// Loads the aggregates, runs their commands, and returns the answer.
    fn run(
        &self,
        uow: &mut UnitOfWork,
    ) -> impl Future<Output = Result<Self::Output, crate::UowError>> + Send;
}

/// Tuning of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many times a command runs before a conflict is reported.
    pub max_attempts: u32,
    /// A snapshot is written each time a stream passes a multiple of this.
    pub snapshot_every: u64,
    /// Hydrated aggregates kept in memory.
    pub cache_capacity: u64,
    /// How long an idempotency key answers a retry with the first answer.
    /// A retry after that is a new command; keys older than this are
    /// purged ([`EventStore::purge_idempotency_keys`]).
    pub idempotency_window: std::time::Duration,
    /// Wraps every patient's data key ([`crate::personal`]). The default is
    /// a random key that lives only as long as this value: right for tests
    /// and for tools that never read personal data; `serve` passes the
    /// configured one (`CLINICBOOK_MASTER_KEY` or `var/master-key`).
    pub master_key: MasterKey,
}

/// How long idempotency keys are kept by default: 7 days.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            snapshot_every: 100,
            cache_capacity: 50_000,
            idempotency_window: IDEMPOTENCY_WINDOW,
            master_key: MasterKey::generate(),
        }
    }
}

/// A stream's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
}

impl StreamKey {
    pub fn of<A: Aggregate>(id: &str) -> Self {
        Self {
            aggregate_type: A::TYPE,
            aggregate_id: id.to_string(),
        }
    }

    /// The advisory-lock key of the stream.
    fn lock_key(&self) -> i64 {
        let digest = Sha256::new()
            .chain_update(self.aggregate_type.as_bytes())
            .chain_update(b"/")
            .chain_update(self.aggregate_id.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

/// A hydrated aggregate in the cache: only a starting point, newer events
/// are always read after it.
#[derive(Clone)]
struct CachedStream {
    state: Arc<dyn Any + Send + Sync>,
    sequence: u64,
    last_hash: Hash,
}

/// A stream's snapshot or one of its events, as [`EventStore::load`] reads
/// them in one query.
#[derive(sqlx::FromRow)]
struct StreamRow {
    is_snapshot: bool,
    #[sqlx(flatten)]
    row: EventRow,
}

/// An idempotency key with the fingerprint of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Namespace of the key (e.g. the route), so keys of different
    /// actions never collide.
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// SHA-256 of the request.
    pub request_hash: Hash,
}

impl IdempotencyKey {
    /// A key for `request`, the canonical bytes of the request.
    pub fn new(scope: impl Into<String>, key: impl Into<String>, request: &[u8]) -> Self {
        Self {
            scope: scope.into(),
            key: key.into(),
            request_hash: Sha256::digest(request).into(),
        }
    }
}

/// The result of a command that succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed<T> {
    /// The use case's answer (the first answer, for a replayed key).
    pub output: T,
    /// Global position of the last event written, if any was.
    pub position: Option<i64>,
    /// Events appended by this call (0 for a replay).
    pub events_written: usize,
    /// True when the answer was replayed from an idempotency key.
    pub replayed: bool,
    /// Attempts it took.
    pub attempts: u32,
}

impl<T> Committed<T> {
    /// The same outcome with another answer (e.g. a view read back after
    /// the commit).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Committed<U> {
        Committed {
            output: f(self.output),
            position: self.position,
            events_written: self.events_written,
            replayed: self.replayed,
            attempts: self.attempts,
        }
    }
}

/// Why a commit attempt did not commit.
enum CommitError {
    /// Another writer got there first: retry.
    Conflict(&'static str),
    Store(StoreError),
}

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            match db.code().as_deref() {
                // unique_violation: a stream's next sequence, or an idempotency key, taken.
                Some("23505") => return CommitError::Conflict("unique violation"),
                Some("40P01") => return CommitError::Conflict("deadlock"),
                Some("40001") => return CommitError::Conflict("serialization failure"),
                _ => {}
            }
        }
        CommitError::Store(StoreError::Database(e))
    }
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> Self {
        CommitError::Store(e)
    }
}

/// Why an attempt of a command did not answer.
enum Failed {
    /// Worth another attempt on fresh state (a conflict, or a refusal on
    /// state that moved meanwhile).
    Retry(&'static str),
    /// Final: the command's answer is this error.
    Stop(ExecuteError),
}

impl<E: Into<ExecuteError>> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed::Stop(e.into())
    }
}

/// How commands are retried: how many attempts, and the jittered
/// exponential pause between two (1–2, 2–4, 4–8 … at most 32–64 ms).
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    max_attempts: u32,
}

impl RetryPolicy {
    fn commands(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
        }
    }

    fn backoff(self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(1))
            .with_max_delay(Duration::from_millis(32))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(usize::try_from(self.max_attempts - 1).unwrap_or(usize::MAX))
    }
}

/// The event store. Cheap to clone; clones share the pool and the cache.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    cache: Cache<StreamKey, CachedStream>,
    config: StoreConfig,
    /// Sent after every commit that wrote events, once set.
    nudge: std::sync::OnceLock<crate::relay::Nudge>,
}

impl EventStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool, config: StoreConfig) -> Self {
        let cache = Cache::builder().max_capacity(config.cache_capacity).build();
        Self {
            inner: Arc::new(Inner {
                pool,
                cache,
                config,
                nudge: std::sync::OnceLock::new(),
            }),
        }
    }

    /// From now on, every commit that wrote events nudges the relay (after
    /// the commit, outside the transaction) through `nudge`. Set once per
    /// store and its clones: a later call keeps the first and answers
    /// false.
    pub fn nudge_relay(&self, nudge: crate::relay::Nudge) -> bool {
        self.inner.nudge.set(nudge).is_ok()
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The audit reads over this store (for the API's audit and
    /// ops routes, which hold no pool).
    pub fn audit(&self) -> crate::audit::Audit {
        crate::audit::Audit::new(self.clone())
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }

    /// The master key that wraps the patients' data keys.
    pub(crate) fn master_key(&self) -> &MasterKey {
        &self.inner.config.master_key
    }

    /// The data key of `patient` as stored now (`None`: never created, or
    /// destroyed by erasure).
    pub(crate) async fn data_key(&self, patient: PatientId) -> Result<Option<DataKey>, StoreError> {
        let wrapped: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT wrapped FROM patient_keys WHERE patient_id = $1")
                .bind(patient.0)
                .fetch_optional(&self.inner.pool)
                .await?;
        wrapped
            .map(|wrapped| self.master_key().unwrap_key(patient, &wrapped))
            .transpose()
    }

    /// What opens `patient`'s sealed fields now: their key, read once
    /// (never cached, so a key another process destroyed is gone here too).
    ///
    /// # Errors
    /// The database failed, or the stored key does not unwrap with this
    /// store's master key.
    pub async fn opener(&self, patient: PatientId) -> Result<Opener, StoreError> {
        Ok(Opener::new(self.data_key(patient).await?))
    }

    /// Forgets every cached aggregate (tests, tools).
    pub fn clear_cache(&self) {
        self.inner.cache.invalidate_all();
    }

    /// The current state of an aggregate and its sequence (0: never written).
    ///
    /// # Errors
    /// Loading failed or the stream is corrupt.
    pub async fn aggregate<A: StoredAggregate>(&self, id: &str) -> Result<(A, u64), StoreError> {
        let loaded = self.load::<A>(id).await?;
        Ok((loaded.state, loaded.sequence))
    }

    /// The ids of the `kind` streams having an `event_type` event whose
    /// payload holds `value` at `path` (JSON keys from the root), e.g. the
    /// clinic that added a resource:
    /// `lookup(AggregateKind::Clinic, "ResourceAdded", &["ResourceAdded", "resource", "resource_id"], id)`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn lookup(
        &self,
        kind: AggregateKind,
        event_type: &str,
        path: &[&str],
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT DISTINCT aggregate_id FROM events
              WHERE aggregate_type = $1 AND event_type = $2 AND payload::jsonb #>> $3 = $4",
        )
        .bind(kind.name())
        .bind(event_type)
        .bind(path)
        .bind(value)
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(ids)
    }

    /// Loads an aggregate: the cached state if any, else the snapshot if
    /// any, then every newer event. A cache hit costs one query (the newer
    /// events); a miss also one (snapshot and events together).
    pub(crate) async fn load<A: StoredAggregate>(&self, id: &str) -> Result<Folded<A>, StoreError> {
        let key = StreamKey::of::<A>(id);
        let cached = self.inner.cache.get(&key).await.and_then(|c| {
            c.state.downcast_ref::<A>().map(|a| Folded {
                state: a.clone(),
                sequence: c.sequence,
                last_hash: c.last_hash,
            })
        });
        let was_cached = cached.is_some();
        let mut from = cached.unwrap_or_default();
        let mut rows = self
            .read_stream(A::TYPE, id, from.sequence, !was_cached)
            .await?;
        if rows.first().is_some_and(|row| row.is_snapshot) {
            let snapshot = rows.remove(0).row;
            match (
                serde_json::from_str::<A>(&snapshot.payload),
                hash::from_bytes(&snapshot.hash),
                u64::try_from(snapshot.sequence),
            ) {
                (Ok(state), Some(last_hash), Ok(sequence)) => {
                    from = Folded {
                        state,
                        sequence,
                        last_hash,
                    };
                }
                _ => {
                    // An older snapshot shape: a full replay is always right.
                    warn!(
                        aggregate_type = A::TYPE,
                        aggregate_id = id,
                        "ignoring unreadable snapshot"
                    );
                    rows = self.read_stream(A::TYPE, id, 0, false).await?;
                }
            }
        }
        let read_any = !rows.is_empty();
        let loaded = fold(from, id, rows.iter().map(|r| &r.row))?;
        if read_any || !was_cached {
            self.cache_put(
                key,
                Box::new(loaded.state.clone()),
                loaded.sequence,
                loaded.last_hash,
            )
            .await;
        }
        Ok(loaded)
    }

    /// The events of a stream after `after`; with `snapshot`, the stream's
    /// snapshot first (if any, as a row of its own) and only the events
    /// after it.
    async fn read_stream(
        &self,
        aggregate_type: &str,
        id: &str,
        after: u64,
        snapshot: bool,
    ) -> Result<Vec<StreamRow>, StoreError> {
        let sql = format!(
            "SELECT true AS is_snapshot, aggregate_type, aggregate_id, last_sequence AS sequence,
                    0::int8 AS position, 0::int8 AS transaction_id, '' AS event_type,
                    '' AS event_version, payload::text AS payload, '{{}}' AS metadata,
                    taken_at AS recorded_at, last_hash AS hash, 0::int2 AS chain_version
               FROM snapshots
              WHERE $4 AND aggregate_type = $1 AND aggregate_id = $2
             UNION ALL
             SELECT false, {COLUMNS}
               FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2
                AND sequence > GREATEST($3, COALESCE((SELECT last_sequence FROM snapshots
                        WHERE $4 AND aggregate_type = $1 AND aggregate_id = $2), 0))
              ORDER BY is_snapshot DESC, sequence"
        );
        let rows = sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(id)
            .bind(to_i64(after))
            .bind(snapshot)
            .fetch_all(&self.inner.pool)
            .await?;
        Ok(rows)
    }

    async fn cache_put(
        &self,
        key: StreamKey,
        state: Box<dyn Any + Send + Sync>,
        sequence: u64,
        last_hash: Hash,
    ) {
        let entry = CachedStream {
            state: Arc::from(state),
            sequence,
            last_hash,
        };
        self.inner.cache.insert(key, entry).await;
    }

    /// Runs `use_case` and commits everything it changed in one
    /// transaction; on a conflict with a concurrent writer it runs again
    /// from fresh state (bounded, with jittered backoff: [`RetryPolicy`]).
    ///
    /// With an idempotency key, a key seen before with the same request
    /// returns the first answer and writes nothing.
    ///
    /// # Errors
    /// `Domain` when an aggregate refuses (nothing written), `Conflict`
    /// after the last attempt, `IdempotencyKeyReused` for a key used with
    /// another request, `Store` when storage fails.
    #[tracing::instrument(skip_all, fields(command = %metadata.command, command_id = %metadata.command_id))]
    pub async fn execute<U: UseCase>(
        &self,
        metadata: &CommandMetadata,
        idempotency: Option<&IdempotencyKey>,
        use_case: &U,
    ) -> Result<Committed<U::Output>, ExecuteError> {
        let policy = RetryPolicy::commands(self.inner.config.max_attempts);
        let attempts = AtomicU32::new(0);
        let outcome = (|| async {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let last = attempt >= policy.max_attempts;
            self.attempt(metadata, idempotency, use_case, attempt, last)
                .await
        })
        .retry(policy.backoff())
        .when(|failed| matches!(failed, Failed::Retry(_)))
        .notify(|failed, pause| {
            if let Failed::Retry(why) = failed {
                debug!(why, ?pause, "retrying on fresh state");
            }
        })
        .await;
        match outcome {
            Ok(committed) => Ok(committed),
            Err(Failed::Stop(e)) => Err(e),
            Err(Failed::Retry(_)) => {
                let attempts = attempts.load(Ordering::Relaxed);
                warn!(attempts, "giving up after repeated conflicts");
                Err(ExecuteError::Conflict { attempts })
            }
        }
    }

    /// One attempt of [`EventStore::execute`]: the idempotency look-up, the
    /// use case on a fresh unit of work, and the commit. `last` tells it
    /// whether another attempt may follow (a refusal on state that moved is
    /// worth another only then).
    async fn attempt<U: UseCase>(
        &self,
        metadata: &CommandMetadata,
        idempotency: Option<&IdempotencyKey>,
        use_case: &U,
        attempt: u32,
        last: bool,
    ) -> Result<Committed<U::Output>, Failed> {
        if let Some(key) = idempotency {
            if let Some(replay) = self.replay::<U::Output>(key, attempt).await? {
                return Ok(replay);
            }
        }
        let mut uow = UnitOfWork::new(self.clone());
        let output = match use_case.run(&mut uow).await {
            Ok(output) => output,
            Err(refused) => {
                // A concurrent request with the same key may have committed
                // between the look-up and the load; its answer wins.
                if let Some(key) = idempotency {
                    if let Some(replay) = self.replay::<U::Output>(key, attempt).await? {
                        return Ok(replay);
                    }
                }
                // A refusal must rest on one consistent state: if a stream
                // it read moved meanwhile, decide again on fresh state.
                let stale = matches!(refused, crate::UowError::Domain(_))
                    && !last
                    && self.read_streams_moved(&uow).await?;
                return Err(if stale {
                    Failed::Retry("refused on state that moved meanwhile")
                } else {
                    Failed::Stop(refused.into())
                });
            }
        };
        let response = match idempotency {
            Some(_) => {
                Some(
                    serde_json::to_string(&output).map_err(|source| StoreError::Serde {
                        what: "command answer".to_string(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        // The commit runs in its own task: a caller that goes away (a
        // client hanging up cancels its request) must not stop it half-way
        // and leave a transaction open with its stream locks held.
        let store = self.clone();
        let commit_metadata = metadata.clone();
        let commit_idempotency = idempotency.cloned().zip(response);
        let committed = tokio::spawn(
            async move {
                let idempotency = commit_idempotency
                    .as_ref()
                    .map(|(key, response)| (key, response.as_str()));
                store.commit(uow, &commit_metadata, idempotency).await
            }
            .in_current_span(),
        )
        .await
        .map_err(StoreError::from)?;
        match committed {
            Ok((position, events_written)) => Ok(Committed {
                output,
                position,
                events_written,
                replayed: false,
                attempts: attempt,
            }),
            Err(CommitError::Conflict(why)) => Err(Failed::Retry(why)),
            Err(CommitError::Store(e)) => Err(Failed::Stop(ExecuteError::Store(e))),
        }
    }

    async fn replay<T: DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        attempt: u32,
    ) -> Result<Option<Committed<T>>, ExecuteError> {
        // A key older than the window is gone: removed here (so the new
        // command can store it again) if the purge has not come by yet.
        let row = sqlx::query(
            "WITH expired AS (
                 DELETE FROM idempotency_keys
                  WHERE scope = $1 AND key = $2 AND created_at <= now() - $3 * interval '1 microsecond')
             SELECT request_hash, response::text AS response, position
               FROM idempotency_keys
              WHERE scope = $1 AND key = $2 AND created_at > now() - $3 * interval '1 microsecond'",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(self.idempotency_window_micros())
        .fetch_optional(&self.inner.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let request_hash: Vec<u8> = row.try_get("request_hash")?;
        if request_hash.as_slice() != key.request_hash.as_slice() {
            return Err(ExecuteError::IdempotencyKeyReused);
        }
        let response: String = row.try_get("response")?;
        let output = serde_json::from_str(&response).map_err(|source| StoreError::Serde {
            what: "stored command answer".to_string(),
            source,
        })?;
        Ok(Some(Committed {
            output,
            position: row.try_get("position")?,
            events_written: 0,
            replayed: true,
            attempts: attempt,
        }))
    }

    /// Appends every pending event of `uow` atomically: one statement that
    /// takes the stream locks, inserts the events, stores the idempotency
    /// answer and the snapshots due. Without guarded reads it runs on its
    /// own (one implicit transaction, one round trip); with them, inside a
    /// transaction followed by the guard check. Nothing is written before
    /// the event insert, so the transaction's id is taken after it read
    /// its streams (the relay's order relies on it).
    async fn commit(
        &self,
        uow: UnitOfWork,
        metadata: &CommandMetadata,
        idempotency: Option<(&IdempotencyKey, &str)>,
    ) -> Result<(Option<i64>, usize), CommitError> {
        // The application records the time (to the microsecond) so the
        // hash can cover it; the metadata carries the same instant.
        let recorded_at = hash::recorded_instant(Utc::now());
        let metadata_json = metadata.to_json(recorded_at);
        let rows = EventRows::build(&uow.tracked, &metadata_json, recorded_at)?;
        // A command that writes nothing (a retry that finds its work done)
        // answers the newest position of what it read, so its answer is
        // still a usable consistency token.
        let read_position = if rows.is_empty() {
            self.head_position(&uow.tracked).await?
        } else {
            None
        };
        if rows.is_empty() && idempotency.is_none() {
            return Ok((read_position, 0));
        }
        let snapshots = SnapshotRows::build(&uow.tracked, &rows, self.inner.config.snapshot_every)?;
        let locks = StreamLocks::of(&uow.tracked);
        let append = Append {
            events: &rows,
            locks: &locks,
            idempotency,
            snapshots: &snapshots,
            read_position,
            recorded_at,
        }
        .query();

        let guarded: Vec<&Tracked> = uow
            .tracked
            .iter()
            .filter(|t| t.mode == Mode::Guarded)
            .collect();
        let position = if guarded.is_empty() && uow.keys.is_empty() {
            append.fetch_one(&self.inner.pool).await?
        } else {
            let mut tx = self.inner.pool.begin().await?;
            let position = append.fetch_one(&mut *tx).await?;
            if !heads_unchanged(&mut tx, &guarded).await? {
                return Err(CommitError::Conflict("a guarded stream changed"));
            }
            // Data keys change after the event insert, in the same
            // transaction: a key exists exactly when its events do, and
            // erasure destroys it together with `PatientErased`.
            for change in &uow.keys {
                change.execute(&mut tx).await?;
            }
            tx.commit().await?;
            position
        };

        let written = rows.len();
        if written > 0 {
            if let Some(nudge) = self.inner.nudge.get() {
                nudge.send();
            }
        }
        for tracked in uow.tracked {
            if tracked.pending.is_empty() {
                continue;
            }
            let sequence = tracked.expected + tracked.pending.len() as u64;
            let last_hash = rows.last_hash_of(&tracked.key).unwrap_or(tracked.last_hash);
            self.cache_put(tracked.key, tracked.state, sequence, last_hash)
                .await;
        }
        Ok((position, written))
    }

    /// The highest position among the events of `streams`.
    async fn head_position(&self, streams: &[Tracked]) -> Result<Option<i64>, sqlx::Error> {
        let types: Vec<&str> = streams.iter().map(|t| t.key.aggregate_type).collect();
        let ids: Vec<&str> = streams
            .iter()
            .map(|t| t.key.aggregate_id.as_str())
            .collect();
        sqlx::query_scalar(
            "SELECT max(e.position) FROM unnest($1::text[], $2::text[]) AS s(ty, id)
               JOIN events e ON e.aggregate_type = s.ty AND e.aggregate_id = s.id",
        )
        .bind(&types)
        .bind(&ids)
        .fetch_one(&self.inner.pool)
        .await
    }

    fn idempotency_window_micros(&self) -> i64 {
        i64::try_from(self.inner.config.idempotency_window.as_micros()).unwrap_or(i64::MAX)
    }

    /// Deletes idempotency keys older than the window, `batch` at a time
    /// (short transactions); answers how many it deleted.
    ///
    /// # Errors
    /// The database failed.
    pub async fn purge_idempotency_keys(&self, batch: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM idempotency_keys WHERE (scope, key) IN (
                     SELECT scope, key FROM idempotency_keys
                      WHERE created_at <= now() - $1 * interval '1 microsecond'
                      ORDER BY created_at LIMIT $2)",
            )
            .bind(self.idempotency_window_micros())
            .bind(batch.max(1))
            .execute(&self.inner.pool)
            .await?
            .rows_affected();
            deleted += done;
            if done < u64::try_from(batch.max(1)).unwrap_or(u64::MAX) {
                return Ok(deleted);
            }
        }
    }

    /// True when a stream the attempt read has changed since: its refusal
    /// may rest on a mix of old and new states, so it is worth another try.
    async fn read_streams_moved(&self, uow: &UnitOfWork) -> Result<bool, StoreError> {
        let tracked: Vec<&Tracked> = uow.tracked.iter().collect();
        if tracked.is_empty() {
            return Ok(false);
        }
        let mut conn = self.inner.pool.acquire().await?;
        Ok(!heads_unchanged(&mut conn, &tracked).await?)
    }
}

/// The commit statement. Data-modifying CTEs run as one statement, so all
/// of it is atomic even without an explicit transaction; `locks` is
/// evaluated once, before the first event row is produced.
///
/// Its parameters come in groups, each bound by one `bind` below in the
/// order of its placeholders: `$1`–`$8` the events ([`EventRows::bind`]),
/// `$9`–`$10` the stream locks ([`StreamLocks::bind`]), `$11`–`$14` the
/// idempotency answer ([`bind_idempotency`]), `$15`–`$19` the snapshots
/// ([`SnapshotRows::bind`]), `$20` the position answered when nothing
/// is written, `$21` the instant every event records (the hash covers it)
/// and `$22` the hash chain's version.
const APPEND: &str = "
WITH locks AS MATERIALIZED (
    SELECT clinicbook_lock_streams($9::int8[], $10::bool[]) AS locked
), ins AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash,
                        recorded_at, chain_version)
    SELECT t.ty, t.id, t.seq, t.et, t.ev, t.p::json, t.m::json, t.h, $21::timestamptz, $22::int2
      FROM locks,
           unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[])
           WITH ORDINALITY AS t(ty, id, seq, et, ev, p, m, h, ord)
     ORDER BY t.ord
    RETURNING position
), idem AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, response, position)
    SELECT $11, $12, $13, $14::json, COALESCE((SELECT max(position) FROM ins), $20)
      FROM locks
     WHERE $11::text IS NOT NULL
), snap AS (
    INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload, last_hash)
    SELECT s.ty, s.id, s.seq, 1, s.p::json, s.h
      FROM unnest($15::text[], $16::text[], $17::int8[], $18::text[], $19::bytea[]) AS s(ty, id, seq, p, h)
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
       SET last_sequence = EXCLUDED.last_sequence,
           current_snapshot = snapshots.current_snapshot + 1,
           payload = EXCLUDED.payload,
           last_hash = EXCLUDED.last_hash,
           taken_at = now()
     WHERE snapshots.last_sequence < EXCLUDED.last_sequence
)
SELECT COALESCE(max(position), $20) FROM ins";

/// [`APPEND`] as a query being bound.
type AppendQuery<'q> =
    sqlx::query::QueryScalar<'q, sqlx::Postgres, Option<i64>, sqlx::postgres::PgArguments>;

/// Everything one commit binds to [`APPEND`], group by group.
struct Append<'q> {
    events: &'q EventRows,
    locks: &'q StreamLocks,
    idempotency: Option<(&'q IdempotencyKey, &'q str)>,
    snapshots: &'q SnapshotRows,
    read_position: Option<i64>,
    recorded_at: DateTime<Utc>,
}

impl<'q> Append<'q> {
    /// The statement with its parameters bound, in placeholder order.
    fn query(self) -> AppendQuery<'q> {
        let query = sqlx::query_scalar(APPEND);
        let query = self.events.bind(query); // $1-$8
        let query = self.locks.bind(query); // $9-$10
        let query = bind_idempotency(query, self.idempotency); // $11-$14
        let query = self.snapshots.bind(query); // $15-$19
        query
            .bind(self.read_position) // $20
            .bind(self.recorded_at) // $21
            .bind(ChainVersion::CURRENT.number()) // $22
    }
}

/// `$11` scope, `$12` key, `$13` request hash, `$14` answer: all null
/// without a key (then nothing is stored).
fn bind_idempotency<'q>(
    query: AppendQuery<'q>,
    idempotency: Option<(&'q IdempotencyKey, &'q str)>,
) -> AppendQuery<'q> {
    query
        .bind(idempotency.map(|(k, _)| k.scope.as_str()))
        .bind(idempotency.map(|(k, _)| k.key.as_str()))
        .bind(idempotency.map(|(k, _)| k.request_hash.as_slice()))
        .bind(idempotency.map(|(_, response)| response))
}

/// The advisory locks a commit takes: every stream it writes (exclusive)
/// or guards (shared).
struct StreamLocks {
    keys: Vec<i64>,
    exclusive: Vec<bool>,
}

impl StreamLocks {
    fn of(tracked: &[Tracked]) -> Self {
        let (keys, exclusive) = tracked
            .iter()
            .filter(|t| t.mode != Mode::Read)
            .map(|t| (t.key.lock_key(), t.mode == Mode::Write))
            .unzip();
        Self { keys, exclusive }
    }

    /// `$9` lock keys, `$10` whether each is exclusive.
    fn bind<'q>(&'q self, query: AppendQuery<'q>) -> AppendQuery<'q> {
        query.bind(&self.keys).bind(&self.exclusive)
    }
}

/// The snapshots due in one commit: every written stream whose sequence
/// passes a multiple of `every`.
struct SnapshotRows {
    types: Vec<&'static str>,
    ids: Vec<String>,
    sequences: Vec<i64>,
    payloads: Vec<String>,
    hashes: Vec<Vec<u8>>,
}

impl SnapshotRows {
    /// `$15` ty, `$16` id, `$17` seq, `$18` p (state), `$19` h (last hash).
    fn bind<'q>(&'q self, query: AppendQuery<'q>) -> AppendQuery<'q> {
        query
            .bind(&self.types)
            .bind(&self.ids)
            .bind(&self.sequences)
            .bind(&self.payloads)
            .bind(&self.hashes)
    }

    fn build(tracked: &[Tracked], rows: &EventRows, every: u64) -> Result<Self, StoreError> {
        let every = every.max(1);
        let mut snapshots = SnapshotRows {
            types: Vec::new(),
            ids: Vec::new(),
            sequences: Vec::new(),
            payloads: Vec::new(),
            hashes: Vec::new(),
        };
        for t in tracked.iter().filter(|t| !t.pending.is_empty()) {
            let sequence = t.expected + t.pending.len() as u64;
            if sequence / every == t.expected / every {
                continue;
            }
            let (Some(state), Some(last_hash)) =
                ((t.serialize)(t.state.as_ref()), rows.last_hash_of(&t.key))
            else {
                continue;
            };
            let state = state.map_err(|source| StoreError::Serde {
                what: format!("snapshot of {}", t.key.aggregate_type),
                source,
            })?;
            snapshots.types.push(t.key.aggregate_type);
            snapshots.ids.push(t.key.aggregate_id.clone());
            snapshots.sequences.push(to_i64(sequence));
            snapshots.payloads.push(state);
            snapshots.hashes.push(last_hash.to_vec());
        }
        Ok(snapshots)
    }
}

/// The rows of one commit, as parallel arrays for a single multi-row insert.
struct EventRows {
    types: Vec<&'static str>,
    ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    hashes: Vec<Vec<u8>>,
}

impl EventRows {
    /// `$1` ty, `$2` id, `$3` seq, `$4` et (type), `$5` ev (version),
    /// `$6` p (payload), `$7` m (metadata), `$8` h (hash).
    fn bind<'q>(&'q self, query: AppendQuery<'q>) -> AppendQuery<'q> {
        query
            .bind(&self.types)
            .bind(&self.ids)
            .bind(&self.sequences)
            .bind(&self.event_types)
            .bind(&self.versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .bind(&self.hashes)
    }

    fn build(
        tracked: &[Tracked],
        metadata: &str,
        recorded_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let count: usize = tracked.iter().map(|t| t.pending.len()).sum();
        let mut rows = EventRows {
            types: Vec::with_capacity(count),
            ids: Vec::with_capacity(count),
            sequences: Vec::with_capacity(count),
            event_types: Vec::with_capacity(count),
            versions: Vec::with_capacity(count),
            payloads: Vec::with_capacity(count),
            metadata: Vec::with_capacity(count),
            hashes: Vec::with_capacity(count),
        };
        for t in tracked {
            let mut previous = t.last_hash;
            for (i, event) in t.pending.iter().enumerate() {
                if event
                    .event_version
                    .parse::<cqrs_es::persist::SemanticVersion>()
                    .is_err()
                    || event.event_version.split('.').count() != 3
                {
                    return Err(StoreError::InvalidEventVersion {
                        event_type: event.event_type.clone(),
                        version: event.event_version.clone(),
                    });
                }
                let sequence = t.expected + 1 + i as u64;
                previous = hash::link(
                    ChainVersion::CURRENT,
                    &previous,
                    &EventFields {
                        aggregate_type: t.key.aggregate_type,
                        aggregate_id: &t.key.aggregate_id,
                        sequence,
                        event_type: &event.event_type,
                        event_version: &event.event_version,
                        payload: &event.payload,
                        metadata,
                    },
                    recorded_at,
                );
                rows.types.push(t.key.aggregate_type);
                rows.ids.push(t.key.aggregate_id.clone());
                rows.sequences.push(to_i64(sequence));
                rows.event_types.push(event.event_type.clone());
                rows.versions.push(event.event_version.clone());
                rows.payloads.push(event.payload.clone());
                rows.metadata.push(metadata.to_string());
                rows.hashes.push(previous.to_vec());
            }
        }
        Ok(rows)
    }

    fn len(&self) -> usize {
        self.sequences.len()
    }

    fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    fn last_hash_of(&self, key: &StreamKey) -> Option<Hash> {
        (0..self.len())
            .rev()
            .find(|&i| self.types[i] == key.aggregate_type && self.ids[i] == key.aggregate_id)
            .and_then(|i| hash::from_bytes(&self.hashes[i]))
    }
}

/// True when every stream's head is still the sequence it was loaded at.
/// For guarded reads it runs after the locks, in its own statement, so it
/// sees every commit made before the locks were granted.
async fn heads_unchanged(
    conn: &mut sqlx::PgConnection,
    streams: &[&Tracked],
) -> Result<bool, sqlx::Error> {
    let types: Vec<&str> = streams.iter().map(|t| t.key.aggregate_type).collect();
    let ids: Vec<&str> = streams
        .iter()
        .map(|t| t.key.aggregate_id.as_str())
        .collect();
    let expected: Vec<i64> = streams.iter().map(|t| to_i64(t.expected)).collect();
    let changed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[], $2::text[], $3::int8[]) AS g(ty, id, expected)
          WHERE COALESCE((SELECT max(sequence) FROM events e
                           WHERE e.aggregate_type = g.ty AND e.aggregate_id = g.id), 0) <> g.expected",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&expected)
    .fetch_one(conn)
    .await?;
    Ok(changed == 0)
}

/// Sequences are u64 in memory and bigint in the table.
fn to_i64(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}
