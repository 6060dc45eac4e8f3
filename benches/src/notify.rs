//! `notify`: how soon the outside world hears of a booking. Starts a
//! webhook receiver of its own (axum, on loopback) that checks every
//! signature, then `clinicbook serve` over a throwaway PostgreSQL with
//! `CLINICBOOK_WEBHOOK_ALLOW_LOOPBACK=1`, subscribes the receiver to
//! `reservation.booked`, and books `--bookings` reservations at `--rate`
//! a second. The delay is measured from each event's `occurred_at` (taken
//! inside the committing transaction) to the moment the receiver has the
//! delivery, on the same clock. It also counts redeliveries, bad
//! signatures and bookings never delivered.

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
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::http::{set_up, Api, SLOTS_PER_DAY};
use crate::report::{self, Latency};
use crate::server::Server;

/// Devices of the benchmark clinic (each takes `SLOTS_PER_DAY` bookings).
const DEVICES: usize = 8;

/// How long the run waits for the last deliveries after the last booking.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `clinicbook-benches notify`.
#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    /// The `clinicbook` binary started for the run.
    #[arg(long, default_value = "target/release/clinicbook")]
    bin: PathBuf,
    /// Bookings made (each is one `reservation.booked` delivery).
    #[arg(long, default_value_t = 200)]
    bookings: usize,
    /// Bookings a second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures of a run.
#[derive(Debug, Serialize)]
struct NotifyReport {
    bookings: usize,
    rate_per_second: f64,
    /// Bookings whose event reached the receiver at least once.
    delivered: usize,
    /// Bookings never delivered within the drain timeout.
    missing: usize,
    /// Deliveries beyond the first of an event id (at least once allows them).
    redeliveries: usize,
    /// Deliveries whose `Clinicbook-Signature` did not verify.
    bad_signatures: usize,
    /// `occurred_at` of the event to the receiver having its first delivery.
    commit_to_webhook_ms: Latency,
}

/// What the receiver has seen.
#[derive(Default)]
struct Received {
    /// The subscription's secret, set once it is created.
    secret: Option<String>,
    /// First receipt of each reservation's `reservation.booked`.
    first: HashMap<Uuid, Duration>,
    redeliveries: usize,
    bad_signatures: usize,
}

type Shared = Arc<Mutex<Received>>;

/// The parts of a delivery the benchmark reads.
#[derive(Deserialize)]
struct Delivery {
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

/// The receiver's one route: checks the signature, records the first
/// receipt of each reservation, answers 204.
async fn receive(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = Utc::now();
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
    let delay = (now - delivery.occurred_at).to_std().unwrap_or_default();
    match seen.first.entry(delivery.data.aggregate_id) {
        Entry::Occupied(_) => seen.redeliveries += 1,
        Entry::Vacant(first) => {
            first.insert(delay);
        }
    }
    StatusCode::NO_CONTENT
}

/// Runs the benchmark.
///
/// # Errors
/// The receiver or the server cannot be started, or a booking is refused.
pub async fn run(args: NotifyArgs) -> anyhow::Result<()> {
    let capacity = DEVICES * usize::try_from(SLOTS_PER_DAY)?;
    if args.bookings > capacity {
        bail!("--bookings at most {capacity}");
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
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
        &[("CLINICBOOK_WEBHOOK_ALLOW_LOOPBACK", "1".to_string())],
    )
    .await?;
    let api = Api::new(
        &server.url,
        server.admin_token.clone(),
        Duration::from_secs(30),
    )?;
    let clinic = set_up(&api, DEVICES).await?;
    let created: WebhookCreated = api
        .call(
            reqwest::Method::POST,
            "/v1/webhooks",
            json!({"url": hook_url, "events": ["reservation.booked"]}),
            reqwest::StatusCode::CREATED,
        )
        .await?;
    seen.lock().unwrap_or_else(PoisonError::into_inner).secret = Some(created.secret);

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut booked = Vec::with_capacity(args.bookings);
    for i in 0..args.bookings {
        ticker.tick().await;
        let reservation_id = Uuid::new_v4();
        let start = clinic.slot_start(u64::try_from(i / DEVICES)?);
        let mut body = clinic.booking(Uuid::new_v4(), clinic.devices[i % DEVICES], start);
        body.reservation_id = Some(reservation_id);
        let _: serde_json::Value = api
            .call(
                reqwest::Method::POST,
                "/v1/reservations",
                serde_json::to_value(&body)?,
                reqwest::StatusCode::CREATED,
            )
            .await
            .with_context(|| format!("booking {i}"))?;
        booked.push(reservation_id);
    }
    eprintln!(
        "{} bookings made; waiting for their deliveries",
        booked.len()
    );
    let drain_until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let delivered = {
            let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            booked
                .iter()
                .filter(|id| seen.first.contains_key(id))
                .count()
        };
        if delivered == booked.len() || tokio::time::Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.ensure_running()?;
    receiver.abort();

    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let mut delays: Vec<Duration> = booked
        .iter()
        .filter_map(|id| seen.first.get(id).copied())
        .collect();
    let report = NotifyReport {
        bookings: booked.len(),
        rate_per_second: args.rate,
        delivered: delays.len(),
        missing: booked.len() - delays.len(),
        redeliveries: seen.redeliveries,
        bad_signatures: seen.bad_signatures,
        commit_to_webhook_ms: Latency::of(&mut delays),
    };
    println!(
        "webhooks: {} bookings at {}/s: delivered {}, missing {}, redelivered {}, bad signatures {}",
        report.bookings,
        report.rate_per_second,
        report.delivered,
        report.missing,
        report.redeliveries,
        report.bad_signatures
    );
    let l = report.commit_to_webhook_ms;
    println!(
        "commit to webhook delivered: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.p50, l.p95, l.p99, l.max
    );
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
    }
    Ok(())
}
