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
use clinicbook_domain::clinic::ClinicEvent;
use clinicbook_domain::package::PackageEvent;
use clinicbook_domain::pricing::Discount;
use clinicbook_domain::program::ProgramEvent;
use clinicbook_domain::promo::PromoEvent;
use clinicbook_domain::reservation::{ReservationEvent, ReservationStatus, Slot};
use clinicbook_eventstore::FeedEvent;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::reservations::payment_columns;
use super::schedule::{hours_rows, kind_name};
use super::sql::{decode, uuid_id, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "reports",
    ddl: DDL,
    apply,
};

const DDL: &str = r"
-- Clinics: name and IANA timezone.
CREATE TABLE IF NOT EXISTS reports_clinics (
    clinic_id uuid PRIMARY KEY,
    name      text NOT NULL,
    timezone  text NOT NULL
);

-- Weekly opening hours in clinic-local time; weekday 0 is Monday.
CREATE TABLE IF NOT EXISTS reports_opening_hours (
    clinic_id uuid     NOT NULL,
    weekday   smallint NOT NULL,
    range_no  smallint NOT NULL,
    opens     time     NOT NULL,
    closes    time     NOT NULL,
    PRIMARY KEY (clinic_id, weekday, range_no)
);

-- Resources; position orders them as they were added.
CREATE TABLE IF NOT EXISTS reports_resources (
    resource_id uuid PRIMARY KEY,
    clinic_id   uuid   NOT NULL,
    name        text   NOT NULL,
    kind        text   NOT NULL,
    position    bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_resources_clinic ON reports_resources (clinic_id, position);

-- Treatments of each clinic.
CREATE TABLE IF NOT EXISTS reports_treatments (
    clinic_id    uuid NOT NULL,
    treatment_id uuid NOT NULL,
    name         text NOT NULL,
    price_cents  bigint NOT NULL,
    PRIMARY KEY (clinic_id, treatment_id)
);

-- Closures of whole clinics, [starts_at, ends_at).
CREATE TABLE IF NOT EXISTS reports_closures (
    closure_id uuid PRIMARY KEY,
    clinic_id  uuid NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    reason     text NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_closures_clinic ON reports_closures (clinic_id, starts_at);

-- Catalog programs.
CREATE TABLE IF NOT EXISTS reports_programs (
    program_id    uuid PRIMARY KEY,
    name          text    NOT NULL,
    treatment_id  uuid    NOT NULL,
    sessions      integer NOT NULL,
    price_cents   bigint  NOT NULL,
    validity_days integer NOT NULL
);

-- Package sales: one row per package, with its sessions used now
-- (consumed_by: the reservations holding one).
CREATE TABLE IF NOT EXISTS reports_packages (
    package_id     uuid PRIMARY KEY,
    program_id     uuid,
    patient_id     uuid,
    purchased_at   timestamptz,
    purchase_date  date,
    price_cents    bigint  NOT NULL,
    sessions_total integer NOT NULL,
    sessions_used  integer NOT NULL,
    consumed_by    uuid[]  NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_packages_date ON reports_packages (purchase_date);

-- One row per reservation: its appointment's clinic-local date, status
-- and money. booked: it held a slot at some time (only those count in
-- revenue). gross = base + adjustments; refund as in the module docs.
CREATE TABLE IF NOT EXISTS reports_reservations (
    reservation_id      uuid PRIMARY KEY,
    clinic_id           uuid,
    treatment_id        uuid,
    patient_id          uuid,
    resource_id         uuid,
    status              text    NOT NULL,
    booked              boolean NOT NULL,
    local_date          date,
    starts_at           timestamptz,
    ends_at             timestamptz,
    payment_method      text,
    package_id          uuid,
    program_id          uuid,
    promo_code          text,
    gross_cents         bigint  NOT NULL,
    discount_cents      bigint  NOT NULL,
    total_cents         bigint  NOT NULL,
    refund_cents        bigint  NOT NULL,
    fee_cents           bigint  NOT NULL,
    earliest            timestamptz,
    latest              timestamptz,
    waitlisted_position bigint
);
CREATE INDEX IF NOT EXISTS reports_reservations_date ON reports_reservations (local_date, clinic_id);
CREATE INDEX IF NOT EXISTS reports_reservations_waitlist
    ON reports_reservations (clinic_id, earliest) WHERE status = 'waitlisted';

-- Promo codes and what they take off.
CREATE TABLE IF NOT EXISTS reports_promo_codes (
    code              text PRIMARY KEY,
    percent_off       bigint,
    amount_off_cents  bigint,
    valid_from        timestamptz NOT NULL,
    valid_until       timestamptz NOT NULL,
    max_redemptions   integer NOT NULL,
    per_patient_limit integer NOT NULL,
    active            boolean NOT NULL
);

-- Every redemption of a promo code; released: given back by a timely
-- cancellation or a displacement (no longer counts).
CREATE TABLE IF NOT EXISTS reports_promo_redemptions (
    code           text    NOT NULL,
    reservation_id uuid    NOT NULL,
    patient_id     uuid    NOT NULL,
    released       boolean NOT NULL,
    PRIMARY KEY (code, reservation_id)
);
";

static CLINICS: Table = Table {
    name: "reports_clinics",
    key: &["clinic_id"],
    columns: &[
        ("clinic_id", "uuid"),
        ("name", "text"),
        ("timezone", "text"),
    ],
};

static OPENING_HOURS: Table = Table {
    name: "reports_opening_hours",
    key: &["clinic_id", "weekday", "range_no"],
    columns: &[
        ("clinic_id", "uuid"),
        ("weekday", "smallint"),
        ("range_no", "smallint"),
        ("opens", "time"),
        ("closes", "time"),
    ],
};

static RESOURCES: Table = Table {
    name: "reports_resources",
    key: &["resource_id"],
    columns: &[
        ("resource_id", "uuid"),
        ("clinic_id", "uuid"),
        ("name", "text"),
        ("kind", "text"),
        ("position", "bigint"),
    ],
};

static TREATMENTS: Table = Table {
    name: "reports_treatments",
    key: &["clinic_id", "treatment_id"],
    columns: &[
        ("clinic_id", "uuid"),
        ("treatment_id", "uuid"),
        ("name", "text"),
        ("price_cents", "bigint"),
    ],
};

static CLOSURES: Table = Table {
    name: "reports_closures",
    key: &["closure_id"],
    columns: &[
        ("closure_id", "uuid"),
        ("clinic_id", "uuid"),
        ("starts_at", "timestamptz"),
        ("ends_at", "timestamptz"),
        ("reason", "text"),
    ],
};

static PROGRAMS: Table = Table {
    name: "reports_programs",
    key: &["program_id"],
    columns: &[
        ("program_id", "uuid"),
        ("name", "text"),
        ("treatment_id", "uuid"),
        ("sessions", "integer"),
        ("price_cents", "bigint"),
        ("validity_days", "integer"),
    ],
};

static PACKAGES: Table = Table {
    name: "reports_packages",
    key: &["package_id"],
    columns: &[
        ("package_id", "uuid"),
        ("program_id", "uuid"),
        ("patient_id", "uuid"),
        ("purchased_at", "timestamptz"),
        ("purchase_date", "date"),
        ("price_cents", "bigint"),
        ("sessions_total", "integer"),
        ("sessions_used", "integer"),
        ("consumed_by", "uuid[]"),
    ],
};

pub(crate) static RESERVATIONS: Table = Table {
    name: "reports_reservations",
    key: &["reservation_id"],
    columns: &[
        ("reservation_id", "uuid"),
        ("clinic_id", "uuid"),
        ("treatment_id", "uuid"),
        ("patient_id", "uuid"),
        ("resource_id", "uuid"),
        ("status", "text"),
        ("booked", "boolean"),
        ("local_date", "date"),
        ("starts_at", "timestamptz"),
        ("ends_at", "timestamptz"),
        ("payment_method", "text"),
        ("package_id", "uuid"),
        ("program_id", "uuid"),
        ("promo_code", "text"),
        ("gross_cents", "bigint"),
        ("discount_cents", "bigint"),
        ("total_cents", "bigint"),
        ("refund_cents", "bigint"),
        ("fee_cents", "bigint"),
        ("earliest", "timestamptz"),
        ("latest", "timestamptz"),
        ("waitlisted_position", "bigint"),
    ],
};

static PROMO_CODES: Table = Table {
    name: "reports_promo_codes",
    key: &["code"],
    columns: &[
        ("code", "text"),
        ("percent_off", "bigint"),
        ("amount_off_cents", "bigint"),
        ("valid_from", "timestamptz"),
        ("valid_until", "timestamptz"),
        ("max_redemptions", "integer"),
        ("per_patient_limit", "integer"),
        ("active", "boolean"),
    ],
};

static REDEMPTIONS: Table = Table {
    name: "reports_promo_redemptions",
    key: &["code", "reservation_id"],
    columns: &[
        ("code", "text"),
        ("reservation_id", "uuid"),
        ("patient_id", "uuid"),
        ("released", "boolean"),
    ],
};

/// A row of `reports_reservations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReservationRow {
    pub reservation_id: Uuid,
    pub clinic_id: Option<Uuid>,
    pub treatment_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub resource_id: Option<Uuid>,
    pub status: String,
    pub booked: bool,
    pub local_date: Option<NaiveDate>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub payment_method: Option<String>,
    pub package_id: Option<Uuid>,
    pub program_id: Option<Uuid>,
    pub promo_code: Option<String>,
    pub gross_cents: i64,
    pub discount_cents: i64,
    pub total_cents: i64,
    pub refund_cents: i64,
    pub fee_cents: i64,
    pub earliest: Option<DateTime<Utc>>,
    pub latest: Option<DateTime<Utc>>,
    pub waitlisted_position: Option<i64>,
}

/// A row of `reports_packages`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct PackageRow {
    package_id: Uuid,
    program_id: Option<Uuid>,
    patient_id: Option<Uuid>,
    purchased_at: Option<DateTime<Utc>>,
    purchase_date: Option<NaiveDate>,
    price_cents: i64,
    sessions_total: i32,
    sessions_used: i32,
    consumed_by: Vec<Uuid>,
}

/// A row of `reports_promo_redemptions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RedemptionRow {
    code: String,
    reservation_id: Uuid,
    patient_id: Uuid,
    released: bool,
}

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
    #[derive(Deserialize)]
    struct Zone {
        clinic_id: Uuid,
        timezone: String,
    }
    let zones: Vec<Zone> = CLINICS.load(conn, "clinic_id", clinic_ids).await?;
    Ok(zones
        .into_iter()
        .map(|zone| (zone.clinic_id, zone.timezone.parse().unwrap_or(Tz::UTC)))
        .collect())
}

/// Applies one clinic event (rare: one statement each).
async fn apply_clinic(conn: &mut PgConnection, event: &FeedEvent) -> Result<(), ProjectionError> {
    let clinic_id = uuid_id(event)?;
    match decode::<ClinicEvent>(event)? {
        ClinicEvent::ClinicRegistered { name, timezone, .. } => {
            let row = serde_json::json!({
                "clinic_id": clinic_id, "name": name, "timezone": timezone,
            });
            CLINICS.upsert(conn, &[row]).await?;
        }
        ClinicEvent::OpeningHoursSet { hours } => {
            sqlx::query("DELETE FROM reports_opening_hours WHERE clinic_id = $1")
                .bind(clinic_id)
                .execute(&mut *conn)
                .await?;
            OPENING_HOURS
                .upsert(conn, &hours_rows(clinic_id, &hours))
                .await?;
        }
        ClinicEvent::ResourceAdded { resource } => {
            let row = serde_json::json!({
                "resource_id": resource.resource_id, "clinic_id": clinic_id,
                "name": resource.name, "kind": kind_name(resource.kind),
                "position": event.position,
            });
            RESOURCES.upsert(conn, &[row]).await?;
        }
        ClinicEvent::TreatmentAdded { treatment } => {
            let row = serde_json::json!({
                "clinic_id": clinic_id, "treatment_id": treatment.treatment_id,
                "name": treatment.name, "price_cents": treatment.price.cents(),
            });
            TREATMENTS.upsert(conn, &[row]).await?;
        }
        ClinicEvent::ClosureAdded { closure } => {
            let row = serde_json::json!({
                "closure_id": closure.closure_id, "clinic_id": clinic_id,
                "starts_at": closure.start, "ends_at": closure.end, "reason": closure.reason,
            });
            CLOSURES.upsert(conn, &[row]).await?;
        }
        ClinicEvent::PricingRulesSet { .. } => {}
    }
    Ok(())
}

/// Applies one program event.
async fn apply_program(conn: &mut PgConnection, event: &FeedEvent) -> Result<(), ProjectionError> {
    let ProgramEvent::ProgramCreated {
        program_id,
        name,
        treatment_id,
        sessions,
        price,
        validity_days,
        ..
    } = decode::<ProgramEvent>(event)?;
    let row = serde_json::json!({
        "program_id": program_id, "name": name, "treatment_id": treatment_id,
        "sessions": sessions, "price_cents": price.cents(), "validity_days": validity_days,
    });
    PROGRAMS.upsert(conn, &[row]).await
}

/// Applies one promo code event that changes the code itself.
async fn apply_promo_code(
    conn: &mut PgConnection,
    event: &FeedEvent,
    change: PromoEvent,
) -> Result<(), ProjectionError> {
    match change {
        PromoEvent::PromoCodeCreated {
            code,
            discount,
            valid_from,
            valid_until,
            max_redemptions,
            per_patient_limit,
            ..
        } => {
            let (percent, amount) = match discount {
                Discount::PercentOff(percent) => (Some(percent), None),
                Discount::AmountOff(amount) => (None, Some(amount.cents())),
            };
            let row = serde_json::json!({
                "code": code.as_str(), "percent_off": percent, "amount_off_cents": amount,
                "valid_from": valid_from, "valid_until": valid_until,
                "max_redemptions": max_redemptions, "per_patient_limit": per_patient_limit,
                "active": true,
            });
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
    let mut ids = Vec::new();
    for event in events {
        ids.push(uuid_id(event)?);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut rows: HashMap<Uuid, PackageRow> = PACKAGES
        .load::<PackageRow, _>(conn, "package_id", &ids)
        .await?
        .into_iter()
        .map(|row| (row.package_id, row))
        .collect();
    let mut changes = Vec::with_capacity(events.len());
    let mut first_clinics = Vec::new();
    for event in events {
        let change: PackageEvent = decode(event)?;
        if let PackageEvent::PackagePurchased { clinic_ids, .. } = &change {
            first_clinics.extend(clinic_ids.first().map(|id| id.0));
        }
        changes.push((uuid_id(event)?, change));
    }
    let zones = timezones(conn, &first_clinics).await?;
    for (id, change) in changes {
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
                let tz = clinic_ids
                    .first()
                    .and_then(|clinic| zones.get(&clinic.0))
                    .copied()
                    .unwrap_or(Tz::UTC);
                row.program_id = Some(program_id.0);
                row.patient_id = Some(patient_id.0);
                row.purchased_at = Some(purchased_at);
                row.purchase_date = Some(purchased_at.with_timezone(&tz).date_naive());
                row.price_cents = price.cents();
                row.sessions_total = i32::try_from(sessions).unwrap_or(i32::MAX);
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
        row.sessions_used = i32::try_from(row.consumed_by.len()).unwrap_or(i32::MAX);
    }
    let mut rows: Vec<PackageRow> = rows.into_values().collect();
    rows.sort_by_key(|row| row.package_id);
    PACKAGES.upsert(conn, &rows).await
}

impl ReservationRow {
    fn set_slot(&mut self, slot: &Slot, tz: Tz) {
        self.resource_id = Some(slot.resource_id.0);
        self.starts_at = Some(slot.start);
        self.ends_at = Some(slot.end);
        self.local_date = Some(slot.start.with_timezone(&tz).date_naive());
    }

    fn apply(&mut self, change: ReservationEvent, zones: &HashMap<Uuid, Tz>, position: i64) {
        let tz = |clinic: Option<Uuid>| {
            clinic
                .and_then(|id| zones.get(&id))
                .copied()
                .unwrap_or(Tz::UTC)
        };
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
                self.set_slot(&slot, tz(self.clinic_id));
                let (method, package) = payment_columns(&payment);
                self.payment_method = Some(method);
                self.package_id = package;
                self.promo_code = promo_code.map(String::from);
                self.gross_cents = (price.base + price.adjustments).cents();
                self.discount_cents = price.discount.cents();
                self.total_cents = price.total.cents();
                ReservationStatus::Booked
            }
            ReservationEvent::WaitlistJoined {
                patient_id,
                clinic_id,
                treatment_id,
                earliest,
                latest,
                payment,
                ..
            } => {
                self.clinic_id = Some(clinic_id.0);
                self.patient_id = Some(patient_id.0);
                self.treatment_id = Some(treatment_id.0);
                self.earliest = Some(earliest);
                self.latest = Some(latest);
                let (method, package) = payment_columns(&payment);
                self.payment_method = Some(method);
                self.package_id = package;
                self.waitlisted_position = Some(position);
                ReservationStatus::Waitlisted
            }
            ReservationEvent::ReservationRescheduled { to, .. } => {
                self.set_slot(&to, tz(self.clinic_id));
                return;
            }
            ReservationEvent::ReservationCancelled { outcome, .. } => {
                self.fee_cents = outcome.fee.cents();
                self.refund_cents = if self.payment_method.as_deref() == Some("package") {
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
        self.status = status.as_str().to_owned();
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
            ReservationEvent::WaitlistJoined { clinic_id, .. } => clinics.push(clinic_id.0),
            _ => {}
        }
        ids.push(id);
        changes.push((id, event.position, change));
    }
    ids.sort_unstable();
    ids.dedup();
    let mut rows: HashMap<Uuid, ReservationRow> = RESERVATIONS
        .load::<ReservationRow, _>(conn, "reservation_id", &ids)
        .await?
        .into_iter()
        .map(|row| (row.reservation_id, row))
        .collect();
    clinics.extend(rows.values().filter_map(|row| row.clinic_id));
    clinics.sort_unstable();
    clinics.dedup();
    let zones = timezones(conn, &clinics).await?;
    let programs = programs_of(conn, &packages).await?;
    for (id, position, change) in changes {
        let row = rows.entry(id).or_insert_with(|| ReservationRow {
            reservation_id: id,
            status: ReservationStatus::New.as_str().to_owned(),
            ..ReservationRow::default()
        });
        let booked = matches!(change, ReservationEvent::ReservationBooked { .. });
        row.apply(change, &zones, position);
        if booked {
            row.program_id = row.package_id.and_then(|id| programs.get(&id).copied());
        }
    }
    let mut rows: Vec<ReservationRow> = rows.into_values().collect();
    rows.sort_by_key(|row| row.reservation_id);
    RESERVATIONS.upsert(conn, &rows).await
}

/// The program of each of `packages`.
async fn programs_of(
    conn: &mut PgConnection,
    packages: &[Uuid],
) -> Result<HashMap<Uuid, Uuid>, ProjectionError> {
    let rows: Vec<PackageRow> = PACKAGES.load(conn, "package_id", packages).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.package_id, row.program_id?)))
        .collect())
}

fn apply<'a>(
    conn: &'a mut PgConnection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(apply_batch(conn, events))
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    // Clinic, program and promo code changes first: reservations and
    // packages later in the feed read their timezones and programs, and
    // what they set (names, hours, timezones) depends on nothing else.
    let mut packages = Vec::new();
    let mut reservations = Vec::new();
    let mut redemptions = Redemptions::default();
    for event in events {
        match event.aggregate_type.as_str() {
            "Clinic" => apply_clinic(conn, event).await?,
            "Program" => apply_program(conn, event).await?,
            "PromoCode" => {
                let change: PromoEvent = decode(event)?;
                redemptions.apply(&event.aggregate_id, &change);
                apply_promo_code(conn, event, change).await?;
            }
            "Package" => packages.push(event),
            "Reservation" => reservations.push(event),
            _ => {}
        }
    }
    redemptions.write(conn).await?;
    apply_packages(conn, &packages).await?;
    apply_reservations(conn, &reservations).await?;
    Ok(())
}
