//! A running server for tests, with tokens for every role and helpers to
//! send requests and read problem bodies.

#![allow(dead_code)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clinicbook_api::auth::{AuthKeys, Role};
use clinicbook_api::background::ServeRole;
use clinicbook_api::{AppState, Limits};
use clinicbook_commands::{Clock, Commands};
use clinicbook_eventstore::checkpoint::AuditKey;
use clinicbook_eventstore::relay::Topology;
use clinicbook_eventstore::{EventStore, StoreConfig, MIGRATOR};
use clinicbook_projections::service::Background;
use clinicbook_projections::service::Batches;
use clinicbook_projections::ReadModels;
use clinicbook_testkit::{services, TestDatabase};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};

/// The secret the test servers sign with.
pub const SECRET: &str = "test-secret-test-secret-test-secret";

/// The audit key the test servers sign checkpoints with.
pub const AUDIT_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// A server under test.
pub struct App {
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    pub staff: String,
    pub analyst: String,
    pub auditor: String,
    pub keys: Arc<AuthKeys>,
    /// The audit signing key's secret (hex), for the CLI's
    /// `CLINICBOOK_AUDIT_KEY`.
    pub audit_secret: String,
    pub db: TestDatabase,
    /// The read models, when the server runs in this process.
    pub read: Option<ReadModels>,
    /// Relay and projectors of an in-process server; they stop with the
    /// test's runtime.
    pub background: Option<Background>,
    /// The newest `position` a command answered: reads of read models ask
    /// for it as `min_position`, as a client reading its own writes does.
    pub last_position: Arc<AtomicI64>,
}

/// Whether `path` is a read route answered from a read model.
fn reads_a_read_model(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    [
        "/v1/reservations/",
        "/v1/holds/",
        "/v1/wallets/",
        "/v1/packages/",
        "/v1/patients/",
        "/v1/reports/",
        "/v1/clinics/",
        "/v1/programs/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix) && path.matches('/').count() == 3)
        || (path.starts_with("/v1/clinics/")
            && ["/schedule", "/availability", "/dashboard"]
                .iter()
                .any(|suffix| path.ends_with(suffix)))
}

/// A server on a free port over a fresh database, without rate limit.
pub async fn app() -> App {
    app_with(Limits::default(), Clock::system()).await
}

/// A server with the given limits and clock.
pub async fn app_with(limits: Limits, clock: Clock) -> App {
    let services = services().await;
    let db = services.database(&MIGRATOR).await;
    let keys = Arc::new(AuthKeys::new(&SecretString::from(SECRET)));
    let commands = Commands::new(
        EventStore::new(db.pool.clone(), StoreConfig::default()),
        clock,
    );
    let read = ReadModels::new(db.pool.clone());
    read.ensure_all().await.unwrap_or_else(|e| panic!("{e}"));
    // The whole read side in-process, with NATS names of this database's own.
    let background = clinicbook_api::background::start(
        ServeRole::All,
        &commands,
        &read,
        &services.nats.url(),
        &Topology::namespaced(&db.name),
        Batches::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("read side: {e}"));
    let webhooks = clinicbook_notify::Webhooks::new(db.pool.clone(), true);
    let state = AppState {
        messages: clinicbook_notify::messages::log::Messages::new(commands.store().clone()),
        smtp: clinicbook_notify::messages::smtp::Relay::none(),
        audit: commands.store().audit(),
        commands,
        read: read.clone(),
        auth: keys.clone(),
        metrics: clinicbook_api::metrics_handle(),
        nats_addr: None,
        audit_key: Arc::new(AuditKey::from_hex(AUDIT_SECRET).unwrap_or_else(|e| panic!("{e}"))),
        webhooks,
        readiness: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let router = clinicbook_api::router(state, limits);
    tokio::spawn(clinicbook_api::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let token = |role, sub: &str| {
        keys.issue(sub, role, 3600)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    App {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
        admin: token(Role::Admin, "root"),
        staff: token(Role::Staff, "alice"),
        analyst: token(Role::Analyst, "ana"),
        auditor: token(Role::Auditor, "audrey"),
        keys,
        audit_secret: AUDIT_SECRET.to_owned(),
        db,
        read: Some(read),
        background: Some(background),
        last_position: Arc::default(),
    }
}

/// An [`App`] for a server that runs elsewhere (another process) at `base`
/// over `db`, with tokens signed with [`SECRET`].
pub fn app_at(base: String, db: TestDatabase) -> App {
    let keys = Arc::new(AuthKeys::new(&SecretString::from(SECRET)));
    let token = |role, sub: &str| {
        keys.issue(sub, role, 3600)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    App {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
        admin: token(Role::Admin, "root"),
        staff: token(Role::Staff, "alice"),
        analyst: token(Role::Analyst, "ana"),
        auditor: token(Role::Auditor, "audrey"),
        keys: keys.clone(),
        audit_secret: AUDIT_SECRET.to_owned(),
        db,
        read: None,
        background: None,
        last_position: Arc::default(),
    }
}

/// A status and a parsed JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
}

impl Answer {
    /// The problem `code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// Asserts an error answer with this status and code, as problem+json.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(self.code(), code, "{:?}", self.body);
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "{}",
            self.content_type
        );
        assert_eq!(self.body["status"], json!(status));
    }
}

impl App {
    /// Sends a request with an optional token and JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let last = self.last_position.load(Ordering::SeqCst);
        let path = if method == Method::GET
            && last > 0
            && reads_a_read_model(path)
            && !path.contains("min_position=")
        {
            let joint = if path.contains('?') { '&' } else { '?' };
            format!("{path}{joint}min_position={last}")
        } else {
            path.to_owned()
        };
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = read(
            request
                .send()
                .await
                .unwrap_or_else(|e| panic!("request failed: {e}")),
        )
        .await;
        if let Some(position) = answer.body["position"].as_i64() {
            self.last_position.fetch_max(position, Ordering::SeqCst);
        }
        answer
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::PUT, path, Some(token), Some(body)).await
    }

    /// GET.
    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), None).await
    }

    /// Sends raw bytes as the body with the given content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        read(
            request
                .send()
                .await
                .unwrap_or_else(|e| panic!("request failed: {e}")),
        )
        .await
    }

    /// Makes the next reads of read models wait for every event stored so
    /// far: for writes made by other clients (concurrent raw requests, the
    /// demo loader) that this `App` did not see answered.
    pub async fn read_own_writes(&self) {
        let (_, head) = clinicbook_eventstore::audit::totals(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.last_position.fetch_max(head, Ordering::SeqCst);
    }

    /// Number of stored events.
    pub async fn events(&self) -> i64 {
        clinicbook_eventstore::audit::totals(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    }

    /// Registers a Berlin clinic open Monday to Saturday 09:00-18:00, with
    /// two lasers, a room and a practitioner and two treatments.
    pub async fn clinic(&self) -> ClinicIds {
        let created = self
            .post(
                "/v1/clinics",
                &self.admin,
                json!({"name": "Berlin Mitte", "timezone": "Europe/Berlin", "currency": "EUR",
                       "cancellation_notice_hours": 24, "late_cancel_fee_percent": 50}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let clinic = created.body["clinic_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let day = json!([["09:00", "18:00"]]);
        let hours = self
            .put(
                &format!("/v1/clinics/{clinic}/opening-hours"),
                &self.admin,
                json!({"mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": day}),
            )
            .await;
        assert_eq!(hours.status, StatusCode::OK, "{:?}", hours.body);
        let mut ids = ClinicIds {
            clinic,
            ..ClinicIds::default()
        };
        for (name, kind) in [
            ("Laser A", "device"),
            ("Laser B", "device"),
            ("Room 1", "room"),
            ("Dr. Weber", "practitioner"),
        ] {
            let r = self
                .post(
                    &format!("/v1/clinics/{}/resources", ids.clinic),
                    &self.admin,
                    json!({"name": name, "kind": kind}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            let id = r.body["resource_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match name {
                "Laser A" => ids.laser = id,
                "Laser B" => ids.laser_b = id,
                "Room 1" => ids.room = id,
                _ => ids.doctor = id,
            }
        }
        for (name, minutes, buffer, price, kind) in [
            ("Laser hair removal", 45, 15, 12_000, "device"),
            ("Consultation", 30, 0, 5_000, "practitioner"),
        ] {
            let t = self
                .post(
                    &format!("/v1/clinics/{}/treatments", ids.clinic),
                    &self.admin,
                    json!({"name": name, "duration_minutes": minutes, "buffer_minutes": buffer, "price_cents": price, "resource_kind": kind}),
                )
                .await;
            assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
            let id = t.body["treatment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if kind == "device" {
                ids.laser_treatment = id;
            } else {
                ids.consultation = id;
            }
        }
        ids
    }
}

/// Ids of the clinic made by [`App::clinic`].
#[derive(Debug, Clone, Default)]
pub struct ClinicIds {
    pub clinic: String,
    pub laser: String,
    pub laser_b: String,
    pub room: String,
    pub doctor: String,
    pub laser_treatment: String,
    pub consultation: String,
}

pub async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = response.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
    }
}
