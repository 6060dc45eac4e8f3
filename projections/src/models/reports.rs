//! The `reports` projection: the facts analysts query — one row per
//! reservation with its clinic-local appointment date, status and money
//! (gross, promo discount, refund), one row per package sale, promo codes
//! and their redemptions — plus its own copy of the clinics' timezone,
//! opening hours, closures, resources, treatments and the programs, so
//! open minutes and names come from here too. The manager's dashboard
//! reads these tables as well (see the module docs of `models`).
//!
//! Revenue rule (API.md): a reservation that was booked adds
//! `base + adjustments` to gross and its promo discount to discount; a
//! cancellation adds to refund what was refunded or not charged; a no-show
//! adds nothing; `net = gross - discount - refund`. What "refunded or not
//! charged" is, per payment, is kept in `refund_cents` when the
//! reservation ends early:
//!
//! | end | wallet | at clinic | package |
//! |---|---|---|---|
//! | cancelled on time | total (refunded) | total (not charged) | total (session restored) |
//! | cancelled late | total − fee | total − fee | 0 (the session is the fee) |
//! | displaced | total | total | total (session restored) |
//! | no-show | 0 | 0 | 0 |
//!
//! A displacement is the clinic's doing and gives everything back, so it
//! counts as a cancellation that refunds the whole total. A waitlist
//! entry never booked adds nothing. Reports select reservations by the
//! clinic-local date of their (current) appointment, so a reschedule to
//! another day moves its revenue; package sales by the local purchase
//! date in the timezone of the package's first clinic.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use clinicbook_domain::package::PackageEvent;
use clinicbook_domain::pricing::Discount;
use clinicbook_domain::program::ProgramEvent;
use clinicbook_domain::promo::PromoEvent;
use clinicbook_domain::reservation::{PaymentKind, ReservationEvent, ReservationStatus, Slot};
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::reservations::payment_columns;
use super::schedule::{ClinicRow, ClosureRow, HoursRow, ResourceRow, SetupTables};
use super::sql::{self, apply_fn, decode, distinct, int_column, row, uuid_id, Index, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "reports",
    tables: &[
        &CLINICS.def,
        &OPENING_HOURS.def,
        &RESOURCES.def,
        &TREATMENTS.def,
        &CLOSURES.def,
        &PROGRAMS.def,
        &PACKAGES.def,
        &RESERVATIONS.def,
        &PROMO_CODES.def,
        &REDEMPTIONS.def,
    ],
    ddl: "",
    kinds: &[
        AggregateKind::Clinic,
        AggregateKind::Program,
        AggregateKind::PromoCode,
        AggregateKind::Package,
        AggregateKind::Reservation,
    ],
    apply: apply_fn!(apply_batch),
};

/// `reports_clinics`: the clinics' names and IANA timezones.
static CLINICS: Table<ClinicRow> = Table::new("reports_clinics", &["clinic_id"], &[]);

/// `reports_opening_hours`: weekly opening hours in clinic-local time.
static OPENING_HOURS: Table<HoursRow> = Table::new(
    "reports_opening_hours",
    &["clinic_id", "weekday", "range_no"],
    &[],
);

/// `reports_resources`: resources; position orders them as they were added.
pub(crate) static RESOURCES: Table<ResourceRow> = Table::new(
    "reports_resources",
    &["resource_id"],
    &[Index::on(
        "reports_resources_clinic",
        "(clinic_id, position)",
    )],
);

/// `reports_closures`: closures of whole clinics, `[starts_at, ends_at)`.
static CLOSURES: Table<ClosureRow> = Table::new(
    "reports_closures",
    &["closure_id"],
    &[Index::on(
        "reports_closures_clinic",
        "(clinic_id, starts_at)",
    )],
);

/// The reports' copy of the clinics' setup.
pub(crate) static SETUP: SetupTables = SetupTables {
    clinics: &CLINICS,
    hours: &OPENING_HOURS,
    resources: &RESOURCES,
    closures: &CLOSURES,
};

row! {
    /// A row of `reports_treatments`: a treatment of a clinic, with its
    /// name and base price.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct TreatmentRow {
        clinic_id: Uuid,
        treatment_id: Uuid,
        name: String,
        price_cents: i64,
    }
}

/// `reports_treatments`.
static TREATMENTS: Table<TreatmentRow> =
    Table::new("reports_treatments", &["clinic_id", "treatment_id"], &[]);

row! {
    /// A row of `reports_programs`: a catalog program.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct ProgramRow {
        program_id: Uuid,
        name: String,
        treatment_id: Uuid,
        /// BIGINT: any `u32` the API takes fits.
        sessions: i64,
        price_cents: i64,
        validity_days: i32,
    }
}

/// `reports_programs`.
static PROGRAMS: Table<ProgramRow> = Table::new("reports_programs", &["program_id"], &[]);

row! {
    /// A row of `reports_packages`: one package sale, with its sessions
    /// used now (`consumed_by`: the reservations holding one).
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct PackageRow {
        package_id: Uuid,
        program_id: Option<Uuid>,
        patient_id: Option<Uuid>,
        purchased_at: Option<DateTime<Utc>>,
        purchase_date: Option<NaiveDate>,
        price_cents: i64,
        /// BIGINT: any `u32` the API takes fits.
        sessions_total: i64,
        sessions_used: i64,
        consumed_by: Vec<Uuid>,
    }
}

/// `reports_packages`.
static PACKAGES: Table<PackageRow> = Table::new(
    "reports_packages",
    &["package_id"],
    &[Index::on("reports_packages_date", "(purchase_date)")],
);

row! {
    /// A row of `reports_reservations`: one reservation, its appointment's
    /// clinic-local date, status and money. `booked`: it held a slot at
    /// some time (only those count in revenue); gross = base +
    /// adjustments; refund as in the module docs.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub(crate) struct ReservationRow {
        reservation_id: Uuid,
        clinic_id: Option<Uuid>,
        treatment_id: Option<Uuid>,
        patient_id: Option<Uuid>,
        resource_id: Option<Uuid>,
        status: ReservationStatus,
        booked: bool,
        local_date: Option<NaiveDate>,
        starts_at: Option<DateTime<Utc>>,
        ends_at: Option<DateTime<Utc>>,
        payment_method: Option<PaymentKind>,
        package_id: Option<Uuid>,
        program_id: Option<Uuid>,
        promo_code: Option<String>,
        gross_cents: i64,
        discount_cents: i64,
        total_cents: i64,
        refund_cents: i64,
        fee_cents: i64,
        earliest: Option<DateTime<Utc>>,
        latest: Option<DateTime<Utc>>,
        waitlisted_position: Option<i64>,
    }
}

/// `reports_reservations`, by local date and clinic, and its waitlist.
pub(crate) static RESERVATIONS: Table<ReservationRow> = Table::new(
    "reports_reservations",
    &["reservation_id"],
    &[
        Index::on("reports_reservations_date", "(local_date, clinic_id)"),
        Index::on("reports_reservations_waitlist", "(clinic_id, earliest)")
            .only(ReservationStatus::Waitlisted),
    ],
);

row! {
    /// A row of `reports_promo_codes`: a promo code and what it takes off.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct PromoCodeRow {
        code: String,
        percent_off: Option<i64>,
        amount_off_cents: Option<i64>,
        valid_from: DateTime<Utc>,
        valid_until: DateTime<Utc>,
        /// BIGINT: any `u32` the API takes fits (an INTEGER column once
        /// stopped the projection at a code allowing 4294967294).
        max_redemptions: i64,
        per_patient_limit: i64,
        active: bool,
    }
}

/// `reports_promo_codes`.
static PROMO_CODES: Table<PromoCodeRow> = Table::new("reports_promo_codes", &["code"], &[]);

row! {
    /// A row of `reports_promo_redemptions`: one redemption of a promo
    /// code; released: given back by a timely cancellation or a
    /// displacement (no longer counts).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct RedemptionRow {
        code: String,
        reservation_id: Uuid,
        patient_id: Uuid,
        released: bool,
    }
}

/// `reports_promo_redemptions`.
static REDEMPTIONS: Table<RedemptionRow> = Table::new(
    "reports_promo_redemptions",
    &["code", "reservation_id"],
    &[],
);

/// The key of a redemption.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct RedemptionKey {
    code: String,
    reservation_id: Uuid,
}

/// The clinic timezones a batch needs, read once.
async fn timezones(
    conn: &mut PgConnection,
    clinic_ids: &[Uuid],
) -> Result<HashMap<Uuid, Tz>, ProjectionError> {
    let zones = CLINICS.load(conn, "clinic_id", clinic_ids).await?;
    Ok(zones
        .into_iter()
        .map(|zone| (zone.clinic_id, zone.timezone))
        .collect())
}

/// The timezone of `clinic` (the clinic of `event`'s stream).
///
/// # Errors
/// [`ProjectionError::Decode`] when the event names no clinic, or one the
/// projection has not seen registered: its local date would be a guess.
fn zone_of(
    zones: &HashMap<Uuid, Tz>,
    clinic: Option<Uuid>,
    event: &FeedEvent,
) -> Result<Tz, ProjectionError> {
    clinic
        .and_then(|id| zones.get(&id))
        .copied()
        .ok_or_else(|| sql::invalid(event, "its clinic's timezone is not known"))
}

/// Applies one clinic event (rare: one statement each).
async fn apply_clinic(conn: &mut PgConnection, event: &FeedEvent) -> Result<(), ProjectionError> {
    if let Some((clinic_id, treatment)) = SETUP.apply(conn, event).await? {
        let row = TreatmentRow {
            clinic_id,
            treatment_id: treatment.treatment_id.0,
            name: treatment.name,
            price_cents: treatment.price.cents(),
        };
        TREATMENTS.upsert(conn, &[row]).await?;
    }
    Ok(())
}

/// Applies one program event.
async fn apply_program(conn: &mut PgConnection, event: &FeedEvent) -> Result<(), ProjectionError> {
    let ProgramEvent::ProgramCreated(program) = decode::<ProgramEvent>(event)?;
    let row = ProgramRow {
        program_id: program.program_id.0,
        name: program.name,
        treatment_id: program.treatment_id.0,
        sessions: i64::from(program.sessions),
        price_cents: program.price.cents(),
        validity_days: int_column(event, "validity_days", program.validity_days)?,
    };
    PROGRAMS.upsert(conn, &[row]).await
}

/// Applies one promo code event that changes the code itself.
async fn apply_promo_code(
    conn: &mut PgConnection,
    event: &FeedEvent,
    change: PromoEvent,
) -> Result<(), ProjectionError> {
    match change {
        PromoEvent::PromoCodeCreated(promo) => {
            let (percent, amount) = match promo.discount {
                Discount::PercentOff(percent) => (Some(percent), None),
                Discount::AmountOff(amount) => (None, Some(amount.cents())),
            };
            let row = PromoCodeRow {
                code: promo.code.as_str().to_owned(),
                percent_off: percent,
                amount_off_cents: amount,
                valid_from: promo.valid_from,
                valid_until: promo.valid_until,
                max_redemptions: i64::from(promo.max_redemptions),
                per_patient_limit: i64::from(promo.per_patient_limit),
                active: true,
            };
            PROMO_CODES.upsert(conn, &[row]).await
        }
        PromoEvent::PromoCodeDeactivated => {
            sqlx::query("UPDATE reports_promo_codes SET active = false WHERE code = $1")
                .bind(&event.aggregate_id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        PromoEvent::PromoRedeemed { .. } | PromoEvent::RedemptionReleased { .. } => Ok(()),
    }
}

/// What a batch does to redemptions: per key, the patient when redeemed
/// in this batch, and whether it ends released.
#[derive(Default)]
struct Redemptions(BTreeMap<RedemptionKey, (Option<Uuid>, bool)>);

impl Redemptions {
    fn apply(&mut self, code: &str, change: &PromoEvent) {
        let key = |reservation_id: Uuid| RedemptionKey {
            code: code.to_owned(),
            reservation_id,
        };
        match change {
            PromoEvent::PromoRedeemed {
                reservation_id,
                patient_id,
            } => {
                self.0
                    .insert(key(reservation_id.0), (Some(patient_id.0), false));
            }
            PromoEvent::RedemptionReleased { reservation_id } => {
                self.0
                    .entry(key(reservation_id.0))
                    .or_insert((None, true))
                    .1 = true;
            }
            _ => {}
        }
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let mut rows = Vec::new();
        let mut released = Vec::new();
        for (key, (patient_id, gone)) in self.0 {
            match patient_id {
                Some(patient_id) => rows.push(RedemptionRow {
                    code: key.code,
                    reservation_id: key.reservation_id,
                    patient_id,
                    released: gone,
                }),
                None => released.push(key),
            }
        }
        REDEMPTIONS.upsert(conn, &rows).await?;
        if !released.is_empty() {
            sqlx::query(
                "UPDATE reports_promo_redemptions r SET released = true
                   FROM json_to_recordset($1::json) AS x(code text, reservation_id uuid)
                  WHERE r.code = x.code AND r.reservation_id = x.reservation_id",
            )
            .bind(Json(&released))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// Applies the batch's package events: sales and sessions used.
async fn apply_packages(
    conn: &mut PgConnection,
    events: &[&FeedEvent],
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows: HashMap<Uuid, PackageRow> = PACKAGES
        .load_streams(conn, events, |row: &PackageRow| row.package_id)
        .await?;
    let mut changes = Vec::with_capacity(events.len());
    let mut first_clinics = Vec::new();
    for event in events {
        let change: PackageEvent = decode(event)?;
        if let PackageEvent::PackagePurchased { clinic_ids, .. } = &change {
            first_clinics.extend(clinic_ids.first().map(|id| id.0));
        }
        changes.push((*event, uuid_id(event)?, change));
    }
    let zones = timezones(conn, &first_clinics).await?;
    for (event, id, change) in changes {
        let row = rows.entry(id).or_insert_with(|| PackageRow {
            package_id: id,
            ..PackageRow::default()
        });
        match change {
            PackageEvent::PackagePurchased {
                patient_id,
                program_id,
                sessions,
                price,
                clinic_ids,
                purchased_at,
                ..
            } => {
                let tz = zone_of(&zones, clinic_ids.first().map(|clinic| clinic.0), event)?;
                row.program_id = Some(program_id.0);
                row.patient_id = Some(patient_id.0);
                row.purchased_at = Some(purchased_at);
                row.purchase_date = Some(purchased_at.with_timezone(&tz).date_naive());
                row.price_cents = price.cents();
                row.sessions_total = i64::from(sessions);
            }
            PackageEvent::SessionConsumed { reservation_id } => {
                let left = row.sessions_total - row.sessions_used;
                if !row.consumed_by.contains(&reservation_id.0) && left > 0 {
                    row.consumed_by.push(reservation_id.0);
                }
            }
            PackageEvent::SessionRestored { reservation_id } => {
                row.consumed_by.retain(|held| *held != reservation_id.0);
            }
            PackageEvent::PackageTransferred { .. } => {}
        }
        row.sessions_used = i64::from(int_column(event, "sessions used", row.consumed_by.len())?);
    }
    PACKAGES.upsert_all(conn, rows).await
}

impl ReservationRow {
    fn set_slot(&mut self, slot: &Slot, tz: Tz) {
        self.resource_id = Some(slot.resource_id.0);
        self.starts_at = Some(slot.start);
        self.ends_at = Some(slot.end);
        self.local_date = Some(slot.start.with_timezone(&tz).date_naive());
    }

    fn apply(
        &mut self,
        change: ReservationEvent,
        zones: &HashMap<Uuid, Tz>,
        event: &FeedEvent,
    ) -> Result<(), ProjectionError> {
        let tz = |clinic: Option<Uuid>| zone_of(zones, clinic, event);
        let position = event.position;
        let status = match change {
            ReservationEvent::ReservationBooked {
                clinic_id,
                patient_id,
                treatment_id,
                slot,
                price,
                payment,
                promo_code,
                ..
            } => {
                self.clinic_id = Some(clinic_id.0);
                self.patient_id = Some(patient_id.0);
                self.treatment_id = Some(treatment_id.0);
                self.booked = true;
                self.set_slot(&slot, tz(self.clinic_id)?);
                let (method, package) = payment_columns(&payment);
                (self.payment_method, self.package_id) = (Some(method), package);
                self.promo_code = promo_code.map(String::from);
                self.gross_cents = (price.base + price.adjustments).cents();
                self.discount_cents = price.discount.cents();
                self.total_cents = price.total.cents();
                ReservationStatus::Booked
            }
            ReservationEvent::WaitlistJoined(entry) => {
                self.clinic_id = Some(entry.clinic_id.0);
                self.patient_id = Some(entry.patient_id.0);
                self.treatment_id = Some(entry.treatment_id.0);
                self.earliest = Some(entry.earliest);
                self.latest = Some(entry.latest);
                let (method, package) = payment_columns(&entry.payment);
                (self.payment_method, self.package_id) = (Some(method), package);
                self.waitlisted_position = Some(position);
                ReservationStatus::Waitlisted
            }
            ReservationEvent::ReservationRescheduled { to, .. } => {
                self.set_slot(&to, tz(self.clinic_id)?);
                return Ok(());
            }
            ReservationEvent::ReminderDue { .. } => return Ok(()),
            ReservationEvent::ReservationCancelled { outcome, .. } => {
                self.fee_cents = outcome.fee.cents();
                self.refund_cents = if self.payment_method == Some(PaymentKind::Package) {
                    if outcome.session_restored {
                        self.total_cents
                    } else {
                        0
                    }
                } else {
                    self.total_cents - outcome.fee.cents()
                };
                ReservationStatus::Cancelled
            }
            ReservationEvent::CheckedIn { .. } => ReservationStatus::CheckedIn,
            ReservationEvent::ReservationCompleted { .. } => ReservationStatus::Completed,
            ReservationEvent::MarkedNoShow { outcome, .. } => {
                self.fee_cents = outcome.fee.cents();
                self.refund_cents = 0;
                ReservationStatus::NoShow
            }
            ReservationEvent::ReservationDisplaced { outcome, .. } => {
                self.fee_cents = outcome.fee.cents();
                self.refund_cents = self.total_cents;
                ReservationStatus::Displaced
            }
        };
        self.status = status;
        Ok(())
    }
}

/// Applies the batch's reservation events (after its packages, whose
/// programs a package booking is reported under).
async fn apply_reservations(
    conn: &mut PgConnection,
    events: &[&FeedEvent],
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut changes = Vec::with_capacity(events.len());
    let mut clinics = Vec::new();
    let mut packages = Vec::new();
    for event in events {
        let id = uuid_id(event)?;
        let change: ReservationEvent = decode(event)?;
        match &change {
            ReservationEvent::ReservationBooked {
                clinic_id, payment, ..
            } => {
                clinics.push(clinic_id.0);
                packages.extend(payment_columns(payment).1);
            }
            ReservationEvent::WaitlistJoined(entry) => clinics.push(entry.clinic_id.0),
            _ => {}
        }
        ids.push(id);
        changes.push((*event, id, change));
    }
    let ids = distinct(ids);
    let mut rows: HashMap<Uuid, ReservationRow> = RESERVATIONS
        .load_by(conn, &ids, |row: &ReservationRow| row.reservation_id)
        .await?;
    clinics.extend(rows.values().filter_map(|row| row.clinic_id));
    let zones = timezones(conn, &distinct(clinics)).await?;
    let programs = programs_of(conn, &packages).await?;
    for (event, id, change) in changes {
        let row = rows.entry(id).or_insert_with(|| ReservationRow {
            reservation_id: id,
            ..ReservationRow::default()
        });
        let booked = matches!(change, ReservationEvent::ReservationBooked { .. });
        row.apply(change, &zones, event)?;
        if booked {
            row.program_id = row.package_id.and_then(|id| programs.get(&id).copied());
        }
    }
    RESERVATIONS.upsert_all(conn, rows).await
}

/// The program of each of `packages`.
async fn programs_of(
    conn: &mut PgConnection,
    packages: &[Uuid],
) -> Result<HashMap<Uuid, Uuid>, ProjectionError> {
    let rows = PACKAGES.load(conn, "package_id", packages).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.package_id, row.program_id?)))
        .collect())
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    // Clinic, program and promo code changes first: reservations and
    // packages later in the feed read their timezones and programs, and
    // what they set (names, hours, timezones) depends on nothing else.
    let mut packages = Vec::new();
    let mut reservations = Vec::new();
    let mut redemptions = Redemptions::default();
    for event in events {
        match event.kind() {
            Some(AggregateKind::Clinic) => apply_clinic(conn, event).await?,
            Some(AggregateKind::Program) => apply_program(conn, event).await?,
            Some(AggregateKind::PromoCode) => {
                let change: PromoEvent = decode(event)?;
                redemptions.apply(&event.aggregate_id, &change);
                apply_promo_code(conn, event, change).await?;
            }
            Some(AggregateKind::Package) => packages.push(event),
            Some(AggregateKind::Reservation) => reservations.push(event),
            _ => {}
        }
    }
    redemptions.write(conn).await?;
    apply_packages(conn, &packages).await?;
    apply_reservations(conn, &reservations).await?;
    Ok(())
}
