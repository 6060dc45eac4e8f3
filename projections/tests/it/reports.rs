//! Reports and the dashboard over the fixed scenario, against numbers
//! computed by hand (see `scenario.rs` for what happened).
//!
//! Revenue per reservation (gross = base + adjustments):
//!
//! | res | day | gross | discount | refund | why |
//! |---|---|---|---|---|---|
//! | R1 | Tue | 12000 | 1200 | 0 | completed, 10 % promo |
//! | R2 | Tue | 5000 | 0 | 0 | no-show: nothing given back |
//! | R4 | Tue | 12000 | 0 | 6000 | late cancel: 50 % fee kept |
//! | W1 | Tue | 12000 | 0 | 0 | waitlist entry, booked |
//! | R3 | Wed | 12000 | 0 | 12000 | cancelled on time |
//! | R5 | Wed | 14400 | 0 | 14400 | peak +20 %, displaced by a block |
//! | R6 | Thu | 12000 | 0 | 0 | package session |
//! | R7 | Thu | 12000 | 1200 | 10800 | promo, displaced by a closure |
//! | R8 | Thu | 12000 | 0 | 0 | moved from Tue (Laser A) to Thu (Laser B) |

use chrono::Duration;
use clinicbook_projections::query::csv::ToCsv;
use clinicbook_projections::query::reports::{DateRange, RevenueGrouping};
use clinicbook_projections::ProjectionError;

use crate::common::{berlin, date, world};
use crate::scenario;

fn range(from: &str, to: &str) -> DateRange {
    DateRange::new(date(from), date(to)).unwrap()
}

/// (group, gross, discount, refund, net) of each row.
fn money(
    report: &clinicbook_projections::query::reports::RevenueReport,
) -> Vec<(String, i64, i64, i64, i64)> {
    report
        .rows
        .iter()
        .map(|r| {
            (
                r.group.clone(),
                r.gross_cents,
                r.discount_cents,
                r.refund_cents,
                r.net_cents,
            )
        })
        .collect()
}

#[tokio::test]
async fn revenue_reservations_packages_utilisation_promo_and_dashboard_by_hand() {
    let w = world().await;
    let s = scenario::build(&w).await;
    w.catch_up().await;
    let week = range("2030-01-07", "2030-01-13");
    let clinic = Some(s.f.clinic_id.0);

    // Revenue by day.
    let by_day = w
        .read
        .revenue(week, clinic, RevenueGrouping::Day)
        .await
        .unwrap();
    assert_eq!(
        money(&by_day),
        vec![
            ("2030-01-08".to_string(), 41_000, 1_200, 6_000, 33_800),
            ("2030-01-09".to_string(), 26_400, 0, 26_400, 0),
            ("2030-01-10".to_string(), 36_000, 1_200, 10_800, 24_000),
        ]
    );
    // By clinic.
    let by_clinic = w
        .read
        .revenue(week, None, RevenueGrouping::Clinic)
        .await
        .unwrap();
    assert_eq!(
        money(&by_clinic),
        vec![(s.f.clinic_id.to_string(), 103_400, 2_400, 43_200, 57_800)]
    );
    assert_eq!(by_clinic.rows[0].name.as_deref(), Some("Berlin Mitte"));
    assert_eq!(by_clinic.rows[0].reservations, 9);
    // By treatment (sorted by id text).
    let by_treatment = w
        .read
        .revenue(week, clinic, RevenueGrouping::Treatment)
        .await
        .unwrap();
    let mut expected = vec![
        (
            s.f.laser_treatment.to_string(),
            98_400,
            2_400,
            43_200,
            52_800,
        ),
        (s.f.consultation.to_string(), 5_000, 0, 0, 5_000),
    ];
    expected.sort();
    assert_eq!(money(&by_treatment), expected);
    // By program: R6 was paid by a session of "Laser x3".
    let by_program = w
        .read
        .revenue(week, clinic, RevenueGrouping::Program)
        .await
        .unwrap();
    let mut expected = vec![
        (s.program.to_string(), 12_000, 0, 0, 12_000),
        ("none".to_string(), 91_400, 2_400, 43_200, 45_800),
    ];
    expected.sort();
    assert_eq!(money(&by_program), expected);
    // One day only; a range without appointments.
    let tuesday = w
        .read
        .revenue(
            range("2030-01-08", "2030-01-08"),
            clinic,
            RevenueGrouping::Clinic,
        )
        .await
        .unwrap();
    assert_eq!(money(&tuesday)[0].4, 33_800);
    let empty = w
        .read
        .revenue(
            range("2030-02-01", "2030-02-28"),
            None,
            RevenueGrouping::Day,
        )
        .await
        .unwrap();
    assert!(empty.rows.is_empty());

    // Reservations by status: 9 booked at some time; the waiting W2 has
    // no appointment date.
    let reservations = w.read.reservations_report(week, clinic).await.unwrap();
    let row = &reservations.rows[0];
    assert_eq!(
        (
            row.booked,
            row.checked_in,
            row.completed,
            row.cancelled,
            row.no_show,
            row.displaced,
            row.total
        ),
        (3, 0, 1, 2, 1, 2, 9)
    );
    assert_eq!(row.cancellation_rate, 0.2222);
    assert_eq!(row.no_show_rate, 0.1111);

    // Package sales by purchase date (Monday).
    let packages = w.read.packages_report(week).await.unwrap();
    assert_eq!(packages.rows.len(), 1);
    let p = &packages.rows[0];
    assert_eq!(p.program_id, s.program);
    assert_eq!(p.name.as_deref(), Some("Laser x3"));
    assert_eq!(
        (
            p.sold,
            p.revenue_cents,
            p.sessions_total,
            p.sessions_used,
            p.sessions_left
        ),
        (1, 30_000, 3, 1, 2)
    );
    let later = w
        .read
        .packages_report(range("2030-01-08", "2030-01-31"))
        .await
        .unwrap();
    assert!(later.rows.is_empty());

    // Utilisation, Tuesday to Thursday: open 09:00-18:00 = 540 min; the
    // closure takes Thursday's 09:00-10:00 (480 min); appointments
    // holding their slot count without buffer.
    let utilisation = w
        .read
        .utilization(range("2030-01-08", "2030-01-10"), clinic)
        .await
        .unwrap();
    let got: Vec<(String, String, i64, i64, f64)> = utilisation
        .rows
        .iter()
        .map(|r| {
            (
                r.resource_name.clone(),
                r.date.to_string(),
                r.open_minutes,
                r.booked_minutes,
                r.percent,
            )
        })
        .collect();
    let row = |name: &str, day: &str, open, booked, percent| {
        (name.to_string(), day.to_string(), open, booked, percent)
    };
    assert_eq!(
        got,
        vec![
            row("Room 1", "2030-01-08", 540, 0, 0.0),
            row("Room 1", "2030-01-09", 540, 0, 0.0),
            row("Room 1", "2030-01-10", 480, 0, 0.0),
            // R1 (completed); R4 cancelled, R5 displaced, R8 moved away.
            row("Laser A", "2030-01-08", 540, 45, 8.3),
            row("Laser A", "2030-01-09", 540, 0, 0.0),
            // R6.
            row("Laser A", "2030-01-10", 480, 45, 9.4),
            // W1.
            row("Laser B", "2030-01-08", 540, 45, 8.3),
            // R3 cancelled.
            row("Laser B", "2030-01-09", 540, 0, 0.0),
            // R8 moved here; R7 displaced.
            row("Laser B", "2030-01-10", 480, 45, 9.4),
            // R2, a no-show, still held the practitioner.
            row("Dr. Weber", "2030-01-08", 540, 30, 5.6),
            row("Dr. Weber", "2030-01-09", 540, 0, 0.0),
            row("Dr. Weber", "2030-01-10", 480, 0, 0.0),
        ]
    );

    // Promo use: R1 keeps its redemption; R7's was given back by the
    // displacement.
    let promo = w.read.promo_codes().await.unwrap();
    assert_eq!(promo.rows.len(), 1);
    let code = &promo.rows[0];
    assert_eq!(
        (
            code.code.as_str(),
            code.redemptions,
            code.released,
            code.discount_cents
        ),
        ("WINTER10", 1, 1, 1_200)
    );

    // Dashboard of Tuesday at 09:30 local: R1 completed, R2 no-show, R4
    // cancelled, W1 booked (15:00) and not over.
    let now = berlin(2030, 1, 8, 9, 30);
    let tuesday = w
        .read
        .dashboard(s.f.clinic_id.0, date("2030-01-08"), now)
        .await
        .unwrap();
    assert_eq!(
        (
            tuesday.counts.booked,
            tuesday.counts.checked_in,
            tuesday.counts.completed,
            tuesday.counts.cancelled,
            tuesday.counts.no_show,
            tuesday.counts.displaced,
            tuesday.counts.waitlisted,
        ),
        (1, 0, 1, 1, 1, 0, 0)
    );
    assert_eq!(tuesday.revenue_cents, 33_800);
    // 45 + 45 + 30 booked of 4 × 540 open.
    assert_eq!(tuesday.occupancy_percent, 5.6);
    let next: Vec<_> = tuesday
        .next_appointments
        .iter()
        .map(|a| a.reservation_id)
        .collect();
    assert_eq!(next, vec![s.w1]);
    // Wednesday: W2 waits for a slot; R5 displaced, to rebook.
    let wednesday = w
        .read
        .dashboard(s.f.clinic_id.0, date("2030-01-09"), now)
        .await
        .unwrap();
    assert_eq!(wednesday.waitlist_length, 1);
    assert_eq!(wednesday.counts.waitlisted, 1);
    let displaced: Vec<_> = wednesday
        .displaced_to_rebook
        .iter()
        .map(|a| a.reservation_id)
        .collect();
    assert_eq!(displaced, vec![s.r5]);
    assert_eq!(wednesday.revenue_cents, 0);

    // The same rows as CSV.
    let csv = by_day.to_csv();
    assert_eq!(
        csv,
        "group,name,gross_cents,discount_cents,refund_cents,net_cents,reservations\r\n\
         2030-01-08,,41000,1200,6000,33800,4\r\n\
         2030-01-09,,26400,0,26400,0,2\r\n\
         2030-01-10,,36000,1200,10800,24000,3\r\n"
    );
    assert_eq!(utilisation.to_csv().lines().count(), 13);
    assert!(promo.to_csv().contains("WINTER10,1,1,1200,10,true"));
}

#[tokio::test]
async fn reports_refuse_bad_ranges_groupings_and_unknown_clinics() {
    let w = world().await;
    w.catch_up().await;
    let day = date("2030-01-08");
    assert!(matches!(
        DateRange::new(day, day - Duration::days(1)),
        Err(ProjectionError::Inconsistent { field: "to", .. })
    ));
    assert!(DateRange::new(day, day + Duration::days(365)).is_ok());
    assert!(matches!(
        DateRange::new(day, day + Duration::days(366)),
        Err(ProjectionError::Inconsistent { field: "to", .. })
    ));
    assert!(matches!(
        "week".parse::<RevenueGrouping>(),
        Err(ProjectionError::Invalid {
            field: "group_by",
            ..
        })
    ));
    let unknown = Some(uuid::Uuid::new_v4());
    let week = range("2030-01-07", "2030-01-13");
    assert!(matches!(
        w.read.revenue(week, unknown, RevenueGrouping::Day).await,
        Err(ProjectionError::NotFound(_))
    ));
    assert!(matches!(
        w.read.utilization(week, unknown).await,
        Err(ProjectionError::NotFound(_))
    ));
    assert!(matches!(
        w.read
            .dashboard(uuid::Uuid::new_v4(), day, berlin(2030, 1, 8, 9, 0))
            .await,
        Err(ProjectionError::NotFound(_))
    ));
}
