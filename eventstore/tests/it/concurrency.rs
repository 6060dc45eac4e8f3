//! Many writers on the same streams: the primary key and the retry loop
//! must let exactly the right number of commands through.

use chrono::{DateTime, NaiveDate, Utc};
use clinicbook_domain::calendar::{Calendar, CalendarCommand};
use clinicbook_domain::pricing::{Discount, PriceBreakdown};
use clinicbook_domain::promo::{PromoCode, PromoCommand, PromoTerms};
use clinicbook_domain::reservation::{PaymentMethod, Reservation, ReservationCommand, Slot};
use clinicbook_domain::schedule::Interval;
use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{
    CalendarId, ClinicId, DomainError, Money, PatientId, PromoCodeKey, ReservationId, ResourceId,
    TreatmentId,
};
use clinicbook_eventstore::{EventStore, ExecuteError, UnitOfWork, UowError, UseCase};

use crate::common::{at, count_events, meta, now, run, store, Run};

/// Books a slot on a calendar for a new reservation, optionally paid from
/// the patient's wallet: `Calendar`, `Reservation` and `Wallet` in one unit.
#[derive(Clone)]
pub struct Book {
    pub calendar: CalendarId,
    pub reservation: ReservationId,
    pub patient: PatientId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub price: Money,
    pub payment: PaymentMethod,
}

impl Book {
    pub fn new(calendar: CalendarId, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            calendar,
            reservation: ReservationId::new(),
            patient: PatientId::new(),
            start,
            end,
            price: Money(10_000),
            payment: PaymentMethod::AtClinic,
        }
    }
}

impl UseCase for Book {
    type Output = ReservationId;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<ReservationId, UowError> {
        let day = Interval {
            start: at(0),
            end: at(24 * 30),
        };
        uow.handle::<Calendar>(
            &self.calendar.to_string(),
            CalendarCommand::Reserve {
                calendar_id: self.calendar,
                reservation_id: self.reservation,
                start: self.start,
                end: self.end,
                buffer_minutes: 15,
                opening: vec![day],
                now: now(),
            },
        )
        .await?;
        uow.handle::<Reservation>(
            &self.reservation.to_string(),
            ReservationCommand::Book {
                reservation_id: self.reservation,
                patient_id: self.patient,
                clinic_id: ClinicId(uuid::Uuid::nil()),
                treatment_id: TreatmentId(uuid::Uuid::nil()),
                slot: Slot {
                    resource_id: self.calendar.resource_id,
                    start: self.start,
                    end: self.end,
                },
                price: PriceBreakdown {
                    base: self.price,
                    adjustments: Money::ZERO,
                    discount: Money::ZERO,
                    total: self.price,
                },
                payment: self.payment,
                promo_code: None,
                now: now(),
            },
        )
        .await?;
        if self.payment == PaymentMethod::Wallet {
            uow.handle::<Wallet>(
                &self.patient.to_string(),
                WalletCommand::Debit {
                    amount: self.price,
                    reference: format!("reservation:{}", self.reservation),
                },
            )
            .await?;
        }
        Ok(self.reservation)
    }
}

fn calendar() -> CalendarId {
    CalendarId {
        resource_id: ResourceId::new(),
        date: NaiveDate::from_ymd_opt(2030, 1, 8).unwrap_or_default(),
    }
}

/// Runs `tasks` concurrently and sorts their results into successes and
/// the expected refusals; any other outcome fails the test.
async fn race<U, F>(store: &EventStore, tasks: Vec<U>, expected_refusal: F) -> (usize, usize)
where
    U: UseCase + Send + 'static,
    F: Fn(&DomainError) -> bool,
{
    let handles: Vec<_> = tasks
        .into_iter()
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move { store.execute(&meta("race"), None, &task).await.map(|_| ()) })
        })
        .collect();
    let (mut won, mut refused) = (0, 0);
    for handle in handles {
        match handle.await {
            Ok(Ok(())) => won += 1,
            Ok(Err(ExecuteError::Domain(e))) if expected_refusal(&e) => refused += 1,
            Ok(Err(ExecuteError::Conflict { .. })) => refused += 1,
            Ok(Err(other)) => panic!("unexpected outcome: {other:?}"),
            Err(join) => panic!("task panicked: {join}"),
        }
    }
    (won, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_booking_one_slot_give_exactly_one_booking() {
    let (store, db) = store().await;
    let cal = calendar();
    let tasks: Vec<Book> = (0..64).map(|_| Book::new(cal, at(26), at(27))).collect();

    let (won, refused) = race(&store, tasks, |e| *e == DomainError::SlotUnavailable).await;

    assert_eq!((won, refused), (1, 63));
    assert_eq!(count_events(&db, "Calendar", Some("SlotReserved")).await, 1);
    assert_eq!(
        count_events(&db, "Reservation", Some("ReservationBooked")).await,
        1
    );
    store.clear_cache();
    let (state, _) = store
        .aggregate::<Calendar>(&cal.to_string())
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(state.bookings.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_debits_of_a_wallet_holding_ten_let_exactly_ten_through() {
    let (store, db) = store().await;
    let patient = PatientId::new().to_string();
    run::<Wallet>(
        &store,
        &patient,
        WalletCommand::Deposit {
            amount: Money(1_000),
            reference: "card-1".to_string(),
        },
    )
    .await;
    let tasks: Vec<Run<Wallet>> = (0..32)
        .map(|i| Run::<Wallet> {
            id: patient.clone(),
            command: WalletCommand::Debit {
                amount: Money(100),
                reference: format!("debit-{i}"),
            },
        })
        .collect();

    let (won, refused) = race(&store, tasks, |e| {
        matches!(e, DomainError::InsufficientFunds { .. })
    })
    .await;

    assert_eq!((won, refused), (10, 22));
    assert_eq!(count_events(&db, "Wallet", Some("FundsDebited")).await, 10);
    store.clear_cache();
    let (wallet, _) = store
        .aggregate::<Wallet>(&patient)
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(wallet.balance, Money::ZERO);
    let sum: Money = wallet.transactions.iter().map(|t| t.amount).sum();
    assert_eq!(sum, Money::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_redemptions_of_a_promo_limited_to_twenty_let_exactly_twenty_through() {
    let (store, db) = store().await;
    let code = PromoCodeKey::parse("SPRING20").unwrap_or_else(|e| panic!("{e}"));
    run::<PromoCode>(
        &store,
        code.as_str(),
        PromoCommand::Create(PromoTerms {
            code: code.clone(),
            discount: Discount::PercentOff(20),
            valid_from: at(-24),
            valid_until: at(24 * 30),
            max_redemptions: 20,
            per_patient_limit: 1,
            treatment_ids: None,
        }),
    )
    .await;
    let treatment = TreatmentId::new();
    let tasks: Vec<Run<PromoCode>> = (0..50)
        .map(|_| Run::<PromoCode> {
            id: code.to_string(),
            command: PromoCommand::Redeem {
                reservation_id: ReservationId::new(),
                patient_id: PatientId::new(),
                treatment_id: treatment,
                now: now(),
            },
        })
        .collect();

    let (won, refused) = race(&store, tasks, |e| *e == DomainError::PromoExhausted).await;

    assert_eq!((won, refused), (20, 30));
    assert_eq!(
        count_events(&db, "PromoCode", Some("PromoRedeemed")).await,
        20
    );
    store.clear_cache();
    let (promo, _) = store
        .aggregate::<PromoCode>(code.as_str())
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(promo.redemptions.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wallet_debit_writes_nothing_and_leaves_the_slot_free() {
    let (store, db) = store().await;
    let cal = calendar();
    let mut booking = Book::new(cal, at(26), at(27));
    booking.payment = PaymentMethod::Wallet;
    run::<Wallet>(
        &store,
        &booking.patient.to_string(),
        WalletCommand::Deposit {
            amount: Money(5_000),
            reference: "card-1".to_string(),
        },
    )
    .await;

    let result = store.execute(&meta("book"), None, &booking).await;

    match result {
        Err(ExecuteError::Domain(DomainError::InsufficientFunds { balance, requested })) => {
            assert_eq!((balance, requested), (Money(5_000), Money(10_000)));
        }
        other => panic!("expected insufficient funds, got {other:?}"),
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap_or(-1);
    assert_eq!(total, 1, "only the deposit is stored");
    assert_eq!(count_events(&db, "Calendar", None).await, 0);
    assert_eq!(count_events(&db, "Reservation", None).await, 0);

    // The cache was not touched by the refused attempt either: the slot is free.
    let other = Book::new(cal, at(26), at(27));
    let booked = store.execute(&meta("book"), None, &other).await;
    assert!(booked.is_ok(), "the slot must still be free: {booked:?}");
    let (wallet, _) = store
        .aggregate::<Wallet>(&booking.patient.to_string())
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(wallet.balance, Money(5_000));
}
