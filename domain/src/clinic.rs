//! The `Clinic` aggregate: a branch with its timezone, opening hours,
//! resources, treatments, pricing rules, cancellation policy and closures.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::policy::CancellationPolicy;
use crate::pricing::{self, Discount, PriceBreakdown, PricingRules};
use crate::schedule::{self, Interval, OpeningHours};
use crate::{ClinicId, ClosureId, DomainError, Money, ResourceId, TreatmentId};

named! {
    /// What kind of thing a resource is; a treatment needs one kind.
    pub enum ResourceKind {
        /// A treatment room.
        Room,
        /// A device, e.g. a laser.
        Device,
        /// A practitioner.
        Practitioner,
    }
}

impl ResourceKind {
    /// The API and read-model name (`room`, `device`, `practitioner`):
    /// serde's and strum's `snake_case` of the variant.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

named! {
    /// What a freed slot does for the waitlist.
    #[derive(Default)]
    pub enum WaitlistMode {
        /// Book the first fitting waitlisted patient at once.
        #[default]
        AutoBook,
        /// Hold the slot for the first fitting waitlisted patient for
        /// `offer_minutes`, for them to confirm.
        Offer,
    }
}

impl WaitlistMode {
    /// The API name (`auto_book`, `offer`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A hold lasts 1 to 60 minutes by default.
pub const HOLD_MINUTES: std::ops::RangeInclusive<u32> = 1..=60;

/// A waitlist offer lasts 5 minutes to a day.
pub const OFFER_MINUTES: std::ops::RangeInclusive<u32> = 5..=1440;

/// A reminder goes out 1 minute to a week before the start.
pub const REMINDER_MINUTES_BEFORE: std::ops::RangeInclusive<u32> = 1..=10080;

/// The clinic's settings of holds, waitlist offers and reminders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicSettings {
    /// How long a hold lasts when the request names no `ttl_seconds`.
    pub hold_minutes: u32,
    /// What a freed slot does for the waitlist.
    pub waitlist_mode: WaitlistMode,
    /// How long a waitlist offer lasts.
    pub offer_minutes: u32,
    /// How long before the start a reminder goes out.
    pub reminder_minutes_before: u32,
}

impl Default for ClinicSettings {
    fn default() -> Self {
        Self {
            hold_minutes: 10,
            waitlist_mode: WaitlistMode::AutoBook,
            offer_minutes: 30,
            reminder_minutes_before: 1440,
        }
    }
}

/// A change of some of the settings; the others stay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    /// New [`ClinicSettings::hold_minutes`].
    pub hold_minutes: Option<u32>,
    /// New [`ClinicSettings::waitlist_mode`].
    pub waitlist_mode: Option<WaitlistMode>,
    /// New [`ClinicSettings::offer_minutes`].
    pub offer_minutes: Option<u32>,
    /// New [`ClinicSettings::reminder_minutes_before`].
    pub reminder_minutes_before: Option<u32>,
}

impl ClinicSettings {
    /// These settings with `change` applied, each value checked.
    ///
    /// # Errors
    /// `InvalidInput` naming the field out of its range.
    pub fn changed(self, change: SettingsChange) -> Result<Self, DomainError> {
        fn within(
            field: &str,
            value: Option<u32>,
            range: &std::ops::RangeInclusive<u32>,
            current: u32,
        ) -> Result<u32, DomainError> {
            match value {
                Some(v) if !range.contains(&v) => Err(DomainError::invalid(
                    field,
                    format!("must be within {range:?}"),
                )),
                Some(v) => Ok(v),
                None => Ok(current),
            }
        }
        Ok(Self {
            hold_minutes: within(
                "hold_minutes",
                change.hold_minutes,
                &HOLD_MINUTES,
                self.hold_minutes,
            )?,
            waitlist_mode: change.waitlist_mode.unwrap_or(self.waitlist_mode),
            offer_minutes: within(
                "offer_minutes",
                change.offer_minutes,
                &OFFER_MINUTES,
                self.offer_minutes,
            )?,
            reminder_minutes_before: within(
                "reminder_minutes_before",
                change.reminder_minutes_before,
                &REMINDER_MINUTES_BEFORE,
                self.reminder_minutes_before,
            )?,
        })
    }
}

/// A bookable resource of the clinic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Its id.
    pub resource_id: ResourceId,
    /// Unique inside the clinic.
    pub name: String,
    /// Its kind.
    pub kind: ResourceKind,
}

/// A treatment the clinic offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Treatment {
    /// Its id.
    pub treatment_id: TreatmentId,
    /// Unique inside the clinic.
    pub name: String,
    /// Length of the appointment.
    pub duration_minutes: u32,
    /// Time the resource stays free after each booking.
    pub buffer_minutes: u32,
    /// Base price before pricing rules and promo codes.
    pub price: Money,
    /// The kind of resource it is booked on.
    pub resource_kind: ResourceKind,
}

/// A period during which the whole clinic is closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// Its id.
    pub closure_id: ClosureId,
    /// Start instant.
    pub start: DateTime<Utc>,
    /// End instant (exclusive).
    pub end: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// The `Clinic` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Clinic {
    /// `None` until registered.
    pub clinic_id: Option<ClinicId>,
    /// Display name.
    pub name: String,
    /// IANA timezone; opening hours and dates are in it.
    pub timezone: Option<Tz>,
    /// ISO 4217 currency code of all its prices.
    pub currency: String,
    /// Cancellation notice and late fee.
    pub policy: CancellationPolicy,
    /// Weekly opening hours (closed until set).
    pub opening_hours: OpeningHours,
    /// Its resources.
    pub resources: Vec<Resource>,
    /// Its treatments.
    pub treatments: Vec<Treatment>,
    /// Its pricing rules.
    pub pricing: PricingRules,
    /// Its closures.
    pub closures: Vec<Closure>,
    /// Holds, waitlist offers and reminders (defaults until changed).
    #[serde(default)]
    pub settings: ClinicSettings,
}

/// Commands of the `Clinic` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClinicCommand {
    /// Create the clinic.
    Register {
        /// New id.
        clinic_id: ClinicId,
        /// Display name (non-empty).
        name: String,
        /// IANA timezone name, e.g. `Europe/Berlin`.
        timezone: String,
        /// Three upper-case letters.
        currency: String,
        /// Notice period for free cancellation.
        cancellation_notice_hours: u32,
        /// Late cancellation fee in percent (0..=100).
        late_cancel_fee_percent: i64,
    },
    /// Replace the weekly opening hours.
    SetOpeningHours {
        /// The new hours.
        hours: OpeningHours,
    },
    /// Add a resource.
    AddResource {
        /// New id.
        resource_id: ResourceId,
        /// Unique name.
        name: String,
        /// Kind.
        kind: ResourceKind,
    },
    /// Add a treatment.
    AddTreatment {
        /// New id.
        treatment_id: TreatmentId,
        /// Unique name.
        name: String,
        /// Positive duration.
        duration_minutes: u32,
        /// Buffer after each booking.
        buffer_minutes: u32,
        /// Non-negative base price.
        price: Money,
        /// Kind of resource needed.
        resource_kind: ResourceKind,
    },
    /// Replace the pricing rules.
    SetPricingRules {
        /// The new rules.
        rules: PricingRules,
    },
    /// Change some of the settings.
    ChangeSettings {
        /// What changes.
        change: SettingsChange,
    },
    /// Close the clinic for a period.
    AddClosure {
        /// New id.
        closure_id: ClosureId,
        /// Start instant.
        start: DateTime<Utc>,
        /// End instant, after start.
        end: DateTime<Utc>,
        /// Why.
        reason: String,
    },
}

/// An IANA timezone name that chrono-tz knows, as it is written.
fn timezone_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    match name.parse::<Tz>() {
        Ok(_) => Ok(name),
        Err(_) => Err(serde::de::Error::custom(format!(
            "{name:?} is not an IANA timezone"
        ))),
    }
}

/// Events of the `Clinic` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ClinicEvent {
    /// The clinic was created.
    ClinicRegistered {
        /// Its id.
        clinic_id: ClinicId,
        /// Name.
        name: String,
        /// IANA timezone name. A stored name chrono-tz cannot read does not
        /// deserialise: the clinic's stream is then corrupt (an error every
        /// reader reports), never a clinic silently in UTC.
        #[serde(deserialize_with = "timezone_name")]
        timezone: String,
        /// Currency.
        currency: String,
        /// Cancellation policy.
        policy: CancellationPolicy,
    },
    /// Opening hours were replaced.
    OpeningHoursSet {
        /// New hours.
        hours: OpeningHours,
    },
    /// A resource was added.
    ResourceAdded {
        /// The resource.
        resource: Resource,
    },
    /// A treatment was added.
    TreatmentAdded {
        /// The treatment.
        treatment: Treatment,
    },
    /// Pricing rules were replaced.
    PricingRulesSet {
        /// New rules.
        rules: PricingRules,
    },
    /// A closure was added.
    ClosureAdded {
        /// The closure.
        closure: Closure,
    },
    /// The settings were changed; they are now these.
    SettingsChanged {
        /// Every setting, as it now is.
        settings: ClinicSettings,
    },
}

/// Longest name (in characters) of a clinic, resource, treatment or program.
pub const MAX_NAME_CHARS: usize = 200;

/// A treatment lasts between 1 minute and 12 hours.
pub const DURATION_MINUTES: std::ops::RangeInclusive<u32> = 1..=720;

/// A treatment's buffer is at most 4 hours.
pub const BUFFER_MINUTES: std::ops::RangeInclusive<u32> = 0..=240;

/// A display name, trimmed: non-empty and at most [`MAX_NAME_CHARS`]
/// characters. Shared by every aggregate that names something.
///
/// # Errors
/// `DomainError::InvalidInput` naming `field`.
pub fn checked_name(field: &str, name: &str) -> Result<String, DomainError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_string())
}

/// Names inside a clinic are compared without regard to case, so "Laser"
/// and "laser" cannot both exist.
fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

impl Closure {
    /// The closed period `[start, end)`.
    pub fn interval(&self) -> Interval {
        Interval {
            start: self.start,
            end: self.end,
        }
    }
}

impl Clinic {
    /// True once the clinic was registered.
    pub fn is_registered(&self) -> bool {
        self.clinic_id.is_some()
    }

    /// The clinic's timezone. Before registration (no event yet) it is
    /// UTC, which nothing can observe: an unregistered clinic has no
    /// opening hours, and every use case refuses it first (`not_found`).
    pub fn timezone(&self) -> Tz {
        self.timezone.unwrap_or(Tz::UTC)
    }

    /// The cancellation policy.
    pub fn policy(&self) -> CancellationPolicy {
        self.policy
    }

    /// A resource of this clinic.
    pub fn resource(&self, id: ResourceId) -> Option<&Resource> {
        self.resources.iter().find(|r| r.resource_id == id)
    }

    /// A treatment of this clinic.
    pub fn treatment(&self, id: TreatmentId) -> Option<&Treatment> {
        self.treatments.iter().find(|t| t.treatment_id == id)
    }

    /// The clinic-local date of an instant.
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        schedule::local_date(self.timezone(), at)
    }

    /// The opening intervals (UTC) of a clinic-local date, from the weekly
    /// opening hours; see [`OpeningHours::intervals_utc`] for DST days.
    pub fn opening_intervals(&self, date: NaiveDate) -> Vec<Interval> {
        self.opening_hours.intervals_utc(self.timezone(), date)
    }

    /// The opening intervals of `date` with the clinic's closures cut out:
    /// what a booking must lie inside. A resource added after a closure has
    /// no block for it on its calendars, so closures are also enforced here.
    pub fn bookable_intervals(&self, date: NaiveDate) -> Vec<Interval> {
        self.closures
            .iter()
            .fold(self.opening_intervals(date), |open, closure| {
                let hole = closure.interval();
                open.iter()
                    .flat_map(|interval| interval.minus(&hole))
                    .collect()
            })
    }

    /// The closures that overlap `interval`.
    pub fn closures_overlapping<'a>(
        &'a self,
        interval: &'a Interval,
    ) -> impl Iterator<Item = &'a Closure> + 'a {
        self.closures
            .iter()
            .filter(move |closure| closure.interval().overlaps(interval))
    }

    /// The price of `treatment` starting at `start`, booked at `now`, under
    /// this clinic's pricing rules and timezone; see [`pricing::quote`].
    pub fn quote(
        &self,
        treatment: &Treatment,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
        promo: Option<&Discount>,
    ) -> PriceBreakdown {
        pricing::quote(
            treatment.price,
            &self.pricing,
            self.timezone(),
            start,
            now,
            promo,
        )
    }

    /// Checks `command` against the current state and returns the one event
    /// it produces. Pure: nothing changes until the event is applied.
    ///
    /// # Errors
    /// `AlreadyExists` for a second registration or a reused id,
    /// `NotFound` (`clinic`) for any other command before registration,
    /// `DuplicateName` for a resource or treatment name already used, and
    /// `InvalidInput` for a malformed field.
    pub fn decide(&self, command: ClinicCommand) -> Result<ClinicEvent, DomainError> {
        let registering = matches!(command, ClinicCommand::Register { .. });
        if !registering && !self.is_registered() {
            return Err(DomainError::not_found("clinic"));
        }
        match command {
            ClinicCommand::Register {
                clinic_id,
                name,
                timezone,
                currency,
                cancellation_notice_hours,
                late_cancel_fee_percent,
            } => {
                if self.is_registered() {
                    return Err(DomainError::AlreadyExists {
                        what: format!("clinic {clinic_id}"),
                    });
                }
                let name = checked_name("name", &name)?;
                let tz: Tz = timezone.parse().map_err(|_| {
                    DomainError::invalid(
                        "timezone",
                        format!("{timezone:?} is not an IANA timezone"),
                    )
                })?;
                if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(DomainError::invalid(
                        "currency",
                        "must be three upper-case letters (ISO 4217)",
                    ));
                }
                if !(0..=100).contains(&late_cancel_fee_percent) {
                    return Err(DomainError::invalid(
                        "late_cancel_fee_percent",
                        "must be within 0..=100",
                    ));
                }
                Ok(ClinicEvent::ClinicRegistered {
                    clinic_id,
                    name,
                    timezone: tz.name().to_string(),
                    currency,
                    policy: CancellationPolicy {
                        notice_hours: cancellation_notice_hours,
                        late_fee_percent: late_cancel_fee_percent,
                    },
                })
            }
            ClinicCommand::SetOpeningHours { hours } => {
                hours.validate()?;
                Ok(ClinicEvent::OpeningHoursSet { hours })
            }
            ClinicCommand::AddResource {
                resource_id,
                name,
                kind,
            } => {
                if self.resource(resource_id).is_some() {
                    return Err(DomainError::AlreadyExists {
                        what: format!("resource {resource_id}"),
                    });
                }
                let name = checked_name("name", &name)?;
                if self.resources.iter().any(|r| same_name(&r.name, &name)) {
                    return Err(DomainError::DuplicateName { name });
                }
                Ok(ClinicEvent::ResourceAdded {
                    resource: Resource {
                        resource_id,
                        name,
                        kind,
                    },
                })
            }
            ClinicCommand::AddTreatment {
                treatment_id,
                name,
                duration_minutes,
                buffer_minutes,
                price,
                resource_kind,
            } => {
                if self.treatment(treatment_id).is_some() {
                    return Err(DomainError::AlreadyExists {
                        what: format!("treatment {treatment_id}"),
                    });
                }
                let name = checked_name("name", &name)?;
                if !DURATION_MINUTES.contains(&duration_minutes) {
                    return Err(DomainError::invalid(
                        "duration_minutes",
                        format!("must be within {DURATION_MINUTES:?}"),
                    ));
                }
                if !BUFFER_MINUTES.contains(&buffer_minutes) {
                    return Err(DomainError::invalid(
                        "buffer_minutes",
                        format!("must be within {BUFFER_MINUTES:?}"),
                    ));
                }
                if price.is_negative() {
                    return Err(DomainError::invalid("price_cents", "must not be negative"));
                }
                if self.treatments.iter().any(|t| same_name(&t.name, &name)) {
                    return Err(DomainError::DuplicateName { name });
                }
                Ok(ClinicEvent::TreatmentAdded {
                    treatment: Treatment {
                        treatment_id,
                        name,
                        duration_minutes,
                        buffer_minutes,
                        price,
                        resource_kind,
                    },
                })
            }
            ClinicCommand::SetPricingRules { rules } => {
                rules.validate()?;
                Ok(ClinicEvent::PricingRulesSet { rules })
            }
            ClinicCommand::ChangeSettings { change } => Ok(ClinicEvent::SettingsChanged {
                settings: self.settings.changed(change)?,
            }),
            ClinicCommand::AddClosure {
                closure_id,
                start,
                end,
                reason,
            } => {
                Interval::new(start, end)?;
                if self.closures.iter().any(|c| c.closure_id == closure_id) {
                    return Err(DomainError::AlreadyExists {
                        what: format!("closure {closure_id}"),
                    });
                }
                Ok(ClinicEvent::ClosureAdded {
                    closure: Closure {
                        closure_id,
                        start,
                        end,
                        reason,
                    },
                })
            }
        }
    }
}

impl Clinic {
    /// The state after `event` (the fold of every reader).
    fn evolve(&mut self, event: ClinicEvent) {
        match event {
            ClinicEvent::ClinicRegistered {
                clinic_id,
                name,
                timezone,
                currency,
                policy,
            } => {
                self.clinic_id = Some(clinic_id);
                self.name = name;
                // Read back only if it parses (see `timezone_name`), and
                // written only after `decide` parsed it.
                self.timezone = timezone.parse().ok();
                self.currency = currency;
                self.policy = policy;
            }
            ClinicEvent::OpeningHoursSet { hours } => self.opening_hours = hours,
            ClinicEvent::ResourceAdded { resource } => self.resources.push(resource),
            ClinicEvent::TreatmentAdded { treatment } => self.treatments.push(treatment),
            ClinicEvent::PricingRulesSet { rules } => self.pricing = rules,
            ClinicEvent::ClosureAdded { closure } => self.closures.push(closure),
            ClinicEvent::SettingsChanged { settings } => self.settings = settings,
        }
    }
}

crate::aggregate::aggregate!(Clinic: ClinicCommand => ClinicEvent);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a broken fixture should fail the test loudly
mod tests {
    use chrono::NaiveTime;
    use cqrs_es::test::TestFramework;

    use cqrs_es::{Aggregate, DomainEvent};

    use super::*;
    use crate::pricing::{LastMinute, PricingRule};
    use crate::schedule::{TimeRange, Weekday};

    type Given = TestFramework<Clinic>;

    fn clinic_id() -> ClinicId {
        ClinicId(uuid::Uuid::from_u128(1))
    }

    fn resource_id(n: u128) -> ResourceId {
        ResourceId(uuid::Uuid::from_u128(100 + n))
    }

    fn treatment_id(n: u128) -> TreatmentId {
        TreatmentId(uuid::Uuid::from_u128(200 + n))
    }

    fn closure_id(n: u128) -> ClosureId {
        ClosureId(uuid::Uuid::from_u128(300 + n))
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn register() -> ClinicCommand {
        ClinicCommand::Register {
            clinic_id: clinic_id(),
            name: "Berlin Mitte".to_string(),
            timezone: "Europe/Berlin".to_string(),
            currency: "EUR".to_string(),
            cancellation_notice_hours: 24,
            late_cancel_fee_percent: 50,
        }
    }

    fn register_with(change: impl FnOnce(&mut ClinicCommand)) -> ClinicCommand {
        let mut command = register();
        change(&mut command);
        command
    }

    fn registered() -> ClinicEvent {
        ClinicEvent::ClinicRegistered {
            clinic_id: clinic_id(),
            name: "Berlin Mitte".to_string(),
            timezone: "Europe/Berlin".to_string(),
            currency: "EUR".to_string(),
            policy: CancellationPolicy {
                notice_hours: 24,
                late_fee_percent: 50,
            },
        }
    }

    fn add_resource(n: u128, name: &str) -> ClinicCommand {
        ClinicCommand::AddResource {
            resource_id: resource_id(n),
            name: name.to_string(),
            kind: ResourceKind::Room,
        }
    }

    fn resource_added(n: u128, name: &str) -> ClinicEvent {
        ClinicEvent::ResourceAdded {
            resource: Resource {
                resource_id: resource_id(n),
                name: name.to_string(),
                kind: ResourceKind::Room,
            },
        }
    }

    fn treatment(n: u128, name: &str) -> Treatment {
        Treatment {
            treatment_id: treatment_id(n),
            name: name.to_string(),
            duration_minutes: 60,
            buffer_minutes: 15,
            price: Money(12_000),
            resource_kind: ResourceKind::Device,
        }
    }

    fn add_treatment(t: Treatment) -> ClinicCommand {
        ClinicCommand::AddTreatment {
            treatment_id: t.treatment_id,
            name: t.name,
            duration_minutes: t.duration_minutes,
            buffer_minutes: t.buffer_minutes,
            price: t.price,
            resource_kind: t.resource_kind,
        }
    }

    fn treatment_with(change: impl FnOnce(&mut Treatment)) -> Treatment {
        let mut t = treatment(1, "Laser");
        change(&mut t);
        t
    }

    fn nine_to_six() -> OpeningHours {
        let day = vec![TimeRange {
            from: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            to: NaiveTime::from_hms_opt(18, 0, 0).unwrap(),
        }];
        OpeningHours::new(std::array::from_fn(|_| day.clone())).unwrap()
    }

    fn closure(n: u128, start: &str, end: &str) -> Closure {
        Closure {
            closure_id: closure_id(n),
            start: utc(start),
            end: utc(end),
            reason: "staff training".to_string(),
        }
    }

    fn add_closure(c: Closure) -> ClinicCommand {
        ClinicCommand::AddClosure {
            closure_id: c.closure_id,
            start: c.start,
            end: c.end,
            reason: c.reason,
        }
    }

    fn invalid(field: &str, reason: &str) -> DomainError {
        DomainError::invalid(field, reason)
    }

    fn state(events: Vec<ClinicEvent>) -> Clinic {
        let mut clinic = Clinic::default();
        for event in events {
            clinic.apply(event);
        }
        clinic
    }

    // --- Register ---------------------------------------------------------

    #[test]
    fn register_creates_the_clinic() {
        Given::with(())
            .given_no_previous_events()
            .when(register())
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn register_trims_the_name() {
        let command = register_with(|c| {
            if let ClinicCommand::Register { name, .. } = c {
                *name = "  Berlin Mitte ".to_string();
            }
        });
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn register_takes_the_timezone_name_exactly() {
        // The OpenAPI document lists the names; one with blanks is not one.
        let command = register_with(|c| {
            if let ClinicCommand::Register { timezone, .. } = c {
                *timezone = " Europe/Berlin ".to_string();
            }
        });
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(DomainError::invalid(
                "timezone",
                "\" Europe/Berlin \" is not an IANA timezone",
            ));
    }

    #[test]
    fn register_twice_is_refused() {
        Given::with(())
            .given(vec![registered()])
            .when(register())
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("clinic {}", clinic_id()),
            });
    }

    #[test]
    fn a_stored_registration_with_an_unknown_timezone_does_not_deserialise() {
        let stored = serde_json::to_value(registered()).unwrap();
        let mut bad = stored.clone();
        bad["ClinicRegistered"]["timezone"] = "Mars/Olympus".into();
        let error = serde_json::from_value::<ClinicEvent>(bad).unwrap_err();
        assert!(error
            .to_string()
            .contains("\"Mars/Olympus\" is not an IANA timezone"));
        assert_eq!(
            serde_json::from_value::<ClinicEvent>(stored).unwrap(),
            registered()
        );
    }

    #[test]
    fn register_refuses_an_unknown_timezone() {
        let command = register_with(|c| {
            if let ClinicCommand::Register { timezone, .. } = c {
                *timezone = "Mars/Olympus".to_string();
            }
        });
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(invalid(
                "timezone",
                "\"Mars/Olympus\" is not an IANA timezone",
            ));
    }

    #[test]
    fn register_refuses_a_malformed_currency() {
        for bad in ["eur", "EU", "EURO", "E1R", "", "ÉUR"] {
            let command = register_with(|c| {
                if let ClinicCommand::Register { currency, .. } = c {
                    *currency = bad.to_string();
                }
            });
            Given::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(invalid(
                    "currency",
                    "must be three upper-case letters (ISO 4217)",
                ));
        }
    }

    #[test]
    fn register_refuses_an_empty_name() {
        for bad in ["", "   "] {
            let command = register_with(|c| {
                if let ClinicCommand::Register { name, .. } = c {
                    *name = bad.to_string();
                }
            });
            Given::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(invalid("name", "must not be empty"));
        }
    }

    #[test]
    fn register_accepts_200_characters_and_refuses_201() {
        let with_name = |n: usize| {
            register_with(|c| {
                if let ClinicCommand::Register { name, .. } = c {
                    *name = "é".repeat(n);
                }
            })
        };
        let events = Given::with(())
            .given_no_previous_events()
            .when(with_name(200))
            .inspect_result();
        assert!(events.is_ok());
        Given::with(())
            .given_no_previous_events()
            .when(with_name(201))
            .then_expect_error(invalid("name", "must be at most 200 characters"));
    }

    #[test]
    fn register_refuses_a_late_fee_outside_0_to_100() {
        for (fee, ok) in [(-1, false), (0, true), (100, true), (101, false)] {
            let command = register_with(|c| {
                if let ClinicCommand::Register {
                    late_cancel_fee_percent,
                    ..
                } = c
                {
                    *late_cancel_fee_percent = fee;
                }
            });
            let result = Given::with(())
                .given_no_previous_events()
                .when(command)
                .inspect_result();
            if ok {
                assert!(result.is_ok(), "{fee}");
            } else {
                assert_eq!(
                    result,
                    Err(invalid("late_cancel_fee_percent", "must be within 0..=100")),
                    "{fee}"
                );
            }
        }
    }

    // --- Every other command needs a registered clinic --------------------

    #[test]
    fn commands_before_registration_are_refused() {
        let commands = vec![
            ClinicCommand::SetOpeningHours {
                hours: nine_to_six(),
            },
            add_resource(1, "Room 1"),
            add_treatment(treatment(1, "Laser")),
            ClinicCommand::SetPricingRules {
                rules: PricingRules::default(),
            },
            add_closure(closure(1, "2026-12-24T00:00:00Z", "2026-12-27T00:00:00Z")),
        ];
        for command in commands {
            Given::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(DomainError::not_found("clinic"));
        }
    }

    // --- Opening hours ----------------------------------------------------

    #[test]
    fn set_opening_hours() {
        Given::with(())
            .given(vec![registered()])
            .when(ClinicCommand::SetOpeningHours {
                hours: nine_to_six(),
            })
            .then_expect_events(vec![ClinicEvent::OpeningHoursSet {
                hours: nine_to_six(),
            }]);
    }

    #[test]
    fn set_opening_hours_refuses_overlapping_ranges() {
        let mut hours = nine_to_six();
        hours.days[0].push(TimeRange {
            from: NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
            to: NaiveTime::from_hms_opt(20, 0, 0).unwrap(),
        });
        Given::with(())
            .given(vec![registered()])
            .when(ClinicCommand::SetOpeningHours { hours })
            .then_expect_error(DomainError::inconsistent(
                "opening_hours",
                "mon: ranges must be sorted and must not overlap",
            ));
    }

    // --- Resources --------------------------------------------------------

    #[test]
    fn add_resource_succeeds() {
        Given::with(())
            .given(vec![registered()])
            .when(add_resource(1, " Room 1 "))
            .then_expect_events(vec![resource_added(1, "Room 1")]);
    }

    #[test]
    fn add_resource_refuses_a_used_name_in_any_case() {
        Given::with(())
            .given(vec![registered(), resource_added(1, "Room 1")])
            .when(add_resource(2, "ROOM 1"))
            .then_expect_error(DomainError::DuplicateName {
                name: "ROOM 1".to_string(),
            });
    }

    #[test]
    fn add_resource_refuses_a_used_id() {
        Given::with(())
            .given(vec![registered(), resource_added(1, "Room 1")])
            .when(add_resource(1, "Room 2"))
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("resource {}", resource_id(1)),
            });
    }

    #[test]
    fn add_resource_refuses_an_empty_name() {
        Given::with(())
            .given(vec![registered()])
            .when(add_resource(1, " "))
            .then_expect_error(invalid("name", "must not be empty"));
    }

    // --- Treatments -------------------------------------------------------

    #[test]
    fn add_treatment_succeeds() {
        Given::with(())
            .given(vec![registered()])
            .when(add_treatment(treatment(1, "Laser")))
            .then_expect_events(vec![ClinicEvent::TreatmentAdded {
                treatment: treatment(1, "Laser"),
            }]);
    }

    #[test]
    fn add_treatment_accepts_the_bounds() {
        let bounds = [
            treatment_with(|t| t.duration_minutes = 1),
            treatment_with(|t| t.duration_minutes = 720),
            treatment_with(|t| t.buffer_minutes = 0),
            treatment_with(|t| t.buffer_minutes = 240),
            treatment_with(|t| t.price = Money::ZERO),
        ];
        for t in bounds {
            Given::with(())
                .given(vec![registered()])
                .when(add_treatment(t.clone()))
                .then_expect_events(vec![ClinicEvent::TreatmentAdded { treatment: t }]);
        }
    }

    #[test]
    fn add_treatment_refuses_a_duration_outside_1_to_720() {
        for minutes in [0, 721] {
            Given::with(())
                .given(vec![registered()])
                .when(add_treatment(treatment_with(|t| {
                    t.duration_minutes = minutes
                })))
                .then_expect_error(invalid("duration_minutes", "must be within 1..=720"));
        }
    }

    #[test]
    fn add_treatment_refuses_a_buffer_over_240() {
        Given::with(())
            .given(vec![registered()])
            .when(add_treatment(treatment_with(|t| t.buffer_minutes = 241)))
            .then_expect_error(invalid("buffer_minutes", "must be within 0..=240"));
    }

    #[test]
    fn add_treatment_refuses_a_negative_price() {
        Given::with(())
            .given(vec![registered()])
            .when(add_treatment(treatment_with(|t| t.price = Money(-1))))
            .then_expect_error(invalid("price_cents", "must not be negative"));
    }

    #[test]
    fn add_treatment_refuses_an_empty_name() {
        Given::with(())
            .given(vec![registered()])
            .when(add_treatment(treatment_with(|t| t.name = String::new())))
            .then_expect_error(invalid("name", "must not be empty"));
    }

    #[test]
    fn add_treatment_refuses_a_used_name() {
        Given::with(())
            .given(vec![
                registered(),
                ClinicEvent::TreatmentAdded {
                    treatment: treatment(1, "Laser"),
                },
            ])
            .when(add_treatment(treatment(2, "laser")))
            .then_expect_error(DomainError::DuplicateName {
                name: "laser".to_string(),
            });
    }

    #[test]
    fn add_treatment_refuses_a_used_id() {
        Given::with(())
            .given(vec![
                registered(),
                ClinicEvent::TreatmentAdded {
                    treatment: treatment(1, "Laser"),
                },
            ])
            .when(add_treatment(treatment(1, "Peel")))
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("treatment {}", treatment_id(1)),
            });
    }

    #[test]
    fn resource_and_treatment_names_are_separate() {
        Given::with(())
            .given(vec![registered(), resource_added(1, "Laser")])
            .when(add_treatment(treatment(1, "Laser")))
            .then_expect_events(vec![ClinicEvent::TreatmentAdded {
                treatment: treatment(1, "Laser"),
            }]);
    }

    // --- Pricing rules ----------------------------------------------------

    fn peak_rules() -> PricingRules {
        PricingRules {
            rules: vec![PricingRule {
                weekdays: vec![Weekday::Fri],
                from: NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
                to: NaiveTime::from_hms_opt(19, 0, 0).unwrap(),
                percent: 20,
            }],
            last_minute: Some(LastMinute {
                within_hours: 24,
                percent_off: 10,
            }),
        }
    }

    #[test]
    fn set_pricing_rules() {
        Given::with(())
            .given(vec![registered()])
            .when(ClinicCommand::SetPricingRules {
                rules: peak_rules(),
            })
            .then_expect_events(vec![ClinicEvent::PricingRulesSet {
                rules: peak_rules(),
            }]);
    }

    #[test]
    fn set_pricing_rules_refuses_invalid_rules() {
        let mut rules = peak_rules();
        rules.rules[0].percent = -101;
        Given::with(())
            .given(vec![registered()])
            .when(ClinicCommand::SetPricingRules { rules })
            .then_expect_error(invalid("rules[0].percent", "must be within -100..=1000"));
    }

    // --- Closures ---------------------------------------------------------

    #[test]
    fn add_closure_succeeds() {
        let c = closure(1, "2026-12-24T00:00:00Z", "2026-12-27T00:00:00Z");
        Given::with(())
            .given(vec![registered()])
            .when(add_closure(c.clone()))
            .then_expect_events(vec![ClinicEvent::ClosureAdded { closure: c }]);
    }

    #[test]
    fn add_closure_refuses_an_end_not_after_the_start() {
        for end in ["2026-12-24T00:00:00Z", "2026-12-23T00:00:00Z"] {
            Given::with(())
                .given(vec![registered()])
                .when(add_closure(closure(1, "2026-12-24T00:00:00Z", end)))
                .then_expect_error(DomainError::inconsistent("end", "must be after start"));
        }
    }

    #[test]
    fn add_closure_refuses_a_used_id() {
        let c = closure(1, "2026-12-24T00:00:00Z", "2026-12-27T00:00:00Z");
        Given::with(())
            .given(vec![
                registered(),
                ClinicEvent::ClosureAdded { closure: c.clone() },
            ])
            .when(add_closure(c))
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("closure {}", closure_id(1)),
            });
    }

    // --- Queries ----------------------------------------------------------

    #[test]
    fn queries_on_the_state() {
        let clinic = state(vec![
            registered(),
            ClinicEvent::OpeningHoursSet {
                hours: nine_to_six(),
            },
            resource_added(1, "Room 1"),
            ClinicEvent::TreatmentAdded {
                treatment: treatment(1, "Laser"),
            },
            ClinicEvent::PricingRulesSet {
                rules: peak_rules(),
            },
        ]);
        assert_eq!(clinic.timezone(), chrono_tz::Europe::Berlin);
        assert_eq!(Clinic::default().timezone(), Tz::UTC);
        assert_eq!(
            clinic.policy(),
            CancellationPolicy {
                notice_hours: 24,
                late_fee_percent: 50,
            }
        );
        assert_eq!(
            clinic.resource(resource_id(1)).map(|r| r.name.as_str()),
            Some("Room 1")
        );
        assert!(clinic.resource(resource_id(2)).is_none());
        assert_eq!(
            clinic.treatment(treatment_id(1)),
            Some(&treatment(1, "Laser"))
        );
        assert!(clinic.treatment(treatment_id(2)).is_none());
        assert_eq!(
            clinic.local_date(utc("2026-06-01T22:30:00Z")),
            "2026-06-02".parse::<NaiveDate>().unwrap()
        );
        let summer_day = "2026-07-15".parse().unwrap();
        assert_eq!(
            clinic.opening_intervals(summer_day),
            vec![Interval::new(utc("2026-07-15T07:00:00Z"), utc("2026-07-15T16:00:00Z")).unwrap()]
        );
        // Friday 2026-06-05 17:30 CEST, booked long before: +20 % of 120.00.
        let price = clinic.quote(
            &treatment(1, "Laser"),
            utc("2026-06-05T15:30:00Z"),
            utc("2026-05-01T00:00:00Z"),
            None,
        );
        assert_eq!(price.total, Money(14_400));
    }

    #[test]
    fn closures_are_cut_out_of_the_bookable_intervals() {
        let clinic = state(vec![
            registered(),
            ClinicEvent::OpeningHoursSet {
                hours: nine_to_six(),
            },
            ClinicEvent::ClosureAdded {
                closure: closure(1, "2026-07-15T10:00:00Z", "2026-07-15T12:00:00Z"),
            },
        ]);
        let day = "2026-07-15".parse().unwrap();
        let iv = |a: &str, b: &str| Interval::new(utc(a), utc(b)).unwrap();
        assert_eq!(
            clinic.bookable_intervals(day),
            vec![
                iv("2026-07-15T07:00:00Z", "2026-07-15T10:00:00Z"),
                iv("2026-07-15T12:00:00Z", "2026-07-15T16:00:00Z"),
            ]
        );
        let probe = iv("2026-07-15T11:00:00Z", "2026-07-15T11:30:00Z");
        assert_eq!(clinic.closures_overlapping(&probe).count(), 1);
        let probe = iv("2026-07-15T12:00:00Z", "2026-07-15T13:00:00Z");
        assert_eq!(clinic.closures_overlapping(&probe).count(), 0);
    }

    #[test]
    fn event_types_are_the_variant_names() {
        let c = closure(1, "2026-12-24T00:00:00Z", "2026-12-27T00:00:00Z");
        let events = [
            (registered(), "ClinicRegistered"),
            (
                ClinicEvent::OpeningHoursSet {
                    hours: nine_to_six(),
                },
                "OpeningHoursSet",
            ),
            (resource_added(1, "Room"), "ResourceAdded"),
            (
                ClinicEvent::TreatmentAdded {
                    treatment: treatment(1, "Laser"),
                },
                "TreatmentAdded",
            ),
            (
                ClinicEvent::PricingRulesSet {
                    rules: peak_rules(),
                },
                "PricingRulesSet",
            ),
            (ClinicEvent::ClosureAdded { closure: c }, "ClosureAdded"),
        ];
        for (event, name) in events {
            assert_eq!(event.event_type(), name);
            assert_eq!(event.event_version(), crate::EVENT_VERSION);
            // The serialised form is externally tagged by the same name.
            let json = serde_json::to_value(&event).unwrap();
            assert!(json.get(name).is_some(), "{json}");
        }
        assert_eq!(Clinic::TYPE, "Clinic");
    }

    #[test]
    fn checked_name_is_shared_by_aggregates() {
        assert_eq!(checked_name("name", " a "), Ok("a".to_string()));
        assert_eq!(
            checked_name("title", ""),
            Err(invalid("title", "must not be empty"))
        );
    }

    // --- Settings ---------------------------------------------------------

    fn change(f: impl FnOnce(&mut SettingsChange)) -> ClinicCommand {
        let mut change = SettingsChange::default();
        f(&mut change);
        ClinicCommand::ChangeSettings { change }
    }

    #[test]
    fn settings_default_until_changed_and_change_only_what_is_named() {
        assert_eq!(
            ClinicSettings::default(),
            ClinicSettings {
                hold_minutes: 10,
                waitlist_mode: WaitlistMode::AutoBook,
                offer_minutes: 30,
                reminder_minutes_before: 1440,
            }
        );
        Given::with(())
            .given(vec![registered()])
            .when(change(|c| {
                c.hold_minutes = Some(5);
                c.waitlist_mode = Some(WaitlistMode::Offer);
            }))
            .then_expect_events(vec![ClinicEvent::SettingsChanged {
                settings: ClinicSettings {
                    hold_minutes: 5,
                    waitlist_mode: WaitlistMode::Offer,
                    ..ClinicSettings::default()
                },
            }]);
        let first = ClinicSettings {
            offer_minutes: 60,
            ..ClinicSettings::default()
        };
        Given::with(())
            .given(vec![
                registered(),
                ClinicEvent::SettingsChanged { settings: first },
            ])
            .when(change(|c| c.reminder_minutes_before = Some(60)))
            .then_expect_events(vec![ClinicEvent::SettingsChanged {
                settings: ClinicSettings {
                    reminder_minutes_before: 60,
                    ..first
                },
            }]);
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let cases: [(ClinicCommand, &str, &str); 6] = [
            (
                change(|c| c.hold_minutes = Some(0)),
                "hold_minutes",
                "1..=60",
            ),
            (
                change(|c| c.hold_minutes = Some(61)),
                "hold_minutes",
                "1..=60",
            ),
            (
                change(|c| c.offer_minutes = Some(4)),
                "offer_minutes",
                "5..=1440",
            ),
            (
                change(|c| c.offer_minutes = Some(1441)),
                "offer_minutes",
                "5..=1440",
            ),
            (
                change(|c| c.reminder_minutes_before = Some(0)),
                "reminder_minutes_before",
                "1..=10080",
            ),
            (
                change(|c| c.reminder_minutes_before = Some(10081)),
                "reminder_minutes_before",
                "1..=10080",
            ),
        ];
        for (command, field, range) in cases {
            Given::with(())
                .given(vec![registered()])
                .when(command)
                .then_expect_error(DomainError::invalid(
                    field,
                    format!("must be within {range}"),
                ));
        }
        Given::with(())
            .given_no_previous_events()
            .when(change(|c| c.hold_minutes = Some(5)))
            .then_expect_error(DomainError::not_found("clinic"));
    }
}
