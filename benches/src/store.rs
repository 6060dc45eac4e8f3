//! `store`: booking-shaped units of work (a `Calendar` slot, a
//! `Reservation` and a `Wallet` debit in one transaction) straight against
//! the event store from N concurrent clients, without HTTP in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use clinicbook_domain::calendar::{Calendar, CalendarCommand};
use clinicbook_domain::pricing::PriceBreakdown;
use clinicbook_domain::reservation::{PaymentMethod, Reservation, ReservationCommand, Slot};
use clinicbook_domain::schedule::Interval;
use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{
    CalendarId, ClinicId, DomainError, Money, PatientId, ReservationId, ResourceId, TreatmentId,
};
use clinicbook_eventstore::{
    CommandMetadata, EventStore, ExecuteError, StoreConfig, UnitOfWork, UowError, UseCase,
};

use clinicbook_testkit::TestDatabase;
use sqlx::PgPool;

use crate::report::{self, Latency};
use crate::Mode;

/// Options of `clinicbook-benches store`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// PostgreSQL URL of a migrated (or empty) database; without it a
    /// throwaway cluster is started.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Length of the measured run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connection pool size.
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// What the clients book.
    #[arg(long, value_enum, default_value_t = Mode::Distinct)]
    mode: Mode,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Slots per calendar day: 20 half-hour appointments from 08:00 UTC.
const SLOTS_PER_DAY: u64 = 20;

fn base_day() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A booking paid from the patient's wallet: the calendar slot, the
/// reservation and the wallet debit. As a use case it is one unit of work
/// (the store benchmark's); the seed writes a day of them in one.
pub(crate) struct WalletBooking {
    pub(crate) calendar: CalendarId,
    pub(crate) reservation: ReservationId,
    pub(crate) patient: PatientId,
    pub(crate) clinic: ClinicId,
    pub(crate) treatment: TreatmentId,
    /// On the calendar's resource, with a 5-minute buffer after it.
    pub(crate) slot: Slot,
    pub(crate) price: Money,
    /// The day's opening hours, which the slot must lie in.
    pub(crate) opening: Vec<Interval>,
    /// When the staff book it.
    pub(crate) now: DateTime<Utc>,
}

impl WalletBooking {
    /// Slot `n` of `resource`'s days (20 half-hour appointments from 08:00
    /// UTC), paid from `patient`'s wallet.
    fn nth(resource: ResourceId, patient: PatientId, n: u64) -> Self {
        let day_index = i64::try_from(n / SLOTS_PER_DAY).unwrap_or(0);
        let day = base_day() + chrono::Duration::days(day_index);
        let slot_index = i64::try_from(n % SLOTS_PER_DAY).unwrap_or(0);
        let start = day + chrono::Duration::hours(8) + chrono::Duration::minutes(30 * slot_index);
        Self {
            calendar: CalendarId {
                resource_id: resource,
                date: day.date_naive(),
            },
            reservation: ReservationId::new(),
            patient,
            clinic: ClinicId(uuid::Uuid::nil()),
            treatment: TreatmentId(uuid::Uuid::nil()),
            slot: Slot {
                resource_id: resource,
                start,
                end: start + chrono::Duration::minutes(25),
            },
            price: Money(8_000),
            opening: vec![Interval {
                start: day + chrono::Duration::hours(8),
                end: day + chrono::Duration::hours(18),
            }],
            now: base_day(),
        }
    }

    /// Issues the three commands in `uow`.
    ///
    /// # Errors
    /// The slot is taken, the wallet cannot pay, or the store fails.
    pub(crate) async fn write(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        uow.handle::<Calendar>(
            &self.calendar.to_string(),
            CalendarCommand::Reserve {
                calendar_id: self.calendar,
                reservation_id: self.reservation,
                start: self.slot.start,
                end: self.slot.end,
                buffer_minutes: 5,
                opening: self.opening.clone(),
                now: self.now,
            },
        )
        .await?;
        uow.handle::<Reservation>(
            &self.reservation.to_string(),
            ReservationCommand::Book {
                reservation_id: self.reservation,
                patient_id: self.patient,
                clinic_id: self.clinic,
                treatment_id: self.treatment,
                slot: self.slot,
                price: PriceBreakdown {
                    base: self.price,
                    adjustments: Money::ZERO,
                    discount: Money::ZERO,
                    total: self.price,
                },
                payment: PaymentMethod::Wallet,
                promo_code: None,
                now: self.now,
            },
        )
        .await?;
        uow.handle::<Wallet>(
            &self.patient.to_string(),
            WalletCommand::Debit {
                amount: self.price,
                reference: format!("reservation:{}", self.reservation),
            },
        )
        .await?;
        Ok(())
    }
}

impl UseCase for WalletBooking {
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        self.write(uow).await
    }
}

/// A wallet deposit, to fund the clients' patients before the run.
struct Fund(PatientId);

impl UseCase for Fund {
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        uow.handle::<Wallet>(
            &self.0.to_string(),
            WalletCommand::Deposit {
                amount: Money(i64::MAX / 4),
                reference: format!("fund:{}", self.0),
            },
        )
        .await?;
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    booked: AtomicU64,
    refused: AtomicU64,
    conflicts: AtomicU64,
    retries: AtomicU64,
}

/// A pool of `size` connections to `database_url`, or to a throwaway
/// database on a PostgreSQL the harness starts (kept while the answered
/// guard lives, removed when the process exits), not yet migrated.
///
/// # Errors
/// PostgreSQL cannot be started or reached.
pub(crate) async fn connect(
    database_url: Option<&str>,
    size: u32,
) -> anyhow::Result<(PgPool, Option<TestDatabase>)> {
    match database_url {
        Some(url) => Ok((clinicbook_eventstore::connect(url, size).await?, None)),
        None => {
            let db = clinicbook_testkit::services()
                .await
                .try_database(&clinicbook_eventstore::MIGRATOR)
                .await
                .context("starting a throwaway PostgreSQL")?;
            eprintln!("using a throwaway PostgreSQL database {}", db.name);
            let pool = clinicbook_eventstore::connect(&db.url, size).await?;
            Ok((pool, Some(db)))
        }
    }
}

/// Runs the store benchmark and prints its figures as JSON.
///
/// # Errors
/// The database cannot be started, reached or migrated, the clients cannot
/// be funded, a booking fails with anything but a refused slot or a
/// conflict, or the `--json` file cannot be written.
pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let (pool, _throwaway) = connect(args.database_url.as_deref(), args.pool).await?;
    clinicbook_eventstore::migrate(&pool).await?;
    let store = EventStore::new(pool, StoreConfig::default());
    let clients = args.clients.max(1);
    let hot_resource = ResourceId::new();
    let mut patients = Vec::with_capacity(clients);
    for _ in 0..clients {
        let patient = PatientId::new();
        store
            .execute(&CommandMetadata::system("bench_fund"), None, &Fund(patient))
            .await?;
        patients.push(patient);
    }

    let counters = Arc::new(Counters::default());
    let next_hot = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for patient in patients {
        let (store, counters, next_hot) = (store.clone(), counters.clone(), next_hot.clone());
        let mode = args.mode;
        tasks.push(tokio::spawn(
            async move {
                let own_resource = ResourceId::new();
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let book = match mode {
                        Mode::Distinct => WalletBooking::nth(own_resource, patient, n),
                        Mode::Hot => WalletBooking::nth(
                            hot_resource,
                            patient,
                            next_hot.fetch_add(1, Ordering::Relaxed) / clients as u64,
                        ),
                    };
                    n += 1;
                    let t = Instant::now();
                    let result = store
                        .execute(&CommandMetadata::system("bench_book"), None, &book)
                        .await;
                    latencies.push(t.elapsed());
                    match result {
                        Ok(c) => {
                            counters.booked.fetch_add(1, Ordering::Relaxed);
                            counters
                                .retries
                                .fetch_add(u64::from(c.attempts - 1), Ordering::Relaxed);
                        }
                        Err(ExecuteError::Domain(DomainError::SlotUnavailable)) => {
                            counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ExecuteError::Conflict { .. }) => {
                            counters.conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(latencies)
            }
            .instrument(tracing::info_span!("store_client")),
        ));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let latency = Latency::of(&mut latencies);
    let commands = latencies.len() as u64;
    let booked = counters.booked.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "bench": "store",
        "mode": args.mode.name(),
        "clients": clients,
        "pool": args.pool,
        "seconds": elapsed,
        "commands": commands,
        "commands_per_second": report::per_second(commands, elapsed),
        "booked": booked,
        "bookings_per_second": report::per_second(booked, elapsed),
        "refused_slot_unavailable": counters.refused.load(Ordering::Relaxed),
        "conflicts_after_retries": counters.conflicts.load(Ordering::Relaxed),
        "retries": counters.retries.load(Ordering::Relaxed),
        "latency_ms": latency,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = args.json {
        report::write_json(&path, &report)?;
    }
    Ok(())
}
