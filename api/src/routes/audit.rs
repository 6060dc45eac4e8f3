//! Audit routes (role `auditor`, or `admin`): a stream's history and its
//! state as of an instant or a version, the global history a page at a
//! time, verification of the hash chains, and signed checkpoints of every
//! stream's head to verify the store against later. Thin: the event
//! store's `audit`, `checkpoint` and `replay` modules do the work.

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use chrono::{DateTime, Timelike, Utc};
use clinicbook_commands::CommandError;
use clinicbook_eventstore::audit::{EventFilter, StoredEvent, StreamProblem, VerifyReport};
use clinicbook_eventstore::checkpoint::Checkpoint;
use clinicbook_eventstore::personal::Revealer;
use clinicbook_eventstore::replay::{self, AggregateKind, StreamAt, Until};
use clinicbook_eventstore::{CheckpointError, FeedPoint, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{problems, ApiError, Code, ANY, AUTH, BODY, PARAMS};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// The audit routes with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stream))
        .routes(routes!(events))
        .routes(routes!(verify))
        .routes(routes!(checkpoint_now))
        .routes(routes!(public_key))
        .routes({
            // A checkpoint lists every stream: allow it more than other bodies.
            let (schemas, paths, method) = routes!(verify_against);
            (
                schemas,
                paths,
                method.layer(DefaultBodyLimit::max(CHECKPOINT_BODY_LIMIT)),
            )
        })
}

/// Largest checkpoint `POST /v1/audit/verify` accepts (about 200,000
/// streams).
pub const CHECKPOINT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Default page size of `GET /v1/audit/events`.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size of `GET /v1/audit/events`.
pub const MAX_LIMIT: i64 = 1000;

/// A caller with the `auditor` role (or `admin`); others get 403.
#[derive(Debug, Clone)]
pub struct AuditorCall(pub Caller);

impl FromRequestParts<AppState> for AuditorCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.allow(&[Role::Auditor])?;
        Ok(AuditorCall(caller))
    }
}

/// A stream's events up to a point and the state they give.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StreamHistory {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The sequence of `state` (0: before the first event).
    pub version: i64,
    /// The stream's last sequence now.
    pub last_sequence: i64,
    /// The events up to that point, in sequence order.
    pub events: Vec<StoredEvent>,
    /// The aggregate's state replayed through its own `apply` up to that
    /// point.
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
}

impl From<StreamAt> for StreamHistory {
    fn from(at: StreamAt) -> Self {
        Self {
            aggregate_type: at.aggregate_type,
            aggregate_id: at.aggregate_id,
            version: at.sequence,
            last_sequence: at.last_sequence,
            events: at.events,
            state: at.state,
        }
    }
}

/// A page of the global history.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Events in feed order: by writing transaction, then position.
    pub events: Vec<StoredEvent>,
    /// An opaque cursor: pass it as `after` for the next page (the place
    /// of the last event returned, or of `after` when the page is empty).
    pub next_after: String,
}

/// The public half of the audit signing key.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPublicKey {
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, hex: checkpoints' signatures verify with it.
    pub public_key: String,
}

/// A stream whose hash chain breaks.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BrokenStream {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The first sequence at which the stream stops verifying.
    pub sequence: i64,
    /// What is wrong there.
    pub reason: String,
}

impl From<StreamProblem> for BrokenStream {
    fn from(b: StreamProblem) -> Self {
        Self {
            aggregate_type: b.aggregate_type,
            aggregate_id: b.aggregate_id,
            sequence: b.sequence,
            reason: b.reason,
        }
    }
}

/// The result of a verification of hash chains.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// True when every chain holds.
    pub ok: bool,
    /// Streams read.
    pub streams_checked: u64,
    /// Events read.
    pub events_checked: u64,
    /// The first broken link of each broken stream.
    pub broken: Vec<BrokenStream>,
}

impl From<VerifyReport> for Verification {
    fn from(r: VerifyReport) -> Self {
        Self {
            ok: r.ok,
            streams_checked: r.streams_checked,
            events_checked: r.events_checked,
            broken: r.broken.into_iter().map(BrokenStream::from).collect(),
        }
    }
}

/// Where to replay a stream to; at most one of the two.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// An RFC 3339 instant: the events recorded at or before it.
    #[param(value_type = Option<clinicbook_wire::schema::Instant>, example = "2026-12-01T09:00:00+01:00")]
    pub as_of: Option<String>,
    /// A sequence: the events up to and including it.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub version: Option<i64>,
}

/// A page of the global history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The `next_after` of the page before (default: the beginning). A
    /// bare position (the older form) is still taken: the page starts at
    /// the first event above it in feed order, so nothing is skipped but
    /// the last events read may come again.
    #[param(pattern = r"^[0-9]{1,18}(\.[0-9]{1,18})?$")]
    pub after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only events of this aggregate type.
    #[param(value_type = Option<AggregateTypeName>)]
    pub aggregate_type: Option<String>,
    /// Only events written by commands of this subject (a token's `sub`).
    #[param(value_type = Option<clinicbook_wire::schema::Text>)]
    pub actor: Option<String>,
}

/// Which streams to verify (all when both are absent).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Only streams of this aggregate type.
    #[param(value_type = Option<AggregateTypeName>)]
    pub aggregate_type: Option<String>,
    /// Only streams with this id.
    #[param(value_type = Option<clinicbook_wire::schema::Text>)]
    pub aggregate_id: Option<String>,
}

/// The stored aggregate type names, as the audit routes take them.
pub struct AggregateTypeName;

impl utoipa::PartialSchema for AggregateTypeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(AggregateKind::ALL.iter().map(|kind| kind.name())))
            .description(Some("An aggregate type, as stored."))
            .into()
    }
}

impl ToSchema for AggregateTypeName {}

/// An aggregate type named by a client: 400 naming the allowed ones.
///
/// # Errors
/// 400 `invalid_request` for a name that is not an aggregate type.
pub fn aggregate_kind(name: &str) -> Result<AggregateKind, ApiError> {
    name.parse()
        .map_err(|e: replay::UnknownAggregateType| ApiError::bad_request(e.to_string()))
}

/// An optional `aggregate_type` filter of a query: none, or the aggregate
/// type it names.
///
/// # Errors
/// As [`aggregate_kind`].
fn kind_filter(name: Option<&str>) -> Result<Option<AggregateKind>, ApiError> {
    name.map(aggregate_kind).transpose()
}

/// An RFC 3339 instant from a query string, in UTC. A `+` that arrived
/// unencoded reads as a space; it is taken for the `+` it was.
///
/// # Errors
/// 400 naming `field` when it is not RFC 3339 or has a second of 60.
pub fn instant(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let text = text.trim().replace(' ', "+");
    let at = DateTime::parse_from_rfc3339(&text)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{field}: {e}; expected an RFC 3339 instant such as 2026-12-01T09:00:00+01:00 (encode + as %2B)"
            ))
        })?
        .with_timezone(&Utc);
    if at.nanosecond() >= 1_000_000_000 {
        return Err(ApiError::bad_request(format!(
            "{field}: a second of 60 is not accepted"
        )));
    }
    Ok(at)
}

/// How far to replay, from `as_of` or `version`.
///
/// # Errors
/// 422 `inconsistent_input` when both are given (each alone is valid);
/// 400 when either is malformed or negative.
pub fn until(query: &StreamQuery) -> Result<Until, ApiError> {
    match (&query.as_of, query.version) {
        (Some(_), Some(_)) => Err(ApiError::new(
            Code::InconsistentInput,
            "give as_of or version, not both",
        )),
        (Some(as_of), None) => Ok(Until::Instant(instant("as_of", as_of)?)),
        (None, Some(version)) if version < 0 => {
            Err(ApiError::bad_request("version: must be 0 or more"))
        }
        (None, Some(version)) => Ok(Until::Sequence(version)),
        (None, None) => Ok(Until::End),
    }
}

/// A storage failure as an answer: a corrupt stream is named (409
/// `stream_corrupt`), anything else is 503.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Corrupt {
            aggregate_type,
            aggregate_id,
            reason,
        } => ApiError::new(
            Code::StreamCorrupt,
            format!("stream {aggregate_type}/{aggregate_id} cannot be replayed: {reason}"),
        ),
        other => CommandError::Store(other).into(),
    }
}

problems!(
    /// The error answers of `stream`.
    StreamErrors: ANY, AUTH, PARAMS, &[Code::InconsistentInput, Code::NotFound, Code::StreamCorrupt, Code::Unavailable]
);

/// A stream's events and its state, replayed up to `as_of` (events recorded
/// at or before that instant) or `version` (a sequence); the whole stream
/// without either.
#[utoipa::path(get, path = "/v1/audit/streams/{aggregate_type}/{aggregate_id}", tag = "audit",
    params(("aggregate_type" = AggregateTypeName, Path),
        ("aggregate_id" = clinicbook_wire::schema::Text, Path), StreamQuery),
    responses((status = 200, body = StreamHistory),
        StreamErrors))]
async fn stream(
    State(state): State<AppState>,
    _auditor: AuditorCall,
    Path((aggregate_type, aggregate_id)): Path<(String, String)>,
    Query(query): Query<StreamQuery>,
) -> Result<axum::Json<StreamHistory>, ApiError> {
    let kind = aggregate_kind(&aggregate_type)?;
    let until = until(&query)?;
    let at = state
        .audit
        .stream_at(kind, &aggregate_id, until)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no stream {kind}/{aggregate_id}")))?;
    if let Until::Sequence(version) = until {
        if version > at.last_sequence {
            return Err(ApiError::not_found(format!(
                "stream {kind}/{aggregate_id} has {} events; there is no version {version}",
                at.last_sequence
            )));
        }
    }
    let mut history: StreamHistory = at.into();
    let mut revealer = Revealer::new(state.commands.store());
    revealer
        .reveal_events(&mut history.events)
        .await
        .map_err(store_error)?;
    revealer
        .reveal(
            &history.aggregate_type,
            &history.aggregate_id,
            &mut history.state,
        )
        .await
        .map_err(store_error)?;
    Ok(axum::Json(history))
}

problems!(
    /// The error answers of `events`.
    EventsErrors: ANY, AUTH, PARAMS, &[Code::Unavailable]
);

/// Where `GET /v1/audit/events` starts: after a cursor it answered, or
/// (the older form) after a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// After this place in the feed.
    Cursor(FeedPoint),
    /// After this position, as pages were once asked for.
    Position(i64),
}

/// Reads `after`: a cursor `next_after` answered, or a position.
///
/// # Errors
/// 400 naming `after` for anything else.
pub fn parse_after(text: &str) -> Result<After, ApiError> {
    let number = |t: &str| t.parse::<i64>().ok().filter(|n| *n >= 0);
    let parsed = match text.split_once('.') {
        Some((transaction, position)) => {
            number(transaction)
                .zip(number(position))
                .map(|(transaction_id, position)| {
                    After::Cursor(FeedPoint {
                        transaction_id,
                        position,
                    })
                })
        }
        None => number(text).map(After::Position),
    };
    parsed.ok_or_else(|| {
        ApiError::bad_request(
            "after: expected the next_after of an earlier page (or a position, 0 or more)",
        )
    })
}

/// The cursor `next_after` answers for a place in the feed.
#[must_use]
pub fn cursor(point: FeedPoint) -> String {
    format!("{}.{}", point.transaction_id, point.position)
}

/// The global history in feed order (by writing transaction, then
/// position: the relay's order), a page at a time, optionally only one
/// aggregate type's or one actor's events. Only transactions below the
/// horizon of running ones are read, so an event committed later always
/// comes after the pages already read: following `next_after` skips
/// nothing.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", params(EventsQuery),
    responses((status = 200, body = EventPage),
        EventsErrors))]
async fn events(
    State(state): State<AppState>,
    _auditor: AuditorCall,
    Query(query): Query<EventsQuery>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let after = query
        .after
        .as_deref()
        .map(parse_after)
        .transpose()?
        .unwrap_or(After::Cursor(FeedPoint::START));
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be 1 to {MAX_LIMIT}"
        )));
    }
    let filter = EventFilter {
        aggregate_type: kind_filter(query.aggregate_type.as_deref())?
            .map(|kind| kind.name().to_string()),
        actor: query.actor,
    };
    let after = match after {
        After::Cursor(point) => point,
        After::Position(0) => FeedPoint::START,
        After::Position(position) => state
            .audit
            .resume_after_position(position)
            .await
            .map_err(store_error)?,
    };
    let events = state
        .audit
        .events_after(after, limit, &filter)
        .await
        .map_err(store_error)?;
    let next_after = cursor(events.last().map_or(after, |e| e.point));
    let mut page: Vec<StoredEvent> = events.into_iter().map(|e| e.event).collect();
    Revealer::new(state.commands.store())
        .reveal_events(&mut page)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(EventPage {
        events: page,
        next_after,
    }))
}

problems!(
    /// The error answers of `verify`.
    VerifyErrors: ANY, AUTH, PARAMS, &[Code::Unavailable]
);

/// Recomputes the hash chain of every stream (or of the streams matching
/// the filters): each must start at sequence 1, have no gap, and every
/// stored hash must match the event and its predecessor.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, body = Verification, description = "ok is false when a chain breaks"),
        VerifyErrors))]
async fn verify(
    State(state): State<AppState>,
    _auditor: AuditorCall,
    Query(query): Query<VerifyQuery>,
) -> Result<axum::Json<Verification>, ApiError> {
    let kind = kind_filter(query.aggregate_type.as_deref())?;
    let report = state
        .audit
        .verify(kind.map(AggregateKind::name), query.aggregate_id.as_deref())
        .await
        .map_err(store_error)?;
    Ok(axum::Json(report.into()))
}

/// A checkpoint refused or failing, as an answer.
fn checkpoint_error(e: CheckpointError) -> ApiError {
    match e {
        CheckpointError::Malformed { .. } => ApiError::bad_request(e.to_string()),
        CheckpointError::DigestMismatch | CheckpointError::BadSignature => ApiError::new(
            Code::CheckpointRefused,
            format!("{e}: it is not a checkpoint this server signed, unchanged"),
        ),
        CheckpointError::InvalidKey(_) => ApiError::internal(&e),
        CheckpointError::Store(e) => store_error(e),
    }
}

problems!(
    /// The error answers of `checkpoint_now` and `public_key`.
    CheckpointErrors: ANY, AUTH, &[Code::Unavailable]
);

/// A signed checkpoint of every stream's head now (type, id, sequence and
/// hash): keep it outside the database, and later `POST` it to
/// `/v1/audit/verify` to find streams deleted or cut short since.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = Checkpoint), CheckpointErrors))]
async fn checkpoint_now(
    State(state): State<AppState>,
    _auditor: AuditorCall,
) -> Result<axum::Json<Checkpoint>, ApiError> {
    let taken = state
        .audit
        .checkpoint(&state.audit_key)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(taken))
}

/// The public half of the key checkpoints are signed with (keep a copy
/// with the checkpoints, to verify them without trusting the server).
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit",
    responses((status = 200, body = AuditPublicKey), CheckpointErrors))]
async fn public_key(
    State(state): State<AppState>,
    _auditor: AuditorCall,
) -> axum::Json<AuditPublicKey> {
    axum::Json(AuditPublicKey {
        algorithm: "Ed25519".to_owned(),
        public_key: state.audit_key.public_key().to_hex(),
    })
}

problems!(
    /// The error answers of `verify_against`: a body that is not a
    /// checkpoint (400), one over 32 MiB (413), and one whose contents do
    /// not match its digest or whose signature is not this server's (422).
    VerifyAgainstErrors: ANY, AUTH, BODY, &[Code::CheckpointRefused, Code::Unavailable]
);

/// Verifies the store against a checkpoint this server signed: every hash
/// chain, and every stream the checkpoint names, which must still exist,
/// be at least as long, and hold the same event at the checkpoint's
/// sequence. `broken` names each stream that does not, at its first bad
/// sequence.
#[utoipa::path(post, path = "/v1/audit/verify", tag = "audit", request_body = Checkpoint,
    responses((status = 200, body = Verification, description = "ok is false when a chain breaks or a stream is missing or shorter than the checkpoint says"),
        VerifyAgainstErrors))]
async fn verify_against(
    State(state): State<AppState>,
    _auditor: AuditorCall,
    Json(against): Json<Checkpoint>,
) -> Result<axum::Json<Verification>, ApiError> {
    let report = state
        .audit
        .verify_against(&against, &state.audit_key.public_key())
        .await
        .map_err(checkpoint_error)?;
    Ok(axum::Json(report.into()))
}
