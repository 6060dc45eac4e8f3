//! A polite HTTP client for the demo loader: bearer tokens, an
//! `Idempotency-Key` on every POST, waiting out 429s as `Retry-After`
//! says, retrying timeouts and 503s with backoff, and a bounded number of
//! requests in flight.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::RETRY_AFTER;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::DemoError;

/// Tries of one request that keeps being rate limited.
const RATE_LIMITED_TRIES: u32 = 60;
/// Tries of one request that fails in transport or answers 503.
const FAILED_TRIES: u32 = 6;
/// Time after which one request is given up and tried again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Whose token a request carries.
#[derive(Clone, Copy, Debug)]
pub(super) enum As {
    /// The admin token (clinic setup, catalog, closures).
    Admin,
    /// The staff token (patients, bookings).
    Staff,
}

/// The server under load, with the demo's two tokens.
#[derive(Debug)]
pub(super) struct Api {
    http: reqwest::Client,
    base: String,
    admin: String,
    staff: String,
    requests: AtomicU64,
    rate_limited: AtomicU64,
}

/// A status and its JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
pub(super) struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The parsed body.
    pub body: Value,
    /// What the request was for, for error messages.
    what: String,
}

impl Api {
    /// A client for the server at `base` (no trailing slash needed).
    ///
    /// # Errors
    /// `DemoError::Client` when the HTTP client cannot be built.
    pub(super) fn new(base: &str, admin: &str, staff: &str) -> Result<Self, DemoError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| DemoError::Client(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            admin: admin.to_string(),
            staff: staff.to_string(),
            requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        })
    }

    /// The server's base URL.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// Requests sent so far (retries included) and how many of them were
    /// answered 429.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.rate_limited.load(Ordering::Relaxed),
        )
    }

    /// Checks that a clinicbook server answers `GET /healthz`.
    ///
    /// # Errors
    /// `DemoError::Unreachable` when nothing answers, or something that is
    /// not a healthy clinicbook server does.
    pub(super) async fn probe(&self) -> Result<(), DemoError> {
        let unreachable = || DemoError::Unreachable {
            url: self.base.clone(),
        };
        let response = self
            .http
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|_| unreachable())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(unreachable())
        }
    }

    /// `GET path`.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub(super) async fn get(&self, who: As, path: &str) -> Result<Reply, DemoError> {
        self.send(who, Method::GET, path, None, None).await
    }

    /// `PUT path` with a JSON body.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub(super) async fn put<B: Serialize>(
        &self,
        who: As,
        path: &str,
        body: &B,
    ) -> Result<Reply, DemoError> {
        let body = to_json(path, body)?;
        self.send(who, Method::PUT, path, Some(body), None).await
    }

    /// `POST path` with a JSON body and `Idempotency-Key: key`.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub(super) async fn post<B: Serialize>(
        &self,
        who: As,
        path: &str,
        body: &B,
        key: &str,
    ) -> Result<Reply, DemoError> {
        let body = to_json(path, body)?;
        self.send(who, Method::POST, path, Some(body), Some(key))
            .await
    }

    /// `POST path` without a body, with `Idempotency-Key: key`.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub(super) async fn post_empty(
        &self,
        who: As,
        path: &str,
        key: &str,
    ) -> Result<Reply, DemoError> {
        self.send(who, Method::POST, path, None, Some(key)).await
    }

    /// Sends one request until it gets an answer that is neither a rate
    /// limit nor a transient failure, and returns that answer whatever its
    /// status. A POST is only retried with its idempotency key, so a retry
    /// after a timeout never writes twice.
    ///
    /// # Errors
    /// `Unauthorized` on 401; `Unreachable` when the server went away;
    /// `Transport` when the request kept failing; `Refused` when the
    /// server kept answering 429 or 503.
    async fn send(
        &self,
        who: As,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        key: Option<&str>,
    ) -> Result<Reply, DemoError> {
        let what = format!("{method} {path}");
        let (mut rate_limited, mut failed) = (0, 0);
        let retry = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        let outgoing = Outgoing {
            who,
            method: &method,
            path,
            body: body.as_deref(),
            key,
        };
        let sent = (|| self.attempt(&outgoing, &what))
            .retry(retry)
            .when(|transient| match transient {
                Transient::RateLimited { .. } => {
                    self.rate_limited.fetch_add(1, Ordering::Relaxed);
                    rate_limited += 1;
                    rate_limited < RATE_LIMITED_TRIES
                }
                Transient::Unavailable(_) | Transient::Failed(_) => {
                    failed += 1;
                    failed < FAILED_TRIES
                }
            })
            .adjust(|transient, pause| match transient {
                Transient::RateLimited { wait, .. } => Some(*wait),
                _ => pause,
            })
            .await;
        match sent {
            Ok(answer) => answer,
            // Still refused after every try: the answer is the last refusal.
            Err(Transient::RateLimited { reply, .. } | Transient::Unavailable(reply)) => Ok(reply),
            Err(Transient::Failed(error)) if error.is_connect() => Err(DemoError::Unreachable {
                url: self.base.clone(),
            }),
            Err(Transient::Failed(error)) => Err(DemoError::Transport {
                what,
                detail: error.to_string(),
            }),
        }
    }

    /// One try of [`Api::send`]: the answer (or a refused token), or what
    /// makes another try worth it.
    async fn attempt(
        &self,
        outgoing: &Outgoing<'_>,
        what: &str,
    ) -> Result<Result<Reply, DemoError>, Transient> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .request(outgoing)
            .send()
            .await
            .map_err(Transient::Failed)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after(&response);
            let reply = read(response, what.to_owned()).await;
            return Err(Transient::RateLimited { reply, wait });
        }
        let reply = read(response, what.to_owned()).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(Transient::Unavailable(reply));
        }
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Err(DemoError::Unauthorized {
                url: self.base.clone(),
                detail: reply.detail(),
            }));
        }
        Ok(Ok(reply))
    }

    /// `outgoing` as a request of its own (each try sends a fresh one).
    fn request(&self, outgoing: &Outgoing<'_>) -> reqwest::RequestBuilder {
        let token = match outgoing.who {
            As::Admin => &self.admin,
            As::Staff => &self.staff,
        };
        let mut request = self
            .http
            .request(
                outgoing.method.clone(),
                format!("{}{}", self.base, outgoing.path),
            )
            .bearer_auth(token);
        if let Some(body) = outgoing.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        if let Some(key) = outgoing.key {
            request = request.header("idempotency-key", key);
        }
        request
    }
}

/// What [`Api::send`] sends on every try: who, the method and path, the
/// JSON body and the idempotency key, if any.
struct Outgoing<'a> {
    who: As,
    method: &'a Method,
    path: &'a str,
    body: Option<&'a [u8]>,
    key: Option<&'a str>,
}

impl Reply {
    /// The problem `code` of an error answer (empty otherwise).
    pub(super) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// The problem `detail` of an error answer, else the whole body.
    fn detail(&self) -> String {
        self.body["detail"]
            .as_str()
            .map_or_else(|| self.body.to_string(), str::to_string)
    }

    /// The body as `T` when the status is `expected`.
    ///
    /// # Errors
    /// `Refused` for another status; `BadAnswer` when the body is not a `T`.
    pub(super) fn parse<T: DeserializeOwned>(self, expected: StatusCode) -> Result<T, DemoError> {
        if self.status != expected {
            return Err(self.refused());
        }
        serde_json::from_value(self.body).map_err(|e| DemoError::BadAnswer {
            what: self.what,
            detail: e.to_string(),
        })
    }

    /// Ok when the status is `expected`.
    ///
    /// # Errors
    /// `Refused` otherwise.
    pub(super) fn expect(self, expected: StatusCode) -> Result<(), DemoError> {
        if self.status == expected {
            Ok(())
        } else {
            Err(self.refused())
        }
    }

    /// The error for an answer the loader did not expect. A reused
    /// idempotency key means a run stopped half-way on another day.
    pub(super) fn refused(self) -> DemoError {
        if self.code() == "idempotency_key_reused" {
            return DemoError::Interrupted { what: self.what };
        }
        DemoError::Refused {
            code: self.code().to_string(),
            detail: self.detail(),
            status: self.status.as_u16(),
            what: self.what,
        }
    }
}

/// Runs `task` on every item with at most `limit` in flight, and gives the
/// results in the items' order; stops at the first error.
///
/// # Errors
/// The first error of a task.
pub(super) async fn each<T, R, F, Fut>(
    items: Vec<T>,
    limit: usize,
    task: F,
) -> Result<Vec<R>, DemoError>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<R, DemoError>>,
{
    futures::stream::iter(items)
        .map(task)
        .buffered(limit.max(1))
        .try_collect()
        .await
}

fn to_json<B: Serialize>(path: &str, body: &B) -> Result<Vec<u8>, DemoError> {
    serde_json::to_vec(body).map_err(|e| DemoError::BadAnswer {
        what: format!("the body for {path}"),
        detail: e.to_string(),
    })
}

async fn read(response: reqwest::Response, what: String) -> Reply {
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    Reply {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        what,
    }
}

/// The wait a 429 asks for: its `Retry-After` seconds (the rate limiter
/// rounds down, so `0` is common), plus a little jitter so that the
/// requests in flight do not all come back at the same instant.
fn retry_after(response: &reqwest::Response) -> Duration {
    let seconds = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .min(30);
    Duration::from_secs(seconds) + Duration::from_millis(50 + fastrand::u64(..100))
}

/// An answer worth asking again for.
enum Transient {
    /// 429: asked to wait `wait`.
    RateLimited {
        /// The refusal.
        reply: Reply,
        /// Its `Retry-After`, with jitter.
        wait: Duration,
    },
    /// 503.
    Unavailable(Reply),
    /// No answer (timeout, connection refused or reset).
    Failed(reqwest::Error),
}
