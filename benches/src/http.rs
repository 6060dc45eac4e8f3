//! `book`: bookings through the HTTP API. The clinic is set up through the
//! admin routes, then N concurrent clients sharing one `reqwest::Client`
//! send `POST /v1/reservations` until the run's time is up.
//!
//! - `distinct`: each client books consecutive slots of its own device, so
//!   no two requests compete; every answer should be a 201.
//! - `hot`: all clients race for the same slot of one device, one slot
//!   after another: each slot gets about `clients` attempts, and exactly
//!   one of them may win.

use clinicbook_wire::booking::{BookTreatment, PaymentInput};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::report::{self, Latency};
use crate::server::Target;
use crate::Mode;

/// Options of `clinicbook-benches book`.
#[derive(Debug, clap::Args)]
pub struct BookArgs {
    /// The server booked at.
    #[command(flatten)]
    target: Target,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Length of the measured run (clients start no request after it).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// What the clients book.
    #[arg(long, value_enum, default_value_t = Mode::Distinct)]
    mode: Mode,
    /// Seconds a request may take; one that takes longer counts as an
    /// error.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Appointment length of the benchmark's treatment.
pub(crate) const DURATION_MINUTES: i64 = 20;
/// The treatment's buffer; with the length, slots are 30 minutes apart.
pub(crate) const BUFFER_MINUTES: i64 = 10;
/// Slot starts per day: every 30 minutes from 00:00 to 23:30 (UTC, the
/// clinic's timezone), all inside the opening hours 00:00-23:59.
pub(crate) const SLOTS_PER_DAY: u64 = 48;
/// A client whose requests fail this many times in a row (no answer at
/// all) stops the run: the server is gone.
const MAX_FAILURES_IN_A_ROW: u32 = 50;

/// Runs the HTTP benchmark, prints its figures and writes them as JSON
/// with `--json`.
///
/// # Errors
/// The server cannot be started (`--spawn`) or reached, the clinic cannot
/// be set up, the server stops answering or dies during the run, or the
/// `--json` file cannot be written. Refused bookings are figures, not
/// errors.
pub async fn run(args: BookArgs) -> anyhow::Result<()> {
    let clients = args.clients.max(1);
    let (mut server, api) = args
        .target
        .connect(Duration::from_secs(args.timeout.max(1)))
        .await?;
    let api = Arc::new(api);

    let devices = match args.mode {
        Mode::Distinct => clients,
        Mode::Hot => 1,
    };
    let clinic = Arc::new(
        set_up(&api, devices)
            .await
            .with_context(|| format!("setting up a clinic through {}", api.base))?,
    );
    eprintln!(
        "clinic {} with {devices} device(s); {clients} clients book ({} mode) for {} s against {}",
        clinic.clinic_id,
        args.mode.name(),
        args.seconds,
        api.base
    );
    let report = drive(&api, &clinic, args.mode, clients, args.seconds).await?;
    if let Some(server) = &mut server {
        server.ensure_running()?;
    }
    print!("{}", report.text());
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
    }
    drop(server);
    Ok(())
}

/// `clients` clients book at `clinic` (`mode`) for `seconds`; the clinic
/// has a device per client (`distinct`) or one (`hot`).
///
/// # Errors
/// The server stops answering, or a client panics.
pub(crate) async fn drive(
    api: &Arc<Api>,
    clinic: &Arc<Clinic>,
    mode: Mode,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<BookReport> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tickets = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for index in 0..clients {
        let slots = match mode {
            Mode::Distinct => Slots::Own {
                resource: clinic.devices[index % clinic.devices.len().max(1)],
                next: 0,
            },
            Mode::Hot => Slots::Shared {
                resource: clinic.devices[0],
                tickets: tickets.clone(),
                clients: clients as u64,
            },
        };
        let client = Client {
            api: api.clone(),
            clinic: clinic.clone(),
            patient: Uuid::new_v4(),
            slots,
        };
        tasks.push(tokio::spawn(
            client
                .run(deadline)
                .instrument(tracing::info_span!("http_client")),
        ));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("a client panicked")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hot_slots = (mode == Mode::Hot).then(|| {
        HotSlots::of(
            tickets.load(Ordering::Relaxed).div_ceil(clients as u64),
            &tally.won,
        )
    });
    Ok(BookReport::new(
        mode, clients, &api.base, elapsed, tally, hot_slots,
    ))
}

/// The HTTP side: one shared `reqwest::Client`, the base URL and the token.
pub(crate) struct Api {
    /// Shared by every client: one connection pool.
    pub(crate) http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    pub(crate) base: String,
    /// The admin token every request carries.
    pub(crate) token: String,
}

impl Api {
    /// A client for `base` with a per-request `timeout`. It follows no
    /// redirect and uses no proxy, so requests go to `base` and nowhere
    /// else.
    pub(crate) fn new(base: &str, token: String, timeout: Duration) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(base).with_context(|| format!("--url {base}"))?;
        if parsed.scheme() != "http" {
            bail!("--url {base}: only http:// is supported");
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// A request to `path` (`/v1/…`) carrying the admin token.
    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// `POST /v1/reservations` with `body`.
    ///
    /// # Errors
    /// No answer (timeout, connection refused or reset).
    pub(crate) async fn book(
        &self,
        body: &BookTreatment,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.request(Method::POST, "/v1/reservations")
            .json(body)
            .send()
            .await
    }

    /// A setup call that must answer `expected`; its body parsed as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Value,
        expected: StatusCode,
    ) -> anyhow::Result<T> {
        let what = format!("{method} {path}");
        let answer = self
            .request(method, path)
            .json(&body)
            .send()
            .await
            .with_context(|| what.clone())?;
        let status = answer.status();
        let bytes = answer.bytes().await.with_context(|| what.clone())?;
        if status != expected {
            bail!(
                "{what} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{what}: unexpected answer"))
    }
}

/// The clinic the clients book at.
pub(crate) struct Clinic {
    pub(crate) clinic_id: Uuid,
    pub(crate) treatment_id: Uuid,
    /// One device per client (`distinct`) or a single one (`hot`).
    pub(crate) devices: Vec<Uuid>,
    /// Midnight UTC of tomorrow: the first day booked.
    pub(crate) first_day: DateTime<Utc>,
}

impl Clinic {
    /// The start of slot `slot` of the clinic's days: `SLOTS_PER_DAY` a day,
    /// 30 minutes apart, from `first_day` on.
    pub(crate) fn slot_start(&self, slot: u64) -> DateTime<Utc> {
        let day = i64::try_from(slot / SLOTS_PER_DAY).unwrap_or(i64::MAX / 2);
        let minute =
            i64::try_from(slot % SLOTS_PER_DAY).unwrap_or(0) * (DURATION_MINUTES + BUFFER_MINUTES);
        self.first_day + chrono::Duration::days(day) + chrono::Duration::minutes(minute)
    }

    /// A booking of the clinic's treatment for `patient` on `resource` at
    /// `start`, paid at the clinic (so no wallet is needed).
    pub(crate) fn booking(
        &self,
        patient: Uuid,
        resource: Uuid,
        start: DateTime<Utc>,
    ) -> BookTreatment {
        BookTreatment {
            reservation_id: None,
            patient_id: patient,
            clinic_id: self.clinic_id,
            resource_id: resource,
            treatment_id: self.treatment_id,
            start,
            payment: PaymentInput::AtClinic,
            promo_code: None,
        }
    }
}

/// `{"clinic_id": …}`
#[derive(Deserialize)]
struct ClinicCreated {
    clinic_id: Uuid,
}

/// `{"resource_id": …}`
#[derive(Deserialize)]
struct ResourceCreated {
    resource_id: Uuid,
}

/// `{"treatment_id": …}`
#[derive(Deserialize)]
struct TreatmentCreated {
    treatment_id: Uuid,
}

/// Registers a clinic open every day 00:00-23:59 UTC, `devices` devices
/// and one 20-minute treatment (10-minute buffer) on devices.
pub(crate) async fn set_up(api: &Api, devices: usize) -> anyhow::Result<Clinic> {
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let created: ClinicCreated = api
        .call(
            Method::POST,
            "/v1/clinics",
            json!({"name": format!("Bench {tag}"), "timezone": "UTC", "currency": "EUR"}),
            StatusCode::CREATED,
        )
        .await?;
    let clinic_id = created.clinic_id;
    let day = json!([["00:00", "23:59"]]);
    let _: Value = api
        .call(
            Method::PUT,
            &format!("/v1/clinics/{clinic_id}/opening-hours"),
            json!({"mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": day, "sun": day}),
            StatusCode::OK,
        )
        .await?;
    let mut ids = Vec::with_capacity(devices);
    for i in 0..devices {
        let created: ResourceCreated = api
            .call(
                Method::POST,
                &format!("/v1/clinics/{clinic_id}/resources"),
                json!({"name": format!("Device {i}"), "kind": "device"}),
                StatusCode::CREATED,
            )
            .await?;
        ids.push(created.resource_id);
    }
    let treatment: TreatmentCreated = api
        .call(
            Method::POST,
            &format!("/v1/clinics/{clinic_id}/treatments"),
            json!({"name": "Bench treatment", "duration_minutes": DURATION_MINUTES,
                   "buffer_minutes": BUFFER_MINUTES, "price_cents": 5_000, "resource_kind": "device"}),
            StatusCode::CREATED,
        )
        .await?;
    let tomorrow = Utc::now().date_naive() + chrono::Days::new(1);
    Ok(Clinic {
        clinic_id,
        treatment_id: treatment.treatment_id,
        devices: ids,
        first_day: tomorrow.and_time(chrono::NaiveTime::MIN).and_utc(),
    })
}

/// Which slot a client asks for next.
enum Slots {
    /// The client's own device, slot after slot.
    Own {
        /// The device.
        resource: Uuid,
        /// The next slot number.
        next: u64,
    },
    /// The one device all clients share: a shared ticket counter hands out
    /// `clients` tickets per slot.
    Shared {
        /// The device.
        resource: Uuid,
        /// Tickets handed out so far.
        tickets: Arc<AtomicU64>,
        /// Tickets per slot.
        clients: u64,
    },
}

impl Slots {
    /// The resource and slot number of the next request.
    fn next(&mut self) -> (Uuid, u64) {
        match self {
            Slots::Own { resource, next } => {
                *next += 1;
                (*resource, *next - 1)
            }
            Slots::Shared {
                resource,
                tickets,
                clients,
            } => (
                *resource,
                tickets.fetch_add(1, Ordering::Relaxed) / *clients,
            ),
        }
    }
}

/// The `code` of a problem+json answer.
#[derive(Deserialize)]
struct Problem {
    code: Option<String>,
}

/// One benchmark client: a patient booking until the deadline.
struct Client {
    api: Arc<Api>,
    clinic: Arc<Clinic>,
    patient: Uuid,
    slots: Slots,
}

/// What happened to one request.
enum Outcome {
    /// 201.
    Booked,
    /// Any other answer, named `<status> <code>`.
    Refused(String),
    /// No answer: timeout, connection refused or reset, named `error: <kind>`.
    Failed(String, reqwest::Error),
}

impl Client {
    /// Books until `deadline`; a request started before it finishes.
    async fn run(mut self, deadline: Instant) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        let mut failures_in_a_row = 0;
        while Instant::now() < deadline {
            let (resource, slot) = self.slots.next();
            let sent = Instant::now();
            let outcome = self.book(resource, slot).await;
            let latency = sent.elapsed();
            match outcome {
                Outcome::Booked => {
                    failures_in_a_row = 0;
                    tally.latencies.push(latency);
                    tally.count("201");
                    tally.won.push(slot);
                }
                Outcome::Refused(name) => {
                    failures_in_a_row = 0;
                    tally.latencies.push(latency);
                    tally.count(&name);
                }
                Outcome::Failed(name, error) => {
                    tally.count(&name);
                    failures_in_a_row += 1;
                    if failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
                        return Err(anyhow::Error::new(error).context(format!(
                            "{failures_in_a_row} requests in a row got no answer from {}",
                            self.api.base
                        )));
                    }
                }
            }
        }
        Ok(tally)
    }

    /// Books slot `slot` of `resource`: `SLOTS_PER_DAY` a day, 30 minutes
    /// apart, from tomorrow on.
    async fn book(&self, resource: Uuid, slot: u64) -> Outcome {
        let body = self
            .clinic
            .booking(self.patient, resource, self.clinic.slot_start(slot));
        let sent = self.api.book(&body).await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => return failed(e),
        };
        let status = answer.status();
        // The whole body is read in every case, so the connection is reused
        // and the latency covers the full answer.
        let bytes = match answer.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return failed(e),
        };
        if status == StatusCode::CREATED {
            return Outcome::Booked;
        }
        let code = serde_json::from_slice::<Problem>(&bytes)
            .ok()
            .and_then(|p| p.code);
        Outcome::Refused(match code {
            Some(code) => format!("{} {code}", status.as_u16()),
            None => status.as_u16().to_string(),
        })
    }
}

/// A request that got no answer, named by why.
fn failed(error: reqwest::Error) -> Outcome {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    };
    Outcome::Failed(format!("error: {kind}"), error)
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Latency of every answered request.
    latencies: Vec<Duration>,
    /// Requests by answer: `201`, `409 slot_unavailable`, `error: timeout`…
    answers: BTreeMap<String, u64>,
    /// The slot numbers booked (201), to check one winner per hot slot.
    won: Vec<u64>,
}

impl Tally {
    fn count(&mut self, name: &str) {
        *self.answers.entry(name.to_string()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (name, n) in other.answers {
            *self.answers.entry(name).or_default() += n;
        }
        self.won.extend(other.won);
    }
}

/// `hot` mode: how the slots raced for ended.
#[derive(Debug, Serialize)]
pub struct HotSlots {
    /// Slots that got at least one attempt.
    pub tried: u64,
    /// Slots that got a 201.
    pub booked: u64,
    /// Slots that got more than one 201: a double booking, never expected.
    pub double_booked: u64,
}

impl HotSlots {
    fn of(tried: u64, won: &[u64]) -> Self {
        let mut winners: HashMap<u64, u64> = HashMap::new();
        for &slot in won {
            *winners.entry(slot).or_default() += 1;
        }
        Self {
            tried,
            booked: winners.len() as u64,
            double_booked: winners.values().filter(|&&n| n > 1).count() as u64,
        }
    }
}

/// The figures of a run, as printed and as written with `--json`.
#[derive(Debug, Serialize)]
pub struct BookReport {
    /// Always `book`.
    pub bench: &'static str,
    /// `distinct` or `hot`.
    pub mode: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// The server's base URL.
    pub url: String,
    /// Wall time from the first request to the last answer.
    pub seconds: f64,
    /// Requests answered, whatever the status.
    pub commands: u64,
    /// `commands` per second.
    pub commands_per_second: f64,
    /// 201 answers.
    pub bookings: u64,
    /// `bookings` per second.
    pub bookings_per_second: f64,
    /// 409 `slot_unavailable` answers.
    pub slot_unavailable: u64,
    /// 409 `concurrency_conflict` answers (the server's retries exhausted).
    pub concurrency_conflict: u64,
    /// Every other answer, and requests without one.
    pub errors: u64,
    /// Latency of the answered requests.
    pub latency_ms: Latency,
    /// Requests by answer: `201`, `409 slot_unavailable`, `error: timeout`…
    pub answers: BTreeMap<String, u64>,
    /// `hot` mode only: slots tried, booked, double-booked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_slots: Option<HotSlots>,
}

impl BookReport {
    fn new(
        mode: Mode,
        clients: usize,
        url: &str,
        seconds: f64,
        mut tally: Tally,
        hot_slots: Option<HotSlots>,
    ) -> Self {
        let of = |name: &str| tally.answers.get(name).copied().unwrap_or(0);
        let bookings = of("201");
        let slot_unavailable = of("409 slot_unavailable");
        let concurrency_conflict = of("409 concurrency_conflict");
        let all: u64 = tally.answers.values().sum();
        let commands = tally.latencies.len() as u64;
        Self {
            bench: "book",
            mode: mode.name(),
            clients,
            url: url.to_string(),
            seconds,
            commands,
            commands_per_second: report::per_second(commands, seconds),
            bookings,
            bookings_per_second: report::per_second(bookings, seconds),
            slot_unavailable,
            concurrency_conflict,
            errors: all - bookings - slot_unavailable - concurrency_conflict,
            latency_ms: Latency::of(&mut tally.latencies),
            answers: tally.answers,
            hot_slots,
        }
    }

    /// The figures for people.
    fn text(&self) -> String {
        let answers: Vec<String> = self
            .answers
            .iter()
            .map(|(name, n)| format!("{name}: {n}"))
            .collect();
        let mut text = format!(
            "book {mode}: {clients} clients, {seconds:.1} s against {url}\n\
             commands/s   {cps:.1}  ({commands} answered)\n\
             bookings/s   {bps:.1}  ({bookings} booked)\n\
             latency ms   {latency}\n\
             answers      {answers}\n\
             outcomes     201: {bookings}, 409 slot_unavailable: {su}, 409 concurrency_conflict: {cc}, errors: {errors}\n",
            mode = self.mode,
            clients = self.clients,
            seconds = self.seconds,
            url = self.url,
            cps = self.commands_per_second,
            commands = self.commands,
            bps = self.bookings_per_second,
            bookings = self.bookings,
            latency = self.latency_ms,
            answers = if answers.is_empty() {
                "none".to_string()
            } else {
                answers.join(", ")
            },
            su = self.slot_unavailable,
            cc = self.concurrency_conflict,
            errors = self.errors,
        );
        if let Some(hot) = &self.hot_slots {
            text.push_str(&format!(
                "hot slots    {} tried, {} booked, {} double-booked\n",
                hot.tried, hot.booked, hot.double_booked
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_slots_hand_out_one_slot_per_round_of_clients() {
        let tickets = Arc::new(AtomicU64::new(0));
        let mut slots = Slots::Shared {
            resource: Uuid::nil(),
            tickets,
            clients: 3,
        };
        let got: Vec<u64> = (0..7).map(|_| slots.next().1).collect();
        assert_eq!(got, [0, 0, 0, 1, 1, 1, 2]);
    }

    #[test]
    fn own_slots_are_consecutive() {
        let mut slots = Slots::Own {
            resource: Uuid::nil(),
            next: 0,
        };
        let got: Vec<u64> = (0..3).map(|_| slots.next().1).collect();
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn hot_slots_count_winners_per_slot() {
        let hot = HotSlots::of(4, &[0, 1, 1, 3]);
        assert_eq!((hot.tried, hot.booked, hot.double_booked), (4, 3, 1));
    }
}
