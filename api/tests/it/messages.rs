//! Patient messages end to end, against real servers: `clinicbook serve`
//! processes over the harness's PostgreSQL and nats-server, sending to a
//! real SMTP server (Python's aiosmtpd, from the harness) and a real HTTP
//! receiver for `message.sms` and the other webhooks. Every process shares
//! one `CLINICBOOK_MASTER_KEY`, as every process of one deployment must
//! (a restarted process opens the addresses the first one sealed).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, Timelike, Utc};
use clinicbook_domain::due::DueKind;
use clinicbook_testkit::services;
use clinicbook_testkit::smtp::{Received, SmtpServer};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{app_at, App, ClinicIds};
use crate::processes::Server;

/// The one master key of every process in these tests.
const MASTER_KEY: &str = "6d61737465722d6b65792d6f662d746865206d657373616765732d7465737473";

/// The environment of a `serve` process of these tests.
fn serve_env(
    db_name: &str,
    nats: &str,
    smtp: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("NATS_URL", nats),
        ("CLINICBOOK_NATS_NAMESPACE", db_name),
        ("CLINICBOOK_SMTP_URL", smtp),
        ("CLINICBOOK_SMTP_FROM", "termine@clinicbook.example"),
        ("CLINICBOOK_MASTER_KEY", MASTER_KEY),
        ("CLINICBOOK_WEBHOOK_ALLOW_LOOPBACK", "1"),
        ("CLINICBOOK_MESSAGE_RETRY_MS", "100"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// A fresh database and one `serve` over it sending to `smtp`.
async fn serve(smtp: &str, extra: &[(&str, &str)]) -> (App, Server, Vec<(String, String)>) {
    let db = services()
        .await
        .database(&clinicbook_eventstore::MIGRATOR)
        .await;
    let nats = services().await.nats.url();
    let env = serve_env(&db.name, &nats, smtp, extra);
    let server = start_serve(&db.url, &env).await;
    let app = app_at(server.base.clone(), db);
    (app, server, env)
}

async fn start_serve(url: &str, env: &[(String, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_with(url, &env).await
}

/// Registers a patient profile; answers its id.
async fn patient(
    app: &App,
    name: &str,
    email: &str,
    phone: Option<&str>,
    language: &str,
    consent: (bool, bool),
) -> String {
    let created = app
        .post(
            "/v1/patients",
            &app.staff,
            json!({"name": name, "email": email, "phone": phone, "language": language,
                   "consent": {"email": consent.0, "sms": consent.1}}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["patient_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Books the laser treatment (or the consultation on the practitioner)
/// for `patient` at `start`; answers the reservation id.
async fn book(
    app: &App,
    ids: &ClinicIds,
    patient: &str,
    resource: &str,
    treatment: &str,
    start: &str,
) -> String {
    let booked = app
        .post(
            "/v1/reservations",
            &app.staff,
            json!({"patient_id": patient, "clinic_id": ids.clinic, "resource_id": resource,
                   "treatment_id": treatment, "start": start, "payment": {"method": "at_clinic"}}),
        )
        .await;
    assert_eq!(booked.status, 201, "{:?}", booked.body);
    booked.body["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The reservation's message log, after everything this test wrote so far.
async fn messages(app: &App, reservation: &str) -> Vec<Value> {
    let last = app.last_position.load(Ordering::SeqCst);
    let answer = app
        .get(
            &format!("/v1/reservations/{reservation}/messages?min_position={last}"),
            &app.staff,
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls the log until `done` holds for it (or 60 s pass); answers it.
async fn messages_until(
    app: &App,
    reservation: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = messages(app, reservation).await;
        if done(&log) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn to(received: &Received) -> &str {
    received.rcpt_tos.first().map_or("", String::as_str)
}

fn text(received: &Received) -> String {
    received
        .text
        .clone()
        .unwrap_or_default()
        .replace("\r\n", "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmations_go_by_consent_in_the_patients_language_at_the_clinics_local_time() {
    let smtp = SmtpServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (app, server, _) = serve(&smtp.url(), &[]).await;
    let ids = app.clinic().await;
    let ada = patient(
        &app,
        "Ada Lovelace",
        "ada@example.com",
        None,
        "en",
        (true, false),
    )
    .await;
    let jurgen = patient(
        &app,
        "Jürgen Müller",
        "juergen@example.de",
        None,
        "de",
        (true, false),
    )
    .await;
    let silent = patient(
        &app,
        "No Consent",
        "silent@example.com",
        Some("+4915112345678"),
        "en",
        (false, false),
    )
    .await;
    let walk_in = Uuid::new_v4().to_string();
    // Tuesday 8 January 2030, 09:00 UTC is 10:00 in Berlin (CET).
    let en = book(
        &app,
        &ids,
        &ada,
        &ids.laser,
        &ids.laser_treatment,
        "2030-01-08T09:00:00Z",
    )
    .await;
    let de = book(
        &app,
        &ids,
        &jurgen,
        &ids.laser_b,
        &ids.laser_treatment,
        "2030-01-08T09:00:00Z",
    )
    .await;
    let none = book(
        &app,
        &ids,
        &silent,
        &ids.laser,
        &ids.laser_treatment,
        "2030-01-08T11:00:00Z",
    )
    .await;
    let walk = book(
        &app,
        &ids,
        &walk_in,
        &ids.laser_b,
        &ids.laser_treatment,
        "2030-01-08T11:00:00Z",
    )
    .await;

    let sent = |log: &[Value]| log.iter().all(|m| m["status"] == "sent") && !log.is_empty();
    let en_log = messages_until(&app, &en, sent).await;
    let de_log = messages_until(&app, &de, sent).await;
    assert_eq!(
        en_log,
        vec![
            json!({"kind": "confirmation", "channel": "email", "to": "ada@example.com",
                    "language": "en", "sent_at": en_log[0]["sent_at"], "status": "sent",
                    "attempts": 1})
        ]
    );
    assert_eq!(de_log[0]["to"], "juergen@example.de");
    assert_eq!(de_log[0]["language"], "de");
    assert!(en_log[0]["sent_at"].as_str().is_some(), "{en_log:?}");
    // No consent, no profile: no message (the log is decided, and empty).
    assert_eq!(messages(&app, &none).await, Vec::<Value>::new());
    assert_eq!(messages(&app, &walk).await, Vec::<Value>::new());

    let received = smtp.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 2, "{received:#?}");
    let by = |addr: &str| {
        received
            .iter()
            .find(|r| to(r) == addr)
            .unwrap_or_else(|| panic!("no message to {addr}: {received:#?}"))
    };
    let english = by("ada@example.com");
    assert_eq!(
        english.subject,
        "Your appointment at Berlin Mitte is booked"
    );
    assert_eq!(english.content_language, "en");
    assert_eq!(english.to, "Ada Lovelace <ada@example.com>");
    assert_eq!(english.from, "Berlin Mitte <termine@clinicbook.example>");
    assert_eq!(english.mail_from, "termine@clinicbook.example");
    let body = text(english);
    assert!(body.contains("Dear Ada Lovelace,"), "{body}");
    assert!(
        body.contains("Laser hair removal at Berlin Mitte is booked for Tuesday, 8 January 2030, 10:00 (Europe/Berlin)"),
        "{body}"
    );
    let html = english.html.clone().unwrap_or_default();
    assert!(
        html.contains("<html lang=\"en\">") && html.contains("Tuesday, 8 January 2030, 10:00"),
        "{html}"
    );

    let german = by("juergen@example.de");
    assert_eq!(german.subject, "Ihr Termin bei Berlin Mitte ist gebucht");
    assert_eq!(german.content_language, "de");
    assert_eq!(german.to, "Jürgen Müller <juergen@example.de>");
    let body = text(german);
    assert!(body.contains("Guten Tag Jürgen Müller,"), "{body}");
    assert!(
        body.contains("ist für Dienstag, 8. Januar 2030, 10:00 Uhr (Europe/Berlin) gebucht"),
        "{body}"
    );
    assert!(body.contains("Mit freundlichen Grüßen"), "{body}");
    // Umlauts travel 7-bit clean: quoted-printable (or base64) parts and
    // an RFC 2047 encoded display name, never raw 8-bit bytes.
    assert!(
        german
            .transfer_encodings
            .iter()
            .all(|e| e == "quoted-printable" || e == "base64" || e == "7bit"),
        "{:?}",
        german.transfer_encodings
    );
    assert!(german.raw.is_ascii(), "{}", german.raw);
    assert!(german.raw.contains("=?utf-8?"), "{}", german.raw);
    println!(
        "---- received email (en) ----\n{}\n---- end ----",
        english.raw
    );
    println!(
        "---- received email (de) ----\n{}\n---- end ----",
        german.raw
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_message_after_erasure_and_the_log_shows_erased() {
    let smtp = SmtpServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (app, server, _) = serve(&smtp.url(), &[]).await;
    let hooks = Hooks::default();
    let url = receiver(hooks.clone()).await;
    let subscribed = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": url, "events": ["message.sms"]}),
        )
        .await;
    assert_eq!(subscribed.status, 201, "{:?}", subscribed.body);
    let ids = app.clinic().await;
    let grace = patient(
        &app,
        "Grace Hopper",
        "grace@example.com",
        Some("+4915199999999"),
        "en",
        (true, true),
    )
    .await;
    let first = book(
        &app,
        &ids,
        &grace,
        &ids.laser,
        &ids.laser_treatment,
        "2030-01-08T09:00:00Z",
    )
    .await;
    let sent = messages_until(&app, &first, |log| {
        log.len() == 2 && log.iter().all(|m| m["status"] == "sent")
    })
    .await;
    assert_eq!(sent[0]["to"], "grace@example.com", "{sent:?}");
    assert_eq!(sent[1]["to"], "+4915199999999", "{sent:?}");
    assert_eq!(smtp.wait_for(1, Duration::from_secs(30)).await.len(), 1);
    let sms = hooks.wait_for("message.sms", 1).await;
    assert_eq!(sms[0].2["data"]["to"], "+4915199999999", "{sms:?}");

    let erased = app
        .post(
            &format!("/v1/patients/{grace}/erase"),
            &app.admin,
            json!({"reason": "asked"}),
        )
        .await;
    assert_eq!(erased.status, 200, "{:?}", erased.body);
    // After erasure: a cancellation and a new booking tell her nothing.
    let cancelled = app
        .post(
            &format!("/v1/reservations/{first}/cancel"),
            &app.staff,
            json!({"reason": "patient called"}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    let second = book(
        &app,
        &ids,
        &grace,
        &ids.laser,
        &ids.laser_treatment,
        "2030-01-09T09:00:00Z",
    )
    .await;
    let log = messages(&app, &first).await;
    assert_eq!(
        log,
        vec![
            json!({"kind": "confirmation", "channel": "email", "to": "[erased]",
                   "language": "en", "sent_at": sent[0]["sent_at"], "status": "sent",
                   "attempts": 1}),
            json!({"kind": "confirmation", "channel": "sms", "to": "[erased]",
                   "language": "en", "sent_at": sent[1]["sent_at"], "status": "sent",
                   "attempts": 1})
        ]
    );
    assert_eq!(messages(&app, &second).await, Vec::<Value>::new());
    assert_eq!(smtp.received().len(), 1, "{:#?}", smtp.received());
    assert_eq!(hooks.of_type("message.sms").len(), 1);
    // Nothing of her is left in plaintext anywhere in the database: not in
    // the message log, not in the SMS texts queued for the gateway.
    let dump = app.db.pg_dump().await;
    for secret in ["Grace Hopper", "grace@example.com", "+4915199999999"] {
        assert!(!dump.contains(secret), "{secret} is stored in plaintext");
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_failures_are_retried_then_marked_failed() {
    // A relay that refuses the first two messages (451): retried, sent once.
    let smtp = SmtpServer::start_failing_first(2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (app, server, _) = serve(&smtp.url(), &[("CLINICBOOK_MESSAGE_MAX_ATTEMPTS", "5")]).await;
    let ids = app.clinic().await;
    let p = patient(
        &app,
        "Ada Lovelace",
        "ada@example.com",
        None,
        "en",
        (true, false),
    )
    .await;
    let r = book(
        &app,
        &ids,
        &p,
        &ids.laser,
        &ids.laser_treatment,
        "2030-01-08T09:00:00Z",
    )
    .await;
    let log = messages_until(&app, &r, |log| {
        log.first().is_some_and(|m| m["status"] != "queued")
    })
    .await;
    assert_eq!(log[0]["status"], "sent", "{log:?}");
    assert_eq!(smtp.received().len(), 1);
    let ready = app.get("/readyz", &app.staff).await;
    assert_eq!(ready.body["smtp"], "ok", "{:?}", ready.body);
    drop(server);

    // No relay listening: three attempts, then failed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let down = format!("smtp://127.0.0.1:{port}");
    let (app, server, _) = serve(&down, &[("CLINICBOOK_MESSAGE_MAX_ATTEMPTS", "3")]).await;
    let ids = app.clinic().await;
    let p = patient(
        &app,
        "Ada Lovelace",
        "ada@example.com",
        None,
        "en",
        (true, false),
    )
    .await;
    let r = book(
        &app,
        &ids,
        &p,
        &ids.laser,
        &ids.laser_treatment,
        "2030-01-08T09:00:00Z",
    )
    .await;
    let log = messages_until(&app, &r, |log| {
        log.first().is_some_and(|m| m["status"] == "failed")
    })
    .await;
    assert_eq!(log[0]["status"], "failed", "{log:?}");
    assert_eq!(log[0]["sent_at"], Value::Null);
    assert_eq!(log[0]["attempts"], 3, "{log:?}");
    let ready = app.get("/readyz", &app.staff).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    assert_eq!(ready.body["smtp"], "degraded", "{:?}", ready.body);
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        text.contains("clinicbook_messages_total{outcome=\"failed\",channel=\"email\"} 1"),
        "{text}"
    );
    assert!(text.contains("clinicbook_messages_queued_total"), "{text}");
    drop(server);
}

/// One request the receiver got: its event id and signature headers, its
/// body parsed and as sent.
type Delivery = (String, String, Value, String);

/// What the webhook receiver saw: each request's headers of interest and body.
#[derive(Clone, Default)]
struct Hooks {
    seen: Arc<Mutex<Vec<Delivery>>>,
}

async fn hook(State(hooks): State<Hooks>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
    hooks
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((
            header("clinicbook-event-id"),
            header("clinicbook-signature"),
            parsed,
            body,
        ));
    StatusCode::NO_CONTENT
}

async fn receiver(hooks: Hooks) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let router = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(hooks);
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/hook")
}

impl Hooks {
    fn of_type(&self, ty: &str) -> Vec<Delivery> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, _, body, _)| body["type"] == ty)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, ty: &str, n: usize) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let seen = self.of_type(ty);
            if seen.len() >= n || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The next whole minute at least `ahead` from now.
fn minute_after(ahead: Duration) -> DateTime<Utc> {
    let at = Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default();
    let at = at.with_nanosecond(0).unwrap_or(at);
    at.with_second(0).unwrap_or(at) + chrono::Duration::minutes(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reminders_are_sent_once_across_a_restart_rearmed_by_a_reschedule_and_disarmed_by_a_cancel()
{
    let smtp = SmtpServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (app, server, env) = serve(&smtp.url(), &[]).await;
    let hooks = Hooks::default();
    let url = receiver(hooks.clone()).await;
    let subscribed = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": url, "events": ["reminder.due", "message.sms", "hold.expired"]}),
        )
        .await;
    assert_eq!(subscribed.status, 201, "{:?}", subscribed.body);
    let secret = subscribed.body["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // A clinic open around the clock, reminding one minute before.
    let ids = app.clinic().await;
    let day = json!([["00:00", "23:59"]]);
    let hours = app
        .put(
            &format!("/v1/clinics/{}/opening-hours", ids.clinic),
            &app.admin,
            json!({"mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": day, "sun": day}),
        )
        .await;
    assert_eq!(hours.status, 200, "{:?}", hours.body);
    let settings = app
        .put(
            &format!("/v1/clinics/{}/settings", ids.clinic),
            &app.admin,
            json!({"reminder_minutes_before": 1}),
        )
        .await;
    assert_eq!(settings.status, 200, "{:?}", settings.body);
    let short = app
        .post(
            &format!("/v1/clinics/{}/treatments", ids.clinic),
            &app.admin,
            json!({"name": "Laser, small area", "duration_minutes": 5, "buffer_minutes": 0,
                   "price_cents": 5000, "resource_kind": "device"}),
        )
        .await;
    assert_eq!(short.status, 201, "{:?}", short.body);
    let short = short.body["treatment_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let ada = patient(
        &app,
        "Ada Lovelace",
        "ada@example.com",
        Some("+4915111111111"),
        "en",
        (true, true),
    )
    .await;
    let jurgen = patient(
        &app,
        "Jürgen Müller",
        "juergen@example.de",
        None,
        "de",
        (true, false),
    )
    .await;
    let carl = patient(
        &app,
        "Carl Cancel",
        "carl@example.com",
        None,
        "en",
        (true, false),
    )
    .await;
    // Starts a little over two minutes ahead: reminders fall due in about a minute.
    let start = minute_after(Duration::from_secs(100));
    let moved = start + chrono::Duration::minutes(1);
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let a = book(&app, &ids, &ada, &ids.laser, &short, &at(start)).await;
    let b = book(&app, &ids, &jurgen, &ids.laser_b, &short, &at(start)).await;
    let c = book(
        &app,
        &ids,
        &carl,
        &ids.laser,
        &short,
        &at(moved + chrono::Duration::minutes(10)),
    )
    .await;
    let rescheduled = app
        .post(
            &format!("/v1/reservations/{b}/reschedule"),
            &app.staff,
            json!({"start": at(moved), "resource_id": ids.laser_b}),
        )
        .await;
    assert_eq!(rescheduled.status, 200, "{:?}", rescheduled.body);
    let cancelled = app
        .post(
            &format!("/v1/reservations/{c}/cancel"),
            &app.staff,
            json!({"reason": "patient called"}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    // A hold of 30 s runs out while the process is down (hold.expired).
    let hold = app
        .post(
            "/v1/holds",
            &app.staff,
            json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic, "resource_id": ids.laser,
                   "treatment_id": short, "start": at(moved + chrono::Duration::minutes(30)),
                   "ttl_seconds": 30}),
        )
        .await;
    assert_eq!(hold.status, 201, "{:?}", hold.body);

    // The scheduler's rows: A armed at start - 1 min, B re-armed for its
    // new start, C disarmed.
    let read = clinicbook_projections::ReadModels::new(app.db.pool.clone());
    let due_of = |id: String| {
        let read = read.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let due = read
                    .due_at(DueKind::Reminder, &id)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                if due.is_some() || Instant::now() > deadline {
                    return due;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(
        due_of(a.clone()).await,
        Some(start - chrono::Duration::minutes(1))
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while due_of(b.clone()).await != Some(moved - chrono::Duration::minutes(1))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        due_of(b.clone()).await,
        Some(moved - chrono::Duration::minutes(1))
    );
    // C's cancellation commits after B's reschedule, possibly in a later
    // batch of the scheduler's projection: read it once that has applied
    // the cancellation.
    let cancelled_at = cancelled.body["position"]
        .as_i64()
        .unwrap_or_else(|| panic!("no position: {:?}", cancelled.body));
    read.wait_for(
        clinicbook_projections::due::DUE_WORK.name,
        cancelled_at,
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let c_due = read
        .due_at(DueKind::Reminder, &c)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c_due, None);
    let confirmations = smtp.wait_for(3, Duration::from_secs(30)).await;
    assert!(confirmations.len() >= 3, "{confirmations:#?}");

    // The process dies before A's reminder falls due, and a new one starts
    // after: the reminder due while nothing ran goes out once.
    drop(server);
    let due = start - chrono::Duration::minutes(1);
    let wait = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(2);
    tokio::time::sleep(wait).await;
    let restarted = start_serve(&app.db.url, &env).await;

    let reminders = |received: &[Received], addr: &str| {
        received
            .iter()
            .filter(|r| {
                to(r) == addr
                    && (r.subject.starts_with("Reminder") || r.subject.starts_with("Erinnerung"))
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while (reminders(&smtp.received(), "ada@example.com").is_empty()
        || reminders(&smtp.received(), "juergen@example.de").is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = smtp.received();
    let for_a = reminders(&received, "ada@example.com");
    assert_eq!(for_a.len(), 1, "{received:#?}");
    assert_eq!(
        for_a[0].subject,
        "Reminder: your appointment at Berlin Mitte"
    );
    let for_b = reminders(&received, "juergen@example.de");
    assert_eq!(for_b.len(), 1, "{received:#?}");
    assert_eq!(for_b[0].subject, "Erinnerung: Ihr Termin bei Berlin Mitte");
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap_or(chrono_tz::UTC);
    let local = moved.with_timezone(&berlin).format("%H:%M Uhr").to_string();
    assert!(
        text(&for_b[0]).contains(&local),
        "{}: {local}",
        text(&for_b[0])
    );
    assert!(
        reminders(&received, "carl@example.com").is_empty(),
        "{received:#?}"
    );

    // reminder.due, hold.expired and message.sms reached the webhook
    // receiver, signed.
    let expired = hooks.wait_for("hold.expired", 1).await;
    assert_eq!(expired.len(), 1, "{:?}", hooks.of_type("hold.expired"));
    assert_eq!(expired[0].2["data"]["aggregate_id"], hold.body["hold_id"]);
    let due_hooks = hooks.wait_for("reminder.due", 2).await;
    assert_eq!(due_hooks.len(), 2, "{:?}", hooks.of_type("reminder.due"));
    let sms = hooks.wait_for("message.sms", 2).await;
    assert!(sms.len() >= 2, "{:?}", sms);
    for (id, signature, body, raw) in due_hooks.iter().chain(sms.iter()) {
        assert!(
            clinicbook_notify::sign::verify(&secret, signature, raw.as_bytes()),
            "{id}: {signature}"
        );
        assert_eq!(body["id"], id.as_str());
    }
    let sms_kinds: Vec<&str> = sms
        .iter()
        .filter_map(|(_, _, b, _)| b["data"]["kind"].as_str())
        .collect();
    assert!(
        sms_kinds.contains(&"confirmation") && sms_kinds.contains(&"reminder"),
        "{sms_kinds:?}"
    );
    assert!(
        sms.iter()
            .all(|(_, _, b, _)| b["data"]["to"] == "+4915111111111"),
        "{sms:?}"
    );
    let (id, signature, _, raw) = &sms[0];
    println!("---- webhook delivery ----\nClinicbook-Event-Id: {id}\nClinicbook-Signature: {signature}\n\n{raw}\n---- end ----");
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_displacement_offers_the_next_three_free_starts_and_a_cancellation_is_told() {
    let smtp = SmtpServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (app, server, _) = serve(&smtp.url(), &[]).await;
    let ids = app.clinic().await;
    let ada = patient(
        &app,
        "Ada Lovelace",
        "ada@example.com",
        None,
        "en",
        (true, false),
    )
    .await;
    let grace = patient(
        &app,
        "Grace Hopper",
        "grace@example.com",
        None,
        "de",
        (true, false),
    )
    .await;
    let moved = book(
        &app,
        &ids,
        &ada,
        &ids.laser,
        &ids.laser_treatment,
        "2030-01-08T09:00:00Z",
    )
    .await;
    let gone = book(
        &app,
        &ids,
        &grace,
        &ids.laser_b,
        &ids.laser_treatment,
        "2030-01-08T13:00:00Z",
    )
    .await;
    let block = app
        .post(
            &format!("/v1/resources/{}/blocks", ids.laser),
            &app.staff,
            json!({"start": "2030-01-08T08:30:00Z", "end": "2030-01-08T10:30:00Z",
                   "reason": "laser service", "emergency": true}),
        )
        .await;
    assert_eq!(block.status, 201, "{:?}", block.body);
    let cancelled = app
        .post(
            &format!("/v1/reservations/{gone}/cancel"),
            &app.staff,
            json!({"reason": "patient called"}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    let kinds = |log: &[Value]| {
        log.iter()
            .map(|m| m["kind"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let log = messages_until(&app, &moved, |log| {
        log.len() == 2 && log.iter().all(|m| m["status"] == "sent")
    })
    .await;
    assert_eq!(kinds(&log), ["confirmation", "displacement"], "{log:?}");
    let log = messages_until(&app, &gone, |log| {
        log.len() == 2 && log.iter().all(|m| m["status"] == "sent")
    })
    .await;
    assert_eq!(kinds(&log), ["confirmation", "cancellation"], "{log:?}");

    let received = smtp.wait_for(4, Duration::from_secs(30)).await;
    let displaced = received
        .iter()
        .find(|r| r.subject == "Your appointment at Berlin Mitte has to move")
        .unwrap_or_else(|| panic!("no displacement: {received:#?}"));
    let body = text(displaced);
    assert!(
        body.contains("on Tuesday, 8 January 2030, 10:00 (Europe/Berlin) cannot take place"),
        "{body}"
    );
    assert!(
        body.contains("These are the next free times for Laser hair removal:"),
        "{body}"
    );
    let offered: Vec<&str> = body.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(offered.len(), 3, "{body}");
    // Laser B is free from opening at 09:00 local; the next starts follow.
    assert!(
        offered[0].contains("Tuesday, 8 January 2030, 09:00"),
        "{body}"
    );
    let cancellation = received
        .iter()
        .find(|r| r.subject == "Ihr Termin bei Berlin Mitte ist storniert")
        .unwrap_or_else(|| panic!("no cancellation: {received:#?}"));
    assert!(
        text(cancellation)
            .contains("am Dienstag, 8. Januar 2030, 14:00 Uhr (Europe/Berlin) ist storniert"),
        "{}",
        text(cancellation)
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waitlist_offer_is_told_with_its_expiry() {
    let smtp = SmtpServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let (app, server, _) = serve(&smtp.url(), &[]).await;
    let ids = app.clinic().await;
    let settings = app
        .put(
            &format!("/v1/clinics/{}/settings", ids.clinic),
            &app.admin,
            json!({"waitlist_mode": "offer", "offer_minutes": 30}),
        )
        .await;
    assert_eq!(settings.status, 200, "{:?}", settings.body);
    let walk_in = Uuid::new_v4().to_string();
    let booked = book(
        &app,
        &ids,
        &walk_in,
        &ids.laser,
        &ids.laser_treatment,
        "2030-01-08T09:00:00Z",
    )
    .await;
    let jurgen = patient(
        &app,
        "Jürgen Müller",
        "juergen@example.de",
        None,
        "de",
        (true, false),
    )
    .await;
    let joined = app
        .post(
            "/v1/waitlist",
            &app.staff,
            json!({"patient_id": jurgen, "clinic_id": ids.clinic, "treatment_id": ids.laser_treatment,
                   "earliest": "2030-01-08T08:00:00Z", "latest": "2030-01-08T10:00:00Z",
                   "payment": {"method": "at_clinic"}}),
        )
        .await;
    assert_eq!(joined.status, 201, "{:?}", joined.body);
    let waiting = joined.body["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cancelled = app
        .post(
            &format!("/v1/reservations/{booked}/cancel"),
            &app.staff,
            json!({"reason": "patient moved"}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    let log = messages_until(&app, &waiting, |log| {
        log.first().is_some_and(|m| m["status"] == "sent")
    })
    .await;
    assert_eq!(log[0]["kind"], "waitlist_offer", "{log:?}");
    assert_eq!(log[0]["to"], "juergen@example.de", "{log:?}");
    let received = smtp.wait_for(1, Duration::from_secs(30)).await;
    let offer = received
        .iter()
        .find(|r| r.subject == "Ein Platz bei Berlin Mitte ist für Sie frei")
        .unwrap_or_else(|| panic!("no offer: {received:#?}"));
    let body = text(offer);
    assert!(
        body.contains(
            "am Dienstag, 8. Januar 2030, 10:00 Uhr (Europe/Berlin) ist für Sie reserviert, bis "
        ),
        "{body}"
    );
    drop(server);
}
