//! Patient profiles end to end: validation, roles, idempotency, erasure —
//! after which nothing of the name or email is left anywhere in the
//! database (pg_dump of every table), every audit answer shows
//! `"[erased]"`, payments stay and `verify` still passes.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{app, App};

const NAME: &str = "Henrietta Quixote-Zylberberg";
const EMAIL: &str = "henrietta.qz@example.org";
const PHONE: &str = "+4930987654321";

fn profile() -> Value {
    json!({
        "name": NAME,
        "email": EMAIL,
        "phone": PHONE,
        "language": "de",
        "consent": {"email": true, "sms": false}
    })
}

async fn register(app: &App) -> String {
    let created = app.post("/v1/patients", &app.staff, profile()).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["patient_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{:?}", created.body))
        .to_owned()
}

#[tokio::test]
async fn a_profile_is_stored_encrypted_and_read_back() {
    let app = app().await;
    let id = register(&app).await;
    let got = app.get(&format!("/v1/patients/{id}"), &app.staff).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(
        got.body,
        json!({
            "patient_id": id,
            "name": NAME,
            "email": EMAIL,
            "phone": PHONE,
            "language": "de",
            "consent": {"email": true, "sms": false}
        })
    );
    // Stored only as ciphertext, even before any erasure.
    let dump = app.db.pg_dump().await;
    assert!(dump.contains(&id), "the dump should hold the patient's id");
    for secret in [NAME, EMAIL, PHONE] {
        assert!(!dump.contains(secret), "{secret} is stored in plaintext");
    }

    // PUT replaces the profile and answers it (trimmed, default language).
    let updated = app
        .put(
            &format!("/v1/patients/{id}"),
            &app.staff,
            json!({"name": " Henny Q ", "consent": {"email": false, "sms": true}}),
        )
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(updated.body["name"], "Henny Q");
    assert_eq!(updated.body["email"], Value::Null);
    assert_eq!(updated.body["language"], "en");
    assert!(updated.body["position"].as_i64().is_some());
    let got = app.get(&format!("/v1/patients/{id}"), &app.staff).await;
    assert_eq!(got.body["name"], "Henny Q");
    assert_eq!(got.body["consent"], json!({"email": false, "sms": true}));
}

#[tokio::test]
async fn bad_profiles_are_refused_and_write_nothing() {
    let app = app().await;
    let id = register(&app).await;
    let cases = [
        ("email", json!("not-an-address")),
        ("email", json!("a@b")),
        ("phone", json!("030 1234567")),
        ("phone", json!("+0301234567")),
        ("language", json!("fr")),
        ("name", json!("  ")),
    ];
    for (field, value) in cases {
        let mut body = profile();
        body[field] = value.clone();
        let refused = app.post("/v1/patients", &app.staff, body.clone()).await;
        refused.assert_problem(400, "invalid_input");
        let detail = refused.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{field}={value}: {detail}");
        let refused = app
            .put(&format!("/v1/patients/{id}"), &app.staff, body)
            .await;
        refused.assert_problem(400, "invalid_input");
    }
    let mut body = profile();
    body["nickname"] = json!("Henny");
    app.post("/v1/patients", &app.staff, body)
        .await
        .assert_problem(400, "invalid_request");
    // The same id twice.
    let mut body = profile();
    body["patient_id"] = json!(id);
    app.post("/v1/patients", &app.staff, body)
        .await
        .assert_problem(409, "already_exists");
    // A PUT naming another patient; a PUT of a patient without a profile.
    let mut body = profile();
    body["patient_id"] = json!(Uuid::new_v4());
    app.put(&format!("/v1/patients/{id}"), &app.staff, body)
        .await
        .assert_problem(422, "inconsistent_input");
    app.put(
        &format!("/v1/patients/{}", Uuid::new_v4()),
        &app.staff,
        profile(),
    )
    .await
    .assert_problem(404, "not_found");
    app.get(&format!("/v1/patients/{}", Uuid::new_v4()), &app.staff)
        .await
        .assert_problem(404, "not_found");
    // Analysts read no profiles; only admins erase.
    app.get(&format!("/v1/patients/{id}"), &app.analyst)
        .await
        .assert_problem(403, "forbidden");
    app.post(
        &format!("/v1/patients/{id}/erase"),
        &app.staff,
        json!({"reason": "asked"}),
    )
    .await
    .assert_problem(403, "forbidden");
    // Only the one registration was written.
    let history = app
        .get(&format!("/v1/audit/streams/Patient/{id}"), &app.auditor)
        .await;
    assert_eq!(history.body["last_sequence"], 1, "{:?}", history.body);
}

#[tokio::test]
async fn a_retried_registration_answers_the_first_answer() {
    let app = app().await;
    let send = || async {
        app.client
            .post(format!("{}/v1/patients", app.base))
            .bearer_auth(&app.staff)
            .header("idempotency-key", "register-1")
            .json(&profile())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json::<Value>()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let first = send().await;
    let again = send().await;
    assert_eq!(first, again);
    // The stored answer holds no personal data.
    let dump = app.db.pg_dump().await;
    assert!(!dump.contains(NAME) && !dump.contains(EMAIL));
}

#[tokio::test]
async fn erasure_leaves_no_personal_data_anywhere() {
    let app = app().await;
    let id = register(&app).await;
    // An update first, so there are two generations of ciphertext.
    app.put(&format!("/v1/patients/{id}"), &app.staff, profile())
        .await;
    // A payment of the patient's, which must stay.
    let deposit = app
        .post(
            &format!("/v1/wallets/{id}/deposits"),
            &app.staff,
            json!({"amount_cents": 5000, "reference": "card-77"}),
        )
        .await;
    assert_eq!(deposit.status, 201, "{:?}", deposit.body);

    // Before erasure, auditors read the history in plaintext.
    let stream = format!("/v1/audit/streams/Patient/{id}");
    let before = app.get(&stream, &app.auditor).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    assert!(before.body.to_string().contains(EMAIL), "{:?}", before.body);

    let erased = app
        .post(
            &format!("/v1/patients/{id}/erase"),
            &app.admin,
            json!({"reason": "GDPR art. 17 request"}),
        )
        .await;
    assert_eq!(erased.status, 200, "{:?}", erased.body);
    assert!(erased.body["erased_at"].as_str().is_some());

    // The profile is gone for good.
    app.get(&format!("/v1/patients/{id}"), &app.staff)
        .await
        .assert_problem(410, "patient_erased");
    app.put(&format!("/v1/patients/{id}"), &app.staff, profile())
        .await
        .assert_problem(410, "patient_erased");
    app.post(
        &format!("/v1/patients/{id}/erase"),
        &app.admin,
        json!({"reason": "again"}),
    )
    .await
    .assert_problem(410, "patient_erased");

    // Every audit answer shows "[erased]" where the data was.
    let after = app.get(&stream, &app.auditor).await;
    assert_eq!(after.status, 200, "{:?}", after.body);
    let events = after.body["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 3);
    for event in &events[..2] {
        let profile = event["payload"]
            .as_object()
            .and_then(|p| p.values().next())
            .map(|v| v["profile"]["contact"].clone())
            .unwrap_or_default();
        assert_eq!(
            profile,
            json!({"name": "[erased]", "email": "[erased]", "phone": "[erased]"}),
            "{event}"
        );
    }
    assert_eq!(after.body["state"]["profile"], Value::Null);
    let as_of_before = app.get(&format!("{stream}?version=1"), &app.auditor).await;
    assert_eq!(
        as_of_before.body["state"]["profile"]["contact"]["name"],
        "[erased]"
    );
    let feed = app
        .get("/v1/audit/events?aggregate_type=Patient", &app.auditor)
        .await;
    let text = feed.body.to_string();
    assert!(text.contains("[erased]") && !text.contains(EMAIL), "{text}");

    // The history still verifies: the hashes cover the ciphertext.
    let verified = app.get("/v1/audit/verify", &app.auditor).await;
    assert_eq!(verified.body["ok"], true, "{:?}", verified.body);

    // The payment stays.
    let wallet = app.get(&format!("/v1/wallets/{id}"), &app.staff).await;
    assert_eq!(wallet.body["balance_cents"], 5000, "{:?}", wallet.body);

    // Nowhere in the database: events, snapshots, keys, read models,
    // idempotency keys, checkpoints — every table pg_dump writes.
    let dump = app.db.pg_dump().await;
    assert!(
        dump.contains("PatientErased"),
        "the dump should hold the erasure"
    );
    for secret in [NAME, EMAIL, PHONE, "Henrietta", "henrietta"] {
        assert!(!dump.contains(secret), "{secret} is still in the database");
    }
}
