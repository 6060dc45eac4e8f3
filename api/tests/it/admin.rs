//! The admin routes end to end.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::app;

#[tokio::test]
async fn a_clinic_is_set_up_over_http_and_reads_back() {
    let app = app().await;
    let ids = app.clinic().await;
    let clinic = app
        .get(&format!("/v1/clinics/{}", ids.clinic), &app.staff)
        .await;
    assert_eq!(clinic.status, StatusCode::OK);
    assert_eq!(clinic.body["timezone"], "Europe/Berlin");
    assert_eq!(clinic.body["resources"].as_array().map(Vec::len), Some(4));
    assert_eq!(clinic.body["treatments"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        clinic.body["opening_hours"]["mon"],
        json!([["09:00", "18:00"]])
    );

    let rules = app
        .put(
            &format!("/v1/clinics/{}/pricing-rules", ids.clinic),
            &app.admin,
            json!({"rules": [{"weekdays": ["mon", "fri"], "from": "17:00", "to": "19:00", "percent": 20}],
                   "last_minute": {"within_hours": 24, "percent_off": 10}}),
        )
        .await;
    assert_eq!(rules.status, StatusCode::OK, "{:?}", rules.body);
    assert!(
        rules.body["position"].as_i64().unwrap_or(0) > 0,
        "command answers carry a position"
    );

    let program = app
        .post(
            "/v1/programs",
            &app.admin,
            json!({"name": "Six lasers", "treatment_id": ids.laser_treatment, "sessions": 6,
                   "price_cents": 60_000, "validity_days": 365, "clinic_ids": [ids.clinic]}),
        )
        .await;
    assert_eq!(program.status, StatusCode::CREATED, "{:?}", program.body);
    let program_id = program.body["program_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let read = app
        .get(&format!("/v1/programs/{program_id}"), &app.staff)
        .await;
    assert_eq!(
        (read.status, read.body["sessions"].as_i64()),
        (StatusCode::OK, Some(6))
    );

    let promo = app
        .post(
            "/v1/promo-codes",
            &app.admin,
            json!({"code": "spring-10", "percent_off": 10, "valid_from": "2026-01-01T00:00:00+01:00",
                   "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": 100, "per_patient_limit": 1}),
        )
        .await;
    assert_eq!(promo.status, StatusCode::CREATED, "{:?}", promo.body);
    assert_eq!(promo.body["code"], "SPRING-10");
    let off = app
        .post(
            "/v1/promo-codes/spring-10/deactivate",
            &app.admin,
            json!(null),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{:?}", off.body);
}

#[tokio::test]
async fn admin_routes_answer_their_error_codes() {
    let app = app().await;
    let ids = app.clinic().await;
    let clinic = &ids.clinic;
    app.post(
        &format!("/v1/clinics/{clinic}/resources"),
        &app.admin,
        json!({"name": "laser a", "kind": "device"}),
    )
    .await
    .assert_problem(409, "duplicate_name");
    app.post(
        &format!("/v1/clinics/{clinic}/resources"),
        &app.admin,
        json!({"name": "X", "kind": "spaceship"}),
    )
    .await
    .assert_problem(400, "invalid_input");
    app.put(
        &format!("/v1/clinics/{clinic}/opening-hours"),
        &app.admin,
        json!({"mon": [["18:00", "09:00"]]}),
    )
    .await
    .assert_problem(422, "inconsistent_input");
    app.put(
        &format!("/v1/clinics/{clinic}/opening-hours"),
        &app.admin,
        json!({"someday": [["09:00", "10:00"]]}),
    )
    .await
    .assert_problem(400, "invalid_request");
    app.post(
        &format!("/v1/clinics/{clinic}/treatments"),
        &app.admin,
        json!({"name": "Free", "duration_minutes": 0, "buffer_minutes": 0, "price_cents": 100, "resource_kind": "room"}),
    )
    .await
    .assert_problem(400, "invalid_input");
    app.post(
        &format!("/v1/clinics/{clinic}/treatments"),
        &app.admin,
        json!({"name": "Neg", "duration_minutes": 30, "buffer_minutes": 0, "price_cents": -5, "resource_kind": "room"}),
    )
    .await
    .assert_problem(400, "invalid_input");
    app.post(
        "/v1/programs",
        &app.admin,
        json!({"name": "P", "treatment_id": ids.laser_treatment, "sessions": 0, "price_cents": 100,
               "validity_days": 30, "clinic_ids": [clinic]}),
    )
    .await
    .assert_problem(400, "invalid_input");
    app.post(
        "/v1/programs",
        &app.admin,
        json!({"name": "P", "treatment_id": uuid::Uuid::new_v4(), "sessions": 3, "price_cents": 100,
               "validity_days": 30, "clinic_ids": [clinic]}),
    )
    .await
    .assert_problem(404, "not_found");
    app.post(
        "/v1/promo-codes",
        &app.admin,
        json!({"code": "BOTH", "percent_off": 10, "amount_off_cents": 500, "valid_from": "2026-01-01T00:00:00Z",
               "valid_until": "2027-01-01T00:00:00Z", "max_redemptions": 1, "per_patient_limit": 1}),
    )
    .await
    .assert_problem(400, "invalid_input");
    app.post("/v1/promo-codes/NOPE/deactivate", &app.admin, json!(null))
        .await
        .assert_problem(404, "not_found");
    let before = app.events().await;
    app.post(
        "/v1/clinics",
        &app.admin,
        json!({"clinic_id": clinic, "name": "Again", "timezone": "UTC", "currency": "EUR"}),
    )
    .await
    .assert_problem(409, "already_exists");
    assert_eq!(app.events().await, before);
}
