//! Setting up a clinic: registration, opening hours, resources, treatments
//! and pricing rules. Each is one `Clinic` command in one unit of work.

use clinicbook_domain::clinic::{Clinic, ClinicCommand};
use clinicbook_domain::policy::CancellationPolicy;
use clinicbook_domain::pricing::{LastMinute, PricingRule, PricingRules};
use clinicbook_domain::schedule::{OpeningHours, TimeRange, Weekday};
use clinicbook_domain::{ClinicId, DomainError, Money, ResourceId, TreatmentId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::parse::{format_local_time, parse_local_time, parse_resource_kind, parse_weekday};
use super::registered_clinic;
use crate::{CommandError, Commands, Ctx, Done};

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
        let day = |day: Weekday| {
            hours
                .ranges(day)
                .iter()
                .map(|r| [format_local_time(r.from), format_local_time(r.to)])
                .collect()
        };
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

/// One command on one clinic, answering `answer`: the use case behind
/// every clinic setup action. Any command but `Register` needs a
/// registered clinic, else `not_found` names the clinic.
struct OnClinic<T> {
    clinic_id: ClinicId,
    command: ClinicCommand,
    answer: T,
}

impl<T> UseCase for OnClinic<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync,
{
    type Output = T;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<T, UowError> {
        if !matches!(self.command, ClinicCommand::Register { .. }) {
            registered_clinic(uow, self.clinic_id).await?;
        }
        uow.handle::<Clinic>(&self.clinic_id.to_string(), self.command.clone())
            .await?;
        Ok(self.answer.clone())
    }
}

impl Commands {
    /// Runs `command` on the clinic `clinic_id` and answers `answer`.
    async fn on_clinic<T>(
        &self,
        ctx: &Ctx,
        clinic_id: ClinicId,
        command: ClinicCommand,
        answer: T,
    ) -> Result<Done<T>, CommandError>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync,
    {
        let use_case = OnClinic {
            clinic_id,
            command,
            answer,
        };
        self.run(ctx, &use_case).await
    }

    /// Registers a new clinic (`POST /v1/clinics`): closed until its
    /// opening hours are set, with no resources, treatments or pricing
    /// rules yet.
    ///
    /// # Errors
    /// `invalid_input` for an empty name, an unknown timezone, a currency
    /// that is not three upper-case letters or a late fee outside 0..=100;
    /// `already_exists` when `clinic_id` is taken; otherwise see
    /// [`CommandError`].
    pub async fn register_clinic(
        &self,
        ctx: &Ctx,
        input: RegisterClinic,
    ) -> Result<Done<ClinicCreated>, CommandError> {
        let clinic_id = input.clinic_id.map_or_else(ClinicId::new, ClinicId);
        let defaults = CancellationPolicy::default();
        let command = ClinicCommand::Register {
            clinic_id,
            name: input.name,
            timezone: input.timezone,
            currency: input.currency,
            cancellation_notice_hours: input
                .cancellation_notice_hours
                .unwrap_or(defaults.notice_hours),
            late_cancel_fee_percent: input
                .late_cancel_fee_percent
                .unwrap_or(defaults.late_fee_percent),
        };
        let answer = ClinicCreated {
            clinic_id: clinic_id.0,
        };
        self.on_clinic(ctx, clinic_id, command, answer).await
    }

    /// Replaces a clinic's weekly opening hours
    /// (`PUT /v1/clinics/{clinic_id}/opening-hours`). Existing bookings are
    /// kept; new ones must fit the new hours.
    ///
    /// # Errors
    /// `invalid_input` naming a malformed time (`mon[0][1]`) or
    /// `opening_hours` for empty, unsorted or overlapping ranges;
    /// `not_found` for an unknown clinic; otherwise see [`CommandError`].
    pub async fn set_opening_hours(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: OpeningHoursInput,
    ) -> Result<Done<Updated>, CommandError> {
        let command = ClinicCommand::SetOpeningHours {
            hours: input.to_domain()?,
        };
        let answer = Updated { clinic_id };
        self.on_clinic(ctx, ClinicId(clinic_id), command, answer)
            .await
    }

    /// Adds a room, device or practitioner to a clinic
    /// (`POST /v1/clinics/{clinic_id}/resources`).
    ///
    /// # Errors
    /// `invalid_input` for an empty name or an unknown `kind`;
    /// `duplicate_name` when the clinic has a resource of that name;
    /// `already_exists` when `resource_id` is taken; `not_found` for an
    /// unknown clinic; otherwise see [`CommandError`].
    pub async fn add_resource(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: AddResource,
    ) -> Result<Done<ResourceCreated>, CommandError> {
        let resource_id = input.resource_id.map_or_else(ResourceId::new, ResourceId);
        let command = ClinicCommand::AddResource {
            resource_id,
            name: input.name,
            kind: parse_resource_kind("kind", &input.kind)?,
        };
        let answer = ResourceCreated {
            resource_id: resource_id.0,
        };
        self.on_clinic(ctx, ClinicId(clinic_id), command, answer)
            .await
    }

    /// Adds a treatment to a clinic's offer
    /// (`POST /v1/clinics/{clinic_id}/treatments`).
    ///
    /// # Errors
    /// `invalid_input` for an empty name, a duration, buffer or price out of
    /// range, or an unknown `resource_kind`; `duplicate_name` when the clinic
    /// has a treatment of that name; `already_exists` when `treatment_id` is
    /// taken at this clinic; `not_found` for an unknown clinic; otherwise
    /// see [`CommandError`].
    pub async fn add_treatment(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: AddTreatment,
    ) -> Result<Done<TreatmentCreated>, CommandError> {
        let treatment_id = input
            .treatment_id
            .map_or_else(TreatmentId::new, TreatmentId);
        let command = ClinicCommand::AddTreatment {
            treatment_id,
            name: input.name,
            duration_minutes: input.duration_minutes,
            buffer_minutes: input.buffer_minutes,
            price: Money(input.price_cents),
            resource_kind: parse_resource_kind("resource_kind", &input.resource_kind)?,
        };
        let answer = TreatmentCreated {
            treatment_id: treatment_id.0,
        };
        self.on_clinic(ctx, ClinicId(clinic_id), command, answer)
            .await
    }

    /// Replaces a clinic's pricing rules
    /// (`PUT /v1/clinics/{clinic_id}/pricing-rules`). Bookings keep the
    /// price they were booked at.
    ///
    /// # Errors
    /// `invalid_input` naming the field (`rules[0].weekdays[1]`,
    /// `rules[0].from`, `rules[0].percent`, `last_minute.percent_off`, ...);
    /// `not_found` for an unknown clinic; otherwise see [`CommandError`].
    pub async fn set_pricing_rules(
        &self,
        ctx: &Ctx,
        clinic_id: Uuid,
        input: PricingRulesInput,
    ) -> Result<Done<Updated>, CommandError> {
        let command = ClinicCommand::SetPricingRules {
            rules: input.to_domain()?,
        };
        let answer = Updated { clinic_id };
        self.on_clinic(ctx, ClinicId(clinic_id), command, answer)
            .await
    }
}
