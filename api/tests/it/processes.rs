//! Two `clinicbook serve` processes on one database (DESIGN.md §3): a
//! hundred staff members booking the same slot at the same moment, half
//! through each process, get exactly one 201; and each process sees at once
//! what the other wrote, whatever its cache holds.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clinicbook_eventstore::relay;
use clinicbook_projections::checkpoint::Status;
use clinicbook_projections::{rebuild, ReadModels};
use clinicbook_testkit::services;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{app_at, App, ClinicIds, AUDIT_SECRET, SECRET};

/// How long a process may take to answer `/healthz`.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A `clinicbook serve` child process; killed (and its var dir removed)
/// when dropped, so a failing test leaks no process.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl Server {
    /// Starts `clinicbook serve` on a free port over `database_url` and
    /// waits until `/healthz` answers. A port taken between choosing and
    /// binding it makes the process exit; then another port is tried.
    /// `env` adds environment (a role, NATS).
    pub(crate) async fn start_with(database_url: &str, env: &[(&str, &str)]) -> Server {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut last_log = String::new();
        for _ in 0..3 {
            let mut server = Self::spawn(database_url, env);
            match server.healthy(&client).await {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("clinicbook serve did not start:\n{last_log}");
    }

    fn spawn(database_url: &str, env: &[(&str, &str)]) -> Server {
        let dir = std::env::temp_dir().join(format!("clinicbook-e2e-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let log = std::fs::File::create(dir.join("serve.log"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_clinicbook"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("CLINICBOOK_JWT_SECRET", SECRET)
            .env("CLINICBOOK_AUDIT_KEY", AUDIT_SECRET)
            .env("CLINICBOOK_BIND", &addr)
            .env("CLINICBOOK_RATE_LIMIT", "0")
            .env("CLINICBOOK_VAR_DIR", &dir)
            .env("RUST_LOG", "warn")
            .env_remove("NATS_URL")
            .env_remove("CLINICBOOK_ROLE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start clinicbook serve: {e}"));
        Server {
            child,
            base: format!("http://{addr}"),
            dir,
        }
    }

    /// Polls `/healthz` until it answers 200, the process exits, or the
    /// deadline passes; on failure, answers the process's log.
    async fn healthy(&mut self, client: &reqwest::Client) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if let Ok(answer) = client.get(format!("{}/healthz", self.base)).send().await {
                if answer.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer from /healthz within {START_DEADLINE:?}:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

/// A fresh database, two processes on it, the Berlin fixture clinic set up
/// through the first, and an [`App`] whose requests go to the first.
pub(crate) async fn two_processes() -> (App, Server, Server, ClinicIds) {
    let db = services()
        .await
        .database(&clinicbook_eventstore::MIGRATOR)
        .await;
    let url = db.url.clone();
    // Each runs API, relay and projectors: one relay leads, the projectors
    // share their durable consumers.
    let nats = services().await.nats.url();
    let env = [
        ("NATS_URL", nats.as_str()),
        ("CLINICBOOK_NATS_NAMESPACE", db.name.as_str()),
    ];
    let (first, second) = tokio::join!(
        Server::start_with(&url, &env),
        Server::start_with(&url, &env)
    );
    let app = app_at(first.base.clone(), db);
    let ids = app.clinic().await;
    (app, first, second, ids)
}

/// A status, problem code and body.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> (StatusCode, String, Value) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

fn booking(ids: &ClinicIds, start: &str) -> Value {
    json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic, "resource_id": ids.laser,
           "treatment_id": ids.laser_treatment, "start": start, "payment": {"method": "at_clinic"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_bookings_of_one_slot_through_two_processes_give_exactly_one_201() {
    let (app, first, second, ids) = two_processes().await;
    let before = app.events().await;
    let bases = [first.base.clone(), second.base.clone()];
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let base = bases[i % 2].clone();
            let request = app
                .client
                .post(format!("{base}/v1/reservations"))
                .bearer_auth(&app.staff)
                .json(&booking(&ids, "2030-01-08T09:00:00Z"));
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                (i % 2, send(request).await)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap_or_else(|e| panic!("{e}")));
    }

    let winners: Vec<_> = answers
        .iter()
        .filter(|(_, (status, _, _))| *status == StatusCode::CREATED)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one booking wins: {:?}",
        answers
            .iter()
            .map(|(_, (s, _, b))| (s.as_u16(), b["code"].clone()))
            .collect::<Vec<_>>()
    );
    for (_, (status, content_type, body)) in &answers {
        if *status == StatusCode::CREATED {
            continue;
        }
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        assert!(
            ["slot_unavailable", "concurrency_conflict"]
                .contains(&body["code"].as_str().unwrap_or_default()),
            "{body}"
        );
        assert!(
            content_type.starts_with("application/problem+json"),
            "{content_type}"
        );
    }
    let (winner_process, (_, _, winner)) = winners[0];
    let reservation_id = winner["reservation_id"].as_str().unwrap_or_default();
    assert_eq!(winner["start"], "2030-01-08T09:00:00Z");

    // The other process reads the winner's reservation.
    let other = &bases[1 - winner_process];
    let (status, _, view) = send(
        app.client
            .get(format!(
                "{other}/v1/reservations/{reservation_id}?min_position={}",
                winner["position"]
            ))
            .bearer_auth(&app.staff),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["status"], "booked");
    assert_eq!(view["start"], "2030-01-08T09:00:00Z");
    assert_eq!(view["resource_id"], json!(ids.laser));

    // One slot reserved on the calendar, and nothing else written by the 99.
    let calendar = clinicbook_eventstore::audit::stream_events(
        &app.db.pool,
        "Calendar",
        &format!("{}/2030-01-08", ids.laser),
    )
    .await
    .expect("calendar stream");
    let reserved: Vec<_> = calendar
        .iter()
        .filter(|event| event.event_type == "SlotReserved")
        .collect();
    assert_eq!(reserved.len(), 1, "{calendar:?}");
    assert_eq!(
        reserved[0].payload["SlotReserved"]["booking"]["reservation_id"],
        json!(reservation_id),
        "{:?}",
        reserved[0].payload
    );
    assert_eq!(
        app.events().await,
        before + 2,
        "one ReservationBooked and one SlotReserved"
    );
}

#[tokio::test]
async fn each_process_sees_at_once_what_the_other_wrote() {
    let (app, first, second, ids) = two_processes().await;
    let post = |base: &str, path: &str, body: Value| {
        app.client
            .post(format!("{base}{path}"))
            .bearer_auth(&app.staff)
            .json(&body)
    };
    // Both processes load (and cache) the calendar of the day; the second
    // already sees the first one's booking.
    let (status, _, body) = send(post(
        &first.base,
        "/v1/reservations",
        booking(&ids, "2030-01-08T12:00:00Z"),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = send(post(
        &second.base,
        "/v1/reservations",
        booking(&ids, "2030-01-08T12:00:00Z"),
    ))
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("slot_unavailable")),
        "{body}"
    );
    // Booked through the first: the second refuses the same slot.
    let (status, _, booked) = send(post(
        &first.base,
        "/v1/reservations",
        booking(&ids, "2030-01-08T09:00:00Z"),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{booked}");
    let id = booked["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (status, _, refused) = send(post(
        &second.base,
        "/v1/reservations",
        booking(&ids, "2030-01-08T09:00:00Z"),
    ))
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::CONFLICT, Some("slot_unavailable")),
        "{refused}"
    );
    // Cancelled through the second: the first books the freed slot.
    let (status, _, cancelled) = send(post(
        &second.base,
        &format!("/v1/reservations/{id}/cancel"),
        json!({"reason": "moved away"}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let (status, _, rebooked) = send(post(
        &first.base,
        "/v1/reservations",
        booking(&ids, "2030-01-08T09:00:00Z"),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rebooked}");
    // And the first sees the cancellation made through the second.
    let (status, _, view) = send(
        app.client
            .get(format!(
                "{}/v1/reservations/{id}?min_position={}",
                first.base, cancelled["position"]
            ))
            .bearer_auth(&app.staff),
    )
    .await;
    assert_eq!(
        (status, view["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promo_code_limit_holds_across_two_processes() {
    let (app, first, second, ids) = two_processes().await;
    let created = app
        .post(
            "/v1/promo-codes",
            &app.admin,
            json!({"code": "FIVE", "percent_off": 10, "valid_from": "2026-01-01T00:00:00Z",
                   "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": 5, "per_patient_limit": 1}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let before = app.events().await;
    // Forty bookings of forty different slots, all with the code.
    let mut requests = Vec::new();
    for day in 8..=12 {
        for hour in [9, 11, 13, 15] {
            for resource in [&ids.laser, &ids.laser_b] {
                let start = format!("2030-01-{day:02}T{hour:02}:00:00Z");
                let mut body = booking(&ids, &start);
                body["resource_id"] = json!(resource);
                body["promo_code"] = json!("FIVE");
                requests.push(body);
            }
        }
    }
    let bases = [first.base.clone(), second.base.clone()];
    let mut created = 0;
    for (status, body) in crate::faults::storm(&app, &bases, requests).await {
        match (status, body["code"].as_str()) {
            (StatusCode::CREATED, _) => {
                created += 1;
                assert_eq!(body["price"]["discount_cents"], 1_200, "{body}");
            }
            (StatusCode::UNPROCESSABLE_ENTITY, Some("promo_exhausted"))
            | (StatusCode::CONFLICT, Some("concurrency_conflict")) => {}
            _ => panic!("unexpected answer {status}: {body}"),
        }
    }
    assert_eq!(created, 5, "exactly max_redemptions bookings get the code");
    let promo = clinicbook_eventstore::audit::stream_events(&app.db.pool, "PromoCode", "FIVE")
        .await
        .expect("promo stream");
    assert_eq!(
        promo
            .iter()
            .filter(|e| e.event_type == "PromoRedeemed")
            .count(),
        5
    );
    assert_eq!(
        app.events().await,
        before + 5 * 3,
        "each winner wrote its reservation, slot and redemption; the losers nothing"
    );
}

/// Polls the read side's status until `done` holds for it.
pub(crate) async fn until_status(
    read: &ReadModels,
    what: &str,
    done: impl Fn(&[Status]) -> bool,
) -> Vec<Status> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = read.status().await.unwrap_or_else(|e| panic!("{e}"));
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn relay_published(status: &[Status]) -> i64 {
    status
        .iter()
        .find(|s| s.name == "relay")
        .map_or(0, |s| s.applied)
}

#[tokio::test]
async fn relay_and_projector_processes_killed_mid_batch_lose_nothing_and_apply_nothing_twice() {
    let services = services().await;
    let db = services.database(&clinicbook_eventstore::MIGRATOR).await;
    let url = db.url.clone();
    let read = ReadModels::new(db.pool.clone());
    let nats = services.nats.url();
    let namespace = db.name.clone();
    // Small batches, so that a kill lands in the middle of the work.
    let read_env = |role| {
        [
            ("CLINICBOOK_ROLE", role),
            ("NATS_URL", nats.as_str()),
            ("CLINICBOOK_NATS_NAMESPACE", namespace.as_str()),
            ("CLINICBOOK_RELAY_BATCH", "40"),
            ("CLINICBOOK_PROJECTOR_BATCH", "40"),
        ]
    };

    // An API process alone writes a backlog.
    let api = Server::start_with(&url, &[("CLINICBOOK_ROLE", "api")]).await;
    let app = app_at(api.base.clone(), db);
    let patients: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    futures::stream::iter(0..3000)
        .for_each_concurrent(8, |n| {
            let (app, patient) = (&app, patients[n % patients.len()]);
            async move {
                let answer = app
                    .post(
                        &format!("/v1/wallets/{patient}/deposits"),
                        &app.staff,
                        json!({"amount_cents": 100 + n, "reference": format!("r{n}")}),
                    )
                    .await;
                assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
            }
        })
        .await;
    let total = app.events().await;
    assert_eq!(total, 3000);

    // The relay is killed while it publishes, and another takes over.
    let mut relay = Server::start_with(&url, &read_env("relay")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay::checkpoint(read.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .published
        == 0
    {
        assert!(Instant::now() < deadline, "the relay did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = relay.child.kill();
    let _ = relay.child.wait();
    let published = relay_published(&read.status().await.unwrap_or_else(|e| panic!("{e}")));
    assert!(
        published < total,
        "the relay was not killed mid-way ({published})"
    );
    let _relay = Server::start_with(&url, &read_env("relay")).await;
    until_status(&read, "relay done", |s| relay_published(s) == total).await;

    // A projector process is killed while it applies, and another goes on.
    let mut projector = Server::start_with(&url, &read_env("projector")).await;
    until_status(&read, "projector started", |s| {
        s.iter().any(|s| s.name != "relay" && s.applied > 0)
    })
    .await;
    let _ = projector.child.kill();
    let _ = projector.child.wait();
    let _projector = Server::start_with(&url, &read_env("projector")).await;
    let status = until_status(&read, "projectors done", |s| {
        s.len() > 1 && s.iter().all(|s| s.behind == 0)
    })
    .await;
    for projection in &status {
        assert_eq!(projection.applied, total, "{projection:?}");
    }
    for projection in clinicbook_projections::projections() {
        let (_, diffs) = rebuild::check_against_live(&read, projection, "check_kill", &|_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(diffs.is_empty(), "{}: {diffs:?}", projection.name);
    }
}
