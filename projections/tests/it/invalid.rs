//! No silent defaults: a stored event or a read-model row the read side
//! cannot read (an unknown timezone, an unknown kind) is an error, never
//! a guess; and tables built by another version's DDL are rebuilt.

use chrono::Utc;
use clinicbook_domain::clinic::ClinicEvent;
use clinicbook_domain::policy::CancellationPolicy;
use clinicbook_domain::ClinicId;
use clinicbook_eventstore::FeedEvent;
use clinicbook_projections::checkpoint::ddl_hash;
use clinicbook_projections::query::detail::WalletPage;
use clinicbook_projections::{projection, ProjectionError};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{date, world};
use crate::scenario;

fn clinic_registered(position: i64, clinic: Uuid, timezone: &str) -> FeedEvent {
    FeedEvent {
        position,
        transaction_id: position,
        aggregate_type: "Clinic".to_owned(),
        aggregate_id: clinic.to_string(),
        sequence: 1,
        event_type: "ClinicRegistered".to_owned(),
        event_version: "1.0.0".to_owned(),
        payload: serde_json::to_value(ClinicEvent::ClinicRegistered {
            clinic_id: ClinicId(clinic),
            name: "Mars".to_owned(),
            timezone: timezone.to_owned(),
            currency: "EUR".to_owned(),
            policy: CancellationPolicy::default(),
        })
        .unwrap(),
        metadata: json!({}),
        recorded_at: Utc::now(),
    }
}

#[tokio::test]
async fn an_unknown_timezone_in_a_stored_event_stops_the_projection_there() {
    let w = world().await;
    w.catch_up().await;
    for name in ["schedule", "reports"] {
        let projection = projection(name).unwrap();
        let before = w.read.checkpoint(name).await.unwrap();
        let clinic = Uuid::new_v4();
        let event = clinic_registered(i64::MAX / 2, clinic, "Mars/Olympus");
        let error = w.read.apply(projection, &[event]).await.unwrap_err();
        assert!(
            matches!(&error, ProjectionError::Decode { event_type, reason, .. }
                if event_type == "ClinicRegistered" && reason.contains("Mars/Olympus")),
            "{name}: {error}"
        );
        // Nothing moved: no clinic in UTC, the checkpoint where it was.
        assert_eq!(w.read.checkpoint(name).await.unwrap(), before);
        let known: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM read.{name}_clinics WHERE clinic_id = $1)"
        ))
        .bind(clinic)
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
        assert!(!known, "{name}");
    }
}

#[tokio::test]
async fn unreadable_rows_are_errors_not_defaults() {
    let w = world().await;
    let s = scenario::build(&w).await;
    w.catch_up().await;
    let clinic = s.f.clinic_id.0;
    let day = date("2030-01-08");

    // An unknown wallet kind was read as a refund.
    assert!(w.read.wallet(s.p1, WalletPage::default()).await.is_ok());
    sqlx::query("UPDATE read.wallets_transactions SET kind = 'bonus' WHERE patient_id = $1")
        .bind(s.p1)
        .execute(&w.db.pool)
        .await
        .unwrap();
    let error = w
        .read
        .wallet(s.p1, WalletPage::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ProjectionError::InvalidRow {
                table: "wallets_transactions",
                ..
            }
        ),
        "{error}"
    );

    // An unknown timezone was read as UTC, by the schedule and the reports.
    assert!(w.read.schedule(clinic, day).await.is_ok());
    assert!(w.read.dashboard(clinic, day, Utc::now()).await.is_ok());
    for table in ["schedule_clinics", "reports_clinics"] {
        sqlx::query(&format!(
            "UPDATE read.{table} SET timezone = 'Mars/Olympus' WHERE clinic_id = $1"
        ))
        .bind(clinic)
        .execute(&w.db.pool)
        .await
        .unwrap();
    }
    let error = w.read.schedule(clinic, day).await.unwrap_err();
    assert!(
        matches!(
            error,
            ProjectionError::InvalidRow {
                table: "schedule_clinics",
                ..
            }
        ),
        "{error}"
    );
    let error = w.read.dashboard(clinic, day, Utc::now()).await.unwrap_err();
    assert!(
        matches!(
            error,
            ProjectionError::InvalidRow {
                table: "reports_clinics",
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn tables_built_by_another_version_are_rebuilt_on_start() {
    let w = world().await;
    let s = scenario::build(&w).await;
    w.catch_up().await;
    let json = |v: &clinicbook_wire::booking::ReservationView| -> Value {
        serde_json::to_value(v).unwrap()
    };
    let before = json(&w.read.reservation(s.r4).await.unwrap());
    // As the version before microseconds left them: an extra `*_ns`
    // column this version never writes, and another DDL hash.
    sqlx::raw_sql(
        "ALTER TABLE read.reservations_history ADD COLUMN at_ns smallint NOT NULL DEFAULT 0;
         UPDATE read.checkpoints SET ddl_hash = 'an older one' WHERE projection = 'reservations';",
    )
    .execute(&w.db.pool)
    .await
    .unwrap();

    w.read.ensure_all().await.unwrap();

    let reservations = projection("reservations").unwrap();
    let hash: String = sqlx::query_scalar(
        "SELECT ddl_hash FROM read.checkpoints WHERE projection = 'reservations'",
    )
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert_eq!(hash, ddl_hash(reservations));
    let old_column: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
          WHERE table_schema = 'read' AND table_name = 'reservations_history'
            AND column_name = 'at_ns')",
    )
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert!(!old_column);
    assert_eq!(json(&w.read.reservation(s.r4).await.unwrap()), before);
    // The other projections were built by this version: left as they were.
    let schedule = w.read.checkpoint("schedule").await.unwrap();
    w.read.ensure_all().await.unwrap();
    assert_eq!(w.read.checkpoint("schedule").await.unwrap(), schedule);
}
