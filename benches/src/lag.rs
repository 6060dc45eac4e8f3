//! `lag`: projection lag, commit to visible. Bookings go in at a steady
//! rate. The server's projectors record, for every event they apply, the
//! time from its transaction's `recorded_at` to the commit of the batch
//! that applied it (`clinicbook_projection_lag_seconds`, a summary per
//! projection on `/metrics`); the run reads those quantiles at the end.
//! With `--poll-ms N` each client also reads `GET /v1/reservations/{id}`
//! (without a consistency token) every N ms after its 201 until the read
//! model answers: the lag a client sees, at the poll's resolution (and
//! with the polling's own load on the server).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::http::{set_up, Api, Clinic};
use crate::report::{self, Latency};
use crate::server::Target;

/// Devices of the benchmark clinic.
const DEVICES: usize = 16;

/// Options of `clinicbook-benches lag`.
#[derive(Debug, clap::Args)]
pub struct LagArgs {
    /// The server booked at.
    #[command(flatten)]
    target: Target,
    /// Bookings per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Length of the run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Also read each booking back every this many ms until it shows (0:
    /// do not; the server's figures only).
    #[arg(long, default_value_t = 0)]
    poll_ms: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures of a run.
#[derive(Debug, Serialize)]
pub(crate) struct LagReport {
    pub(crate) rate_per_second: u32,
    pub(crate) seconds: u64,
    pub(crate) bookings: usize,
    pub(crate) refused: usize,
    pub(crate) never_visible: usize,
    pub(crate) poll_ms: u64,
    pub(crate) booking_latency_ms: Latency,
    pub(crate) client_seen_lag_ms: Option<Latency>,
    /// Per projection: quantile → milliseconds, as the server recorded.
    pub(crate) server_lag_ms: Vec<(String, Vec<(String, f64)>)>,
}

/// What one booking measured.
enum Sample {
    Booked {
        booking: Duration,
        lag: Option<Duration>,
    },
    Refused,
    NeverVisible,
}

/// Runs the lag benchmark.
///
/// # Errors
/// The server cannot be started or reached, or the clinic cannot be set up.
pub async fn run(args: LagArgs) -> anyhow::Result<()> {
    let (server, api) = args.target.connect(Duration::from_secs(10)).await?;
    let api = Arc::new(api);
    let report = measure_lag(&api, args.rate, args.seconds, args.poll_ms).await?;
    println!(
        "{} bookings ({} refused, {} never visible within 10 s)\n\
         booking latency ms: {}",
        report.bookings, report.refused, report.never_visible, report.booking_latency_ms,
    );
    if let Some(seen) = report.client_seen_lag_ms {
        println!("lag a client sees (poll {} ms) ms: {seen}", report.poll_ms);
    }
    println!("projection lag, commit to visible, as the server recorded it (ms):");
    for (projection, quantiles) in &report.server_lag_ms {
        let figures: Vec<String> = quantiles
            .iter()
            .map(|(q, ms)| format!("q{q} {ms:.1}"))
            .collect();
        println!("  {projection:<14} {}", figures.join("  "));
    }
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
    }
    if let Some(mut server) = server {
        server.ensure_running()?;
    }
    Ok(())
}

/// Books `rate` times a second for `seconds` at a clinic of its own,
/// then waits for the projections to catch up and reads their lag from
/// `/metrics`.
///
/// # Errors
/// The clinic cannot be set up, a measuring task fails, the projections
/// do not catch up, or `/metrics` cannot be read.
pub(crate) async fn measure_lag(
    api: &Arc<Api>,
    rate: u32,
    seconds: u64,
    poll_ms: u64,
) -> anyhow::Result<LagReport> {
    // Bookings rotate over the devices, so that concurrent bookings rarely
    // share a calendar (a device's day) and the figures are of the read
    // side, not of write contention.
    let clinic = Arc::new(set_up(api, DEVICES).await.context("setting up a clinic")?);
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let poll = (poll_ms > 0).then(|| Duration::from_millis(poll_ms));
    eprintln!("{} bookings/s for {} s against {}", rate, seconds, api.base);
    let mut ticks = tokio::time::interval(period);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let mut slot = 0_u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticks.tick().await;
        let (api, clinic) = (api.clone(), clinic.clone());
        tasks.spawn(
            measure(api, clinic, slot, poll).instrument(tracing::info_span!("lag_probe", slot)),
        );
        slot += 1;
    }
    let (mut bookings, mut lags) = (Vec::new(), Vec::new());
    let (mut refused, mut never_visible) = (0, 0);
    while let Some(sample) = tasks.join_next().await {
        match sample.context("a measuring task failed")? {
            Sample::Booked { booking, lag } => {
                bookings.push(booking);
                lags.extend(lag);
            }
            Sample::Refused => refused += 1,
            Sample::NeverVisible => never_visible += 1,
        }
    }
    settle(api).await?;
    let server_lag_ms = server_lag(api).await?;
    Ok(LagReport {
        rate_per_second: rate,
        seconds,
        bookings: bookings.len(),
        refused,
        never_visible,
        poll_ms,
        booking_latency_ms: Latency::of(&mut bookings),
        client_seen_lag_ms: poll.map(|_| Latency::of(&mut lags)),
        server_lag_ms,
    })
}

/// Makes booking number `booking` (on the next device, in its next slot)
/// and waits until the read model shows it.
async fn measure(
    api: Arc<Api>,
    clinic: Arc<Clinic>,
    booking: u64,
    poll: Option<Duration>,
) -> Sample {
    let devices = clinic.devices.len().max(1) as u64;
    let device = clinic.devices[usize::try_from(booking % devices).unwrap_or(0)];
    let body = clinic.booking(Uuid::new_v4(), device, clinic.slot_start(booking / devices));
    let sent = Instant::now();
    let answer = api.book(&body).await;
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
    let Some(poll) = poll else {
        return Sample::Booked { booking, lag: None };
    };
    let id = booked["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    while answered.elapsed() < Duration::from_secs(10) {
        let seen = api
            .request(Method::GET, &format!("/v1/reservations/{id}"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if seen {
            return Sample::Booked {
                booking,
                lag: Some(answered.elapsed()),
            };
        }
        tokio::time::sleep(poll).await;
    }
    Sample::NeverVisible
}

/// Waits (up to a minute) until `/readyz` says no projection is behind.
pub(crate) async fn settle(api: &Api) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ready: Value = api
            .http
            .get(format!("{}/readyz", api.base))
            .send()
            .await
            .context("GET /readyz")?
            .json()
            .await
            .context("GET /readyz: not JSON")?;
        if ready["projection_lag_events"].as_i64() == Some(0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the projections did not catch up within a minute")
}

/// The quantiles of `clinicbook_projection_lag_seconds` per projection,
/// in milliseconds, from `/metrics`.
async fn server_lag(api: &Api) -> anyhow::Result<Vec<(String, Vec<(String, f64)>)>> {
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .context("GET /metrics")?
        .text()
        .await
        .context("GET /metrics")?;
    let mut per_projection: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("clinicbook_projection_lag_seconds{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| -> Option<String> {
            labels.split(',').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key == name).then(|| value.trim_matches('"').to_owned())
            })
        };
        let (Some(projection), Some(quantile), Ok(seconds)) = (
            label("projection"),
            label("quantile"),
            value.trim().parse::<f64>(),
        ) else {
            continue;
        };
        let ms = seconds * 1000.0;
        match per_projection.iter_mut().find(|(p, _)| *p == projection) {
            Some((_, quantiles)) => quantiles.push((quantile, ms)),
            None => per_projection.push((projection, vec![(quantile, ms)])),
        }
    }
    per_projection.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(per_projection)
}
