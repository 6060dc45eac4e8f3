//! The fixed scenario the report and detail tests share, built through
//! the real use cases. Berlin is UTC+1 in January; the fixture clinic is
//! open 09:00-18:00 local, Monday to Saturday.
//!
//! Monday 2030-01-07 09:00 local (now):
//! - pricing rule: Wednesday 16:00-18:00 local +20 %;
//! - promo WINTER10: 10 % off; program "Laser x3": 3 sessions, 300.00;
//! - P1 deposits 1000.00; P3 buys the program (paid outside);
//! - R1 P1 laser Tue 10:00 on Laser A, wallet, WINTER10: 120.00 - 12.00;
//! - R2 P2 consultation Tue 11:00 on Dr. Weber, at the clinic;
//! - R3 P1 laser Wed 10:00 on Laser B, wallet; cancelled now (on time);
//! - R4 P1 laser Tue 14:00 on Laser A, wallet; cancelled Tuesday 08:00
//!   (late: 50 % fee, 60.00 back);
//! - R5 P3 laser Wed 17:00 on Laser A, at the clinic, peak +24.00;
//!   displaced by an emergency block Wed 16:30-18:00 on Laser A;
//! - R6 P3 laser Thu 10:00 on Laser A, package session;
//! - R7 P1 laser Thu 09:00 on Laser B, at the clinic, WINTER10;
//!   displaced by a closure Thu 08:00-10:00;
//! - R8 P2 laser Tue 16:00 on Laser A, at the clinic; rescheduled to
//!   Thu 11:00 on Laser B;
//! - W1 P4 waitlisted for a laser start Tue 15:00-16:00, then booked
//!   Tue 15:00 on Laser B, at the clinic;
//! - W2 P5 waitlisted for a laser start Wed 10:00-12:00 (stays waiting).
//!
//! Tuesday 08:00 local: R4 cancelled late; R1 checked in and completed;
//! R2 marked no-show.

use clinicbook_commands::booking::{
    AddBlock, AddClosure, BookTreatment, Cancel, JoinWaitlist, PaymentInput, Reschedule,
};
use clinicbook_commands::money::{Deposit, PackagePayment, PurchasePackage};
use clinicbook_domain::clinic::{Clinic, ClinicCommand};
use clinicbook_domain::pricing::Discount;
use clinicbook_domain::pricing::{PricingRule, PricingRules};
use clinicbook_domain::program::{Program, ProgramCommand, ProgramTerms};
use clinicbook_domain::promo::{PromoCode, PromoCommand, PromoTerms};
use clinicbook_domain::schedule::Weekday;
use clinicbook_domain::{Money, ProgramId, PromoCodeKey};
use uuid::Uuid;

use crate::common::{berlin, book, clinic, hm, raw, staff, Fixture, World};

/// Everything the scenario created.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub f: Fixture,
    pub p1: Uuid,
    pub p2: Uuid,
    pub p3: Uuid,
    pub p4: Uuid,
    pub p5: Uuid,
    pub program: Uuid,
    pub package: Uuid,
    pub r1: Uuid,
    pub r2: Uuid,
    pub r3: Uuid,
    pub r4: Uuid,
    pub r5: Uuid,
    pub r6: Uuid,
    pub r7: Uuid,
    pub r8: Uuid,
    pub w1: Uuid,
    pub w2: Uuid,
    pub block: Uuid,
    pub closure: Uuid,
}

impl Scenario {
    /// Every reservation, waitlist entries included.
    pub fn reservations(&self) -> Vec<Uuid> {
        vec![
            self.r1, self.r2, self.r3, self.r4, self.r5, self.r6, self.r7, self.r8, self.w1,
            self.w2,
        ]
    }
}

pub async fn build(w: &World) -> Scenario {
    let c = &w.commands;
    let f = clinic(c).await;
    let (p1, p2, p3, p4, p5) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    raw::<Clinic>(
        c,
        f.clinic_id,
        vec![ClinicCommand::SetPricingRules {
            rules: PricingRules {
                rules: vec![PricingRule {
                    weekdays: vec![Weekday::Wed],
                    from: hm(16, 0),
                    to: hm(18, 0),
                    percent: 20,
                }],
                last_minute: None,
            },
        }],
    )
    .await;
    let code = PromoCodeKey::parse("WINTER10").unwrap();
    raw::<PromoCode>(
        c,
        code.as_str(),
        vec![PromoCommand::Create(PromoTerms {
            code: code.clone(),
            discount: Discount::PercentOff(10),
            valid_from: berlin(2030, 1, 1, 0, 0),
            valid_until: berlin(2030, 3, 1, 0, 0),
            max_redemptions: 10,
            per_patient_limit: 5,
            treatment_ids: None,
        })],
    )
    .await;
    let program = ProgramId::new();
    raw::<Program>(
        c,
        program,
        vec![ProgramCommand::Create(ProgramTerms {
            program_id: program,
            name: "Laser x3".to_string(),
            treatment_id: f.laser_treatment,
            sessions: 3,
            price: Money(30_000),
            validity_days: 365,
            clinic_ids: vec![f.clinic_id],
        })],
    )
    .await;
    c.deposit(
        &staff(),
        p1,
        Deposit {
            amount_cents: 100_000,
            reference: "card-p1".to_string(),
        },
    )
    .await
    .unwrap();
    let package = c
        .purchase_package(
            &staff(),
            PurchasePackage {
                package_id: None,
                patient_id: p3,
                program_id: program.0,
                payment: PackagePayment::External {
                    reference: "terminal-7".to_string(),
                },
            },
        )
        .await
        .unwrap()
        .output
        .package_id;

    let laser = f.laser_treatment;
    let r1 = book(
        c,
        p1,
        f.clinic_id,
        f.laser,
        laser,
        berlin(2030, 1, 8, 10, 0),
        PaymentInput::Wallet,
        Some("winter10"),
    )
    .await
    .reservation_id;
    let r2 = book(
        c,
        p2,
        f.clinic_id,
        f.doctor,
        f.consultation,
        berlin(2030, 1, 8, 11, 0),
        PaymentInput::AtClinic,
        None,
    )
    .await
    .reservation_id;
    let r3 = book(
        c,
        p1,
        f.clinic_id,
        f.laser_b,
        laser,
        berlin(2030, 1, 9, 10, 0),
        PaymentInput::Wallet,
        None,
    )
    .await
    .reservation_id;
    let r4 = book(
        c,
        p1,
        f.clinic_id,
        f.laser,
        laser,
        berlin(2030, 1, 8, 14, 0),
        PaymentInput::Wallet,
        None,
    )
    .await
    .reservation_id;
    let r5 = book(
        c,
        p3,
        f.clinic_id,
        f.laser,
        laser,
        berlin(2030, 1, 9, 17, 0),
        PaymentInput::AtClinic,
        None,
    )
    .await
    .reservation_id;
    let r6 = book(
        c,
        p3,
        f.clinic_id,
        f.laser,
        laser,
        berlin(2030, 1, 10, 10, 0),
        PaymentInput::Package {
            package_id: package,
        },
        None,
    )
    .await
    .reservation_id;
    let r7 = book(
        c,
        p1,
        f.clinic_id,
        f.laser_b,
        laser,
        berlin(2030, 1, 10, 9, 0),
        PaymentInput::AtClinic,
        Some("WINTER10"),
    )
    .await
    .reservation_id;
    let r8 = book(
        c,
        p2,
        f.clinic_id,
        f.laser,
        laser,
        berlin(2030, 1, 8, 16, 0),
        PaymentInput::AtClinic,
        None,
    )
    .await
    .reservation_id;
    let w1 = c
        .join_waitlist(
            &staff(),
            JoinWaitlist {
                reservation_id: None,
                patient_id: p4,
                clinic_id: f.clinic_id.0,
                treatment_id: laser.0,
                earliest: berlin(2030, 1, 8, 15, 0),
                latest: berlin(2030, 1, 8, 16, 0),
                payment: PaymentInput::AtClinic,
            },
        )
        .await
        .unwrap()
        .output
        .reservation_id;
    let w2 = c
        .join_waitlist(
            &staff(),
            JoinWaitlist {
                reservation_id: None,
                patient_id: p5,
                clinic_id: f.clinic_id.0,
                treatment_id: laser.0,
                earliest: berlin(2030, 1, 9, 10, 0),
                latest: berlin(2030, 1, 9, 12, 0),
                payment: PaymentInput::Wallet,
            },
        )
        .await
        .unwrap()
        .output
        .reservation_id;
    c.book(
        &staff(),
        BookTreatment {
            reservation_id: Some(w1),
            patient_id: p4,
            clinic_id: f.clinic_id.0,
            resource_id: f.laser_b.0,
            treatment_id: laser.0,
            start: berlin(2030, 1, 8, 15, 0),
            payment: PaymentInput::AtClinic,
            promo_code: None,
        },
    )
    .await
    .unwrap();
    c.reschedule(
        &staff(),
        r8,
        Reschedule {
            start: berlin(2030, 1, 10, 11, 0),
            resource_id: Some(f.laser_b.0),
        },
    )
    .await
    .unwrap();
    c.cancel(
        &staff(),
        r3,
        Cancel {
            reason: "patient asked".to_string(),
        },
    )
    .await
    .unwrap();
    let block = c
        .add_block(
            &staff(),
            f.laser.0,
            AddBlock {
                start: berlin(2030, 1, 9, 16, 30),
                end: berlin(2030, 1, 9, 18, 0),
                reason: "laser service".to_string(),
                emergency: true,
            },
        )
        .await
        .unwrap()
        .output;
    assert_eq!(block.displaced, vec![r5]);
    let closure = c
        .add_closure(
            &staff(),
            f.clinic_id.0,
            AddClosure {
                start: berlin(2030, 1, 10, 8, 0),
                end: berlin(2030, 1, 10, 10, 0),
                reason: "staff meeting".to_string(),
            },
        )
        .await
        .unwrap()
        .output;
    assert_eq!(closure.displaced, vec![r7]);

    // Tuesday 08:00 local.
    w.clock.set(berlin(2030, 1, 8, 8, 0));
    let late = c
        .cancel(
            &staff(),
            r4,
            Cancel {
                reason: "stuck in traffic".to_string(),
            },
        )
        .await
        .unwrap()
        .output;
    assert!(late.late);
    assert_eq!((late.refund_cents, late.fee_cents), (6_000, 6_000));
    c.check_in(&staff(), r1).await.unwrap();
    c.complete(&staff(), r1).await.unwrap();
    c.mark_no_show(&staff(), r2).await.unwrap();

    Scenario {
        f,
        p1,
        p2,
        p3,
        p4,
        p5,
        program: program.0,
        package,
        r1,
        r2,
        r3,
        r4,
        r5,
        r6,
        r7,
        r8,
        w1,
        w2,
        block: block.block_id,
        closure: closure.closure_id,
    }
}
