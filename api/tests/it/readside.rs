//! The read side behind the API: the waitlist matcher books a freed slot
//! exactly once, even with two matchers at work.

use std::time::Duration;

use clinicbook_api::background::{self, ServeRole};
use clinicbook_commands::{Clock, Commands};
use clinicbook_eventstore::relay::Topology;
use clinicbook_eventstore::{EventStore, StoreConfig};
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
    second.shutdown().await;
}
