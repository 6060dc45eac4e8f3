//! Shared set-up: use cases over a fresh database with a controllable
//! clock, the fixture clinic, and catching every projection up.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use clinicbook_commands::booking::{BookTreatment, Booked, PaymentInput};
use clinicbook_commands::{Clock, Commands, Ctx};
use clinicbook_domain::clinic::{Clinic, ClinicCommand, ResourceKind};
use clinicbook_domain::schedule::{OpeningHours, TimeRange};
use clinicbook_domain::{ClinicId, Money, ResourceId, TreatmentId};
use clinicbook_eventstore::{
    Actor, CommandMetadata, EventStore, StoreConfig, StoredAggregate, UnitOfWork, UowError,
    UseCase, MIGRATOR,
};
use clinicbook_projections::{projections, ReadModels};
use clinicbook_testkit::{services, TestDatabase};
use uuid::Uuid;

/// A clock tests can move.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn at(t: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(t)))
    }
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
    pub fn clock(&self) -> Clock {
        let me = self.clone();
        Clock::from_fn(move || me.now())
    }
}

/// Monday 2030-01-07 08:00 UTC (09:00 in Berlin).
pub fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 7, 8, 0, 0).unwrap()
}

/// A Berlin wall-clock time as UTC.
pub fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

pub fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

pub fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Use cases over a fresh database with a clock set to [`monday`], and
/// the read models over the same database (every projection ensured).
pub struct World {
    pub commands: Commands,
    pub clock: TestClock,
    pub read: ReadModels,
    pub db: TestDatabase,
}

pub async fn world() -> World {
    let db = services().await.database(&MIGRATOR).await;
    let clock = TestClock::at(monday());
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let read = ReadModels::new(db.pool.clone());
    for projection in projections() {
        read.ensure(projection).await.unwrap();
    }
    World {
        commands: Commands::new(store, clock.clock()),
        clock,
        read,
        db,
    }
}

impl World {
    /// Applies everything in the event store to every projection. The
    /// feed only shows events below the horizon of running transactions
    /// (of the whole cluster, which other tests share), so this polls
    /// until every projection has the newest event.
    pub async fn catch_up(&self) {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for projection in projections() {
            loop {
                self.read.catch_up(projection, 100).await.unwrap();
                let Some(last) = last else { break };
                let reached = self
                    .read
                    .wait_for(projection.name, last, std::time::Duration::from_millis(20))
                    .await;
                if reached.is_ok() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} did not reach position {last}",
                    projection.name
                );
            }
        }
    }
}

/// A context for `role`.
pub fn ctx(role: &str) -> Ctx {
    Ctx::new(CommandMetadata::new(
        Actor {
            subject: "alice".to_string(),
            role: role.to_string(),
        },
        "test",
        "req-test",
    ))
}

pub fn staff() -> Ctx {
    ctx("staff")
}

/// The fixture clinic: Europe/Berlin, open Monday to Saturday 09:00-18:00
/// local, 24 h notice and a 50 % late fee, with a room, two lasers and a
/// practitioner, and two treatments.
#[derive(Clone, Copy, Debug)]
pub struct Fixture {
    pub clinic_id: ClinicId,
    pub room: ResourceId,
    pub laser: ResourceId,
    pub laser_b: ResourceId,
    pub doctor: ResourceId,
    /// 45 min + 15 min buffer on a device, 120.00.
    pub laser_treatment: TreatmentId,
    /// 30 min, no buffer, on a practitioner, 50.00.
    pub consultation: TreatmentId,
}

/// Raw domain commands on one aggregate, as one unit of work.
pub struct Raw<A: StoredAggregate> {
    pub id: String,
    pub commands: Vec<A::Command>,
}

impl<A: StoredAggregate> UseCase for Raw<A>
where
    A::Command: Clone + Send + Sync,
{
    type Output = ();

    async fn run(&self, uow: &mut UnitOfWork) -> Result<(), UowError> {
        for command in &self.commands {
            uow.handle::<A>(&self.id, command.clone()).await?;
        }
        Ok(())
    }
}

/// Runs raw `commands` on the aggregate `id` of type `A`; panics if that fails.
pub async fn raw<A: StoredAggregate>(commands: &Commands, id: impl ToString, raw: Vec<A::Command>)
where
    A::Command: Clone + Send + Sync,
{
    let use_case = Raw::<A> {
        id: id.to_string(),
        commands: raw,
    };
    if let Err(e) = commands.run(&ctx("admin"), &use_case).await {
        panic!("set-up of {}: {e}", A::TYPE);
    }
}

pub fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

/// Registers the fixture clinic.
pub async fn clinic(commands: &Commands) -> Fixture {
    let f = Fixture {
        clinic_id: ClinicId::new(),
        room: ResourceId::new(),
        laser: ResourceId::new(),
        laser_b: ResourceId::new(),
        doctor: ResourceId::new(),
        laser_treatment: TreatmentId::new(),
        consultation: TreatmentId::new(),
    };
    let open = vec![TimeRange {
        from: hm(9, 0),
        to: hm(18, 0),
    }];
    let days = [
        open.clone(),
        open.clone(),
        open.clone(),
        open.clone(),
        open.clone(),
        open,
        Vec::new(),
    ];
    let resource = |resource_id, name: &str, kind| ClinicCommand::AddResource {
        resource_id,
        name: name.to_string(),
        kind,
    };
    let setup = vec![
        ClinicCommand::Register {
            clinic_id: f.clinic_id,
            name: "Berlin Mitte".to_string(),
            timezone: "Europe/Berlin".to_string(),
            currency: "EUR".to_string(),
            cancellation_notice_hours: 24,
            late_cancel_fee_percent: 50,
        },
        ClinicCommand::SetOpeningHours {
            hours: OpeningHours { days },
        },
        resource(f.room, "Room 1", ResourceKind::Room),
        resource(f.laser, "Laser A", ResourceKind::Device),
        resource(f.laser_b, "Laser B", ResourceKind::Device),
        resource(f.doctor, "Dr. Weber", ResourceKind::Practitioner),
        ClinicCommand::AddTreatment {
            treatment_id: f.laser_treatment,
            name: "Laser hair removal".to_string(),
            duration_minutes: 45,
            buffer_minutes: 15,
            price: Money(12_000),
            resource_kind: ResourceKind::Device,
        },
        ClinicCommand::AddTreatment {
            treatment_id: f.consultation,
            name: "Consultation".to_string(),
            duration_minutes: 30,
            buffer_minutes: 0,
            price: Money(5_000),
            resource_kind: ResourceKind::Practitioner,
        },
    ];
    raw::<Clinic>(commands, f.clinic_id, setup).await;
    f
}

/// Books through the use case; panics when refused.
#[allow(clippy::too_many_arguments)]
pub async fn book(
    commands: &Commands,
    patient: Uuid,
    clinic: ClinicId,
    resource: ResourceId,
    treatment: TreatmentId,
    start: DateTime<Utc>,
    payment: PaymentInput,
    promo: Option<&str>,
) -> Booked {
    let input = BookTreatment {
        reservation_id: None,
        patient_id: patient,
        clinic_id: clinic.0,
        resource_id: resource.0,
        treatment_id: treatment.0,
        start,
        payment,
        promo_code: promo.map(str::to_string),
    };
    match commands.book(&staff(), input).await {
        Ok(done) => done.output,
        Err(e) => panic!("booking refused: {e}"),
    }
}

pub fn minutes(n: i64) -> Duration {
    Duration::minutes(n)
}
