//! Webhooks end to end: a real axum receiver in the test that fails the
//! first deliveries, checks every signature, the order and deduplication by
//! event id; a receiver that hangs delays no other subscription; a delivery
//! failing past the give-up time is dead-lettered and the line moves on;
//! URLs are checked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clinicbook_notify::DeliveryConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common::{app, App};

/// What a receiver saw: each request's event id header, signature header
/// and body.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, String, String)>,
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Seen>>,
    /// Requests answered 500 before the first 2xx.
    fail_first: usize,
    /// Answer nothing for this long (a hanging receiver).
    hang: Option<Duration>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let count = {
        let mut seen = r
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.requests.push((
            header("clinicbook-event-id"),
            header("clinicbook-signature"),
            body,
        ));
        seen.requests.len()
    };
    if let Some(hang) = r.hang {
        tokio::time::sleep(hang).await;
    }
    if count <= r.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// A receiver on a free loopback port; answers its URL.
async fn receiver(r: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let router = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(r);
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/hook")
}

fn fast() -> DeliveryConfig {
    DeliveryConfig {
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        give_up_after: Duration::from_secs(24 * 3600),
        timeout: Duration::from_secs(1),
        poll: Duration::from_millis(20),
        batch: 200,
    }
}

async fn subscribe(app: &App, url: &str, events: Value) -> (String, String) {
    let created = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": url, "events": events, "description": "test"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let text = |f: &str| created.body[f].as_str().unwrap_or_default().to_owned();
    (text("webhook_id"), text("secret"))
}

/// Five deposits and a refund into one wallet: six wallet events.
async fn wallet_events(app: &App) -> String {
    let patient = Uuid::new_v4().to_string();
    for i in 0..5 {
        let done = app
            .post(
                &format!("/v1/wallets/{patient}/deposits"),
                &app.staff,
                json!({"amount_cents": 1000 + i, "reference": format!("dep-{i}")}),
            )
            .await;
        assert_eq!(done.status, 201, "{:?}", done.body);
    }
    let done = app
        .post(
            &format!("/v1/wallets/{patient}/refunds"),
            &app.staff,
            json!({"amount_cents": 500, "reference": "ref-1", "reason": "asked"}),
        )
        .await;
    assert_eq!(done.status, 201, "{:?}", done.body);
    patient
}

/// Polls `done` every 20 ms for up to 30 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn distinct_ids(seen: &Seen) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for (id, _, _) in &seen.requests {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids
}

#[tokio::test]
async fn deliveries_are_signed_retried_in_order_and_deduplicable() {
    let app = app().await;
    let stop = CancellationToken::new();
    clinicbook_notify::worker::spawn(app.db.pool.clone(), fast(), stop.clone(), None);
    let good = Receiver {
        seen: Arc::default(),
        fail_first: 3,
        hang: None,
    };
    let hanging = Receiver {
        seen: Arc::default(),
        fail_first: usize::MAX,
        hang: Some(Duration::from_secs(60)),
    };
    let (webhook, secret) = subscribe(
        &app,
        &receiver(good.clone()).await,
        json!(["wallet.credited", "wallet.debited"]),
    )
    .await;
    let (slow_webhook, _) = subscribe(&app, &receiver(hanging.clone()).await, json!(["*"])).await;
    let patient = wallet_events(&app).await;

    eventually("six distinct events at the good receiver", || {
        distinct_ids(
            &good
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .len()
            == 6
    })
    .await;
    // Give a possible seventh delivery the time to show up: there is none.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = Seen {
        requests: good
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .requests
            .clone(),
    };
    let ids = distinct_ids(&seen);
    assert_eq!(
        ids,
        (1..=6)
            .map(|sequence| format!("Wallet/{patient}/{sequence}"))
            .collect::<Vec<_>>(),
        "in feed order, each once"
    );
    // The first event was tried until it was accepted (3 failures), before
    // any later one: the line waits for its head.
    assert_eq!(seen.requests.len(), 6 + 3);
    for (id, _, _) in &seen.requests[..4] {
        assert_eq!(id, &ids[0]);
    }
    let mut types = Vec::new();
    for (id, signature, body) in &seen.requests {
        assert!(
            clinicbook_notify::sign::verify(&secret, signature, body.as_bytes()),
            "bad signature {signature} on {body}"
        );
        assert!(!clinicbook_notify::sign::verify(
            "whsec_other",
            signature,
            body.as_bytes()
        ));
        let body: Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(&body["id"], id);
        assert_eq!(body["data"]["aggregate_id"], patient.as_str());
        assert!(body["occurred_at"].as_str().is_some());
        types.push(body["type"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(types.last().map(String::as_str), Some("wallet.debited"));
    assert_eq!(types[0], "wallet.credited");

    // The deliveries list tells the same story.
    let page = app
        .get(&format!("/v1/webhooks/{webhook}/deliveries"), &app.admin)
        .await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let deliveries = page.body["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(deliveries.len(), 6);
    assert_eq!(deliveries[0]["attempts"], 4);
    assert_eq!(deliveries[0]["last_status"], 204);
    for d in &deliveries {
        assert!(d["delivered_at"].as_str().is_some(), "{d}");
        assert_eq!(d["next_attempt_at"], Value::Null);
    }
    assert_eq!(deliveries[5]["type"], "wallet.debited");

    // The hanging receiver got its first request and holds it: nothing of
    // its subscription is delivered, and it delayed nothing above.
    let slow = app
        .get(
            &format!("/v1/webhooks/{slow_webhook}/deliveries"),
            &app.admin,
        )
        .await;
    let slow = slow.body["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(slow.iter().all(|d| d["delivered_at"].is_null()), "{slow:?}");
    assert!(!hanging
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .requests
        .is_empty());

    // Listed without secrets; deleted, it stops.
    let list = app.get("/v1/webhooks", &app.admin).await;
    assert_eq!(list.body["webhooks"].as_array().map(Vec::len), Some(2));
    assert!(!list.body.to_string().contains(&secret));
    let deleted = app
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{webhook}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    app.send(
        reqwest::Method::DELETE,
        &format!("/v1/webhooks/{webhook}"),
        Some(&app.admin),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    stop.cancel();
}

#[tokio::test]
async fn a_delivery_failing_past_the_give_up_time_is_dead_lettered_and_the_line_moves_on() {
    let app = app().await;
    let stop = CancellationToken::new();
    let config = DeliveryConfig {
        give_up_after: Duration::from_millis(300),
        ..fast()
    };
    clinicbook_notify::worker::spawn(app.db.pool.clone(), config, stop.clone(), None);
    let failing = Receiver {
        seen: Arc::default(),
        fail_first: usize::MAX,
        hang: None,
    };
    let (webhook, _) = subscribe(&app, &receiver(failing.clone()).await, json!(["*"])).await;
    wallet_events(&app).await;
    let path = format!("/v1/webhooks/{webhook}/deliveries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let deliveries = loop {
        let page = app.get(&path, &app.admin).await;
        let deliveries = page.body["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if deliveries.len() == 6 && deliveries.iter().all(|d| d["dead_lettered_at"].is_string()) {
            break deliveries;
        }
        assert!(tokio::time::Instant::now() < deadline, "{deliveries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for d in &deliveries {
        assert!(
            d["attempts"].as_i64().unwrap_or(0) >= 2,
            "retried first: {d}"
        );
        assert_eq!(d["last_status"], 500);
        assert_eq!(d["delivered_at"], Value::Null);
        assert_eq!(d["next_attempt_at"], Value::Null);
    }
    stop.cancel();
}

#[tokio::test]
async fn webhook_urls_and_names_are_checked() {
    let app = app().await;
    for (url, events) in [
        ("http://10.0.0.1/hook", json!(["*"])),
        ("http://169.254.169.254/latest", json!(["*"])),
        ("http://example.com/hook", json!(["*"])),
        ("ftp://127.0.0.1/hook", json!(["*"])),
        ("https://user:pw@example.com/hook", json!(["*"])),
        ("https://example.com/hook", json!(["reservation.exploded"])),
        ("https://example.com/hook", json!([])),
    ] {
        app.post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": url, "events": events}),
        )
        .await
        .assert_problem(400, "invalid_input");
    }
    app.post(
        "/v1/webhooks",
        &app.staff,
        json!({"url": "https://example.com/hook", "events": ["*"]}),
    )
    .await
    .assert_problem(403, "forbidden");
    let ok = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": "https://example.com/hook", "events": ["reservation.booked"]}),
        )
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    assert!(ok.body["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));
    let list = app.get("/v1/webhooks", &app.admin).await;
    assert_eq!(list.body["webhooks"].as_array().map(Vec::len), Some(1));
    app.get(
        &format!("/v1/webhooks/{}/deliveries", Uuid::new_v4()),
        &app.admin,
    )
    .await
    .assert_problem(404, "not_found");
}

#[tokio::test]
async fn star_stands_alone_and_a_retried_subscription_answers_the_first() {
    let app = app().await;
    app.post(
        "/v1/webhooks",
        &app.admin,
        json!({"url": "https://example.com/hook", "events": ["*", "reservation.booked"]}),
    )
    .await
    .assert_problem(422, "inconsistent_input");
    let send = |body: Value| {
        let app = &app;
        async move {
            let answer = app
                .client
                .post(format!("{}/v1/webhooks", app.base))
                .bearer_auth(&app.admin)
                .header("idempotency-key", "hook-1")
                .json(&body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or_default())
        }
    };
    let body_again = || json!({"url": "https://example.com/hook", "events": ["*"]});
    let body = body_again();
    let first = send(body.clone()).await;
    assert_eq!(first.0, 201);
    assert_eq!(send(body).await, first);
    let other = send(json!({"url": "https://example.org/hook", "events": ["*"]})).await;
    assert_eq!(other.0, 422);
    assert_eq!(other.1["code"], "idempotency_key_reused");
    let list = app.get("/v1/webhooks", &app.admin).await;
    assert_eq!(list.body["webhooks"].as_array().map(Vec::len), Some(1));

    // Deleted, the key's subscription is not answered again (a later DELETE
    // of that answer would find nothing), and no new one is made under it.
    let id = first.1["webhook_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deleted = app
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    let again = send(body_again()).await;
    assert_eq!(again.0, 422, "{:?}", again.1);
    assert_eq!(again.1["code"], "idempotency_key_reused");
    assert!(
        again.1["detail"]
            .as_str()
            .is_some_and(|d| d.contains("deleted")),
        "{:?}",
        again.1
    );
    let list = app.get("/v1/webhooks", &app.admin).await;
    assert_eq!(list.body["webhooks"].as_array().map(Vec::len), Some(0));
}
