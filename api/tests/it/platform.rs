//! What every route shares: authentication, problem+json errors for every
//! kind of bad input, limits, idempotency keys, and the operational routes.

use std::time::Duration;

use clinicbook_api::auth::Role;
use clinicbook_api::Limits;
use clinicbook_commands::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{app, app_with, SECRET};

fn clinic_body() -> Value {
    json!({"name": "Mitte", "timezone": "Europe/Berlin", "currency": "EUR"})
}

#[tokio::test]
async fn operational_routes_need_no_token() {
    let app = app().await;
    let health = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let ready = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["database"], "ok");
    assert!(
        ready.body["projection_lag_events"].as_i64().is_some(),
        "{:?}",
        ready.body
    );
    let spec = app.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(spec.status, StatusCode::OK);
    for route in [
        "/v1/clinics",
        "/v1/clinics/{clinic_id}/opening-hours",
        "/v1/promo-codes/{code}/deactivate",
    ] {
        assert!(
            spec.body["paths"].get(route).is_some(),
            "{route} missing from the OpenAPI document"
        );
    }
    let docs = app
        .client
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text().await.unwrap_or_default().contains("swagger"),
        "the docs page serves Swagger UI"
    );
    app.post("/v1/clinics", &app.admin, clinic_body()).await;
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = metrics.text().await.unwrap_or_default();
    assert!(text.contains("clinicbook_http_requests_total"), "{text}");
    assert!(
        text.contains("route=\"/v1/clinics\""),
        "requests are labelled by matched route"
    );
}

#[tokio::test]
async fn tokens_are_checked_and_roles_enforced() {
    let app = app().await;
    app.send(Method::POST, "/v1/clinics", None, Some(clinic_body()))
        .await
        .assert_problem(401, "unauthorized");
    app.post("/v1/clinics", "not-a-jwt", clinic_body())
        .await
        .assert_problem(401, "unauthorized");
    let forged =
        clinicbook_api::auth::AuthKeys::new(&secrecy::SecretString::from("another-secret"))
            .issue("mallory", Role::Admin, 3600)
            .unwrap_or_default();
    app.post("/v1/clinics", &forged, clinic_body())
        .await
        .assert_problem(401, "unauthorized");
    let expired = {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let claims = json!({"sub": "old", "role": "admin", "exp": 1_000_000_000u64});
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap_or_default()
    };
    let answer = app.post("/v1/clinics", &expired, clinic_body()).await;
    answer.assert_problem(401, "unauthorized");
    assert!(answer.body["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("expired"));
    let unknown_role = {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let claims = json!({"sub": "x", "role": "superuser", "exp": 4_000_000_000u64});
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap_or_default()
    };
    app.post("/v1/clinics", &unknown_role, clinic_body())
        .await
        .assert_problem(401, "unauthorized");
    for token in [&app.staff, &app.analyst, &app.auditor] {
        app.post("/v1/clinics", token, clinic_body())
            .await
            .assert_problem(403, "forbidden");
    }
    // The role is checked before the body is read.
    app.raw(
        Method::POST,
        "/v1/clinics",
        &app.staff,
        "application/json",
        b"{".to_vec(),
    )
    .await
    .assert_problem(403, "forbidden");
    assert_eq!(app.events().await, 0, "refused requests write nothing");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let app = app().await;
    let path = "/v1/clinics";
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": 5, "timezone": "Europe/Berlin", "currency": "EUR"}),
            "name",
        ),
        (
            json!({"timezone": "Europe/Berlin", "currency": "EUR"}),
            "name",
        ),
        (
            json!({"name": "A", "timezone": "Europe/Berlin", "currency": "EUR", "colour": "red"}),
            "colour",
        ),
        (
            json!({"name": "A", "timezone": "Europe/Berlin", "currency": "EUR", "cancellation_notice_hours": -1}),
            "cancellation_notice_hours",
        ),
        (
            json!({"name": "A", "timezone": "Europe/Berlin", "currency": "EUR", "late_cancel_fee_percent": 250}),
            "late_cancel_fee_percent",
        ),
        (
            json!({"name": "A", "timezone": "Nowhere/Atlantis", "currency": "EUR"}),
            "timezone",
        ),
        (
            json!({"name": "A", "timezone": "Europe/Berlin", "currency": "euro"}),
            "currency",
        ),
        (
            json!({"name": "A", "timezone": "Europe/Berlin", "currency": "EUR", "clinic_id": "not-a-uuid"}),
            "clinic_id",
        ),
    ];
    for (body, field) in cases {
        let answer = app.post(path, &app.admin, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {:?}",
            answer.body
        );
        assert!(answer.content_type.starts_with("application/problem+json"));
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(field),
            "{body}: detail {detail:?} should name {field}"
        );
    }
    let raw_cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("application/json", b"{\"name\": ".to_vec(), 400, "invalid_request"),
        ("application/json", b"[1,2,3]".to_vec(), 400, "invalid_request"),
        ("application/json", b"{\"name\": \"\xff\xfe\"}".to_vec(), 400, "invalid_request"),
        (
            "application/json",
            br#"{"name":"A","timezone":"Europe/Berlin","currency":"EUR","cancellation_notice_hours":99999999999999999999999}"#.to_vec(),
            400,
            "invalid_request",
        ),
        ("text/plain", b"hello".to_vec(), 415, "unsupported_media_type"),
        ("application/json", vec![b' '; 70 * 1024], 413, "payload_too_large"),
    ];
    for (content_type, body, status, code) in raw_cases {
        app.raw(Method::POST, path, &app.admin, content_type, body)
            .await
            .assert_problem(status, code);
    }
    let unknown = uuid::Uuid::new_v4();
    app.get(&format!("/v1/clinics/{unknown}"), &app.admin)
        .await
        .assert_problem(404, "not_found");
    app.get("/v1/clinics/not-a-uuid", &app.admin)
        .await
        .assert_problem(400, "invalid_request");
    app.put(
        &format!("/v1/clinics/{unknown}/opening-hours"),
        &app.admin,
        json!({"mon": [["09:00", "17:00"]]}),
    )
    .await
    .assert_problem(404, "not_found");
    app.get("/v1/no-such-route", &app.admin)
        .await
        .assert_problem(404, "not_found");
    app.send(Method::DELETE, "/v1/clinics", Some(&app.admin), None)
        .await
        .assert_problem(405, "method_not_allowed");
    assert_eq!(app.events().await, 0, "bad input writes nothing");
}

#[tokio::test]
async fn an_idempotency_key_replayed_twenty_times_concurrently_gives_one_write_and_twenty_identical_answers(
) {
    let app = app().await;
    let key = "create-mitte-1";
    let requests: Vec<_> = (0..20)
        .map(|_| {
            app.client
                .post(format!("{}/v1/clinics", app.base))
                .bearer_auth(&app.admin)
                .header("idempotency-key", key)
                .json(&clinic_body())
                .send()
        })
        .collect();
    let mut answers = Vec::new();
    for response in futures_join(requests).await {
        let response = response.unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        answers.push((status, body));
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "all answers identical: {answers:?}"
    );
    assert_eq!(answers[0].0, StatusCode::CREATED);
    assert_eq!(app.events().await, 1, "one clinic registered");

    let other = app
        .client
        .post(format!("{}/v1/clinics", app.base))
        .bearer_auth(&app.admin)
        .header("idempotency-key", key)
        .json(&json!({"name": "Other", "timezone": "Europe/Berlin", "currency": "EUR"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = other.json().await.unwrap_or(Value::Null);
    assert_eq!(body["code"], "idempotency_key_reused");
    assert_eq!(app.events().await, 1);
}

async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap_or_else(|e| panic!("{e}")));
    }
    out
}

#[tokio::test]
async fn a_client_over_its_rate_limit_gets_429() {
    let limits = Limits {
        rate_per_second: 1,
        burst: 3,
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let app = app_with(limits, Clock::system()).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            app.get(
                "/v1/clinics/00000000-0000-0000-0000-000000000000",
                &app.admin,
            )
            .await,
        );
    }
    let limited = statuses
        .iter()
        .find(|a| a.status == StatusCode::TOO_MANY_REQUESTS);
    match limited {
        Some(answer) => answer.assert_problem(429, "rate_limited"),
        None => panic!(
            "no request was rate limited: {:?}",
            statuses.iter().map(|a| a.status).collect::<Vec<_>>()
        ),
    }
    // Another client (token) has its own budget.
    let other = app
        .get(
            "/v1/clinics/00000000-0000-0000-0000-000000000000",
            &app.staff,
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

#[test]
fn the_openapi_document_is_unchanged_unless_the_snapshot_is_updated() {
    // A contract change shows up as a snapshot diff (cargo insta review).
    let spec = serde_json::to_value(clinicbook_api::openapi()).unwrap_or(Value::Null);
    for (path, method) in [
        ("/v1/clinics", "post"),
        ("/v1/clinics/{clinic_id}/opening-hours", "put"),
        ("/v1/clinics/{clinic_id}/resources", "post"),
        ("/v1/clinics/{clinic_id}/treatments", "post"),
        ("/v1/clinics/{clinic_id}/pricing-rules", "put"),
        ("/v1/clinics/{clinic_id}/closures", "post"),
        ("/v1/programs", "post"),
        ("/v1/promo-codes", "post"),
        ("/v1/promo-codes/{code}/deactivate", "post"),
        ("/v1/reservations", "post"),
        ("/v1/reservations/{reservation_id}/reschedule", "post"),
        ("/v1/reservations/{reservation_id}/cancel", "post"),
        ("/v1/reservations/{reservation_id}/check-in", "post"),
        ("/v1/reservations/{reservation_id}/complete", "post"),
        ("/v1/reservations/{reservation_id}/no-show", "post"),
        ("/v1/waitlist", "post"),
        ("/v1/reservations/{reservation_id}", "get"),
        ("/v1/resources/{resource_id}/blocks", "post"),
        ("/v1/wallets/{patient_id}/deposits", "post"),
        ("/v1/wallets/{patient_id}/refunds", "post"),
        ("/v1/wallets/{patient_id}", "get"),
        ("/v1/packages", "post"),
        ("/v1/packages/{package_id}/transfer", "post"),
        ("/v1/packages/{package_id}", "get"),
        ("/v1/quotes", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} is missing from /openapi.json"
        );
    }
    insta::assert_json_snapshot!("openapi", spec);
}
