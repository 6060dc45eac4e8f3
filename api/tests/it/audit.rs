//! The auditor's routes and commands end to end: a reservation's state as
//! of five moments of its life equals what the API answered then; the
//! global history pages and filters; roles; bad input; and the built
//! `clinicbook verify` and `clinicbook replay` binaries against the test
//! database, finding tampered, deleted and swapped events and failing on a
//! stream that no longer replays; signed checkpoints over HTTP and from
//! `clinicbook checkpoint`, naming streams cut short or deleted since and
//! refusing altered ones.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use clinicbook_demo::{self as demo, DemoOptions};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{app, Answer, App};

fn text(answer: &Answer, field: &str) -> String {
    answer.body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{field}` in {:?}", answer.body))
        .to_string()
}

fn instant(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        .unwrap_or_else(|| panic!("not an instant: {value}"))
}

/// An instant for a query string (`+` encoded).
fn query_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, false)
        .replace('+', "%2B")
}

/// What the API said about a reservation right after one step of its life.
struct Moment {
    /// Taken after the answer arrived, before the next request was sent.
    at: DateTime<Utc>,
    /// The command's consistency token: the position of the last event it
    /// wrote (to any stream).
    position: i64,
    /// `GET /v1/reservations/{id}` at that moment.
    view: Value,
}

async fn moment(app: &App, id: &str, answer: &Answer) -> Moment {
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let position = answer.body["position"]
        .as_i64()
        .unwrap_or_else(|| panic!("no position in {:?}", answer.body));
    // The view is a read model: read it once it has this command's events.
    let view = app
        .get(
            &format!("/v1/reservations/{id}?min_position={position}"),
            &app.staff,
        )
        .await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    Moment {
        at: Utc::now(),
        position,
        view: view.body,
    }
}

/// The audited state of a reservation agrees with the view the API gave.
fn assert_same(state: &Value, view: &Value, what: &str) {
    assert_eq!(state["status"], view["status"], "{what}: {state} vs {view}");
    assert_eq!(
        instant(&state["slot"]["start"]),
        instant(&view["start"]),
        "{what}"
    );
    assert_eq!(
        instant(&state["slot"]["end"]),
        instant(&view["end"]),
        "{what}"
    );
    assert_eq!(state["slot"]["resource_id"], view["resource_id"], "{what}");
    assert_eq!(
        state["price"]["total"], view["price"]["total_cents"],
        "{what}"
    );
    assert_eq!(state["patient_id"], view["patient_id"], "{what}");
}

/// A Tuesday a few weeks ahead at `hour` (UTC), inside the Berlin clinic's
/// hours (09:00-18:00 local).
fn tuesday(hour: u32) -> String {
    let mut day = Utc::now().date_naive() + Duration::days(14);
    while day.format("%a").to_string() != "Tue" {
        day += Duration::days(1);
    }
    format!("{day}T{hour:02}:00:00Z")
}

#[tokio::test]
async fn the_as_of_state_of_a_reservation_matches_what_the_api_answered_at_five_moments() {
    let app = app().await;
    let ids = app.clinic().await;
    let patient = Uuid::new_v4().to_string();
    let funded = app
        .post(
            &format!("/v1/wallets/{patient}/deposits"),
            &app.staff,
            json!({"amount_cents": 50_000, "reference": "bank-1"}),
        )
        .await;
    assert_eq!(funded.status, StatusCode::CREATED, "{:?}", funded.body);
    let before_booking = Utc::now();

    let booked = app
        .post(
            "/v1/reservations",
            &app.staff,
            json!({"patient_id": patient, "clinic_id": ids.clinic, "resource_id": ids.laser,
                   "treatment_id": ids.laser_treatment, "start": tuesday(9), "payment": {"method": "wallet"}}),
        )
        .await;
    let id = text(&booked, "reservation_id");
    let path = |action: &str| format!("/v1/reservations/{id}/{action}");
    let mut moments = vec![moment(&app, &id, &booked).await];
    let moved = app
        .post(
            &path("reschedule"),
            &app.staff,
            json!({"start": tuesday(11)}),
        )
        .await;
    moments.push(moment(&app, &id, &moved).await);
    let moved_again = app
        .post(
            &path("reschedule"),
            &app.staff,
            json!({"start": tuesday(13), "resource_id": ids.laser_b}),
        )
        .await;
    moments.push(moment(&app, &id, &moved_again).await);
    let checked_in = app
        .send(Method::POST, &path("check-in"), Some(&app.staff), None)
        .await;
    moments.push(moment(&app, &id, &checked_in).await);
    let completed = app
        .send(Method::POST, &path("complete"), Some(&app.staff), None)
        .await;
    moments.push(moment(&app, &id, &completed).await);

    let statuses: Vec<&str> = moments
        .iter()
        .map(|m| m.view["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        statuses,
        ["booked", "booked", "booked", "checked_in", "completed"]
    );
    let stream = format!("/v1/audit/streams/Reservation/{id}");
    for (i, m) in moments.iter().enumerate() {
        let version = i as i64 + 1;
        for query in [
            format!("as_of={}", query_instant(m.at)),
            format!("version={version}"),
        ] {
            let what = format!("moment {version} by {query}");
            let audited = app.get(&format!("{stream}?{query}"), &app.auditor).await;
            assert_eq!(audited.status, StatusCode::OK, "{what}: {:?}", audited.body);
            assert_eq!(audited.body["version"], json!(version), "{what}");
            assert_eq!(audited.body["last_sequence"], json!(5), "{what}");
            let events = audited.body["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(events.len(), i + 1, "{what}");
            let last = &events[i];
            assert_eq!(last["sequence"], json!(version), "{what}");
            // Written by that command: at or before its answer's position
            // (the position of its last event), after the previous one's.
            let position = last["position"].as_i64().unwrap_or_default();
            let previous = if i == 0 { 0 } else { moments[i - 1].position };
            assert!(
                previous < position && position <= m.position,
                "{what}: {position}"
            );
            assert_eq!(last["metadata"]["actor"], "alice", "{what}");
            assert_eq!(last["hash"].as_str().map(str::len), Some(64), "{what}");
            assert_same(&audited.body["state"], &m.view, &what);
            // Booked from the wallet: the whole total was prepaid.
            assert_eq!(audited.body["state"]["prepaid"], json!(12_000), "{what}");
        }
    }
    let types: Vec<String> = app.get(&stream, &app.auditor).await.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["event_type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "ReservationBooked",
            "ReservationRescheduled",
            "ReservationRescheduled",
            "CheckedIn",
            "ReservationCompleted"
        ]
    );

    // Before the booking the stream had no event: the empty state.
    let before = app
        .get(
            &format!("{stream}?as_of={}", query_instant(before_booking)),
            &app.auditor,
        )
        .await;
    assert_eq!(before.status, StatusCode::OK, "{:?}", before.body);
    assert_eq!(before.body["version"], json!(0));
    assert_eq!(before.body["events"], json!([]));
    assert_eq!(before.body["state"]["status"], "new");
}

#[tokio::test]
async fn audit_routes_need_a_token_and_the_auditor_or_admin_role() {
    let app = app().await;
    let patient = Uuid::new_v4().to_string();
    let deposit = app
        .post(
            &format!("/v1/wallets/{patient}/deposits"),
            &app.staff,
            json!({"amount_cents": 1_000, "reference": "r1"}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::CREATED);
    let routes = [
        format!("/v1/audit/streams/Wallet/{patient}"),
        "/v1/audit/events".to_string(),
        "/v1/audit/verify".to_string(),
        "/v1/audit/checkpoint".to_string(),
        "/v1/audit/public-key".to_string(),
    ];
    for route in &routes {
        app.send(Method::GET, route, None, None)
            .await
            .assert_problem(401, "unauthorized");
        app.send(Method::GET, route, Some("not-a-token"), None)
            .await
            .assert_problem(401, "unauthorized");
        for token in [&app.staff, &app.analyst] {
            app.get(route, token).await.assert_problem(403, "forbidden");
        }
        for token in [&app.auditor, &app.admin] {
            let answer = app.get(route, token).await;
            assert_eq!(answer.status, StatusCode::OK, "{route}: {:?}", answer.body);
        }
    }
}

#[tokio::test]
async fn bad_audit_requests_are_400_and_unknown_streams_and_versions_404() {
    let app = app().await;
    let patient = Uuid::new_v4().to_string();
    for i in 0..2 {
        let deposit = app
            .post(
                &format!("/v1/wallets/{patient}/deposits"),
                &app.staff,
                json!({"amount_cents": 1_000, "reference": format!("r{i}")}),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::CREATED);
    }
    let stream = format!("/v1/audit/streams/Wallet/{patient}");
    let bad = [
        (
            "/v1/audit/streams/Wallets/x".to_string(),
            "Clinic, Calendar, Reservation, Package, Wallet, PromoCode, Program",
        ),
        (format!("{stream}?as_of=yesterday"), "as_of"),
        (format!("{stream}?as_of=2030-06-30T23:59:60Z"), "as_of"),
        (format!("{stream}?version=-1"), "version"),
        (format!("{stream}?version=two"), "version"),
        ("/v1/audit/events?limit=0".to_string(), "limit"),
        ("/v1/audit/events?limit=1001".to_string(), "limit"),
        ("/v1/audit/events?after=-5".to_string(), "after"),
        ("/v1/audit/events?after=12.x".to_string(), "after"),
        (
            "/v1/audit/events?aggregate_type=wallet".to_string(),
            "Wallet",
        ),
        (
            "/v1/audit/verify?aggregate_type=Nope".to_string(),
            "Program",
        ),
    ];
    // Each of as_of and version is valid alone; both together disagree.
    app.get(
        &format!("{stream}?as_of=2030-01-01T00:00:00Z&version=1"),
        &app.auditor,
    )
    .await
    .assert_problem(422, "inconsistent_input");
    for (route, named) in bad {
        let answer = app.get(&route, &app.auditor).await;
        answer.assert_problem(400, "invalid_request");
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(named),
            "{route}: {detail:?} should name {named}"
        );
    }
    app.get(
        &format!("/v1/audit/streams/Wallet/{}", Uuid::new_v4()),
        &app.auditor,
    )
    .await
    .assert_problem(404, "not_found");
    let beyond = app.get(&format!("{stream}?version=3"), &app.auditor).await;
    beyond.assert_problem(404, "not_found");
    assert!(
        beyond.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("has 2 events")),
        "{:?}",
        beyond.body
    );
    // An unencoded `+` in the offset arrives as a space and is still read.
    let plus = app
        .get(
            &format!("{stream}?as_of=2999-01-01T00:00:00+01:00"),
            &app.auditor,
        )
        .await;
    assert_eq!(plus.status, StatusCode::OK, "{:?}", plus.body);
    assert_eq!(plus.body["version"], json!(2));
    assert_eq!(plus.body["state"]["balance"], json!(2_000));
}

/// Pages of `GET /v1/audit/events` from the beginning, following
/// `next_after`, until one is empty; polling a moment for transactions of
/// other tests that hold the horizon back.
async fn all_events(app: &App, query: &str, limit: usize, expected: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (events, _) = pages_after(app, None, query, limit).await;
        if events.len() >= expected || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every page after `after` (the beginning when `None`) until an empty
/// one; answers the events and the cursor to go on from.
async fn pages_after(
    app: &App,
    after: Option<&str>,
    query: &str,
    limit: usize,
) -> (Vec<Value>, String) {
    let mut events = Vec::new();
    let mut after = after.map(str::to_owned);
    loop {
        let from = after
            .as_deref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let page = app
            .get(
                &format!("/v1/audit/events?limit={limit}{from}{query}"),
                &app.auditor,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        let got = page.body["events"].as_array().cloned().unwrap_or_default();
        assert!(got.len() <= limit);
        let next = text(&page, "next_after");
        if got.is_empty() {
            if let Some(after) = &after {
                if after.contains('.') {
                    assert_eq!(&next, after, "an empty page keeps the cursor");
                }
            }
            return (events, next);
        }
        events.extend(got);
        after = Some(next);
    }
}

#[tokio::test]
async fn the_global_history_pages_in_feed_order_and_filters_by_type_and_actor() {
    let app = app().await;
    app.clinic().await;
    let patient = Uuid::new_v4().to_string();
    for i in 0..3 {
        let deposit = app
            .post(
                &format!("/v1/wallets/{patient}/deposits"),
                &app.staff,
                json!({"amount_cents": 100, "reference": format!("r{i}")}),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::CREATED);
    }
    let total = usize::try_from(app.events().await).unwrap_or_default();
    let everything = all_events(&app, "", 4, total).await;
    assert_eq!(everything.len(), total);
    // Each event once; a quiet store's feed order is position order.
    let positions: Vec<i64> = everything
        .iter()
        .map(|e| e["position"].as_i64().unwrap_or_default())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    let by_alice = all_events(&app, "&actor=alice", 2, 3).await;
    assert_eq!(by_alice.len(), 3);
    assert!(by_alice
        .iter()
        .all(|e| e["aggregate_type"] == "Wallet" && e["metadata"]["actor"] == "alice"));
    let by_root = all_events(&app, "&actor=root", 1000, total - 3).await;
    assert_eq!(by_root.len(), total - 3);
    assert!(by_root.iter().all(|e| e["aggregate_type"] == "Clinic"));
    let wallets = all_events(&app, "&aggregate_type=Wallet", 1000, 3).await;
    assert_eq!(wallets.len(), 3);
    let nobody = all_events(&app, "&actor=nobody", 10, 0).await;
    assert!(nobody.is_empty());
}

// ---------------------------------------------------------------------------
// The built binary against the test database.
// ---------------------------------------------------------------------------

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn clinicbook(app: &App, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clinicbook"))
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run clinicbook: {e}"));
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `sql` (binding `id`) as superuser with the append-only trigger off.
async fn tamper(app: &App, sql: &str, id: &str) {
    let affected = app.db.tamper(sql, &[id]).await;
    assert!(affected > 0, "{sql} changed nothing");
}

async fn wallet_with_deposits(app: &App, count: usize) -> String {
    let patient = Uuid::new_v4().to_string();
    for i in 0..count {
        let deposit = app
            .post(
                &format!("/v1/wallets/{patient}/deposits"),
                &app.staff,
                json!({"amount_cents": 100 * (i as i64 + 1), "reference": format!("r{i}")}),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::CREATED, "{:?}", deposit.body);
    }
    patient
}

#[tokio::test]
async fn clinicbook_verify_names_a_tampered_payload_a_deleted_event_and_a_swapped_pair() {
    let app = app().await;
    let clean = wallet_with_deposits(&app, 4).await;
    let tampered = wallet_with_deposits(&app, 4).await;
    let deleted = wallet_with_deposits(&app, 4).await;
    let swapped = wallet_with_deposits(&app, 4).await;
    let sound = clinicbook(&app, &["verify"]).await;
    assert!(sound.ok, "{}{}", sound.stdout, sound.stderr);
    assert!(
        sound.stdout.contains("verified 4 streams, 16 events"),
        "{}",
        sound.stdout
    );

    tamper(
        &app,
        "UPDATE events SET payload = replace(payload::text, '\"amount\":200', '\"amount\":20000')::json
          WHERE aggregate_id = $1 AND sequence = 2",
        &tampered,
    )
    .await;
    tamper(
        &app,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &deleted,
    )
    .await;
    tamper(
        &app,
        "UPDATE events e SET payload = o.payload, hash = o.hash FROM events o
          WHERE e.aggregate_id = $1 AND o.aggregate_id = $1
            AND ((e.sequence = 2 AND o.sequence = 3) OR (e.sequence = 3 AND o.sequence = 2))",
        &swapped,
    )
    .await;

    let broken = clinicbook(&app, &["verify"]).await;
    assert!(!broken.ok, "{}", broken.stdout);
    for (id, sequence) in [(&tampered, 2), (&deleted, 4), (&swapped, 2)] {
        let line = format!("BROKEN Wallet/{id} at sequence {sequence}:");
        assert!(
            broken.stdout.contains(&line),
            "{line} not in\n{}",
            broken.stdout
        );
    }
    assert!(!broken.stdout.contains(&clean), "{}", broken.stdout);
    assert!(
        broken.stderr.contains("3 of 4 streams"),
        "{}",
        broken.stderr
    );

    // One stream, by type and id; and the same answer over HTTP.
    let one = clinicbook(&app, &["verify", "--type", "Wallet", "--id", &clean]).await;
    assert!(one.ok, "{}{}", one.stdout, one.stderr);
    assert!(
        one.stdout.contains("verified 1 streams, 4 events"),
        "{}",
        one.stdout
    );
    let bad_type = clinicbook(&app, &["verify", "--type", "Wallets"]).await;
    assert!(
        !bad_type.ok && bad_type.stderr.contains("Wallet, PromoCode"),
        "{}",
        bad_type.stderr
    );
    let report = app.get("/v1/audit/verify", &app.auditor).await;
    assert_eq!(report.status, StatusCode::OK);
    assert_eq!(report.body["ok"], json!(false));
    assert_eq!(report.body["streams_checked"], json!(4));
    let mut found: Vec<(String, i64)> = report.body["broken"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["aggregate_id"].as_str().unwrap_or_default().to_string(),
                b["sequence"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![(tampered, 2), (deleted, 4), (swapped, 2)];
    expected.sort();
    assert_eq!(found, expected);
    let scoped = app
        .get(
            &format!("/v1/audit/verify?aggregate_type=Wallet&aggregate_id={clean}"),
            &app.auditor,
        )
        .await;
    assert_eq!(scoped.body["ok"], json!(true));
    assert_eq!(scoped.body["events_checked"], json!(4));
}

#[tokio::test]
async fn clinicbook_replay_check_passes_on_the_demo_data_and_fails_on_corrupted_streams() {
    let app = app().await;
    let options = DemoOptions {
        patients: 30,
        days: 5,
        ..DemoOptions::default()
    };
    let summary = demo::load(&app.base, &app.admin, &app.staff, &options)
        .await
        .unwrap_or_else(|e| panic!("demo load failed: {e}"));
    let events = app.events().await;
    let sound = clinicbook(&app, &["replay", "--all", "--check", "--batch", "500"]).await;
    assert!(sound.ok, "{}{}", sound.stdout, sound.stderr);
    assert!(
        sound.stdout.contains(&format!(" {events} events in")),
        "{events} events: {}",
        sound.stdout
    );
    assert!(sound.stdout.contains("OK: every stream replays as stored"));
    // With the projections rebuilt beside the live ones and compared.
    let with_projections = clinicbook(&app, &["replay", "--all", "--check", "--projections"]).await;
    assert!(
        with_projections.ok,
        "{}{}",
        with_projections.stdout, with_projections.stderr
    );
    for projection in clinicbook_projections::projections() {
        let line = format!("projection {}: rebuilt from", projection.name);
        assert!(
            with_projections.stdout.contains(&line),
            "{line} not in\n{}",
            with_projections.stdout
        );
    }
    assert!(!with_projections.stdout.contains("DIFFERS"));
    // A live read-model row lost: the rebuild beside it shows it.
    let lost = app
        .db
        .tamper(
            "DELETE FROM read.reports_reservations
              WHERE ctid = (SELECT ctid FROM read.reports_reservations LIMIT 1)",
            &[],
        )
        .await;
    assert_eq!(lost, 1);
    let differs = clinicbook(&app, &["replay", "--all", "--check", "--projections"]).await;
    assert!(!differs.ok, "{}", differs.stdout);
    assert!(
        differs
            .stdout
            .contains("table reports_reservations: 1 rows only in the rebuild, 0 only live"),
        "{}",
        differs.stdout
    );
    assert!(
        differs.stderr.contains("1 projections differ"),
        "{}",
        differs.stderr
    );

    // One stream printed as JSON, at a version.
    let reservation = summary
        .sample
        .reservation_id
        .unwrap_or_else(|| panic!("the demo has a sample reservation"))
        .to_string();
    let one = clinicbook(
        &app,
        &["replay", "Reservation", &reservation, "--version", "1"],
    )
    .await;
    assert!(one.ok, "{}", one.stderr);
    let printed: Value =
        serde_json::from_str(&one.stdout).unwrap_or_else(|e| panic!("{e}: {}", one.stdout));
    assert_eq!(printed["version"], json!(1));
    assert_eq!(printed["events"][0]["event_type"], "ReservationBooked");
    assert_eq!(printed["events"][0]["event_version"], "2.0.0");
    assert_eq!(printed["state"]["status"], "booked");
    let both = clinicbook(
        &app,
        &[
            "replay",
            "Reservation",
            &reservation,
            "--version",
            "1",
            "--as-of",
            "2030-01-01T00:00:00Z",
        ],
    )
    .await;
    assert!(!both.ok);
    let missing = clinicbook(&app, &["replay", "Wallet", "nobody"]).await;
    assert!(
        !missing.ok && missing.stderr.contains("no stream Wallet/nobody"),
        "{}",
        missing.stderr
    );

    // An event that no longer deserialises, and a stream with a gap.
    tamper(
        &app,
        "UPDATE events SET payload = '{\"ReservationBooked\":{\"reservation_id\":\"garbage\"}}'
          WHERE aggregate_type = 'Reservation' AND aggregate_id = $1 AND sequence = 1",
        &reservation,
    )
    .await;
    let mut wallet = None;
    for patient in &summary.patient_ids {
        let id = patient.to_string();
        let stored = clinicbook_eventstore::audit::stream_events(&app.db.pool, "Wallet", &id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if stored.len() >= 3 {
            wallet = Some(id);
            break;
        }
    }
    let wallet = wallet.unwrap_or_else(|| panic!("the demo has a wallet with three events"));
    tamper(
        &app,
        "DELETE FROM events WHERE aggregate_type = 'Wallet' AND aggregate_id = $1 AND sequence = 2",
        &wallet,
    )
    .await;
    let failed = clinicbook(&app, &["replay", "--all", "--check"]).await;
    assert!(!failed.ok, "{}", failed.stdout);
    let line = format!("MISMATCH Reservation/{reservation} at sequence 1:");
    assert!(
        failed.stdout.contains(&line),
        "{line} not in\n{}",
        failed.stdout
    );
    let line = format!("MISMATCH Wallet/{wallet} at sequence 3: event 3 follows event 1");
    assert!(
        failed.stdout.contains(&line),
        "{line} not in\n{}",
        failed.stdout
    );
    assert!(
        failed.stderr.contains("do not replay as stored"),
        "{}",
        failed.stderr
    );
}

// ---------------------------------------------------------------------------
// Cursors, checkpoints and verification against them.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn next_after_is_a_cursor_and_the_older_position_form_still_pages() {
    let app = app().await;
    let patient = wallet_with_deposits(&app, 3).await;
    let everything = all_events(&app, "", 10, 3).await;
    assert_eq!(everything.len(), 3);
    let first = app.get("/v1/audit/events?limit=1", &app.auditor).await;
    let cursor = text(&first, "next_after");
    assert_eq!(first.body["events"][0]["aggregate_id"], json!(patient));
    let (rest, end) = pages_after(&app, Some(&cursor), "", 1).await;
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0]["sequence"], json!(2));
    let (none, same) = pages_after(&app, Some(&end), "", 5).await;
    assert!(none.is_empty());
    assert_eq!(same, end);

    // An integer is read as a position, as before: nothing above it is skipped.
    let position = everything[0]["position"].as_i64().unwrap_or_default();
    let (from_position, _) = pages_after(&app, Some(&position.to_string()), "", 5).await;
    let sequences: Vec<i64> = from_position
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(sequences, vec![2, 3]);
    let (from_zero, _) = pages_after(&app, Some("0"), "", 5).await;
    assert_eq!(from_zero.len(), 3);

    for bad in ["abc", "1.x", "-1.2", "3.-4", "1.2.3", "9223372036854775808"] {
        let answer = app
            .get(&format!("/v1/audit/events?after={bad}"), &app.auditor)
            .await;
        answer.assert_problem(400, "invalid_request");
        assert!(
            answer.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("after")),
            "{bad}: {:?}",
            answer.body
        );
    }
}

fn broken_of(body: &Value) -> Vec<(String, i64)> {
    let mut found: Vec<(String, i64)> = body["broken"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["aggregate_id"].as_str().unwrap_or_default().to_string(),
                b["sequence"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_checkpoint_over_http_names_streams_cut_short_or_deleted_and_refuses_forgeries() {
    let app = app().await;
    let cut = wallet_with_deposits(&app, 3).await;
    let gone = wallet_with_deposits(&app, 1).await;
    let kept = wallet_with_deposits(&app, 2).await;

    for route in ["/v1/audit/checkpoint", "/v1/audit/public-key"] {
        app.send(Method::GET, route, None, None)
            .await
            .assert_problem(401, "unauthorized");
        app.get(route, &app.staff)
            .await
            .assert_problem(403, "forbidden");
    }
    let key = app.get("/v1/audit/public-key", &app.auditor).await;
    assert_eq!(key.status, StatusCode::OK, "{:?}", key.body);
    assert_eq!(key.body["algorithm"], json!("Ed25519"));
    let public = text(&key, "public_key");
    assert_eq!(public.len(), 64);
    assert!(!key.body.to_string().contains(&app.audit_secret));

    let taken = app.get("/v1/audit/checkpoint", &app.auditor).await;
    assert_eq!(taken.status, StatusCode::OK, "{:?}", taken.body);
    let checkpoint = taken.body.clone();
    assert!(!checkpoint.to_string().contains(&app.audit_secret));
    let heads: Vec<(String, i64)> = checkpoint["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["aggregate_id"].as_str().unwrap_or_default().to_owned(),
                s["sequence"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    let mut expected_heads = vec![(cut.clone(), 3), (gone.clone(), 1), (kept.clone(), 2)];
    expected_heads.sort();
    let mut sorted_heads = heads.clone();
    sorted_heads.sort();
    assert_eq!(sorted_heads, expected_heads);

    let sound = app
        .post("/v1/audit/verify", &app.auditor, checkpoint.clone())
        .await;
    assert_eq!(sound.status, StatusCode::OK, "{:?}", sound.body);
    assert_eq!(sound.body["ok"], json!(true));
    app.post("/v1/audit/verify", &app.staff, checkpoint.clone())
        .await
        .assert_problem(403, "forbidden");

    tamper(
        &app,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &cut,
    )
    .await;
    tamper(&app, "DELETE FROM events WHERE aggregate_id = $1", &gone).await;
    let chains = app.get("/v1/audit/verify", &app.auditor).await;
    assert_eq!(chains.body["ok"], json!(true), "the chains alone hold");
    let report = app
        .post("/v1/audit/verify", &app.auditor, checkpoint.clone())
        .await;
    assert_eq!(report.status, StatusCode::OK, "{:?}", report.body);
    assert_eq!(report.body["ok"], json!(false));
    let mut expected = vec![(cut.clone(), 3), (gone.clone(), 1)];
    expected.sort();
    assert_eq!(broken_of(&report.body), expected);

    // An altered signature, or contents that no longer match the digest.
    let mut forged = checkpoint.clone();
    let signature = forged["signature"].as_str().unwrap_or_default().to_owned();
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    forged["signature"] = json!(format!("{flipped}{}", &signature[1..]));
    app.post("/v1/audit/verify", &app.auditor, forged)
        .await
        .assert_problem(422, "checkpoint_refused");
    let mut shortened = checkpoint.clone();
    shortened["streams"] = json!(checkpoint["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["aggregate_id"] != json!(gone))
        .cloned()
        .collect::<Vec<_>>());
    app.post("/v1/audit/verify", &app.auditor, shortened)
        .await
        .assert_problem(422, "checkpoint_refused");

    // A checkpoint of many streams is larger than other bodies may be
    // (64 KiB): it is read, and refused only for its signature.
    let mut large = checkpoint.clone();
    large["streams"] = json!((0..1_000)
        .map(
            |i| json!({"aggregate_type": "Wallet", "aggregate_id": format!("{i:036}"),
                        "sequence": 1, "hash": "00".repeat(32)})
        )
        .collect::<Vec<_>>());
    assert!(large.to_string().len() > 64 * 1024);
    app.post("/v1/audit/verify", &app.auditor, large)
        .await
        .assert_problem(422, "checkpoint_refused");

    // Bad input: 4xx problem+json, naming what is wrong.
    let mut bad_hash = checkpoint.clone();
    bad_hash["streams"][0]["hash"] = json!("not-hex");
    let mut no_digest = checkpoint.clone();
    if let Some(map) = no_digest.as_object_mut() {
        map.remove("digest");
    }
    let mut extra = checkpoint.clone();
    extra["surprise"] = json!(1);
    let mut short_signature = checkpoint.clone();
    short_signature["signature"] = json!("abcd");
    for (body, named) in [
        (bad_hash, "streams[0].hash"),
        (no_digest, "digest"),
        (extra, "surprise"),
        (short_signature, "signature"),
        (json!({"position": "ten"}), "position"),
        (json!([1, 2]), ""),
    ] {
        let answer = app.post("/v1/audit/verify", &app.auditor, body).await;
        answer.assert_problem(400, "invalid_request");
        assert!(
            answer.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains(named)),
            "{named}: {:?}",
            answer.body
        );
    }
    app.raw(
        Method::POST,
        "/v1/audit/verify",
        &app.auditor,
        "text/plain",
        b"{}".to_vec(),
    )
    .await
    .assert_problem(415, "unsupported_media_type");
    app.raw(
        Method::POST,
        "/v1/audit/verify",
        &app.auditor,
        "application/json",
        b"{\"position\":".to_vec(),
    )
    .await
    .assert_problem(400, "invalid_request");
}

/// Runs the built `clinicbook` with the test servers' audit key and `dir` as
/// its var dir.
async fn keyed(app: &App, dir: &std::path::Path, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clinicbook"))
        .args(args)
        .arg("--var-dir")
        .arg(dir)
        .env("DATABASE_URL", &app.db.url)
        .env("CLINICBOOK_AUDIT_KEY", &app.audit_secret)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run clinicbook: {e}"));
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn clinicbook_checkpoint_and_verify_against_name_a_deleted_tail_and_refuse_an_altered_signature(
) {
    let app = app().await;
    let cut = wallet_with_deposits(&app, 3).await;
    let kept = wallet_with_deposits(&app, 2).await;
    let dir = std::env::temp_dir().join(format!("clinicbook-checkpoint-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let taken = keyed(&app, &dir, &["checkpoint"]).await;
    assert!(taken.ok, "{}", taken.stderr);
    assert!(!taken.stdout.contains(&app.audit_secret));
    assert!(!taken.stderr.contains(&app.audit_secret));
    let file = dir.join("checkpoint.json");
    std::fs::write(&file, &taken.stdout).unwrap_or_else(|e| panic!("{e}"));
    let file_arg = file.to_str().unwrap_or_default().to_owned();
    // The server's public key verifies what the CLI signed with the same key.
    let public = text(
        &app.get("/v1/audit/public-key", &app.auditor).await,
        "public_key",
    );
    let printed = keyed(&app, &dir, &["checkpoint", "--print-public-key"]).await;
    assert_eq!(printed.stdout.trim(), public);
    let body: Value = serde_json::from_str(&taken.stdout).unwrap_or(Value::Null);
    let over_http = app
        .post("/v1/audit/verify", &app.auditor, body.clone())
        .await;
    assert_eq!(over_http.body["ok"], json!(true), "{:?}", over_http.body);

    let sound = keyed(
        &app,
        &dir,
        &["verify", "--against", &file_arg, "--public-key", &public],
    )
    .await;
    assert!(sound.ok, "{}{}", sound.stdout, sound.stderr);
    assert!(sound.stdout.contains("2 streams"), "{}", sound.stdout);

    tamper(
        &app,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &cut,
    )
    .await;
    let plain = keyed(&app, &dir, &["verify"]).await;
    assert!(plain.ok, "the chains alone hold: {}", plain.stdout);
    let against = keyed(&app, &dir, &["verify", "--against", &file_arg]).await;
    assert!(!against.ok, "{}", against.stdout);
    let line = format!("BROKEN Wallet/{cut} at sequence 3:");
    assert!(
        against.stdout.contains(&line),
        "{line} not in\n{}",
        against.stdout
    );
    assert!(!against.stdout.contains(&kept), "{}", against.stdout);

    // An altered signature is refused, and so is another key's.
    let mut forged = body.clone();
    let signature = forged["signature"].as_str().unwrap_or_default().to_owned();
    let flipped = if signature.ends_with('0') { "1" } else { "0" };
    forged["signature"] = json!(format!("{}{flipped}", &signature[..signature.len() - 1]));
    let forged_file = dir.join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let refused = keyed(
        &app,
        &dir,
        &[
            "verify",
            "--against",
            forged_file.to_str().unwrap_or_default(),
        ],
    )
    .await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("checkpoint refused"),
        "{}",
        refused.stderr
    );
    // RFC 8032 test 2's public key; the test servers sign with test 1's secret.
    let other_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    let other = keyed(
        &app,
        &dir,
        &["verify", "--against", &file_arg, "--public-key", other_key],
    )
    .await;
    assert!(
        !other.ok
            && other.stderr.contains("checkpoint refused")
            && other.stderr.contains("signature"),
        "{}",
        other.stderr
    );
    let not_json = dir.join("not.json");
    std::fs::write(&not_json, "{\"position\": 1").unwrap_or_else(|e| panic!("{e}"));
    let unreadable = keyed(
        &app,
        &dir,
        &["verify", "--against", not_json.to_str().unwrap_or_default()],
    )
    .await;
    assert!(
        !unreadable.ok && unreadable.stderr.contains("is not a checkpoint"),
        "{}",
        unreadable.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}
