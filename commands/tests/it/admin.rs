//! Tests of the admin use cases: each success path checked against the
//! stored aggregate, and each refusal with its code (and field).

// Helpers outside #[test] fns unwrap too: a broken fixture should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use clinicbook_commands::admin::{
    AddResource, AddTreatment, CreateProgram, CreatePromoCode, LastMinuteInput, OpeningHoursInput,
    PricingRuleInput, PricingRulesInput, RegisterClinic, ResourceView,
};
use clinicbook_commands::{CommandError, Commands, Ctx};
use clinicbook_domain::clinic::{Clinic, ResourceKind};
use clinicbook_domain::pricing::Discount;
use clinicbook_domain::program::Program;
use clinicbook_domain::promo::PromoCode;
use clinicbook_domain::schedule::{Interval, TimeRange};
use clinicbook_domain::{DomainError, Money, TreatmentId};
use clinicbook_eventstore::IdempotencyKey;
use uuid::Uuid;

use crate::common::{assert_code, clinic, commands, ctx, read_clinic, read_program, Fixture};

fn admin() -> Ctx {
    ctx("admin")
}

fn register(name: &str) -> RegisterClinic {
    RegisterClinic {
        clinic_id: None,
        name: name.to_string(),
        timezone: "Europe/Berlin".to_string(),
        currency: "EUR".to_string(),
        cancellation_notice_hours: None,
        late_cancel_fee_percent: None,
    }
}

fn range(from: &str, to: &str) -> [String; 2] {
    [from.to_string(), to.to_string()]
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Asserts a refusal with `inconsistent_input` naming `field`: values each
/// well-formed that disagree with each other.
fn assert_inconsistent<T: std::fmt::Debug>(result: Result<T, CommandError>, field: &str) {
    match result {
        Err(CommandError::Domain(DomainError::InconsistentInput { field: f, reason })) => {
            assert_eq!(f, field, "{reason}")
        }
        other => panic!("expected inconsistent_input on {field}, got {other:?}"),
    }
}

/// Asserts a refusal with `invalid_input` naming `field`.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, CommandError>, field: &str) {
    match result {
        Err(CommandError::Domain(DomainError::InvalidInput { field: f, reason })) => {
            assert_eq!(f, field, "{reason}")
        }
        other => panic!("expected invalid_input on {field}, got {other:?}"),
    }
}

/// Asserts a refusal with `not_found` for `what`.
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, CommandError>, what: &str) {
    match result {
        Err(CommandError::Domain(DomainError::NotFound { what: w })) => assert_eq!(w, what),
        other => panic!("expected not_found {what}, got {other:?}"),
    }
}

fn assert_read_not_found<T: std::fmt::Debug>(
    result: Result<T, clinicbook_projections::ProjectionError>,
    what: &str,
) {
    match result {
        Err(clinicbook_projections::ProjectionError::NotFound(w)) => assert_eq!(w, what),
        other => panic!("expected not_found {what}, got {other:?}"),
    }
}

async fn stored_clinic(commands: &Commands, clinic_id: Uuid) -> Clinic {
    commands
        .store()
        .aggregate::<Clinic>(&clinic_id.to_string())
        .await
        .unwrap()
        .0
}

// --- register_clinic ------------------------------------------------------

#[tokio::test]
async fn register_clinic_with_the_default_policy() {
    let (commands, _clock, _db) = commands().await;
    let mut input = register("  Hamburg Altona ");
    input.timezone = "America/New_York".to_string();
    input.currency = "USD".to_string();

    let done = commands.register_clinic(&admin(), input).await.unwrap();

    assert!(done.position.is_some() && !done.replayed);
    let clinic_id = done.output.clinic_id;
    let stored = stored_clinic(&commands, clinic_id).await;
    assert_eq!(stored.clinic_id.map(|c| c.0), Some(clinic_id));
    assert_eq!(stored.timezone, Some(chrono_tz::America::New_York));
    assert_eq!(
        (stored.policy.notice_hours, stored.policy.late_fee_percent),
        (24, 50)
    );
    let view = read_clinic(&commands, clinic_id).await.unwrap();
    assert_eq!(view.name, "Hamburg Altona");
    assert_eq!(view.timezone, "America/New_York");
    assert_eq!(view.currency, "USD");
    assert_eq!(
        (view.cancellation_notice_hours, view.late_cancel_fee_percent),
        (24, 50)
    );
    assert_eq!(
        view.opening_hours,
        OpeningHoursInput::default(),
        "closed until set"
    );
    assert!(view.resources.is_empty() && view.treatments.is_empty() && view.closures.is_empty());
    assert_eq!(view.pricing_rules, PricingRulesInput::default());
}

#[tokio::test]
async fn register_clinic_with_a_chosen_id_and_policy_once() {
    let (commands, _clock, _db) = commands().await;
    let clinic_id = Uuid::new_v4();
    let input = RegisterClinic {
        clinic_id: Some(clinic_id),
        cancellation_notice_hours: Some(48),
        late_cancel_fee_percent: Some(0),
        ..register("Munich")
    };

    let done = commands
        .register_clinic(&admin(), input.clone())
        .await
        .unwrap();
    assert_eq!(done.output.clinic_id, clinic_id);
    let view = read_clinic(&commands, clinic_id).await.unwrap();
    assert_eq!(
        (view.cancellation_notice_hours, view.late_cancel_fee_percent),
        (48, 0)
    );

    let again = commands.register_clinic(&admin(), input).await;
    assert_code(again, "already_exists");
}

#[tokio::test]
async fn register_clinic_refuses_malformed_fields_and_writes_nothing() {
    let (commands, _clock, _db) = commands().await;
    let cases: Vec<(RegisterClinic, &str)> = vec![
        (register(" "), "name"),
        (
            RegisterClinic {
                timezone: "Europe/Atlantis".to_string(),
                ..register("A")
            },
            "timezone",
        ),
        (
            RegisterClinic {
                currency: "euro".to_string(),
                ..register("B")
            },
            "currency",
        ),
        (
            RegisterClinic {
                late_cancel_fee_percent: Some(101),
                ..register("C")
            },
            "late_cancel_fee_percent",
        ),
    ];
    for (input, field) in cases {
        let clinic_id = Uuid::new_v4();
        let input = RegisterClinic {
            clinic_id: Some(clinic_id),
            ..input
        };
        assert_invalid(commands.register_clinic(&admin(), input).await, field);
        assert_read_not_found(
            read_clinic(&commands, clinic_id).await,
            &format!("clinic {clinic_id}"),
        );
    }
}

#[tokio::test]
async fn a_retried_registration_replays_the_server_chosen_id() {
    let (commands, _clock, _db) = commands().await;
    let body = br#"{"name":"Cologne","timezone":"Europe/Berlin","currency":"EUR"}"#;
    let input: RegisterClinic = serde_json::from_slice(body).unwrap();
    let mut with_key = admin();
    with_key.idempotency = Some(IdempotencyKey::new("POST /v1/clinics", "k-1", body));

    let first = commands
        .register_clinic(&with_key, input.clone())
        .await
        .unwrap();
    let second = commands.register_clinic(&with_key, input).await.unwrap();

    assert_eq!(second.output, first.output);
    assert_eq!(second.position, first.position);
    assert!(second.replayed);
}

// --- set_opening_hours ----------------------------------------------------

#[tokio::test]
async fn set_opening_hours_replaces_the_week() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let hours: OpeningHoursInput = serde_json::from_value(serde_json::json!({
        "mon": [["09:00", "13:00"], ["14:00", "19:00"]],
        "sat": [["10:00", "23:59"]],
    }))
    .unwrap();

    let done = commands
        .set_opening_hours(&admin(), f.clinic_id.0, hours.clone())
        .await
        .unwrap();

    assert_eq!(done.output.clinic_id, f.clinic_id.0);
    let stored = stored_clinic(&commands, f.clinic_id.0).await;
    assert_eq!(
        stored.opening_hours.days[0],
        vec![
            TimeRange {
                from: hm(9, 0),
                to: hm(13, 0)
            },
            TimeRange {
                from: hm(14, 0),
                to: hm(19, 0)
            },
        ]
    );
    assert!(
        stored.opening_hours.days[1].is_empty(),
        "tuesday was left out: closed"
    );
    // Monday 2030-01-07 in Berlin is UTC+1.
    let monday = NaiveDate::from_ymd_opt(2030, 1, 7).unwrap();
    let at = |h| Utc.with_ymd_and_hms(2030, 1, 7, h, 0, 0).unwrap();
    assert_eq!(
        stored.opening_intervals(monday),
        vec![
            Interval::new(at(8), at(12)).unwrap(),
            Interval::new(at(13), at(18)).unwrap(),
        ]
    );
    // What is read back can be sent again.
    assert_eq!(
        read_clinic(&commands, f.clinic_id.0)
            .await
            .unwrap()
            .opening_hours,
        hours
    );
}

#[tokio::test]
async fn set_opening_hours_names_the_malformed_time() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    for bad in ["24:00", "25:00", "9:00", "09:60", "09h00", ""] {
        let hours = OpeningHoursInput {
            tue: vec![range("08:00", "10:00"), range("11:00", bad)],
            ..OpeningHoursInput::default()
        };
        let result = commands
            .set_opening_hours(&admin(), f.clinic_id.0, hours)
            .await;
        assert_invalid(result, "tue[1][1]");
    }
    let hours = OpeningHoursInput {
        sun: vec![range("7:00", "10:00")],
        ..OpeningHoursInput::default()
    };
    let result = commands
        .set_opening_hours(&admin(), f.clinic_id.0, hours)
        .await;
    assert_invalid(result, "sun[0][0]");
    // Nothing changed.
    let stored = stored_clinic(&commands, f.clinic_id.0).await;
    assert_eq!(
        stored.opening_hours.days[1],
        vec![TimeRange {
            from: hm(9, 0),
            to: hm(18, 0)
        }]
    );
}

#[tokio::test]
async fn set_opening_hours_refuses_reversed_or_overlapping_ranges() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    for ranges in [
        vec![range("13:00", "09:00")],
        vec![range("09:00", "13:00"), range("12:00", "18:00")],
        vec![range("14:00", "18:00"), range("09:00", "12:00")],
    ] {
        let hours = OpeningHoursInput {
            wed: ranges,
            ..OpeningHoursInput::default()
        };
        let result = commands
            .set_opening_hours(&admin(), f.clinic_id.0, hours)
            .await;
        assert_inconsistent(result, "opening_hours");
    }
}

#[tokio::test]
async fn set_opening_hours_of_an_unknown_clinic_is_not_found() {
    let (commands, _clock, _db) = commands().await;
    let unknown = Uuid::new_v4();
    let hours = OpeningHoursInput {
        mon: vec![range("09:00", "17:00")],
        ..OpeningHoursInput::default()
    };
    let result = commands.set_opening_hours(&admin(), unknown, hours).await;
    assert_not_found(result, &format!("clinic {unknown}"));
}

#[test]
fn opening_hours_refuse_unknown_days_and_accept_missing_ones() {
    let err = serde_json::from_str::<OpeningHoursInput>(r#"{"monday": []}"#).unwrap_err();
    assert!(err.to_string().contains("monday"), "{err}");
    let err = serde_json::from_str::<OpeningHoursInput>(r#"{"mon": [["09:00"]]}"#).unwrap_err();
    assert!(err.to_string().contains("length"), "{err}");
    let closed: OpeningHoursInput = serde_json::from_str("{}").unwrap();
    assert_eq!(closed, OpeningHoursInput::default());
}

// --- add_resource ---------------------------------------------------------

#[tokio::test]
async fn add_resource_with_a_server_or_client_chosen_id() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let chosen = Uuid::new_v4();

    let room = commands
        .add_resource(
            &admin(),
            f.clinic_id.0,
            AddResource {
                resource_id: None,
                name: "Room 2".to_string(),
                kind: "room".to_string(),
            },
        )
        .await
        .unwrap();
    let doctor = commands
        .add_resource(
            &admin(),
            f.clinic_id.0,
            AddResource {
                resource_id: Some(chosen),
                name: "Dr. Braun".to_string(),
                kind: "practitioner".to_string(),
            },
        )
        .await
        .unwrap();

    assert_eq!(doctor.output.resource_id, chosen);
    let stored = stored_clinic(&commands, f.clinic_id.0).await;
    let added = stored
        .resource(clinicbook_domain::ResourceId(room.output.resource_id))
        .unwrap();
    assert_eq!(
        (added.name.as_str(), added.kind),
        ("Room 2", ResourceKind::Room)
    );
    let view = read_clinic(&commands, f.clinic_id.0).await.unwrap();
    assert_eq!(view.resources.len(), 6);
    assert_eq!(
        view.resources.last(),
        Some(&ResourceView {
            resource_id: chosen,
            name: "Dr. Braun".to_string(),
            kind: "practitioner".to_string(),
        })
    );
}

#[tokio::test]
async fn add_resource_refusals() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let resource = |name: &str, kind: &str| AddResource {
        resource_id: None,
        name: name.to_string(),
        kind: kind.to_string(),
    };

    let taken = commands
        .add_resource(&admin(), f.clinic_id.0, resource("LASER a", "device"))
        .await;
    assert_code(taken, "duplicate_name");
    let kind = commands
        .add_resource(&admin(), f.clinic_id.0, resource("Laser C", "Device"))
        .await;
    assert_invalid(kind, "kind");
    let empty = commands
        .add_resource(&admin(), f.clinic_id.0, resource("  ", "device"))
        .await;
    assert_invalid(empty, "name");
    let reused = AddResource {
        resource_id: Some(f.laser.0),
        ..resource("Laser C", "device")
    };
    assert_code(
        commands.add_resource(&admin(), f.clinic_id.0, reused).await,
        "already_exists",
    );
    let unknown = Uuid::new_v4();
    let result = commands
        .add_resource(&admin(), unknown, resource("Room", "room"))
        .await;
    assert_not_found(result, &format!("clinic {unknown}"));

    assert_eq!(
        stored_clinic(&commands, f.clinic_id.0)
            .await
            .resources
            .len(),
        4
    );
}

// --- add_treatment --------------------------------------------------------

fn peel() -> AddTreatment {
    AddTreatment {
        treatment_id: None,
        name: "Chemical peel".to_string(),
        duration_minutes: 60,
        buffer_minutes: 10,
        price_cents: 9_900,
        resource_kind: "room".to_string(),
    }
}

#[tokio::test]
async fn add_treatment_to_the_offer() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;

    let done = commands
        .add_treatment(&admin(), f.clinic_id.0, peel())
        .await
        .unwrap();

    let stored = stored_clinic(&commands, f.clinic_id.0).await;
    let treatment = stored
        .treatment(TreatmentId(done.output.treatment_id))
        .unwrap();
    assert_eq!(treatment.name, "Chemical peel");
    assert_eq!(
        (treatment.duration_minutes, treatment.buffer_minutes),
        (60, 10)
    );
    assert_eq!(treatment.price, Money(9_900));
    assert_eq!(treatment.resource_kind, ResourceKind::Room);
    let view = read_clinic(&commands, f.clinic_id.0).await.unwrap();
    let shown = view.treatments.last().unwrap();
    assert_eq!(
        (shown.price_cents, shown.resource_kind.as_str()),
        (9_900, "room")
    );
}

#[tokio::test]
async fn add_treatment_refusals() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let clinic_id = f.clinic_id.0;
    let cases: Vec<(AddTreatment, &str)> = vec![
        (
            AddTreatment {
                duration_minutes: 0,
                ..peel()
            },
            "duration_minutes",
        ),
        (
            AddTreatment {
                buffer_minutes: 241,
                ..peel()
            },
            "buffer_minutes",
        ),
        (
            AddTreatment {
                price_cents: -1,
                ..peel()
            },
            "price_cents",
        ),
        (
            AddTreatment {
                resource_kind: "laser".to_string(),
                ..peel()
            },
            "resource_kind",
        ),
        (
            AddTreatment {
                name: String::new(),
                ..peel()
            },
            "name",
        ),
    ];
    for (input, field) in cases {
        assert_invalid(
            commands.add_treatment(&admin(), clinic_id, input).await,
            field,
        );
    }
    let taken = AddTreatment {
        name: "consultation".to_string(),
        ..peel()
    };
    assert_code(
        commands.add_treatment(&admin(), clinic_id, taken).await,
        "duplicate_name",
    );
    let unknown = Uuid::new_v4();
    let result = commands.add_treatment(&admin(), unknown, peel()).await;
    assert_not_found(result, &format!("clinic {unknown}"));

    assert_eq!(
        stored_clinic(&commands, clinic_id).await.treatments.len(),
        2
    );
}

// --- set_pricing_rules ----------------------------------------------------

fn friday_peak() -> PricingRulesInput {
    PricingRulesInput {
        rules: vec![PricingRuleInput {
            weekdays: vec!["mon".to_string(), "fri".to_string()],
            from: "17:00".to_string(),
            to: "19:00".to_string(),
            percent: 20,
        }],
        last_minute: Some(LastMinuteInput {
            within_hours: 24,
            percent_off: 10,
        }),
    }
}

#[tokio::test]
async fn set_pricing_rules_changes_quotes() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;

    let done = commands
        .set_pricing_rules(&admin(), f.clinic_id.0, friday_peak())
        .await
        .unwrap();

    assert_eq!(done.output.clinic_id, f.clinic_id.0);
    let stored = stored_clinic(&commands, f.clinic_id.0).await;
    let laser = stored.treatment(f.laser_treatment).unwrap();
    // Friday 2030-01-11 17:30 in Berlin (16:30Z), booked a week ahead: +20 %.
    let peak = stored.quote(
        laser,
        utc("2030-01-11T16:30:00Z"),
        utc("2030-01-04T10:00:00Z"),
        None,
    );
    assert_eq!(peak.total, Money(14_400));
    // The same time booked an hour before: +20 % and -10 % last minute.
    let late = stored.quote(
        laser,
        utc("2030-01-11T16:30:00Z"),
        utc("2030-01-11T15:30:00Z"),
        None,
    );
    assert_eq!(late.total, Money(13_200));
    // Tuesday at 17:30: no rule.
    let tuesday = stored.quote(
        laser,
        utc("2030-01-08T16:30:00Z"),
        utc("2030-01-01T10:00:00Z"),
        None,
    );
    assert_eq!(tuesday.total, Money(12_000));
    assert_eq!(
        read_clinic(&commands, f.clinic_id.0)
            .await
            .unwrap()
            .pricing_rules,
        friday_peak()
    );

    // An empty body clears the rules.
    commands
        .set_pricing_rules(&admin(), f.clinic_id.0, PricingRulesInput::default())
        .await
        .unwrap();
    let stored = stored_clinic(&commands, f.clinic_id.0).await;
    assert!(stored.pricing.rules.is_empty() && stored.pricing.last_minute.is_none());
}

#[tokio::test]
async fn set_pricing_rules_names_the_bad_field() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let with = |change: fn(&mut PricingRulesInput)| {
        let mut input = friday_peak();
        change(&mut input);
        input
    };
    let cases = [
        (
            with(|i| i.rules[0].weekdays[1] = "friday".to_string()),
            "rules[0].weekdays[1]",
        ),
        (with(|i| i.rules[0].weekdays.clear()), "rules[0].weekdays"),
        (
            with(|i| i.rules[0].from = "5pm".to_string()),
            "rules[0].from",
        ),
        (with(|i| i.rules[0].to = "24:00".to_string()), "rules[0].to"),
        (with(|i| i.rules[0].percent = -101), "rules[0].percent"),
        (
            with(|i| {
                if let Some(l) = i.last_minute.as_mut() {
                    l.percent_off = 101;
                }
            }),
            "last_minute.percent_off",
        ),
    ];
    for (input, field) in cases {
        let result = commands
            .set_pricing_rules(&admin(), f.clinic_id.0, input)
            .await;
        assert_invalid(result, field);
    }
    // A window ending before it starts: each time is valid alone.
    let reversed = with(|i| i.rules[0].to = "16:00".to_string());
    assert_inconsistent(
        commands
            .set_pricing_rules(&admin(), f.clinic_id.0, reversed)
            .await,
        "rules[0].to",
    );
    let unknown = Uuid::new_v4();
    let result = commands
        .set_pricing_rules(&admin(), unknown, friday_peak())
        .await;
    assert_not_found(result, &format!("clinic {unknown}"));
    assert!(stored_clinic(&commands, f.clinic_id.0)
        .await
        .pricing
        .rules
        .is_empty());
}

// --- create_program -------------------------------------------------------

fn laser_program(f: &Fixture, clinic_ids: Vec<Uuid>) -> CreateProgram {
    CreateProgram {
        program_id: None,
        name: "Laser x6".to_string(),
        treatment_id: f.laser_treatment.0,
        sessions: 6,
        price_cents: 60_000,
        validity_days: 365,
        clinic_ids,
    }
}

/// A second branch offering the fixture's laser treatment under its id.
async fn second_branch(commands: &Commands, f: &Fixture) -> Uuid {
    let clinic_id = commands
        .register_clinic(&admin(), register("Berlin Kreuzberg"))
        .await
        .unwrap()
        .output
        .clinic_id;
    let laser = AddTreatment {
        treatment_id: Some(f.laser_treatment.0),
        name: "Laser hair removal".to_string(),
        duration_minutes: 45,
        buffer_minutes: 15,
        price_cents: 11_000,
        resource_kind: "device".to_string(),
    };
    commands
        .add_treatment(&admin(), clinic_id, laser)
        .await
        .unwrap();
    clinic_id
}

#[tokio::test]
async fn create_program_valid_at_two_branches() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let kreuzberg = second_branch(&commands, &f).await;

    let done = commands
        .create_program(&admin(), laser_program(&f, vec![f.clinic_id.0, kreuzberg]))
        .await
        .unwrap();

    let program_id = done.output.program_id;
    let (stored, sequence) = commands
        .store()
        .aggregate::<Program>(&program_id.to_string())
        .await
        .unwrap();
    assert_eq!(sequence, 1);
    assert_eq!(
        (stored.sessions, stored.price, stored.validity_days),
        (6, Money(60_000), 365)
    );
    let view = read_program(&commands, program_id).await.unwrap();
    assert_eq!(view.name, "Laser x6");
    assert_eq!(view.treatment_id, f.laser_treatment.0);
    assert_eq!(view.clinic_ids, vec![f.clinic_id.0, kreuzberg]);
    assert_eq!(view.price_cents, 60_000);
}

#[tokio::test]
async fn create_program_needs_every_clinic_to_offer_the_treatment() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let bare = commands
        .register_clinic(&admin(), register("Potsdam"))
        .await
        .unwrap()
        .output
        .clinic_id;
    let unknown = Uuid::new_v4();

    let lacking = commands
        .create_program(&admin(), laser_program(&f, vec![f.clinic_id.0, bare]))
        .await;
    assert_not_found(
        lacking,
        &format!("treatment {} at clinic {bare}", f.laser_treatment),
    );
    let missing = commands
        .create_program(&admin(), laser_program(&f, vec![unknown, f.clinic_id.0]))
        .await;
    assert_not_found(missing, &format!("clinic {unknown}"));
    let other_treatment = CreateProgram {
        treatment_id: Uuid::new_v4(),
        ..laser_program(&f, vec![f.clinic_id.0])
    };
    assert_code(
        commands.create_program(&admin(), other_treatment).await,
        "not_found",
    );
}

#[tokio::test]
async fn create_program_refusals_of_the_aggregate() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let here = || laser_program(&f, vec![f.clinic_id.0]);
    let cases: Vec<(CreateProgram, &str)> = vec![
        (
            CreateProgram {
                sessions: 0,
                ..here()
            },
            "sessions",
        ),
        (
            CreateProgram {
                price_cents: 0,
                ..here()
            },
            "price_cents",
        ),
        (
            CreateProgram {
                validity_days: 0,
                ..here()
            },
            "validity_days",
        ),
        (
            CreateProgram {
                name: " ".to_string(),
                ..here()
            },
            "name",
        ),
        (laser_program(&f, vec![]), "clinic_ids"),
        (
            laser_program(&f, vec![f.clinic_id.0, f.clinic_id.0]),
            "clinic_ids",
        ),
    ];
    for (input, field) in cases {
        assert_invalid(commands.create_program(&admin(), input).await, field);
    }
    let program_id = Uuid::new_v4();
    let chosen = CreateProgram {
        program_id: Some(program_id),
        ..here()
    };
    let done = commands
        .create_program(&admin(), chosen.clone())
        .await
        .unwrap();
    assert_eq!(done.output.program_id, program_id);
    assert_code(
        commands.create_program(&admin(), chosen).await,
        "already_exists",
    );
}

// --- promo codes ----------------------------------------------------------

fn summer(code: &str) -> CreatePromoCode {
    CreatePromoCode {
        code: code.to_string(),
        percent_off: Some(10),
        amount_off_cents: None,
        valid_from: utc("2030-06-01T00:00:00Z"),
        valid_until: utc("2030-09-01T00:00:00Z"),
        max_redemptions: 100,
        per_patient_limit: 1,
        treatment_ids: None,
    }
}

async fn stored_promo(commands: &Commands, code: &str) -> PromoCode {
    commands
        .store()
        .aggregate::<PromoCode>(code)
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn create_promo_code_normalises_the_code_and_keeps_instants_in_utc() {
    let (commands, _clock, _db) = commands().await;
    let input: CreatePromoCode = serde_json::from_value(serde_json::json!({
        "code": " summer-10 ",
        "percent_off": 10,
        "valid_from": "2030-06-01T00:00:00+02:00",
        "valid_until": "2030-09-01T00:00:00+02:00",
        "max_redemptions": 100,
        "per_patient_limit": 1,
    }))
    .unwrap();

    let done = commands.create_promo_code(&admin(), input).await.unwrap();

    assert_eq!(done.output.code, "SUMMER-10");
    let stored = stored_promo(&commands, "SUMMER-10").await;
    assert_eq!(stored.discount, Some(Discount::PercentOff(10)));
    assert_eq!(stored.valid_from, Some(utc("2030-05-31T22:00:00Z")));
    assert_eq!(stored.valid_until, Some(utc("2030-08-31T22:00:00Z")));
    assert_eq!((stored.max_redemptions, stored.per_patient_limit), (100, 1));
    assert!(stored.active && stored.treatment_ids.is_none());
    let json = serde_json::to_value(&done.output).unwrap();
    assert_eq!(json, serde_json::json!({"code": "SUMMER-10"}));
}

#[tokio::test]
async fn create_promo_code_for_some_treatments_with_an_amount_off() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let input = CreatePromoCode {
        percent_off: None,
        amount_off_cents: Some(1_500),
        treatment_ids: Some(vec![f.laser_treatment.0, f.consultation.0]),
        ..summer("WELCOME")
    };

    commands.create_promo_code(&admin(), input).await.unwrap();

    let stored = stored_promo(&commands, "WELCOME").await;
    assert_eq!(stored.discount, Some(Discount::AmountOff(Money(1_500))));
    assert_eq!(
        stored.treatment_ids,
        Some(vec![f.laser_treatment, f.consultation])
    );
}

#[tokio::test]
async fn create_promo_code_refusals() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let cases: Vec<(CreatePromoCode, &str)> = vec![
        (
            CreatePromoCode {
                amount_off_cents: Some(500),
                ..summer("BOTH")
            },
            "amount_off_cents",
        ),
        (
            CreatePromoCode {
                percent_off: None,
                ..summer("NEITHER")
            },
            "percent_off",
        ),
        (
            CreatePromoCode {
                percent_off: Some(101),
                ..summer("TOO-MUCH")
            },
            "percent_off",
        ),
        (
            CreatePromoCode {
                percent_off: None,
                amount_off_cents: Some(0),
                ..summer("ZERO")
            },
            "amount_off_cents",
        ),
        (summer("x"), "code"),
        (summer("NO SPACES"), "code"),
        (
            CreatePromoCode {
                max_redemptions: 0,
                ..summer("NO-USES")
            },
            "max_redemptions",
        ),
        (
            CreatePromoCode {
                per_patient_limit: 0,
                ..summer("NO-ONE")
            },
            "per_patient_limit",
        ),
        (
            CreatePromoCode {
                treatment_ids: Some(vec![]),
                ..summer("NOTHING")
            },
            "treatment_ids",
        ),
    ];
    // A window that ends where it starts: each instant is valid alone.
    let empty_window = CreatePromoCode {
        valid_until: utc("2030-06-01T00:00:00Z"),
        ..summer("EMPTY-WINDOW")
    };
    assert_inconsistent(
        commands.create_promo_code(&admin(), empty_window).await,
        "valid_until",
    );
    for (input, field) in cases {
        let code = input.code.clone();
        assert_invalid(commands.create_promo_code(&admin(), input).await, field);
        if let Ok(key) = clinicbook_domain::PromoCodeKey::parse(&code) {
            assert!(
                !stored_promo(&commands, key.as_str()).await.is_created(),
                "{code}"
            );
        }
    }

    let unknown = Uuid::new_v4();
    let scoped = CreatePromoCode {
        treatment_ids: Some(vec![f.laser_treatment.0, unknown]),
        ..summer("SCOPED")
    };
    let result = commands.create_promo_code(&admin(), scoped).await;
    assert_not_found(result, &format!("treatment {unknown}"));

    commands
        .create_promo_code(&admin(), summer("SUMMER"))
        .await
        .unwrap();
    let again = commands
        .create_promo_code(&admin(), summer("summer "))
        .await;
    assert_code(again, "already_exists");
}

#[tokio::test]
async fn deactivate_promo_code_once_and_again() {
    let (commands, _clock, _db) = commands().await;
    commands
        .create_promo_code(&admin(), summer("SUMMER"))
        .await
        .unwrap();

    let first = commands
        .deactivate_promo_code(&admin(), "summer")
        .await
        .unwrap();
    let second = commands
        .deactivate_promo_code(&admin(), "SUMMER")
        .await
        .unwrap();

    assert_eq!(
        serde_json::to_value(&first.output).unwrap(),
        serde_json::json!({"code": "SUMMER", "active": false})
    );
    assert!(first.position.is_some());
    assert_eq!(second.output, first.output);
    // The second time writes nothing and answers the newest position it read.
    assert_eq!(second.position, first.position);
    let (stored, sequence) = commands
        .store()
        .aggregate::<PromoCode>("SUMMER")
        .await
        .unwrap();
    assert!(!stored.active);
    assert_eq!(sequence, 2);
}

#[tokio::test]
async fn deactivate_an_unknown_or_malformed_code() {
    let (commands, _clock, _db) = commands().await;
    assert_not_found(
        commands.deactivate_promo_code(&admin(), "NOPE").await,
        "promo code NOPE",
    );
    assert_invalid(commands.deactivate_promo_code(&admin(), "?").await, "code");
}

// --- read helpers and shapes ----------------------------------------------

#[tokio::test]
async fn the_clinic_view_shows_the_fixture() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;

    let view = read_clinic(&commands, f.clinic_id.0).await.unwrap();

    assert_eq!(view.clinic_id, f.clinic_id.0);
    assert_eq!(view.name, "Berlin Mitte");
    let names: Vec<(&str, &str)> = view
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.kind.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("Room 1", "room"),
            ("Laser A", "device"),
            ("Laser B", "device"),
            ("Dr. Weber", "practitioner")
        ]
    );
    assert_eq!(view.opening_hours.mon, vec![range("09:00", "18:00")]);
    assert!(view.opening_hours.sun.is_empty());
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(
        json["opening_hours"]["sat"],
        serde_json::json!([["09:00", "18:00"]])
    );
    assert_eq!(json["treatments"][0]["price_cents"], 12_000);
}

#[tokio::test]
async fn reading_what_does_not_exist_is_not_found() {
    let (commands, _clock, _db) = commands().await;
    let id = Uuid::new_v4();
    assert_read_not_found(read_clinic(&commands, id).await, &format!("clinic {id}"));
    assert_read_not_found(read_program(&commands, id).await, &format!("program {id}"));
}

#[test]
fn inputs_refuse_unknown_fields() {
    let typo = r#"{"name":"A","timezone":"UTC","currency":"EUR","late_fee_percent":10}"#;
    let err = serde_json::from_str::<RegisterClinic>(typo).unwrap_err();
    assert!(err.to_string().contains("late_fee_percent"), "{err}");
    let typo = r#"{"name":"A","kind":"room","colour":"red"}"#;
    assert!(serde_json::from_str::<AddResource>(typo).is_err());
    let typo = r#"{"rules":[],"last_minute":{"within_hours":2,"percent":5}}"#;
    assert!(serde_json::from_str::<PricingRulesInput>(typo).is_err());
}
