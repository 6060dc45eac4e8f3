//! Tests of the money use cases: wallets and packages, on a real PostgreSQL.

use chrono::Duration;
use clinicbook_commands::money::{
    Balance, Deposit, PackageBought, PackageChange, PackagePayment, PurchasePackage,
    TransferPackage, WalletRefund, WalletTransactionKind,
};
use clinicbook_commands::{CommandError, Commands, Done};
use clinicbook_domain::clinic::{Clinic, ClinicCommand, ResourceKind};
use clinicbook_domain::package::{Package, PackageCommand};
use clinicbook_domain::program::{Program, ProgramCommand, ProgramTerms};
use clinicbook_domain::{ClinicId, DomainError, Money, ProgramId, ReservationId};
use clinicbook_eventstore::{audit, IdempotencyKey};
use serde_json::json;
use uuid::Uuid;

use crate::common::{assert_code, clinic, commands, ctx, monday, raw, Fixture};

const PRICE: i64 = 60_000;
const SESSIONS: u32 = 6;
const VALIDITY_DAYS: u32 = 365;

/// A program of six laser sessions for 600.00, valid a year at the
/// fixture clinic.
async fn program(commands: &Commands, f: &Fixture) -> Uuid {
    let program_id = ProgramId::new();
    raw::<Program>(
        commands,
        program_id,
        vec![ProgramCommand::Create(ProgramTerms {
            program_id,
            name: "Laser x6".to_string(),
            treatment_id: f.laser_treatment,
            sessions: SESSIONS,
            price: Money(PRICE),
            validity_days: VALIDITY_DAYS,
            clinic_ids: vec![f.clinic_id],
        })],
    )
    .await;
    program_id.0
}

/// A second clinic that offers the fixture clinic's laser treatment.
async fn sister_clinic(commands: &Commands, f: &Fixture) -> Uuid {
    let clinic_id = ClinicId::new();
    raw::<Clinic>(
        commands,
        clinic_id,
        vec![
            ClinicCommand::Register {
                clinic_id,
                name: "Hamburg Altona".to_string(),
                timezone: "Europe/Berlin".to_string(),
                currency: "EUR".to_string(),
                cancellation_notice_hours: 24,
                late_cancel_fee_percent: 50,
            },
            ClinicCommand::AddTreatment {
                treatment_id: f.laser_treatment,
                name: "Laser hair removal".to_string(),
                duration_minutes: 45,
                buffer_minutes: 15,
                price: Money(12_000),
                resource_kind: ResourceKind::Device,
            },
        ],
    )
    .await;
    clinic_id.0
}

fn ok<T>(result: Result<T, CommandError>) -> T {
    result.unwrap_or_else(|e| panic!("command failed: {e:?}"))
}

/// Asserts that `result` is an `invalid_input` naming `field`.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, CommandError>, field: &str) {
    match result {
        Err(CommandError::Domain(DomainError::InvalidInput { field: actual, .. })) => {
            assert_eq!(actual, field)
        }
        other => panic!("expected invalid {field}, got {other:?}"),
    }
}

async fn deposit(
    commands: &Commands,
    patient: Uuid,
    cents: i64,
    reference: &str,
) -> Result<Done<Balance>, CommandError> {
    let input = Deposit {
        amount_cents: cents,
        reference: reference.to_string(),
    };
    commands.deposit(&ctx("staff"), patient, input).await
}

async fn refund(
    commands: &Commands,
    patient: Uuid,
    cents: i64,
    reference: &str,
) -> Result<Done<Balance>, CommandError> {
    let input = WalletRefund {
        amount_cents: cents,
        reference: reference.to_string(),
        reason: "patient moved away".to_string(),
    };
    commands.refund(&ctx("staff"), patient, input).await
}

async fn buy(
    commands: &Commands,
    package_id: Option<Uuid>,
    patient: Uuid,
    program: Uuid,
    payment: PackagePayment,
) -> Result<Done<PackageBought>, CommandError> {
    let input = PurchasePackage {
        package_id,
        patient_id: patient,
        program_id: program,
        payment,
    };
    commands.purchase_package(&ctx("staff"), input).await
}

/// Number of stored events of a stream.
async fn stored(commands: &Commands, aggregate_type: &str, id: Uuid) -> usize {
    audit::stream_events(commands.store().pool(), aggregate_type, &id.to_string())
        .await
        .unwrap_or_else(|e| panic!("read stream: {e}"))
        .len()
}

async fn balance(commands: &Commands, patient: Uuid) -> i64 {
    ok(commands.wallet(patient).await).balance_cents
}

#[tokio::test]
async fn a_deposit_credits_the_wallet_and_answers_the_balance() {
    let (commands, _clock, _db) = commands().await;
    let patient = Uuid::new_v4();

    let first = ok(deposit(&commands, patient, 5_000, "card-1").await);
    let second = ok(deposit(&commands, patient, 2_500, "card-2").await);

    assert_eq!(
        first.output,
        Balance {
            balance_cents: 5_000
        }
    );
    assert_eq!(second.output.balance_cents, 7_500);
    assert!(first.position.is_some() && second.position > first.position);
    assert!(!second.replayed);
    assert_eq!(balance(&commands, patient).await, 7_500);
}

#[tokio::test]
async fn a_reference_is_credited_once_and_a_repeat_writes_nothing() {
    let (commands, _clock, _db) = commands().await;
    let patient = Uuid::new_v4();
    ok(deposit(&commands, patient, 5_000, "card-1").await);

    assert_code(
        deposit(&commands, patient, 5_000, "card-1").await,
        "duplicate_reference",
    );
    // References are trimmed, so stray spaces do not make a new one.
    assert_code(
        deposit(&commands, patient, 5_000, " card-1 ").await,
        "duplicate_reference",
    );
    assert_code(
        refund(&commands, patient, 1_000, "card-1").await,
        "duplicate_reference",
    );

    assert_eq!(stored(&commands, "Wallet", patient).await, 1);
    assert_eq!(balance(&commands, patient).await, 5_000);
}

#[tokio::test]
async fn amounts_that_are_not_positive_and_empty_texts_are_invalid_input() {
    let (commands, _clock, _db) = commands().await;
    let patient = Uuid::new_v4();
    ok(deposit(&commands, patient, 5_000, "card-1").await);

    for cents in [0, -1, -5_000, i64::MIN] {
        assert_invalid(
            deposit(&commands, patient, cents, "card-2").await,
            "amount_cents",
        );
        assert_invalid(
            refund(&commands, patient, cents, "bank-1").await,
            "amount_cents",
        );
    }
    assert_invalid(deposit(&commands, patient, 100, "  ").await, "reference");
    let no_reason = WalletRefund {
        amount_cents: 100,
        reference: "bank-1".to_string(),
        reason: " ".to_string(),
    };
    assert_invalid(
        commands.refund(&ctx("staff"), patient, no_reason).await,
        "reason",
    );

    assert_eq!(stored(&commands, "Wallet", patient).await, 1);
    assert_eq!(balance(&commands, patient).await, 5_000);
}

#[tokio::test]
async fn a_refund_above_the_balance_is_insufficient_funds() {
    let (commands, _clock, _db) = commands().await;
    let patient = Uuid::new_v4();
    ok(deposit(&commands, patient, 3_000, "card-1").await);

    assert_code(
        refund(&commands, patient, 3_001, "bank-1").await,
        "insufficient_funds",
    );
    assert_eq!(stored(&commands, "Wallet", patient).await, 1);

    let all = ok(refund(&commands, patient, 3_000, "bank-1").await);
    assert_eq!(all.output.balance_cents, 0);
    assert_code(
        refund(&commands, patient, 1, "bank-2").await,
        "insufficient_funds",
    );
}

#[tokio::test]
async fn the_wallet_view_lists_signed_transactions_that_sum_to_the_balance() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    let patient = Uuid::new_v4();
    let package_id = Uuid::new_v4();
    ok(deposit(&commands, patient, 100_000, "card-1").await);
    ok(buy(
        &commands,
        Some(package_id),
        patient,
        program,
        PackagePayment::Wallet {},
    )
    .await);
    ok(refund(&commands, patient, 10_000, "bank-1").await);

    let view = ok(commands.wallet(patient).await);

    assert_eq!(view.patient_id, patient);
    assert_eq!(view.balance_cents, 30_000);
    let rows: Vec<_> = view
        .transactions
        .iter()
        .map(|t| (t.sequence, t.kind, t.amount_cents, t.reference.as_str()))
        .collect();
    let package_reference = format!("package:{package_id}");
    assert_eq!(
        rows,
        [
            (1, WalletTransactionKind::Deposit, 100_000, "card-1"),
            (
                2,
                WalletTransactionKind::Debit,
                -PRICE,
                package_reference.as_str()
            ),
            (3, WalletTransactionKind::Refund, -10_000, "bank-1"),
        ]
    );
    let sum: i64 = view.transactions.iter().map(|t| t.amount_cents).sum();
    assert_eq!(sum, view.balance_cents);
    assert!(view
        .transactions
        .windows(2)
        .all(|w| w[0].recorded_at <= w[1].recorded_at));
}

#[tokio::test]
async fn a_wallet_never_used_holds_zero_and_has_no_transactions() {
    let (commands, _clock, _db) = commands().await;
    let patient = Uuid::new_v4();

    let view = ok(commands.wallet(patient).await);

    assert_eq!(view.patient_id, patient);
    assert_eq!(view.balance_cents, 0);
    assert!(view.transactions.is_empty());
}

#[tokio::test]
async fn buying_a_package_from_the_wallet_debits_its_price() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    let patient = Uuid::new_v4();
    let package_id = Uuid::new_v4();
    ok(deposit(&commands, patient, 70_000, "card-1").await);

    let bought = ok(buy(
        &commands,
        Some(package_id),
        patient,
        program,
        PackagePayment::Wallet {},
    )
    .await);

    assert_eq!(
        bought.output,
        PackageBought {
            package_id,
            sessions_left: SESSIONS,
            valid_until: monday() + Duration::days(VALIDITY_DAYS.into()),
        }
    );
    assert!(bought.position.is_some());
    assert_eq!(balance(&commands, patient).await, 70_000 - PRICE);
    assert_eq!(stored(&commands, "Package", package_id).await, 1);
    let package = ok(commands.package(package_id).await);
    assert_eq!(package.patient_id, patient);
    assert_eq!(package.price_cents, PRICE);
}

#[tokio::test]
async fn buying_with_an_external_reference_leaves_the_wallet_alone() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    let patient = Uuid::new_v4();
    let payment = PackagePayment::External {
        reference: "terminal-77".to_string(),
    };

    let bought = ok(buy(&commands, None, patient, program, payment.clone()).await);

    let package = ok(commands.package(bought.output.package_id).await);
    assert_eq!(package.sessions_left, SESSIONS);
    assert!(matches!(
        &package.history[0].change,
        PackageChange::Purchased { payment: paid, .. } if *paid == payment
    ));
    assert_eq!(stored(&commands, "Wallet", patient).await, 0);
    let no_reference = PackagePayment::External {
        reference: " ".to_string(),
    };
    assert_invalid(
        buy(&commands, None, patient, program, no_reference).await,
        "payment.reference",
    );
}

#[tokio::test]
async fn buying_with_too_little_in_the_wallet_writes_nothing() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    let patient = Uuid::new_v4();
    let package_id = Uuid::new_v4();
    ok(deposit(&commands, patient, PRICE - 1, "card-1").await);

    assert_code(
        buy(
            &commands,
            Some(package_id),
            patient,
            program,
            PackagePayment::Wallet {},
        )
        .await,
        "insufficient_funds",
    );

    assert_code(commands.package(package_id).await, "not_found");
    assert_eq!(stored(&commands, "Package", package_id).await, 0);
    assert_eq!(stored(&commands, "Wallet", patient).await, 1);
    assert_eq!(balance(&commands, patient).await, PRICE - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_purchase_with_the_same_package_id_charges_once() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    let patient = Uuid::new_v4();
    let package_id = Some(Uuid::new_v4());
    ok(deposit(&commands, patient, 3 * PRICE, "card-1").await);

    // Eight submissions racing (a client retrying on timeouts), then a late retry.
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let commands = commands.clone();
            tokio::spawn(async move {
                buy(
                    &commands,
                    package_id,
                    patient,
                    program,
                    PackagePayment::Wallet {},
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in racing {
        let done = task.await.unwrap_or_else(|e| panic!("task: {e}"));
        answers.push(ok(done).output);
    }
    let retry = ok(buy(
        &commands,
        package_id,
        patient,
        program,
        PackagePayment::Wallet {},
    )
    .await);

    assert!(answers.iter().all(|a| *a == answers[0]));
    assert_eq!(retry.output, answers[0]);
    assert!(
        retry.position.is_some(),
        "a retry writes nothing but still answers a position"
    );
    assert_eq!(balance(&commands, patient).await, 2 * PRICE);
    assert_eq!(stored(&commands, "Package", answers[0].package_id).await, 1);
    // The same id for another patient's purchase is refused.
    assert_code(
        buy(
            &commands,
            package_id,
            Uuid::new_v4(),
            program,
            PackagePayment::Wallet {},
        )
        .await,
        "already_exists",
    );
}

#[tokio::test]
async fn an_unknown_program_is_not_found_and_nothing_is_charged() {
    let (commands, _clock, _db) = commands().await;
    let patient = Uuid::new_v4();
    let package_id = Uuid::new_v4();
    ok(deposit(&commands, patient, 100_000, "card-1").await);

    assert_code(
        buy(
            &commands,
            Some(package_id),
            patient,
            Uuid::new_v4(),
            PackagePayment::Wallet {},
        )
        .await,
        "not_found",
    );

    assert_eq!(stored(&commands, "Package", package_id).await, 0);
    assert_eq!(balance(&commands, patient).await, 100_000);
}

#[tokio::test]
async fn the_package_view_shows_sessions_expiry_and_history() {
    let (commands, clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    let patient = Uuid::new_v4();
    let payment = PackagePayment::External {
        reference: "terminal-1".to_string(),
    };
    let bought = ok(buy(&commands, None, patient, program, payment.clone()).await);
    let package_id = bought.output.package_id;
    clock.advance(Duration::days(3));
    let reservation = ReservationId::new();
    raw::<Package>(
        &commands,
        package_id,
        vec![PackageCommand::ConsumeSession {
            reservation_id: reservation,
            clinic_id: f.clinic_id,
            treatment_id: f.laser_treatment,
            appointment_start: monday() + Duration::days(4),
        }],
    )
    .await;

    let view = ok(commands.package(package_id).await);

    let valid_until = monday() + Duration::days(VALIDITY_DAYS.into());
    assert_eq!(
        (view.package_id, view.patient_id, view.program_id),
        (package_id, patient, program)
    );
    assert_eq!(view.treatment_id, f.laser_treatment.0);
    assert_eq!(
        (view.sessions_total, view.sessions_used, view.sessions_left),
        (SESSIONS, 1, SESSIONS - 1)
    );
    assert_eq!(view.valid_until, valid_until);
    assert_eq!(view.clinic_ids, [f.clinic_id.0]);
    assert_eq!(view.price_cents, PRICE);
    let history: Vec<_> = view
        .history
        .iter()
        .map(|h| (h.sequence, h.change.clone()))
        .collect();
    assert_eq!(
        history,
        [
            (
                1,
                PackageChange::Purchased {
                    sessions: SESSIONS,
                    price_cents: PRICE,
                    valid_until,
                    clinic_ids: vec![f.clinic_id.0],
                    payment,
                }
            ),
            (
                2,
                PackageChange::SessionConsumed {
                    reservation_id: reservation.0
                }
            ),
        ]
    );
}

#[tokio::test]
async fn an_unknown_package_is_not_found() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let unknown = Uuid::new_v4();

    assert_code(commands.package(unknown).await, "not_found");
    let transfer = TransferPackage {
        to_clinic_id: f.clinic_id.0,
    };
    assert_code(
        commands
            .transfer_package(&ctx("staff"), unknown, transfer)
            .await,
        "not_found",
    );
    assert_eq!(stored(&commands, "Package", unknown).await, 0);
}

#[tokio::test]
async fn a_package_moves_to_a_clinic_offering_its_treatment() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    let sister = sister_clinic(&commands, &f).await;
    let payment = PackagePayment::External {
        reference: "terminal-1".to_string(),
    };
    let bought = ok(buy(&commands, None, Uuid::new_v4(), program, payment).await);
    let package_id = bought.output.package_id;

    let moved = ok(commands
        .transfer_package(
            &ctx("staff"),
            package_id,
            TransferPackage {
                to_clinic_id: sister,
            },
        )
        .await);

    assert!(moved.position > bought.position);
    assert_eq!(moved.output.clinic_ids, [sister]);
    assert_eq!(
        moved.output.history.last().map(|h| &h.change),
        Some(&PackageChange::Transferred {
            from_clinic_ids: vec![f.clinic_id.0],
            to_clinic_id: sister,
        })
    );
    assert_eq!(ok(commands.package(package_id).await), moved.output);
}

#[tokio::test]
async fn a_transfer_is_refused_where_the_treatment_is_not_offered_or_there_is_no_clinic() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    // Another clinic of the fixture has treatments of its own ids only.
    let elsewhere = clinic(&commands).await;
    let payment = PackagePayment::External {
        reference: "terminal-1".to_string(),
    };
    let bought = ok(buy(&commands, None, Uuid::new_v4(), program, payment).await);
    let package_id = bought.output.package_id;

    for to_clinic_id in [elsewhere.clinic_id.0, Uuid::new_v4()] {
        assert_code(
            commands
                .transfer_package(&ctx("staff"), package_id, TransferPackage { to_clinic_id })
                .await,
            "not_found",
        );
    }

    assert_eq!(stored(&commands, "Package", package_id).await, 1);
    let view = ok(commands.package(package_id).await);
    assert_eq!(view.clinic_ids, [f.clinic_id.0]);
}

#[tokio::test]
async fn a_replayed_transfer_answers_the_package_as_it_was_right_after_it() {
    let (commands, _clock, _db) = commands().await;
    let f = clinic(&commands).await;
    let program = program(&commands, &f).await;
    let sister = sister_clinic(&commands, &f).await;
    let payment = PackagePayment::External {
        reference: "terminal-1".to_string(),
    };
    let bought = ok(buy(&commands, None, Uuid::new_v4(), program, payment).await);
    let package_id = bought.output.package_id;
    let body = TransferPackage {
        to_clinic_id: sister,
    };
    let mut keyed = ctx("staff");
    keyed.idempotency = Some(IdempotencyKey::new(
        "transfer_package",
        "key-1",
        &serde_json::to_vec(&body).unwrap_or_default(),
    ));
    let first = ok(commands
        .transfer_package(&keyed, package_id, body.clone())
        .await);
    raw::<Package>(
        &commands,
        package_id,
        vec![PackageCommand::ConsumeSession {
            reservation_id: ReservationId::new(),
            clinic_id: ClinicId(sister),
            treatment_id: f.laser_treatment,
            appointment_start: monday() + Duration::days(1),
        }],
    )
    .await;

    let replay = ok(commands.transfer_package(&keyed, package_id, body).await);

    assert!(replay.replayed);
    assert_eq!(replay.position, first.position);
    assert_eq!(replay.output, first.output);
    assert_eq!(replay.output.sessions_used, 0);
    assert_eq!(ok(commands.package(package_id).await).sessions_used, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_deposits_all_land() {
    let (commands, _clock, _db) = commands().await;
    let patient = Uuid::new_v4();
    let amounts: Vec<i64> = (1..=20).map(|i| i * 100).collect();

    let tasks: Vec<_> = amounts
        .iter()
        .map(|&cents| {
            let commands = commands.clone();
            tokio::spawn(async move {
                deposit(&commands, patient, cents, &format!("card-{cents}")).await
            })
        })
        .collect();
    for task in tasks {
        ok(task.await.unwrap_or_else(|e| panic!("task: {e}")));
    }

    let view = ok(commands.wallet(patient).await);
    assert_eq!(view.balance_cents, amounts.iter().sum::<i64>());
    let mut landed: Vec<i64> = view.transactions.iter().map(|t| t.amount_cents).collect();
    landed.sort_unstable();
    assert_eq!(landed, amounts);
    let sequences: Vec<i64> = view.transactions.iter().map(|t| t.sequence).collect();
    assert_eq!(sequences, (1..=20).collect::<Vec<i64>>());
}

#[test]
fn inputs_refuse_unknown_fields_and_read_both_payment_shapes() {
    let typo = serde_json::from_value::<Deposit>(json!({
        "amount_cents": 100, "reference": "card-1", "amount": 100
    }));
    assert!(typo.is_err_and(|e| e.to_string().contains("amount")));

    let patient = Uuid::new_v4();
    let program = Uuid::new_v4();
    let read = |payment: serde_json::Value| {
        serde_json::from_value::<PurchasePackage>(json!({
            "patient_id": patient, "program_id": program, "payment": payment
        }))
        .map(|p| p.payment)
    };
    let wallet = read(json!({"method": "wallet"}));
    assert!(matches!(wallet, Ok(PackagePayment::Wallet {})));
    let external = read(json!({"method": "external", "reference": "terminal-1"}));
    assert!(
        matches!(external, Ok(PackagePayment::External { reference }) if reference == "terminal-1")
    );
    assert!(read(json!({"method": "wallet", "reference": "x"})).is_err());
    assert!(read(json!({"method": "external", "reference": "x", "tip": 1})).is_err());
    assert!(read(json!({"method": "cash"})).is_err());
    assert_eq!(
        serde_json::to_value(PackagePayment::Wallet {}).unwrap_or_default(),
        json!({"method": "wallet"})
    );

    let bought = PackageBought {
        package_id: patient,
        sessions_left: 6,
        valid_until: monday(),
    };
    assert_eq!(
        serde_json::to_value(&bought).unwrap_or_default(),
        json!({"package_id": patient, "sessions_left": 6, "valid_until": "2030-01-07T08:00:00Z"})
    );
}
