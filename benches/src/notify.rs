//! `notify`: how soon patients and other systems hear of a booking.
//!
//! Starts a real SMTP server (the harness's aiosmtpd) and a webhook
//! receiver of its own (axum, on loopback) that checks every signature,
//! then `clinicbook serve` over a throwaway PostgreSQL, sending to both.
//! It registers `--bookings` patients (English and German, consent to
//! email), one device each, `reminder_minutes_before: 1`, subscribes the
//! receiver to `reservation.booked` and `reminder.due`, and books each
//! patient at `--rate` a second, the starts spread over the minutes after
//! the run's first two, so the reminders fall due while it watches.
//!
//! Delays, each on one clock:
//! - commit to webhook: the event's `occurred_at` (taken inside the
//!   committing transaction) to the receiver having the delivery;
//! - commit to confirmation sent: the same `occurred_at` to the message
//!   log's `sent_at` (the SMTP relay accepted it);
//! - due to reminder sent: `start - reminder_minutes_before` to the
//!   reminder's `sent_at`;
//! - due to `reminder.due` delivered.
//!
//! It also counts redeliveries, bad signatures, what never came, and
//! patients who did not get exactly one confirmation and one reminder.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, Timelike, Utc};
use clinicbook_testkit::SmtpServer;
use clinicbook_wire::messages::{MessageChannel, MessageKind, MessageList};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::http::{set_up, Api};
use crate::report::{self, Latency};
use crate::server::Server;

/// Minutes before the start a reminder falls due (the least allowed).
const REMINDER_MINUTES: i64 = 1;

/// How long the run waits for the last messages after the last is due.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);

/// The event types the receiver is subscribed to.
const BOOKED: &str = "reservation.booked";
const REMINDER_DUE: &str = "reminder.due";

/// Options of `clinicbook-benches notify`.
#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    /// The `clinicbook` binary started for the run.
    #[arg(long, default_value = "target/release/clinicbook")]
    bin: PathBuf,
    /// Patients booked (each gets a confirmation and a reminder).
    #[arg(long, default_value_t = 200)]
    bookings: usize,
    /// Bookings a second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// The starts (and so the reminders) are spread over this many minutes.
    #[arg(long, default_value_t = 3)]
    spread_minutes: i64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures of a run.
#[derive(Debug, Serialize)]
struct NotifyReport {
    bookings: usize,
    rate_per_second: f64,
    /// Bookings whose `reservation.booked` never reached the receiver.
    booked_missing: usize,
    /// Reservations whose `reminder.due` never reached the receiver.
    reminder_due_missing: usize,
    /// Deliveries beyond the first of an event (at least once allows them).
    redeliveries: usize,
    /// Deliveries whose `Clinicbook-Signature` did not verify.
    bad_signatures: usize,
    /// Emails the SMTP server accepted.
    emails_received: usize,
    /// Patients who did not get exactly two emails (a confirmation and a
    /// reminder).
    patients_without_two_emails: usize,
    /// Confirmations or reminders the message log does not show as sent.
    messages_not_sent: usize,
    commit_to_webhook_ms: Latency,
    commit_to_confirmation_sent_ms: Latency,
    due_to_reminder_sent_ms: Latency,
    due_to_reminder_webhook_ms: Latency,
}

/// The first delivery of one event.
#[derive(Clone, Copy)]
struct Delivered {
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
}

/// What the receiver has seen.
#[derive(Default)]
struct Received {
    /// The subscription's secret, set once it is created.
    secret: Option<String>,
    /// First delivery of each (event type, reservation).
    first: HashMap<(String, Uuid), Delivered>,
    redeliveries: usize,
    bad_signatures: usize,
}

impl Received {
    fn first(&self, kind: &str, reservation: Uuid) -> Option<Delivered> {
        self.first.get(&(kind.to_owned(), reservation)).copied()
    }
}

type Shared = Arc<Mutex<Received>>;

/// The parts of a delivery the benchmark reads.
#[derive(Deserialize)]
struct Delivery {
    #[serde(rename = "type")]
    kind: String,
    occurred_at: DateTime<Utc>,
    data: DeliveryData,
}

/// `data` of a delivery.
#[derive(Deserialize)]
struct DeliveryData {
    aggregate_id: Uuid,
}

/// `{"webhook_id": …, "secret": …}`
#[derive(Deserialize)]
struct WebhookCreated {
    secret: String,
}

/// `{"patient_id": …}`
#[derive(Deserialize)]
struct PatientCreated {
    patient_id: Uuid,
}

/// The receiver's one route: checks the signature, records the first
/// delivery of each event, answers 204.
async fn receive(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let received_at = Utc::now();
    let signature = headers
        .get("clinicbook-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let verified = seen
        .secret
        .as_deref()
        .is_some_and(|secret| clinicbook_notify::sign::verify(secret, signature, &body));
    if !verified {
        seen.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(delivery) = serde_json::from_slice::<Delivery>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    match seen
        .first
        .entry((delivery.kind, delivery.data.aggregate_id))
    {
        Entry::Occupied(_) => seen.redeliveries += 1,
        Entry::Vacant(first) => {
            first.insert(Delivered {
                occurred_at: delivery.occurred_at,
                received_at,
            });
        }
    }
    StatusCode::NO_CONTENT
}

/// `to - from`, zero if negative.
fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// One booking of the run.
struct Booked {
    reservation_id: Uuid,
    email: String,
    due_at: DateTime<Utc>,
}

/// Runs the benchmark.
///
/// # Errors
/// The SMTP server, the receiver or the server cannot be started, or a
/// setup call or booking is refused.
pub async fn run(args: NotifyArgs) -> anyhow::Result<()> {
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    if !(1..=60).contains(&args.spread_minutes) {
        bail!("--spread-minutes from 1 to 60");
    }
    let smtp = SmtpServer::start().await.context("starting aiosmtpd")?;
    let seen: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the webhook receiver")?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&seen));
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut server = Server::start_with(
        &args.bin,
        &[
            ("CLINICBOOK_WEBHOOK_ALLOW_LOOPBACK", "1".to_string()),
            ("CLINICBOOK_SMTP_URL", smtp.url()),
        ],
    )
    .await?;
    let api = Api::new(
        &server.url,
        server.admin_token.clone(),
        Duration::from_secs(30),
    )?;
    let clinic = set_up(&api, args.bookings).await?;
    let _: serde_json::Value = api
        .call(
            Method::PUT,
            &format!("/v1/clinics/{}/settings", clinic.clinic_id),
            json!({"reminder_minutes_before": REMINDER_MINUTES}),
            reqwest::StatusCode::OK,
        )
        .await?;
    let created: WebhookCreated = api
        .call(
            Method::POST,
            "/v1/webhooks",
            json!({"url": hook_url, "events": [BOOKED, REMINDER_DUE]}),
            reqwest::StatusCode::CREATED,
        )
        .await?;
    seen.lock().unwrap_or_else(PoisonError::into_inner).secret = Some(created.secret);
    let mut patients = Vec::with_capacity(args.bookings);
    for i in 0..args.bookings {
        let email = format!("patient{i}@example.com");
        let language = if i % 2 == 0 { "en" } else { "de" };
        let created: PatientCreated = api
            .call(
                Method::POST,
                "/v1/patients",
                json!({"name": format!("Patient {i}"), "email": email, "language": language,
                       "consent": {"email": true, "sms": false}}),
                reqwest::StatusCode::CREATED,
            )
            .await?;
        patients.push((created.patient_id, email));
    }

    // The first start two whole minutes after the bookings are done, so
    // every reminder falls due after its booking.
    let booking_time = Duration::from_secs_f64(args.bookings as f64 / args.rate);
    let first =
        Utc::now() + chrono::Duration::from_std(booking_time)? + chrono::Duration::minutes(2);
    let first = first.with_nanosecond(0).unwrap_or(first);
    let first = first.with_second(0).unwrap_or(first) + chrono::Duration::minutes(1);
    let spread = usize::try_from(args.spread_minutes)?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut booked = Vec::with_capacity(args.bookings);
    for (i, (patient, email)) in patients.into_iter().enumerate() {
        ticker.tick().await;
        let reservation_id = Uuid::new_v4();
        let start = first + chrono::Duration::minutes(i64::try_from(i % spread)?);
        let mut body = clinic.booking(patient, clinic.devices[i], start);
        body.reservation_id = Some(reservation_id);
        let _: serde_json::Value = api
            .call(
                Method::POST,
                "/v1/reservations",
                serde_json::to_value(&body)?,
                reqwest::StatusCode::CREATED,
            )
            .await
            .with_context(|| format!("booking {i}"))?;
        booked.push(Booked {
            reservation_id,
            email,
            due_at: start - chrono::Duration::minutes(REMINDER_MINUTES),
        });
    }
    let last_due = booked.iter().map(|b| b.due_at).max().unwrap_or(first);
    eprintln!(
        "{} bookings made; the last reminder falls due at {last_due}; waiting for it",
        booked.len()
    );
    if let Ok(wait) = (last_due - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let drain_until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let all_in = {
            let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            booked.iter().all(|b| {
                seen.first(BOOKED, b.reservation_id).is_some()
                    && seen.first(REMINDER_DUE, b.reservation_id).is_some()
            })
        } && smtp.received().len() >= 2 * booked.len();
        if all_in || tokio::time::Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.ensure_running()?;
    receiver.abort();

    let mut to_webhook = Vec::new();
    let mut to_confirmation = Vec::new();
    let mut to_reminder = Vec::new();
    let mut to_due_webhook = Vec::new();
    let (mut booked_missing, mut due_missing, mut not_sent) = (0, 0, 0);
    for b in &booked {
        let (booked_delivery, due_delivery) = {
            let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            (
                seen.first(BOOKED, b.reservation_id),
                seen.first(REMINDER_DUE, b.reservation_id),
            )
        };
        match booked_delivery {
            Some(d) => to_webhook.push(between(d.occurred_at, d.received_at)),
            None => booked_missing += 1,
        }
        match due_delivery {
            Some(d) => to_due_webhook.push(between(b.due_at, d.received_at)),
            None => due_missing += 1,
        }
        let path = format!("/v1/reservations/{}/messages", b.reservation_id);
        let log: MessageList = api
            .request(Method::GET, &path)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {path}"))?
            .json()
            .await
            .with_context(|| format!("GET {path}"))?;
        let sent = |kind: MessageKind| {
            log.messages
                .iter()
                .find(|m| m.kind == kind && m.channel == MessageChannel::Email)
                .and_then(|m| m.sent_at)
        };
        match (sent(MessageKind::Confirmation), booked_delivery) {
            (Some(at), Some(d)) => to_confirmation.push(between(d.occurred_at, at)),
            _ => not_sent += 1,
        }
        match sent(MessageKind::Reminder) {
            Some(at) => to_reminder.push(between(b.due_at, at)),
            None => not_sent += 1,
        }
    }
    let received = smtp.received();
    let mut per_patient: HashMap<&str, usize> = HashMap::new();
    for mail in &received {
        for to in &mail.rcpt_tos {
            *per_patient.entry(to.as_str()).or_default() += 1;
        }
    }
    let without_two = booked
        .iter()
        .filter(|b| per_patient.get(b.email.as_str()).copied() != Some(2))
        .count();
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let report = NotifyReport {
        bookings: booked.len(),
        rate_per_second: args.rate,
        booked_missing,
        reminder_due_missing: due_missing,
        redeliveries: seen.redeliveries,
        bad_signatures: seen.bad_signatures,
        emails_received: received.len(),
        patients_without_two_emails: without_two,
        messages_not_sent: not_sent,
        commit_to_webhook_ms: Latency::of(&mut to_webhook),
        commit_to_confirmation_sent_ms: Latency::of(&mut to_confirmation),
        due_to_reminder_sent_ms: Latency::of(&mut to_reminder),
        due_to_reminder_webhook_ms: Latency::of(&mut to_due_webhook),
    };
    println!(
        "{} bookings at {}/s: webhooks missing {} booked, {} reminder.due; redelivered {}, bad signatures {}",
        report.bookings,
        report.rate_per_second,
        report.booked_missing,
        report.reminder_due_missing,
        report.redeliveries,
        report.bad_signatures
    );
    println!(
        "emails received {}; patients without exactly two {}; messages not logged as sent {}",
        report.emails_received, report.patients_without_two_emails, report.messages_not_sent
    );
    for (what, l) in [
        ("commit to webhook delivered", report.commit_to_webhook_ms),
        (
            "commit to confirmation sent",
            report.commit_to_confirmation_sent_ms,
        ),
        ("due to reminder sent", report.due_to_reminder_sent_ms),
        (
            "due to reminder.due delivered",
            report.due_to_reminder_webhook_ms,
        ),
    ] {
        println!(
            "{what:<30} p50 {:>8.1} ms  p95 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
            l.p50, l.p95, l.p99, l.max
        );
    }
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
    }
    Ok(())
}
