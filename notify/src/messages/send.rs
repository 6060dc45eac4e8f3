//! The sender: claims each queued message that is due (a short
//! `FOR UPDATE SKIP LOCKED` update that also takes a lease on the row, so
//! two processes never send one message at once), opens the address with
//! the patient's key, renders it and hands it over: email to the SMTP
//! relay, an SMS text to every webhook subscription of `message.sms`. A
//! failure is retried with backoff, and after `max_attempts` the message
//! is marked failed. An erased patient's message is never sent (status
//! `erased`). A process that dies between handing a message over and
//! marking it sent leaves the lease to run out, and the message is sent
//! again (at least once at that one point; the row is never planned twice).

use std::time::Duration;

use chrono::{DateTime, Utc};
use clinicbook_domain::clinic::Clinic;
use clinicbook_domain::patient::{Language, Patient, Sealed};
use clinicbook_domain::PatientId;
use clinicbook_eventstore::EventStore;
use lettre::message::{header, Mailbox, MultiPart};
use lettre::Message;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use super::smtp::Relay;
use super::templates::{local_time, render, Facts, Rendered};
use super::{MessageChannel, MessageConfig, MessageError, MessageKind, MessageStatus};
use crate::names::MESSAGE_SMS;

/// How long a claimed message is left to its sender.
const LEASE: Duration = Duration::from_secs(120);

/// Starts `config.senders` senders until `cancel` (their claims never
/// overlap; the relay's connections are pooled).
pub fn spawn(
    store: EventStore,
    relay: Relay,
    config: MessageConfig,
    cancel: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..config.senders.max(1))
        .map(|n| {
            sender(
                store.clone(),
                relay.clone(),
                config.clone(),
                cancel.clone(),
                n,
            )
        })
        .collect()
}

fn sender(
    store: EventStore,
    relay: Relay,
    config: MessageConfig,
    cancel: CancellationToken,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            loop {
                let pause = match next(&store, &relay, &config).await {
                    Ok(true) => Duration::ZERO,
                    Ok(false) => config.poll,
                    Err(e) => {
                        warn!(error = %e, "message sender failed; retrying");
                        config.poll * 10
                    }
                };
                if pause.is_zero() && !cancel.is_cancelled() {
                    continue;
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        .instrument(tracing::info_span!("message_sender", n)),
    )
}

/// A claimed message.
struct Claimed {
    message_id: Uuid,
    reservation_id: Uuid,
    kind: MessageKind,
    start: DateTime<Utc>,
    channel: MessageChannel,
    patient_id: Uuid,
    clinic_id: Uuid,
    treatment_id: Uuid,
    to: Sealed,
    language: Language,
    details: serde_json::Value,
    attempts: i32,
    position: i64,
    occurred_at: DateTime<Utc>,
}

fn parsed<T: std::str::FromStr>(what: &'static str, raw: &str) -> Result<T, MessageError> {
    raw.parse().map_err(|_| MessageError::Decode {
        what,
        reason: format!("{raw:?} is not one"),
    })
}

/// Claims and sends one due message; answers whether there was one.
async fn next(
    store: &EventStore,
    relay: &Relay,
    config: &MessageConfig,
) -> Result<bool, MessageError> {
    let row = sqlx::query(
        "UPDATE messages SET attempts = attempts + 1,
                lease_until = now() + $2 * interval '1 millisecond'
          WHERE message_id = (
                SELECT message_id FROM messages
                 WHERE status = 'queued' AND next_attempt_at <= now() AND lease_until < now()
                   AND (channel = 'sms' OR $1)
                 ORDER BY next_attempt_at LIMIT 1
                 FOR UPDATE SKIP LOCKED)
          RETURNING message_id, reservation_id, kind, start, channel, patient_id, clinic_id,
                    treatment_id, to_sealed, language, details, attempts, position, occurred_at",
    )
    .bind(relay.configured())
    .bind(i64::try_from(LEASE.as_millis()).unwrap_or(120_000))
    .fetch_optional(store.pool())
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let claimed = Claimed {
        message_id: row.try_get("message_id")?,
        reservation_id: row.try_get("reservation_id")?,
        kind: parsed("messages.kind", row.try_get("kind")?)?,
        start: row.try_get("start")?,
        channel: parsed("messages.channel", row.try_get("channel")?)?,
        patient_id: row.try_get("patient_id")?,
        clinic_id: row.try_get("clinic_id")?,
        treatment_id: row.try_get("treatment_id")?,
        to: Sealed(row.try_get("to_sealed")?),
        language: parsed("messages.language", row.try_get("language")?)?,
        details: row.try_get("details")?,
        attempts: row.try_get("attempts")?,
        position: row.try_get("position")?,
        occurred_at: row.try_get("occurred_at")?,
    };
    let span = tracing::info_span!("message", message_id = %claimed.message_id,
        kind = claimed.kind.as_str(), channel = claimed.channel.as_str());
    async {
        match deliver(store, relay, config, &claimed).await {
            Ok(MessageStatus::Sent) => {
                finish(store, &claimed, MessageStatus::Sent, None).await?;
                let lag = (Utc::now() - claimed.occurred_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::counter!("clinicbook_messages_total", "outcome" => "sent",
                    "channel" => claimed.channel.as_str())
                .increment(1);
                metrics::histogram!("clinicbook_message_lag_seconds",
                    "channel" => claimed.channel.as_str())
                .record(lag.as_secs_f64());
                info!(reservation_id = %claimed.reservation_id, "message sent");
            }
            Ok(status) => {
                finish(store, &claimed, status, None).await?;
                metrics::counter!("clinicbook_messages_total", "outcome" => status.as_str(),
                    "channel" => claimed.channel.as_str())
                .increment(1);
                debug!(status = status.as_str(), "message not sent");
            }
            Err(e) => failed(store, config, &claimed, &e).await?,
        }
        Ok::<_, MessageError>(())
    }
    .instrument(span)
    .await?;
    Ok(true)
}

/// Opens, renders and hands over `message`; answers `Sent`, or `Erased`
/// when the patient's data is gone.
async fn deliver(
    store: &EventStore,
    relay: &Relay,
    config: &MessageConfig,
    message: &Claimed,
) -> Result<MessageStatus, MessageError> {
    let opener = store.opener(PatientId(message.patient_id)).await?;
    let (patient, _) = store
        .aggregate::<Patient>(&message.patient_id.to_string())
        .await?;
    let profile = match patient.profile {
        Some(profile) if !opener.is_erased() && patient.erased_at.is_none() => profile,
        _ => return Ok(MessageStatus::Erased),
    };
    let to = opener.open(&message.to)?;
    let patient_name = opener.open(&profile.contact.name)?;
    let (clinic, _) = store
        .aggregate::<Clinic>(&message.clinic_id.to_string())
        .await?;
    let tz = clinic.timezone.unwrap_or(chrono_tz::UTC);
    let treatment_name = clinic
        .treatments
        .iter()
        .find(|t| t.treatment_id.0 == message.treatment_id)
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let lang = message.language;
    let alternatives = message.details["alternatives"]
        .as_array()
        .map(|starts| {
            starts
                .iter()
                .filter_map(|s| s.as_str()?.parse::<DateTime<Utc>>().ok())
                .map(|s| local_time(s, tz, lang))
                .collect()
        })
        .unwrap_or_default();
    let expires = message.details["expires_at"]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        .map(|s| local_time(s, tz, lang));
    let facts = Facts {
        patient_name: patient_name.clone(),
        clinic_name: clinic.name.clone(),
        treatment_name,
        when: local_time(message.start, tz, lang),
        zone: tz.name().to_owned(),
        alternatives,
        expires,
    };
    let rendered = render(message.kind, lang, &facts)?;
    match message.channel {
        MessageChannel::Email => {
            let email = email(config, message, &clinic.name, &patient_name, &to, rendered)?;
            relay.send(email).await?;
        }
        MessageChannel::Sms => sms(store, message, &to, &rendered).await?,
    }
    Ok(MessageStatus::Sent)
}

/// The email of `message`: text and HTML alternatives, from the clinic
/// (its name on the configured sender address) to the patient.
fn email(
    config: &MessageConfig,
    message: &Claimed,
    clinic_name: &str,
    patient_name: &str,
    to: &str,
    rendered: Rendered,
) -> Result<Message, MessageError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| MessageError::Send(format!("{what}: {e}"));
    let from = Mailbox::new(
        Some(clinic_name.to_owned()),
        config.from.parse().map_err(|e| bad("sender address", &e))?,
    );
    let to = Mailbox::new(
        Some(patient_name.to_owned()),
        to.parse().map_err(|e| bad("recipient address", &e))?,
    );
    // lettre picks each part's Content-Transfer-Encoding from its text:
    // 7bit for ASCII, quoted-printable (or base64) otherwise, so umlauts
    // survive relays without 8BITMIME; the subject and display names are
    // RFC 2047 encoded words when they are not ASCII.
    Message::builder()
        .from(from)
        .to(to)
        .subject(rendered.subject)
        .message_id(Some(format!("<{}@clinicbook>", message.message_id)))
        .header(ContentLanguage(message.language.into()))
        .multipart(MultiPart::alternative_plain_html(
            rendered.text,
            rendered.html,
        ))
        .map_err(|e| bad("message", &e))
}

/// The `Content-Language` header (RFC 3282) of a message.
#[derive(Clone, Debug)]
struct ContentLanguage(&'static str);

impl header::Header for ContentLanguage {
    fn name() -> header::HeaderName {
        header::HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(match s.trim() {
            "de" => ContentLanguage("de"),
            _ => ContentLanguage("en"),
        })
    }

    fn display(&self) -> header::HeaderValue {
        header::HeaderValue::new(Self::name(), self.0.to_owned())
    }
}

/// Queues the SMS text of `message` as a `message.sms` delivery to every
/// subscription that asks for it (the clinic's gateway sends it).
async fn sms(
    store: &EventStore,
    message: &Claimed,
    to: &str,
    rendered: &Rendered,
) -> Result<(), MessageError> {
    let event_id = format!("Message/{}", message.message_id);
    let body = serde_json::json!({
        "id": event_id,
        "type": MESSAGE_SMS,
        "occurred_at": Utc::now(),
        "data": {
            "message_id": message.message_id,
            "reservation_id": message.reservation_id,
            "kind": message.kind,
            "to": to,
            "language": message.language,
            "text": rendered.sms,
        },
    });
    let queued = sqlx::query(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, position, type, body)
         SELECT webhook_id, $1, $2, $3, $4 FROM webhooks
          WHERE deleted_at IS NULL AND ($3 = ANY (events) OR '*' = ANY (events))
         ON CONFLICT DO NOTHING",
    )
    .bind(&event_id)
    .bind(message.position)
    .bind(MESSAGE_SMS)
    .bind(body.to_string())
    .execute(store.pool())
    .await?
    .rows_affected();
    metrics::counter!("clinicbook_webhook_deliveries_queued_total").increment(queued);
    Ok(())
}

/// Records the end of a message: sent, failed or erased.
async fn finish(
    store: &EventStore,
    message: &Claimed,
    status: MessageStatus,
    error: Option<String>,
) -> Result<(), MessageError> {
    sqlx::query(
        "UPDATE messages
            SET status = $2, last_error = $3, lease_until = '-infinity',
                sent_at = CASE WHEN $2 = 'sent' THEN now() END
          WHERE message_id = $1",
    )
    .bind(message.message_id)
    .bind(status.as_str())
    .bind(error)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// A failed attempt: retried after a backoff, or marked failed after the
/// last one.
async fn failed(
    store: &EventStore,
    config: &MessageConfig,
    message: &Claimed,
    error: &MessageError,
) -> Result<(), MessageError> {
    let attempts = u32::try_from(message.attempts).unwrap_or(u32::MAX);
    let reason = error.to_string();
    if attempts >= config.max_attempts {
        finish(store, message, MessageStatus::Failed, Some(reason.clone())).await?;
        metrics::counter!("clinicbook_messages_total", "outcome" => "failed",
            "channel" => message.channel.as_str())
        .increment(1);
        warn!(attempts, error = %reason, "message failed; no more attempts");
        return Ok(());
    }
    let pause = config.backoff(attempts);
    sqlx::query(
        "UPDATE messages
            SET last_error = $2, lease_until = '-infinity',
                next_attempt_at = now() + $3 * interval '1 millisecond'
          WHERE message_id = $1",
    )
    .bind(message.message_id)
    .bind(&reason)
    .bind(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX))
    .execute(store.pool())
    .await?;
    metrics::counter!("clinicbook_messages_total", "outcome" => "retried",
        "channel" => message.channel.as_str())
    .increment(1);
    debug!(attempts, ?pause, error = %reason, "message attempt failed; retrying");
    Ok(())
}
