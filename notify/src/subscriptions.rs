//! Webhook subscriptions (`POST/GET/DELETE /v1/webhooks`) and their
//! deliveries list.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use clinicbook_eventstore::feed;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::names::{ALL, EVENT_TYPES};

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateWebhook {
    /// Where deliveries are POSTed: `https`, or `http` to a loopback
    /// address when the server allows it (`CLINICBOOK_WEBHOOK_ALLOW_LOOPBACK=1`).
    #[cfg_attr(feature = "openapi", schema(value_type = HttpsUrl))]
    pub url: String,
    /// Event names to deliver, or `["*"]` (alone) for all.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Vec<EventName>, min_items = 1, max_items = 32)
    )]
    pub events: Vec<String>,
    /// What it is for (no NUL).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 500, pattern = r"^[^\u0000]*$")
    )]
    pub description: Option<String>,
}

/// What [`check_url`] accepts as `https` (the document's pattern): an
/// `https://` URL whose host is dot-separated labels of letters, digits and
/// `-` (not at a label's ends, no `xn--` labels), the last starting with a
/// letter (no IP literals), an optional port of 1 to 4 digits, then
/// anything without spaces or control characters after `/`, `?` or `#`.
pub const HTTPS_URL: &str = concat!(
    r"^https://(?:(?![Xx][Nn]--)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*",
    r"(?![Xx][Nn]--)[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?",
    r"(?::[0-9]{1,4})?(?:[/?#][^\u0000-\u0020\u007f]*)?$"
);

/// [`HTTPS_URL`] as a schema component, at most 2048 characters.
#[cfg(feature = "openapi")]
pub struct HttpsUrl;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for HttpsUrl {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(HTTPS_URL))
            .max_length(Some(2048))
            .description(Some(
                "An https URL with a DNS host name (http to a loopback address is also taken when the server runs with CLINICBOOK_WEBHOOK_ALLOW_LOOPBACK=1).",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for HttpsUrl {}

/// The event names a subscription may list, for the OpenAPI document.
#[cfg(feature = "openapi")]
pub struct EventName;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for EventName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(EVENT_TYPES.iter().copied().chain([ALL])))
            .description(Some("An event name, or `*` for every event."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for EventName {}

/// Answer of `POST /v1/webhooks`: the secret is shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookCreated {
    /// The subscription.
    pub webhook_id: Uuid,
    /// The HMAC-SHA256 key of its `Clinicbook-Signature` headers.
    pub secret: String,
}

/// A subscription as listed (without its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookView {
    /// The subscription.
    pub webhook_id: Uuid,
    /// Its receiver.
    pub url: String,
    /// The event names it gets.
    pub events: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Answer of `GET /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    /// Every subscription not deleted, oldest first.
    pub webhooks: Vec<WebhookView>,
}

/// Answer of `DELETE /v1/webhooks/{webhook_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDeleted {
    /// The subscription, which gets no further deliveries.
    pub webhook_id: Uuid,
}

/// One event sent (or being sent) to a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// The event's stable id (the body's `id`, header `Clinicbook-Event-Id`).
    pub event_id: String,
    /// The event name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Attempts so far.
    pub attempts: i32,
    /// HTTP status of the last attempt (none: no answer, or a timeout).
    pub last_status: Option<i32>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it is tried next (none once delivered or dead-lettered).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When retrying stopped, 24 hours after the first attempt.
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

/// Answer of `GET /v1/webhooks/{webhook_id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryPage {
    /// Deliveries in the order they were queued (the feed's).
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `after` for the next page (none on the last).
    pub next_after: Option<i64>,
}

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A field is not valid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Fields that are each valid but disagree (`"*"` with other names).
    #[error("inconsistent {field}: {reason}")]
    Inconsistent {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No such subscription.
    #[error("webhook {0} not found")]
    NotFound(Uuid),
    /// The Idempotency-Key was used with another request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The Idempotency-Key created a subscription that was deleted since:
    /// answering it again would hand out a subscription that no longer
    /// exists, and creating another would not be a replay.
    #[error("idempotency key of webhook {0}, deleted since")]
    KeyOfDeleted(Uuid),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The feed could not be read.
    #[error(transparent)]
    Store(#[from] clinicbook_eventstore::StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Whether `url` may receive deliveries: `https` with a host, or `http` to
/// a loopback address (`127.0.0.0/8`, `::1`, `localhost`) when
/// `allow_loopback`; never with credentials in it.
///
/// # Errors
/// `Invalid` on `url` saying why.
pub fn check_url(url: &str, allow_loopback: bool) -> Result<url::Url, WebhookError> {
    if url.chars().count() > 2048 {
        return Err(invalid("url", "must be at most 2048 characters"));
    }
    if url.starts_with("https:") {
        return https_url(url).ok_or_else(|| {
            invalid(
                "url",
                "must be https://host[:port][/path] with a DNS name (letters, digits, -), no IP literal, spaces or credentials",
            )
        });
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("url", "must not hold credentials"));
    }
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => return Err(invalid("url", "must name a host")),
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback && allow_loopback => Ok(parsed),
        "http" if loopback => Err(invalid(
            "url",
            "http is allowed only to loopback addresses on a server run with CLINICBOOK_WEBHOOK_ALLOW_LOOPBACK=1; use https",
        )),
        _ => Err(invalid("url", "must be https")),
    }
}

/// `url` when it is an `https` URL of the [`HTTPS_URL`] form.
fn https_url(url: &str) -> Option<url::Url> {
    // A JSON Schema pattern's `$` (Python's) also matches before a final
    // newline: such a URL is the URL without it.
    let url = url.strip_suffix('\n').unwrap_or(url);
    let rest = url.strip_prefix("https://")?;
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if tail.chars().any(|c| c <= ' ' || c == '\u{7f}') {
        return None;
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if port.is_some_and(|p| !(1..=4).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && !label.to_ascii_lowercase().starts_with("xn--")
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let last_ok = labels
        .last()
        .is_some_and(|l| l.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()));
    if !labels.iter().all(label_ok) || !last_ok {
        return None;
    }
    url::Url::parse(url).ok()
}

/// The event names of a subscription, checked.
fn check_events(events: &[String]) -> Result<Vec<String>, WebhookError> {
    if events.is_empty() || events.len() > 32 {
        return Err(invalid("events", "must name 1 to 32 events, or [\"*\"]"));
    }
    if events.iter().any(|e| e == ALL) {
        if events.len() > 1 {
            return Err(WebhookError::Inconsistent {
                field: "events",
                reason: "\"*\" stands alone".to_owned(),
            });
        }
        return Ok(vec![ALL.to_owned()]);
    }
    let mut names = Vec::with_capacity(events.len());
    for name in events {
        if !EVENT_TYPES.contains(&name.as_str()) {
            return Err(invalid(
                "events",
                format!(
                    "{name:?} is not an event name; the names are {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    Ok(names)
}

/// The webhook subscriptions, over the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Webhooks {
    pool: PgPool,
    allow_loopback: bool,
}

impl Webhooks {
    /// Subscriptions in the database at `pool`; `allow_loopback` lets
    /// `http` URLs to loopback addresses in (tests, local tools).
    #[must_use]
    pub fn new(pool: PgPool, allow_loopback: bool) -> Self {
        Self {
            pool,
            allow_loopback,
        }
    }

    /// Creates a subscription that gets the events committed from now on.
    /// With an idempotency key (`scope`, `key`), the same key and request
    /// answer the first subscription again.
    ///
    /// # Errors
    /// `Invalid` for a URL or event names that are refused;
    /// `IdempotencyKeyReused`; `KeyOfDeleted` when the key's subscription
    /// was deleted since; `Database`.
    pub async fn create(
        &self,
        input: &CreateWebhook,
        idempotency: Option<(&str, &str)>,
    ) -> Result<WebhookCreated, WebhookError> {
        let url = check_url(&input.url, self.allow_loopback)?.to_string();
        let events = check_events(&input.events)?;
        if input
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 500 || d.contains('\0'))
        {
            return Err(invalid(
                "description",
                "must be at most 500 characters, without NUL",
            ));
        }
        let request_hash = Sha256::digest(serde_json::to_vec(input).unwrap_or_default()).to_vec();
        let mut secret = [0u8; 24];
        OsRng.fill_bytes(&mut secret);
        let secret = format!("whsec_{}", hex::encode(secret));
        let webhook_id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO webhooks (webhook_id, url, events, description, secret,
                                   idempotency_scope, idempotency_key, request_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING",
        )
        .bind(webhook_id)
        .bind(&url)
        .bind(&events)
        .bind(&input.description)
        .bind(&secret)
        .bind(idempotency.map(|(scope, _)| scope))
        .bind(idempotency.map(|(_, key)| key))
        .bind(&request_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let (scope, key) = idempotency.unwrap_or_default();
            let row = sqlx::query(
                "SELECT webhook_id, secret, request_hash, deleted_at IS NOT NULL AS deleted
                   FROM webhooks
                  WHERE idempotency_scope = $1 AND idempotency_key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            let hash: Vec<u8> = row.try_get("request_hash")?;
            if hash != request_hash {
                return Err(WebhookError::IdempotencyKeyReused);
            }
            let webhook_id = row.try_get("webhook_id")?;
            if row.try_get("deleted")? {
                return Err(WebhookError::KeyOfDeleted(webhook_id));
            }
            return Ok(WebhookCreated {
                webhook_id,
                secret: row.try_get("secret")?,
            });
        }
        // Events from now on: the cursor starts at the feed's head.
        let head = feed::head(&mut *tx).await?;
        crate::worker::save_cursor(&mut tx, webhook_id, head).await?;
        tx.commit().await?;
        Ok(WebhookCreated { webhook_id, secret })
    }

    /// Every subscription not deleted, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list(&self) -> Result<WebhookList, WebhookError> {
        let rows = sqlx::query(
            "SELECT webhook_id, url, events, description, created_at FROM webhooks
              WHERE deleted_at IS NULL ORDER BY created_at, webhook_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let webhooks = rows
            .iter()
            .map(|row| {
                Ok(WebhookView {
                    webhook_id: row.try_get("webhook_id")?,
                    url: row.try_get("url")?,
                    events: row.try_get("events")?,
                    description: row.try_get("description")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(WebhookList { webhooks })
    }

    /// Deletes a subscription: it gets no further deliveries (its
    /// deliveries list stays readable).
    ///
    /// # Errors
    /// `NotFound` for an unknown or already deleted id; `Database`.
    pub async fn delete(&self, webhook_id: Uuid) -> Result<WebhookDeleted, WebhookError> {
        let done = sqlx::query(
            "UPDATE webhooks SET deleted_at = now() WHERE webhook_id = $1 AND deleted_at IS NULL",
        )
        .bind(webhook_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(WebhookError::NotFound(webhook_id));
        }
        Ok(WebhookDeleted { webhook_id })
    }

    /// A page of a subscription's deliveries, in the order they were queued.
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `Database`.
    pub async fn deliveries(
        &self,
        webhook_id: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<DeliveryPage, WebhookError> {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhooks WHERE webhook_id = $1)")
                .bind(webhook_id)
                .fetch_one(&self.pool)
                .await?;
        if !exists {
            return Err(WebhookError::NotFound(webhook_id));
        }
        let rows = sqlx::query(
            "SELECT seq, event_id, type, attempts, last_status, delivered_at, dead_lettered_at,
                    CASE WHEN delivered_at IS NULL AND dead_lettered_at IS NULL
                         THEN next_attempt_at END AS next_attempt_at
               FROM webhook_deliveries
              WHERE webhook_id = $1 AND seq > $2
              ORDER BY seq LIMIT $3",
        )
        .bind(webhook_id)
        .bind(after)
        .bind(limit.saturating_add(1))
        .fetch_all(&self.pool)
        .await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        let mut deliveries = Vec::new();
        let mut last = None;
        for row in rows.iter().take(usize::try_from(limit).unwrap_or(0)) {
            last = Some(row.try_get::<i64, _>("seq")?);
            deliveries.push(DeliveryView {
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("type")?,
                attempts: row.try_get("attempts")?,
                last_status: row.try_get("last_status")?,
                delivered_at: row.try_get("delivered_at")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                dead_lettered_at: row.try_get("dead_lettered_at")?,
            });
        }
        Ok(DeliveryPage {
            deliveries,
            next_after: if more { last } else { None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http_when_allowed() {
        assert!(check_url("https://hooks.example.com/in", false).is_ok());
        assert!(check_url("https://hooks.example.com:8443/in?x=1#y", false).is_ok());
        assert!(check_url("https://localhost/in\n", false).is_ok());
        for loopback in [
            "http://127.0.0.1:9000/in",
            "http://[::1]/",
            "http://localhost:1/",
        ] {
            assert!(check_url(loopback, true).is_ok(), "{loopback}");
            assert!(check_url(loopback, false).is_err(), "{loopback}");
        }
        for refused in [
            "http://10.0.0.1/in",
            "http://169.254.169.254/latest/meta-data",
            "http://example.com/",
            "ftp://127.0.0.1/",
            "https://user:pw@example.com/",
            "not a url",
            "file:///etc/passwd",
            "https://10.0.0.1/in",
            "https://[::1]/in",
            "https://xn--nxasmq6b.example/",
            "https://a.com:99999/",
            "https://a.com/with space",
            "https://-a.com/",
        ] {
            assert!(check_url(refused, true).is_err(), "{refused}");
        }
    }

    #[test]
    fn event_names_are_checked() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(check_events(&names(&["*"])).ok(), Some(names(&["*"])));
        assert_eq!(
            check_events(&names(&["reservation.booked", "reservation.booked"])).ok(),
            Some(names(&["reservation.booked"]))
        );
        assert!(check_events(&[]).is_err());
        assert!(check_events(&names(&["*", "reservation.booked"])).is_err());
        assert!(check_events(&names(&["reservation.exploded"])).is_err());
    }
}
