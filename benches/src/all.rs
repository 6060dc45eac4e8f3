//! `all`: every scenario of issue 11 in one run, each machine-dependent
//! figure next to a ceiling measured in the same run, as a ratio.
//!
//! Every scenario gets fresh databases: on a PostgreSQL and nats-server
//! the run starts itself, or on the ones `DATABASE_URL` (any database to
//! connect to for `CREATE DATABASE`) and `NATS_URL` name; databases made
//! there are dropped after. The scenarios:
//!
//! - `ceiling`: the booking-shaped raw-SQL transaction (read a stream's
//!   last sequence, insert 3 events over 2 aggregates in one statement) at
//!   `--clients` connections, on a copy of the events table without
//!   triggers, issued by the bench itself;
//! - `book_api`, `book_all`: `POST /v1/reservations` on distinct slots at
//!   `--clients` clients against `serve --role api` and `--role all`;
//!   `runs` rounds of ceiling, api, all, and the median of each ratio;
//! - `hot_*`: one hot slot after another at `--clients` clients;
//! - `lag_p99`: bookings at half the measured `--role all` rate, the
//!   projectors' own lag quantiles;
//! - `availability_*`: a 64-resource clinic day, at 1 connection and at
//!   16, against `GET /healthz` at 16 (the HTTP ceiling);
//! - `command_*`, `seed_*`: command latency with 10⁴ and 10⁶ (`--quick`:
//!   10⁵) events stored, and how the seeding rate held up;
//! - `rebuild_*`: `clinicbook rebuild schedule` and `reports` on the large
//!   store against a `COPY` of the same rows in feed order;
//! - `rss_mb`: the `--role all` server's peak resident memory;
//! - `cpu_*`: how the machine's CPU was split between the load generator
//!   (this process), the server and PostgreSQL during the ceiling and the
//!   `--role all` run;
//! - `cpu_ms_per_*`, `book_*_cpu_bound`: the CPU (of all processes that
//!   do the work, not the load generator's HTTP client) one raw-SQL
//!   transaction and one booking cost, per role, and their quotient: the
//!   highest ratio to the ceiling the machine's CPU allows a role, the
//!   bound to hold `book_*_ratio` against where CPU is what runs out.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::TryStreamExt;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::http::{self, set_up, Api, BookReport, Clinic, SLOTS_PER_DAY};
use crate::report::{self, Latency};
use crate::server::{Backend, BenchDb, Server};
use crate::Mode;

/// Options of `clinicbook-benches all`.
#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// A PostgreSQL to run against (any database on it: the run creates
    /// its own databases there and drops them after); with NATS_URL.
    /// Without both, the run starts a throwaway PostgreSQL and nats-server.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The NATS to run against, with DATABASE_URL.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// The `clinicbook` binary the scenarios start.
    #[arg(long, default_value = "target/release/clinicbook")]
    bin: PathBuf,
    /// Concurrent clients (and ceiling connections) of the booking runs.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Length of each measured booking run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds of ceiling, `--role api` and `--role all`; ratios are their
    /// medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Events of the large store (command latency, rebuild).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// A shorter run: one round, 5 s runs, 10⁵ events in the large store.
    #[arg(long)]
    quick: bool,
    /// Only these scenario groups (comma-separated): book, hot, lag,
    /// availability, store (command latency, seed, rebuild).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the figures as a JSON array to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One figure of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The measurement.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The same-run ceiling it is compared with, if any.
    pub ceiling: Option<f64>,
    /// `value / ceiling` (or the figure's own ratio).
    pub ratio: Option<f64>,
    /// The goal, as text (`ratio >= 0.40`, `<= 5 ms`).
    pub target: String,
    /// Whether the goal was met (none without a goal).
    pub met: Option<bool>,
    /// The 1-minute load average when it was taken.
    pub load_average: f64,
    /// How it was measured.
    pub note: String,
}

/// A goal a figure is held against.
#[derive(Clone, Copy)]
enum Goal {
    /// None: a figure for the record.
    None,
    /// The ratio at least this.
    RatioAtLeast(f64),
    /// The value at least this.
    AtLeast(f64),
    /// The value at most this.
    AtMost(f64),
}

/// Collects the figures and prints each as it comes.
struct Table {
    figures: Vec<Figure>,
}

impl Table {
    fn add(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        ceiling: Option<f64>,
        goal: Goal,
        note: impl Into<String>,
    ) {
        let ratio = ceiling.map(|c| ratio(value, c));
        let (target, met) = match goal {
            Goal::None => (String::new(), None),
            Goal::RatioAtLeast(r) => (format!("ratio >= {r:.2}"), ratio.map(|x| x >= r)),
            Goal::AtLeast(v) => (format!(">= {v} {unit}"), Some(value >= v)),
            Goal::AtMost(v) => (format!("<= {v} {unit}"), Some(value <= v)),
        };
        let figure = Figure {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
            ceiling,
            ratio,
            target,
            met,
            load_average: load_average(),
            note: note.into(),
        };
        eprintln!("figure: {}", row(&figure));
        self.figures.push(figure);
    }

    fn add_ratio(&mut self, name: &str, ratio: f64, goal: Goal, note: impl Into<String>) {
        self.add(name, ratio, "ratio", None, goal, note);
        if let (Some(last), Goal::RatioAtLeast(r)) = (self.figures.last_mut(), goal) {
            last.ratio = Some(ratio);
            last.target = format!("ratio >= {r:.2}");
            last.met = Some(ratio >= r);
        }
    }

    /// Adds `name`, the ratio of the figures `numerator` and `denominator`
    /// taken earlier in the run, held to at least 0.9 (how flat a figure
    /// stayed as the store grew); nothing when either is missing.
    fn add_flatness(&mut self, name: &str, numerator: &str, denominator: &str, note: String) {
        let value = |name: &str| {
            self.figures
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.value)
        };
        if let (Some(numerator), Some(denominator)) = (value(numerator), value(denominator)) {
            self.add_ratio(
                name,
                ratio(numerator, denominator),
                Goal::RatioAtLeast(0.9),
                note,
            );
        }
    }

    fn text(&self) -> String {
        let mut text = format!(
            "{:<34} {:>12} {:<8} {:>10} {:>7} {:<16} {:<5} {:>5}  note\n",
            "figure", "value", "unit", "ceiling", "ratio", "target", "met", "load"
        );
        for figure in &self.figures {
            text.push_str(&row(figure));
            text.push('\n');
        }
        text
    }
}

fn row(f: &Figure) -> String {
    format!(
        "{:<34} {:>12.2} {:<8} {:>10} {:>7} {:<16} {:<5} {:>5.2}  {}",
        f.name,
        f.value,
        f.unit,
        f.ceiling.map_or_else(String::new, |c| format!("{c:.1}")),
        f.ratio.map_or_else(String::new, |r| format!("{r:.3}")),
        f.target,
        f.met.map_or("", |m| if m { "yes" } else { "NO" }),
        f.load_average,
        f.note
    )
}

/// `numerator / denominator`, 0 when the denominator is not positive.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// The 1-minute load average (0 if it cannot be read).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// The median of `values` (0 for none).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs every scenario and prints the table.
///
/// # Errors
/// A service cannot be started, a scenario fails, or the JSON cannot be
/// written.
pub async fn run(args: AllArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (runs, seconds, events) = if args.quick {
        (1, args.seconds.min(5), args.events.min(100_000))
    } else {
        (args.runs.max(1), args.seconds, args.events)
    };
    let clients = args.clients.max(1);
    let backend = Backend::start(args.database_url.clone(), args.nats_url.clone()).await?;
    eprintln!("running against {}", backend.describe());
    let wanted = |group: &str| args.only.is_empty() || args.only.iter().any(|g| g == group);
    let mut table = Table {
        figures: Vec::new(),
    };
    let ctx = Ctx {
        backend: &backend,
        bin: &args.bin,
        clients,
        seconds,
    };
    let mut all_rate = None;
    if wanted("book") {
        all_rate = Some(ctx.bookings(runs, &mut table).await?);
    }
    if wanted("hot") {
        ctx.hot(&mut table).await?;
    }
    if wanted("lag") {
        let rate = match all_rate {
            Some(rate) => rate,
            None => ctx.all_rate().await?,
        };
        ctx.lag(rate / 2.0, &mut table).await?;
    }
    if wanted("availability") {
        ctx.availability(&mut table).await?;
    }
    if wanted("store") {
        ctx.large_store(10_000, "1e4", false, &mut table).await?;
        let label = if events >= 1_000_000 { "1e6" } else { "large" };
        ctx.large_store(events, label, true, &mut table).await?;
        table.add_flatness(
            &format!("command_p50_flatness_{label}"),
            "command_p50_1e4",
            &format!("command_p50_{label}"),
            format!("p50 with 1e4 events / p50 with {events} events stored"),
        );
        table.add_flatness(
            &format!("book_rate_flatness_{label}"),
            &format!("book_rate_{label}"),
            "book_rate_1e4",
            format!("bookings/s with {events} events / with 1e4 stored"),
        );
    }
    let total = started.elapsed().as_secs_f64();
    table.add(
        "all_wall_time",
        total,
        "s",
        None,
        Goal::None,
        format!("runs {runs}, {seconds} s per run, {events} events"),
    );
    println!(
        "clinicbook-benches all, against {}, {clients} clients\n{}",
        backend.describe(),
        table.text()
    );
    if let Some(path) = &args.json {
        report::write_json(path, &table.figures)?;
    }
    Ok(())
}

/// The booking runs of one `--role` over the rounds of
/// [`Ctx::bookings`], each against its round's ceiling.
struct RoleRuns {
    role: &'static str,
    rates: Vec<f64>,
    ratios: Vec<f64>,
    p50: Vec<f64>,
    /// CPU per booking of the server and of PostgreSQL, per round.
    server_ms: Vec<f64>,
    postgres_ms: Vec<f64>,
}

impl RoleRuns {
    fn new(role: &'static str) -> Self {
        Self {
            role,
            rates: Vec::new(),
            ratios: Vec::new(),
            p50: Vec::new(),
            server_ms: Vec::new(),
            postgres_ms: Vec::new(),
        }
    }

    /// Records round `round`'s run against that round's `ceiling`, with
    /// the CPU the machine spent during it.
    fn record(&mut self, round: usize, booked: &BookReport, ceiling: f64, cpu: Option<CpuSplit>) {
        eprintln!(
            "round {round}: --role {} {:.0} bookings/s",
            self.role, booked.bookings_per_second
        );
        self.rates.push(booked.bookings_per_second);
        self.ratios.push(booked.bookings_per_second / ceiling);
        self.p50.push(booked.latency_ms.p50);
        if let Some(cpu) = cpu {
            self.server_ms
                .extend(cpu.ms_per_op(cpu.server, booked.bookings));
            self.postgres_ms
                .extend(cpu.ms_per_op(cpu.postgres, booked.bookings));
        }
    }

    /// Adds the CPU a booking cost (server and PostgreSQL) and, against
    /// the raw-SQL transaction's cost, the best ratio to the ceiling the
    /// machine allows when CPU is what limits both.
    fn add_cpu_to(
        &self,
        table: &mut Table,
        ceiling_ms: Option<f64>,
        note: &impl Fn(&str) -> String,
    ) {
        if self.server_ms.is_empty() {
            return;
        }
        let role = self.role;
        let (server, postgres) = (median(&self.server_ms), median(&self.postgres_ms));
        let cost = server + postgres;
        table.add(
            &format!("cpu_ms_per_book_{role}"),
            cost,
            "ms cpu",
            None,
            Goal::None,
            note(&format!(
                "CPU per booking of serve --role {role} ({server:.2} ms) and PostgreSQL ({postgres:.2} ms)"
            )),
        );
        if let Some(ceiling_ms) = ceiling_ms.filter(|_| cost > 0.0) {
            table.add_ratio(
                &format!("book_{role}_cpu_bound"),
                ceiling_ms / cost,
                Goal::None,
                note(&format!(
                    "cpu_ms_per_tx_ceiling / cpu_ms_per_book_{role}: the highest book_{role}_ratio CPU allows"
                )),
            );
        }
    }

    /// Adds `book_<role>` next to `ceiling`, its ratio to the ceiling held
    /// to at least `goal`, and its median latency; `note` says how they
    /// were measured.
    fn add_to(&self, table: &mut Table, ceiling: f64, goal: f64, note: impl Fn(&str) -> String) {
        let role = self.role;
        table.add(
            &format!("book_{role}"),
            median(&self.rates),
            "book/s",
            Some(ceiling),
            Goal::None,
            note(&format!("serve --role {role}, distinct slots")),
        );
        table.add_ratio(
            &format!("book_{role}_ratio"),
            median(&self.ratios),
            Goal::RatioAtLeast(goal),
            note(&format!("median of per-round book_{role} / ceiling")),
        );
        table.add(
            &format!("book_{role}_p50_ms"),
            median(&self.p50),
            "ms",
            None,
            Goal::None,
            note("latency"),
        );
    }
}

/// What every scenario needs.
struct Ctx<'a> {
    backend: &'a Backend,
    bin: &'a std::path::Path,
    clients: usize,
    seconds: u64,
}

/// A server of a scenario and its database, dropped together.
struct Scenario<'a> {
    backend: &'a Backend,
    db: BenchDb,
    server: Option<Server>,
    api: Arc<Api>,
}

impl Scenario<'_> {
    async fn finish(mut self) -> anyhow::Result<()> {
        let running = match &mut self.server {
            Some(server) => server.ensure_running(),
            None => Ok(()),
        };
        drop(self.server.take());
        self.backend.drop_database(&self.db).await;
        running
    }
}

impl<'a> Ctx<'a> {
    async fn scenario(&self, role: &str) -> anyhow::Result<Scenario<'a>> {
        let db = self.backend.database().await?;
        let server = match Server::spawn(self.bin, self.backend, &db, role).await {
            Ok(server) => server,
            Err(e) => {
                self.backend.drop_database(&db).await;
                return Err(e);
            }
        };
        let api = Arc::new(Api::new(
            &server.url,
            server.admin_token.clone(),
            Duration::from_secs(30),
        )?);
        Ok(Scenario {
            backend: self.backend,
            db,
            server: Some(server),
            api,
        })
    }

    /// `clients` clients book distinct slots for the run's seconds at a
    /// new clinic of `self.clients` devices.
    async fn book_distinct(&self, api: &Arc<Api>, clients: usize) -> anyhow::Result<BookReport> {
        let clinic = Arc::new(set_up(api, self.clients).await?);
        http::drive(api, &clinic, Mode::Distinct, clients, self.seconds).await
    }

    /// `runs` rounds of ceiling, `--role api`, `--role all`; answers the
    /// median `--role all` booking rate.
    async fn bookings(&self, runs: usize, table: &mut Table) -> anyhow::Result<f64> {
        let (mut ceilings, mut rss) = (vec![], vec![]);
        let (mut api_runs, mut all_runs) = (RoleRuns::new("api"), RoleRuns::new("all"));
        let mut ceiling_costs = Vec::new();
        let mut cpu_ceiling = None;
        let mut cpu_all = None;
        for round in 0..runs {
            let db = self.backend.database().await?;
            let ceiling = ceiling(&db.url, self.clients, self.seconds).await;
            self.backend.drop_database(&db).await;
            let ceiling = ceiling?;
            eprintln!("round {round}: raw-SQL ceiling {:.0} tx/s", ceiling.rate);
            ceilings.push(ceiling.rate);
            if let Some(cpu) = ceiling.cpu {
                ceiling_costs.extend(cpu.ms_per_op(cpu.bench + cpu.postgres, ceiling.transactions));
                cpu_ceiling.get_or_insert(cpu);
            }

            let api = self.scenario("api").await?;
            let (booked, cpu) = self.book_watched(&api, false).await;
            api.finish().await?;
            api_runs.record(round, &booked?, ceiling.rate, cpu);

            let all = self.scenario("all").await?;
            let (booked, cpu) = self.book_watched(&all, true).await;
            if let Some(pid) = all.server.as_ref().map(Server::pid) {
                rss.push(peak_rss_mb(pid));
            }
            all.finish().await?;
            if let Some(cpu) = cpu {
                cpu_all.get_or_insert(cpu);
            }
            all_runs.record(round, &booked?, ceiling.rate, cpu);
        }
        let note = |what: &str| {
            format!(
                "{what}; median of {runs} x {} s, {} clients",
                self.seconds, self.clients
            )
        };
        table.add(
            "ceiling_raw_sql",
            median(&ceilings),
            "tx/s",
            None,
            Goal::None,
            note("booking-shaped transaction, events copy without triggers"),
        );
        api_runs.add_to(table, median(&ceilings), 0.6, note);
        all_runs.add_to(table, median(&ceilings), 0.4, note);
        let ceiling_cost = (!ceiling_costs.is_empty()).then(|| median(&ceiling_costs));
        if let Some(cost) = ceiling_cost {
            table.add(
                "cpu_ms_per_tx_ceiling",
                cost,
                "ms cpu",
                None,
                Goal::None,
                note("CPU of PostgreSQL and the SQL client (this process) per raw-SQL transaction"),
            );
        }
        api_runs.add_cpu_to(table, ceiling_cost, &note);
        all_runs.add_cpu_to(table, ceiling_cost, &note);
        table.add(
            "rss_mb",
            rss.iter().copied().fold(0.0, f64::max),
            "MB",
            None,
            Goal::AtMost(150.0),
            "peak RSS (VmHWM) of serve --role all after its booking run",
        );
        for (phase, split) in [("ceiling", cpu_ceiling), ("book_all", cpu_all)] {
            if let Some(split) = split {
                for (who, share) in [
                    ("bench", split.bench),
                    ("server", split.server),
                    ("postgres", split.postgres),
                    ("other", split.other),
                    ("idle", split.idle),
                ] {
                    table.add(
                        &format!("cpu_{phase}_{who}"),
                        share * 100.0,
                        "% cpu",
                        None,
                        Goal::None,
                        format!("share of all cores during the first {phase} run"),
                    );
                }
            }
        }
        Ok(median(&all_runs.rates))
    }

    /// Distinct-slot bookings against `scenario`'s server, with the CPU
    /// the machine spent while they ran; with `projected`, until the
    /// server's projectors have applied them too, so their work counts.
    async fn book_watched(
        &self,
        scenario: &Scenario<'_>,
        projected: bool,
    ) -> (anyhow::Result<BookReport>, Option<CpuSplit>) {
        let clinic = match set_up(&scenario.api, self.clients).await {
            Ok(clinic) => Arc::new(clinic),
            Err(e) => return (Err(e), None),
        };
        let pid = scenario.server.as_ref().map(Server::pid);
        let cpu = CpuWatch::start(pid, &scenario.db.url).await;
        let booked = http::drive(
            &scenario.api,
            &clinic,
            Mode::Distinct,
            self.clients,
            self.seconds,
        )
        .await;
        if projected && booked.is_ok() {
            if let Err(e) = crate::lag::settle(&scenario.api).await {
                return (Err(e), None);
            }
        }
        (booked, cpu.finish().await)
    }

    /// The `--role all` booking rate alone (for `lag` without `book`).
    async fn all_rate(&self) -> anyhow::Result<f64> {
        let all = self.scenario("all").await?;
        let booked = self.book_distinct(&all.api, self.clients).await?;
        all.finish().await?;
        Ok(booked.bookings_per_second)
    }

    async fn hot(&self, table: &mut Table) -> anyhow::Result<()> {
        let all = self.scenario("all").await?;
        let clinic = Arc::new(set_up(&all.api, 1).await?);
        let booked = http::drive(&all.api, &clinic, Mode::Hot, self.clients, self.seconds).await?;
        all.finish().await?;
        let hot = booked.hot_slots.as_ref();
        let (tried, won, double) = hot.map_or((0, 0, 0), |h| (h.tried, h.booked, h.double_booked));
        table.add(
            "hot_slots_double_booked",
            double as f64,
            "slots",
            None,
            Goal::AtMost(0.0),
            format!(
                "{tried} slots raced for by {} clients, {won} booked",
                self.clients
            ),
        );
        table.add(
            "hot_slots_won_share",
            ratio(won as f64, tried as f64),
            "ratio",
            None,
            Goal::AtLeast(1.0),
            "slots with exactly one 201 / slots tried",
        );
        table.add(
            "hot_p99_ms",
            booked.latency_ms.p99,
            "ms",
            None,
            Goal::None,
            format!(
                "answers {:?}",
                booked
                    .answers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
            ),
        );
        Ok(())
    }

    async fn lag(&self, rate: f64, table: &mut Table) -> anyhow::Result<()> {
        let rate = rate.max(1.0);
        let all = self.scenario("all").await?;
        let lag =
            crate::lag::measure_lag(&all.api, rate.round() as u32, self.seconds.max(10), 0).await;
        all.finish().await?;
        let lag = lag?;
        let worst = lag
            .server_lag_ms
            .iter()
            .flat_map(|(_, q)| q.iter())
            .filter(|(q, _)| q == "0.99")
            .map(|(_, ms)| *ms)
            .fold(0.0, f64::max);
        let slowest = lag
            .server_lag_ms
            .iter()
            .max_by(|a, b| {
                let p99 = |x: &(String, Vec<(String, f64)>)| {
                    x.1.iter()
                        .find(|(q, _)| q == "0.99")
                        .map_or(0.0, |(_, v)| *v)
                };
                p99(a).total_cmp(&p99(b))
            })
            .map_or(String::new(), |(p, _)| p.clone());
        table.add(
            "lag_p99_ms",
            worst,
            "ms",
            None,
            Goal::AtMost(50.0),
            format!(
                "{} bookings at {rate:.0}/s (half the --role all rate); slowest projection {slowest}",
                lag.bookings
            ),
        );
        Ok(())
    }

    async fn availability(&self, table: &mut Table) -> anyhow::Result<()> {
        let all = self.scenario("all").await?;
        let result = availability(&all.api, self.seconds, table).await;
        all.finish().await?;
        result
    }

    /// Seeds `events` events, then measures bookings (1 client: latency;
    /// `clients`: rate) on `serve --role api`; with `rebuild`, also the
    /// rebuilds of schedule and reports against a COPY.
    async fn large_store(
        &self,
        events: u64,
        label: &str,
        rebuild: bool,
        table: &mut Table,
    ) -> anyhow::Result<()> {
        let db = self.backend.database().await?;
        let result = self
            .large_store_on(&db, events, label, rebuild, table)
            .await;
        self.backend.drop_database(&db).await;
        result
    }

    async fn large_store_on(
        &self,
        db: &BenchDb,
        events: u64,
        label: &str,
        rebuild: bool,
        table: &mut Table,
    ) -> anyhow::Result<()> {
        let pool = clinicbook_eventstore::connect(&db.url, 16).await?;
        eprintln!("seeding {events} events into {}", db.name);
        let seeded = crate::seed::seed(&pool, events, 8, 7).await?;
        table.add(
            &format!("seed_rate_{label}"),
            report::per_second(seeded.written, seeded.seconds),
            "events/s",
            None,
            Goal::None,
            format!(
                "{} events in {:.0} s, 8 clients",
                seeded.written, seeded.seconds
            ),
        );
        let (first, last) = (seeded.first_tenth_rate(), seeded.last_tenth_rate());
        table.add_ratio(
            &format!("seed_flatness_{label}"),
            ratio(last, first),
            Goal::RatioAtLeast(0.9),
            format!("events/s in the last tenth {last:.0} / first tenth {first:.0}"),
        );
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        let server = Server::spawn(self.bin, self.backend, db, "api").await?;
        let api = Arc::new(Api::new(
            &server.url,
            server.admin_token.clone(),
            Duration::from_secs(30),
        )?);
        let one = self.book_distinct(&api, 1).await?;
        let many = self.book_distinct(&api, self.clients).await?;
        drop(server);
        table.add(
            &format!("command_p50_{label}"),
            one.latency_ms.p50,
            "ms",
            None,
            Goal::None,
            format!("POST /v1/reservations at 1 client, {stored} events stored"),
        );
        table.add(
            &format!("command_p99_{label}"),
            one.latency_ms.p99,
            "ms",
            None,
            Goal::None,
            format!("POST /v1/reservations at 1 client, {stored} events stored"),
        );
        table.add(
            &format!("book_rate_{label}"),
            many.bookings_per_second,
            "book/s",
            None,
            Goal::None,
            format!(
                "serve --role api, {} clients, {stored} events stored",
                self.clients
            ),
        );
        if rebuild {
            // The bookings just made are part of what is rebuilt.
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&pool)
                .await?;
            let copy = copy_seconds(&pool).await?;
            let copy_rate = report::per_second(u64::try_from(stored).unwrap_or(0), copy);
            table.add(
                "copy_feed_order",
                copy_rate,
                "rows/s",
                None,
                Goal::None,
                format!("COPY (SELECT … ORDER BY transaction_id, position) TO STDOUT, {stored} rows in {copy:.1} s"),
            );
            for projection in ["schedule", "reports"] {
                let seconds = rebuild_seconds(self.bin, &db.url, projection).await?;
                table.add(
                    &format!("rebuild_{projection}"),
                    report::per_second(u64::try_from(stored).unwrap_or(0), seconds),
                    "events/s",
                    Some(copy_rate),
                    Goal::RatioAtLeast(0.5),
                    format!("clinicbook rebuild {projection}: {stored} events in {seconds:.1} s"),
                );
            }
        }
        pool.close().await;
        Ok(())
    }
}

/// The raw-SQL ceiling: `clients` connections each running booking-shaped
/// transactions for `seconds` on `ceiling_events`, a copy of the events
/// table (columns, defaults, identity, indexes, checks) without its
/// triggers. Answers transactions per second.
async fn ceiling(url: &str, clients: usize, seconds: u64) -> anyhow::Result<CeilingRun> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(clients).unwrap_or(64))
        .min_connections(u32::try_from(clients).unwrap_or(64))
        .connect(url)
        .await
        .context("connecting for the ceiling")?;
    sqlx::query("CREATE TABLE ceiling_events (LIKE events INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let cpu = CpuWatch::start(None, url).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (pool, done) = (pool.clone(), done.clone());
        tasks.push(tokio::spawn(
            async move {
                let calendar = format!("{}/2031-01-01", Uuid::new_v4());
                while Instant::now() < deadline {
                    booking_shaped(&pool, &calendar).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, sqlx::Error>(())
            }
            .instrument(tracing::info_span!("ceiling_client")),
        ));
    }
    for task in tasks {
        task.await.context("a ceiling client panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu.finish().await;
    pool.close().await;
    let transactions = done.load(Ordering::Relaxed);
    Ok(CeilingRun {
        rate: report::per_second(transactions, elapsed),
        transactions,
        cpu,
    })
}

/// What one ceiling run measured.
struct CeilingRun {
    /// Transactions per second.
    rate: f64,
    /// Transactions committed.
    transactions: u64,
    /// The machine's CPU while they ran.
    cpu: Option<CpuSplit>,
}

/// One booking-shaped transaction: the calendar's last sequence, then its
/// next event and a new reservation's two, in one multi-row insert.
async fn booking_shaped(pool: &PgPool, calendar: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let last: i64 = sqlx::query_scalar(
        "SELECT COALESCE(max(sequence), 0) FROM ceiling_events
          WHERE aggregate_type = 'Calendar' AND aggregate_id = $1",
    )
    .bind(calendar)
    .fetch_one(&mut *tx)
    .await?;
    let reservation = Uuid::new_v4().to_string();
    let payload = json!({"SlotReserved": {"reservation_id": reservation,
        "start": "2031-01-01T08:00:00Z", "end": "2031-01-01T08:20:00Z", "buffer_minutes": 10}})
    .to_string();
    let metadata = json!({"command": "book_treatment", "command_id": Uuid::new_v4(),
        "correlation_id": Uuid::new_v4(), "causation_id": Uuid::new_v4(),
        "actor_subject": "bench", "actor_role": "admin", "request_id": Uuid::new_v4(),
        "recorded_at": "2031-01-01T07:00:00.000000Z"})
    .to_string();
    let types = ["Calendar", "Reservation", "Reservation"];
    let ids = [calendar, reservation.as_str(), reservation.as_str()];
    let sequences = [last + 1, 1, 2];
    let event_types = ["SlotReserved", "TreatmentBooked", "PaymentRecorded"];
    let versions = ["1.0.0", "1.0.0", "1.0.0"];
    let payloads = [payload.as_str(), payload.as_str(), payload.as_str()];
    let metadatas = [metadata.as_str(), metadata.as_str(), metadata.as_str()];
    let hash = vec![7u8; 32];
    let hashes = [hash.clone(), hash.clone(), hash];
    sqlx::query(
        "INSERT INTO ceiling_events (aggregate_type, aggregate_id, sequence, event_type,
                                     event_version, payload, metadata, hash)
         SELECT t.ty, t.id, t.seq, t.et, t.ev, t.p::json, t.m::json, t.h
           FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                       $6::text[], $7::text[], $8::bytea[]) AS t(ty, id, seq, et, ev, p, m, h)",
    )
    .bind(&types[..])
    .bind(&ids[..])
    .bind(&sequences[..])
    .bind(&event_types[..])
    .bind(&versions[..])
    .bind(&payloads[..])
    .bind(&metadatas[..])
    .bind(&hashes[..])
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Availability of a 64-resource clinic day with bookings on it: latency
/// at 1 connection, throughput at 16, against `/healthz` at 16.
async fn availability(api: &Arc<Api>, seconds: u64, table: &mut Table) -> anyhow::Result<()> {
    const RESOURCES: usize = 64;
    const CONNECTIONS: usize = 16;
    let clinic = Arc::new(set_up(api, RESOURCES).await?);
    // A third of each device's day booked, so the answer has work to do.
    let booked = book_day(api, &clinic, SLOTS_PER_DAY / 3).await?;
    crate::lag::settle(api).await?;
    let date = clinic.first_day.date_naive();
    let url = format!(
        "{}/v1/clinics/{}/availability?treatment_id={}&date={date}",
        api.base, clinic.clinic_id, clinic.treatment_id
    );
    let half = Duration::from_secs((seconds / 2).max(3));
    let (mut one, _) = hammer(api, &url, 1, half, true).await?;
    let (_, rate) = hammer(api, &url, CONNECTIONS, half, true).await?;
    let healthz = format!("{}/healthz", api.base);
    let (_, ceiling) = hammer(api, &healthz, CONNECTIONS, half, false).await?;
    let latency = Latency::of(&mut one);
    let note = format!("{RESOURCES} resources, {booked} bookings that day");
    table.add(
        "availability_p50_ms",
        latency.p50,
        "ms",
        None,
        Goal::None,
        format!("1 connection; {note}"),
    );
    table.add(
        "availability_p99_ms",
        latency.p99,
        "ms",
        None,
        Goal::AtMost(5.0),
        format!("1 connection; {note}"),
    );
    table.add(
        "availability_rate",
        rate,
        "req/s",
        Some(ceiling),
        Goal::None,
        format!("{CONNECTIONS} connections; ceiling GET /healthz at {CONNECTIONS}; {note}"),
    );
    table.add(
        "availability_rate_goal",
        rate,
        "req/s",
        None,
        Goal::AtLeast(1500.0),
        format!("{CONNECTIONS} connections"),
    );
    Ok(())
}

/// Books slots `0..per_device` of the first day on every device of
/// `clinic`, 16 at a time; answers how many were booked.
async fn book_day(api: &Arc<Api>, clinic: &Arc<Clinic>, per_device: u64) -> anyhow::Result<u64> {
    let mut jobs = Vec::new();
    for device in &clinic.devices {
        for slot in 0..per_device {
            jobs.push((*device, slot));
        }
    }
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    let booked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (api, clinic, jobs, booked) =
            (api.clone(), clinic.clone(), jobs.clone(), booked.clone());
        tasks.push(tokio::spawn(
            async move {
                loop {
                    let job = jobs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop();
                    let Some((device, slot)) = job else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let start = clinic.slot_start(slot);
                    let answer = api
                        .book(&clinic.booking(Uuid::new_v4(), device, start))
                        .await?;
                    if answer.status() == StatusCode::CREATED {
                        booked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            .instrument(tracing::info_span!("book_day")),
        ));
    }
    for task in tasks {
        task.await.context("a booking task panicked")??;
    }
    Ok(booked.load(Ordering::Relaxed))
}

/// `GET url` from `connections` loops for `length`; answers every
/// latency and the rate of 200 answers. Fails on any other answer.
async fn hammer(
    api: &Arc<Api>,
    url: &str,
    connections: usize,
    length: Duration,
    auth: bool,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (api, url) = (api.clone(), url.to_string());
        tasks.push(tokio::spawn(
            async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let mut request = api.http.get(&url);
                    if auth {
                        request = request.bearer_auth(&api.token);
                    }
                    let answer = request.send().await?;
                    let status = answer.status();
                    let body = answer.bytes().await?;
                    if status != StatusCode::OK {
                        bail!(
                            "GET {url} answered {status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                    latencies.push(sent.elapsed());
                }
                Ok(latencies)
            }
            .instrument(tracing::info_span!("hammer")),
        ));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("a reading task panicked")??);
    }
    let rate = report::per_second(all.len() as u64, started.elapsed().as_secs_f64());
    Ok((all, rate))
}

/// Seconds a `COPY` of every event, in feed order, to this process takes.
async fn copy_seconds(pool: &PgPool) -> anyhow::Result<f64> {
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut stream = conn
        .copy_out_raw("COPY (SELECT * FROM events ORDER BY transaction_id, position) TO STDOUT")
        .await?;
    let mut bytes = 0usize;
    while let Some(chunk) = stream.try_next().await? {
        bytes += chunk.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("COPY: {bytes} bytes in {seconds:.1} s");
    Ok(seconds)
}

/// Seconds `<bin> rebuild <projection>` takes on `url`.
async fn rebuild_seconds(
    bin: &std::path::Path,
    url: &str,
    projection: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let output = tokio::process::Command::new(bin)
        .args(["rebuild", projection])
        .env("DATABASE_URL", url)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} rebuild {projection}", bin.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "rebuild {projection} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    eprintln!(
        "rebuild {projection}: {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
    Ok(seconds)
}

/// Peak resident memory of process `pid` (`VmHWM`), in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Shares of all cores' time over a measured interval.
#[derive(Debug, Clone, Copy)]
struct CpuSplit {
    bench: f64,
    server: f64,
    postgres: f64,
    other: f64,
    idle: f64,
    /// All cores' time over the interval (wall seconds times cores).
    core_seconds: f64,
}

impl CpuSplit {
    /// Milliseconds of one core that `share` of this interval comes to
    /// per operation, over `ops` operations.
    fn ms_per_op(&self, share: f64, ops: u64) -> Option<f64> {
        (ops > 0).then(|| share * self.core_seconds * 1000.0 / ops as f64)
    }
}

/// CPU ticks (`/proc`, in clock ticks) of this process, the server and
/// PostgreSQL's processes, and of the machine, at the start of a run.
struct CpuWatch {
    server: Option<u32>,
    postmaster: Option<u32>,
    start: Ticks,
    started: Instant,
}

#[derive(Clone, Copy, Default)]
struct Ticks {
    bench: u64,
    server: u64,
    postgres: u64,
    busy: u64,
    total: u64,
}

impl CpuWatch {
    /// Starts watching; `url`'s backend tells which PostgreSQL is ours.
    async fn start(server: Option<u32>, url: &str) -> Self {
        let postmaster = postmaster_of(url).await;
        let watch = Self {
            server,
            postmaster,
            start: Ticks::default(),
            started: Instant::now(),
        };
        Self {
            start: watch.ticks(),
            started: Instant::now(),
            ..watch
        }
    }

    fn ticks(&self) -> Ticks {
        let (busy, total) = machine_ticks();
        Ticks {
            bench: process_ticks(std::process::id()),
            server: self.server.map_or(0, process_ticks),
            postgres: self.postmaster.map_or(0, children_ticks),
            busy,
            total,
        }
    }

    async fn finish(self) -> Option<CpuSplit> {
        let end = self.ticks();
        let total = end.total.checked_sub(self.start.total)? as f64;
        if total <= 0.0 {
            return None;
        }
        let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / total;
        let bench = share(end.bench, self.start.bench);
        let server = share(end.server, self.start.server);
        let postgres = share(end.postgres, self.start.postgres);
        let busy = share(end.busy, self.start.busy);
        Some(CpuSplit {
            bench,
            server,
            postgres,
            other: (busy - bench - server - postgres).max(0.0),
            idle: (1.0 - busy).max(0.0),
            core_seconds: self.started.elapsed().as_secs_f64() * cores() as f64,
        })
    }
}

/// The postmaster's pid: the parent of a backend of `url`.
async fn postmaster_of(url: &str) -> Option<u32> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?;
    stat_fields(&stat).and_then(|f| f.get(1).and_then(|ppid| ppid.parse().ok()))
}

/// The fields of `/proc/<pid>/stat` after the command name (state is 0,
/// ppid 1, utime 11, stime 12, cutime 13, cstime 14).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().collect())
}

/// The sum of two counters of `/proc/<pid>/stat`, by index after the
/// command name (0 when the process is gone).
fn stat_ticks(pid: u32, first: usize, second: usize) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f = stat_fields(&s)?;
            let a: u64 = f.get(first)?.parse().ok()?;
            let b: u64 = f.get(second)?.parse().ok()?;
            Some(a + b)
        })
        .unwrap_or(0)
}

/// utime + stime of `pid` in clock ticks (its threads included).
fn process_ticks(pid: u32) -> u64 {
    stat_ticks(pid, 11, 12)
}

/// cutime + cstime of `pid`: the CPU of its children it has waited for.
fn reaped_ticks(pid: u32) -> u64 {
    stat_ticks(pid, 13, 14)
}

/// utime + stime of every child of `parent` (PostgreSQL's backends and
/// helpers), of `parent` itself, and of the children it has reaped (a
/// backend that exits during a run takes its ticks out of the live sum;
/// its parent's cutime + cstime gets them).
fn children_ticks(parent: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut sum = process_ticks(parent) + reaped_ticks(parent);
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat_fields(&stat).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(parent) {
            sum += process_ticks(pid);
        }
    }
    sum
}

/// The cores `/proc/stat` counts (its `cpuN` lines), at least 1.
fn cores() -> usize {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
        .max(1)
}

/// Busy and total ticks of all cores (`/proc/stat`).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let values: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
