//! The wallet and package routes end to end: deposits, refunds, the wallet
//! view, package purchases (wallet and external), transfers, idempotency,
//! roles, and that every refused request writes nothing.

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{app, Answer, App, ClinicIds};

fn deposits(patient: &str) -> String {
    format!("/v1/wallets/{patient}/deposits")
}

fn refunds(patient: &str) -> String {
    format!("/v1/wallets/{patient}/refunds")
}

fn wallet(patient: &str) -> String {
    format!("/v1/wallets/{patient}")
}

fn new_id() -> String {
    Uuid::new_v4().to_string()
}

/// The string field `field` of an answer's body.
fn text(answer: &Answer, field: &str) -> String {
    answer.body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {:?}", answer.body))
        .to_string()
}

/// The `position` of a command answer, asserted to be a positive number.
fn position(answer: &Answer) -> i64 {
    match answer.body["position"].as_i64() {
        Some(p) if p > 0 => p,
        _ => panic!("no positive position in {:?}", answer.body),
    }
}

/// An instant in an answer.
fn instant(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an RFC 3339 instant: {value}"))
}

/// Asserts a 400 whose detail names `field`.
fn assert_names(answer: &Answer, code: &str, field: &str) {
    answer.assert_problem(400, code);
    let detail = answer.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(field),
        "detail {detail:?} should name {field}"
    );
}

/// Deposits `cents` under `reference` and asserts the 201.
async fn deposit(app: &App, patient: &str, cents: i64, reference: &str) -> Answer {
    let answer = app
        .post(
            &deposits(patient),
            &app.staff,
            json!({"amount_cents": cents, "reference": reference}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    answer
}

/// The wallet view, asserted to be a 200 whose signed transactions sum to
/// its balance.
async fn wallet_view(app: &App, patient: &str) -> Value {
    let answer = app.get(&wallet(patient), &app.staff).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let balance = answer.body["balance_cents"]
        .as_i64()
        .unwrap_or_else(|| panic!("no balance in {:?}", answer.body));
    let sum: i64 = answer.body["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transactions in {:?}", answer.body))
        .iter()
        .map(|t| t["amount_cents"].as_i64().unwrap_or(i64::MIN))
        .sum();
    assert_eq!(sum, balance, "transactions sum to the balance");
    answer.body
}

async fn balance(app: &App, patient: &str) -> i64 {
    wallet_view(app, patient).await["balance_cents"]
        .as_i64()
        .unwrap_or(-1)
}

/// An admin-made program for the laser treatment of `ids`.
async fn program(app: &App, ids: &ClinicIds, price_cents: i64, validity_days: u32) -> String {
    let answer = app
        .post(
            "/v1/programs",
            &app.admin,
            json!({"name": format!("Six lasers {price_cents}"), "treatment_id": ids.laser_treatment,
                   "sessions": 6, "price_cents": price_cents, "validity_days": validity_days,
                   "clinic_ids": [ids.clinic]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    text(&answer, "program_id")
}

/// A registered clinic with no treatments.
async fn bare_clinic(app: &App, name: &str) -> String {
    let answer = app
        .post(
            "/v1/clinics",
            &app.admin,
            json!({"name": name, "timezone": "Europe/Berlin", "currency": "EUR"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    text(&answer, "clinic_id")
}

/// Sends `body` to `path` with an `Idempotency-Key`; the status and body.
async fn post_with_key(app: &App, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(&app.staff)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if let Some(position) = body["position"].as_i64() {
        app.last_position
            .fetch_max(position, std::sync::atomic::Ordering::SeqCst);
    }
    (status, body)
}

/// Runs `futures` concurrently on the runtime, answers in order.
async fn concurrently<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap_or_else(|e| panic!("task failed: {e}")));
    }
    out
}

// ---------------------------------------------------------------- wallets

#[tokio::test]
async fn deposits_answer_the_new_balance_and_a_growing_position_and_read_back_as_signed_transactions(
) {
    let app = app().await;
    let patient = new_id();
    let first = deposit(&app, &patient, 5_000, "card-1").await;
    assert_eq!(first.body["balance_cents"], 5_000);
    let keys: Vec<_> = first
        .body
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["balance_cents", "position"], "{:?}", first.body);
    let second = deposit(&app, &patient, 2_500, "  transfer-7 ").await;
    assert_eq!(second.body["balance_cents"], 7_500);
    assert!(position(&second) > position(&first));
    assert_eq!(app.events().await, 2);

    let view = wallet_view(&app, &patient).await;
    assert_eq!(view["patient_id"], patient.as_str());
    assert_eq!(view["balance_cents"], 7_500);
    let transactions = view["transactions"].as_array().cloned().unwrap_or_default();
    let summary: Vec<_> = transactions
        .iter()
        .map(|t| {
            (
                t["kind"].clone(),
                t["amount_cents"].clone(),
                t["reference"].clone(),
                t["sequence"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!("deposit"), json!(5_000), json!("card-1"), json!(1)),
            (
                json!("deposit"),
                json!(2_500),
                json!("transfer-7"),
                json!(2)
            ),
        ],
        "oldest first, references stored trimmed"
    );
    for t in &transactions {
        let recorded = instant(&t["recorded_at"]);
        assert!((Utc::now() - recorded).abs() < TimeDelta::minutes(5));
    }
    // The answer's position works as a consistency token for the read.
    let fresh = app
        .get(
            &format!("{}?min_position={}", wallet(&patient), position(&second)),
            &app.staff,
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{:?}", fresh.body);
    assert_eq!(fresh.body["balance_cents"], 7_500);
    // Another patient's wallet is separate.
    assert_eq!(balance(&app, &new_id()).await, 0);
}

#[tokio::test]
async fn one_reference_deposited_by_eight_racing_requests_is_credited_exactly_once() {
    let app = app().await;
    let patient = new_id();
    let path = deposits(&patient);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            app.client
                .post(format!("{}{path}", app.base))
                .bearer_auth(&app.staff)
                .json(&json!({"amount_cents": 1_500, "reference": "slip-race"}))
                .send()
        })
        .collect();
    let mut statuses = Vec::new();
    for response in concurrently(requests).await {
        let response = response.unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != StatusCode::CREATED {
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::CONFLICT, Some("duplicate_reference")),
                "{body:?}"
            );
        }
        statuses.push(status);
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert_eq!(app.events().await, 1);
    app.read_own_writes().await;
    assert_eq!(balance(&app, &patient).await, 1_500);
}

#[tokio::test]
async fn a_never_used_wallet_reads_as_balance_zero_with_no_transactions_and_writes_nothing() {
    let app = app().await;
    let patient = new_id();
    let view = wallet_view(&app, &patient).await;
    assert_eq!(
        view,
        json!({"patient_id": patient, "balance_cents": 0, "transactions_total": 0,
               "transactions": [], "next_after": null})
    );
    assert_eq!(app.events().await, 0);
}

#[tokio::test]
async fn a_deposit_reference_is_credited_once_and_a_repeat_is_409_duplicate_reference_writing_nothing(
) {
    let app = app().await;
    let patient = new_id();
    deposit(&app, &patient, 4_000, "slip-42").await;
    let before = app.events().await;
    for reference in ["slip-42", "  slip-42  "] {
        for cents in [4_000, 1] {
            app.post(
                &deposits(&patient),
                &app.staff,
                json!({"amount_cents": cents, "reference": reference}),
            )
            .await
            .assert_problem(409, "duplicate_reference");
        }
    }
    // A payout may not reuse a deposit's reference either.
    app.post(
        &refunds(&patient),
        &app.staff,
        json!({"amount_cents": 100, "reference": "slip-42", "reason": "mistake"}),
    )
    .await
    .assert_problem(409, "duplicate_reference");
    assert_eq!(app.events().await, before, "refused deposits write nothing");
    assert_eq!(balance(&app, &patient).await, 4_000);
}

#[tokio::test]
async fn deposits_with_bad_amounts_or_fields_are_400_naming_the_field_and_write_nothing() {
    let app = app().await;
    let patient = new_id();
    let path = deposits(&patient);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"amount_cents": 0, "reference": "a"}),
            "invalid_input",
            "amount_cents",
        ),
        (
            json!({"amount_cents": -500, "reference": "a"}),
            "invalid_input",
            "amount_cents",
        ),
        (
            json!({"amount_cents": i64::MIN, "reference": "a"}),
            "invalid_input",
            "amount_cents",
        ),
        (
            json!({"amount_cents": 12.5, "reference": "a"}),
            "invalid_request",
            "amount_cents",
        ),
        (
            json!({"amount_cents": "100", "reference": "a"}),
            "invalid_request",
            "amount_cents",
        ),
        (
            json!({"amount_cents": null, "reference": "a"}),
            "invalid_request",
            "amount_cents",
        ),
        (json!({"reference": "a"}), "invalid_request", "amount_cents"),
        (json!({"amount_cents": 100}), "invalid_request", "reference"),
        (
            json!({"amount_cents": 100, "reference": null}),
            "invalid_request",
            "reference",
        ),
        (
            json!({"amount_cents": 100, "reference": "   "}),
            "invalid_input",
            "reference",
        ),
        (
            json!({"amount_cents": 100, "reference": "a", "currency": "EUR"}),
            "invalid_request",
            "currency",
        ),
        (
            json!({"amout_cents": 100, "reference": "a"}),
            "invalid_request",
            "amout_cents",
        ),
    ];
    for (body, code, field) in cases {
        let answer = app.post(&path, &app.staff, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {:?}",
            answer.body
        );
        assert_names(&answer, code, field);
    }
    // Beyond 64 bits: refused while parsing, never wrapped or rounded.
    for huge in ["100000000000000000000", "9223372036854775808", "1e30"] {
        let body = format!(r#"{{"amount_cents": {huge}, "reference": "huge"}}"#);
        let answer = app
            .raw(
                Method::POST,
                &path,
                &app.staff,
                "application/json",
                body.into_bytes(),
            )
            .await;
        assert_names(&answer, "invalid_request", "amount_cents");
    }
    app.raw(
        Method::POST,
        &path,
        &app.staff,
        "application/json",
        b"{\"amount_cents\": 1".to_vec(),
    )
    .await
    .assert_problem(400, "invalid_request");
    app.raw(
        Method::POST,
        &path,
        &app.staff,
        "text/plain",
        b"amount=1".to_vec(),
    )
    .await
    .assert_problem(415, "unsupported_media_type");
    assert_eq!(app.events().await, 0, "bad deposits write nothing");
    assert_eq!(balance(&app, &patient).await, 0);

    // The largest amount fits once; one cent more would overflow the balance.
    deposit(&app, &patient, i64::MAX, "everything").await;
    let before = app.events().await;
    let answer = app
        .post(
            &path,
            &app.staff,
            json!({"amount_cents": 1, "reference": "one more"}),
        )
        .await;
    // Each amount is valid; the stored balance cannot take it.
    answer.assert_problem(422, "inconsistent_input");
    assert!(answer.body["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("amount_cents"));
    assert_eq!(app.events().await, before);
    assert_eq!(balance(&app, &patient).await, i64::MAX);
}

#[tokio::test]
async fn a_refund_pays_out_at_most_the_balance_and_above_it_is_422_insufficient_funds_writing_nothing(
) {
    let app = app().await;
    let patient = new_id();
    // A wallet never used has nothing to pay out.
    app.post(
        &refunds(&patient),
        &app.staff,
        json!({"amount_cents": 1, "reference": "payout-0", "reason": "closing"}),
    )
    .await
    .assert_problem(422, "insufficient_funds");
    assert_eq!(app.events().await, 0);

    deposit(&app, &patient, 10_000, "card-1").await;
    let refund = app
        .post(
            &refunds(&patient),
            &app.staff,
            json!({"amount_cents": 4_000, "reference": "payout-1", "reason": "treatment cancelled"}),
        )
        .await;
    assert_eq!(refund.status, StatusCode::CREATED, "{:?}", refund.body);
    assert_eq!(refund.body["balance_cents"], 6_000);
    position(&refund);

    let before = app.events().await;
    let above = app
        .post(
            &refunds(&patient),
            &app.staff,
            json!({"amount_cents": 6_001, "reference": "payout-2", "reason": "closing"}),
        )
        .await;
    above.assert_problem(422, "insufficient_funds");
    assert_eq!(
        app.events().await,
        before,
        "a refused refund writes nothing"
    );
    assert_eq!(balance(&app, &patient).await, 6_000);

    // The reference of the refused payout is still free; all of it may go.
    let all = app
        .post(
            &refunds(&patient),
            &app.staff,
            json!({"amount_cents": 6_000, "reference": "payout-2", "reason": "closing"}),
        )
        .await;
    assert_eq!(all.status, StatusCode::CREATED, "{:?}", all.body);
    assert_eq!(all.body["balance_cents"], 0);

    let view = wallet_view(&app, &patient).await;
    let moves: Vec<_> = view["transactions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| (t["kind"].clone(), t["amount_cents"].clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (json!("deposit"), json!(10_000)),
            (json!("refund"), json!(-4_000)),
            (json!("refund"), json!(-6_000)),
        ],
        "refunds are negative"
    );
    assert_eq!(view["balance_cents"], 0);
}

#[tokio::test]
async fn refunds_without_a_reason_or_with_bad_fields_are_400_naming_the_field_and_write_nothing() {
    let app = app().await;
    let patient = new_id();
    deposit(&app, &patient, 10_000, "card-1").await;
    let before = app.events().await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"amount_cents": 100, "reference": "p-1"}),
            "invalid_request",
            "reason",
        ),
        (
            json!({"amount_cents": 100, "reference": "p-1", "reason": "   "}),
            "invalid_input",
            "reason",
        ),
        (
            json!({"amount_cents": 100, "reason": "why"}),
            "invalid_request",
            "reference",
        ),
        (
            json!({"amount_cents": 100, "reference": "", "reason": "why"}),
            "invalid_input",
            "reference",
        ),
        (
            json!({"amount_cents": 0, "reference": "p-1", "reason": "why"}),
            "invalid_input",
            "amount_cents",
        ),
        (
            json!({"amount_cents": -100, "reference": "p-1", "reason": "why"}),
            "invalid_input",
            "amount_cents",
        ),
        (
            json!({"amount_cents": 100, "reference": "p-1", "reason": "why", "notify": true}),
            "invalid_request",
            "notify",
        ),
    ];
    for (body, code, field) in cases {
        let answer = app.post(&refunds(&patient), &app.staff, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {:?}",
            answer.body
        );
        assert_names(&answer, code, field);
    }
    assert_eq!(app.events().await, before);
    assert_eq!(balance(&app, &patient).await, 10_000);
}

// --------------------------------------------------------------- packages

#[tokio::test]
async fn a_package_paid_from_the_wallet_debits_the_program_price_and_reads_back_with_its_history() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 60_000, 365).await;
    let patient = new_id();
    deposit(&app, &patient, 100_000, "card-1").await;
    let before = app.events().await;

    let earliest = Utc::now();
    let bought = app
        .post(
            "/v1/packages",
            &app.staff,
            json!({"patient_id": patient, "program_id": program_id, "payment": {"method": "wallet"}}),
        )
        .await;
    let latest = Utc::now();
    assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.body);
    let package_id = text(&bought, "package_id");
    assert!(Uuid::parse_str(&package_id).is_ok());
    assert_eq!(bought.body["sessions_left"], 6);
    let valid_until = instant(&bought.body["valid_until"]);
    let slack = TimeDelta::seconds(1);
    assert!(
        valid_until >= earliest + TimeDelta::days(365) - slack
            && valid_until <= latest + TimeDelta::days(365) + slack,
        "valid_until {valid_until} is the purchase time plus 365 days"
    );
    position(&bought);
    assert_eq!(
        app.events().await,
        before + 2,
        "the purchase and the debit, nothing else"
    );

    let view = wallet_view(&app, &patient).await;
    assert_eq!(view["balance_cents"], 40_000);
    let debit = &view["transactions"][1];
    assert_eq!(debit["kind"], "debit");
    assert_eq!(debit["amount_cents"], -60_000);
    assert_eq!(debit["reference"], format!("package:{package_id}"));

    let package = app
        .get(&format!("/v1/packages/{package_id}"), &app.staff)
        .await;
    assert_eq!(package.status, StatusCode::OK, "{:?}", package.body);
    let p = &package.body;
    assert_eq!(p["package_id"], package_id.as_str());
    assert_eq!(p["patient_id"], patient.as_str());
    assert_eq!(p["program_id"], program_id.as_str());
    assert_eq!(p["treatment_id"], ids.laser_treatment.as_str());
    assert_eq!(
        (
            &p["sessions_total"],
            &p["sessions_used"],
            &p["sessions_left"]
        ),
        (&json!(6), &json!(0), &json!(6))
    );
    assert_eq!(instant(&p["valid_until"]), valid_until);
    assert_eq!(p["clinic_ids"], json!([ids.clinic]));
    assert_eq!(p["price_cents"], 60_000);
    let history = p["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["sequence"], 1);
    assert_eq!(history[0]["event"], "purchased");
    assert_eq!(history[0]["sessions"], 6);
    assert_eq!(history[0]["price_cents"], 60_000);
    assert_eq!(history[0]["clinic_ids"], json!([ids.clinic]));
    assert_eq!(history[0]["payment"], json!({"method": "wallet"}));
    assert_eq!(instant(&history[0]["valid_until"]), valid_until);
}

#[tokio::test]
async fn a_wallet_purchase_above_the_balance_is_422_and_writes_neither_package_nor_debit() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 60_000, 365).await;
    let patient = new_id();
    let package_id = new_id();
    let body = json!({"package_id": package_id, "patient_id": patient, "program_id": program_id,
                      "payment": {"method": "wallet"}});

    // A never-used wallet, then one holding a cent less than the price.
    for (cents, reference) in [(0, ""), (59_999, "card-1")] {
        if cents > 0 {
            deposit(&app, &patient, cents, reference).await;
        }
        let before = app.events().await;
        app.post("/v1/packages", &app.staff, body.clone())
            .await
            .assert_problem(422, "insufficient_funds");
        assert_eq!(app.events().await, before, "nothing written");
        assert_eq!(balance(&app, &patient).await, cents);
        app.get(&format!("/v1/packages/{package_id}"), &app.staff)
            .await
            .assert_problem(404, "not_found");
    }

    // With enough money the same purchase then goes through.
    deposit(&app, &patient, 1, "card-2").await;
    let bought = app.post("/v1/packages", &app.staff, body).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.body);
    assert_eq!(bought.body["package_id"], package_id.as_str());
    assert_eq!(balance(&app, &patient).await, 0);
}

#[tokio::test]
async fn racing_wallet_purchases_never_overdraw_the_wallet() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 60_000, 365).await;
    let patient = new_id();
    deposit(&app, &patient, 100_000, "card-1").await;
    let before = app.events().await;
    let requests: Vec<_> = (0..4)
        .map(|_| {
            app.client
                .post(format!("{}/v1/packages", app.base))
                .bearer_auth(&app.staff)
                .json(&json!({"patient_id": patient, "program_id": program_id,
                              "payment": {"method": "wallet"}}))
                .send()
        })
        .collect();
    let mut statuses = Vec::new();
    for response in concurrently(requests).await {
        let response = response.unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != StatusCode::CREATED {
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds")),
                "{body:?}"
            );
        }
        statuses.push(status);
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(
        created, 1,
        "only one 60 000 package fits in 100 000: {statuses:?}"
    );
    assert_eq!(app.events().await, before + 2, "one purchase, one debit");
    app.read_own_writes().await;
    assert_eq!(balance(&app, &patient).await, 40_000);
}

#[tokio::test]
async fn an_externally_paid_package_leaves_the_wallet_untouched_and_records_the_reference() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 30_000, 90).await;
    let patient = new_id();
    let before = app.events().await;
    let bought = app
        .post(
            "/v1/packages",
            &app.staff,
            json!({"patient_id": patient, "program_id": program_id,
                   "payment": {"method": "external", "reference": " terminal-77 "}}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.body);
    assert_eq!(bought.body["sessions_left"], 6);
    assert_eq!(app.events().await, before + 1, "only the package");
    let package_id = text(&bought, "package_id");

    assert_eq!(
        wallet_view(&app, &patient).await["transactions"],
        json!([]),
        "the wallet is not touched"
    );
    let package = app
        .get(&format!("/v1/packages/{package_id}"), &app.staff)
        .await;
    assert_eq!(package.status, StatusCode::OK, "{:?}", package.body);
    assert_eq!(package.body["price_cents"], 30_000);
    assert_eq!(
        package.body["history"][0]["payment"],
        json!({"method": "external", "reference": "terminal-77"})
    );
    let valid_until = instant(&package.body["valid_until"]);
    assert!((valid_until - (Utc::now() + TimeDelta::days(90))).abs() < TimeDelta::minutes(1));
}

#[tokio::test]
async fn package_requests_with_a_bad_payment_or_fields_are_400_naming_the_field_and_write_nothing()
{
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 30_000, 90).await;
    let patient = new_id();
    deposit(&app, &patient, 100_000, "card-1").await;
    let before = app.events().await;
    let purchase = |payment: Value| json!({"patient_id": patient, "program_id": program_id, "payment": payment});
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            purchase(json!({"method": "wallet", "reference": "x"})),
            "invalid_request",
            "reference",
        ),
        (
            purchase(json!({"method": "external"})),
            "invalid_request",
            "reference",
        ),
        (
            purchase(json!({"method": "external", "reference": "  "})),
            "invalid_input",
            "reference",
        ),
        (
            purchase(json!({"method": "external", "reference": "t-1", "amount_cents": 5})),
            "invalid_request",
            "amount_cents",
        ),
        (
            purchase(json!({"method": "cash"})),
            "invalid_request",
            "payment",
        ),
        (purchase(json!({})), "invalid_request", "payment"),
        (purchase(json!("wallet")), "invalid_request", "payment"),
        (
            json!({"patient_id": patient, "program_id": program_id}),
            "invalid_request",
            "payment",
        ),
        (
            json!({"patient_id": patient, "payment": {"method": "wallet"}}),
            "invalid_request",
            "program_id",
        ),
        (
            json!({"patient_id": "bob", "program_id": program_id, "payment": {"method": "wallet"}}),
            "invalid_request",
            "patient_id",
        ),
        (
            json!({"package_id": "p-1", "patient_id": patient, "program_id": program_id,
                   "payment": {"method": "wallet"}}),
            "invalid_request",
            "package_id",
        ),
        (
            json!({"patient_id": patient, "program_id": program_id, "payment": {"method": "wallet"},
                   "sessions": 100}),
            "invalid_request",
            "sessions",
        ),
    ];
    for (body, code, field) in cases {
        let answer = app.post("/v1/packages", &app.staff, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {:?}",
            answer.body
        );
        assert_names(&answer, code, field);
    }
    assert_eq!(app.events().await, before);
    assert_eq!(balance(&app, &patient).await, 100_000);
}

#[tokio::test]
async fn buying_an_unknown_program_is_404_and_writes_nothing() {
    let app = app().await;
    let patient = new_id();
    deposit(&app, &patient, 100_000, "card-1").await;
    let before = app.events().await;
    for payment in [
        json!({"method": "wallet"}),
        json!({"method": "external", "reference": "t-1"}),
    ] {
        app.post(
            "/v1/packages",
            &app.staff,
            json!({"patient_id": patient, "program_id": new_id(), "payment": payment}),
        )
        .await
        .assert_problem(404, "not_found");
    }
    assert_eq!(app.events().await, before);
    assert_eq!(balance(&app, &patient).await, 100_000);
    app.get(&format!("/v1/packages/{}", new_id()), &app.staff)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn a_purchase_retried_with_the_same_package_id_answers_the_first_package_and_charges_once() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 25_000, 180).await;
    let patient = new_id();
    deposit(&app, &patient, 100_000, "card-1").await;
    let package_id = new_id();
    let body = json!({"package_id": package_id, "patient_id": patient, "program_id": program_id,
                      "payment": {"method": "wallet"}});
    let first = app.post("/v1/packages", &app.staff, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let written = app.events().await;
    let package_part = |a: &Answer| {
        (
            a.body["package_id"].clone(),
            a.body["sessions_left"].clone(),
            a.body["valid_until"].clone(),
        )
    };
    for _ in 0..3 {
        let again = app.post("/v1/packages", &app.staff, body.clone()).await;
        assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
        assert_eq!(package_part(&again), package_part(&first));
    }
    assert_eq!(app.events().await, written, "retries write nothing");
    assert_eq!(balance(&app, &patient).await, 75_000, "charged once");

    // Racing first attempts of one purchase also charge once.
    let racing_id = new_id();
    let racing = json!({"package_id": racing_id, "patient_id": patient, "program_id": program_id,
                        "payment": {"method": "wallet"}});
    let requests: Vec<_> = (0..6)
        .map(|_| {
            app.client
                .post(format!("{}/v1/packages", app.base))
                .bearer_auth(&app.staff)
                .json(&racing)
                .send()
        })
        .collect();
    let mut answers = Vec::new();
    for response in concurrently(requests).await {
        let response = response.unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        answers.push((
            status,
            body["package_id"].clone(),
            body["sessions_left"].clone(),
            body["valid_until"].clone(),
        ));
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "all answers name the one package: {answers:?}"
    );
    assert_eq!(answers[0].0, StatusCode::CREATED);
    assert_eq!(answers[0].1, json!(racing_id));
    assert_eq!(app.events().await, written + 2, "one purchase, one debit");
    app.read_own_writes().await;
    assert_eq!(balance(&app, &patient).await, 50_000);

    // The same package_id for another purchase is refused, not answered.
    let other_program = program(&app, &ids, 10_000, 30).await;
    let before = app.events().await;
    app.post(
        "/v1/packages",
        &app.staff,
        json!({"package_id": package_id, "patient_id": patient, "program_id": other_program,
               "payment": {"method": "wallet"}}),
    )
    .await
    .assert_problem(409, "already_exists");
    app.post(
        "/v1/packages",
        &app.staff,
        json!({"package_id": package_id, "patient_id": new_id(), "program_id": program_id,
               "payment": {"method": "external", "reference": "t-9"}}),
    )
    .await
    .assert_problem(409, "already_exists");
    assert_eq!(app.events().await, before);
    assert_eq!(balance(&app, &patient).await, 50_000);
}

#[tokio::test]
async fn a_package_transfers_to_a_clinic_offering_its_treatment_and_is_refused_404_elsewhere() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 30_000, 90).await;
    // A second branch offering the very same treatment (same id).
    let hamburg = bare_clinic(&app, "Hamburg").await;
    let shared = app
        .post(
            &format!("/v1/clinics/{hamburg}/treatments"),
            &app.admin,
            json!({"treatment_id": ids.laser_treatment, "name": "Laser hair removal",
                   "duration_minutes": 45, "buffer_minutes": 15, "price_cents": 12_000,
                   "resource_kind": "device"}),
        )
        .await;
    assert_eq!(shared.status, StatusCode::CREATED, "{:?}", shared.body);
    assert_eq!(shared.body["treatment_id"], ids.laser_treatment.as_str());
    // A third one offering only its own consultation.
    let munich = bare_clinic(&app, "Munich").await;
    let own = app
        .post(
            &format!("/v1/clinics/{munich}/treatments"),
            &app.admin,
            json!({"name": "Laser hair removal", "duration_minutes": 45, "buffer_minutes": 15,
                   "price_cents": 12_000, "resource_kind": "device"}),
        )
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{:?}", own.body);

    let bought = app
        .post(
            "/v1/packages",
            &app.staff,
            json!({"patient_id": new_id(), "program_id": program_id,
                   "payment": {"method": "external", "reference": "t-1"}}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.body);
    let package_id = text(&bought, "package_id");
    let transfer = format!("/v1/packages/{package_id}/transfer");

    let before = app.events().await;
    for (to, why) in [
        (&munich, "a clinic without the package's treatment"),
        (&new_id(), "an unknown clinic"),
    ] {
        let answer = app
            .post(&transfer, &app.staff, json!({"to_clinic_id": to}))
            .await;
        answer.assert_problem(404, "not_found");
        assert_eq!(app.events().await, before, "{why}: nothing written");
    }
    app.post(
        &format!("/v1/packages/{}/transfer", new_id()),
        &app.staff,
        json!({"to_clinic_id": hamburg}),
    )
    .await
    .assert_problem(404, "not_found");
    for (body, field) in [
        (json!({}), "to_clinic_id"),
        (json!({"to_clinic_id": "hamburg"}), "to_clinic_id"),
        (json!({"to_clinic_id": hamburg, "keep": true}), "keep"),
    ] {
        let answer = app.post(&transfer, &app.staff, body).await;
        assert_names(&answer, "invalid_request", field);
    }
    assert_eq!(app.events().await, before);

    let moved = app
        .post(&transfer, &app.staff, json!({"to_clinic_id": hamburg}))
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    position(&moved);
    assert_eq!(app.events().await, before + 1);
    assert_eq!(moved.body["clinic_ids"], json!([hamburg]));
    assert_eq!(moved.body["sessions_left"], 6);
    let history = moved.body["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[1]["sequence"], 2);
    assert_eq!(history[1]["event"], "transferred");
    assert_eq!(history[1]["from_clinic_ids"], json!([ids.clinic]));
    assert_eq!(history[1]["to_clinic_id"], hamburg.as_str());

    let read = app
        .get(&format!("/v1/packages/{package_id}"), &app.staff)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    let mut answered = moved.body.clone();
    if let Some(map) = answered.as_object_mut() {
        map.remove("position");
    }
    assert_eq!(read.body, answered, "the transfer answers the package view");

    // Moving it where it already is changes nothing; and back home works.
    let again = app
        .post(&transfer, &app.staff, json!({"to_clinic_id": hamburg}))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["clinic_ids"], json!([hamburg]));
    assert_eq!(
        app.events().await,
        before + 1,
        "a no-op transfer writes nothing"
    );
    let home = app
        .post(&transfer, &app.staff, json!({"to_clinic_id": ids.clinic}))
        .await;
    assert_eq!(home.status, StatusCode::OK, "{:?}", home.body);
    assert_eq!(home.body["clinic_ids"], json!([ids.clinic]));
    assert_eq!(app.events().await, before + 2);
}

/// Fails today (product bug): a retry answers `"position": null`, so a
/// client whose first answer was lost cannot use the retry's position as
/// its consistency token. The same answer includes the position, as an
/// `Idempotency-Key` replay does.
#[tokio::test]
async fn a_purchase_retried_with_the_same_package_id_answers_the_same_body_position_included() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 25_000, 180).await;
    let patient = new_id();
    deposit(&app, &patient, 100_000, "card-1").await;
    let body = json!({"package_id": new_id(), "patient_id": patient, "program_id": program_id,
                      "payment": {"method": "wallet"}});
    let first = app.post("/v1/packages", &app.staff, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    position(&first);
    let again = app.post("/v1/packages", &app.staff, body).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(again.body, first.body, "a retry answers the first answer");
    assert_eq!(balance(&app, &patient).await, 75_000);
}

/// Fails today (product bug): deposit and refund references share one
/// namespace with the wallet's own debit references (`package:<id>`,
/// `reservation:<id>`), so a deposit typed as `package:<id>` makes the later
/// wallet purchase of that package fail with 409 `duplicate_reference`.
/// Either such a reference is refused up front (400) or the purchase works.
#[tokio::test]
async fn a_deposit_reference_can_never_block_a_later_wallet_purchase() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 10_000, 30).await;
    let patient = new_id();
    let package_id = new_id();
    deposit(&app, &patient, 50_000, "card-1").await;
    let sneaky = app
        .post(
            &deposits(&patient),
            &app.staff,
            json!({"amount_cents": 1_000, "reference": format!("package:{package_id}")}),
        )
        .await;
    if sneaky.status != StatusCode::CREATED {
        sneaky.assert_problem(400, "invalid_input");
    }
    let bought = app
        .post(
            "/v1/packages",
            &app.staff,
            json!({"package_id": package_id, "patient_id": patient, "program_id": program_id,
                   "payment": {"method": "wallet"}}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.body);
}

// ------------------------------------------------------------ idempotency

#[tokio::test]
async fn a_deposit_sent_ten_times_concurrently_with_one_idempotency_key_credits_once_with_identical_answers(
) {
    let app = app().await;
    let patient = new_id();
    let path = deposits(&patient);
    let body = json!({"amount_cents": 2_000, "reference": "card-9"});
    let requests: Vec<_> = (0..10)
        .map(|_| {
            app.client
                .post(format!("{}{path}", app.base))
                .bearer_auth(&app.staff)
                .header("idempotency-key", "deposit-card-9")
                .json(&body)
                .send()
        })
        .collect();
    let mut answers = Vec::new();
    for response in concurrently(requests).await {
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
    assert_eq!(answers[0].1["balance_cents"], 2_000);
    assert!(answers[0].1["position"].as_i64().unwrap_or(0) > 0);
    assert_eq!(app.events().await, 1, "one deposit");
    app.read_own_writes().await;
    assert_eq!(balance(&app, &patient).await, 2_000);

    // Later, the same key and body still replays the first answer.
    let later = post_with_key(&app, &path, "deposit-card-9", &body).await;
    assert_eq!(later, answers[0]);

    // The same key with another body is refused and writes nothing.
    let (status, problem) = post_with_key(
        &app,
        &path,
        "deposit-card-9",
        &json!({"amount_cents": 3_000, "reference": "card-10"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem:?}");
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(app.events().await, 1);
    assert_eq!(balance(&app, &patient).await, 2_000);
}

#[tokio::test]
async fn a_package_purchase_replayed_by_idempotency_key_answers_the_first_answer_and_charges_once()
{
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 20_000, 60).await;
    let patient = new_id();
    deposit(&app, &patient, 50_000, "card-1").await;
    let body =
        json!({"patient_id": patient, "program_id": program_id, "payment": {"method": "wallet"}});
    let first = post_with_key(&app, "/v1/packages", "buy-1", &body).await;
    assert_eq!(first.0, StatusCode::CREATED, "{:?}", first.1);
    let written = app.events().await;
    // No package_id in the body: without the key a retry would buy twice.
    let replay = post_with_key(&app, "/v1/packages", "buy-1", &body).await;
    assert_eq!(replay, first, "same status and body, position included");
    assert_eq!(app.events().await, written);
    assert_eq!(balance(&app, &patient).await, 30_000);
    let (status, problem) = post_with_key(
        &app,
        "/v1/packages",
        "buy-1",
        &json!({"patient_id": patient, "program_id": program_id,
                "payment": {"method": "external", "reference": "t-1"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem:?}");
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(app.events().await, written);
}

// ------------------------------------------------------- roles and paths

/// Every wallet and package route with a body that would be accepted.
fn routes(
    patient: &str,
    package: &str,
    program: &str,
    clinic: &str,
) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            deposits(patient),
            Some(json!({"amount_cents": 100, "reference": "r-1"})),
        ),
        (
            Method::POST,
            refunds(patient),
            Some(json!({"amount_cents": 100, "reference": "r-2", "reason": "why"})),
        ),
        (Method::GET, wallet(patient), None),
        (
            Method::POST,
            "/v1/packages".to_string(),
            Some(json!({"patient_id": patient, "program_id": program,
                        "payment": {"method": "external", "reference": "t-1"}})),
        ),
        (
            Method::POST,
            format!("/v1/packages/{package}/transfer"),
            Some(json!({"to_clinic_id": clinic})),
        ),
        (Method::GET, format!("/v1/packages/{package}"), None),
    ]
}

#[tokio::test]
async fn analysts_and_auditors_get_403_and_callers_without_a_token_401_on_every_money_route() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 10_000, 30).await;
    let patient = new_id();
    deposit(&app, &patient, 1_000, "card-1").await;
    let bought = app
        .post(
            "/v1/packages",
            &app.staff,
            json!({"patient_id": patient, "program_id": program_id,
                   "payment": {"method": "external", "reference": "t-0"}}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.body);
    let package_id = text(&bought, "package_id");
    let before = app.events().await;
    for (method, path, body) in routes(&patient, &package_id, &program_id, &ids.clinic) {
        for token in [&app.analyst, &app.auditor] {
            app.send(method.clone(), &path, Some(token), body.clone())
                .await
                .assert_problem(403, "forbidden");
        }
        let anonymous = app.send(method.clone(), &path, None, body.clone()).await;
        anonymous.assert_problem(401, "unauthorized");
        app.send(method.clone(), &path, Some("not-a-jwt"), body.clone())
            .await
            .assert_problem(401, "unauthorized");
    }
    assert_eq!(app.events().await, before, "refused callers write nothing");
    assert_eq!(balance(&app, &patient).await, 1_000);

    // Staff and admin may use every route.
    for token in [&app.staff, &app.admin] {
        let patient = new_id();
        for (method, path, body) in routes(&patient, &package_id, &program_id, &ids.clinic) {
            let answer = app.send(method.clone(), &path, Some(token), body).await;
            assert!(
                answer.status.is_success(),
                "{method} {path}: {:?}",
                answer.body
            );
        }
    }
}

#[tokio::test]
async fn a_path_id_that_is_not_a_uuid_is_400_on_every_money_route_and_writes_nothing() {
    let app = app().await;
    let ids = app.clinic().await;
    let program_id = program(&app, &ids, 10_000, 30).await;
    let before = app.events().await;
    for (method, path, body) in routes("patient-7", "package-7", &program_id, &ids.clinic)
        .into_iter()
        .filter(|(_, path, _)| path != "/v1/packages")
    {
        let answer = app
            .send(method.clone(), &path, Some(&app.staff), body)
            .await;
        answer.assert_problem(400, "invalid_request");
        assert!(
            answer.body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("path parameter"),
            "{method} {path}: {:?}",
            answer.body
        );
    }
    assert_eq!(app.events().await, before);
}
