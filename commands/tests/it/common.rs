//! Shared test setup: use cases over a fresh database, a controllable
//! clock, and a ready-made clinic.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use clinicbook_commands::{Clock, Commands, Ctx};
use clinicbook_domain::clinic::{Clinic, ClinicCommand, ResourceKind};
use clinicbook_domain::schedule::{OpeningHours, TimeRange};
use clinicbook_domain::{ClinicId, DomainError, Money, ResourceId, TreatmentId};
use clinicbook_eventstore::{
    Actor, CommandMetadata, EventStore, StoreConfig, StoredAggregate, UnitOfWork, UowError,
    UseCase, MIGRATOR,
};
use clinicbook_projections::models::{catalog, holds, reservations};
use clinicbook_projections::{Projection, ProjectionError, ReadModels};
use clinicbook_testkit::{services, TestDatabase};
use clinicbook_wire::admin::{ClinicView, ProgramView};
use clinicbook_wire::booking::ReservationView;
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
    pub fn advance(&self, d: Duration) {
        let t = self.now() + d;
        self.set(t);
    }
    pub fn clock(&self) -> Clock {
        let me = self.clone();
        Clock::from_fn(move || me.now())
    }
}

/// Monday 2030-01-07 08:00 UTC (09:00 in Berlin).
pub fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 7, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Use cases over a fresh database with a clock set to [`monday`].
pub async fn commands() -> (Commands, TestClock, TestDatabase) {
    let db = services().await.database(&MIGRATOR).await;
    let clock = TestClock::at(monday());
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    (Commands::new(store, clock.clock()), clock, db)
}

/// A context for `role` with subject `alice`.
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

/// A clinic in Europe/Berlin, open Monday to Saturday 09:00-18:00 local,
/// 24 h notice and a 50 % late fee, with a room, a laser and a
/// practitioner, and two treatments.
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

/// Raw domain commands on one aggregate, bypassing the use cases under
/// test, so each slice's tests can set up what they need on their own.
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

/// Runs raw `commands` on the aggregate `id` of type `A` as one unit of
/// work, and panics if that fails.
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

fn hours(from: (u32, u32), to: (u32, u32)) -> Vec<TimeRange> {
    let t = |(h, m): (u32, u32)| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default();
    vec![TimeRange {
        from: t(from),
        to: t(to),
    }]
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
    let open = hours((9, 0), (18, 0));
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

/// Asserts that `result` failed with the domain error `code`.
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, clinicbook_commands::CommandError>,
    code: &str,
) {
    match result {
        Err(clinicbook_commands::CommandError::Domain(e)) => {
            assert_eq!(e.code(), code, "{e}")
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// Shorthand used in assertions.
pub fn not_found(e: &DomainError) -> bool {
    e.code() == "not_found"
}

/// The read models over the commands' database, once `projection` has
/// applied every event committed so far (the `min_position` a client
/// sends after its write). The feed shows an event only below the horizon
/// of running transactions (of the whole cluster, which other tests
/// share), so this polls.
pub async fn caught_up(commands: &Commands, projection: &Projection) -> ReadModels {
    let pool = commands.store().pool();
    let read = ReadModels::new(pool.clone());
    read.ensure(projection)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let last: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        read.catch_up(projection, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let waited = read
            .wait_for(projection.name, last, std::time::Duration::from_millis(20))
            .await;
        match waited {
            Err(ProjectionError::Lagging { .. }) if std::time::Instant::now() < deadline => {}
            other => break other.unwrap_or_else(|e| panic!("{e}")),
        }
    }
    read
}

/// A reservation as `GET /v1/reservations/{id}` answers it after the
/// writes so far.
pub async fn read_reservation(
    commands: &Commands,
    reservation_id: Uuid,
) -> Result<ReservationView, ProjectionError> {
    // A waitlisted reservation's open offer comes from the holds projection.
    caught_up(commands, &holds::PROJECTION).await;
    caught_up(commands, &reservations::PROJECTION)
        .await
        .reservation(reservation_id)
        .await
}

/// A clinic as `GET /v1/clinics/{id}` answers it after the writes so far.
pub async fn read_clinic(
    commands: &Commands,
    clinic_id: Uuid,
) -> Result<ClinicView, ProjectionError> {
    caught_up(commands, &catalog::PROJECTION)
        .await
        .clinic(clinic_id)
        .await
}

/// A program as `GET /v1/programs/{id}` answers it after the writes so far.
pub async fn read_program(
    commands: &Commands,
    program_id: Uuid,
) -> Result<ProgramView, ProjectionError> {
    caught_up(commands, &catalog::PROJECTION)
        .await
        .program(program_id)
        .await
}
