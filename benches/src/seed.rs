//! `seed`: writes a large, realistic history (about `--events` events)
//! through the event store's one write path (`EventStore::execute`, so
//! every event is hashed, chained and carries metadata), for timing the
//! auditor's `clinicbook verify` and `clinicbook replay --all --check`.
//!
//! Each client owns a clinic (registered with its lasers and a treatment),
//! a set of patients and its resources, so clients never conflict. It
//! loops over: topping up a patient's wallet with a run of deposits (one
//! command, many events: the domain allows any number of deposits in one
//! unit of work, and the longest wallets pass the snapshot interval), and
//! a day of one laser: every slot booked from the patients' wallets in one
//! unit of work (calendar, reservations, wallet debits), then the day
//! settled in another (most appointments checked in and completed, some
//! cancelled with a refund and the slot released, some no-shows).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use clinicbook_domain::calendar::{Calendar, CalendarCommand};
use clinicbook_domain::clinic::{Clinic, ClinicCommand, ResourceKind};
use clinicbook_domain::policy::CancellationPolicy;
use clinicbook_domain::reservation::{Reservation, ReservationCommand, ReservationEvent, Slot};
use clinicbook_domain::schedule::Interval;
use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{
    CalendarId, ClinicId, Money, PatientId, ReservationId, ResourceId, TreatmentId,
};
use clinicbook_eventstore::{
    CommandMetadata, EventStore, StoreConfig, UnitOfWork, UowError, UseCase,
};

use crate::report;
use crate::store::WalletBooking;

/// Options of `clinicbook-benches seed`.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// About how many events to write (a command's events are never split,
    /// so a few more may be written).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// PostgreSQL URL of a migrated (or empty) database; without it a
    /// throwaway cluster is started (and removed when the seeder exits).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Connection pool size.
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Patients per client.
const PATIENTS: usize = 200;
/// Lasers per client's clinic.
const LASERS: usize = 4;
/// Appointments per laser day: 30 minutes each from 08:00 UTC.
const SLOTS_PER_DAY: usize = 16;
/// The price of the treatment.
const PRICE: Money = Money(9_000);

fn first_day() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 3, 3, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A clinic with its lasers and a treatment, in one unit of work.
struct OpenClinic {
    clinic: ClinicId,
    lasers: Vec<ResourceId>,
    treatment: TreatmentId,
    name: String,
}

impl UseCase for OpenClinic {
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        let id = self.clinic.to_string();
        uow.handle::<Clinic>(
            &id,
            ClinicCommand::Register {
                clinic_id: self.clinic,
                name: self.name.clone(),
                timezone: "Europe/Berlin".to_string(),
                currency: "EUR".to_string(),
                cancellation_notice_hours: 24,
                late_cancel_fee_percent: 50,
            },
        )
        .await?;
        for (i, laser) in self.lasers.iter().enumerate() {
            uow.handle::<Clinic>(
                &id,
                ClinicCommand::AddResource {
                    resource_id: *laser,
                    name: format!("Laser {}", i + 1),
                    kind: ResourceKind::Device,
                },
            )
            .await?;
        }
        uow.handle::<Clinic>(
            &id,
            ClinicCommand::AddTreatment {
                treatment_id: self.treatment,
                name: "Laser hair removal".to_string(),
                duration_minutes: 25,
                buffer_minutes: 5,
                price: PRICE,
                resource_kind: ResourceKind::Device,
            },
        )
        .await?;
        Ok(())
    }
}

/// The `n`th deposit of a patient: 50.00 to 80.00.
fn deposit_amount(n: u64) -> Money {
    Money(5_000 + i64::try_from(n % 7).unwrap_or(0) * 500)
}

/// What deposits `from..from + count` add up to.
fn deposits_total(from: u64, count: u64) -> i64 {
    (from..from + count)
        .map(|n| deposit_amount(n).cents())
        .sum()
}

/// A run of deposits into one wallet, in one unit of work.
struct TopUp {
    patient: PatientId,
    /// Reference numbers `from..from + count`.
    from: u64,
    count: u64,
}

impl UseCase for TopUp {
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        let id = self.patient.to_string();
        for n in self.from..self.from + self.count {
            uow.handle::<Wallet>(
                &id,
                WalletCommand::Deposit {
                    amount: deposit_amount(n),
                    reference: format!("bank:{}:{n}", self.patient),
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// Every slot of one laser's day, booked from the wallets of `patients`.
struct BookDay {
    clinic: ClinicId,
    treatment: TreatmentId,
    calendar: CalendarId,
    day: DateTime<Utc>,
    bookings: Vec<(ReservationId, PatientId)>,
}

impl BookDay {
    fn slot(&self, i: usize) -> Slot {
        let start = self.day
            + chrono::Duration::hours(8)
            + chrono::Duration::minutes(30 * i64::try_from(i).unwrap_or(0));
        Slot {
            resource_id: self.calendar.resource_id,
            start,
            end: start + chrono::Duration::minutes(25),
        }
    }

    /// When the staff act: the morning before the day.
    fn now(&self) -> DateTime<Utc> {
        self.day - chrono::Duration::hours(20)
    }
}

impl UseCase for BookDay {
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        let opening = vec![Interval {
            start: self.day + chrono::Duration::hours(8),
            end: self.day + chrono::Duration::hours(18),
        }];
        for (i, (reservation, patient)) in self.bookings.iter().enumerate() {
            WalletBooking {
                calendar: self.calendar,
                reservation: *reservation,
                patient: *patient,
                clinic: self.clinic,
                treatment: self.treatment,
                slot: self.slot(i),
                price: PRICE,
                opening: opening.clone(),
                now: self.now(),
            }
            .write(uow)
            .await?;
        }
        Ok(())
    }
}

/// What happens to one appointment of a settled day.
#[derive(Clone, Copy)]
enum Outcome {
    Completed,
    Cancelled,
    NoShow,
}

/// A booked day settled: every appointment completed, cancelled or missed.
struct SettleDay {
    day: BookDay,
    outcomes: Vec<Outcome>,
}

impl UseCase for SettleDay {
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        let calendar = self.day.calendar.to_string();
        for (i, ((reservation, patient), outcome)) in
            self.day.bookings.iter().zip(&self.outcomes).enumerate()
        {
            let id = reservation.to_string();
            let start = self.day.slot(i).start;
            match outcome {
                Outcome::Completed => {
                    uow.handle::<Reservation>(&id, ReservationCommand::CheckIn { now: start })
                        .await?;
                    let end = start + chrono::Duration::minutes(25);
                    uow.handle::<Reservation>(&id, ReservationCommand::Complete { now: end })
                        .await?;
                }
                Outcome::NoShow => {
                    let now = start + chrono::Duration::minutes(15);
                    uow.handle::<Reservation>(&id, ReservationCommand::MarkNoShow { now })
                        .await?;
                }
                Outcome::Cancelled => {
                    let events = uow
                        .handle::<Reservation>(
                            &id,
                            ReservationCommand::Cancel {
                                reason: "patient called".to_string(),
                                policy: CancellationPolicy::default(),
                                now: self.day.now() - chrono::Duration::days(2),
                            },
                        )
                        .await?;
                    uow.handle::<Calendar>(
                        &calendar,
                        CalendarCommand::Release {
                            reservation_id: *reservation,
                        },
                    )
                    .await?;
                    let refund = events.iter().find_map(|e| match e {
                        ReservationEvent::ReservationCancelled { outcome, .. } => {
                            Some(outcome.refund)
                        }
                        _ => None,
                    });
                    if let Some(refund) = refund.filter(|r| *r > Money::ZERO) {
                        uow.handle::<Wallet>(
                            &patient.to_string(),
                            WalletCommand::Credit {
                                amount: refund,
                                reference: format!("refund:reservation:{reservation}"),
                            },
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs `use_case` as one command; returns the events it wrote.
async fn execute<U: UseCase>(store: &EventStore, name: &str, use_case: &U) -> anyhow::Result<u64> {
    let committed = store
        .execute(&CommandMetadata::system(name), None, use_case)
        .await
        .with_context(|| format!("seed command {name}"))?;
    Ok(committed.events_written as u64)
}

/// A client's patients and what their wallets hold, so that bookings are
/// only made from funded ones.
struct Wallets {
    patients: Vec<PatientId>,
    /// The next deposit reference number of each patient.
    references: Vec<u64>,
    /// Each wallet's balance in cents.
    balances: Vec<i64>,
}

impl Wallets {
    /// `PATIENTS` new patients with empty wallets.
    fn new() -> Self {
        Self {
            patients: (0..PATIENTS).map(|_| PatientId::new()).collect(),
            references: vec![0; PATIENTS],
            balances: vec![0; PATIENTS],
        }
    }

    /// Tops up patient `p`'s wallet with the next `count` deposits, in one
    /// command; answers the events written.
    async fn top_up(&mut self, store: &EventStore, p: usize, count: u64) -> anyhow::Result<u64> {
        let written = execute(
            store,
            "seed_deposit",
            &TopUp {
                patient: self.patients[p],
                from: self.references[p],
                count,
            },
        )
        .await?;
        self.balances[p] += deposits_total(self.references[p], count);
        self.references[p] += count;
        Ok(written)
    }
}

/// One client: its own clinic, patients and lasers; writes until `share`
/// events are written.
async fn client(
    store: EventStore,
    index: usize,
    share: u64,
    seed: u64,
    written: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(index as u64));
    let clinic = ClinicId::new();
    let lasers: Vec<ResourceId> = (0..LASERS).map(|_| ResourceId::new()).collect();
    let treatment = TreatmentId::new();
    let mut mine = execute(
        &store,
        "seed_open_clinic",
        &OpenClinic {
            clinic,
            lasers: lasers.clone(),
            treatment,
            name: format!("Seed clinic {index}"),
        },
    )
    .await?;
    let mut wallets = Wallets::new();
    for p in 0..PATIENTS {
        mine += wallets.top_up(&store, p, 8).await?;
    }
    let mut day_index = 0i64;
    let mut round = 0u64;
    while mine < share {
        round += 1;
        if round % 3 == 0 {
            // A wallet topped up with a run of deposits; a few get long.
            let p = rng.usize(..PATIENTS);
            let count = if rng.u8(..10) == 0 {
                rng.u64(100..250)
            } else {
                rng.u64(5..40)
            };
            mine += wallets.top_up(&store, p, count).await?;
        } else {
            let laser = lasers[usize::try_from(day_index).unwrap_or(0) % LASERS];
            let day = first_day() + chrono::Duration::days(day_index / LASERS as i64);
            day_index += 1;
            let mut bookings = Vec::with_capacity(SLOTS_PER_DAY);
            let mut booked_by = Vec::with_capacity(SLOTS_PER_DAY);
            for _ in 0..SLOTS_PER_DAY {
                let p = rng.usize(..PATIENTS);
                if wallets.balances[p] < PRICE.cents() {
                    mine += wallets.top_up(&store, p, 20).await?;
                }
                wallets.balances[p] -= PRICE.cents();
                bookings.push((ReservationId::new(), wallets.patients[p]));
                booked_by.push(p);
            }
            let booked = BookDay {
                clinic,
                treatment,
                calendar: CalendarId {
                    resource_id: laser,
                    date: day.date_naive(),
                },
                day,
                bookings,
            };
            mine += execute(&store, "seed_book_day", &booked).await?;
            let outcomes: Vec<Outcome> = (0..SLOTS_PER_DAY)
                .map(|_| match rng.u8(..20) {
                    0..=1 => Outcome::Cancelled,
                    2 => Outcome::NoShow,
                    _ => Outcome::Completed,
                })
                .collect();
            // Cancelled in good time: the whole payment goes back.
            for (p, outcome) in booked_by.iter().zip(&outcomes) {
                if matches!(outcome, Outcome::Cancelled) {
                    wallets.balances[*p] += PRICE.cents();
                }
            }
            mine += execute(
                &store,
                "seed_settle_day",
                &SettleDay {
                    day: booked,
                    outcomes,
                },
            )
            .await?;
        }
        written.store(mine, Ordering::Relaxed);
    }
    written.store(mine, Ordering::Relaxed);
    Ok(())
}

/// Seeds the database and prints what it wrote as JSON.
///
/// # Errors
/// The database cannot be started, reached or migrated, or a command fails.
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let (pool, throwaway) = crate::store::connect(args.database_url.as_deref(), args.pool).await?;
    clinicbook_eventstore::migrate(&pool).await?;
    let seeded = seed(&pool, args.events, args.clients, args.seed).await?;
    let (events, last_position) = clinicbook_eventstore::audit::totals(&pool).await?;
    let streams: Vec<(String, i64)> = clinicbook_eventstore::audit::stream_counts(&pool).await?;
    let report = serde_json::json!({
        "bench": "seed",
        "clients": args.clients.max(1),
        "seconds": seeded.seconds,
        "events_in_store": events,
        "last_position": last_position,
        "events_per_second": report::per_second(seeded.written, seeded.seconds),
        "first_tenth_events_per_second": seeded.first_tenth_rate(),
        "last_tenth_events_per_second": seeded.last_tenth_rate(),
        "streams_by_type": streams.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(db) = throwaway {
        eprintln!("the throwaway database {} is removed on exit", db.name);
    }
    Ok(())
}

/// What [`seed`] wrote, and how fast along the way.
pub(crate) struct Seeded {
    /// Wall time.
    pub(crate) seconds: f64,
    /// Events written.
    pub(crate) written: u64,
    /// Events written so far, sampled every [`PROGRESS_EVERY`]: (seconds
    /// since the start, events).
    pub(crate) progress: Vec<(f64, u64)>,
}

/// How often the seeder samples its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl Seeded {
    /// Events per second while the first tenth of the events was written.
    pub(crate) fn first_tenth_rate(&self) -> f64 {
        self.rate_between(0, self.written / 10)
    }

    /// Events per second while the last tenth of the events was written.
    pub(crate) fn last_tenth_rate(&self) -> f64 {
        self.rate_between(self.written - self.written / 10, self.written)
    }

    /// The rate between the samples around `from` and `to` events.
    fn rate_between(&self, from: u64, to: u64) -> f64 {
        let mut samples = vec![(0.0, 0)];
        samples.extend(self.progress.iter().copied());
        samples.push((self.seconds, self.written));
        let start = samples
            .iter()
            .rev()
            .find(|(_, n)| *n <= from)
            .copied()
            .unwrap_or((0.0, 0));
        let end = samples
            .iter()
            .find(|(_, n)| *n >= to)
            .copied()
            .unwrap_or((self.seconds, self.written));
        report::per_second(end.1.saturating_sub(start.1), end.0 - start.0)
    }
}

/// Writes about `events` events into the migrated database of `pool` from
/// `clients` concurrent clients.
///
/// # Errors
/// A command fails.
pub(crate) async fn seed(
    pool: &sqlx::PgPool,
    events: u64,
    clients: usize,
    seed: u64,
) -> anyhow::Result<Seeded> {
    let store = EventStore::new(pool.clone(), StoreConfig::default());
    let clients = clients.max(1);
    let share = events.div_ceil(clients as u64);
    let counters: Vec<Arc<AtomicU64>> = (0..clients).map(|_| Arc::default()).collect();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for (index, written) in counters.iter().enumerate() {
        tasks.push(tokio::spawn(
            client(store.clone(), index, share, seed, written.clone())
                .instrument(tracing::info_span!("seed_client", index)),
        ));
    }
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = {
        let counters = counters.clone();
        let samples = samples.clone();
        let target = share * clients as u64;
        tokio::spawn(
            async move {
                let mut last_print = Instant::now();
                loop {
                    tokio::time::sleep(PROGRESS_EVERY).await;
                    let done: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                    let seconds = started.elapsed().as_secs_f64();
                    samples
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((seconds, done));
                    if last_print.elapsed() >= Duration::from_secs(10) {
                        last_print = Instant::now();
                        eprintln!(
                            "{done} / {target} events, {:.0} events/s",
                            report::per_second(done, seconds)
                        );
                    }
                }
            }
            .instrument(tracing::info_span!("seed_progress")),
        )
    };
    let mut failed = None;
    for task in tasks {
        if let Err(e) = task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            failed.get_or_insert(e);
        }
    }
    progress.abort();
    if let Some(e) = failed {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let written = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    let progress = std::mem::take(
        &mut *samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(Seeded {
        seconds,
        written,
        progress,
    })
}
