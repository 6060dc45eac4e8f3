//! Replaying history through the aggregates: a stream's state as of an
//! instant or a sequence, and a check of the whole store that every event
//! still deserialises and applies, and that snapshots and the normal load
//! agree with a full replay.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clinicbook_domain::with_aggregate;
use serde::Serialize;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::audit::{stream_rows, StoredEvent, StreamProblem};
use crate::error::StoreError;
use crate::row::{fold, fold_one, EventRow, FoldError, Folded, COLUMNS};
use crate::store::{EventStore, StoredAggregate};

pub use clinicbook_domain::aggregate::{AggregateKind, UnknownAggregateType};

/// How far to replay a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Every event.
    End,
    /// Events up to and including this sequence.
    Sequence(i64),
    /// Events recorded at or before this instant.
    Instant(DateTime<Utc>),
}

/// A stream replayed up to a point.
#[derive(Clone, Debug, Serialize)]
pub struct StreamAt {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The events up to the point, in their current version.
    pub events: Vec<StoredEvent>,
    /// The aggregate's state after them (its serialised form).
    pub state: serde_json::Value,
    /// The sequence of the state (0: before the first event).
    pub sequence: i64,
    /// The stream's last sequence now.
    pub last_sequence: i64,
}

/// A stream replayed through its aggregate's own `apply` up to `until`:
/// the events up to that point and the state after them. `None` when the
/// stream has no events.
///
/// # Errors
/// The database failed, or the stream is corrupt (a gap, or an event that
/// does not deserialise as its aggregate's event).
pub async fn stream_at(
    pool: &PgPool,
    kind: AggregateKind,
    aggregate_id: &str,
    until: Until,
) -> Result<Option<StreamAt>, StoreError> {
    let mut rows = stream_rows(pool, kind.name(), aggregate_id).await?;
    let Some(last_sequence) = rows.last().map(|row| row.sequence) else {
        return Ok(None);
    };
    rows.retain(|row| match until {
        Until::End => true,
        Until::Sequence(n) => row.sequence <= n,
        Until::Instant(t) => row.recorded_at <= t,
    });
    let (state, sequence) = with_aggregate!(kind, A => state_after::<A>(aggregate_id, &rows)?);
    Ok(Some(StreamAt {
        aggregate_type: kind.name().to_string(),
        aggregate_id: aggregate_id.to_string(),
        events: rows
            .into_iter()
            .map(StoredEvent::try_from)
            .collect::<Result<_, _>>()?,
        state,
        sequence,
        last_sequence,
    }))
}

/// The state of `A` after `rows` (a prefix of the stream), serialised.
fn state_after<A: StoredAggregate>(
    id: &str,
    rows: &[EventRow],
) -> Result<(serde_json::Value, i64), StoreError> {
    let folded = fold(Folded::<A>::default(), id, rows)?;
    let state = serde_json::to_value(&folded.state).map_err(|source| StoreError::Serde {
        what: format!("state of {}", A::TYPE),
        source,
    })?;
    Ok((state, i64::try_from(folded.sequence).unwrap_or(i64::MAX)))
}

/// A stream replayed through its aggregate, each stored event beside the
/// event the aggregate read it as.
#[derive(Clone, Debug)]
pub struct History<A: StoredAggregate> {
    /// The state after the events.
    pub state: A,
    /// The events, in sequence order.
    pub events: Vec<(StoredEvent, A::Event)>,
}

/// The stream `id` of `A` replayed through the store's one fold, up to and
/// including global position `up_to` when given (the state right after a
/// given command). A stream with no events is the aggregate's default.
///
/// # Errors
/// The database failed, or the stream is corrupt (a gap, or an event that
/// does not read as `A`'s).
pub async fn history<A: StoredAggregate>(
    pool: &PgPool,
    id: &str,
    up_to: Option<i64>,
) -> Result<History<A>, StoreError> {
    let rows = stream_rows(pool, A::TYPE, id).await?;
    let mut folded = Folded::<A>::default();
    let mut events = Vec::with_capacity(rows.len());
    for row in rows
        .into_iter()
        .filter(|row| up_to.is_none_or(|last| row.position <= last))
    {
        let event = fold_one(&mut folded, id, &row)?;
        events.push((StoredEvent::try_from(row)?, event));
    }
    Ok(History {
        state: folded.state,
        events,
    })
}

/// Tuning of [`check_all`].
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Events read per query.
    pub batch: i64,
    /// Streams whose normal load is compared at the same time.
    pub concurrency: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            batch: 20_000,
            concurrency: 8,
        }
    }
}

/// What [`check_all`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// True when nothing disagrees.
    pub ok: bool,
    /// Streams replayed.
    pub streams_checked: u64,
    /// Events replayed.
    pub events_checked: u64,
    /// Snapshots compared with the replay at their sequence.
    pub snapshots_checked: u64,
    /// Snapshots of an older state shape, which loading ignores (it
    /// replays those streams in full).
    pub snapshots_unreadable: u64,
    /// Streams that received events while they were checked (their
    /// normal load was ahead of the replay); not a fault.
    pub changed_during_check: u64,
    /// Every stream that disagrees, with its first problem.
    pub mismatches: Vec<StreamProblem>,
}

/// A stream being replayed, its aggregate type erased.
trait Replaying: Send {
    /// Applies the next event (the one fold: gap check, upcast, decode).
    fn apply(&mut self, row: &EventRow) -> Result<(), FoldError>;
    /// The state now.
    fn state(&self) -> Result<serde_json::Value, String>;
}

impl<A: StoredAggregate> Replaying for Folded<A> {
    fn apply(&mut self, row: &EventRow) -> Result<(), FoldError> {
        Folded::apply(self, row).map(drop)
    }

    fn state(&self) -> Result<serde_json::Value, String> {
        serde_json::to_value(&self.state).map_err(|e| e.to_string())
    }
}

fn replaying(kind: AggregateKind) -> Box<dyn Replaying> {
    with_aggregate!(kind, A => Box::new(Folded::<A>::default()))
}

/// The stream being replayed by [`check_all`].
struct Current {
    aggregate_type: String,
    aggregate_id: String,
    kind: Option<AggregateKind>,
    replay: Option<Box<dyn Replaying>>,
    sequence: i64,
    /// The sequence of the stream's snapshot, if it has one.
    snapshot_sequence: Option<i64>,
    /// The replayed state at the snapshot's sequence.
    at_snapshot: Option<serde_json::Value>,
    failed: bool,
}

/// What is compared once a stream is replayed.
struct Finished {
    kind: AggregateKind,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    state: serde_json::Value,
    at_snapshot: Option<(i64, serde_json::Value)>,
}

/// What one comparison found.
#[derive(Default)]
struct Compared {
    mismatch: Option<StreamProblem>,
    snapshot_checked: bool,
    snapshot_unreadable: bool,
    changed: bool,
}

/// Re-runs every stream through its aggregate, reading the events in
/// large ordered batches (never all at once): every event must
/// deserialise (after upcasting) and apply in sequence from 1; where a
/// stream has a snapshot, the replayed state at the snapshot's sequence
/// must equal the snapshot's; and the final state must equal what the
/// store's normal load ([`EventStore::aggregate`]: snapshot, then newer
/// events) gives. `progress` is called with the number of events replayed
/// so far after each batch.
///
/// # Errors
/// The database failed (a disagreement is a [`StreamProblem`], not an error).
pub async fn check_all(
    store: &EventStore,
    options: CheckOptions,
    progress: impl Fn(u64),
) -> Result<CheckReport, StoreError> {
    let pool = store.pool().clone();
    let snapshots: HashMap<(String, String), i64> =
        sqlx::query("SELECT aggregate_type, aggregate_id, last_sequence FROM snapshots")
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    (row.try_get("aggregate_type")?, row.try_get("aggregate_id")?),
                    row.try_get("last_sequence")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;

    // A reader task keeps the next batch coming while this one is replayed.
    let (batches, mut incoming) = mpsc::channel::<Result<Vec<EventRow>, StoreError>>(2);
    let reader = tokio::spawn(
        read_batches(pool.clone(), options.batch.max(1), batches)
            .instrument(tracing::info_span!("replay_reader")),
    );

    let mut report = CheckReport::default();
    let limit = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut comparing: JoinSet<Result<Compared, StoreError>> = JoinSet::new();
    let mut current: Option<Current> = None;
    while let Some(batch) = incoming.recv().await {
        for row in batch? {
            let same = current.as_ref().is_some_and(|c| {
                c.aggregate_type == row.aggregate_type && c.aggregate_id == row.aggregate_id
            });
            if !same {
                if let Some(done) = current.take() {
                    finish(done, store, &limit, &mut comparing, &mut report).await;
                }
                let kind = row.aggregate_type.parse::<AggregateKind>().ok();
                let key = (row.aggregate_type.clone(), row.aggregate_id.clone());
                current = Some(Current {
                    aggregate_type: row.aggregate_type.clone(),
                    aggregate_id: row.aggregate_id.clone(),
                    kind,
                    replay: kind.map(replaying),
                    sequence: 0,
                    snapshot_sequence: snapshots.get(&key).copied(),
                    at_snapshot: None,
                    failed: false,
                });
                report.streams_checked += 1;
            }
            report.events_checked += 1;
            if let Some(stream) = current.as_mut() {
                step(stream, &row, &mut report);
            }
        }
        progress(report.events_checked);
        while let Some(done) = comparing.try_join_next() {
            record(done, &mut report)?;
        }
    }
    if let Some(done) = current.take() {
        finish(done, store, &limit, &mut comparing, &mut report).await;
    }
    while let Some(done) = comparing.join_next().await {
        record(done, &mut report)?;
    }
    reader.await.map_err(StoreError::from)??;
    report.mismatches.sort_by(|a, b| {
        (&a.aggregate_type, &a.aggregate_id).cmp(&(&b.aggregate_type, &b.aggregate_id))
    });
    report.ok = report.mismatches.is_empty();
    Ok(report)
}

/// Replays one event of the current stream, recording its first problem.
fn step(stream: &mut Current, row: &EventRow, report: &mut CheckReport) {
    if stream.failed {
        return;
    }
    let mut fail = |reason: String| {
        report.mismatches.push(row.problem(reason));
        true
    };
    let Some(replay) = stream.replay.as_mut() else {
        stream.failed = fail(format!(
            "unknown aggregate type; the aggregate types are {}",
            AggregateKind::names()
        ));
        return;
    };
    if let Err(e) = replay.apply(row) {
        stream.failed = fail(e.to_string());
        return;
    }
    stream.sequence = row.sequence;
    if stream.snapshot_sequence == Some(row.sequence) {
        match replay.state() {
            Ok(state) => stream.at_snapshot = Some(state),
            Err(e) => stream.failed = fail(format!("the state does not serialise: {e}")),
        }
    }
}

/// Starts the comparison of a replayed stream with its snapshot and its
/// normal load, at most `limit` at a time.
async fn finish(
    stream: Current,
    store: &EventStore,
    limit: &Arc<Semaphore>,
    comparing: &mut JoinSet<Result<Compared, StoreError>>,
    report: &mut CheckReport,
) {
    let (Some(kind), Some(replay), false) = (stream.kind, stream.replay, stream.failed) else {
        return;
    };
    let state = match replay.state() {
        Ok(state) => state,
        Err(e) => {
            report.mismatches.push(StreamProblem::at(
                &stream.aggregate_type,
                &stream.aggregate_id,
                stream.sequence,
                format!("the state does not serialise: {e}"),
            ));
            return;
        }
    };
    if let Some(snapshot) = stream
        .snapshot_sequence
        .filter(|_| stream.at_snapshot.is_none())
    {
        report.mismatches.push(StreamProblem::at(
            &stream.aggregate_type,
            &stream.aggregate_id,
            snapshot,
            format!(
                "the snapshot is at sequence {snapshot}, past the stream's last event {}",
                stream.sequence
            ),
        ));
        return;
    }
    let finished = Finished {
        kind,
        aggregate_type: stream.aggregate_type,
        aggregate_id: stream.aggregate_id,
        sequence: stream.sequence,
        at_snapshot: stream.snapshot_sequence.zip(stream.at_snapshot),
        state,
    };
    // The semaphore is never closed, so acquiring only waits.
    let Ok(permit) = limit.clone().acquire_owned().await else {
        return;
    };
    let store = store.clone();
    let span = tracing::debug_span!(
        "replay_compare",
        aggregate_type = %finished.aggregate_type,
        aggregate_id = %finished.aggregate_id
    );
    comparing.spawn(
        async move {
            let compared = compare(&store, finished).await;
            drop(permit);
            compared
        }
        .instrument(span),
    );
}

fn record(
    joined: Result<Result<Compared, StoreError>, tokio::task::JoinError>,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let compared = joined.map_err(StoreError::from)??;
    report.snapshots_checked += u64::from(compared.snapshot_checked);
    report.snapshots_unreadable += u64::from(compared.snapshot_unreadable);
    report.changed_during_check += u64::from(compared.changed);
    report.mismatches.extend(compared.mismatch);
    Ok(())
}

/// Compares a replayed stream with its snapshot and with the normal load.
async fn compare(store: &EventStore, finished: Finished) -> Result<Compared, StoreError> {
    with_aggregate!(finished.kind, A => compare_as::<A>(store, finished).await)
}

async fn compare_as<A: StoredAggregate>(
    store: &EventStore,
    finished: Finished,
) -> Result<Compared, StoreError> {
    let mut compared = Compared::default();
    let mismatch = |sequence: i64, reason: String| {
        StreamProblem::at(
            &finished.aggregate_type,
            &finished.aggregate_id,
            sequence,
            reason,
        )
    };
    if let Some((sequence, replayed)) = &finished.at_snapshot {
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT payload::text FROM snapshots
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence = $3",
        )
        .bind(&finished.aggregate_type)
        .bind(&finished.aggregate_id)
        .bind(sequence)
        .fetch_optional(store.pool())
        .await?;
        match stored.map(|text| serde_json::from_str::<A>(&text)) {
            // Taken again since the check started: compared by the next check.
            None => {}
            Some(Err(_)) => compared.snapshot_unreadable = true,
            Some(Ok(snapshot)) => {
                compared.snapshot_checked = true;
                let snapshot =
                    serde_json::to_value(&snapshot).map_err(|source| StoreError::Serde {
                        what: format!("snapshot of {}", A::TYPE),
                        source,
                    })?;
                if &snapshot != replayed {
                    compared.mismatch = Some(mismatch(
                        *sequence,
                        format!(
                            "the snapshot at sequence {sequence} differs from the replay: {}",
                            difference(replayed, &snapshot)
                        ),
                    ));
                    return Ok(compared);
                }
            }
        }
    }
    let (loaded, loaded_sequence) = match store.aggregate::<A>(&finished.aggregate_id).await {
        Ok(loaded) => loaded,
        Err(StoreError::Corrupt { reason, .. }) => {
            compared.mismatch = Some(mismatch(
                finished.sequence,
                format!("the normal load fails: {reason}"),
            ));
            return Ok(compared);
        }
        Err(e) => return Err(e),
    };
    let loaded_sequence = i64::try_from(loaded_sequence).unwrap_or(i64::MAX);
    if loaded_sequence > finished.sequence {
        compared.changed = true;
        return Ok(compared);
    }
    let loaded = serde_json::to_value(&loaded).map_err(|source| StoreError::Serde {
        what: format!("state of {}", A::TYPE),
        source,
    })?;
    if loaded_sequence < finished.sequence {
        compared.mismatch = Some(mismatch(
            finished.sequence,
            format!(
                "the normal load stops at sequence {loaded_sequence}, the replay reached {}",
                finished.sequence
            ),
        ));
    } else if loaded != finished.state {
        compared.mismatch = Some(mismatch(
            finished.sequence,
            format!(
                "the normal load (snapshot and newer events) differs from the replay: {}",
                difference(&finished.state, &loaded)
            ),
        ));
    }
    Ok(compared)
}

/// The first place two states differ, as `path: replayed vs other`.
fn difference(replayed: &serde_json::Value, other: &serde_json::Value) -> String {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (l, r) = (
                        x.get(key).unwrap_or(&Value::Null),
                        y.get(key).unwrap_or(&Value::Null),
                    );
                    if let Some(found) = walk(&format!("{path}.{key}"), l, r) {
                        return Some(found);
                    }
                }
                None
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (l, r))| walk(&format!("{path}[{i}]"), l, r)),
            _ if a == b => None,
            _ => {
                let short = |v: &Value| {
                    let text = v.to_string();
                    if text.len() > 80 {
                        format!("{}…", text.chars().take(80).collect::<String>())
                    } else {
                        text
                    }
                };
                Some(format!("{path}: replay {} vs {}", short(a), short(b)))
            }
        }
    }
    walk("state", replayed, other).unwrap_or_else(|| "state".to_string())
}

/// Reads every event in `(aggregate_type, aggregate_id, sequence)` order,
/// `batch` rows per query (keyset paging on the primary key), into `out`.
async fn read_batches(
    pool: PgPool,
    batch: i64,
    out: mpsc::Sender<Result<Vec<EventRow>, StoreError>>,
) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3)
          ORDER BY aggregate_type, aggregate_id, sequence
          LIMIT $4"
    );
    // The empty type sorts before every stored one.
    let mut after = (String::new(), String::new(), 0i64);
    loop {
        let rows = sqlx::query_as::<_, EventRow>(&sql)
            .bind(&after.0)
            .bind(&after.1)
            .bind(after.2)
            .bind(batch)
            .fetch_all(&pool)
            .await
            .map_err(StoreError::from);
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                // The consumer reports it; if it is gone there is no one to tell.
                let _ = out.send(Err(e)).await;
                return Ok(());
            }
        };
        let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= batch;
        if let Some(last) = rows.last() {
            after = (
                last.aggregate_type.clone(),
                last.aggregate_id.clone(),
                last.sequence,
            );
        }
        if !rows.is_empty() && out.send(Ok(rows)).await.is_err() {
            return Ok(());
        }
        if !full {
            return Ok(());
        }
    }
}
