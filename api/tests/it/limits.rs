//! Limits that fit the threat: the rate limit keyed by who the caller
//! really is (a verified subject, else the peer address), bounded wallet
//! pages, and `/readyz` saying only `ok`/`degraded`.

use axum::body::Body;
use clinicbook_api::auth::Role;
use clinicbook_api::limit::{parse_network, TrustedProxies};
use clinicbook_api::{AppState, Limits};
use clinicbook_commands::{Clock, Commands};
use clinicbook_eventstore::{EventStore, StoreConfig, MIGRATOR};
use clinicbook_projections::ReadModels;
use clinicbook_testkit::services;
use http_body_util::BodyExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

use crate::common::{app, app_with, App};

/// A limit of one request a second after a burst of `burst`.
fn strict(burst: u32) -> Limits {
    Limits {
        rate_per_second: 1,
        burst,
        ..Limits::default()
    }
}

const SOME_CLINIC: &str = "/v1/clinics/00000000-0000-0000-0000-000000000000";

/// GETs `path` with `token` (any string) and `X-Forwarded-For` values.
async fn get(app: &App, path: &str, token: Option<&str>, forwarded: Option<&str>) -> StatusCode {
    let mut request = app.client.get(format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "429 without Retry-After"
        );
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(kind.starts_with("application/problem+json"), "{kind}");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(body["code"], "rate_limited", "{body}");
        return StatusCode::TOO_MANY_REQUESTS;
    }
    response.status()
}

fn random_token() -> String {
    format!(
        "{}.{}.{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

#[tokio::test]
async fn random_bad_tokens_are_limited_per_peer_after_the_burst() {
    let app = app_with(strict(5), Clock::system()).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(get(&app, SOME_CLINIC, Some(&random_token()), None).await);
    }
    // The burst is answered (401: the token is not ours), then the peer's
    // bucket is empty however the token changes.
    assert!(
        statuses[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(limited >= 1, "{statuses:?}");
    // No token at all counts against the same peer.
    assert_eq!(
        get(&app, SOME_CLINIC, None, None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A caller with a valid token is limited by its subject, not by the
    // address it shares with the one sending garbage.
    assert_eq!(
        get(&app, SOME_CLINIC, Some(&app.admin), None).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_valid_subject_is_limited_independently_of_others_and_of_its_token() {
    let app = app_with(strict(3), Clock::system()).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(get(&app, SOME_CLINIC, Some(&app.staff), None).await);
    }
    assert!(
        statuses[..3].iter().all(|s| *s == StatusCode::NOT_FOUND),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // A fresh token for the same subject (say, another role) gets no fresh
    // budget.
    let reissued = app
        .keys
        .issue("alice", Role::Analyst, 600)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(reissued, app.staff);
    assert_eq!(
        get(&app, SOME_CLINIC, Some(&reissued), None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Other subjects have theirs, from the same address.
    for sub in ["bob", "carol"] {
        let token = app
            .keys
            .issue(sub, Role::Staff, 600)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            get(&app, SOME_CLINIC, Some(&token), None).await,
            StatusCode::NOT_FOUND
        );
    }
    // So do callers without a token.
    assert_eq!(
        get(&app, SOME_CLINIC, None, None).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    // Not configured: the header is the client's to forge, and ignored.
    let app = app_with(strict(2), Clock::system()).await;
    let mut statuses = Vec::new();
    for n in 0..8 {
        let forged = format!("203.0.113.{n}");
        statuses.push(get(&app, SOME_CLINIC, None, Some(&forged)).await);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // Behind a trusted proxy (the test client's address): one bucket per
    // client the proxy names.
    let proxied = app_with(
        Limits {
            trusted_proxies: TrustedProxies::new(vec![
                parse_network("127.0.0.1").unwrap_or_else(|e| panic!("{e}"))
            ]),
            ..strict(2)
        },
        Clock::system(),
    )
    .await;
    let mut first = Vec::new();
    for _ in 0..6 {
        first.push(get(&proxied, SOME_CLINIC, None, Some("203.0.113.7")).await);
    }
    assert!(first.contains(&StatusCode::TOO_MANY_REQUESTS), "{first:?}");
    // Another client behind the proxy is not held back by the first; what
    // a client writes left of the proxy's entry does not matter.
    assert_eq!(
        get(&proxied, SOME_CLINIC, None, Some("203.0.113.8")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(
            &proxied,
            SOME_CLINIC,
            None,
            Some("198.51.100.1, 203.0.113.7")
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Deposits `n` times 100 cents into `patient`'s wallet.
async fn deposits(app: &App, patient: &str, n: usize) {
    for i in 0..n {
        let answer = app
            .post(
                &format!("/v1/wallets/{patient}/deposits"),
                &app.staff,
                json!({"amount_cents": 100, "reference": format!("dep-{i}")}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    }
}

fn sequences(view: &Value) -> Vec<i64> {
    view["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transactions in {view}"))
        .iter()
        .map(|t| t["sequence"].as_i64().unwrap_or(-1))
        .collect()
}

#[tokio::test]
async fn wallet_history_comes_in_pages_with_the_whole_balance_on_each() {
    let app = app().await;
    let patient = Uuid::new_v4().to_string();
    deposits(&app, &patient, 5).await;
    let base = format!("/v1/wallets/{patient}");
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = app
            .get(&format!("{base}?after={after}&limit=2"), &app.staff)
            .await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        assert_eq!(page.body["balance_cents"], 500, "{:?}", page.body);
        assert_eq!(page.body["transactions_total"], 5, "{:?}", page.body);
        let got = sequences(&page.body);
        assert!(got.len() <= 2, "{got:?}");
        seen.extend(got);
        pages += 1;
        match page.body["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    assert_eq!(pages, 3);
    // Without parameters: the first page of the default size.
    let whole = app.get(&base, &app.staff).await;
    assert_eq!(sequences(&whole.body), [1, 2, 3, 4, 5]);
    assert_eq!(whole.body["next_after"], Value::Null);
    // Past the end: no transactions, the balance still there.
    let past = app.get(&format!("{base}?after=5"), &app.staff).await;
    assert_eq!(sequences(&past.body), Vec::<i64>::new());
    assert_eq!(past.body["balance_cents"], 500);
    // Bad pages are 400 problems and change nothing.
    for bad in ["limit=0", "limit=1001", "after=-1", "limit=x", "page=2"] {
        app.get(&format!("{base}?{bad}"), &app.staff)
            .await
            .assert_problem(400, "invalid_request");
    }
    assert_eq!(app.events().await, 5);
    // The parameters are in the contract.
    let spec = serde_json::to_value(clinicbook_api::openapi()).unwrap_or(Value::Null);
    let params: Vec<&str> = spec["paths"]["/v1/wallets/{patient_id}"]["get"]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("no parameters"))
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in ["after", "limit", "min_position"] {
        assert!(params.contains(&name), "{params:?}");
    }
}

/// `/readyz` of a router over `commands` and `read` with NATS at `nats_addr`.
async fn readyz(commands: Commands, read: ReadModels, nats_addr: Option<&str>) -> (u16, Value) {
    let webhooks = clinicbook_notify::Webhooks::new(commands.store().pool().clone(), true);
    let state = AppState {
        messages: clinicbook_notify::messages::log::Messages::new(commands.store().clone()),
        smtp: clinicbook_notify::messages::smtp::Relay::none(),
        audit: commands.store().audit(),
        commands,
        read,
        auth: std::sync::Arc::new(clinicbook_api::auth::AuthKeys::new(
            &secrecy::SecretString::from(crate::common::SECRET),
        )),
        metrics: clinicbook_api::metrics_handle(),
        nats_addr: nats_addr.map(str::to_owned),
        audit_key: std::sync::Arc::new(
            clinicbook_eventstore::checkpoint::AuditKey::from_hex(crate::common::AUDIT_SECRET)
                .unwrap_or_else(|e| panic!("{e}")),
        ),
        webhooks,
        readiness: std::sync::Arc::default(),
    };
    let router = clinicbook_api::router(state, Limits::default());
    let request = axum::http::Request::get("/readyz")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let response = router
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn readyz_says_only_ok_or_degraded_per_dependency() {
    let services = services().await;
    let db = services.database(&MIGRATOR).await;
    let read = ReadModels::new(db.pool.clone());
    read.ensure_all().await.unwrap_or_else(|e| panic!("{e}"));
    let commands = Commands::new(
        EventStore::new(db.pool.clone(), StoreConfig::default()),
        Clock::system(),
    );

    let nats = services.nats.url();
    let nats_addr = nats.trim_start_matches("nats://");
    let (status, body) = readyz(commands.clone(), read.clone(), Some(nats_addr)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["status"], &body["database"], &body["nats"]),
        (&json!("ok"), &json!("ok"), &json!("ok"))
    );
    assert_eq!(body["projection_lag_events"], 0, "{body}");

    // NATS where nothing listens: degraded, and not why.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let closed_addr = closed
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    drop(closed);
    let (status, body) = readyz(commands.clone(), read.clone(), Some(&closed_addr)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (&body["status"], &body["database"], &body["nats"]),
        (&json!("degraded"), &json!("ok"), &json!("degraded"))
    );

    // A database that does not answer: degraded, no error text, no lag.
    let gone = services.database(&MIGRATOR).await;
    gone.pool.close().await;
    let nowhere = Commands::new(
        EventStore::new(gone.pool.clone(), StoreConfig::default()),
        Clock::system(),
    );
    let (status, body) = readyz(nowhere, read, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({"status": "degraded", "database": "degraded", "nats": "not_configured",
               "projection_lag_events": null, "smtp": "not_configured"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_check_longer_than_the_api_timeout_completes() {
    let app = app().await;
    let patient = Uuid::new_v4().to_string();
    deposits(&app, &patient, 3).await;
    // Read through the wallets projection: it has applied all three.
    let wallet = app.get(&format!("/v1/wallets/{patient}"), &app.staff).await;
    assert_eq!(wallet.body["balance_cents"], 300, "{:?}", wallet.body);

    // Someone holds a live table the check compares for far longer than
    // the API's sessions may idle in a transaction; the check's
    // transaction (it pins the live checkpoint) idles meanwhile.
    let api_timeout_ms: u64 = 200;
    let hold = format!(
        "DO $$ BEGIN
             LOCK TABLE read.wallets_wallets IN ACCESS EXCLUSIVE MODE;
             PERFORM pg_sleep({});
         END $$",
        api_timeout_ms * 10 / 1000
    );
    let holder = app.db.tamper(&hold, &[]);
    let check = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while app
            .db
            .tamper(
                "SELECT 1 FROM pg_locks WHERE relation = 'read.wallets_wallets'::regclass
                   AND mode = 'AccessExclusiveLock' AND granted",
                &[],
            )
            .await
            == 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the lock was not taken"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let args = clinicbook_api::audit_cli::ReplayArgs {
            aggregate_type: None,
            id: None,
            as_of: None,
            version: None,
            all: true,
            check: true,
            projections: true,
            batch: 1000,
            concurrency: 2,
            database_url: app.db.url.clone(),
            sessions: clinicbook_api::SessionArgs {
                idle_transaction_timeout_ms: api_timeout_ms,
            },
        };
        clinicbook_api::audit_cli::replay(&args).await
    };
    let (_, checked) = tokio::join!(holder, check);
    if let Err(error) = checked {
        panic!("the check failed: {error:#}");
    }
}
