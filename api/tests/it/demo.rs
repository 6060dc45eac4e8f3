//! The demo loader (`clinicbook demo`) against a real server: the data set
//! as the API shows it afterwards, a second run that writes nothing, a run
//! cut short and resumed, a server that rate-limits, a token it refuses,
//! and no server at all.

use std::collections::HashSet;
use std::time::Duration;

use clinicbook_api::Limits;
use clinicbook_commands::Clock;
use clinicbook_demo::{self as demo, DemoError, DemoOptions, DemoSummary};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{app, app_with, App};

/// A small data set, so the test stays fast.
fn small() -> DemoOptions {
    DemoOptions {
        patients: 30,
        days: 5,
        ..DemoOptions::default()
    }
}

/// Loads the demo through the API; later reads wait for what it wrote.
async fn load(app: &App, options: &DemoOptions) -> DemoSummary {
    let summary = demo::load(&app.base, &app.admin, &app.staff, options)
        .await
        .unwrap_or_else(|e| panic!("demo load failed: {e}"));
    app.read_own_writes().await;
    summary
}

#[tokio::test]
async fn the_demo_loads_a_chain_with_every_status_and_a_second_run_writes_nothing() {
    let app = app().await;
    let summary = load(&app, &small()).await;
    assert!(!summary.already_loaded);

    assert_clinics(&app, &summary).await;
    assert_wallets(&app, &summary).await;
    assert_statuses(&app, &summary).await;
    assert_moves_and_displacements(&app, &summary).await;
    assert_offer(&app, &summary).await;

    let events = app.events().await;
    let again = load(&app, &small()).await;
    assert!(again.already_loaded);
    assert_eq!(again.clinics, summary.clinics);
    assert_eq!(app.events().await, events, "a second run wrote events");
    assert!(again.sample.reservation_id.is_some());
    // The second run finds the offer again, for its curl command.
    let (first, second) = (summary.offer.as_ref(), again.offer.as_ref());
    assert_eq!(
        second.and_then(|o| o.hold_id),
        first.and_then(|o| o.hold_id)
    );
    assert!(demo::curl_commands(&again, "t").contains(&format!(
        "/v1/reservations/{}",
        second.and_then(|o| o.offered_to).unwrap_or_default()
    )));
}

/// A branch in `waitlist_mode: offer` holds the cancelled slot for the
/// first waitlisted reservation: its view shows the offer, the hold is an
/// offer for it, the schedule and the dashboard count it as held, and the
/// second in line has none.
async fn assert_offer(app: &App, summary: &DemoSummary) {
    let offer = summary
        .offer
        .as_ref()
        .unwrap_or_else(|| panic!("no waitlist offer: {summary:?}"));
    assert_eq!(offer.clinic, "Potsdam");
    assert_eq!(offer.waitlisted.len(), 2, "{offer:?}");
    assert_eq!(offer.offered_to, Some(offer.waitlisted[0]), "{offer:?}");
    let hold_id = offer
        .hold_id
        .unwrap_or_else(|| panic!("no hold: {offer:?}"));
    let view = app
        .get(
            &format!("/v1/reservations/{}", offer.waitlisted[0]),
            &app.staff,
        )
        .await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    assert_eq!(view.body["status"], "waitlisted");
    assert_eq!(
        view.body["offer"]["hold_id"],
        hold_id.to_string(),
        "{:?}",
        view.body
    );
    assert!(
        view.body["offer"]["expires_at"].is_string(),
        "{:?}",
        view.body
    );
    let next = app
        .get(
            &format!("/v1/reservations/{}", offer.waitlisted[1]),
            &app.staff,
        )
        .await;
    assert_eq!(next.body["status"], "waitlisted");
    assert!(next.body["offer"].is_null(), "{:?}", next.body);
    let hold = app.get(&format!("/v1/holds/{hold_id}"), &app.staff).await;
    assert_eq!(hold.status, StatusCode::OK, "{:?}", hold.body);
    assert_eq!(hold.body["status"], "held");
    assert_eq!(hold.body["offer_for"], offer.waitlisted[0].to_string());
    assert_eq!(hold.body["clinic_id"], offer.clinic_id.to_string());
    let cancelled = offer.cancelled.unwrap_or_else(|| panic!("{offer:?}"));
    let freed = app
        .get(&format!("/v1/reservations/{cancelled}"), &app.staff)
        .await;
    assert_eq!(freed.body["status"], "cancelled", "{:?}", freed.body);
    assert_eq!(freed.body["start"], hold.body["start"]);
    let date = hold.body["start"]
        .as_str()
        .and_then(|s| s.get(..10))
        .unwrap_or_default();
    let schedule = app
        .get(
            &format!("/v1/clinics/{}/schedule?date={date}", offer.clinic_id),
            &app.staff,
        )
        .await;
    let holds: Vec<&Value> = schedule.body["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["holds"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(holds.len(), 1, "{:?}", schedule.body);
    assert_eq!(holds[0]["hold_id"], hold_id.to_string());
    let dashboard = app
        .get(
            &format!("/v1/clinics/{}/dashboard?date={date}", offer.clinic_id),
            &app.analyst,
        )
        .await;
    assert_eq!(dashboard.body["counts"]["held"], 1, "{:?}", dashboard.body);
    assert!(demo::curl_commands(summary, "t")
        .contains(&format!("/v1/reservations/{}", offer.waitlisted[0])));
}

async fn assert_clinics(app: &App, summary: &DemoSummary) {
    assert_eq!(summary.clinics.len(), 3);
    let names: Vec<&str> = summary.clinics.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Berlin Mitte", "Berlin Charlottenburg", "Potsdam"]);
    let mut treatments = None;
    for clinic in &summary.clinics {
        let view = app
            .get(&format!("/v1/clinics/{}", clinic.id), &app.staff)
            .await;
        assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
        assert_eq!(view.body["name"], clinic.name.as_str());
        assert_eq!(view.body["timezone"], "Europe/Berlin");
        assert_eq!(view.body["opening_hours"]["sat"][0][0], "10:00");
        assert_eq!(view.body["resources"].as_array().map(Vec::len), Some(6));
        let ids: Vec<Value> = view.body["treatments"]
            .as_array()
            .map(|ts| ts.iter().map(|t| t["treatment_id"].clone()).collect())
            .unwrap_or_default();
        assert_eq!(ids.len(), 4);
        // The same treatment ids at every branch.
        assert_eq!(treatments.get_or_insert_with(|| ids.clone()), &ids);
    }
}

/// Every wallet's balance is what its transactions add up to, never
/// negative; the funded ones are those the summary counts.
async fn assert_wallets(app: &App, summary: &DemoSummary) {
    let (mut funded, mut paid_from) = (0, 0);
    for patient in &summary.patient_ids {
        let wallet = app.get(&format!("/v1/wallets/{patient}"), &app.staff).await;
        assert_eq!(wallet.status, StatusCode::OK, "{:?}", wallet.body);
        let transactions = wallet.body["transactions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let kinds: Vec<&str> = transactions
            .iter()
            .map(|t| t["kind"].as_str().unwrap_or_default())
            .collect();
        // Amounts are signed: money in is positive, money out negative.
        for t in &transactions {
            let amount = t["amount_cents"].as_i64().unwrap_or_default();
            let incoming = matches!(t["kind"].as_str(), Some("deposit" | "credit"));
            assert_eq!(amount > 0, incoming, "{patient}: {t}");
        }
        let sum: i64 = transactions
            .iter()
            .map(|t| t["amount_cents"].as_i64().unwrap_or_default())
            .sum();
        let balance = wallet.body["balance_cents"].as_i64().unwrap_or(-1);
        assert_eq!(balance, sum, "{patient}: {:?}", wallet.body);
        assert!(balance >= 0);
        funded += usize::from(kinds.contains(&"deposit"));
        paid_from += usize::from(kinds.contains(&"debit"));
    }
    assert_eq!(funded, summary.funded_wallets);
    assert!(funded > summary.patient_ids.len() / 2, "{funded}");
    assert!(paid_from > 0);
}

/// Reservations in every status, each as the API says.
async fn assert_statuses(app: &App, summary: &DemoSummary) {
    for status in [
        "booked",
        "checked_in",
        "completed",
        "cancelled",
        "no_show",
        "displaced",
        "waitlisted",
    ] {
        let ids = summary
            .reservations
            .get(status)
            .cloned()
            .unwrap_or_default();
        assert!(
            !ids.is_empty(),
            "no reservation is {status}: {:?}",
            summary.reservations
        );
        for id in ids {
            let view = app.get(&format!("/v1/reservations/{id}"), &app.staff).await;
            assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
            assert_eq!(view.body["status"], status, "{id}: {:?}", view.body);
        }
    }
    let counted: usize = summary
        .reservations
        .iter()
        .filter(|(status, _)| status.as_str() != "waitlisted")
        .map(|(_, ids)| ids.len())
        .sum();
    assert_eq!(counted, summary.bookings());
    assert!(summary.bookings() >= 40, "{}", summary.bookings());
}

/// Moved reservations show the move in their history; the block and the
/// closure displaced exactly the reservations the summary calls displaced.
async fn assert_moves_and_displacements(app: &App, summary: &DemoSummary) {
    assert!(!summary.rescheduled.is_empty());
    for id in &summary.rescheduled {
        let view = app.get(&format!("/v1/reservations/{id}"), &app.staff).await;
        let moved = view.body["history"].as_array().is_some_and(|h| {
            h.iter()
                .any(|e| e["event_type"] == "ReservationRescheduled")
        });
        assert!(moved, "{id}: {:?}", view.body);
    }
    let block = summary.block.as_ref().unwrap_or_else(|| panic!("no block"));
    let closure = summary
        .closure
        .as_ref()
        .unwrap_or_else(|| panic!("no closure"));
    assert!(!block.displaced.is_empty());
    assert!(!closure.displaced.is_empty());
    let displaced: HashSet<_> = block.displaced.iter().chain(&closure.displaced).collect();
    let listed: HashSet<_> = summary.reservations["displaced"].iter().collect();
    assert_eq!(displaced, listed);
    let view = app
        .get(&format!("/v1/clinics/{}", closure.clinic_id), &app.staff)
        .await;
    assert_eq!(
        view.body["closures"][0]["closure_id"],
        closure.closure_id.to_string()
    );
}

#[tokio::test]
async fn a_load_cut_short_is_completed_by_the_next_run() {
    let app = app().await;
    let cut = tokio::time::timeout(
        Duration::from_millis(250),
        demo::load(&app.base, &app.admin, &app.staff, &small()),
    )
    .await;
    let summary = load(&app, &small()).await;
    if cut.is_err() {
        // The first run was stopped half-way: the second one resumed it.
        assert!(!summary.already_loaded);
        assert_statuses(&app, &summary).await;
        assert_moves_and_displacements(&app, &summary).await;
    }
    assert!(load(&app, &small()).await.already_loaded);
}

#[tokio::test]
async fn the_demo_waits_out_the_rate_limit() {
    let limits = Limits {
        rate_per_second: 40,
        burst: 5,
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let app = app_with(limits, Clock::system()).await;
    let options = DemoOptions {
        patients: 10,
        days: 3,
        ..DemoOptions::default()
    };
    let summary = load(&app, &options).await;
    assert!(summary.rate_limited > 0, "{summary:?}");
    assert!(summary.bookings() > 0);
}

#[tokio::test]
async fn without_a_server_the_demo_says_how_to_start_one() {
    let error = demo::load("http://127.0.0.1:1", "a", "b", &small())
        .await
        .err()
        .unwrap_or_else(|| panic!("loaded without a server"));
    assert!(matches!(error, DemoError::Unreachable { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "no clinicbook server at http://127.0.0.1:1; start it with `clinicbook serve`"
    );
}

#[tokio::test]
async fn a_token_the_server_does_not_accept_is_explained() {
    let app = app().await;
    let error = demo::load(&app.base, "forged", "forged", &small())
        .await
        .err()
        .unwrap_or_else(|| panic!("loaded with a forged token"));
    assert!(matches!(error, DemoError::Unauthorized { .. }), "{error:?}");
    assert!(
        error.to_string().contains("CLINICBOOK_JWT_SECRET"),
        "{error}"
    );
}
