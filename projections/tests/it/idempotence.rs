//! Applying is safe to repeat and independent of batching: a batch
//! applied twice through `ReadModels::apply` changes nothing (the
//! checkpoint skips it), the apply functions themselves give the same
//! tables when the whole feed is applied twice, and applying the feed one
//! event at a time gives the same tables as one batch or batches of 7
//! or 100.

use std::collections::BTreeMap;

use clinicbook_eventstore::feed;
use clinicbook_eventstore::FeedPoint;
use clinicbook_projections::checkpoint::{apply_in, create_tables, READ_SCHEMA};
use clinicbook_projections::query::detail::WalletPage;
use clinicbook_projections::{projections, Projection};
use sqlx::PgPool;

use crate::common::{staff, world};
use crate::scenario;

/// Every table of `schema` whose name starts with the projection's name,
/// as sorted JSON rows (with `schema` stripped, so schemas compare).
async fn dump(
    pool: &PgPool,
    schema: &str,
    projection: &Projection,
) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = $1 AND table_name LIKE $2 ORDER BY table_name",
    )
    .bind(schema)
    .bind(format!("{}\\_%", projection.name))
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        !tables.is_empty(),
        "{} has no tables in {schema}",
        projection.name
    );
    let mut out = BTreeMap::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT row_to_json(t)::text FROM \"{schema}\".\"{table}\" t ORDER BY 1"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        out.insert(table, rows);
    }
    out
}

/// Builds `projection`'s tables in a fresh `schema` and applies `batches`
/// in order, each in its own transaction (no checkpoint).
async fn build(
    pool: &PgPool,
    schema: &str,
    projection: &Projection,
    batches: &[&[clinicbook_eventstore::FeedEvent]],
) {
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    create_tables(&mut tx, schema, projection).await.unwrap();
    tx.commit().await.unwrap();
    for batch in batches {
        let mut tx = pool.begin().await.unwrap();
        apply_in(&mut tx, schema, projection, batch).await.unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn repeated_and_differently_batched_feeds_give_the_same_tables() {
    let w = world().await;
    scenario::build(&w).await;
    w.catch_up().await;
    let pool = &w.db.pool;
    // Every event the projections applied (the feed up to their checkpoint).
    let upto = w
        .read
        .checkpoint(projections()[0].name)
        .await
        .unwrap()
        .point;
    let events: Vec<_> = feed::read_after(pool, FeedPoint::START, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.point() <= upto)
        .collect();
    assert!(events.len() > 50, "only {} events", events.len());

    for (i, projection) in projections().iter().enumerate() {
        let live = dump(pool, READ_SCHEMA, projection).await;

        // The same batch again through the checkpointed path: skipped.
        let before = w.read.checkpoint(projection.name).await.unwrap();
        let point = w.read.apply(projection, &events).await.unwrap();
        assert_eq!(point, before.point);
        assert_eq!(w.read.checkpoint(projection.name).await.unwrap(), before);
        assert_eq!(
            dump(pool, READ_SCHEMA, projection).await,
            live,
            "{}",
            projection.name
        );

        // One batch.
        let one = format!("one_batch_{i}");
        build(pool, &one, projection, &[&events]).await;
        assert_eq!(
            dump(pool, &one, projection).await,
            live,
            "{} in one batch",
            projection.name
        );

        // The whole feed twice, without checkpoint: the apply functions
        // themselves are idempotent.
        let twice = format!("twice_{i}");
        build(pool, &twice, projection, &[&events, &events]).await;
        assert_eq!(
            dump(pool, &twice, projection).await,
            live,
            "{} twice",
            projection.name
        );

        // Batches of seven (the live tables were built 100 at a time).
        let sevens = format!("sevens_{i}");
        let batches: Vec<&[clinicbook_eventstore::FeedEvent]> = events.chunks(7).collect();
        build(pool, &sevens, projection, &batches).await;
        assert_eq!(
            dump(pool, &sevens, projection).await,
            live,
            "{} by sevens",
            projection.name
        );

        // One event at a time.
        let single = format!("single_{i}");
        let batches: Vec<&[clinicbook_eventstore::FeedEvent]> = events.chunks(1).collect();
        build(pool, &single, projection, &batches).await;
        assert_eq!(
            dump(pool, &single, projection).await,
            live,
            "{} one event at a time",
            projection.name
        );
    }
}

/// A rebuild replays into scratch tables equal to the live ones, and
/// swapped in, the answers stay the same.
#[tokio::test]
async fn rebuilt_and_swapped_projections_answer_the_same() {
    use clinicbook_projections::query::reports::{DateRange, RevenueGrouping};
    use clinicbook_projections::rebuild::{check_against_live, rebuild};

    let w = world().await;
    let s = scenario::build(&w).await;
    w.catch_up().await;
    let week =
        DateRange::new("2030-01-07".parse().unwrap(), "2030-01-13".parse().unwrap()).unwrap();
    let day = "2030-01-10".parse().unwrap();
    let answers = || async {
        (
            serde_json::to_value(w.read.reservation(s.r8).await.unwrap()).unwrap(),
            serde_json::to_value(w.read.wallet(s.p1, WalletPage::default()).await.unwrap())
                .unwrap(),
            serde_json::to_value(w.read.package(s.package).await.unwrap()).unwrap(),
            serde_json::to_value(w.read.schedule(s.f.clinic_id.0, day).await.unwrap()).unwrap(),
            serde_json::to_value(
                w.read
                    .revenue(week, None, RevenueGrouping::Treatment)
                    .await
                    .unwrap(),
            )
            .unwrap(),
        )
    };
    let before = answers().await;
    for projection in projections() {
        let (_, diffs) = check_against_live(&w.read, projection, "check", &|_| {})
            .await
            .unwrap();
        assert!(diffs.is_empty(), "{}: {diffs:?}", projection.name);
        rebuild(&w.read, projection, &|_| {}).await.unwrap();
    }
    assert_eq!(answers().await, before);
}

/// Every row of each of `projection`'s declared tables in `schema`, as
/// sorted JSON rows.
async fn dump_declared(
    pool: &PgPool,
    schema: &str,
    projection: &Projection,
) -> BTreeMap<&'static str, Vec<String>> {
    let mut out = BTreeMap::new();
    for table in projection.tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT row_to_json(t)::text FROM \"{schema}\".\"{}\" t ORDER BY 1",
            table.name
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        out.insert(table.name, rows);
    }
    out
}

/// A projector applies only the events of the kinds its projection
/// declares (`Projection::kinds`) and does not even decode the others: so
/// every projection, the scheduler's and the matcher's too, must build the
/// same tables from those events alone as from the whole feed. A kind an
/// `apply` reads but its projection does not declare fails here. And each
/// builds the same tables one event at a time as in one batch.
#[tokio::test]
async fn projections_build_the_same_tables_from_the_kinds_they_declare() {
    use clinicbook_domain::AggregateKind;
    use clinicbook_projections::{due::DUE_WORK, waitlist::WAITLIST};

    let w = world().await;
    let s = scenario::build(&w).await;
    // The scenario has no patient profile and no hold: one of each.
    let profile: clinicbook_wire::patients::PatientInput = serde_json::from_value(
        serde_json::json!({"patient_id": s.p1, "name": "Ada Muster", "email": "ada@example.org",
                           "language": "de", "consent": {"email": true, "sms": false}}),
    )
    .unwrap();
    w.commands
        .register_patient(&staff(), &profile)
        .await
        .unwrap();
    w.commands
        .place_hold(
            &staff(),
            clinicbook_wire::holds::PlaceHold {
                hold_id: None,
                patient_id: s.p2,
                clinic_id: s.f.clinic_id.0,
                resource_id: s.f.laser.0,
                treatment_id: s.f.laser_treatment.0,
                start: crate::common::berlin(2030, 1, 11, 14, 0),
                ttl_seconds: Some(600),
                promo_code: None,
            },
        )
        .await
        .unwrap();
    // A reminder setting changed, then a booking under it.
    crate::common::raw::<clinicbook_domain::clinic::Clinic>(
        &w.commands,
        s.f.clinic_id,
        vec![clinicbook_domain::clinic::ClinicCommand::ChangeSettings {
            change: clinicbook_domain::clinic::SettingsChange {
                reminder_minutes_before: Some(90),
                ..Default::default()
            },
        }],
    )
    .await;
    crate::common::book(
        &w.commands,
        s.p4,
        s.f.clinic_id,
        s.f.laser,
        s.f.laser_treatment,
        crate::common::berlin(2030, 1, 12, 10, 0),
        clinicbook_commands::booking::PaymentInput::AtClinic,
        None,
    )
    .await;
    w.catch_up().await;
    let pool = &w.db.pool;
    let events = feed::read_after(pool, FeedPoint::START, 1_000_000)
        .await
        .unwrap();
    let kinds: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|event| event.kind().map(AggregateKind::name))
        .collect();
    let all: Vec<&Projection> = projections().iter().chain([&DUE_WORK, &WAITLIST]).collect();
    for kind in all.iter().flat_map(|projection| projection.kinds) {
        assert!(
            kinds.contains(kind.name()),
            "the scenario has no {kind:?} event: {kinds:?}"
        );
    }
    for (i, projection) in all.into_iter().enumerate() {
        let (read, passed): (Vec<_>, Vec<_>) = events
            .iter()
            .cloned()
            .partition(|event| projection.reads(event.kind()));
        assert!(
            !read.is_empty(),
            "{} reads none of the scenario's events",
            projection.name
        );
        assert!(!passed.is_empty(), "{} reads every event", projection.name);
        let whole = format!("whole_{i}");
        build(pool, &whole, projection, &[&events]).await;
        let declared = format!("declared_{i}");
        build(pool, &declared, projection, &[&read]).await;
        let from_whole = dump_declared(pool, &whole, projection).await;
        assert!(
            from_whole.values().any(|rows| !rows.is_empty()),
            "{} built nothing",
            projection.name
        );
        assert_eq!(
            dump_declared(pool, &declared, projection).await,
            from_whole,
            "{} from the kinds it declares ({:?})",
            projection.name,
            projection.kinds
        );
        // A batch folds as its events one by one do.
        let single = format!("single_event_{i}");
        let batches: Vec<&[clinicbook_eventstore::FeedEvent]> = events.chunks(1).collect();
        build(pool, &single, projection, &batches).await;
        assert_eq!(
            dump_declared(pool, &single, projection).await,
            from_whole,
            "{} one event at a time",
            projection.name
        );
    }
}
