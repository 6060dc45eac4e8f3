//! `clinicbook demo`: loads a realistic demo data set into a running server
//! through its HTTP API (the same use cases staff and admins call; never
//! SQL), then says what it made and how to look at it.
//!
//! The data set: one chain of three branches in Europe/Berlin (Berlin
//! Mitte, Berlin Charlottenburg, Potsdam), open Monday to Friday
//! 09:00-19:00 and Saturday 10:00-16:00, each with two rooms, two lasers
//! and two practitioners; four treatments shared by id; pricing rules
//! (Friday evening +15 %, Tuesday morning -10 %, last minute -10 %); two
//! laser programs and two promo codes; patients with wallet deposits and
//! packages; a fortnight of bookings starting tomorrow, driven through
//! check-in, completion, no-show, cancellation and rescheduling; an
//! emergency block on a laser, a closure of one branch for a day,
//! waitlist entries, three hour-long holds on the last day, and a
//! waitlist offer (Potsdam in `waitlist_mode: offer`; a cancellation on
//! the last day frees a slot the matcher holds for the first of two
//! waitlisted patients).
//!
//! Decisions a reader may ask about:
//!
//! - **Deterministic.** Everything is drawn from `fastrand::Rng::with_seed`
//!   and every id the API lets a client choose (clinics, resources,
//!   treatments, programs, packages, reservations) is derived from the seed
//!   and a label, so two runs on empty databases make the same data set.
//!   Free slots are planned on the client (there is no availability route
//!   yet); a 409 `slot_unavailable` still just means "try another slot".
//! - **Safe to run again.** The chain's first clinic has a fixed id: when
//!   it exists and the last step (the closure) is in place, nothing is
//!   written and only the summary and curl commands are printed. When it
//!   exists without the closure, an earlier run stopped half-way; the load
//!   runs again and, because every POST carries an idempotency key derived
//!   from the seed, what was already done is answered from the server's
//!   idempotency store instead of being done twice. Bodies carry dates
//!   relative to today, so that works on the same day only; on another day
//!   the server answers `idempotency_key_reused` and the loader says so.
//! - **A good client.** At most `--concurrency` requests in flight; a 429 is
//!   retried after its `Retry-After`, a timeout or 503 with backoff.
//! - **Money never planned to fail.** A booking is paid from the wallet only
//!   when the wallet covers it at the highest price the rules allow, and
//!   promo codes are used within their limits; if the server refuses anyway
//!   the booking falls back to paying at the clinic, or to no code.

mod bookings;
mod catalog;
mod client;
mod disruptions;
mod holds;
mod ids;
mod lifecycle;
mod offers;
mod patients;
mod plan;
mod report;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use clinicbook_domain::reservation::ReservationStatus;
use clinicbook_wire::admin::ClinicView;
use clinicbook_wire::booking::BookTreatment;
use reqwest::StatusCode;
use uuid::Uuid;

use bookings::{Booker, Made, Pay};
use catalog::Chain;
use client::{Api, As};
use lifecycle::{Frozen, Outcome};
use patients::{Funding, Patient};
use plan::{open_dates, start_of_day, tomorrow, Planner};

pub use disruptions::{BlockSummary, ClosureSummary};
pub use report::curl_commands;

/// The seed of `clinicbook demo` when none is given.
pub const DEFAULT_SEED: u64 = 20_260_301;
/// Bookings planned per patient.
const BOOKINGS_PER_PATIENT: usize = 2;

/// How much demo data to load.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct DemoOptions {
    /// Patients to create; about two bookings are planned per patient.
    #[arg(long, default_value_t = 200)]
    pub patients: usize,
    /// Days of bookings, starting tomorrow (Sundays are closed).
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Seed of the data set: the same seed gives the same data and ids.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            patients: 200,
            days: 14,
            seed: DEFAULT_SEED,
            concurrency: 8,
        }
    }
}

impl DemoOptions {
    /// Checks the options are within what the data set needs.
    ///
    /// # Errors
    /// `DemoError::Options` naming the option.
    pub fn validate(&self) -> Result<(), DemoError> {
        if !(10..=100_000).contains(&self.patients) {
            return Err(DemoError::Options(
                "--patients must be between 10 and 100000".into(),
            ));
        }
        if !(3..=90).contains(&self.days) {
            return Err(DemoError::Options("--days must be between 3 and 90".into()));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(DemoError::Options(
                "--concurrency must be between 1 and 64".into(),
            ));
        }
        Ok(())
    }
}

/// Why the demo could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Nothing (or no clinicbook) answers at the URL.
    #[error("no clinicbook server at {url}; start it with `clinicbook serve`")]
    Unreachable {
        /// The URL tried.
        url: String,
    },
    /// The server refused the demo's token: it signs with another secret.
    #[error(
        "the server at {url} refused the demo's token ({detail}); run `clinicbook demo` in the \
         directory where `clinicbook serve` runs (both use var/jwt-secret there) or give both the \
         same CLINICBOOK_JWT_SECRET"
    )]
    Unauthorized {
        /// The server.
        url: String,
        /// What it said.
        detail: String,
    },
    /// An earlier run against this database stopped half-way on another
    /// day, so its requests cannot be repeated safely.
    #[error(
        "{what}: an earlier `clinicbook demo` run against this database stopped half-way on \
         another day and cannot be completed safely; load the demo into an empty database, or \
         pass another --seed"
    )]
    Interrupted {
        /// The request that found out.
        what: String,
    },
    /// The server refused a request the loader cannot work around.
    #[error("{what}: the server answered {status} {code}: {detail}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The problem code.
        code: String,
        /// The problem detail.
        detail: String,
    },
    /// A request kept failing on the way (after retries).
    #[error("{what}: {detail}")]
    Transport {
        /// The request.
        what: String,
        /// The failure.
        detail: String,
    },
    /// An answer did not have the shape of the contract.
    #[error("{what}: unexpected answer: {detail}")]
    BadAnswer {
        /// The request.
        what: String,
        /// What did not fit.
        detail: String,
    },
    /// The options are out of range.
    #[error("invalid demo options: {0}")]
    Options(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A name with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedId {
    /// The display name.
    pub name: String,
    /// The id.
    pub id: Uuid,
}

/// Ids and values for the curl commands printed after a load.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// A reservation worth looking at (completed if any).
    pub reservation_id: Option<Uuid>,
    /// A patient whose wallet has seen a deposit and a booking.
    pub wallet_patient_id: Option<Uuid>,
    /// A quote: clinic, treatment, start and promo code.
    pub quote: (Uuid, Uuid, DateTime<Utc>, String),
    /// What the quote shows.
    pub quote_about: String,
    /// A booking that can be made after the demo's days.
    pub booking: BookTreatment,
    /// What the booking is.
    pub booking_about: String,
}

/// The waitlist offer the demo makes: a booking cancelled at a branch in
/// `waitlist_mode: offer`, its slot held for the first waitlisted patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferSummary {
    /// The branch.
    pub clinic_id: Uuid,
    /// Its name.
    pub clinic: String,
    /// The booking whose cancellation freed the slot (`None` when found
    /// by a later run).
    pub cancelled: Option<Uuid>,
    /// The reservations waiting for the slot, first in line first.
    pub waitlisted: Vec<Uuid>,
    /// The one the slot is offered to now, if any.
    pub offered_to: Option<Uuid>,
    /// The offer's hold.
    pub hold_id: Option<Uuid>,
    /// When the offer runs out.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a demo load made (or found).
#[derive(Clone, Debug, PartialEq)]
pub struct DemoSummary {
    /// The chain was there already: nothing was written.
    pub already_loaded: bool,
    /// The server.
    pub url: String,
    /// The seed of the data set.
    pub seed: u64,
    /// First and last day with bookings.
    pub dates: (NaiveDate, NaiveDate),
    /// The branches.
    pub clinics: Vec<NamedId>,
    /// The treatments (the same ids at every branch).
    pub treatments: Vec<NamedId>,
    /// The programs.
    pub programs: Vec<NamedId>,
    /// The promo codes.
    pub promo_codes: Vec<String>,
    /// Every patient.
    pub patient_ids: Vec<Uuid>,
    /// Wallets with a deposit.
    pub funded_wallets: usize,
    /// Cents deposited in all.
    pub deposited_cents: i64,
    /// Packages paid from the wallet.
    pub packages_from_wallet: usize,
    /// Packages paid outside clinicbook.
    pub packages_external: usize,
    /// Bookings made, by payment method (`package`, `wallet`, `at_clinic`).
    pub bookings_by_payment: BTreeMap<String, usize>,
    /// Bookings made with a promo code.
    pub bookings_with_promo: usize,
    /// What the bookings cost as booked (pricing rules and promo codes
    /// applied), in cents.
    pub booked_cents: i64,
    /// Reservation ids by their status now, waitlist entries included.
    pub reservations: BTreeMap<String, Vec<Uuid>>,
    /// Reservations moved to another slot (still booked, or displaced).
    pub rescheduled: Vec<Uuid>,
    /// Credited back to wallets by cancellations.
    pub refunded_cents: i64,
    /// The emergency block.
    pub block: Option<BlockSummary>,
    /// The closure.
    pub closure: Option<ClosureSummary>,
    /// The waitlist offer.
    pub offer: Option<OfferSummary>,
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Of those, answered 429 and retried.
    pub rate_limited: u64,
    /// Time the load took.
    pub elapsed: Duration,
    /// Values for the curl commands.
    pub sample: Sample,
    /// Where the sample reservation's patient messages went, as the server
    /// answered when the load ended (none if it could not be read).
    pub messages: Vec<clinicbook_wire::messages::MessageView>,
}

impl DemoSummary {
    /// Bookings made in all.
    pub fn bookings(&self) -> usize {
        self.bookings_by_payment.values().sum()
    }
}

/// The bearer tokens the demo works with; the binary signs them with the
/// secret `serve` uses (this crate is only a client of the API).
#[derive(Clone, Debug)]
pub struct DemoTokens {
    /// For setup: clinics, resources, treatments, programs, promo codes.
    pub admin: String,
    /// For everything staff do: patients' money, bookings and their lifecycle.
    pub staff: String,
    /// Printed in the curl commands, for the reader to paste.
    pub curl: String,
}

/// Loads the demo into the server at `url` and returns what to print: the
/// summary and curl commands with the `curl` token.
///
/// # Errors
/// See [`load`].
pub async fn run(
    url: &str,
    tokens: &DemoTokens,
    options: &DemoOptions,
) -> Result<String, DemoError> {
    let summary = load(url, &tokens.admin, &tokens.staff, options).await?;
    Ok(format!(
        "{summary}\n{}",
        curl_commands(&summary, &tokens.curl)
    ))
}

/// Checks that a clinicbook server answers at `url`.
///
/// # Errors
/// `Unreachable` when none does; `Client` when no HTTP client can be built.
pub async fn check_server(url: &str) -> Result<(), DemoError> {
    Api::new(url, "", "")?.probe().await
}

/// Loads the demo data set into the server at `url`, as `admin_token`
/// (setup) and `staff_token` (everything staff do), unless it is there
/// already.
///
/// # Errors
/// `Options` for options out of range; `Unreachable` when no server
/// answers; `Unauthorized` when it refuses the tokens; `Interrupted`,
/// `Refused`, `Transport`, `BadAnswer` when a step fails.
pub async fn load(
    url: &str,
    admin_token: &str,
    staff_token: &str,
    options: &DemoOptions,
) -> Result<DemoSummary, DemoError> {
    options.validate()?;
    let started = Instant::now();
    let api = Api::new(url, admin_token, staff_token)?;
    api.probe().await?;
    let now = Utc::now();
    let chain = Chain::new(options.seed);
    let mut summary = match chain_state(&api, &chain).await? {
        ChainState::Complete => {
            tracing::info!("the demo chain is loaded already; writing nothing");
            already_loaded(&api, &chain, options, now).await?
        }
        state => {
            if state == ChainState::Partial {
                tracing::warn!("an earlier demo load stopped half-way; resuming it");
            }
            fresh(&api, &chain, options, now).await?
        }
    };
    summary.messages = sample_messages(&api, &summary).await;
    (summary.requests, summary.rate_limited) = api.counts();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The message log of the sample reservation: where its patient's
/// messages went. A server that cannot answer it yet is no failure of the
/// load (the summary then shows none).
async fn sample_messages(
    api: &Api,
    summary: &DemoSummary,
) -> Vec<clinicbook_wire::messages::MessageView> {
    let Some(id) = summary.sample.reservation_id else {
        return Vec::new();
    };
    match api
        .get(As::Staff, &format!("/v1/reservations/{id}/messages"))
        .await
    {
        Ok(reply) => reply
            .parse::<clinicbook_wire::messages::MessageList>(StatusCode::OK)
            .map(|list| list.messages)
            .unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%error, "the sample reservation's messages could not be read");
            Vec::new()
        }
    }
}

/// How much of the chain the server has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChainState {
    Absent,
    Partial,
    Complete,
}

/// Looks the chain up: absent when its first clinic is unknown, complete
/// when a branch has the closure (the last step of a load).
async fn chain_state(api: &Api, chain: &Chain) -> Result<ChainState, DemoError> {
    let mut state = ChainState::Absent;
    for branch in &chain.branches {
        let reply = api
            .get(As::Admin, &format!("/v1/clinics/{}", branch.clinic_id))
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            continue;
        }
        let view: ClinicView = reply.parse(StatusCode::OK)?;
        if !view.closures.is_empty() {
            return Ok(ChainState::Complete);
        }
        state = ChainState::Partial;
    }
    Ok(state)
}

fn lock(planner: &Mutex<Planner>) -> MutexGuard<'_, Planner> {
    planner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads everything, step by step.
async fn fresh(
    api: &Api,
    chain: &Chain,
    options: &DemoOptions,
    now: DateTime<Utc>,
) -> Result<DemoSummary, DemoError> {
    let seed = options.seed;
    let mut rng = fastrand::Rng::with_seed(seed);
    tracing::info!(
        url = api.base(),
        "setting up the chain: 3 branches, treatments, programs, promo codes"
    );
    catalog::create(api, chain, seed, start_of_day(now)).await?;

    let patients = patients::plan(&mut rng, chain, seed, options.patients);
    tracing::info!(
        patients = patients.len(),
        "funding wallets and selling packages"
    );
    let funding = patients::fund(api, chain, &patients, seed, options.concurrency).await?;

    let dates = open_dates(tomorrow(now), options.days);
    let planner = Mutex::new(Planner::default());
    let count = options.patients * BOOKINGS_PER_PATIENT;
    let planned = bookings::plan(
        &mut rng,
        chain,
        &patients,
        &mut lock(&planner),
        &dates,
        count,
        seed,
    );
    tracing::info!(bookings = planned.len(), "booking");
    let booker = Booker {
        api,
        chain,
        patients: &patients,
        planner: &planner,
        dates: &dates,
        seed,
    };
    let made = booker.book_all(planned, options.concurrency).await?;

    let last_date = dates.last().copied().unwrap_or_else(|| tomorrow(now));
    let block_target = disruptions::block_target(chain, &made, last_date);
    let closure_target = disruptions::closure_target(&made, block_target, last_date);
    let frozen = Frozen {
        days: block_target
            .map(|b| (b.branch, b.date))
            .into_iter()
            .chain(closure_target.map(|c| (c.branch, c.date)))
            .collect(),
        last_date,
    };
    let actions = lifecycle::plan(&mut rng, chain, &made, &frozen, &mut lock(&planner), &dates);
    tracing::info!("checking in, completing, cancelling, moving");
    let outcomes = lifecycle::run(
        api,
        chain,
        &planner,
        &made,
        &actions,
        seed,
        options.concurrency,
    )
    .await?;

    tracing::info!("emergency block, waitlist, closure");
    let block = match block_target {
        Some(target) => disruptions::block(api, chain, target, seed).await?,
        None => None,
    };
    let entries = disruptions::waitlist_entries(
        chain,
        &patients,
        &mut rng,
        last_date,
        (options.patients / 20).max(3),
        seed,
    );
    let waitlisted = disruptions::join_waitlist(api, entries, seed, options.concurrency).await?;
    let offer_slot = offers::slot(chain, &mut lock(&planner), last_date);
    let offer = match offer_slot {
        Some(slot) => Some(offers::make(api, chain, slot, seed).await?),
        None => None,
    };
    let closure = match closure_target {
        Some(target) => disruptions::close(api, chain, target, seed).await?,
        None => None,
    };
    let holds = holds::place(api, chain, last_date, seed).await?;
    tracing::info!(holds = holds.len(), "holds placed for an hour");
    let loaded = Loaded {
        patients: &patients,
        funding,
        made: &made,
        outcomes: &outcomes,
        waitlisted,
        block,
        closure,
        offer,
    };
    Ok(loaded.summary(api, chain, options, &dates, now))
}

/// What a fresh load made, for its summary.
struct Loaded<'a> {
    patients: &'a [Patient],
    funding: Funding,
    made: &'a [Made],
    outcomes: &'a [Outcome],
    waitlisted: Vec<Uuid>,
    block: Option<BlockSummary>,
    closure: Option<ClosureSummary>,
    offer: Option<OfferSummary>,
}

impl Loaded<'_> {
    fn summary(
        self,
        api: &Api,
        chain: &Chain,
        options: &DemoOptions,
        dates: &[NaiveDate],
        now: DateTime<Utc>,
    ) -> DemoSummary {
        let reservations = self.by_status();
        let wallet_patient = self.wallet_patient();
        let reservation = [ReservationStatus::Completed, ReservationStatus::Booked]
            .into_iter()
            .find_map(|status| {
                let ids = reservations.get(<&str>::from(status))?;
                ids.first().copied()
            });
        let mut summary = base_summary(api, chain, options, self.patients, dates, now);
        summary.funded_wallets = self.funding.wallets;
        summary.deposited_cents = self.funding.deposited_cents;
        summary.packages_from_wallet = self.funding.packages_from_wallet;
        summary.packages_external = self.funding.packages_external;
        for made in self.made {
            *summary
                .bookings_by_payment
                .entry(made.booking.pay.as_str().to_string())
                .or_default() += 1;
        }
        summary.bookings_with_promo = self
            .made
            .iter()
            .filter(|m| m.booking.promo.is_some())
            .count();
        summary.booked_cents = self.made.iter().map(|m| m.total_cents).sum();
        summary.rescheduled = self
            .outcomes
            .iter()
            .filter(|o| o.rescheduled)
            .map(|o| o.id)
            .collect();
        summary.refunded_cents = self.outcomes.iter().map(|o| o.refund_cents).sum();
        summary.reservations = reservations;
        summary.sample.reservation_id = reservation;
        summary.sample.wallet_patient_id = wallet_patient.or(summary.sample.wallet_patient_id);
        summary.block = self.block;
        summary.closure = self.closure;
        summary.offer = self.offer;
        summary
    }

    /// Reservation ids by status: the lifecycle's outcome, unless the
    /// block or the closure displaced it; then the waitlist entries.
    fn by_status(&self) -> BTreeMap<String, Vec<Uuid>> {
        let displaced: HashSet<Uuid> = self
            .block
            .iter()
            .flat_map(|b| b.displaced.iter())
            .chain(self.closure.iter().flat_map(|c| c.displaced.iter()))
            .copied()
            .collect();
        let mut by_status: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
        for outcome in self.outcomes {
            let status = if displaced.contains(&outcome.id) {
                ReservationStatus::Displaced
            } else {
                outcome.status
            };
            by_status
                .entry(<&str>::from(status).to_owned())
                .or_default()
                .push(outcome.id);
        }
        if !self.waitlisted.is_empty() {
            by_status.insert(
                <&str>::from(ReservationStatus::Waitlisted).to_owned(),
                self.waitlisted.clone(),
            );
        }
        by_status
    }

    /// A patient whose wallet got a refund, else one who paid from it.
    fn wallet_patient(&self) -> Option<Uuid> {
        let refunded = self
            .made
            .iter()
            .zip(self.outcomes)
            .find(|(_, o)| o.refund_cents > 0)
            .map(|(m, _)| m);
        refunded
            .or_else(|| self.made.iter().find(|m| m.booking.pay == Pay::Wallet))
            .map(|m| self.patients[m.booking.patient].id)
    }
}

/// The summary of a chain that is there already.
async fn already_loaded(
    api: &Api,
    chain: &Chain,
    options: &DemoOptions,
    now: DateTime<Utc>,
) -> Result<DemoSummary, DemoError> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let patients = patients::plan(&mut rng, chain, options.seed, options.patients);
    let dates = open_dates(tomorrow(now), options.days);
    let mut summary = base_summary(api, chain, options, &patients, &dates, now);
    summary.already_loaded = true;
    summary.offer = offers::find(api, chain, options.seed).await?;
    for index in 0..20 {
        let id = ids::demo_id(options.seed, &format!("reservation/{index}"));
        let reply = api
            .get(As::Staff, &format!("/v1/reservations/{id}"))
            .await?;
        if reply.status == StatusCode::OK {
            summary.sample.reservation_id = Some(id);
            break;
        }
    }
    Ok(summary)
}

/// A summary with the chain, the patients and the curl samples, and no
/// counts yet.
fn base_summary(
    api: &Api,
    chain: &Chain,
    options: &DemoOptions,
    patients: &[Patient],
    dates: &[NaiveDate],
    now: DateTime<Utc>,
) -> DemoSummary {
    let first = dates.first().copied().unwrap_or_else(|| tomorrow(now));
    let last = dates.last().copied().unwrap_or(first);
    let named = |name: &str, id| NamedId {
        name: name.to_string(),
        id,
    };
    DemoSummary {
        already_loaded: false,
        url: api.base().to_string(),
        seed: options.seed,
        dates: (first, last),
        clinics: chain
            .branches
            .iter()
            .map(|b| named(b.name, b.clinic_id))
            .collect(),
        treatments: chain
            .treatments
            .iter()
            .map(|t| named(t.name, t.id))
            .collect(),
        programs: chain.programs.iter().map(|p| named(p.name, p.id)).collect(),
        promo_codes: chain.promos.iter().map(|p| p.code.to_string()).collect(),
        patient_ids: patients.iter().map(|p| p.id).collect(),
        funded_wallets: 0,
        deposited_cents: 0,
        packages_from_wallet: 0,
        packages_external: 0,
        bookings_by_payment: BTreeMap::new(),
        bookings_with_promo: 0,
        booked_cents: 0,
        reservations: BTreeMap::new(),
        rescheduled: Vec::new(),
        refunded_cents: 0,
        block: None,
        closure: None,
        offer: None,
        requests: 0,
        rate_limited: 0,
        elapsed: Duration::ZERO,
        sample: report::sample(chain, patients, first, options.days),
        messages: Vec::new(),
    }
}
