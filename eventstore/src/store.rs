//! The event store: loading (cache, snapshot, newer events), and executing
//! use cases as one transaction with bounded, jittered retries.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clinicbook_domain::DomainError;
use cqrs_es::Aggregate;
use moka::future::Cache;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tracing::{debug, warn};

use crate::error::{ExecuteError, StoreError};
use crate::hash::{self, EventFields, Hash, GENESIS};
use crate::metadata::CommandMetadata;
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
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            snapshot_every: 100,
            cache_capacity: 50_000,
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

/// An aggregate as loaded: its state, sequence and last hash.
pub(crate) struct Loaded<A> {
    pub state: A,
    pub sequence: u64,
    pub last_hash: Hash,
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

/// The event store. Cheap to clone; clones share the pool and the cache.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    cache: Cache<StreamKey, CachedStream>,
    config: StoreConfig,
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
            }),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Applies the schema migrations.
    ///
    /// # Errors
    /// A migration failed.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrate(&self.inner.pool).await.map(|_| ())
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
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

    /// The ids of the `aggregate_type` streams having an `event_type` event
    /// whose payload holds `value` at `path` (JSON keys from the root),
    /// e.g. the clinic that added a resource:
    /// `lookup("Clinic", "ResourceAdded", &["ResourceAdded", "resource", "resource_id"], id)`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn lookup(
        &self,
        aggregate_type: &str,
        event_type: &str,
        path: &[&str],
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT DISTINCT aggregate_id FROM events
              WHERE aggregate_type = $1 AND event_type = $2 AND payload::jsonb #>> $3 = $4",
        )
        .bind(aggregate_type)
        .bind(event_type)
        .bind(path)
        .bind(value)
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(ids)
    }

    /// Loads an aggregate: the cached state if any, else the snapshot if
    /// any, then every newer event.
    pub(crate) async fn load<A: StoredAggregate>(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        let key = StreamKey::of::<A>(id);
        let cached = self.inner.cache.get(&key).await.and_then(|c| {
            c.state
                .downcast_ref::<A>()
                .map(|a| (a.clone(), c.sequence, c.last_hash))
        });
        let was_cached = cached.is_some();
        let (mut state, mut sequence, mut last_hash) = match cached {
            Some(hit) => hit,
            None => self
                .load_snapshot::<A>(id)
                .await?
                .unwrap_or_else(|| (A::default(), 0, GENESIS)),
        };
        let rows = sqlx::query(
            "SELECT sequence, event_type, payload::text AS payload, hash
               FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
              ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(to_i64(sequence))
        .fetch_all(&self.inner.pool)
        .await?;
        let corrupt = |reason: String| StoreError::Corrupt {
            aggregate_type: A::TYPE.to_string(),
            aggregate_id: id.to_string(),
            reason,
        };
        let read_any = !rows.is_empty();
        for row in rows {
            let seq = u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0);
            if seq != sequence + 1 {
                return Err(corrupt(format!("event {seq} follows event {sequence}")));
            }
            let payload: String = row.try_get("payload")?;
            let event: A::Event = serde_json::from_str(&payload).map_err(|e| {
                let event_type: String = row.try_get("event_type").unwrap_or_default();
                corrupt(format!(
                    "event {seq} ({event_type}) does not deserialise: {e}"
                ))
            })?;
            let stored_hash: Vec<u8> = row.try_get("hash")?;
            last_hash = hash::from_bytes(&stored_hash)
                .ok_or_else(|| corrupt(format!("event {seq} has a malformed hash")))?;
            state.apply(event);
            sequence = seq;
        }
        if read_any || !was_cached {
            self.cache_put(key, Box::new(state.clone()), sequence, last_hash)
                .await;
        }
        Ok(Loaded {
            state,
            sequence,
            last_hash,
        })
    }

    async fn load_snapshot<A: StoredAggregate>(
        &self,
        id: &str,
    ) -> Result<Option<(A, u64, Hash)>, StoreError> {
        let row = sqlx::query(
            "SELECT last_sequence, payload::text AS payload, last_hash
               FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_optional(&self.inner.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let payload: String = row.try_get("payload")?;
        let sequence = u64::try_from(row.try_get::<i64, _>("last_sequence")?).unwrap_or(0);
        let last_hash: Vec<u8> = row.try_get("last_hash")?;
        match (
            serde_json::from_str::<A>(&payload),
            hash::from_bytes(&last_hash),
        ) {
            (Ok(state), Some(last_hash)) => Ok(Some((state, sequence, last_hash))),
            _ => {
                // An old snapshot shape: replaying from the start is always right.
                warn!(
                    aggregate_type = A::TYPE,
                    aggregate_id = id,
                    "ignoring unreadable snapshot"
                );
                Ok(None)
            }
        }
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
    /// from fresh state (bounded, with jittered backoff).
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
        let max_attempts = self.inner.config.max_attempts.max(1);
        for attempt in 1..=max_attempts {
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
                    return Err(refused.into());
                }
            };
            let response =
                match idempotency {
                    Some(_) => Some(serde_json::to_string(&output).map_err(|source| {
                        StoreError::Serde {
                            what: "command answer".to_string(),
                            source,
                        }
                    })?),
                    None => None,
                };
            match self
                .commit(uow, metadata, idempotency.zip(response.as_deref()))
                .await
            {
                Ok((position, events_written)) => {
                    return Ok(Committed {
                        output,
                        position,
                        events_written,
                        replayed: false,
                        attempts: attempt,
                    })
                }
                Err(CommitError::Conflict(why)) => {
                    debug!(attempt, why, "conflict, retrying");
                    if attempt < max_attempts {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
                Err(CommitError::Store(e)) => return Err(ExecuteError::Store(e)),
            }
        }
        warn!(
            attempts = max_attempts,
            "giving up after repeated conflicts"
        );
        Err(ExecuteError::Conflict {
            attempts: max_attempts,
        })
    }

    async fn replay<T: DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        attempt: u32,
    ) -> Result<Option<Committed<T>>, ExecuteError> {
        let row = sqlx::query(
            "SELECT request_hash, response::text AS response, position
               FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(&key.scope)
        .bind(&key.key)
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

    /// Appends every pending event of `uow` in one transaction. Nothing is
    /// written before the event insert, so the transaction's id is taken
    /// after it read its streams (the relay's order relies on it).
    async fn commit(
        &self,
        uow: UnitOfWork,
        metadata: &CommandMetadata,
        idempotency: Option<(&IdempotencyKey, &str)>,
    ) -> Result<(Option<i64>, usize), CommitError> {
        let metadata_json = metadata.to_json(Utc::now());
        let rows = EventRows::build(&uow.tracked, &metadata_json)?;
        let guarded: Vec<&Tracked> = uow
            .tracked
            .iter()
            .filter(|t| t.mode == Mode::Guarded)
            .collect();
        if rows.is_empty() && idempotency.is_none() {
            // Nothing to write: the command changed nothing.
            return Ok((None, 0));
        }
        let mut tx = self.inner.pool.begin().await?;
        let position = rows.insert(&mut tx).await?;
        lock_streams(&mut tx, &uow.tracked).await?;
        if !guarded.is_empty() && !guards_hold(&mut tx, &guarded).await? {
            return Err(CommitError::Conflict("a guarded stream changed"));
        }
        if let Some((key, response)) = idempotency {
            sqlx::query(
                "INSERT INTO idempotency_keys (scope, key, request_hash, response, position)
                 VALUES ($1, $2, $3, $4::json, $5)",
            )
            .bind(&key.scope)
            .bind(&key.key)
            .bind(key.request_hash.as_slice())
            .bind(response)
            .bind(position)
            .execute(&mut *tx)
            .await?;
        }
        self.write_snapshots(&mut tx, &uow.tracked).await?;
        tx.commit().await?;

        let written = rows.len();
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

    async fn write_snapshots(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        tracked: &[Tracked],
    ) -> Result<(), CommitError> {
        let every = self.inner.config.snapshot_every.max(1);
        for t in tracked.iter().filter(|t| !t.pending.is_empty()) {
            let sequence = t.expected + t.pending.len() as u64;
            if sequence / every == t.expected / every {
                continue;
            }
            let Some(state) = (t.serialize)(t.state.as_ref()) else {
                continue;
            };
            let state = state.map_err(|source| StoreError::Serde {
                what: format!("snapshot of {}", t.key.aggregate_type),
                source,
            })?;
            sqlx::query(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload, last_hash)
                 SELECT $1, $2, $3, 1, $4::json, hash FROM events
                  WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                    SET last_sequence = EXCLUDED.last_sequence,
                        current_snapshot = snapshots.current_snapshot + 1,
                        payload = EXCLUDED.payload,
                        last_hash = EXCLUDED.last_hash,
                        taken_at = now()
                  WHERE snapshots.last_sequence < EXCLUDED.last_sequence",
            )
            .bind(t.key.aggregate_type)
            .bind(&t.key.aggregate_id)
            .bind(to_i64(sequence))
            .bind(state)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
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
    fn build(tracked: &[Tracked], metadata: &str) -> Result<Self, StoreError> {
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
                previous = hash::chain(
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

    /// One INSERT for all rows; returns the highest position written.
    async fn insert(&self, tx: &mut Transaction<'_, Postgres>) -> Result<Option<i64>, sqlx::Error> {
        if self.is_empty() {
            return Ok(None);
        }
        let positions: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
             SELECT t.ty, t.id, t.seq, t.et, t.ev, t.p::json, t.m::json, t.h
               FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[])
                    WITH ORDINALITY AS t(ty, id, seq, et, ev, p, m, h, ord)
              ORDER BY t.ord
             RETURNING position",
        )
        .bind(&self.types)
        .bind(&self.ids)
        .bind(&self.sequences)
        .bind(&self.event_types)
        .bind(&self.versions)
        .bind(&self.payloads)
        .bind(&self.metadata)
        .bind(&self.hashes)
        .fetch_all(&mut **tx)
        .await?;
        Ok(positions.into_iter().max())
    }
}

/// Takes the advisory locks of a commit: exclusive on every stream written,
/// shared on every guarded one.
async fn lock_streams(
    tx: &mut Transaction<'_, Postgres>,
    tracked: &[Tracked],
) -> Result<(), sqlx::Error> {
    let (keys, exclusive): (Vec<i64>, Vec<bool>) = tracked
        .iter()
        .filter(|t| t.mode != Mode::Read)
        .map(|t| (t.key.lock_key(), t.mode == Mode::Write))
        .unzip();
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT clinicbook_lock_streams($1, $2)")
        .bind(&keys)
        .bind(&exclusive)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// True when no guarded stream has changed since it was loaded. Runs after
/// the locks, in its own statement, so it sees every commit made before
/// the locks were granted.
async fn guards_hold(
    tx: &mut Transaction<'_, Postgres>,
    guarded: &[&Tracked],
) -> Result<bool, sqlx::Error> {
    let types: Vec<&str> = guarded.iter().map(|t| t.key.aggregate_type).collect();
    let ids: Vec<&str> = guarded
        .iter()
        .map(|t| t.key.aggregate_id.as_str())
        .collect();
    let expected: Vec<i64> = guarded.iter().map(|t| to_i64(t.expected)).collect();
    let changed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[], $2::text[], $3::int8[]) AS g(ty, id, expected)
          WHERE COALESCE((SELECT max(sequence) FROM events e
                           WHERE e.aggregate_type = g.ty AND e.aggregate_id = g.id), 0) <> g.expected",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&expected)
    .fetch_one(&mut **tx)
    .await?;
    Ok(changed == 0)
}

/// Jittered exponential backoff: up to 1, 2, 4 … 64 ms.
fn backoff(attempt: u32) -> Duration {
    let cap_us = 1_000u64 << attempt.min(6);
    Duration::from_micros(fastrand::u64(cap_us / 4..=cap_us))
}

/// Sequences are u64 in memory and bigint in the table.
fn to_i64(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}
