//! Holds over HTTP against real PostgreSQL and NATS (issue 13): a hold
//! takes a slot by the booking overlap rule, a confirm books it at the
//! quoted price, a release frees it at once, and the scheduler records
//! `HoldExpired` exactly once, on time, with several processes, after a
//! restart, and racing a confirm.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clinicbook_api::Limits;
use clinicbook_commands::Clock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{app, app_with, App, ClinicIds};
use crate::processes::{two_processes, Server};

/// A Tuesday, 10:00 in Berlin.
const START: &str = "2030-01-08T09:00:00Z";

fn hold_body(ids: &ClinicIds, start: &str) -> Value {
    json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic, "resource_id": ids.laser,
           "treatment_id": ids.laser_treatment, "start": start})
}

fn booking(ids: &ClinicIds, start: &str) -> Value {
    json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic, "resource_id": ids.laser,
           "treatment_id": ids.laser_treatment, "start": start, "payment": {"method": "at_clinic"}})
}

fn instant(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an instant: {value}"))
}

/// The event types of a hold's stream, in order.
async fn hold_events(app: &App, hold_id: &str) -> Vec<(String, Value)> {
    clinicbook_eventstore::audit::stream_events(&app.db.pool, "Hold", hold_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|event| (event.event_type, event.payload))
        .collect()
}

/// Polls the hold's stream until it has an event of `event_type` or
/// `deadline` passes; answers the stream then.
async fn until_event(
    app: &App,
    hold_id: &str,
    event_type: &str,
    deadline: Duration,
) -> Vec<(String, Value)> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let events = hold_events(app, hold_id).await;
        if events.iter().any(|(t, _)| t == event_type) || tokio::time::Instant::now() > until {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The instant `HoldExpired` recorded.
fn expired_at(events: &[(String, Value)]) -> DateTime<Utc> {
    let (_, payload) = events
        .iter()
        .find(|(t, _)| t == "HoldExpired")
        .unwrap_or_else(|| panic!("no HoldExpired: {events:?}"));
    instant(&payload["HoldExpired"]["expired_at"])
}

fn count(events: &[(String, Value)], event_type: &str) -> usize {
    events.iter().filter(|(t, _)| t == event_type).count()
}

/// Waits until the instant `at` (system clock).
async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_racing_for_one_slot_get_exactly_one_hold() {
    let app = app().await;
    let ids = app.clinic().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let request = app
                .client
                .post(format!("{}/v1/holds", app.base))
                .bearer_auth(&app.staff)
                .json(&hold_body(&ids, START));
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                crate::processes::send(request).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let won: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == StatusCode::CREATED)
        .collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    for (status, content_type, body) in &answers {
        if *status != StatusCode::CREATED {
            assert_eq!(*status, StatusCode::CONFLICT, "{body}");
            assert!(
                ["slot_unavailable", "concurrency_conflict"]
                    .contains(&body["code"].as_str().unwrap_or_default()),
                "{body}"
            );
            assert!(content_type.starts_with("application/problem+json"));
        }
    }
    let held = &won[0].2;
    assert_eq!(held["status"], "held");
    assert_eq!(held["start"], START);
    let calendar = clinicbook_eventstore::audit::stream_events(
        &app.db.pool,
        "Calendar",
        &format!("{}/2030-01-08", ids.laser),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let types: Vec<_> = calendar.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["SlotHeld"]);
}

#[tokio::test]
async fn a_hold_blocks_booking_holding_and_availability_and_a_release_frees_it_at_once() {
    let app = app().await;
    let ids = app.clinic().await;
    let held = app
        .post("/v1/holds", &app.staff, hold_body(&ids, START))
        .await;
    assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    let hold_id = held.body["hold_id"].as_str().unwrap_or_default().to_owned();
    // 45 minutes and a 15-minute buffer: 09:00-10:00 UTC is taken.
    for start in [START, "2030-01-08T09:30:00Z", "2030-01-08T08:30:00Z"] {
        app.post("/v1/reservations", &app.staff, booking(&ids, start))
            .await
            .assert_problem(409, "slot_unavailable");
        app.post("/v1/holds", &app.staff, hold_body(&ids, start))
            .await
            .assert_problem(409, "slot_unavailable");
    }
    let view = app.get(&format!("/v1/holds/{hold_id}"), &app.staff).await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    assert_eq!(view.body["status"], "held");
    assert_eq!(view.body["expires_at"], held.body["expires_at"]);
    let availability = format!(
        "/v1/clinics/{}/availability?treatment_id={}&date=2030-01-08",
        ids.clinic, ids.laser_treatment
    );
    let offered = |answer: &Value| {
        answer["slots"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|slot| slot["resource_id"] == json!(ids.laser) && slot["start"] == START)
    };
    let free = app.get(&availability, &app.staff).await;
    assert_eq!(free.status, StatusCode::OK, "{:?}", free.body);
    assert!(!offered(&free.body), "{:?}", free.body);
    let schedule = app
        .get(
            &format!("/v1/clinics/{}/schedule?date=2030-01-08", ids.clinic),
            &app.staff,
        )
        .await;
    let laser = schedule.body["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["resource_id"] == json!(ids.laser))
        .cloned()
        .unwrap_or_default();
    assert_eq!(laser["holds"][0]["hold_id"], json!(hold_id), "{laser}");
    assert_eq!(laser["bookings"], json!([]));
    // Held is counted as held, not booked, and is no revenue.
    let dashboard = app
        .get(
            &format!("/v1/clinics/{}/dashboard?date=2030-01-08", ids.clinic),
            &app.analyst,
        )
        .await;
    assert_eq!(dashboard.status, StatusCode::OK, "{:?}", dashboard.body);
    assert_eq!(dashboard.body["counts"]["held"], 1, "{:?}", dashboard.body);
    assert_eq!(dashboard.body["counts"]["booked"], 0);
    assert_eq!(dashboard.body["revenue_cents"], 0);

    let released = app
        .post(
            &format!("/v1/holds/{hold_id}/release"),
            &app.staff,
            json!({}),
        )
        .await;
    assert_eq!(released.status, StatusCode::OK, "{:?}", released.body);
    assert_eq!(released.body["status"], "released");
    // Free at once: the very next booking takes it.
    let booked = app
        .post("/v1/reservations", &app.staff, booking(&ids, START))
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{:?}", booked.body);
    let view = app.get(&format!("/v1/holds/{hold_id}"), &app.staff).await;
    assert_eq!(view.body["status"], "released");
    app.post(
        &format!("/v1/holds/{hold_id}/confirm"),
        &app.staff,
        json!({"payment": {"method": "at_clinic"}}),
    )
    .await
    .assert_problem(409, "hold_released");
    // Releasing again answers the same and writes nothing.
    let before = app.events().await;
    let again = app
        .post(
            &format!("/v1/holds/{hold_id}/release"),
            &app.staff,
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(app.events().await, before);
}

#[tokio::test]
async fn a_confirm_books_at_the_held_price_even_after_a_pricing_change() {
    let app = app().await;
    let ids = app.clinic().await;
    let patient = Uuid::new_v4();
    let deposit = app
        .post(
            &format!("/v1/wallets/{patient}/deposits"),
            &app.staff,
            json!({"amount_cents": 50_000, "reference": "d1"}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);
    let mut body = hold_body(&ids, START);
    body["patient_id"] = json!(patient);
    let held = app.post("/v1/holds", &app.staff, body).await;
    assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    assert_eq!(held.body["price"]["total_cents"], 12_000);
    let hold_id = held.body["hold_id"].as_str().unwrap_or_default().to_owned();
    // Tuesdays now cost 50 % more.
    let rules = app
        .put(
            &format!("/v1/clinics/{}/pricing-rules", ids.clinic),
            &app.admin,
            json!({"rules": [{"weekdays": ["tue"], "from": "09:00", "to": "18:00", "percent": 50}]}),
        )
        .await;
    assert_eq!(rules.status, StatusCode::OK, "{:?}", rules.body);
    let quote = app
        .get(
            &format!(
                "/v1/quotes?clinic_id={}&treatment_id={}&start={START}",
                ids.clinic, ids.laser_treatment
            ),
            &app.staff,
        )
        .await;
    assert_eq!(quote.body["total_cents"], 18_000, "{:?}", quote.body);

    let revenue = format!(
        "/v1/reports/revenue?from=2030-01-08&to=2030-01-08&clinic_id={}",
        ids.clinic
    );
    let gross = |body: &Value| -> i64 {
        body["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row["gross_cents"].as_i64())
            .sum()
    };
    let before_confirm = app.get(&revenue, &app.analyst).await;
    assert_eq!(
        before_confirm.status,
        StatusCode::OK,
        "{:?}",
        before_confirm.body
    );
    assert_eq!(gross(&before_confirm.body), 0, "a hold is not revenue");

    let confirm = format!("/v1/holds/{hold_id}/confirm");
    let booked = app
        .post(
            &confirm,
            &app.staff,
            json!({"payment": {"method": "wallet"}}),
        )
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{:?}", booked.body);
    assert_eq!(booked.body["status"], "booked");
    assert_eq!(booked.body["start"], START);
    assert_eq!(booked.body["price"]["total_cents"], 12_000);
    let reservation_id = booked.body["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let wallet = app.get(&format!("/v1/wallets/{patient}"), &app.staff).await;
    assert_eq!(wallet.body["balance_cents"], 38_000, "{:?}", wallet.body);
    let after_confirm = app.get(&revenue, &app.analyst).await;
    assert_eq!(
        gross(&after_confirm.body),
        12_000,
        "{:?}",
        after_confirm.body
    );
    let view = app.get(&format!("/v1/holds/{hold_id}"), &app.staff).await;
    assert_eq!(view.body["status"], "confirmed");
    assert_eq!(view.body["reservation_id"], json!(reservation_id));
    // A retry answers the booking and writes nothing.
    let before = app.events().await;
    let again = app
        .post(
            &confirm,
            &app.staff,
            json!({"payment": {"method": "wallet"}}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(again.body["reservation_id"], json!(reservation_id));
    assert_eq!(app.events().await, before);
    // The calendar holds the booking over the held interval.
    let calendar = clinicbook_eventstore::audit::stream_events(
        &app.db.pool,
        "Calendar",
        &format!("{}/2030-01-08", ids.laser),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let types: Vec<_> = calendar.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["SlotHeld", "HeldSlotBooked"]);
    // Nothing left to expire.
    let hold = hold_events(&app, &hold_id).await;
    assert_eq!(count(&hold, "HoldExpired"), 0);
}

#[tokio::test]
async fn bad_hold_requests_are_refused_and_settings_are_checked() {
    let app = app().await;
    let ids = app.clinic().await;
    for ttl in [29, 3601] {
        let mut body = hold_body(&ids, START);
        body["ttl_seconds"] = json!(ttl);
        app.post("/v1/holds", &app.staff, body)
            .await
            .assert_problem(400, "invalid_input");
    }
    let mut body = hold_body(&ids, START);
    body["colour"] = json!("red");
    app.post("/v1/holds", &app.staff, body)
        .await
        .assert_problem(400, "invalid_request");
    app.post(
        &format!("/v1/holds/{}/confirm", Uuid::new_v4()),
        &app.staff,
        json!({"payment": {"method": "at_clinic"}}),
    )
    .await
    .assert_problem(404, "not_found");
    app.get(&format!("/v1/holds/{}", Uuid::new_v4()), &app.staff)
        .await
        .assert_problem(404, "not_found");

    let settings = format!("/v1/clinics/{}/settings", ids.clinic);
    let changed = app
        .put(
            &settings,
            &app.admin,
            json!({"hold_minutes": 5, "waitlist_mode": "offer"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(
        changed.body,
        json!({"hold_minutes": 5, "waitlist_mode": "offer", "offer_minutes": 30,
               "reminder_minutes_before": 1440, "position": changed.body["position"]})
    );
    for bad in [
        json!({"hold_minutes": 0}),
        json!({"hold_minutes": 61}),
        json!({"offer_minutes": 4}),
        json!({"reminder_minutes_before": 10081}),
        json!({"waitlist_mode": "ask"}),
    ] {
        let answer = app.put(&settings, &app.admin, bad.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {:?}",
            answer.body
        );
    }
    app.put(&settings, &app.staff, json!({"hold_minutes": 5}))
        .await
        .assert_problem(403, "forbidden");
    // A hold without ttl_seconds lasts the clinic's hold_minutes.
    let held = app
        .post("/v1/holds", &app.staff, hold_body(&ids, START))
        .await;
    assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    let minutes = (instant(&held.body["expires_at"]) - Utc::now()).num_seconds();
    assert!((240..=300).contains(&minutes), "{:?}", held.body);
}

/// A clock `offset` seconds ahead of the system's.
fn shifted(offset: Arc<AtomicI64>) -> Clock {
    Clock::from_fn(move || Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confirm_racing_the_expiry_either_books_or_expires_never_both() {
    for round in 0..3 {
        let offset = Arc::new(AtomicI64::new(0));
        let app = app_with(Limits::default(), shifted(offset.clone())).await;
        let ids = app.clinic().await;
        let mut body = hold_body(&ids, START);
        body["ttl_seconds"] = json!(30);
        let held = app.post("/v1/holds", &app.staff, body).await;
        assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
        let hold_id = held.body["hold_id"].as_str().unwrap_or_default().to_owned();
        // Let the projector see the hold, then jump to just before its end.
        let view = app.get(&format!("/v1/holds/{hold_id}"), &app.staff).await;
        assert_eq!(view.status, StatusCode::OK);
        let expires_at = instant(&held.body["expires_at"]);
        let jump = (expires_at - Utc::now()).num_milliseconds() / 1000 - 1 + round;
        offset.store(jump.max(0) as i64, Ordering::SeqCst);
        let confirms: Vec<_> = (0..16)
            .map(|i| {
                let request = app
                    .client
                    .post(format!("{}/v1/holds/{hold_id}/confirm", app.base))
                    .bearer_auth(&app.staff)
                    .json(&json!({"payment": {"method": "at_clinic"}}));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100 * i)).await;
                    crate::processes::send(request).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in confirms {
            answers.push(task.await.unwrap_or_else(|e| panic!("{e}")));
        }
        let events = until_event(&app, &hold_id, "HoldExpired", Duration::from_secs(3)).await;
        let confirmed = count(&events, "HoldConfirmed");
        let expired = count(&events, "HoldExpired");
        assert_eq!(confirmed + expired, 1, "exactly one end: {events:?}");
        let created = answers
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::CREATED)
            .count();
        if confirmed == 1 {
            assert!(created >= 1, "{answers:?}");
        } else {
            assert_eq!(created, 0, "{answers:?}");
        }
        for (status, _, body) in &answers {
            if *status != StatusCode::CREATED {
                assert_eq!(*status, StatusCode::CONFLICT, "{body}");
                assert!(
                    ["hold_expired", "concurrency_conflict"]
                        .contains(&body["code"].as_str().unwrap_or_default()),
                    "{body}"
                );
            }
        }
    }
}

/// Places a 30-second hold through `app` and answers its id and expiry.
async fn thirty_second_hold(app: &App, ids: &ClinicIds) -> (String, DateTime<Utc>) {
    let mut body = hold_body(ids, START);
    body["ttl_seconds"] = json!(30);
    let held = app.post("/v1/holds", &app.staff, body).await;
    assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    (
        held.body["hold_id"].as_str().unwrap_or_default().to_owned(),
        instant(&held.body["expires_at"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_is_recorded_once_within_two_seconds_with_two_processes() {
    let (app, first, second, ids) = two_processes().await;
    let (hold_id, expires_at) = thirty_second_hold(&app, &ids).await;
    sleep_until(expires_at).await;
    let events = until_event(&app, &hold_id, "HoldExpired", Duration::from_secs(5)).await;
    let at = expired_at(&events);
    assert!(at >= expires_at, "{at} before {expires_at}");
    assert!(
        at - expires_at <= chrono::Duration::seconds(2),
        "recorded {at}, due {expires_at}"
    );
    // Both processes keep running: still one expiry a while later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = hold_events(&app, &hold_id).await;
    assert_eq!(count(&events, "HoldExpired"), 1, "{events:?}");
    // The slot is free: a booking through the other process takes it.
    let (status, _, body) = crate::processes::send(
        app.client
            .post(format!("{}/v1/reservations", second.base))
            .bearer_auth(&app.staff)
            .json(&booking(&ids, START)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_survives_the_timer_process_killed_and_a_new_one_started() {
    let (app, mut first, second, ids) = two_processes().await;
    // Only the API is left in the second process; the first runs the timer.
    drop(second);
    let (hold_id, expires_at) = thirty_second_hold(&app, &ids).await;
    // Kill the timer process at the moment the hold falls due (mid-expiry
    // or just before it), then start a new one.
    sleep_until(expires_at).await;
    let _ = first.child.kill();
    let _ = first.child.wait();
    let db_url = app.db.url.clone();
    let nats = clinicbook_testkit::services().await.nats.url();
    let env = [
        ("NATS_URL", nats.as_str()),
        ("CLINICBOOK_NATS_NAMESPACE", app.db.name.as_str()),
    ];
    let restarted = Server::start_with(&db_url, &env).await;
    let started = Utc::now();
    let events = until_event(&app, &hold_id, "HoldExpired", Duration::from_secs(10)).await;
    let at = expired_at(&events);
    assert!(at >= expires_at);
    assert!(
        at - expires_at.max(started) <= chrono::Duration::seconds(2),
        "recorded {at}, due {expires_at}, restarted {started}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = hold_events(&app, &hold_id).await;
    assert_eq!(count(&events, "HoldExpired"), 1, "{events:?}");
    let (status, _, body) = crate::processes::send(
        app.client
            .post(format!("{}/v1/reservations", restarted.base))
            .bearer_auth(&app.staff)
            .json(&booking(&ids, START)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Polls `GET /v1/reservations/{id}` until `done` holds for its body or
/// 10 s pass; answers the last body.
async fn until_reservation(app: &App, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = app.get(&format!("/v1/reservations/{id}"), &app.staff).await;
        if done(&view.body) || tokio::time::Instant::now() > until {
            return view.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offer_passes_along_a_waitlist_of_three_as_each_expires() {
    let offset = Arc::new(AtomicI64::new(0));
    let app = app_with(Limits::default(), shifted(offset.clone())).await;
    let ids = app.clinic().await;
    let settings = app
        .put(
            &format!("/v1/clinics/{}/settings", ids.clinic),
            &app.admin,
            json!({"waitlist_mode": "offer", "offer_minutes": 5}),
        )
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{:?}", settings.body);
    let booked = app
        .post("/v1/reservations", &app.staff, booking(&ids, START))
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{:?}", booked.body);
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let joined = app
            .post(
                "/v1/waitlist",
                &app.staff,
                json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic,
                       "treatment_id": ids.laser_treatment,
                       "earliest": "2030-01-08T08:00:00Z", "latest": "2030-01-08T10:00:00Z",
                       "payment": {"method": "at_clinic"}}),
            )
            .await;
        assert_eq!(joined.status, StatusCode::CREATED, "{:?}", joined.body);
        waiting.push(
            joined.body["reservation_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let reservation = booked.body["reservation_id"].as_str().unwrap_or_default();
    let cancelled = app
        .post(
            &format!("/v1/reservations/{reservation}/cancel"),
            &app.staff,
            json!({"reason": "patient moved"}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);

    let mut holds = Vec::new();
    for (turn, id) in waiting.iter().enumerate() {
        let view = until_reservation(&app, id, |body| body["offer"]["hold_id"].is_string()).await;
        let hold_id = view["offer"]["hold_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no offer for #{turn}: {view}"))
            .to_owned();
        assert_eq!(view["status"], "waitlisted");
        let expires_at = instant(&view["offer"]["expires_at"]);
        let hold = app.get(&format!("/v1/holds/{hold_id}"), &app.staff).await;
        assert_eq!(hold.body["status"], "held", "{:?}", hold.body);
        assert_eq!(hold.body["offer_for"], json!(id));
        assert_eq!(hold.body["start"], START);
        // Nobody else has an offer meanwhile.
        for other in waiting.iter().filter(|other| *other != id) {
            let other = app
                .get(&format!("/v1/reservations/{other}"), &app.staff)
                .await;
            assert!(other.body["offer"].is_null(), "{:?}", other.body);
        }
        holds.push(hold_id.clone());
        if turn + 1 < waiting.len() {
            // Let this offer run out: the next in line gets it.
            let ahead = (expires_at - Utc::now()).num_seconds() + 1;
            offset.store(ahead, Ordering::SeqCst);
            let events = until_event(&app, &hold_id, "HoldExpired", Duration::from_secs(5)).await;
            assert_eq!(count(&events, "HoldExpired"), 1, "{events:?}");
        }
    }
    // The last one confirms: it books the waitlisted reservation.
    let last = &waiting[2];
    let confirmed = app
        .post(
            &format!("/v1/holds/{}/confirm", holds[2]),
            &app.staff,
            json!({"payment": {"method": "at_clinic"}}),
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::CREATED,
        "{:?}",
        confirmed.body
    );
    assert_eq!(confirmed.body["reservation_id"], json!(last));
    assert_eq!(confirmed.body["start"], START);
    let view = until_reservation(&app, last, |body| body["status"] == "booked").await;
    assert_eq!(view["status"], "booked", "{view}");
    assert!(view["offer"].is_null());
    for id in &waiting[..2] {
        let view = app.get(&format!("/v1/reservations/{id}"), &app.staff).await;
        assert_eq!(view.body["status"], "waitlisted");
        assert!(view.body["offer"].is_null(), "{:?}", view.body);
    }
}

/// Puts a new patient on the waitlist for the laser treatment between
/// `earliest` and `latest`; answers the reservation id.
async fn waitlisted(
    app: &App,
    ids: &ClinicIds,
    patient: Uuid,
    earliest: &str,
    latest: &str,
) -> String {
    let joined = app
        .post(
            "/v1/waitlist",
            &app.staff,
            json!({"patient_id": patient, "clinic_id": ids.clinic,
                   "treatment_id": ids.laser_treatment, "earliest": earliest, "latest": latest,
                   "payment": {"method": "at_clinic"}}),
        )
        .await;
    assert_eq!(joined.status, StatusCode::CREATED, "{:?}", joined.body);
    joined.body["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every `Held` event of the store that is an offer, as (hold id, its
/// terms), read over HTTP from the audit feed.
async fn offers_held(app: &App) -> Vec<(String, Value)> {
    let mut offers = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = "/v1/audit/events?aggregate_type=Hold&limit=1000".to_owned();
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={cursor}"));
        }
        let page = app.get(&path, &app.admin).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        for event in page.body["events"].as_array().into_iter().flatten() {
            let terms = &event["payload"]["Held"]["terms"];
            if event["event_type"] == "Held" && terms["offer_for"].is_string() {
                let hold = event["aggregate_id"].as_str().unwrap_or_default();
                offers.push((hold.to_owned(), terms.clone()));
            }
        }
        let empty = page.body["events"].as_array().is_none_or(Vec::is_empty);
        match page.body["next_after"].as_str() {
            Some(next) if !empty => after = Some(next.to_owned()),
            _ => return offers,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_matchers_never_offer_one_patient_two_overlapping_slots() {
    let (app, first, second, ids) = two_processes().await;
    let settings = app
        .put(
            &format!("/v1/clinics/{}/settings", ids.clinic),
            &app.admin,
            json!({"waitlist_mode": "offer", "offer_minutes": 30}),
        )
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{:?}", settings.body);
    let mut seen = 0;
    // Tuesdays: each round its own day, patients and slots.
    for (round, day) in ["2030-01-08", "2030-01-15", "2030-01-22"]
        .iter()
        .enumerate()
    {
        // 09:00-09:45 on laser A and 09:15-10:00 on laser B: they overlap.
        let (at_a, at_b) = (format!("{day}T09:00:00Z"), format!("{day}T09:15:00Z"));
        let mut on_b = booking(&ids, &at_b);
        on_b["resource_id"] = json!(ids.laser_b);
        let mut booked = Vec::new();
        for body in [booking(&ids, &at_a), on_b] {
            let made = app.post("/v1/reservations", &app.staff, body).await;
            assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
            booked.push(
                made.body["reservation_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        // The first in line fits both slots, and so does the second.
        let (earliest, latest) = (format!("{day}T08:00:00Z"), format!("{day}T10:00:00Z"));
        let patients = [Uuid::new_v4(), Uuid::new_v4()];
        let first_in_line = waitlisted(&app, &ids, patients[0], &earliest, &latest).await;
        let next_in_line = waitlisted(&app, &ids, patients[1], &earliest, &latest).await;
        // Both slots free at once, one through each process: each
        // process's matcher may take either.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let cancels: Vec<_> = booked
            .iter()
            .zip([&first.base, &second.base])
            .map(|(id, base)| {
                let request = app
                    .client
                    .post(format!("{base}/v1/reservations/{id}/cancel"))
                    .bearer_auth(&app.staff)
                    .json(&json!({"reason": "patient moved"}));
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    crate::processes::send(request).await
                })
            })
            .collect();
        for task in cancels {
            let (status, _, body) = task.await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // Each waiting patient gets one offer.
        let mut views = Vec::new();
        for id in [&first_in_line, &next_in_line] {
            let view =
                until_reservation(&app, id, |body| body["offer"]["hold_id"].is_string()).await;
            assert!(
                view["offer"]["hold_id"].is_string(),
                "round {round}: no offer for {id}: {view}"
            );
            assert!(view["offer"]["expires_at"].is_string(), "{view}");
            views.push(view);
        }
        // Let both matchers finish whatever they were at, then count
        // every offer ever held.
        tokio::time::sleep(Duration::from_secs(1)).await;
        app.read_own_writes().await;
        let offers = offers_held(&app).await;
        let of = |reservation: &str| -> Vec<&(String, Value)> {
            offers
                .iter()
                .filter(|(_, terms)| terms["offer_for"] == json!(reservation))
                .collect()
        };
        let (mine, next) = (of(&first_in_line), of(&next_in_line));
        assert_eq!(
            mine.len(),
            1,
            "round {round}: the first in line was offered {mine:?}"
        );
        assert_eq!(
            next.len(),
            1,
            "round {round}: the second slot goes to the next: {next:?}"
        );
        assert_eq!(mine[0].1["patient_id"], json!(patients[0]));
        assert_eq!(next[0].1["patient_id"], json!(patients[1]));
        let resources = [
            &mine[0].1["slot"]["resource_id"],
            &next[0].1["slot"]["resource_id"],
        ];
        assert_ne!(resources[0], resources[1], "{offers:?}");
        assert_eq!(offers.len(), seen + 2, "no other offer: {offers:?}");
        seen = offers.len();
        for (view, (hold, _)) in views.iter().zip([mine[0], next[0]]) {
            assert_eq!(view["offer"]["hold_id"], json!(hold));
        }

        // The read side counts offers as holds.
        let availability = app
            .get(
                &format!(
                    "/v1/clinics/{}/availability?treatment_id={}&date={day}",
                    ids.clinic, ids.laser_treatment
                ),
                &app.staff,
            )
            .await;
        assert_eq!(
            availability.status,
            StatusCode::OK,
            "{:?}",
            availability.body
        );
        for (resource, start) in [(&ids.laser, &at_a), (&ids.laser_b, &at_b)] {
            let free = availability.body["slots"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|slot| {
                    slot["resource_id"] == json!(resource) && slot["start"] == json!(start)
                });
            assert!(
                !free,
                "an offered slot is offered as free: {:?}",
                availability.body
            );
        }
        let schedule = app
            .get(
                &format!("/v1/clinics/{}/schedule?date={day}", ids.clinic),
                &app.staff,
            )
            .await;
        let held: Vec<&Value> = schedule.body["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["holds"].as_array().into_iter().flatten())
            .map(|h| &h["hold_id"])
            .collect();
        assert_eq!(held.len(), 2, "{:?}", schedule.body);
        assert!(
            held.contains(&&json!(mine[0].0)) && held.contains(&&json!(next[0].0)),
            "{held:?}"
        );
        let dashboard = app
            .get(
                &format!("/v1/clinics/{}/dashboard?date={day}", ids.clinic),
                &app.analyst,
            )
            .await;
        assert_eq!(dashboard.body["counts"]["held"], 2, "{:?}", dashboard.body);
        assert_eq!(dashboard.body["revenue_cents"], 0, "{:?}", dashboard.body);

        if round == 0 {
            // A released offer closes on the patient's offers: the slot
            // passes on, and the first in line, who had it, is not offered
            // it again; the next in line's overlapping offer keeps it from
            // them too, so it stays free.
            let released = app
                .post(
                    &format!("/v1/holds/{}/release", mine[0].0),
                    &app.staff,
                    json!({}),
                )
                .await;
            assert_eq!(released.status, StatusCode::OK, "{:?}", released.body);
            let stream = clinicbook_eventstore::audit::stream_events(
                &app.db.pool,
                "PatientOffers",
                &patients[0].to_string(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let types: Vec<&str> = stream.iter().map(|e| e.event_type.as_str()).collect();
            assert_eq!(types, ["OfferOpened", "OfferClosed"]);
            tokio::time::sleep(Duration::from_secs(2)).await;
            app.read_own_writes().await;
            let offers = offers_held(&app).await;
            assert_eq!(offers.len(), seen, "{offers:?}");
            let view = app
                .get(&format!("/v1/reservations/{first_in_line}"), &app.staff)
                .await;
            assert!(view.body["offer"].is_null(), "{:?}", view.body);
        }
    }
}
