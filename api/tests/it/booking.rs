//! The staff booking routes end to end over HTTP: every route's success
//! path and error codes, the booking rules across aggregates (payment taken
//! and given back, promo limits, blocks, closures, reschedules, DST days),
//! and bad input. Every refused request is checked to write nothing.

use chrono::{DateTime, Duration, DurationRound, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{app, Answer, App, ClinicIds};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A new patient id.
fn patient() -> String {
    Uuid::new_v4().to_string()
}

fn at_clinic() -> Value {
    json!({"method": "at_clinic"})
}

fn wallet() -> Value {
    json!({"method": "wallet"})
}

fn package(package_id: &str) -> Value {
    json!({"method": "package", "package_id": package_id})
}

/// A request to book the laser treatment on laser A.
fn laser(ids: &ClinicIds, patient: &str, start: &str, payment: Value) -> Value {
    json!({"patient_id": patient, "clinic_id": ids.clinic, "resource_id": ids.laser,
           "treatment_id": ids.laser_treatment, "start": start, "payment": payment})
}

/// `body` with `field` set to `value`.
fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

/// `body` without `field`.
fn without(mut body: Value, field: &str) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.remove(field);
    }
    body
}

/// A string field of an answer.
fn text(answer: &Answer, field: &str) -> String {
    answer.body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{field}` in {:?}", answer.body))
        .to_string()
}

/// An integer field of an answer.
fn int(answer: &Answer, field: &str) -> i64 {
    answer.body[field]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer `{field}` in {:?}", answer.body))
}

/// A price breakdown as the API answers it.
fn price(base: i64, adjustments: i64, discount: i64) -> Value {
    json!({"base_cents": base, "adjustments_cents": adjustments, "discount_cents": discount,
           "total_cents": base + adjustments - discount})
}

/// Asserts a 400 problem whose detail names `field`.
fn assert_bad(answer: &Answer, field: &str, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "{what}: {:?}",
        answer.body
    );
    assert!(
        answer.content_type.starts_with("application/problem+json"),
        "{what}: {}",
        answer.content_type
    );
    assert!(
        ["invalid_request", "invalid_input"].contains(&answer.code()),
        "{what}: {:?}",
        answer.body
    );
    let detail = answer.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(field),
        "{what}: detail {detail:?} should name {field}"
    );
}

/// Asserts a 422 `inconsistent_input` problem whose detail names `field`:
/// fields each valid alone that disagree with each other or with what is
/// stored, which no schema can refuse.
fn assert_inconsistent(answer: &Answer, field: &str, what: &str) {
    answer.assert_problem(422, "inconsistent_input");
    let detail = answer.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(field),
        "{what}: detail {detail:?} should name {field}"
    );
}

/// An instant as RFC 3339 with `Z`, as the API answers instants.
fn z(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A start `hours` hours from now, cut to the hour (UTC): between
/// `hours - 1` and `hours` hours ahead, so a booking there is within a
/// 24-hour cancellation notice, and (starting on the hour) a 45-minute
/// treatment ends the same UTC day.
fn soon(hours: i64) -> String {
    let at = (Utc::now() + Duration::hours(hours))
        .duration_trunc(Duration::hours(1))
        .unwrap_or_else(|e| panic!("{e}"));
    z(at)
}

async fn book(app: &App, body: Value) -> Answer {
    app.post("/v1/reservations", &app.staff, body).await
}

/// Books and answers the reservation id, asserting 201.
async fn booked(app: &App, body: Value) -> String {
    let answer = book(app, body.clone()).await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{body}: {:?}",
        answer.body
    );
    text(&answer, "reservation_id")
}

async fn reservation(app: &App, id: &str) -> Answer {
    app.get(&format!("/v1/reservations/{id}"), &app.staff).await
}

/// The status of a reservation, read over HTTP.
async fn status(app: &App, id: &str) -> String {
    let answer = reservation(app, id).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    text(&answer, "status")
}

/// `POST /v1/reservations/{id}/{action}` without a body (check-in,
/// complete, no-show).
async fn act(app: &App, id: &str, action: &str) -> Answer {
    app.send(
        Method::POST,
        &format!("/v1/reservations/{id}/{action}"),
        Some(&app.staff),
        None,
    )
    .await
}

async fn cancel(app: &App, id: &str) -> Answer {
    app.post(
        &format!("/v1/reservations/{id}/cancel"),
        &app.staff,
        json!({"reason": "patient called"}),
    )
    .await
}

async fn reschedule(app: &App, id: &str, body: Value) -> Answer {
    app.post(
        &format!("/v1/reservations/{id}/reschedule"),
        &app.staff,
        body,
    )
    .await
}

async fn block(app: &App, resource: &str, start: &str, end: &str, emergency: bool) -> Answer {
    app.post(
        &format!("/v1/resources/{resource}/blocks"),
        &app.staff,
        json!({"start": start, "end": end, "reason": "laser service", "emergency": emergency}),
    )
    .await
}

async fn quote(app: &App, query: &str) -> Answer {
    app.get(&format!("/v1/quotes?{query}"), &app.staff).await
}

async fn promo(app: &App, body: Value) {
    let created = app.post("/v1/promo-codes", &app.admin, body.clone()).await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{body}: {:?}",
        created.body
    );
}

/// A 10 % promo code valid from 2026 to 2040.
async fn percent_promo(app: &App, code: &str, max_redemptions: u32, per_patient_limit: u32) {
    promo(
        app,
        json!({"code": code, "percent_off": 10, "valid_from": "2026-01-01T00:00:00Z",
               "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": max_redemptions,
               "per_patient_limit": per_patient_limit}),
    )
    .await;
}

/// A clinic in `timezone` with `hours` on the days named, a notice period
/// of 24 hours and a 50 % late fee, two lasers, a room and the laser
/// treatment (45 min, 15 min buffer, 120.00).
async fn clinic_in(app: &App, timezone: &str, days: &[&str], from: &str, to: &str) -> ClinicIds {
    let created = app
        .post(
            "/v1/clinics",
            &app.admin,
            json!({"name": format!("Clinic {}", Uuid::new_v4()), "timezone": timezone, "currency": "EUR",
                   "cancellation_notice_hours": 24, "late_cancel_fee_percent": 50}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let clinic = text(&created, "clinic_id");
    let mut hours = json!({});
    for day in days {
        hours[*day] = json!([[from, to]]);
    }
    let set = app
        .put(
            &format!("/v1/clinics/{clinic}/opening-hours"),
            &app.admin,
            hours,
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    let mut ids = ClinicIds {
        clinic,
        ..ClinicIds::default()
    };
    for (name, kind) in [
        ("Laser A", "device"),
        ("Laser B", "device"),
        ("Room 1", "room"),
    ] {
        let r = app
            .post(
                &format!("/v1/clinics/{}/resources", ids.clinic),
                &app.admin,
                json!({"name": name, "kind": kind}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = text(&r, "resource_id");
        match name {
            "Laser A" => ids.laser = id,
            "Laser B" => ids.laser_b = id,
            _ => ids.room = id,
        }
    }
    let t = app
        .post(
            &format!("/v1/clinics/{}/treatments", ids.clinic),
            &app.admin,
            json!({"name": "Laser hair removal", "duration_minutes": 45, "buffer_minutes": 15,
                   "price_cents": 12_000, "resource_kind": "device"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
    ids.laser_treatment = text(&t, "treatment_id");
    ids
}

const EVERY_DAY: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A UTC clinic open every day 00:00-23:59, so that there is always a slot
/// a few hours ahead of now (for late cancellations and last-minute prices).
async fn always_open(app: &App) -> ClinicIds {
    clinic_in(app, "UTC", &EVERY_DAY, "00:00", "23:59").await
}

// Money: wallets and packages.

async fn deposit(app: &App, patient: &str, cents: i64) {
    let answer = app
        .post(
            &format!("/v1/wallets/{patient}/deposits"),
            &app.staff,
            json!({"amount_cents": cents, "reference": format!("deposit-{}", Uuid::new_v4())}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
}

async fn balance(app: &App, patient: &str) -> i64 {
    let answer = app.get(&format!("/v1/wallets/{patient}"), &app.staff).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    int(&answer, "balance_cents")
}

/// A program of the laser treatment at `clinics`.
async fn program(app: &App, treatment: &str, sessions: u32, days: u32, clinics: &[&str]) -> String {
    let answer = app
        .post(
            "/v1/programs",
            &app.admin,
            json!({"name": format!("Program {}", Uuid::new_v4()), "treatment_id": treatment,
                   "sessions": sessions, "price_cents": 50_000, "validity_days": days,
                   "clinic_ids": clinics}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    text(&answer, "program_id")
}

/// A package of `program` bought by `patient`, paid outside.
async fn buy(app: &App, patient: &str, program: &str) -> String {
    let answer = app
        .post(
            "/v1/packages",
            &app.staff,
            json!({"patient_id": patient, "program_id": program,
                   "payment": {"method": "external", "reference": format!("card-{}", Uuid::new_v4())}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    text(&answer, "package_id")
}

async fn sessions_left(app: &App, package: &str) -> i64 {
    let answer = app
        .get(&format!("/v1/packages/{package}"), &app.staff)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    int(&answer, "sessions_left")
}

// ---------------------------------------------------------------------------
// Booking and the reservation's life
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_booking_answers_its_slot_price_and_position_and_reads_back_through_its_life() {
    let app = app().await;
    let ids = app.clinic().await;
    let who = patient();
    // Tuesday 10:00 in Berlin (CET, UTC+1).
    let answer = book(
        &app,
        laser(&ids, &who, "2030-01-08T10:00:00+01:00", at_clinic()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "booked");
    assert_eq!(answer.body["start"], "2030-01-08T09:00:00Z");
    assert_eq!(answer.body["end"], "2030-01-08T09:45:00Z");
    assert_eq!(answer.body["resource_id"], json!(ids.laser));
    assert_eq!(answer.body["price"], price(12_000, 0, 0));
    let position = int(&answer, "position");
    assert!(position > 0);
    assert!(
        Uuid::parse_str(&text(&answer, "reservation_id")).is_ok(),
        "the server chose a UUID"
    );
    let id = text(&answer, "reservation_id");

    let view = reservation(&app, &id).await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    assert_eq!(view.body["reservation_id"], json!(id));
    assert_eq!(view.body["status"], "booked");
    assert_eq!(view.body["patient_id"], json!(who));
    assert_eq!(view.body["clinic_id"], json!(ids.clinic));
    assert_eq!(view.body["treatment_id"], json!(ids.laser_treatment));
    assert_eq!(view.body["resource_id"], json!(ids.laser));
    assert_eq!(view.body["start"], "2030-01-08T09:00:00Z");
    assert_eq!(view.body["end"], "2030-01-08T09:45:00Z");
    assert_eq!(view.body["price"], price(12_000, 0, 0));
    assert_eq!(view.body["payment"], at_clinic());
    assert_eq!(view.body["promo_code"], Value::Null);
    assert_eq!(view.body["settlement"], Value::Null);

    let checked_in = act(&app, &id, "check-in").await;
    assert_eq!(checked_in.status, StatusCode::OK, "{:?}", checked_in.body);
    assert_eq!(checked_in.body["status"], "checked_in");
    assert_eq!(checked_in.body["reservation_id"], json!(id));
    assert!(int(&checked_in, "position") > position);
    let completed = act(&app, &id, "complete").await;
    assert_eq!(completed.status, StatusCode::OK, "{:?}", completed.body);
    assert_eq!(completed.body["status"], "completed");

    let view = reservation(&app, &id).await;
    assert_eq!(view.body["status"], "completed");
    let history: Vec<(String, String, i64)> = view.body["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history: {:?}", view.body))
        .iter()
        .map(|step| {
            (
                step["status"].as_str().unwrap_or_default().to_string(),
                step["event_type"].as_str().unwrap_or_default().to_string(),
                step["sequence"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            ("booked".into(), "ReservationBooked".into(), 1),
            ("checked_in".into(), "CheckedIn".into(), 2),
            ("completed".into(), "ReservationCompleted".into(), 3),
        ]
    );
    for step in view.body["history"].as_array().into_iter().flatten() {
        assert!(
            step["at"]
                .as_str()
                .is_some_and(|at| at.parse::<DateTime<Utc>>().is_ok()),
            "{step}"
        );
    }

    // A completed reservation takes no further step, and a refusal writes nothing.
    let before = app.events().await;
    for action in ["check-in", "complete", "no-show"] {
        act(&app, &id, action)
            .await
            .assert_problem(409, "invalid_transition");
    }
    cancel(&app, &id)
        .await
        .assert_problem(409, "invalid_transition");
    reschedule(&app, &id, json!({"start": "2030-01-09T09:00:00Z"}))
        .await
        .assert_problem(409, "invalid_transition");
    assert_eq!(app.events().await, before);

    // An admin may do what staff do.
    let by_admin = app
        .post(
            "/v1/reservations",
            &app.admin,
            laser(&ids, &patient(), "2030-01-08T12:00:00Z", at_clinic()),
        )
        .await;
    assert_eq!(by_admin.status, StatusCode::CREATED, "{:?}", by_admin.body);
}

#[tokio::test]
async fn complete_needs_a_check_in_and_unknown_reservations_are_not_found() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let before = app.events().await;
    act(&app, &id, "complete")
        .await
        .assert_problem(409, "invalid_transition");
    let unknown = Uuid::new_v4().to_string();
    for action in ["check-in", "complete", "no-show"] {
        act(&app, &unknown, action)
            .await
            .assert_problem(404, "not_found");
    }
    cancel(&app, &unknown)
        .await
        .assert_problem(404, "not_found");
    reschedule(&app, &unknown, json!({"start": "2030-01-09T09:00:00Z"}))
        .await
        .assert_problem(404, "not_found");
    reservation(&app, &unknown)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(app.events().await, before);
    assert_eq!(status(&app, &id).await, "booked");
}

#[tokio::test]
async fn a_slot_and_its_buffer_are_taken_on_that_resource_only() {
    let app = app().await;
    let ids = app.clinic().await;
    // 10:00-10:45 local, the laser busy until 11:00 (15 min buffer).
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let before = app.events().await;
    for (start, why) in [
        ("2030-01-08T09:00:00Z", "the same slot"),
        (
            "2030-01-08T09:50:00Z",
            "inside the previous booking's buffer",
        ),
        (
            "2030-01-08T09:45:00Z",
            "at the end of the appointment, in its buffer",
        ),
        ("2030-01-08T08:30:00Z", "overlapping the appointment"),
        (
            "2030-01-08T08:05:00Z",
            "its own buffer overlapping the next appointment",
        ),
    ] {
        let answer = book(&app, laser(&ids, &patient(), start, at_clinic())).await;
        assert_eq!(
            answer.code(),
            "slot_unavailable",
            "{why}: {:?}",
            answer.body
        );
        answer.assert_problem(409, "slot_unavailable");
    }
    assert_eq!(app.events().await, before, "refused bookings write nothing");
    // Right after the buffer, and a booking whose buffer ends as the next starts.
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T10:00:00Z", at_clinic()),
    )
    .await;
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T08:00:00Z", at_clinic()),
    )
    .await;
    // The other laser is free at the same time.
    let other = with(
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
        "resource_id",
        json!(ids.laser_b),
    );
    booked(&app, other).await;
}

#[tokio::test]
async fn a_booking_must_start_in_the_future_inside_opening_hours_and_end_the_same_day() {
    let app = app().await;
    let ids = app.clinic().await;
    let open = always_open(&app).await;
    let before = app.events().await;
    for (clinic, start, code, why) in [
        (
            &ids,
            "2030-01-08T07:30:00Z",
            "outside_opening_hours",
            "08:30 local, before opening",
        ),
        (
            &ids,
            "2030-01-08T16:30:00Z",
            "outside_opening_hours",
            "17:30 local, ends after closing",
        ),
        (
            &ids,
            "2030-01-13T10:00:00Z",
            "outside_opening_hours",
            "a Sunday",
        ),
        (&ids, "2024-01-09T09:00:00Z", "in_the_past", "in the past"),
        (
            &open,
            "2030-01-08T23:30:00Z",
            "outside_opening_hours",
            "ends the next day",
        ),
    ] {
        let answer = book(&app, laser(clinic, &patient(), start, at_clinic())).await;
        assert_eq!(answer.code(), code, "{why}: {:?}", answer.body);
        answer.assert_problem(422, code);
    }
    assert_eq!(app.events().await, before, "refused bookings write nothing");
    // 17:15 local ends at 18:00 sharp: inside (the buffer may pass closing).
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T16:15:00Z", at_clinic()),
    )
    .await;
    booked(
        &app,
        laser(&open, &patient(), "2030-01-08T23:00:00Z", at_clinic()),
    )
    .await;
}

#[tokio::test]
async fn unknown_ids_and_resources_of_the_wrong_kind_are_refused_and_write_nothing() {
    let app = app().await;
    let ids = app.clinic().await;
    let elsewhere = always_open(&app).await;
    let who = patient();
    let good = laser(&ids, &who, "2030-01-08T09:00:00Z", at_clinic());
    let unknown = json!(Uuid::new_v4());
    let before = app.events().await;
    for (field, value, why) in [
        ("clinic_id", unknown.clone(), "unknown clinic"),
        ("resource_id", unknown.clone(), "unknown resource"),
        ("treatment_id", unknown.clone(), "unknown treatment"),
        (
            "resource_id",
            json!(elsewhere.laser),
            "another clinic's resource",
        ),
        (
            "treatment_id",
            json!(elsewhere.laser_treatment),
            "another clinic's treatment",
        ),
        (
            "payment",
            package(&Uuid::new_v4().to_string()),
            "unknown package",
        ),
        ("promo_code", json!("NO-SUCH-CODE"), "unknown promo code"),
    ] {
        let answer = book(&app, with(good.clone(), field, value)).await;
        assert_eq!(answer.code(), "not_found", "{why}: {:?}", answer.body);
        answer.assert_problem(404, "not_found");
    }
    book(&app, with(good.clone(), "resource_id", json!(ids.room)))
        .await
        .assert_problem(422, "resource_kind_mismatch");
    let consultation = json!({"patient_id": who, "clinic_id": ids.clinic, "resource_id": ids.laser,
                              "treatment_id": ids.consultation, "start": "2030-01-08T09:00:00Z",
                              "payment": at_clinic()});
    book(&app, consultation.clone())
        .await
        .assert_problem(422, "resource_kind_mismatch");
    assert_eq!(app.events().await, before, "refused bookings write nothing");
    // The same consultation on the practitioner is fine.
    booked(&app, with(consultation, "resource_id", json!(ids.doctor))).await;
}

#[tokio::test]
async fn a_booking_retried_with_its_id_answers_the_same_and_a_reused_id_is_an_invalid_transition() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = Uuid::new_v4().to_string();
    let body = with(
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
        "reservation_id",
        json!(id),
    );
    let first = book(&app, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.body["reservation_id"], json!(id));
    let events = app.events().await;
    let again = book(&app, body.clone()).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    for field in [
        "reservation_id",
        "status",
        "resource_id",
        "start",
        "end",
        "price",
    ] {
        assert_eq!(again.body[field], first.body[field], "{field}");
    }
    assert_eq!(app.events().await, events, "a retry writes nothing");
    // The same id for another booking.
    let other = with(body.clone(), "start", json!("2030-01-08T11:00:00Z"));
    book(&app, other)
        .await
        .assert_problem(409, "invalid_transition");
    let other_patient = with(body, "patient_id", json!(patient()));
    book(&app, other_patient)
        .await
        .assert_problem(409, "invalid_transition");
    assert_eq!(app.events().await, events);
}

#[tokio::test]
async fn an_idempotency_key_replays_a_booking_and_refuses_another_body() {
    let app = app().await;
    let ids = app.clinic().await;
    let body = laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic());
    let send = |body: Value| {
        app.client
            .post(format!("{}/v1/reservations", app.base))
            .bearer_auth(&app.staff)
            .header("idempotency-key", "book-once")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap_or(Value::Null);
    let events = app.events().await;
    let second = send(body.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap_or(Value::Null);
    assert_eq!(
        second, first,
        "the replay is the first answer, position included"
    );
    assert_eq!(app.events().await, events);
    let other = send(with(body, "start", json!("2030-01-08T12:00:00Z")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let other: Value = other.json().await.unwrap_or(Value::Null);
    assert_eq!(other["code"], "idempotency_key_reused");
    assert_eq!(app.events().await, events);
}

#[tokio::test]
async fn a_wallet_booking_without_funds_is_refused_and_leaves_the_slot_free() {
    let app = app().await;
    let ids = app.clinic().await;
    let who = patient();
    let before = app.events().await;
    let answer = book(&app, laser(&ids, &who, "2030-01-08T09:00:00Z", wallet())).await;
    answer.assert_problem(422, "insufficient_funds");
    assert_eq!(app.events().await, before);
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
}

// ---------------------------------------------------------------------------
// Promo codes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn promo_codes_discount_the_price_and_are_refused_when_expired_exhausted_over_the_limit_or_off(
) {
    let app = app().await;
    let ids = app.clinic().await;
    percent_promo(&app, "ONCE", 1, 1).await;
    percent_promo(&app, "EACH", 10, 1).await;
    percent_promo(&app, "OFF", 10, 10).await;
    promo(
        &app,
        json!({"code": "FIVER", "amount_off_cents": 500, "valid_from": "2026-01-01T00:00:00Z",
               "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": 10, "per_patient_limit": 10}),
    )
    .await;
    promo(
        &app,
        json!({"code": "OLD", "percent_off": 50, "valid_from": "2020-01-01T00:00:00Z",
               "valid_until": "2021-01-01T00:00:00Z", "max_redemptions": 10, "per_patient_limit": 10}),
    )
    .await;
    promo(
        &app,
        json!({"code": "LATER", "percent_off": 50, "valid_from": "2035-01-01T00:00:00Z",
               "valid_until": "2036-01-01T00:00:00Z", "max_redemptions": 10, "per_patient_limit": 10}),
    )
    .await;
    promo(
        &app,
        json!({"code": "TALK", "percent_off": 50, "valid_from": "2026-01-01T00:00:00Z",
               "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": 10, "per_patient_limit": 10,
               "treatment_ids": [ids.consultation]}),
    )
    .await;
    let off = app
        .post("/v1/promo-codes/OFF/deactivate", &app.admin, json!(null))
        .await;
    assert_eq!(off.status, StatusCode::OK, "{:?}", off.body);

    let (alice, bob) = (patient(), patient());
    let slot = |hour: u32| format!("2030-01-08T{hour:02}:00:00Z");
    let with_code = |who: &str, hour: u32, code: &str| {
        with(
            laser(&ids, who, &slot(hour), at_clinic()),
            "promo_code",
            json!(code),
        )
    };

    // Any case, surrounding blanks ignored.
    let once = book(&app, with_code(&alice, 8, " once ")).await;
    assert_eq!(once.status, StatusCode::CREATED, "{:?}", once.body);
    assert_eq!(once.body["price"], price(12_000, 0, 1_200));
    let view = reservation(&app, &text(&once, "reservation_id")).await;
    assert_eq!(view.body["promo_code"], "ONCE");
    let fiver = book(&app, with_code(&alice, 9, "FIVER")).await;
    assert_eq!(fiver.status, StatusCode::CREATED, "{:?}", fiver.body);
    assert_eq!(fiver.body["price"], price(12_000, 0, 500));
    let each = book(&app, with_code(&alice, 10, "EACH")).await;
    assert_eq!(each.status, StatusCode::CREATED, "{:?}", each.body);

    let before = app.events().await;
    for (who, code, expected) in [
        (&bob, "ONCE", "promo_exhausted"),
        (&alice, "EACH", "promo_limit_per_patient"),
        (&bob, "OFF", "promo_inactive"),
        (&bob, "OLD", "promo_expired"),
        (&bob, "LATER", "promo_expired"),
        (&bob, "TALK", "promo_not_applicable"),
    ] {
        let answer = book(&app, with_code(who, 12, code)).await;
        assert_eq!(answer.code(), expected, "{code}: {:?}", answer.body);
        answer.assert_problem(422, expected);
    }
    let malformed = book(&app, with_code(&bob, 12, "no spaces!")).await;
    assert_bad(&malformed, "promo_code", "a malformed promo code");
    assert_eq!(
        app.events().await,
        before,
        "refused promo codes write nothing"
    );
    // The slot the refused bookings wanted is still free; another patient
    // may still use EACH; a blank code means none.
    let each_bob = book(&app, with_code(&bob, 12, "EACH")).await;
    assert_eq!(each_bob.status, StatusCode::CREATED, "{:?}", each_bob.body);
    let blank = book(&app, with_code(&bob, 14, "  ")).await;
    assert_eq!(blank.status, StatusCode::CREATED, "{:?}", blank.body);
    assert_eq!(blank.body["price"], price(12_000, 0, 0));
}

#[tokio::test]
async fn a_timely_cancellation_gives_the_promo_redemption_back_and_a_late_one_keeps_it() {
    let app = app().await;
    let ids = app.clinic().await;
    let open = always_open(&app).await;
    percent_promo(&app, "ONE-EACH", 100, 1).await;
    let who = patient();
    let on_time = booked(
        &app,
        with(
            laser(&ids, &who, "2030-01-08T09:00:00Z", at_clinic()),
            "promo_code",
            json!("ONE-EACH"),
        ),
    )
    .await;
    let cancelled = cancel(&app, &on_time).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["late"], false);
    // Released: the patient may use the code again.
    let late = booked(
        &app,
        with(
            laser(&open, &who, &soon(3), at_clinic()),
            "promo_code",
            json!("ONE-EACH"),
        ),
    )
    .await;
    let cancelled = cancel(&app, &late).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["late"], true);
    // 50 % of the discounted price (12 000 - 1 200) is owed at the clinic.
    assert_eq!(cancelled.body["fee_cents"], 5_400);
    let again = book(
        &app,
        with(
            laser(&ids, &who, "2030-01-09T09:00:00Z", at_clinic()),
            "promo_code",
            json!("ONE-EACH"),
        ),
    )
    .await;
    again.assert_problem(422, "promo_limit_per_patient");
}

#[tokio::test]
async fn a_redemption_given_back_by_a_cancellation_or_a_displacement_frees_a_place_under_the_limit()
{
    let app = app().await;
    let ids = app.clinic().await;
    percent_promo(&app, "ONLY-ONE", 1, 1).await;
    let with_code = |who: &str, start: &str| {
        with(
            laser(&ids, who, start, at_clinic()),
            "promo_code",
            json!("ONLY-ONE"),
        )
    };
    let (ann, ben, cem) = (patient(), patient(), patient());
    let first = booked(&app, with_code(&ann, "2030-01-08T09:00:00Z")).await;
    book(&app, with_code(&ben, "2030-01-08T11:00:00Z"))
        .await
        .assert_problem(422, "promo_exhausted");
    assert_eq!(cancel(&app, &first).await.status, StatusCode::OK);
    let second = booked(&app, with_code(&ben, "2030-01-08T11:00:00Z")).await;
    book(&app, with_code(&cem, "2030-01-08T13:00:00Z"))
        .await
        .assert_problem(422, "promo_exhausted");
    let blocked = block(
        &app,
        &ids.laser,
        "2030-01-08T10:30:00Z",
        "2030-01-08T12:00:00Z",
        true,
    )
    .await;
    assert_eq!(
        blocked.body["displaced"],
        json!([second]),
        "{:?}",
        blocked.body
    );
    let third = book(&app, with_code(&cem, "2030-01-08T13:00:00Z")).await;
    assert_eq!(third.status, StatusCode::CREATED, "{:?}", third.body);
    assert_eq!(third.body["price"], price(12_000, 0, 1_200));
}

#[tokio::test]
async fn a_booking_whose_promo_takes_the_whole_price_needs_no_wallet_funds() {
    let app = app().await;
    let ids = app.clinic().await;
    promo(
        &app,
        json!({"code": "ON-US", "percent_off": 100, "valid_from": "2026-01-01T00:00:00Z",
               "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": 10, "per_patient_limit": 10}),
    )
    .await;
    promo(
        &app,
        json!({"code": "BIG-NOTE", "amount_off_cents": 50_000, "valid_from": "2026-01-01T00:00:00Z",
               "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": 10, "per_patient_limit": 10}),
    )
    .await;
    let who = patient();
    for (code, start) in [
        ("ON-US", "2030-01-08T09:00:00Z"),
        ("BIG-NOTE", "2030-01-08T11:00:00Z"),
    ] {
        let free = book(
            &app,
            with(
                laser(&ids, &who, start, wallet()),
                "promo_code",
                json!(code),
            ),
        )
        .await;
        assert_eq!(free.status, StatusCode::CREATED, "{code}: {:?}", free.body);
        assert_eq!(
            free.body["price"],
            price(12_000, 0, 12_000),
            "{code}: the discount never exceeds the price"
        );
        let cancelled = cancel(&app, &text(&free, "reservation_id")).await;
        assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
        assert_eq!(cancelled.body["refund_cents"], 0);
    }
}

// ---------------------------------------------------------------------------
// Cancellation and no-show (paid at the clinic)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_timely_cancellation_frees_the_slot_and_charges_nothing() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let cancelled = cancel(&app, &id).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["reservation_id"], json!(id));
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(cancelled.body["refund_cents"], 0);
    assert_eq!(cancelled.body["fee_cents"], 0);
    assert_eq!(cancelled.body["session_restored"], false);
    assert_eq!(cancelled.body["late"], false);
    assert!(int(&cancelled, "position") > 0);

    let view = reservation(&app, &id).await;
    assert_eq!(view.body["status"], "cancelled");
    assert_eq!(
        view.body["settlement"],
        json!({"late": false, "refund_cents": 0, "fee_cents": 0, "session_restored": false})
    );
    let steps: Vec<&str> = view.body["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["event_type"].as_str())
        .collect();
    assert_eq!(steps, ["ReservationBooked", "ReservationCancelled"]);

    let before = app.events().await;
    cancel(&app, &id)
        .await
        .assert_problem(409, "invalid_transition");
    act(&app, &id, "check-in")
        .await
        .assert_problem(409, "invalid_transition");
    assert_eq!(app.events().await, before);
    // The slot is free again.
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
}

#[tokio::test]
async fn a_late_cancellation_of_a_booking_paid_at_the_clinic_owes_the_late_fee() {
    let app = app().await;
    let open = always_open(&app).await;
    let id = booked(&app, laser(&open, &patient(), &soon(3), at_clinic())).await;
    let cancelled = cancel(&app, &id).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["late"], true);
    assert_eq!(cancelled.body["fee_cents"], 6_000);
    assert_eq!(cancelled.body["refund_cents"], 0);
    assert_eq!(cancelled.body["session_restored"], false);
}

#[tokio::test]
async fn a_no_show_keeps_the_slot_taken_and_owes_the_whole_price() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let no_show = act(&app, &id, "no-show").await;
    assert_eq!(no_show.status, StatusCode::OK, "{:?}", no_show.body);
    assert_eq!(no_show.body["status"], "no_show");
    let view = reservation(&app, &id).await;
    assert_eq!(view.body["status"], "no_show");
    assert_eq!(
        view.body["settlement"],
        json!({"late": true, "refund_cents": 0, "fee_cents": 12_000, "session_restored": false})
    );
    let before = app.events().await;
    book(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await
    .assert_problem(409, "slot_unavailable");
    for action in ["check-in", "no-show"] {
        act(&app, &id, action)
            .await
            .assert_problem(409, "invalid_transition");
    }
    cancel(&app, &id)
        .await
        .assert_problem(409, "invalid_transition");
    assert_eq!(app.events().await, before);
}

// ---------------------------------------------------------------------------
// Wallets and packages (the money routes)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_wallet_booking_is_refunded_in_full_on_time_and_less_the_late_fee_when_late() {
    let app = app().await;
    let ids = app.clinic().await;
    let open = always_open(&app).await;
    let who = patient();
    deposit(&app, &who, 50_000).await;
    let id = booked(&app, laser(&ids, &who, "2030-01-08T09:00:00Z", wallet())).await;
    assert_eq!(balance(&app, &who).await, 38_000);
    let cancelled = cancel(&app, &id).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(
        (
            &cancelled.body["refund_cents"],
            &cancelled.body["fee_cents"],
            &cancelled.body["late"]
        ),
        (&json!(12_000), &json!(0), &json!(false))
    );
    assert_eq!(balance(&app, &who).await, 50_000);

    let late = booked(&app, laser(&open, &who, &soon(3), wallet())).await;
    assert_eq!(balance(&app, &who).await, 38_000);
    let cancelled = cancel(&app, &late).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(
        (
            &cancelled.body["refund_cents"],
            &cancelled.body["fee_cents"],
            &cancelled.body["late"]
        ),
        (&json!(6_000), &json!(6_000), &json!(true))
    );
    assert_eq!(balance(&app, &who).await, 44_000);

    // A no-show forfeits the whole wallet payment.
    let missed = booked(&app, laser(&ids, &who, "2030-01-09T09:00:00Z", wallet())).await;
    assert_eq!(balance(&app, &who).await, 32_000);
    let no_show = act(&app, &missed, "no-show").await;
    assert_eq!(no_show.status, StatusCode::OK, "{:?}", no_show.body);
    assert_eq!(balance(&app, &who).await, 32_000);

    // Not enough left for the next one: refused, nothing written.
    let poor = patient();
    deposit(&app, &poor, 11_999).await;
    let before = app.events().await;
    book(&app, laser(&ids, &poor, "2030-01-10T09:00:00Z", wallet()))
        .await
        .assert_problem(422, "insufficient_funds");
    assert_eq!(app.events().await, before);
    assert_eq!(balance(&app, &poor).await, 11_999);
}

#[tokio::test]
async fn a_package_session_comes_back_on_a_timely_cancel_and_is_forfeited_on_no_show() {
    let app = app().await;
    let ids = app.clinic().await;
    let who = patient();
    let plan = program(&app, &ids.laser_treatment, 3, 3650, &[&ids.clinic]).await;
    let pack = buy(&app, &who, &plan).await;
    assert_eq!(sessions_left(&app, &pack).await, 3);

    let id = booked(
        &app,
        laser(&ids, &who, "2030-01-08T09:00:00Z", package(&pack)),
    )
    .await;
    assert_eq!(sessions_left(&app, &pack).await, 2);
    let cancelled = cancel(&app, &id).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["session_restored"], true);
    assert_eq!(cancelled.body["refund_cents"], 0);
    assert_eq!(sessions_left(&app, &pack).await, 3);

    let missed = booked(
        &app,
        laser(&ids, &who, "2030-01-09T09:00:00Z", package(&pack)),
    )
    .await;
    assert_eq!(sessions_left(&app, &pack).await, 2);
    let no_show = act(&app, &missed, "no-show").await;
    assert_eq!(no_show.status, StatusCode::OK, "{:?}", no_show.body);
    assert_eq!(
        sessions_left(&app, &pack).await,
        2,
        "a no-show forfeits the session"
    );
    let view = reservation(&app, &missed).await;
    assert_eq!(view.body["settlement"]["session_restored"], false);
    assert_eq!(view.body["payment"], package(&pack));
}

#[tokio::test]
async fn a_late_cancellation_forfeits_the_package_session() {
    let app = app().await;
    let open = always_open(&app).await;
    let who = patient();
    let plan = program(&app, &open.laser_treatment, 2, 30, &[&open.clinic]).await;
    let pack = buy(&app, &who, &plan).await;
    let id = booked(&app, laser(&open, &who, &soon(3), package(&pack))).await;
    assert_eq!(sessions_left(&app, &pack).await, 1);
    let cancelled = cancel(&app, &id).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["late"], true);
    assert_eq!(cancelled.body["session_restored"], false);
    assert_eq!(cancelled.body["fee_cents"], 0, "the session is the fee");
    assert_eq!(sessions_left(&app, &pack).await, 1);
}

#[tokio::test]
async fn package_refusals_no_sessions_expired_elsewhere_other_treatment_or_patient_write_nothing() {
    let app = app().await;
    let ids = app.clinic().await;
    // A second clinic offering the same laser treatment (same treatment id).
    let other = clinic_in(
        &app,
        "Europe/Berlin",
        &["mon", "tue", "wed", "thu", "fri"],
        "08:00",
        "20:00",
    )
    .await;
    let same = app
        .post(
            &format!("/v1/clinics/{}/treatments", other.clinic),
            &app.admin,
            json!({"treatment_id": ids.laser_treatment, "name": "Laser (fixture)", "duration_minutes": 45,
                   "buffer_minutes": 15, "price_cents": 12_000, "resource_kind": "device"}),
        )
        .await;
    assert_eq!(same.status, StatusCode::CREATED, "{:?}", same.body);

    let who = patient();
    let single = buy(
        &app,
        &who,
        &program(&app, &ids.laser_treatment, 1, 3650, &[&ids.clinic]).await,
    )
    .await;
    let short = buy(
        &app,
        &who,
        &program(&app, &ids.laser_treatment, 5, 1, &[&ids.clinic]).await,
    )
    .await;
    booked(
        &app,
        laser(&ids, &who, "2030-01-08T09:00:00Z", package(&single)),
    )
    .await;
    let valid_here_only = buy(
        &app,
        &who,
        &program(&app, &ids.laser_treatment, 5, 3650, &[&ids.clinic]).await,
    )
    .await;

    let before = app.events().await;
    book(
        &app,
        laser(&ids, &who, "2030-01-08T11:00:00Z", package(&single)),
    )
    .await
    .assert_problem(422, "no_sessions_left");
    book(
        &app,
        laser(&ids, &who, "2030-01-08T11:00:00Z", package(&short)),
    )
    .await
    .assert_problem(422, "package_expired");
    let at_other = json!({"patient_id": who, "clinic_id": other.clinic, "resource_id": other.laser,
                          "treatment_id": ids.laser_treatment, "start": "2030-01-08T11:00:00Z",
                          "payment": package(&valid_here_only)});
    book(&app, at_other.clone())
        .await
        .assert_problem(422, "package_not_valid_here");
    let consultation = json!({"patient_id": who, "clinic_id": ids.clinic, "resource_id": ids.doctor,
                              "treatment_id": ids.consultation, "start": "2030-01-08T11:00:00Z",
                              "payment": package(&valid_here_only)});
    book(&app, consultation)
        .await
        .assert_problem(422, "package_not_for_treatment");
    let stranger = book(
        &app,
        laser(
            &ids,
            &patient(),
            "2030-01-08T11:00:00Z",
            package(&valid_here_only),
        ),
    )
    .await;
    assert_inconsistent(&stranger, "package_id", "another patient's package");
    assert_eq!(
        app.events().await,
        before,
        "refused package bookings write nothing"
    );
    assert_eq!(sessions_left(&app, &valid_here_only).await, 5);
    // At the other clinic it may be paid otherwise.
    booked(&app, with(at_other, "payment", at_clinic())).await;
}

#[tokio::test]
async fn an_emergency_block_displaces_bookings_and_gives_back_wallet_money_and_package_sessions() {
    let app = app().await;
    let ids = app.clinic().await;
    let who = patient();
    deposit(&app, &who, 20_000).await;
    let pack = buy(
        &app,
        &who,
        &program(&app, &ids.laser_treatment, 2, 3650, &[&ids.clinic]).await,
    )
    .await;
    let by_wallet = booked(&app, laser(&ids, &who, "2030-01-08T09:00:00Z", wallet())).await;
    let by_package = booked(
        &app,
        laser(&ids, &who, "2030-01-08T11:00:00Z", package(&pack)),
    )
    .await;
    assert_eq!(balance(&app, &who).await, 8_000);
    assert_eq!(sessions_left(&app, &pack).await, 1);
    let blocked = block(
        &app,
        &ids.laser,
        "2030-01-08T08:00:00Z",
        "2030-01-08T13:00:00Z",
        true,
    )
    .await;
    assert_eq!(blocked.status, StatusCode::CREATED, "{:?}", blocked.body);
    assert_eq!(blocked.body["displaced"], json!([by_wallet, by_package]));
    assert_eq!(balance(&app, &who).await, 20_000);
    assert_eq!(sessions_left(&app, &pack).await, 2);
    let view = reservation(&app, &by_wallet).await;
    assert_eq!(
        view.body["settlement"],
        json!({"late": false, "refund_cents": 12_000, "fee_cents": 0, "session_restored": false})
    );
}

#[tokio::test]
async fn a_closure_gives_back_the_wallet_payment_and_package_session_of_every_displaced_booking() {
    let app = app().await;
    let ids = app.clinic().await;
    let (ann, ben) = (patient(), patient());
    deposit(&app, &ann, 12_000).await;
    deposit(&app, &ben, 12_000).await;
    let pack = buy(
        &app,
        &ann,
        &program(&app, &ids.laser_treatment, 1, 3650, &[&ids.clinic]).await,
    )
    .await;
    let third = booked(
        &app,
        laser(&ids, &ann, "2030-01-09T14:00:00Z", package(&pack)),
    )
    .await;
    assert_eq!(sessions_left(&app, &pack).await, 0);
    let first = booked(&app, laser(&ids, &ann, "2030-01-09T09:00:00Z", wallet())).await;
    let second = booked(
        &app,
        with(
            laser(&ids, &ben, "2030-01-09T09:00:00Z", wallet()),
            "resource_id",
            json!(ids.laser_b),
        ),
    )
    .await;
    assert_eq!(
        (balance(&app, &ann).await, balance(&app, &ben).await),
        (0, 0)
    );
    let closed = app
        .post(
            &format!("/v1/clinics/{}/closures", ids.clinic),
            &app.admin,
            json!({"start": "2030-01-08T23:00:00Z", "end": "2030-01-09T23:00:00Z", "reason": "flood"}),
        )
        .await;
    assert_eq!(closed.status, StatusCode::CREATED, "{:?}", closed.body);
    let mut displaced: Vec<String> = closed.body["displaced"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    displaced.sort();
    let mut expected = vec![first, second, third];
    expected.sort();
    assert_eq!(displaced, expected);
    assert_eq!(
        (balance(&app, &ann).await, balance(&app, &ben).await),
        (12_000, 12_000)
    );
    assert_eq!(sessions_left(&app, &pack).await, 1);
}

// ---------------------------------------------------------------------------
// Waitlist
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_waitlist_entry_is_booked_inside_its_window_or_cancelled() {
    let app = app().await;
    let ids = app.clinic().await;
    let who = patient();
    let entry = json!({"patient_id": who, "clinic_id": ids.clinic, "treatment_id": ids.laser_treatment,
                       "earliest": "2030-01-08T08:00:00Z", "latest": "2030-01-08T12:00:00+01:00",
                       "payment": at_clinic()});
    let joined = app.post("/v1/waitlist", &app.staff, entry.clone()).await;
    assert_eq!(joined.status, StatusCode::CREATED, "{:?}", joined.body);
    assert_eq!(joined.body["status"], "waitlisted");
    assert!(int(&joined, "position") > 0);
    let id = text(&joined, "reservation_id");
    let view = reservation(&app, &id).await;
    assert_eq!(view.body["status"], "waitlisted");
    assert_eq!(view.body["earliest"], "2030-01-08T08:00:00Z");
    assert_eq!(view.body["latest"], "2030-01-08T11:00:00Z");
    assert_eq!(view.body["start"], Value::Null);
    assert_eq!(view.body["resource_id"], Value::Null);
    assert_eq!(view.body["price"], Value::Null);
    assert_eq!(view.body["history"][0]["event_type"], "WaitlistJoined");
    assert_eq!(view.body["history"][0]["status"], "waitlisted");

    let before = app.events().await;
    reschedule(&app, &id, json!({"start": "2030-01-08T09:00:00Z"}))
        .await
        .assert_problem(409, "invalid_transition");
    for action in ["check-in", "complete", "no-show"] {
        act(&app, &id, action)
            .await
            .assert_problem(409, "invalid_transition");
    }
    let outside = book(
        &app,
        with(
            laser(&ids, &who, "2030-01-08T13:00:00Z", at_clinic()),
            "reservation_id",
            json!(id),
        ),
    )
    .await;
    assert_inconsistent(&outside, "start", "a start outside the wanted window");
    let someone_else = book(
        &app,
        with(
            laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
            "reservation_id",
            json!(id),
        ),
    )
    .await;
    assert_inconsistent(
        &someone_else,
        "patient_id",
        "another patient's waitlist entry",
    );
    assert_eq!(app.events().await, before);

    let fulfilled = book(
        &app,
        with(
            laser(&ids, &who, "2030-01-08T09:00:00Z", at_clinic()),
            "reservation_id",
            json!(id),
        ),
    )
    .await;
    assert_eq!(
        fulfilled.status,
        StatusCode::CREATED,
        "{:?}",
        fulfilled.body
    );
    assert_eq!(fulfilled.body["reservation_id"], json!(id));
    assert_eq!(fulfilled.body["status"], "booked");
    let view = reservation(&app, &id).await;
    let statuses: Vec<&str> = view.body["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert_eq!(statuses, ["waitlisted", "booked"]);

    // Another entry, cancelled: nothing to settle.
    let second = app
        .post(
            "/v1/waitlist",
            &app.staff,
            with(entry, "patient_id", json!(patient())),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);
    let cancelled = cancel(&app, &text(&second, "reservation_id")).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(cancelled.body["refund_cents"], 0);
    assert_eq!(cancelled.body["fee_cents"], 0);
    assert_eq!(cancelled.body["late"], false);
}

#[tokio::test]
async fn waitlist_refusals_write_nothing() {
    let app = app().await;
    let ids = app.clinic().await;
    let entry = json!({"patient_id": patient(), "clinic_id": ids.clinic, "treatment_id": ids.laser_treatment,
                       "earliest": "2030-01-08T08:00:00Z", "latest": "2030-01-08T12:00:00Z",
                       "payment": at_clinic()});
    let post = |body: Value| app.post("/v1/waitlist", &app.staff, body);
    let before = app.events().await;
    let reversed = post(with(entry.clone(), "latest", json!("2030-01-08T07:00:00Z"))).await;
    assert_inconsistent(&reversed, "latest", "latest before earliest");
    post(with(
        with(entry.clone(), "earliest", json!("2024-01-01T08:00:00Z")),
        "latest",
        json!("2024-01-02T08:00:00Z"),
    ))
    .await
    .assert_problem(422, "in_the_past");
    post(with(entry.clone(), "clinic_id", json!(Uuid::new_v4())))
        .await
        .assert_problem(404, "not_found");
    post(with(entry.clone(), "treatment_id", json!(Uuid::new_v4())))
        .await
        .assert_problem(404, "not_found");
    post(with(
        entry.clone(),
        "payment",
        package(&Uuid::new_v4().to_string()),
    ))
    .await
    .assert_problem(404, "not_found");
    let unknown = post(with(entry.clone(), "wanted", json!("soon"))).await;
    assert_bad(&unknown, "wanted", "an unknown field");
    let missing = post(without(entry, "earliest")).await;
    assert_bad(&missing, "earliest", "a missing field");
    assert_eq!(app.events().await, before);
}

// ---------------------------------------------------------------------------
// Blocks and closures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_block_makes_time_unbookable_and_over_a_booking_is_refused_unless_emergency() {
    let app = app().await;
    let ids = app.clinic().await;
    let first = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let second = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T11:00:00Z", at_clinic()),
    )
    .await;
    let on_b = booked(
        &app,
        with(
            laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
            "resource_id",
            json!(ids.laser_b),
        ),
    )
    .await;

    let before = app.events().await;
    block(
        &app,
        &ids.laser,
        "2030-01-08T08:30:00Z",
        "2030-01-08T10:00:00Z",
        false,
    )
    .await
    .assert_problem(409, "slot_unavailable");
    // Touching the buffer of the 11:00Z booking (busy until 12:00Z) counts.
    block(
        &app,
        &ids.laser,
        "2030-01-08T11:50:00Z",
        "2030-01-08T12:30:00Z",
        false,
    )
    .await
    .assert_problem(409, "slot_unavailable");
    assert_eq!(app.events().await, before);

    let quiet = block(
        &app,
        &ids.laser,
        "2030-01-08T13:00:00Z",
        "2030-01-08T14:00:00Z",
        false,
    )
    .await;
    assert_eq!(quiet.status, StatusCode::CREATED, "{:?}", quiet.body);
    assert_eq!(quiet.body["displaced"], json!([]));
    assert!(Uuid::parse_str(&text(&quiet, "block_id")).is_ok());
    let before = app.events().await;
    for start in [
        "2030-01-08T13:00:00Z",
        "2030-01-08T12:30:00Z",
        "2030-01-08T13:45:00Z",
    ] {
        book(&app, laser(&ids, &patient(), start, at_clinic()))
            .await
            .assert_problem(409, "slot_unavailable");
    }
    assert_eq!(app.events().await, before);

    let emergency = block(
        &app,
        &ids.laser,
        "2030-01-08T08:00:00Z",
        "2030-01-08T12:00:00Z",
        true,
    )
    .await;
    assert_eq!(
        emergency.status,
        StatusCode::CREATED,
        "{:?}",
        emergency.body
    );
    assert_eq!(
        emergency.body["displaced"],
        json!([first, second]),
        "displaced in start order"
    );
    assert!(int(&emergency, "position") > 0);
    for id in [&first, &second] {
        let view = reservation(&app, id).await;
        assert_eq!(view.body["status"], "displaced");
        assert_eq!(
            view.body["settlement"],
            json!({"late": false, "refund_cents": 0, "fee_cents": 0, "session_restored": false})
        );
        assert_eq!(
            view.body["history"][1]["event_type"], "ReservationDisplaced",
            "{:?}",
            view.body
        );
    }
    assert_eq!(
        status(&app, &on_b).await,
        "booked",
        "the other laser keeps its booking"
    );
    let before = app.events().await;
    book(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await
    .assert_problem(409, "slot_unavailable");
    cancel(&app, &first)
        .await
        .assert_problem(409, "invalid_transition");
    assert_eq!(app.events().await, before);
}

#[tokio::test]
async fn an_emergency_block_over_a_checked_in_patient_and_bad_blocks_are_refused() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let checked_in = act(&app, &id, "check-in").await;
    assert_eq!(checked_in.status, StatusCode::OK, "{:?}", checked_in.body);
    let before = app.events().await;
    block(
        &app,
        &ids.laser,
        "2030-01-08T09:00:00Z",
        "2030-01-08T10:00:00Z",
        true,
    )
    .await
    .assert_problem(409, "invalid_transition");
    let reversed = block(
        &app,
        &ids.laser,
        "2030-01-08T12:00:00Z",
        "2030-01-08T11:00:00Z",
        false,
    )
    .await;
    assert_inconsistent(&reversed, "end", "a block ending before it starts");
    let empty = block(
        &app,
        &ids.laser,
        "2030-01-08T12:00:00Z",
        "2030-01-08T12:00:00Z",
        false,
    )
    .await;
    assert_inconsistent(&empty, "end", "an empty block");
    let endless = block(
        &app,
        &ids.laser,
        "2030-01-08T12:00:00Z",
        "2032-01-08T12:00:00Z",
        false,
    )
    .await;
    assert_inconsistent(&endless, "end", "a block over two years");
    block(
        &app,
        &Uuid::new_v4().to_string(),
        "2030-01-08T12:00:00Z",
        "2030-01-08T13:00:00Z",
        false,
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(app.events().await, before);
    assert_eq!(status(&app, &id).await, "checked_in");
}

#[tokio::test]
async fn a_block_over_several_days_covers_each_local_day() {
    let app = app().await;
    let ids = app.clinic().await;
    let tuesday = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T15:00:00Z", at_clinic()),
    )
    .await;
    let thursday = booked(
        &app,
        laser(&ids, &patient(), "2030-01-10T09:00:00Z", at_clinic()),
    )
    .await;
    let friday = booked(
        &app,
        laser(&ids, &patient(), "2030-01-11T09:00:00Z", at_clinic()),
    )
    .await;
    // From Tuesday 16:00 local to Thursday 12:00 local.
    let blocked = block(
        &app,
        &ids.laser,
        "2030-01-08T15:00:00Z",
        "2030-01-10T11:00:00Z",
        true,
    )
    .await;
    assert_eq!(blocked.status, StatusCode::CREATED, "{:?}", blocked.body);
    assert_eq!(blocked.body["displaced"], json!([tuesday, thursday]));
    assert_eq!(status(&app, &friday).await, "booked");
    book(
        &app,
        laser(&ids, &patient(), "2030-01-09T12:00:00Z", at_clinic()),
    )
    .await
    .assert_problem(409, "slot_unavailable");
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-10T11:00:00Z", at_clinic()),
    )
    .await;
}

#[tokio::test]
async fn a_closure_displaces_a_whole_clinic_day_and_later_bookings_in_it_are_refused() {
    let app = app().await;
    let ids = app.clinic().await;
    let laser_booking = booked(
        &app,
        laser(&ids, &patient(), "2030-01-09T14:00:00Z", at_clinic()),
    )
    .await;
    let consultation = json!({"patient_id": patient(), "clinic_id": ids.clinic, "resource_id": ids.doctor,
                              "treatment_id": ids.consultation, "start": "2030-01-09T08:00:00Z",
                              "payment": at_clinic()});
    let doctor_booking = booked(&app, consultation).await;
    let next_day = booked(
        &app,
        laser(&ids, &patient(), "2030-01-10T08:00:00Z", at_clinic()),
    )
    .await;
    let day_before = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T16:00:00Z", at_clinic()),
    )
    .await;
    let closure = json!({"start": "2030-01-08T23:00:00Z", "end": "2030-01-09T23:00:00Z", "reason": "staff training"});
    let path = format!("/v1/clinics/{}/closures", ids.clinic);
    let before = app.events().await;
    app.post(&path, &app.staff, closure.clone())
        .await
        .assert_problem(403, "forbidden");
    app.post(
        &format!("/v1/clinics/{}/closures", Uuid::new_v4()),
        &app.admin,
        closure.clone(),
    )
    .await
    .assert_problem(404, "not_found");
    let reversed = app
        .post(
            &path,
            &app.admin,
            with(closure.clone(), "end", json!("2030-01-08T22:00:00Z")),
        )
        .await;
    assert_inconsistent(&reversed, "end", "a closure ending before it starts");
    assert_eq!(app.events().await, before);

    let closed = app.post(&path, &app.admin, closure).await;
    assert_eq!(closed.status, StatusCode::CREATED, "{:?}", closed.body);
    assert!(Uuid::parse_str(&text(&closed, "closure_id")).is_ok());
    assert_eq!(
        closed.body["displaced"],
        json!([doctor_booking, laser_booking]),
        "every resource's bookings of the day, in start order"
    );
    for id in [&doctor_booking, &laser_booking] {
        assert_eq!(status(&app, id).await, "displaced");
    }
    for id in [&next_day, &day_before] {
        assert_eq!(status(&app, id).await, "booked");
    }
    let before = app.events().await;
    for resource in [&ids.laser, &ids.laser_b] {
        book(
            &app,
            with(
                laser(&ids, &patient(), "2030-01-09T10:00:00Z", at_clinic()),
                "resource_id",
                json!(resource),
            ),
        )
        .await
        .assert_problem(422, "outside_opening_hours");
    }
    assert_eq!(app.events().await, before);
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-10T10:00:00Z", at_clinic()),
    )
    .await;
    let view = app
        .get(&format!("/v1/clinics/{}", ids.clinic), &app.staff)
        .await;
    assert_eq!(
        view.body["closures"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        view.body
    );
}

// ---------------------------------------------------------------------------
// Reschedule
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_reschedule_across_days_frees_the_old_slot_and_takes_the_new_one() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let moved = reschedule(&app, &id, json!({"start": "2030-01-09T14:00:00+01:00"})).await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.body["reservation_id"], json!(id));
    assert_eq!(moved.body["status"], "booked");
    assert_eq!(moved.body["resource_id"], json!(ids.laser));
    assert_eq!(moved.body["start"], "2030-01-09T13:00:00Z");
    assert_eq!(moved.body["end"], "2030-01-09T13:45:00Z");
    assert_eq!(moved.body["price"], price(12_000, 0, 0));
    assert!(int(&moved, "position") > 0);

    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let before = app.events().await;
    book(
        &app,
        laser(&ids, &patient(), "2030-01-09T13:30:00Z", at_clinic()),
    )
    .await
    .assert_problem(409, "slot_unavailable");
    assert_eq!(app.events().await, before);

    let view = reservation(&app, &id).await;
    assert_eq!(view.body["start"], "2030-01-09T13:00:00Z");
    let steps: Vec<(&str, &str)> = view.body["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["event_type"].as_str()?, s["status"].as_str()?)))
        .collect();
    assert_eq!(
        steps,
        [
            ("ReservationBooked", "booked"),
            ("ReservationRescheduled", "booked")
        ]
    );
}

#[tokio::test]
async fn a_reschedule_to_another_resource_keeps_the_price_as_booked() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    // Prices go up after the booking; the booking keeps its price.
    let rules = app
        .put(
            &format!("/v1/clinics/{}/pricing-rules", ids.clinic),
            &app.admin,
            json!({"rules": [{"weekdays": ["tue", "wed"], "from": "09:00", "to": "18:00", "percent": 50}]}),
        )
        .await;
    assert_eq!(rules.status, StatusCode::OK, "{:?}", rules.body);
    let moved = reschedule(
        &app,
        &id,
        json!({"start": "2030-01-08T09:00:00Z", "resource_id": ids.laser_b}),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.body["resource_id"], json!(ids.laser_b));
    assert_eq!(moved.body["start"], "2030-01-08T09:00:00Z");
    assert_eq!(moved.body["price"], price(12_000, 0, 0));
    let fresh = book(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    assert_eq!(fresh.status, StatusCode::CREATED, "{:?}", fresh.body);
    assert_eq!(
        fresh.body["price"],
        price(12_000, 6_000, 0),
        "a new booking pays the new price"
    );
    book(
        &app,
        with(
            laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
            "resource_id",
            json!(ids.laser_b),
        ),
    )
    .await
    .assert_problem(409, "slot_unavailable");
}

#[tokio::test]
async fn a_reschedule_may_overlap_its_own_old_slot() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let moved = reschedule(&app, &id, json!({"start": "2030-01-08T09:15:00Z"})).await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.body["end"], "2030-01-08T10:00:00Z");
    // Busy until 10:15Z now: 08:30Z runs into it; 10:15Z and 08:15Z touch it.
    book(
        &app,
        laser(&ids, &patient(), "2030-01-08T08:30:00Z", at_clinic()),
    )
    .await
    .assert_problem(409, "slot_unavailable");
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T10:15:00Z", at_clinic()),
    )
    .await;
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T08:15:00Z", at_clinic()),
    )
    .await;
}

#[tokio::test]
async fn reschedule_refusals_write_nothing_and_keep_the_booking_where_it_was() {
    let app = app().await;
    let ids = app.clinic().await;
    let elsewhere = always_open(&app).await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    booked(
        &app,
        laser(&ids, &patient(), "2030-01-09T09:00:00Z", at_clinic()),
    )
    .await;
    let cancelled = booked(
        &app,
        laser(&ids, &patient(), "2030-01-10T09:00:00Z", at_clinic()),
    )
    .await;
    assert_eq!(cancel(&app, &cancelled).await.status, StatusCode::OK);
    let before = app.events().await;
    for (body, status, code) in [
        (
            json!({"start": "2030-01-09T09:30:00Z"}),
            409,
            "slot_unavailable",
        ),
        (
            json!({"start": "2030-01-08T09:00:00Z", "resource_id": ids.room}),
            422,
            "resource_kind_mismatch",
        ),
        (
            json!({"start": "2030-01-08T09:00:00Z", "resource_id": elsewhere.laser}),
            404,
            "not_found",
        ),
        (
            json!({"start": "2030-01-08T09:00:00Z", "resource_id": Uuid::new_v4()}),
            404,
            "not_found",
        ),
        (json!({"start": "2024-01-09T09:00:00Z"}), 422, "in_the_past"),
        (
            json!({"start": "2030-01-08T17:30:00Z"}),
            422,
            "outside_opening_hours",
        ),
        (
            json!({"start": "2030-01-13T10:00:00Z"}),
            422,
            "outside_opening_hours",
        ),
    ] {
        let answer = reschedule(&app, &id, body.clone()).await;
        assert_eq!(answer.code(), code, "{body}: {:?}", answer.body);
        answer.assert_problem(status, code);
    }
    reschedule(&app, &cancelled, json!({"start": "2030-01-11T09:00:00Z"}))
        .await
        .assert_problem(409, "invalid_transition");
    assert_eq!(app.events().await, before);
    let view = reservation(&app, &id).await;
    assert_eq!(view.body["start"], "2030-01-08T09:00:00Z");
    assert_eq!(view.body["resource_id"], json!(ids.laser));
}

// ---------------------------------------------------------------------------
// Quotes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_quote_applies_the_pricing_rules_and_promo_code_and_matches_the_booking() {
    let app = app().await;
    let ids = app.clinic().await;
    let rules = app
        .put(
            &format!("/v1/clinics/{}/pricing-rules", ids.clinic),
            &app.admin,
            json!({"rules": [
                       {"weekdays": ["mon", "fri"], "from": "17:00", "to": "19:00", "percent": 20},
                       {"weekdays": ["tue", "wed"], "from": "09:00", "to": "12:00", "percent": -15},
                       {"weekdays": ["fri"], "from": "16:00", "to": "18:00", "percent": 5}],
                   "last_minute": {"within_hours": 24, "percent_off": 10}}),
        )
        .await;
    assert_eq!(rules.status, StatusCode::OK, "{:?}", rules.body);
    percent_promo(&app, "TENOFF", 100, 100).await;
    promo(
        &app,
        json!({"code": "FIVER", "amount_off_cents": 500, "valid_from": "2026-01-01T00:00:00Z",
               "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": 10, "per_patient_limit": 1}),
    )
    .await;
    let q = |treatment: &str, start: &str, extra: &str| {
        format!(
            "clinic_id={}&treatment_id={treatment}&start={start}{extra}",
            ids.clinic
        )
    };
    let laser_t = ids.laser_treatment.as_str();
    let before = app.events().await;
    for (query, expected, why) in [
        // Monday 17:00 local: +20 % of 120.00.
        (
            q(laser_t, "2030-01-07T16:00:00Z", ""),
            price(12_000, 2_400, 0),
            "peak",
        ),
        // The window's end is exclusive: Monday 16:59 local is not peak.
        (
            q(laser_t, "2030-01-07T15:59:00Z", ""),
            price(12_000, 0, 0),
            "before the peak window",
        ),
        // Tuesday 10:00 local: -15 %.
        (
            q(laser_t, "2030-01-08T09:00:00Z", ""),
            price(12_000, -1_800, 0),
            "off-peak",
        ),
        // An offset, percent-encoded: the same instant.
        (
            q(laser_t, "2030-01-08T10:00:00%2B01:00", ""),
            price(12_000, -1_800, 0),
            "offset",
        ),
        // Tuesday 13:00 local: no rule.
        (
            q(laser_t, "2030-01-08T12:00:00Z", ""),
            price(12_000, 0, 0),
            "no rule",
        ),
        // Friday 17:00 local: +20 % and +5 % both apply.
        (
            q(laser_t, "2030-01-11T16:00:00Z", ""),
            price(12_000, 3_000, 0),
            "two rules",
        ),
        // The promo code comes after the rules: 10 % of 102.00.
        (
            q(laser_t, "2030-01-08T09:00:00Z", "&promo_code=tenoff"),
            price(12_000, -1_800, 1_020),
            "percent promo",
        ),
        (
            q(laser_t, "2030-01-08T09:00:00Z", "&promo_code=FIVER"),
            price(12_000, -1_800, 500),
            "amount promo",
        ),
        (
            q(&ids.consultation, "2030-01-07T16:00:00Z", ""),
            price(5_000, 1_000, 0),
            "consultation at peak",
        ),
    ] {
        let answer = quote(&app, &query).await;
        assert_eq!(answer.status, StatusCode::OK, "{why}: {:?}", answer.body);
        assert_eq!(answer.body, expected, "{why}");
    }
    assert_eq!(app.events().await, before, "quotes write nothing");

    // The booking pays what the quote said.
    let peak = book(
        &app,
        with(
            laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
            "promo_code",
            json!("TENOFF"),
        ),
    )
    .await;
    assert_eq!(peak.status, StatusCode::CREATED, "{:?}", peak.body);
    assert_eq!(peak.body["price"], price(12_000, -1_800, 1_020));
}

#[tokio::test]
async fn a_last_minute_discount_applies_within_its_hours() {
    let app = app().await;
    let open = always_open(&app).await;
    let rules = app
        .put(
            &format!("/v1/clinics/{}/pricing-rules", open.clinic),
            &app.admin,
            json!({"rules": [], "last_minute": {"within_hours": 24, "percent_off": 10}}),
        )
        .await;
    assert_eq!(rules.status, StatusCode::OK, "{:?}", rules.body);
    let start = soon(4);
    let query = format!(
        "clinic_id={}&treatment_id={}&start={start}",
        open.clinic, open.laser_treatment
    );
    let answer = quote(&app, &query).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body, price(12_000, -1_200, 0));
    let far = format!(
        "clinic_id={}&treatment_id={}&start=2030-01-08T09:00:00Z",
        open.clinic, open.laser_treatment
    );
    assert_eq!(quote(&app, &far).await.body, price(12_000, 0, 0));
    let last_minute = book(&app, laser(&open, &patient(), &start, at_clinic())).await;
    assert_eq!(
        last_minute.status,
        StatusCode::CREATED,
        "{:?}",
        last_minute.body
    );
    assert_eq!(last_minute.body["price"], price(12_000, -1_200, 0));
}

#[tokio::test]
async fn quote_refusals_name_what_is_wrong() {
    let app = app().await;
    let ids = app.clinic().await;
    percent_promo(&app, "ONLY-ONCE", 100, 1).await;
    let who = patient();
    booked(
        &app,
        with(
            laser(&ids, &who, "2030-01-08T09:00:00Z", at_clinic()),
            "promo_code",
            json!("ONLY-ONCE"),
        ),
    )
    .await;
    let base = |start: &str| {
        format!(
            "clinic_id={}&treatment_id={}&start={start}",
            ids.clinic, ids.laser_treatment
        )
    };
    let before = app.events().await;
    for (query, status, code) in [
        (base("2024-01-09T09:00:00Z"), 422, "in_the_past"),
        (base("2030-01-13T10:00:00Z"), 422, "outside_opening_hours"),
        (
            format!(
                "clinic_id={}&treatment_id={}&start=2030-01-08T09:00:00Z",
                Uuid::new_v4(),
                ids.laser_treatment
            ),
            404,
            "not_found",
        ),
        (
            format!(
                "clinic_id={}&treatment_id={}&start=2030-01-08T09:00:00Z",
                ids.clinic,
                Uuid::new_v4()
            ),
            404,
            "not_found",
        ),
        (
            format!("{}&promo_code=NOPE", base("2030-01-08T09:00:00Z")),
            404,
            "not_found",
        ),
        (
            format!(
                "{}&promo_code=ONLY-ONCE&patient_id={who}",
                base("2030-01-08T10:00:00Z")
            ),
            422,
            "promo_limit_per_patient",
        ),
    ] {
        let answer = quote(&app, &query).await;
        assert_eq!(answer.code(), code, "{query}: {:?}", answer.body);
        answer.assert_problem(status, code);
    }
    // Another patient may still use it.
    let ok = quote(
        &app,
        &format!(
            "{}&promo_code=ONLY-ONCE&patient_id={}",
            base("2030-01-08T10:00:00Z"),
            patient()
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    for (query, field) in [
        (
            format!(
                "clinic_id={}&treatment_id={}",
                ids.clinic, ids.laser_treatment
            ),
            "start",
        ),
        (base("tomorrow"), "start"),
        (base("2030-01-08T10:00:00"), "start"),
        (
            format!(
                "clinic_id=xyz&treatment_id={}&start=2030-01-08T09:00:00Z",
                ids.laser_treatment
            ),
            "clinic_id",
        ),
        (
            format!("{}&patient_id=42", base("2030-01-08T09:00:00Z")),
            "patient_id",
        ),
        (
            format!("{}&colour=red", base("2030-01-08T09:00:00Z")),
            "colour",
        ),
        (
            format!("{}&promo_code=no%20way!", base("2030-01-08T09:00:00Z")),
            "promo_code",
        ),
    ] {
        let answer = quote(&app, &query).await;
        assert_bad(&answer, field, &query);
    }
    assert_eq!(app.events().await, before, "quotes write nothing");
}

// ---------------------------------------------------------------------------
// DST
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bookings_on_dst_change_days_start_at_local_opening_time() {
    let app = app().await;
    let ids = app.clinic().await;
    let day = json!([["09:00", "18:00"]]);
    let hours = app
        .put(
            &format!("/v1/clinics/{}/opening-hours", ids.clinic),
            &app.admin,
            json!({"mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": day, "sun": day}),
        )
        .await;
    assert_eq!(hours.status, StatusCode::OK, "{:?}", hours.body);
    // A Sunday-morning surcharge, in local time.
    let rules = app
        .put(
            &format!("/v1/clinics/{}/pricing-rules", ids.clinic),
            &app.admin,
            json!({"rules": [{"weekdays": ["sun"], "from": "09:00", "to": "10:00", "percent": 20}]}),
        )
        .await;
    assert_eq!(rules.status, StatusCode::OK, "{:?}", rules.body);

    // Spring forward (Sunday 2030-03-31): 09:00 CEST is 07:00Z.
    let spring = book(
        &app,
        laser(&ids, &patient(), "2030-03-31T09:00:00+02:00", at_clinic()),
    )
    .await;
    assert_eq!(spring.status, StatusCode::CREATED, "{:?}", spring.body);
    assert_eq!(spring.body["start"], "2030-03-31T07:00:00Z");
    assert_eq!(spring.body["end"], "2030-03-31T07:45:00Z");
    assert_eq!(
        spring.body["price"],
        price(12_000, 2_400, 0),
        "09:00 local is in the window"
    );
    // Fall back (Sunday 2030-10-27): 09:00 CET is 08:00Z.
    let autumn = book(
        &app,
        laser(&ids, &patient(), "2030-10-27T09:00:00+01:00", at_clinic()),
    )
    .await;
    assert_eq!(autumn.status, StatusCode::CREATED, "{:?}", autumn.body);
    assert_eq!(autumn.body["start"], "2030-10-27T08:00:00Z");
    assert_eq!(autumn.body["end"], "2030-10-27T08:45:00Z");
    assert_eq!(autumn.body["price"], price(12_000, 2_400, 0));
    // 08:00Z is 10:00 CEST on the Sunday before: past the window.
    let summer = book(
        &app,
        laser(&ids, &patient(), "2030-10-20T08:00:00Z", at_clinic()),
    )
    .await;
    assert_eq!(summer.status, StatusCode::CREATED, "{:?}", summer.body);
    assert_eq!(summer.body["price"], price(12_000, 0, 0));

    // The same UTC time is outside the hours on the Sunday and inside on
    // the Saturday before, on the other side of the change.
    for (sunday, saturday, why) in [
        // 17:30-18:15 CEST on Sunday; 16:30-17:15 CET on Saturday.
        ("2030-03-31T15:30:00Z", "2030-03-30T15:30:00Z", "spring"),
        // 08:30 CET on Sunday; 09:30 CEST on Saturday.
        ("2030-10-27T07:30:00Z", "2030-10-26T07:30:00Z", "autumn"),
    ] {
        let before = app.events().await;
        let answer = book(&app, laser(&ids, &patient(), sunday, at_clinic())).await;
        assert_eq!(
            answer.code(),
            "outside_opening_hours",
            "{why}: {:?}",
            answer.body
        );
        answer.assert_problem(422, "outside_opening_hours");
        assert_eq!(app.events().await, before);
        booked(&app, laser(&ids, &patient(), saturday, at_clinic())).await;
    }
    // 08:30 CEST on the spring Sunday is before opening; 17:16 CEST ends after closing.
    for start in ["2030-03-31T06:30:00Z", "2030-03-31T15:16:00Z"] {
        book(&app, laser(&ids, &patient(), start, at_clinic()))
            .await
            .assert_problem(422, "outside_opening_hours");
    }
    // The last slot of the short day ends at 18:00 CEST = 16:00Z.
    let last = book(
        &app,
        laser(&ids, &patient(), "2030-03-31T15:15:00Z", at_clinic()),
    )
    .await;
    assert_eq!(last.status, StatusCode::CREATED, "{:?}", last.body);
    assert_eq!(last.body["end"], "2030-03-31T16:00:00Z");

    // A clinic open all night: a booking across the spring-forward gap
    // lasts its 45 real minutes (01:30 CET to 03:15 CEST).
    let night = clinic_in(&app, "Europe/Berlin", &EVERY_DAY, "00:00", "23:59").await;
    let across = book(
        &app,
        laser(&night, &patient(), "2030-03-31T01:30:00+01:00", at_clinic()),
    )
    .await;
    assert_eq!(across.status, StatusCode::CREATED, "{:?}", across.body);
    assert_eq!(across.body["start"], "2030-03-31T00:30:00Z");
    assert_eq!(across.body["end"], "2030-03-31T01:15:00Z");
    // Across the repeated hour in autumn: 02:30 CEST is 00:30Z, the second
    // 02:30 (CET) is 01:30Z; both are distinct, bookable instants.
    for (start, expected) in [
        ("2030-10-27T02:30:00+02:00", "2030-10-27T00:30:00Z"),
        ("2030-10-27T02:30:00+01:00", "2030-10-27T01:30:00Z"),
    ] {
        let answer = book(&app, laser(&night, &patient(), start, at_clinic())).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{start}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["start"], expected);
    }
}

#[tokio::test]
async fn a_clinic_ahead_of_utc_keeps_each_booking_on_its_local_day() {
    let app = app().await;
    // Auckland in January is UTC+13: Tuesday 09:00 there is Monday 20:00Z.
    let ids = clinic_in(
        &app,
        "Pacific/Auckland",
        &["mon", "tue", "wed", "thu", "fri", "sat"],
        "09:00",
        "18:00",
    )
    .await;
    let answer = book(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00+13:00", at_clinic()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.body["start"], "2030-01-07T20:00:00Z");
    let id = text(&answer, "reservation_id");
    let calendar = clinicbook_eventstore::audit::stream_events(
        &app.db.pool,
        "Calendar",
        &format!("{}/2030-01-08", ids.laser),
    )
    .await
    .expect("calendar stream");
    assert_eq!(
        calendar
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["SlotReserved"],
        "the booking is on the calendar of its local date"
    );
    // Sunday 2030-01-13 local, though Saturday in UTC: closed.
    book(
        &app,
        laser(&ids, &patient(), "2030-01-12T21:00:00Z", at_clinic()),
    )
    .await
    .assert_problem(422, "outside_opening_hours");
    // A block given in UTC finds the booking on its local day.
    let blocked = block(
        &app,
        &ids.laser,
        "2030-01-07T19:00:00Z",
        "2030-01-07T21:00:00Z",
        true,
    )
    .await;
    assert_eq!(blocked.status, StatusCode::CREATED, "{:?}", blocked.body);
    assert_eq!(blocked.body["displaced"], json!([id]));
}

// ---------------------------------------------------------------------------
// Bad input, roles, tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_booking_requests_get_400_naming_the_field_and_write_nothing() {
    let app = app().await;
    let ids = app.clinic().await;
    let good = laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic());
    let before = app.events().await;
    let cases: Vec<(Value, &str)> = vec![
        (with(good.clone(), "patient_id", json!(5)), "patient_id"),
        (
            with(good.clone(), "patient_id", json!("not-a-uuid")),
            "patient_id",
        ),
        (
            with(good.clone(), "reservation_id", json!("abc")),
            "reservation_id",
        ),
        (without(good.clone(), "clinic_id"), "clinic_id"),
        (without(good.clone(), "payment"), "payment"),
        (without(good.clone(), "start"), "start"),
        (
            with(without(good.clone(), "payment"), "pament", at_clinic()),
            "pament",
        ),
        (
            with(good.clone(), "payment", json!({"method": "bitcoin"})),
            "payment",
        ),
        (with(good.clone(), "payment", json!("at_clinic")), "payment"),
        (with(good.clone(), "payment", json!({})), "payment"),
        (
            with(good.clone(), "payment", json!({"method": "package"})),
            "package_id",
        ),
        (
            with(
                good.clone(),
                "payment",
                json!({"method": "package", "package_id": "nope"}),
            ),
            "package_id",
        ),
        (
            with(
                good.clone(),
                "payment",
                json!({"method": "wallet", "package_id": Uuid::new_v4()}),
            ),
            "package_id",
        ),
        (
            with(
                good.clone(),
                "payment",
                json!({"method": "at_clinic", "tip_cents": 100}),
            ),
            "tip_cents",
        ),
        (with(good.clone(), "start", json!("next tuesday")), "start"),
        (
            with(good.clone(), "start", json!("2030-01-08 09:00")),
            "start",
        ),
        (
            with(good.clone(), "start", json!("2030-01-08T09:00:00")),
            "start",
        ),
        (
            with(good.clone(), "start", json!("2030-02-30T09:00:00Z")),
            "start",
        ),
        (with(good.clone(), "start", json!(1_893_488_400)), "start"),
        (with(good.clone(), "promo_code", json!(10)), "promo_code"),
    ];
    for (body, field) in cases {
        let answer = book(&app, body.clone()).await;
        assert_bad(&answer, field, &body.to_string());
    }
    // Numbers too big for any type, and JSON that does not parse.
    let raw_cases: Vec<(String, &str)> = vec![
        (
            good.to_string().replacen(
                "\"2030-01-08T09:00:00Z\"",
                "99999999999999999999999999999",
                1,
            ),
            "start",
        ),
        (
            good.to_string()
                .replacen("{", "{\"promo_code\": 1e999999,", 1),
            "promo_code",
        ),
        (
            good.to_string().trim_end_matches('}').to_string(),
            "malformed JSON",
        ),
    ];
    for (body, field) in raw_cases {
        let answer = app
            .raw(
                Method::POST,
                "/v1/reservations",
                &app.staff,
                "application/json",
                body.clone().into_bytes(),
            )
            .await;
        assert_bad(&answer, field, &body);
    }
    // A start far beyond any opening hours is refused, never a 500.
    for start in ["9999-12-31T23:30:00Z", "0001-01-01T00:00:00Z"] {
        let answer = book(&app, with(good.clone(), "start", json!(start))).await;
        assert!(
            answer.status.is_client_error(),
            "{start}: {} {:?}",
            answer.status,
            answer.body
        );
    }
    // The other routes' bodies.
    let id = Uuid::new_v4();
    for (path, body, field) in [
        (format!("/v1/reservations/{id}/cancel"), json!({}), "reason"),
        (
            format!("/v1/reservations/{id}/cancel"),
            json!({"reason": "x", "fee": 0}),
            "fee",
        ),
        (
            format!("/v1/reservations/{id}/reschedule"),
            json!({}),
            "start",
        ),
        (
            format!("/v1/reservations/{id}/reschedule"),
            json!({"start": "soon"}),
            "start",
        ),
        (
            format!("/v1/reservations/{id}/reschedule"),
            json!({"start": "2030-01-08T09:00:00Z", "resource_id": 7}),
            "resource_id",
        ),
        (
            format!("/v1/reservations/{id}/reschedule"),
            json!({"start": "2030-01-08T09:00:00Z", "resource": ids.laser_b}),
            "resource",
        ),
        (
            format!("/v1/resources/{}/blocks", ids.laser),
            json!({"start": "2030-01-08T09:00:00Z", "end": "2030-01-08T10:00:00Z", "reason": "x"}),
            "emergency",
        ),
        (
            format!("/v1/resources/{}/blocks", ids.laser),
            json!({"start": "2030-01-08T09:00:00Z", "end": "2030-01-08T10:00:00Z", "reason": "x", "emergency": "yes"}),
            "emergency",
        ),
        (
            format!("/v1/resources/{}/blocks", ids.laser),
            json!({"start": "2030-01-08T09:00:00Z", "end": "later", "reason": "x", "emergency": false}),
            "end",
        ),
        (
            "/v1/waitlist".to_string(),
            json!({"patient_id": patient(), "clinic_id": ids.clinic, "treatment_id": ids.laser_treatment,
                   "earliest": "2030-01-08T08:00:00Z", "latest": "2030-01-08T12:00:00Z",
                   "payment": {"method": "bitcoin"}}),
            "payment",
        ),
    ] {
        let answer = app.post(&path, &app.staff, body.clone()).await;
        assert_bad(&answer, field, &format!("{path} {body}"));
    }
    let closure = app
        .post(
            &format!("/v1/clinics/{}/closures", ids.clinic),
            &app.admin,
            json!({"start": "2030-01-08T09:00:00Z", "end": "2030-01-08T10:00:00Z"}),
        )
        .await;
    assert_bad(&closure, "reason", "a closure without a reason");
    // Path ids that are not UUIDs.
    for (method, path, field) in [
        (Method::GET, "/v1/reservations/not-a-uuid", "reservation_id"),
        (
            Method::POST,
            "/v1/reservations/not-a-uuid/cancel",
            "reservation_id",
        ),
        (
            Method::POST,
            "/v1/reservations/not-a-uuid/reschedule",
            "reservation_id",
        ),
        (
            Method::POST,
            "/v1/reservations/not-a-uuid/check-in",
            "reservation_id",
        ),
        (
            Method::POST,
            "/v1/reservations/not-a-uuid/complete",
            "reservation_id",
        ),
        (
            Method::POST,
            "/v1/reservations/not-a-uuid/no-show",
            "reservation_id",
        ),
        (
            Method::POST,
            "/v1/resources/not-a-uuid/blocks",
            "resource_id",
        ),
    ] {
        let body = match path {
            p if p.ends_with("cancel") => Some(json!({"reason": "x"})),
            p if p.ends_with("reschedule") => Some(json!({"start": "2030-01-08T09:00:00Z"})),
            p if p.ends_with("blocks") => Some(
                json!({"start": "2030-01-08T09:00:00Z", "end": "2030-01-08T10:00:00Z", "reason": "x", "emergency": false}),
            ),
            _ => None,
        };
        let answer = app.send(method, path, Some(&app.staff), body).await;
        answer.assert_problem(400, "invalid_request");
        assert_bad(&answer, field, path);
    }
    let closure = app
        .post(
            "/v1/clinics/not-a-uuid/closures",
            &app.admin,
            json!({"start": "2030-01-08T09:00:00Z", "end": "2030-01-08T10:00:00Z", "reason": "x"}),
        )
        .await;
    closure.assert_problem(400, "invalid_request");
    assert_bad(
        &closure,
        "clinic_id",
        "a closure of a clinic id that is not a UUID",
    );
    app.raw(
        Method::POST,
        "/v1/reservations",
        &app.staff,
        "text/plain",
        good.to_string().into_bytes(),
    )
    .await
    .assert_problem(415, "unsupported_media_type");
    assert_eq!(app.events().await, before, "bad input writes nothing");
}

/// Product bug (see the report): chrono accepts a second of 60 at any
/// minute, so `10:59:60Z`, which is no leap second (RFC 3339 allows 60 only
/// in a real leap second), is booked: the answer's start is `10:59:60Z`,
/// which many clients cannot parse, and its end `11:44:59Z`, 44 min 59 s
/// later instead of 45 min.
#[tokio::test]
async fn a_start_with_a_second_of_60_is_refused_as_not_rfc_3339() {
    let app = app().await;
    let ids = app.clinic().await;
    let before = app.events().await;
    let answer = book(
        &app,
        laser(&ids, &patient(), "2030-06-29T10:59:60Z", at_clinic()),
    )
    .await;
    assert_bad(&answer, "start", "a second of 60");
    assert_eq!(app.events().await, before);
}

#[tokio::test]
async fn booking_routes_need_a_staff_token() {
    let app = app().await;
    let ids = app.clinic().await;
    let id = booked(
        &app,
        laser(&ids, &patient(), "2030-01-08T09:00:00Z", at_clinic()),
    )
    .await;
    let waitlist = json!({"patient_id": patient(), "clinic_id": ids.clinic, "treatment_id": ids.laser_treatment,
                          "earliest": "2030-01-08T08:00:00Z", "latest": "2030-01-08T12:00:00Z",
                          "payment": at_clinic()});
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/v1/reservations".into(),
            Some(laser(&ids, &patient(), "2030-01-08T12:00:00Z", at_clinic())),
        ),
        (Method::GET, format!("/v1/reservations/{id}"), None),
        (
            Method::POST,
            format!("/v1/reservations/{id}/reschedule"),
            Some(json!({"start": "2030-01-08T12:00:00Z"})),
        ),
        (
            Method::POST,
            format!("/v1/reservations/{id}/cancel"),
            Some(json!({"reason": "x"})),
        ),
        (
            Method::POST,
            format!("/v1/reservations/{id}/check-in"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/reservations/{id}/complete"),
            None,
        ),
        (Method::POST, format!("/v1/reservations/{id}/no-show"), None),
        (Method::POST, "/v1/waitlist".into(), Some(waitlist)),
        (
            Method::POST,
            format!("/v1/resources/{}/blocks", ids.laser),
            Some(
                json!({"start": "2030-01-08T13:00:00Z", "end": "2030-01-08T14:00:00Z", "reason": "x", "emergency": true}),
            ),
        ),
        (
            Method::GET,
            format!(
                "/v1/quotes?clinic_id={}&treatment_id={}&start=2030-01-08T12:00:00Z",
                ids.clinic, ids.laser_treatment
            ),
            None,
        ),
    ];
    let closure = (
        Method::POST,
        format!("/v1/clinics/{}/closures", ids.clinic),
        Some(
            json!({"start": "2030-01-08T23:00:00Z", "end": "2030-01-09T23:00:00Z", "reason": "x"}),
        ),
    );
    let before = app.events().await;
    for (method, path, body) in routes.iter().chain(std::iter::once(&closure)) {
        app.send(method.clone(), path, None, body.clone())
            .await
            .assert_problem(401, "unauthorized");
        app.send(method.clone(), path, Some("garbage"), body.clone())
            .await
            .assert_problem(401, "unauthorized");
        for token in [&app.analyst, &app.auditor] {
            let answer = app
                .send(method.clone(), path, Some(token), body.clone())
                .await;
            assert_eq!(
                answer.code(),
                "forbidden",
                "{method} {path}: {:?}",
                answer.body
            );
            answer.assert_problem(403, "forbidden");
        }
    }
    let (method, path, body) = closure;
    app.send(method, &path, Some(&app.staff), body)
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(app.events().await, before, "refused callers write nothing");
    assert_eq!(status(&app, &id).await, "booked");
}
