//! The read side behind the API: the waitlist matcher books a freed slot
//! exactly once, even with two matchers at work; after a random workload
//! every projection rebuilt from the event store equals the live one; a
//! rebuild swaps its tables in while reads go on.

use std::time::Duration;

use clinicbook_api::background::{self, ServeRole};
use clinicbook_commands::{Clock, Commands};
use clinicbook_eventstore::relay::Topology;
use clinicbook_eventstore::{EventStore, StoreConfig};
use clinicbook_projections::rebuild;
use clinicbook_projections::service::Batches;
use clinicbook_testkit::services;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};
use uuid::Uuid;

use crate::common::{app, App, ClinicIds};

fn laser(ids: &ClinicIds, start: &str) -> Value {
    json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic, "resource_id": ids.laser,
           "treatment_id": ids.laser_treatment, "start": start, "payment": {"method": "at_clinic"}})
}

async fn created(app: &App, path: &str, body: Value) -> String {
    let answer = app.post(path, &app.staff, body.clone()).await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{body}: {:?}",
        answer.body
    );
    answer.body["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn waitlist(app: &App, ids: &ClinicIds, earliest: &str, latest: &str) -> String {
    let body = json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic,
                      "treatment_id": ids.laser_treatment, "earliest": earliest, "latest": latest,
                      "payment": {"method": "at_clinic"}});
    created(app, "/v1/waitlist", body).await
}

async fn view(app: &App, id: &str) -> Value {
    let answer = app.get(&format!("/v1/reservations/{id}"), &app.staff).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body
}

/// Polls until the reservation has `status`, or fails after `within`.
async fn until_status(app: &App, id: &str, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = view(app, id).await;
        if view["status"] == status {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{id} is still {} after {within:?}",
            view["status"]
        );
        sleep(Duration::from_millis(50)).await;
    }
}

fn times_booked(view: &Value) -> usize {
    view["history"]
        .as_array()
        .map(|history| {
            history
                .iter()
                .filter(|step| step["status"] == "booked")
                .count()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_first_fitting_waitlisted_patient_once_with_two_matchers() {
    let app = app().await;
    let ids = app.clinic().await;
    // A second matcher (and projectors), as another process would run:
    // its own command cache over the same database and NATS names.
    let services = services().await;
    let other = Commands::new(
        EventStore::new(app.db.pool.clone(), StoreConfig::default()),
        Clock::system(),
    );
    let read = app.read.clone().unwrap_or_else(|| panic!("in-process app"));
    let second = background::start(
        ServeRole::Projector,
        &other,
        &read,
        &services.nats.url(),
        &Topology::namespaced(&app.db.name),
        Batches::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Three booked slots on Tuesday 2030-01-08 (Berlin), and waitlisted
    // patients: one whose window fits none, then two whose windows fit.
    let slots = [
        "2030-01-08T09:00:00Z",
        "2030-01-08T10:00:00Z",
        "2030-01-08T11:00:00Z",
    ];
    let mut booked = Vec::new();
    for start in slots {
        booked.push(created(&app, "/v1/reservations", laser(&ids, start)).await);
    }
    let too_late = waitlist(&app, &ids, "2030-01-08T14:00:00Z", "2030-01-08T15:00:00Z").await;
    let first = waitlist(&app, &ids, "2030-01-08T08:30:00Z", "2030-01-08T10:30:00Z").await;
    let second_in_line = waitlist(&app, &ids, "2030-01-08T08:30:00Z", "2030-01-08T10:30:00Z").await;

    // The 10:00 slot frees: the first fitting patient gets it.
    let cancel = app
        .post(
            &format!("/v1/reservations/{}/cancel", booked[1]),
            &app.staff,
            json!({"reason": "patient called"}),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::OK, "{:?}", cancel.body);
    let now_booked = until_status(&app, &first, "booked", Duration::from_secs(30)).await;
    assert_eq!(now_booked["start"], "2030-01-08T10:00:00Z");
    assert_eq!(now_booked["resource_id"], json!(ids.laser));

    // The 09:00 slot frees: it goes to the next in line.
    let cancel = app
        .post(
            &format!("/v1/reservations/{}/cancel", booked[0]),
            &app.staff,
            json!({"reason": "patient called"}),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::OK, "{:?}", cancel.body);
    let next = until_status(&app, &second_in_line, "booked", Duration::from_secs(30)).await;
    assert_eq!(next["start"], "2030-01-08T09:00:00Z");

    // Let both matchers finish whatever they would do, then check that
    // nothing was booked twice and the unfitting patient still waits.
    sleep(Duration::from_secs(2)).await;
    assert_eq!(times_booked(&view(&app, &first).await), 1);
    assert_eq!(times_booked(&view(&app, &second_in_line).await), 1);
    assert_eq!(view(&app, &too_late).await["status"], "waitlisted");
    assert_eq!(view(&app, &booked[2]).await["status"], "booked");
    // Handled freed slots are deleted: the table holds only work to do.
    assert_eq!(
        app.db
            .tamper("SELECT 1 FROM read.waitlist_freed", &[])
            .await,
        0
    );
    second.shutdown().await;
}

/// Waits until the relay and every projection have applied every stored
/// event.
async fn all_caught_up(app: &App) {
    let read = app.read.clone().unwrap_or_else(|| panic!("in-process app"));
    app.read_own_writes().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = read.status().await.unwrap_or_else(|e| panic!("{e}"));
        // Quiet: the waitlist matcher has no freed slot left to fill (a
        // slot it fills later would write after the views were taken).
        let freed = read
            .freed_slots_waiting()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if status.len() > 1 && status.iter().all(|s| s.behind == 0) && freed == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "read side behind: {status:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Every projection rebuilt from the event store equals the live one,
/// table for table.
async fn assert_rebuild_equals_live(app: &App) {
    let read = app.read.clone().unwrap_or_else(|| panic!("in-process app"));
    for projection in clinicbook_projections::projections() {
        let (rebuilt, diffs) =
            rebuild::check_against_live(&read, projection, "check_random", &|_| {})
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", projection.name));
        assert!(rebuilt.events > 0);
        assert!(diffs.is_empty(), "{}: {diffs:?}", projection.name);
    }
}

/// A random day's start: 2030-01-07 to 2030-01-11 (Monday to Friday),
/// 08:00 to 15:45 UTC on the quarter hour.
fn random_start(rng: &mut fastrand::Rng) -> String {
    format!(
        "2030-01-{:02}T{:02}:{:02}:00Z",
        rng.u32(7..=11),
        rng.u32(8..=15),
        rng.u32(0..4) * 15
    )
}

/// A seeded random mix of what staff do, through the API; refusals
/// (taken slots, illegal transitions) are part of the mix.
async fn random_workload(app: &App, ids: &ClinicIds, seed: u64, steps: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let program = app
        .post(
            "/v1/programs",
            &app.admin,
            json!({"name": "Six lasers", "treatment_id": ids.laser_treatment, "sessions": 6,
                   "price_cents": 50_000, "validity_days": 365, "clinic_ids": [ids.clinic]}),
        )
        .await;
    assert_eq!(program.status, StatusCode::CREATED, "{:?}", program.body);
    let promo = app
        .post(
            "/v1/promo-codes",
            &app.admin,
            json!({"code": "WINTER", "percent_off": 10, "valid_from": "2026-01-01T00:00:00Z",
                   "valid_until": "2031-01-01T00:00:00Z", "max_redemptions": 20, "per_patient_limit": 3}),
        )
        .await;
    assert_eq!(promo.status, StatusCode::CREATED, "{:?}", promo.body);
    let patients: Vec<String> = (0..6).map(|_| Uuid::new_v4().to_string()).collect();
    let mut packages = Vec::new();
    for (n, patient) in patients.iter().enumerate() {
        let deposit = app
            .post(
                &format!("/v1/wallets/{patient}/deposits"),
                &app.staff,
                json!({"amount_cents": 200_000, "reference": format!("card-{n}")}),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);
        if n % 2 == 0 {
            let bought = app
                .post(
                    "/v1/packages",
                    &app.staff,
                    json!({"patient_id": patient, "program_id": program.body["program_id"],
                           "payment": {"method": "wallet"}}),
                )
                .await;
            assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.body);
            packages.push((patient.clone(), bought.body["package_id"].clone()));
        }
    }
    let mut reservations: Vec<String> = Vec::new();
    for _ in 0..steps {
        let patient = patients[rng.usize(..patients.len())].clone();
        match rng.u32(0..10) {
            0..=3 => {
                let resource = if rng.bool() { &ids.laser } else { &ids.laser_b };
                let (patient, payment) = match rng.u32(0..3) {
                    0 => (patient, json!({"method": "wallet"})),
                    1 if !packages.is_empty() => {
                        let (owner, package) = &packages[rng.usize(..packages.len())];
                        (
                            owner.clone(),
                            json!({"method": "package", "package_id": package}),
                        )
                    }
                    _ => (patient, json!({"method": "at_clinic"})),
                };
                let mut body = json!({"patient_id": patient, "clinic_id": ids.clinic,
                    "resource_id": resource, "treatment_id": ids.laser_treatment,
                    "start": random_start(&mut rng), "payment": payment});
                if rng.u32(0..4) == 0 {
                    body["promo_code"] = json!("WINTER");
                }
                let answer = app.post("/v1/reservations", &app.staff, body).await;
                if answer.status == StatusCode::CREATED {
                    reservations.push(
                        answer.body["reservation_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            }
            4..=6 if !reservations.is_empty() => {
                let id = &reservations[rng.usize(..reservations.len())];
                let (path, body) = match rng.u32(0..5) {
                    0 => ("cancel", json!({"reason": "random"})),
                    1 => ("reschedule", json!({"start": random_start(&mut rng)})),
                    2 => ("check-in", json!({})),
                    3 => ("complete", json!({})),
                    _ => ("no-show", json!({})),
                };
                let body = if body == json!({}) { None } else { Some(body) };
                app.send(
                    reqwest::Method::POST,
                    &format!("/v1/reservations/{id}/{path}"),
                    Some(&app.staff),
                    body,
                )
                .await;
            }
            7 => {
                let body = json!({"patient_id": patient, "clinic_id": ids.clinic,
                    "treatment_id": ids.laser_treatment, "earliest": "2030-01-07T08:00:00Z",
                    "latest": "2030-01-11T15:00:00Z", "payment": {"method": "at_clinic"}});
                app.post("/v1/waitlist", &app.staff, body).await;
            }
            8 => {
                app.post(
                    &format!("/v1/wallets/{patient}/refunds"),
                    &app.staff,
                    json!({"amount_cents": 1_000, "reference": format!("r-{}", rng.u32(..)), "reason": "goodwill"}),
                )
                .await;
            }
            _ => {
                let (day, hour) = (rng.u32(7..=11), rng.u32(8..=14));
                let start = format!("2030-01-{day:02}T{hour:02}:00:00Z");
                let end = format!("2030-01-{day:02}T{:02}:00:00Z", hour + 1);
                app.post(
                    &format!("/v1/resources/{}/blocks", ids.laser),
                    &app.staff,
                    json!({"start": start, "end": end, "reason": "service", "emergency": rng.bool()}),
                )
                .await;
            }
        }
    }
}

#[tokio::test]
async fn every_projection_rebuilt_from_scratch_equals_the_live_one_after_a_random_workload() {
    let app = app().await;
    let ids = app.clinic().await;
    random_workload(&app, &ids, 20261121, 250).await;
    all_caught_up(&app).await;
    // The workload really mixed what staff do.
    let report = view_of(
        &app,
        "/v1/reports/reservations?from=2030-01-07&to=2030-01-11",
    )
    .await;
    let row = &report["rows"][0];
    let statuses = [
        "booked",
        "checked_in",
        "completed",
        "cancelled",
        "no_show",
        "displaced",
    ];
    let seen: Vec<&str> = statuses
        .into_iter()
        .filter(|status| row[*status].as_i64().unwrap_or(0) > 0)
        .collect();
    assert!(seen.len() >= 4, "only {seen:?} in {report}");
    assert_rebuild_equals_live(&app).await;
}

#[tokio::test]
async fn a_rebuild_swaps_new_tables_in_while_reads_go_on() {
    let app = app().await;
    let ids = app.clinic().await;
    random_workload(&app, &ids, 7, 120).await;
    all_caught_up(&app).await;
    let paths = [
        format!("/v1/clinics/{}/schedule?date=2030-01-08", ids.clinic),
        "/v1/reports/revenue?from=2030-01-07&to=2030-01-11&group_by=day".to_owned(),
        format!("/v1/clinics/{}/dashboard?date=2030-01-09", ids.clinic),
    ];
    let mut before = Vec::new();
    for path in &paths {
        before.push(view_of(&app, path).await);
    }
    // Readers keep reading while every projection is rebuilt and swapped.
    let read = app.read.clone().unwrap_or_else(|| panic!("in-process app"));
    let rebuilding = async {
        for projection in clinicbook_projections::projections() {
            rebuild::rebuild(&read, projection, &|_| {})
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", projection.name));
        }
    };
    let reading = async {
        let mut reads = 0;
        for round in 0.. {
            for (path, expected) in paths.iter().zip(&before) {
                assert_eq!(
                    &view_of(&app, path).await,
                    expected,
                    "{path} during the rebuild"
                );
                reads += 1;
            }
            if round >= 20 {
                break;
            }
        }
        reads
    };
    let ((), reads) = tokio::join!(rebuilding, reading);
    assert!(reads > 0);
    for (path, expected) in paths.iter().zip(&before) {
        assert_eq!(
            &view_of(&app, path).await,
            expected,
            "{path} after the rebuild"
        );
    }
    // The rebuilt tables go on living: a new booking reaches them.
    let booked = app
        .post(
            "/v1/reservations",
            &app.staff,
            laser(&ids, "2030-01-10T13:00:00Z"),
        )
        .await;
    if booked.status == StatusCode::CREATED {
        let id = booked.body["reservation_id"].as_str().unwrap_or_default();
        assert_eq!(view(&app, id).await["status"], "booked");
    }
    all_caught_up(&app).await;
    assert_rebuild_equals_live(&app).await;
}

async fn view_of(app: &App, path: &str) -> Value {
    let answer = app.get(path, &app.analyst).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
    answer.body
}
