//! `lag`: projection lag as a client sees it. Bookings go in at a steady
//! rate; after each 201 the client reads `GET /v1/reservations/{id}`
//! (without a consistency token) every `--poll-ms` until the read model
//! answers it: the time from the command's answer (its commit) to the
//! first answer from the read model is the lag. The resolution is the
//! poll interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::http::{set_up, Api, Clinic, BUFFER_MINUTES, DURATION_MINUTES, SLOTS_PER_DAY};
use crate::report::{self, Latency};
use crate::server::Server;

/// Devices of the benchmark clinic.
const DEVICES: usize = 16;

/// Options of `clinicbook-benches lag`.
#[derive(Debug, clap::Args)]
pub struct LagArgs {
    /// Base URL of a running server (run with CLINICBOOK_RATE_LIMIT=0).
    #[arg(long, required_unless_present = "spawn", requires = "token")]
    url: Option<String>,
    /// An admin token for --url.
    #[arg(long, conflicts_with = "spawn")]
    token: Option<String>,
    /// Start `clinicbook serve` (API, relay and projectors) for the run.
    #[arg(long, conflicts_with = "url")]
    spawn: bool,
    /// The `clinicbook` binary that --spawn starts.
    #[arg(long, default_value = "target/release/clinicbook")]
    bin: PathBuf,
    /// Bookings per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Length of the run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// How often a client looks at the read model.
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures of a run.
#[derive(Debug, Serialize)]
struct LagReport {
    rate_per_second: u32,
    seconds: u64,
    bookings: usize,
    refused: usize,
    never_visible: usize,
    poll_ms: u64,
    booking_latency_ms: Latency,
    projection_lag_ms: Latency,
}

/// What one booking measured.
enum Sample {
    Seen { booking: Duration, lag: Duration },
    Refused,
    NeverVisible,
}

/// Runs the lag benchmark.
///
/// # Errors
/// The server cannot be started or reached, or the clinic cannot be set up.
pub async fn run(args: LagArgs) -> anyhow::Result<()> {
    let server = if args.spawn {
        Some(Server::start(&args.bin).await?)
    } else {
        None
    };
    let (url, token) = match (&server, &args.url, &args.token) {
        (Some(server), _, _) => (server.url.clone(), server.admin_token.clone()),
        (None, Some(url), Some(token)) => (url.clone(), token.clone()),
        _ => bail!("give --url and --token, or --spawn"),
    };
    let api = Arc::new(Api::new(&url, token, Duration::from_secs(10))?);
    // Bookings rotate over the devices, so that concurrent bookings rarely
    // share a calendar (a device's day) and the figures are of the read
    // side, not of write contention.
    let clinic = Arc::new(set_up(&api, DEVICES).await.context("setting up a clinic")?);
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let poll = Duration::from_millis(args.poll_ms.max(1));
    eprintln!(
        "{} bookings/s for {} s against {}, read model polled every {} ms",
        args.rate, args.seconds, api.base, args.poll_ms
    );
    let mut ticks = tokio::time::interval(period);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let mut slot = 0_u64;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        ticks.tick().await;
        let (api, clinic) = (api.clone(), clinic.clone());
        tasks.spawn(measure(api, clinic, slot, poll));
        slot += 1;
    }
    let (mut bookings, mut lags) = (Vec::new(), Vec::new());
    let (mut refused, mut never_visible) = (0, 0);
    while let Some(sample) = tasks.join_next().await {
        match sample.context("a measuring task failed")? {
            Sample::Seen { booking, lag } => {
                bookings.push(booking);
                lags.push(lag);
            }
            Sample::Refused => refused += 1,
            Sample::NeverVisible => never_visible += 1,
        }
    }
    let report = LagReport {
        rate_per_second: args.rate,
        seconds: args.seconds,
        bookings: bookings.len(),
        refused,
        never_visible,
        poll_ms: args.poll_ms,
        booking_latency_ms: Latency::of(&mut bookings),
        projection_lag_ms: Latency::of(&mut lags),
    };
    println!(
        "{} bookings ({} refused, {} never visible within 10 s)\n\
         booking latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}\n\
         projection lag ms (answer to visible, poll {} ms): p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        report.bookings,
        report.refused,
        report.never_visible,
        report.booking_latency_ms.p50,
        report.booking_latency_ms.p95,
        report.booking_latency_ms.p99,
        report.booking_latency_ms.max,
        report.poll_ms,
        report.projection_lag_ms.p50,
        report.projection_lag_ms.p95,
        report.projection_lag_ms.p99,
        report.projection_lag_ms.max,
    );
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
    }
    if let Some(mut server) = server {
        server.ensure_running()?;
    }
    Ok(())
}

/// Makes booking number `booking` (on the next device, in its next slot)
/// and waits until the read model shows it.
async fn measure(api: Arc<Api>, clinic: Arc<Clinic>, booking: u64, poll: Duration) -> Sample {
    let devices = clinic.devices.len().max(1) as u64;
    let device = clinic.devices[usize::try_from(booking % devices).unwrap_or(0)];
    let slot = booking / devices;
    let day = i64::try_from(slot / SLOTS_PER_DAY).unwrap_or(0);
    let minute =
        i64::try_from(slot % SLOTS_PER_DAY).unwrap_or(0) * (DURATION_MINUTES + BUFFER_MINUTES);
    let start = clinic.first_day + chrono::Duration::days(day) + chrono::Duration::minutes(minute);
    let body = json!({"patient_id": Uuid::new_v4(), "clinic_id": clinic.clinic_id,
        "resource_id": device, "treatment_id": clinic.treatment_id,
        "start": start, "payment": {"method": "at_clinic"}});
    let sent = Instant::now();
    let answer = api
        .http
        .post(format!("{}/v1/reservations", api.base))
        .bearer_auth(&api.token)
        .json(&body)
        .send()
        .await;
    let Ok(answer) = answer else {
        return Sample::Refused;
    };
    if answer.status() != StatusCode::CREATED {
        return Sample::Refused;
    }
    let Ok(booked) = answer.json::<Value>().await else {
        return Sample::Refused;
    };
    let answered = Instant::now();
    let booking = answered - sent;
    let id = booked["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    while answered.elapsed() < Duration::from_secs(10) {
        let seen = api
            .http
            .get(format!("{}/v1/reservations/{id}", api.base))
            .bearer_auth(&api.token)
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if seen {
            return Sample::Seen {
                booking,
                lag: answered.elapsed(),
            };
        }
        tokio::time::sleep(poll).await;
    }
    Sample::NeverVisible
}
