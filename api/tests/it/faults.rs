//! Faults under load, each on servers of its own (they are stopped and
//! wiped): a `clinicbook serve` process keeps booking distinct slots for
//! 16 clients while its PostgreSQL is restarted, or while its nats-server
//! loses its JetStream store. Nothing acknowledged may be lost or applied
//! twice, the errors meanwhile are 503 problem+json, and the server comes
//! back without a restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, Duration as Days, NaiveDate, Weekday};
use clinicbook_projections::{rebuild, ReadModels};
use clinicbook_testkit::Services;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};
use uuid::Uuid;

use crate::common::{app_at, App, ClinicIds};
use crate::processes::{until_status, Server};

/// Clients booking at once.
const CLIENTS: usize = 16;

/// Distinct bookable slots of the fixture clinic's two lasers: every hour
/// from 09:00 to 17:00 Berlin time (08:00-16:00 UTC in winter) on the
/// Mondays to Saturdays of early 2030.
fn slots(ids: &ClinicIds) -> Vec<(String, String)> {
    let mut slots = Vec::new();
    let mut day = NaiveDate::from_ymd_opt(2030, 1, 7).unwrap_or_default();
    while day < NaiveDate::from_ymd_opt(2030, 3, 23).unwrap_or_default() {
        if day.weekday() != Weekday::Sun {
            for laser in [&ids.laser, &ids.laser_b] {
                for hour in 8..=16 {
                    slots.push((laser.clone(), format!("{day}T{hour:02}:00:00Z")));
                }
            }
        }
        day += Days::days(1);
    }
    slots
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Seen {
    /// Reservations answered 201.
    booked: Vec<Uuid>,
    /// Other answers: status, content type and problem code.
    refused: Vec<(u16, String, String)>,
    /// Requests that got no answer (connection refused or reset).
    unanswered: usize,
}

impl Seen {
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        *counts.entry("201".to_owned()).or_default() += self.booked.len();
        *counts.entry("no answer".to_owned()).or_default() += self.unanswered;
        for (status, _, code) in &self.refused {
            *counts.entry(format!("{status} {code}")).or_default() += 1;
        }
        counts
    }
}

/// [`CLIENTS`] clients booking the next free slot of `slots`, one request
/// each at a time, until `stop` is set.
struct Load {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(app: &App, ids: &ClinicIds) -> Load {
        let slots = Arc::new(slots(ids));
        let next = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let tasks = (0..CLIENTS)
            .map(|_| {
                let (slots, next, seen, stop) =
                    (slots.clone(), next.clone(), seen.clone(), stop.clone());
                let (client, base, token) = (client.clone(), app.base.clone(), app.staff.clone());
                let (clinic, treatment) = (ids.clinic.clone(), ids.laser_treatment.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        let Some((laser, start)) = slots.get(n) else {
                            return;
                        };
                        let body = json!({"patient_id": Uuid::new_v4(), "clinic_id": clinic,
                            "resource_id": laser, "treatment_id": treatment, "start": start,
                            "payment": {"method": "at_clinic"}});
                        let request = client
                            .post(format!("{base}/v1/reservations"))
                            .bearer_auth(&token)
                            .json(&body);
                        match request.send().await {
                            Err(_) => {
                                lock(&seen).unanswered += 1;
                                sleep(Duration::from_millis(50)).await;
                            }
                            Ok(response) => {
                                let answer = crate::common::read(response).await;
                                let mut seen = lock(&seen);
                                if answer.status == StatusCode::CREATED {
                                    let id =
                                        answer.body["reservation_id"].as_str().unwrap_or_default();
                                    seen.booked
                                        .push(id.parse().unwrap_or_else(|e| panic!("{id:?}: {e}")));
                                } else {
                                    let code = answer.code().to_owned();
                                    seen.refused.push((
                                        answer.status.as_u16(),
                                        answer.content_type,
                                        code,
                                    ));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load { seen, stop, tasks }
    }

    fn booked(&self) -> usize {
        lock(&self.seen).booked.len()
    }

    /// Waits until `more` further bookings were acknowledged (bounded).
    async fn until_booked(&self, more: usize, what: &str) {
        let target = self.booked() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.booked() < target {
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}",
                lock(&self.seen).counts()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap_or_else(|e| panic!("{e}"));
        }
        Arc::try_unwrap(self.seen)
            .unwrap_or_else(|_| panic!("the clients still run"))
            .into_inner()
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every acknowledged booking is stored once: its reservation stream
/// holds one `ReservationBooked`.
async fn assert_all_stored(app: &App, booked: &[Uuid]) {
    let unique: HashSet<&Uuid> = booked.iter().collect();
    assert_eq!(unique.len(), booked.len(), "one reservation answered twice");
    let pool = &app.db.pool;
    let lost: Vec<(Uuid, usize)> = futures::stream::iter(booked)
        .map(|id| async move {
            let events =
                clinicbook_eventstore::audit::stream_events(pool, "Reservation", &id.to_string())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            let booked = events
                .iter()
                .filter(|event| event.event_type == "ReservationBooked")
                .count();
            (*id, booked)
        })
        .buffer_unordered(8)
        .filter(|(_, booked)| futures::future::ready(*booked != 1))
        .collect()
        .await;
    assert!(
        lost.is_empty(),
        "acknowledged but not stored once: {lost:?}"
    );
}

/// A NATS fault: no client noticed (writes never wait for NATS), every
/// booking is stored once, and the read models equal a rebuild.
async fn assert_untouched_and_kept(app: &App, seen: &Seen) {
    assert!(
        seen.refused.is_empty() && seen.unanswered == 0,
        "{:?}",
        seen.counts()
    );
    assert_all_stored(app, &seen.booked).await;
    assert_read_models_equal_a_rebuild(app).await;
}

/// The read side caught up with every stored event, and each projection
/// equals a rebuild from the event store.
async fn assert_read_models_equal_a_rebuild(app: &App) {
    let read = ReadModels::new(app.db.pool.clone());
    let total = app.events().await;
    until_status(&read, "projectors caught up", |status| {
        status.len() > 1 && status.iter().all(|s| s.behind == 0 && s.applied == total)
    })
    .await;
    for projection in clinicbook_projections::projections() {
        let (_, diffs) = rebuild::check_against_live(&read, projection, "check_fault", &|_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(diffs.is_empty(), "{}: {diffs:?}", projection.name);
    }
}

/// A `serve` process (API, relay and projectors) over a fresh database of
/// `services`, and the fixture clinic.
async fn serve_on(services: &Services) -> (App, Server, ClinicIds) {
    let db = services.database(&clinicbook_eventstore::MIGRATOR).await;
    let nats = services.nats.url();
    let server = Server::start_with(&db.url.clone(), &[("NATS_URL", nats.as_str())]).await;
    let app = app_at(server.base.clone(), db);
    let ids = app.clinic().await;
    (app, server, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_during_a_booking_run_loses_no_acknowledged_booking() {
    let services = Services::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (app, server, ids) = serve_on(&services).await;
    let load = Load::start(&app, &ids);
    load.until_booked(100, "bookings before the restart").await;

    services
        .postgres
        .stop()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sleep(Duration::from_secs(2)).await;
    services
        .postgres
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The same process serves again: no restart.
    load.until_booked(100, "bookings after the restart").await;
    let seen = load.stop().await;
    eprintln!("postgres restart, clients saw: {:?}", seen.counts());

    for (status, content_type, code) in &seen.refused {
        assert_eq!(*status, 503, "{code}");
        assert!(
            content_type.starts_with("application/problem+json"),
            "{status} {content_type}"
        );
    }
    assert!(
        !seen.refused.is_empty() || seen.unanswered > 0,
        "the restart went unnoticed: {:?}",
        seen.counts()
    );
    assert_all_stored(&app, &seen.booked).await;
    assert_read_models_equal_a_rebuild(&app).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_wiped_under_load_is_rebuilt_and_the_read_models_equal_a_rebuild() {
    let services = Services::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (app, server, ids) = serve_on(&services).await;
    let load = Load::start(&app, &ids);
    load.until_booked(100, "bookings before the wipe").await;

    services.nats.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let store = services.nats.store_dir().to_path_buf();
    std::fs::remove_dir_all(&store).unwrap_or_else(|e| panic!("{}: {e}", store.display()));
    std::fs::create_dir_all(&store).unwrap_or_else(|e| panic!("{}: {e}", store.display()));
    services
        .nats
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    load.until_booked(100, "bookings after the wipe").await;
    let seen = load.stop().await;
    eprintln!("jetstream wipe, clients saw: {:?}", seen.counts());

    // Writes never wait for NATS: every request was booked.
    assert_untouched_and_kept(&app, &seen).await;
    // The relay made the stream again and published into it what came after.
    let js = clinicbook_projections::service::connect(&services.nats.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = js
        .get_stream(clinicbook_eventstore::relay::STREAM)
        .await
        .unwrap_or_else(|e| panic!("the relay did not recreate the stream: {e}"));
    let info = stream.info().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(info.state.messages >= 100, "{:?}", info.state);
    drop(server);
}

/// One node of a nats-server cluster on loopback; killed (as a crash
/// would) and its store removed when dropped.
struct Node {
    child: std::process::Child,
    name: String,
    url: String,
    dir: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Starts `n` nats-servers with JetStream as one cluster and waits until it
/// can keep a stream with `n` replicas.
async fn nats_cluster(n: usize) -> Vec<Node> {
    let binary = clinicbook_localsvc::find_nats_server().unwrap_or_else(|e| panic!("{e}"));
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, cluster)| format!("nats://127.0.0.1:{cluster}"))
        .collect();
    let nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, (client, cluster))| {
            let dir = std::env::temp_dir()
                .join(format!("clinicbook-nats-{i}-{}", Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let log = std::fs::File::create(dir.join("nats.log"))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let name = format!("node-{i}");
            let child = std::process::Command::new(&binary)
                .args(["-a", "127.0.0.1", "-p", &client.to_string()])
                .args(["-n", &name, "-js", "-sd"])
                .arg(dir.join("store"))
                .args(["--cluster_name", "clinicbook-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
                .args(["--routes", &routes.join(",")])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
            Node {
                child,
                name,
                url: format!("nats://127.0.0.1:{client}"),
                dir,
            }
        })
        .collect();
    // Ready once a replicated stream can be made (a meta leader is elected
    // and every node has joined).
    let js = clinicbook_projections::service::connect(&urls(&nodes))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let probe = clinicbook_eventstore::relay::Topology::namespaced("probe").with_replicas(n);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match probe.ensure_stream(&js).await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "the cluster did not form: {e}");
                sleep(Duration::from_millis(200)).await;
            }
        }
    }
    js.delete_stream(&probe.stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    nodes
}

fn urls(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|node| node.url.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_node_of_three_stopped_under_load_loses_nothing() {
    let services = Services::start().await.unwrap_or_else(|e| panic!("{e}"));
    let mut nodes = nats_cluster(3).await;
    let db = services.database(&clinicbook_eventstore::MIGRATOR).await;
    let nats = urls(&nodes);
    let server = Server::start_with(
        &db.url.clone(),
        &[
            ("NATS_URL", nats.as_str()),
            ("CLINICBOOK_NATS_REPLICAS", "3"),
        ],
    )
    .await;
    let app = app_at(server.base.clone(), db);
    let ids = app.clinic().await;
    let load = Load::start(&app, &ids);
    load.until_booked(100, "bookings with three nodes").await;

    // The node that leads the stream goes.
    let js = clinicbook_projections::service::connect(&urls(&nodes))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = js
        .get_stream(clinicbook_eventstore::relay::STREAM)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A loaded machine may be between elections when asked: wait for one.
    let mut asked = 0;
    let leader = loop {
        let info = stream.info().await.unwrap_or_else(|e| panic!("{e}"));
        match info.cluster.as_ref().and_then(|c| c.leader.clone()) {
            Some(leader) => break leader,
            None if asked < 60 => asked += 1,
            None => panic!("no stream leader after 30 s: {:?}", info.cluster),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let index = nodes
        .iter()
        .position(|node| node.name == leader)
        .unwrap_or_else(|| panic!("leader {leader} is not a node"));
    drop(nodes.remove(index));
    load.until_booked(100, "bookings with two nodes").await;
    let seen = load.stop().await;
    eprintln!("a nats node stopped, clients saw: {:?}", seen.counts());

    assert_untouched_and_kept(&app, &seen).await;
    // Every event is in the stream, which is kept on three nodes.
    let info = stream.info().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(
        i64::try_from(info.state.messages).unwrap_or(i64::MAX),
        app.events().await,
        "{:?}",
        info.state
    );
    drop(server);
}

/// Sends every request at once (after a barrier), alternating between the
/// two processes, and answers each status and body.
pub(crate) async fn storm(
    app: &App,
    bases: &[String; 2],
    bodies: Vec<Value>,
) -> Vec<(StatusCode, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let tasks: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let request = app
                .client
                .post(format!("{}/v1/reservations", bases[i % 2]))
                .bearer_auth(&app.staff)
                .json(&body);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let (status, _, body) = crate::processes::send(request).await;
                (status, body)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storms_across_two_processes_book_each_hot_slot_once_and_keep_wallet_limits() {
    let (app, first, second, ids) = crate::processes::two_processes().await;
    let bases = [first.base.clone(), second.base.clone()];

    // 1,000 requests over 20 hot slots: one booking each, no 5xx.
    let hot: Vec<String> = (0..20)
        .map(|n| format!("2030-01-{:02}T{:02}:00:00Z", 8 + n / 5, 8 + 2 * (n % 5)))
        .collect();
    let bodies = (0..1000)
        .map(|n| {
            json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic, "resource_id": ids.laser,
                   "treatment_id": ids.laser_treatment, "start": hot[n % hot.len()],
                   "payment": {"method": "at_clinic"}})
        })
        .collect();
    let answers = storm(&app, &bases, bodies).await;
    let mut won: BTreeMap<String, usize> = BTreeMap::new();
    for (status, body) in &answers {
        match (status.as_u16(), body["code"].as_str()) {
            (201, _) => {
                let start = body["start"].as_str().unwrap_or_default();
                *won.entry(start.to_owned()).or_default() += 1;
            }
            (409, Some("slot_unavailable" | "concurrency_conflict")) => {}
            _ => panic!("unexpected answer {status}: {body}"),
        }
    }
    assert_eq!(won.len(), 20, "every hot slot booked: {won:?}");
    assert!(
        won.values().all(|n| *n == 1),
        "a slot booked twice: {won:?}"
    );

    // A wallet that covers three bookings, and forty bookings paid from it
    // at once, each of another slot: exactly three are paid.
    let patient = Uuid::new_v4();
    let deposit = app
        .post(
            &format!("/v1/wallets/{patient}/deposits"),
            &app.staff,
            json!({"amount_cents": 36_000, "reference": "storm"}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);
    let bodies = (0..40)
        .map(|n| {
            json!({"patient_id": patient, "clinic_id": ids.clinic, "resource_id": ids.laser_b,
                   "treatment_id": ids.laser_treatment,
                   "start": format!("2030-02-{:02}T{:02}:00:00Z", 4 + n / 8, 8 + n % 8),
                   "payment": {"method": "wallet"}})
        })
        .collect();
    let answers = storm(&app, &bases, bodies).await;
    let mut paid = 0;
    for (status, body) in &answers {
        match (status.as_u16(), body["code"].as_str()) {
            (201, _) => paid += 1,
            (422, Some("insufficient_funds")) | (409, Some("concurrency_conflict")) => {}
            _ => panic!("unexpected answer {status}: {body}"),
        }
    }
    assert_eq!(paid, 3, "the wallet pays exactly what it holds");
    app.read_own_writes().await;
    let wallet = app.get(&format!("/v1/wallets/{patient}"), &app.staff).await;
    assert_eq!(wallet.status, StatusCode::OK, "{:?}", wallet.body);
    assert_eq!(wallet.body["balance_cents"], 0, "{:?}", wallet.body);
}
