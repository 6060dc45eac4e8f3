//! The analysts' routes over HTTP: what staff just booked is in the
//! schedule, availability, dashboard and reports (read through the
//! consistency token); roles, CSV, bad input and a lagging projection.

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{app, App, ClinicIds};

const DAY: &str = "2030-01-08";

async fn book_laser(app: &App, ids: &ClinicIds, resource: &str, start: &str) -> Value {
    let body = json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic, "resource_id": resource,
                      "treatment_id": ids.laser_treatment, "start": start,
                      "payment": {"method": "at_clinic"}});
    let answer = app.post("/v1/reservations", &app.staff, body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    answer.body
}

async fn ok(app: &App, path: &str, token: &str) -> Value {
    let answer = app.get(path, token).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
    answer.body
}

#[tokio::test]
async fn what_staff_just_booked_is_in_every_read_model_at_once() {
    let app = app().await;
    let ids = app.clinic().await;
    // 10:00 Berlin on a Tuesday; the laser treatment is 45 min + 15 buffer.
    let booked = book_laser(&app, &ids, &ids.laser, "2030-01-08T09:00:00Z").await;
    let reservation = booked["reservation_id"].clone();
    let clinic = &ids.clinic;

    let schedule = ok(
        &app,
        &format!("/v1/clinics/{clinic}/schedule?date={DAY}"),
        &app.analyst,
    )
    .await;
    assert_eq!(schedule["clinic_id"], json!(clinic));
    let laser = schedule["resources"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["resource_id"] == json!(ids.laser)))
        .cloned()
        .unwrap_or_else(|| panic!("no laser in {schedule}"));
    assert_eq!(laser["bookings"][0]["reservation_id"], reservation);
    assert_eq!(laser["bookings"][0]["start"], "2030-01-08T09:00:00Z");
    assert_eq!(laser["bookings"][0]["end"], "2030-01-08T09:45:00Z");
    assert_eq!(laser["bookings"][0]["status"], "booked");
    // Staff may read the schedule too.
    ok(
        &app,
        &format!("/v1/clinics/{clinic}/schedule?date={DAY}"),
        &app.staff,
    )
    .await;

    let availability = ok(
        &app,
        &format!(
            "/v1/clinics/{clinic}/availability?treatment_id={}&date={DAY}",
            ids.laser_treatment
        ),
        &app.staff,
    )
    .await;
    let starts = |resource: &str| -> Vec<String> {
        availability["slots"]
            .as_array()
            .map(|slots| {
                slots
                    .iter()
                    .filter(|s| s["resource_id"] == json!(resource))
                    .filter_map(|s| s["start"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (laser_a, laser_b) = (starts(&ids.laser), starts(&ids.laser_b));
    assert!(
        laser_b.contains(&"2030-01-08T09:00:00Z".to_owned()),
        "{laser_b:?}"
    );
    for taken in [
        "2030-01-08T08:30:00Z",
        "2030-01-08T09:00:00Z",
        "2030-01-08T09:45:00Z",
    ] {
        assert!(
            !laser_a.contains(&taken.to_owned()),
            "{taken} offered: {laser_a:?}"
        );
    }
    assert!(
        laser_a.contains(&"2030-01-08T10:00:00Z".to_owned()),
        "{laser_a:?}"
    );
    assert!(
        starts(&ids.room).is_empty(),
        "a room cannot take a laser treatment"
    );

    let dashboard = ok(
        &app,
        &format!("/v1/clinics/{clinic}/dashboard?date={DAY}"),
        &app.analyst,
    )
    .await;
    assert_eq!(dashboard["counts"]["booked"], 1);
    assert_eq!(dashboard["revenue_cents"], 12_000);

    let revenue = ok(
        &app,
        &format!("/v1/reports/revenue?from={DAY}&to={DAY}&group_by=clinic"),
        &app.analyst,
    )
    .await;
    assert_eq!(revenue["rows"][0]["group"], json!(clinic));
    assert_eq!(revenue["rows"][0]["gross_cents"], 12_000);
    assert_eq!(revenue["rows"][0]["net_cents"], 12_000);

    let report = ok(
        &app,
        &format!("/v1/reports/reservations?from={DAY}&to={DAY}"),
        &app.analyst,
    )
    .await;
    assert_eq!(report["rows"][0]["booked"], 1);

    let utilization = ok(
        &app,
        &format!("/v1/reports/utilization?from={DAY}&to={DAY}&clinic_id={clinic}"),
        &app.analyst,
    )
    .await;
    let laser_day = utilization["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["resource_id"] == json!(ids.laser)))
        .cloned()
        .unwrap_or_else(|| panic!("no laser row in {utilization}"));
    assert_eq!(laser_day["open_minutes"], 540);
    assert_eq!(laser_day["booked_minutes"], 45);

    // The same report as CSV.
    let csv = app
        .client
        .get(format!(
            "{}/v1/reports/revenue?from={DAY}&to={DAY}&group_by=clinic&min_position={}",
            app.base, booked["position"]
        ))
        .bearer_auth(&app.analyst)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv")));
    let text = csv.text().await.unwrap_or_default();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .is_some_and(|header| header.contains("gross_cents")),
        "{text}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|row| row.contains(clinic) && row.contains("12000")),
        "{text}"
    );
}

#[tokio::test]
async fn analysts_routes_check_roles_and_input() {
    let app = app().await;
    let ids = app.clinic().await;
    let clinic = &ids.clinic;
    let range = format!("from={DAY}&to={DAY}");
    // Reports and the dashboard are for analysts (and admins) only.
    for path in [
        format!("/v1/reports/revenue?{range}"),
        format!("/v1/reports/reservations?{range}"),
        format!("/v1/reports/packages?{range}"),
        format!("/v1/reports/utilization?{range}"),
        "/v1/reports/promo-codes".to_owned(),
        format!("/v1/clinics/{clinic}/dashboard?date={DAY}"),
    ] {
        app.get(&path, &app.staff)
            .await
            .assert_problem(403, "forbidden");
        app.get(&path, &app.auditor)
            .await
            .assert_problem(403, "forbidden");
        let answer = app.send(reqwest::Method::GET, &path, None, None).await;
        answer.assert_problem(401, "unauthorized");
        ok(&app, &path, &app.analyst).await;
        ok(&app, &path, &app.admin).await;
    }
    app.get(
        &format!("/v1/clinics/{clinic}/schedule?date={DAY}"),
        &app.auditor,
    )
    .await
    .assert_problem(403, "forbidden");

    // Bad input is a 400 naming what is wrong; unknown ids are 404.
    let bad = [
        format!("/v1/clinics/{clinic}/schedule?date=2030-13-01"),
        format!("/v1/clinics/{clinic}/schedule"),
        format!("/v1/clinics/{clinic}/schedule?date={DAY}&colour=red"),
        format!("/v1/clinics/{clinic}/availability?date={DAY}&treatment_id=nope"),
        format!("/v1/reports/revenue?{range}&group_by=week"),
        format!("/v1/reports/reservations?{range}&clinic_id=42"),
        format!("/v1/clinics/{clinic}/schedule?date={DAY}&min_position=-1"),
    ];
    for path in bad {
        let answer = app.get(&path, &app.analyst).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{path}: {:?}",
            answer.body
        );
        assert!(answer.content_type.starts_with("application/problem+json"));
    }
    // Dates each valid alone that disagree: a range ending before it
    // starts, or longer than a report spans.
    for path in [
        "/v1/reports/revenue?from=2030-01-09&to=2030-01-08",
        "/v1/reports/utilization?from=2030-01-01&to=2032-01-01",
    ] {
        app.get(path, &app.analyst)
            .await
            .assert_problem(422, "inconsistent_input");
    }
    let nobody = Uuid::new_v4();
    app.get(
        &format!("/v1/clinics/{nobody}/schedule?date={DAY}"),
        &app.analyst,
    )
    .await
    .assert_problem(404, "not_found");
    app.get(
        &format!("/v1/reports/revenue?{range}&clinic_id={nobody}"),
        &app.analyst,
    )
    .await
    .assert_problem(404, "not_found");
}

#[tokio::test]
async fn a_read_asking_for_a_position_not_reached_answers_503_after_waiting() {
    let mut app = app().await;
    let ids = app.clinic().await;
    // Stop the read side (and wait until it has stopped): what is written
    // from now on is never projected.
    if let Some(background) = app.background.take() {
        background.shutdown().await;
    }
    app.post(
        "/v1/clinics",
        &app.admin,
        serde_json::json!({"name": "Unprojected", "timezone": "Europe/Berlin", "currency": "EUR"}),
    )
    .await;
    let head = app.events().await;
    let started = std::time::Instant::now();
    let answer = app
        .get(
            &format!(
                "/v1/clinics/{}/schedule?date={DAY}&min_position={head}",
                ids.clinic
            ),
            &app.analyst,
        )
        .await;
    answer.assert_problem(503, "projection_lagging");
    assert!(started.elapsed() >= std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn a_read_asking_for_a_position_no_event_has_answers_422_at_once() {
    // No answer ever carried such a position, so waiting cannot help.
    let app = app().await;
    let ids = app.clinic().await;
    let head = app.events().await;
    let answer = app
        .get(
            &format!(
                "/v1/clinics/{}/schedule?date={DAY}&min_position={}",
                ids.clinic,
                head + 1_000
            ),
            &app.analyst,
        )
        .await;
    answer.assert_problem(422, "unknown_position");
}

/// Availability is answered from a cache the projector keeps fresh: each
/// booking, hold, cancellation and release shows in the next read that
/// asks for its position, right after the projector applied it, while
/// the other laser's starts stay as they were.
#[tokio::test]
async fn availability_after_each_write_is_never_a_stale_cached_answer() {
    let app = app().await;
    let ids = app.clinic().await;
    let path = format!(
        "/v1/clinics/{}/availability?treatment_id={}&date={DAY}",
        ids.clinic, ids.laser_treatment
    );
    let starts = |answer: &Value, resource: &str| -> Vec<String> {
        answer["slots"]
            .as_array()
            .map(|slots| {
                slots
                    .iter()
                    .filter(|s| s["resource_id"] == json!(resource))
                    .filter_map(|s| s["start"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = ok(&app, &path, &app.staff).await;
    let all_day = starts(&first, &ids.laser);
    let nine = "2030-01-08T09:00:00Z".to_owned();
    let one = "2030-01-08T13:00:00Z".to_owned();
    assert!(
        all_day.contains(&nine) && all_day.contains(&one),
        "{all_day:?}"
    );
    // Asked again, the same answer (from the cache).
    assert_eq!(ok(&app, &path, &app.staff).await, first);

    let booked = book_laser(&app, &ids, &ids.laser, &nine).await;
    let now = ok(&app, &path, &app.staff).await;
    assert!(!starts(&now, &ids.laser).contains(&nine), "booked: {now}");
    assert_eq!(starts(&now, &ids.laser_b), starts(&first, &ids.laser_b));

    let held = app
        .post(
            "/v1/holds",
            &app.staff,
            json!({"patient_id": Uuid::new_v4(), "clinic_id": ids.clinic, "resource_id": ids.laser,
                   "treatment_id": ids.laser_treatment, "start": one}),
        )
        .await;
    assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    let now = ok(&app, &path, &app.staff).await;
    let laser = starts(&now, &ids.laser);
    assert!(
        !laser.contains(&one) && !laser.contains(&nine),
        "held: {now}"
    );

    let cancelled = app
        .post(
            &format!(
                "/v1/reservations/{}/cancel",
                booked["reservation_id"].as_str().unwrap_or_default()
            ),
            &app.staff,
            json!({"reason": "patient called"}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    let now = ok(&app, &path, &app.staff).await;
    let laser = starts(&now, &ids.laser);
    assert!(
        laser.contains(&nine) && !laser.contains(&one),
        "cancelled: {now}"
    );

    let released = app
        .post(
            &format!(
                "/v1/holds/{}/release",
                held.body["hold_id"].as_str().unwrap_or_default()
            ),
            &app.staff,
            json!({}),
        )
        .await;
    assert_eq!(released.status, StatusCode::OK, "{:?}", released.body);
    let now = ok(&app, &path, &app.staff).await;
    assert_eq!(starts(&now, &ids.laser), all_day, "released: {now}");
}

/// The largest counts the API takes (`u32::MAX` sessions, redemptions and
/// per-patient limit) reach the reports: the read model's columns hold
/// them, so such a program or code never stops the reports projection.
#[tokio::test]
async fn the_largest_counts_the_api_takes_reach_the_reports() {
    let app = app().await;
    let ids = app.clinic().await;
    let program = app
        .post(
            "/v1/programs",
            &app.admin,
            json!({"name": "Endless", "treatment_id": ids.laser_treatment, "sessions": u32::MAX,
                   "price_cents": 60_000, "validity_days": 365, "clinic_ids": [ids.clinic]}),
        )
        .await;
    assert_eq!(program.status, StatusCode::CREATED, "{:?}", program.body);
    let promo = app
        .post(
            "/v1/promo-codes",
            &app.admin,
            json!({"code": "huge", "percent_off": 10, "valid_from": "2026-01-01T00:00:00Z",
                   "valid_until": "2040-01-01T00:00:00Z", "max_redemptions": u32::MAX - 1,
                   "per_patient_limit": u32::MAX}),
        )
        .await;
    assert_eq!(promo.status, StatusCode::CREATED, "{:?}", promo.body);
    let position = promo.body["position"].as_i64().unwrap_or(0);
    let report = ok(
        &app,
        &format!("/v1/reports/promo-codes?min_position={position}"),
        &app.analyst,
    )
    .await;
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    let huge: Vec<&Value> = rows.iter().filter(|r| r["code"] == "HUGE").collect();
    assert_eq!(huge.len(), 1, "{report}");
    assert_eq!(
        huge[0]["max_redemptions"].as_i64(),
        Some(i64::from(u32::MAX - 1))
    );
}
