//! Admin: the requests and answers of clinic setup and of the catalog
//! (programs, promo codes), the clinic and program views, and the API's
//! primitive values (weekdays, `HH:MM` times, resource kinds) to and from
//! domain types.

use chrono::{DateTime, Utc};
use clinicbook_domain::pricing::{Discount, LastMinute, PricingRule, PricingRules};
use clinicbook_domain::schedule::{OpeningHours, TimeRange, Weekday};
use clinicbook_domain::{DomainError, Money};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod parse;
mod views;

pub use parse::{
    format_local_time, parse_local_time, parse_resource_kind, parse_weekday, resource_kind_name,
};
pub use views::{ClinicView, ClosureView, ProgramView, ResourceView, TreatmentView};

/// Body of `POST /v1/clinics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterClinic {
    /// Id of the new clinic; chosen by the server when left out.
    #[serde(default)]
    pub clinic_id: Option<Uuid>,
    /// Display name.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Name))]
    pub name: String,
    /// IANA timezone of the clinic, e.g. `Europe/Berlin`; opening hours,
    /// pricing windows and dates are in it.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Timezone))]
    pub timezone: String,
    /// ISO 4217 code (three upper-case letters) of all its prices.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Currency))]
    pub currency: String,
    /// Hours before the start until which a cancellation is free
    /// (default 24).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, format = Int64, maximum = 4294967295_u32))]
    pub cancellation_notice_hours: Option<u32>,
    /// Percent of the price kept on a late cancellation, 0 to 100
    /// (default 50).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub late_cancel_fee_percent: Option<i64>,
}

/// Answer of `POST /v1/clinics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClinicCreated {
    /// The new clinic's id.
    pub clinic_id: Uuid,
}

/// Weekly opening hours in clinic-local time, as in
/// `PUT /v1/clinics/{clinic_id}/opening-hours`: per weekday a list of
/// `["HH:MM", "HH:MM"]` ranges (from inclusive, to exclusive), sorted and
/// not overlapping. A weekday left out or given `[]` is closed. Also the
/// shape of a clinic view's `opening_hours`, so a read can be sent back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpeningHoursInput {
    /// Monday.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::TimeRange>))]
    pub mon: Vec<[String; 2]>,
    /// Tuesday.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::TimeRange>))]
    pub tue: Vec<[String; 2]>,
    /// Wednesday.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::TimeRange>))]
    pub wed: Vec<[String; 2]>,
    /// Thursday.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::TimeRange>))]
    pub thu: Vec<[String; 2]>,
    /// Friday.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::TimeRange>))]
    pub fri: Vec<[String; 2]>,
    /// Saturday.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::TimeRange>))]
    pub sat: Vec<[String; 2]>,
    /// Sunday.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::TimeRange>))]
    pub sun: Vec<[String; 2]>,
}

/// Answer of the routes that replace part of a clinic's setup
/// (opening hours, pricing rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Updated {
    /// The clinic that changed.
    pub clinic_id: Uuid,
}

/// Body of `POST /v1/clinics/{clinic_id}/resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddResource {
    /// Id of the new resource; chosen by the server when left out.
    #[serde(default)]
    pub resource_id: Option<Uuid>,
    /// Name, unique inside the clinic (case-insensitive).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Name))]
    pub name: String,
    /// `room`, `device` or `practitioner`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::ResourceKind))]
    pub kind: String,
}

/// Answer of `POST /v1/clinics/{clinic_id}/resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceCreated {
    /// The new resource's id.
    pub resource_id: Uuid,
}

/// Body of `POST /v1/clinics/{clinic_id}/treatments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddTreatment {
    /// Id of the new treatment; chosen by the server when left out. Send
    /// the same id at several clinics to offer the same treatment there
    /// (a program names one treatment for all its clinics).
    #[serde(default)]
    pub treatment_id: Option<Uuid>,
    /// Name, unique inside the clinic (case-insensitive).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Name))]
    pub name: String,
    /// Length of an appointment, 1 to 720 minutes.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 720))]
    pub duration_minutes: u32,
    /// Minutes the resource stays free after each booking, 0 to 240.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 240))]
    pub buffer_minutes: u32,
    /// Base price in the clinic's currency, before pricing rules and promo
    /// codes; not negative.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9223372036854775807_i64)
    )]
    pub price_cents: i64,
    /// The kind of resource it is booked on: `room`, `device` or
    /// `practitioner`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::ResourceKind))]
    pub resource_kind: String,
}

/// Answer of `POST /v1/clinics/{clinic_id}/treatments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TreatmentCreated {
    /// The new treatment's id.
    pub treatment_id: Uuid,
}

/// Body of `PUT /v1/clinics/{clinic_id}/pricing-rules`; it replaces all
/// rules. Also the shape of a clinic view's `pricing_rules`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PricingRulesInput {
    /// Peak and off-peak windows; every rule matching a booking's local
    /// start applies. Left out: none.
    #[serde(default)]
    pub rules: Vec<PricingRuleInput>,
    /// Discount for bookings made shortly before their start. Left out:
    /// none.
    #[serde(default)]
    pub last_minute: Option<LastMinuteInput>,
}

/// One peak or off-peak window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PricingRuleInput {
    /// Weekdays it applies on: `mon` … `sun`, at least one.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::Weekday>, min_items = 1))]
    pub weekdays: Vec<String>,
    /// Local start of the window, `HH:MM` (inclusive).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::LocalTime))]
    pub from: String,
    /// Local end of the window, `HH:MM` (exclusive), after `from`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::LocalTime))]
    pub to: String,
    /// Percent of the base price added: positive a surcharge, negative a
    /// discount; -100 to 1000.
    #[cfg_attr(feature = "openapi", schema(minimum = -100, maximum = 1000))]
    pub percent: i64,
}

/// A last-minute discount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LastMinuteInput {
    /// Applies when the booking starts less than this many hours after it
    /// is made.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, format = Int64, maximum = 4294967295_u32))]
    pub within_hours: u32,
    /// Percent of the base price taken off, 0 to 100.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub percent_off: i64,
}

impl OpeningHoursInput {
    /// Each weekday with its ranges, Monday first.
    fn days(&self) -> [(Weekday, &[[String; 2]]); 7] {
        [
            (Weekday::Mon, &self.mon),
            (Weekday::Tue, &self.tue),
            (Weekday::Wed, &self.wed),
            (Weekday::Thu, &self.thu),
            (Weekday::Fri, &self.fri),
            (Weekday::Sat, &self.sat),
            (Weekday::Sun, &self.sun),
        ]
    }

    /// The weekly hours with each weekday's ranges from `day`, Monday
    /// first.
    pub fn from_days(mut day: impl FnMut(Weekday) -> Vec<[String; 2]>) -> Self {
        Self {
            mon: day(Weekday::Mon),
            tue: day(Weekday::Tue),
            wed: day(Weekday::Wed),
            thu: day(Weekday::Thu),
            fri: day(Weekday::Fri),
            sat: day(Weekday::Sat),
            sun: day(Weekday::Sun),
        }
    }

    /// The domain's opening hours.
    ///
    /// # Errors
    /// `DomainError::InvalidInput` naming the time (`mon[0][1]`) that is not
    /// `HH:MM`, or `opening_hours` when a day's ranges are empty, unsorted or
    /// overlap.
    pub fn to_domain(&self) -> Result<OpeningHours, DomainError> {
        let mut days: [Vec<TimeRange>; 7] = Default::default();
        for (day, ranges) in self.days() {
            days[day.index()] = ranges
                .iter()
                .enumerate()
                .map(|(i, [from, to])| {
                    let field = |end: usize| format!("{}[{i}][{end}]", day.as_str());
                    Ok(TimeRange {
                        from: parse_local_time(&field(0), from)?,
                        to: parse_local_time(&field(1), to)?,
                    })
                })
                .collect::<Result<_, DomainError>>()?;
        }
        OpeningHours::new(days)
    }
}

impl From<&OpeningHours> for OpeningHoursInput {
    fn from(hours: &OpeningHours) -> Self {
        Self::from_days(|day| {
            hours
                .ranges(day)
                .iter()
                .map(|r| [format_local_time(r.from), format_local_time(r.to)])
                .collect()
        })
    }
}

impl PricingRulesInput {
    /// The domain's pricing rules.
    ///
    /// # Errors
    /// `DomainError::InvalidInput` naming the field, e.g.
    /// `rules[0].weekdays[1]`, `rules[0].from`, `rules[1].percent` or
    /// `last_minute.percent_off`.
    pub fn to_domain(&self) -> Result<PricingRules, DomainError> {
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let field = |name: &str| format!("rules[{i}].{name}");
                Ok(PricingRule {
                    weekdays: rule
                        .weekdays
                        .iter()
                        .enumerate()
                        .map(|(j, day)| parse_weekday(&field(&format!("weekdays[{j}]")), day))
                        .collect::<Result<_, _>>()?,
                    from: parse_local_time(&field("from"), &rule.from)?,
                    to: parse_local_time(&field("to"), &rule.to)?,
                    percent: rule.percent,
                })
            })
            .collect::<Result<_, DomainError>>()?;
        let rules = PricingRules {
            rules,
            last_minute: self.last_minute.as_ref().map(|l| LastMinute {
                within_hours: l.within_hours,
                percent_off: l.percent_off,
            }),
        };
        rules.validate()?;
        Ok(rules)
    }
}

impl From<&PricingRules> for PricingRulesInput {
    fn from(pricing: &PricingRules) -> Self {
        Self {
            rules: pricing
                .rules
                .iter()
                .map(|rule| PricingRuleInput {
                    weekdays: rule
                        .weekdays
                        .iter()
                        .map(|d| d.as_str().to_string())
                        .collect(),
                    from: format_local_time(rule.from),
                    to: format_local_time(rule.to),
                    percent: rule.percent,
                })
                .collect(),
            last_minute: pricing.last_minute.as_ref().map(|l| LastMinuteInput {
                within_hours: l.within_hours,
                percent_off: l.percent_off,
            }),
        }
    }
}

/// Body of `POST /v1/programs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateProgram {
    /// Id of the new program; chosen by the server when left out.
    #[serde(default)]
    pub program_id: Option<Uuid>,
    /// Display name.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Name))]
    pub name: String,
    /// The treatment of its sessions; every clinic in `clinic_ids` must
    /// offer it.
    pub treatment_id: Uuid,
    /// Sessions per package, positive.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, format = Int64, maximum = 4294967295_u32))]
    pub sessions: u32,
    /// Price of a package, positive.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 9223372036854775807_i64)
    )]
    pub price_cents: i64,
    /// Days a package stays valid after purchase, 1 to 3650.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3650))]
    pub validity_days: u32,
    /// Clinics where its packages can be used; at least one, no repeats.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::DistinctIds))]
    pub clinic_ids: Vec<Uuid>,
}

/// Answer of `POST /v1/programs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgramCreated {
    /// The new program's id.
    pub program_id: Uuid,
}

/// Body of `POST /v1/promo-codes`. Exactly one of `percent_off` and
/// `amount_off_cents` is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatePromoCode {
    /// The code patients quote: 3 to 32 characters of letters, digits, `-`
    /// and `_`; stored trimmed and upper-case.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::PromoCode))]
    pub code: String,
    /// Percent of the price (after pricing rules) taken off, 1 to 100.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub percent_off: Option<i64>,
    /// Fixed amount taken off, positive; never more than the price.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 9223372036854775807_i64)
    )]
    pub amount_off_cents: Option<i64>,
    /// First instant it can be redeemed.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub valid_from: DateTime<Utc>,
    /// First instant it can no longer be redeemed; after `valid_from`.
    #[serde(deserialize_with = "crate::instant::deserialize")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Instant))]
    pub valid_until: DateTime<Utc>,
    /// Redemptions allowed in total, positive.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, format = Int64, maximum = 4294967295_u32))]
    pub max_redemptions: u32,
    /// Redemptions allowed per patient, positive.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, format = Int64, maximum = 4294967295_u32))]
    pub per_patient_limit: u32,
    /// Treatments it applies to (each offered by some clinic); left out
    /// for every treatment.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub treatment_ids: Option<Vec<Uuid>>,
}

/// Answer of `POST /v1/promo-codes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PromoCreated {
    /// The code as stored (trimmed, upper-case); also its id in routes.
    pub code: String,
}

/// Answer of `POST /v1/promo-codes/{code}/deactivate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PromoDeactivated {
    /// The code as stored.
    pub code: String,
    /// Always `false`: the code accepts no more redemptions.
    pub active: bool,
}

impl CreatePromoCode {
    /// The discount: exactly one of `percent_off` and `amount_off_cents`.
    ///
    /// # Errors
    /// `invalid_input` naming the field when neither or both are given.
    pub fn discount(&self) -> Result<Discount, DomainError> {
        match (self.percent_off, self.amount_off_cents) {
            (Some(percent), None) => Ok(Discount::PercentOff(percent)),
            (None, Some(cents)) => Ok(Discount::AmountOff(Money(cents))),
            (None, None) => Err(DomainError::invalid(
                "percent_off",
                "give percent_off or amount_off_cents",
            )),
            (Some(_), Some(_)) => Err(DomainError::invalid(
                "amount_off_cents",
                "give percent_off or amount_off_cents, not both",
            )),
        }
    }
}
