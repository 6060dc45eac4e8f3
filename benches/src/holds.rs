//! `holds`: the scheduler's expiry delay. Places `--holds` holds of
//! `--ttl-seconds` each through the API (spread over `--spread-seconds`,
//! so their expiries spread too), lets them all run out, and reads each
//! hold's stream from the audit route: the delay is the `HoldExpired`
//! event's `expired_at` minus the hold's `expires_at`. It also checks that
//! each hold expired exactly once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::http::{set_up, SLOTS_PER_DAY};
use crate::report::{self, Latency};
use crate::server::Target;

/// Devices of the benchmark clinic (each takes `SLOTS_PER_DAY` holds).
const DEVICES: usize = 8;

/// Options of `clinicbook-benches holds`.
#[derive(Debug, clap::Args)]
pub struct HoldsArgs {
    /// The server holding the slots.
    #[command(flatten)]
    target: Target,
    /// Holds placed.
    #[arg(long, default_value_t = 200)]
    holds: usize,
    /// Each hold's `ttl_seconds` (30 to 3600).
    #[arg(long, default_value_t = 30)]
    ttl_seconds: u64,
    /// The holds are placed evenly over this many seconds.
    #[arg(long, default_value_t = 10)]
    spread_seconds: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures of a run.
#[derive(Debug, Serialize)]
struct HoldsReport {
    holds: usize,
    ttl_seconds: u64,
    expired_once: usize,
    not_expired: usize,
    expired_twice: usize,
    /// `expired_at - expires_at`.
    expiry_delay_ms: Latency,
}

/// Runs the benchmark.
///
/// # Errors
/// The server cannot be started or reached, or a hold is refused.
pub async fn run(args: HoldsArgs) -> anyhow::Result<()> {
    if args.holds > DEVICES * usize::try_from(SLOTS_PER_DAY)? {
        bail!(
            "--holds at most {}",
            DEVICES * usize::try_from(SLOTS_PER_DAY)?
        );
    }
    let (mut server, api) = args.target.connect(Duration::from_secs(30)).await?;
    let clinic = set_up(&api, DEVICES).await?;
    let gap = Duration::from_secs(args.spread_seconds)
        .checked_div(u32::try_from(args.holds.max(1))?)
        .unwrap_or_default();
    let mut placed: Vec<(String, DateTime<Utc>)> = Vec::with_capacity(args.holds);
    for i in 0..args.holds {
        let device = clinic.devices[i % DEVICES];
        let slot = u64::try_from(i / DEVICES)?;
        let start = clinic.slot_start(slot);
        let answer = api
            .request(Method::POST, "/v1/holds")
            .json(
                &json!({"patient_id": Uuid::new_v4(), "clinic_id": clinic.clinic_id,
                          "resource_id": device, "treatment_id": clinic.treatment_id,
                          "start": start, "ttl_seconds": args.ttl_seconds}),
            )
            .send()
            .await
            .context("POST /v1/holds")?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if status != StatusCode::CREATED {
            bail!("hold {i} refused: {status} {body}");
        }
        let id = body["hold_id"].as_str().unwrap_or_default().to_owned();
        let expires_at: DateTime<Utc> = body["expires_at"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("expires_at")?;
        placed.push((id, expires_at));
        tokio::time::sleep(gap).await;
    }
    eprintln!("{} holds placed; waiting for them to expire", placed.len());
    let last = placed
        .iter()
        .map(|(_, at)| *at)
        .max()
        .unwrap_or_else(Utc::now);
    if let Ok(wait) = (last - Utc::now()).to_std() {
        tokio::time::sleep(wait + Duration::from_secs(5)).await;
    }
    if let Some(server) = &mut server {
        server.ensure_running()?;
    }
    let mut delays = Vec::with_capacity(placed.len());
    let (mut once, mut never, mut twice) = (0, 0, 0);
    for (id, expires_at) in &placed {
        let stream: Value = api
            .request(Method::GET, &format!("/v1/audit/streams/Hold/{id}"))
            .send()
            .await
            .context("GET /v1/audit/streams/Hold")?
            .json()
            .await
            .context("the hold's stream")?;
        let expired: Vec<DateTime<Utc>> = stream["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["event_type"] == "HoldExpired")
            .filter_map(|e| {
                e["payload"]["HoldExpired"]["expired_at"]
                    .as_str()?
                    .parse()
                    .ok()
            })
            .collect();
        match expired.as_slice() {
            [] => never += 1,
            [at] => {
                once += 1;
                delays.push((*at - *expires_at).to_std().unwrap_or_default());
            }
            _ => twice += 1,
        }
    }
    let report = HoldsReport {
        holds: placed.len(),
        ttl_seconds: args.ttl_seconds,
        expired_once: once,
        not_expired: never,
        expired_twice: twice,
        expiry_delay_ms: Latency::of(&mut delays),
    };
    println!(
        "holds: {} placed, ttl {} s: expired once {}, never {}, twice {}",
        report.holds, report.ttl_seconds, once, never, twice
    );
    println!(
        "expiry delay (expired_at - expires_at): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.expiry_delay_ms.p50,
        report.expiry_delay_ms.p95,
        report.expiry_delay_ms.p99,
        report.expiry_delay_ms.max
    );
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
    }
    Ok(())
}
