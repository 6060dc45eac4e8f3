//! Where and when an appointment takes place: its clinic, treatment,
//! resource, end, calendar and the opening it must fit in; and how a time
//! range is cut into clinic-local days (one `Calendar` each).

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use clinicbook_domain::calendar::CalendarCommand;
use clinicbook_domain::clinic::{Clinic, Treatment};
use clinicbook_domain::pricing::{Discount, PriceBreakdown};
use clinicbook_domain::reservation::Slot;
use clinicbook_domain::schedule::Interval;
use clinicbook_domain::{
    CalendarId, ClinicId, DomainError, PatientId, PromoCodeKey, ReservationId, ResourceId,
    TreatmentId,
};
use clinicbook_eventstore::{UnitOfWork, UowError};
use clinicbook_wire::booking::BookTreatment;
use clinicbook_wire::holds::PlaceHold;

use super::payment::promo_discount;
use super::promo_key;

/// The longest range, in clinic-local days, a block or closure may cover:
/// each day is one calendar written in the same transaction.
pub(super) const MAX_BLOCK_DAYS: i64 = 366;

/// The clinic a command names, loaded guarded (its opening hours,
/// closures and prices must not change before the command commits).
///
/// # Errors
/// `NotFound` (`clinic`) when it was never registered.
pub(super) async fn guarded_clinic(
    uow: &mut UnitOfWork,
    clinic_id: ClinicId,
) -> Result<&Clinic, UowError> {
    Ok(registered(
        uow.guard::<Clinic>(&clinic_id.to_string()).await?,
    )?)
}

/// The clinic a command names, read for information only (its timezone
/// and policy, which never change once registered).
///
/// # Errors
/// `NotFound` (`clinic`) when it was never registered.
pub(super) async fn clinic(uow: &mut UnitOfWork, clinic_id: ClinicId) -> Result<&Clinic, UowError> {
    Ok(registered(
        uow.load::<Clinic>(&clinic_id.to_string()).await?,
    )?)
}

/// Fails with `NotFound` unless the clinic is registered.
///
/// # Errors
/// `NotFound` (`clinic`).
pub(super) fn registered(clinic: &Clinic) -> Result<&Clinic, DomainError> {
    if clinic.is_registered() {
        Ok(clinic)
    } else {
        Err(DomainError::not_found("clinic"))
    }
}

/// An appointment resolved against its clinic: the treatment, its end,
/// the clinic-local day, the opening it must fit in, and its price. The
/// resource (none for a quote) is checked once, here, and given again to
/// name the slot and the calendar.
#[derive(Clone, Debug)]
pub(super) struct Appointment {
    /// The treatment booked.
    pub treatment: Treatment,
    /// Start.
    pub start: DateTime<Utc>,
    /// `start` plus the treatment's duration.
    pub end: DateTime<Utc>,
    /// The clinic-local date of `start`.
    pub date: NaiveDate,
    /// The clinic's bookable intervals of that date (opening hours minus
    /// closures): the appointment must lie inside one of them, which also
    /// makes it end the same local day.
    pub opening: Vec<Interval>,
    /// The price when booked at the time given to [`Appointment::resolve`].
    pub price: PriceBreakdown,
}

impl Appointment {
    /// Resolves `treatment_id` (and `resource_id`, if any) in `clinic` for
    /// an appointment starting at `start`, priced at `now` with `promo`.
    ///
    /// # Errors
    /// `NotFound` for a treatment or resource the clinic does not have,
    /// `ResourceKindMismatch` for a resource of another kind, and
    /// `InvalidInput` (`start`) for a start too far in the future to add
    /// the duration to.
    pub fn resolve(
        clinic: &Clinic,
        treatment_id: TreatmentId,
        resource_id: Option<ResourceId>,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
        promo: Option<&Discount>,
    ) -> Result<Self, DomainError> {
        let treatment = clinic
            .treatment(treatment_id)
            .ok_or_else(|| DomainError::not_found(format!("treatment {treatment_id}")))?;
        if let Some(resource_id) = resource_id {
            let resource = clinic
                .resource(resource_id)
                .ok_or_else(|| DomainError::not_found(format!("resource {resource_id}")))?;
            if resource.kind != treatment.resource_kind {
                return Err(DomainError::ResourceKindMismatch {
                    needed: treatment.resource_kind.as_str().to_owned(),
                    actual: resource.kind.as_str().to_owned(),
                });
            }
        }
        let end = start
            .checked_add_signed(Duration::minutes(i64::from(treatment.duration_minutes)))
            .ok_or_else(|| DomainError::inconsistent("start", "is too far in the future"))?;
        let date = clinic.local_date(start);
        Ok(Self {
            price: clinic.quote(treatment, start, now, promo),
            opening: clinic.bookable_intervals(date),
            treatment: treatment.clone(),
            start,
            end,
            date,
        })
    }

    /// The slot on `resource_id`.
    pub fn slot(&self, resource_id: ResourceId) -> Slot {
        Slot {
            resource_id,
            start: self.start,
            end: self.end,
        }
    }

    /// The calendar of `resource_id` on the appointment's day.
    pub fn calendar(&self, resource_id: ResourceId) -> CalendarId {
        CalendarId {
            resource_id,
            date: self.date,
        }
    }

    /// The command that holds the appointment (plus the treatment's
    /// buffer) on the calendar of `resource_id` for `reservation_id`.
    pub fn reserve(
        &self,
        resource_id: ResourceId,
        reservation_id: ReservationId,
        now: DateTime<Utc>,
    ) -> CalendarCommand {
        CalendarCommand::Reserve {
            calendar_id: self.calendar(resource_id),
            reservation_id,
            start: self.start,
            end: self.end,
            buffer_minutes: self.treatment.buffer_minutes,
            opening: self.opening.clone(),
            now,
        }
    }
}

/// What a booking and a hold both ask for: a treatment of a clinic on
/// one of its resources at a start, for a patient, with the promo code
/// the price is to include.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SlotRequest {
    pub patient_id: PatientId,
    pub clinic_id: ClinicId,
    pub resource_id: ResourceId,
    pub treatment_id: TreatmentId,
    pub start: DateTime<Utc>,
    pub promo_code: Option<PromoCodeKey>,
}

impl SlotRequest {
    /// The clinic, loaded guarded, and the appointment resolved in it,
    /// priced at `now` with the promo code's discount.
    ///
    /// # Errors
    /// An unknown promo code or clinic, and as [`Appointment::resolve`].
    pub async fn resolve<'u>(
        &self,
        uow: &'u mut UnitOfWork,
        now: DateTime<Utc>,
    ) -> Result<(&'u Clinic, Appointment), UowError> {
        let discount = match &self.promo_code {
            Some(code) => Some(promo_discount(uow, code).await?),
            None => None,
        };
        let clinic = guarded_clinic(uow, self.clinic_id).await?;
        let appointment = Appointment::resolve(
            clinic,
            self.treatment_id,
            Some(self.resource_id),
            self.start,
            now,
            discount.as_ref(),
        )?;
        Ok((clinic, appointment))
    }
}

/// `TryFrom<&W> for SlotRequest` for the wire requests `W` that carry the
/// request's fields under the same names.
macro_rules! slot_request_from {
    ($($wire:ty),+) => {$(
        impl TryFrom<&$wire> for SlotRequest {
            type Error = DomainError;

            fn try_from(input: &$wire) -> Result<Self, DomainError> {
                Ok(Self {
                    patient_id: input.patient_id.into(),
                    clinic_id: input.clinic_id.into(),
                    resource_id: input.resource_id.into(),
                    treatment_id: input.treatment_id.into(),
                    start: input.start,
                    promo_code: promo_key(input.promo_code.as_deref())?,
                })
            }
        }
    )+};
}

slot_request_from!(BookTreatment, PlaceHold);

/// The calendar holding a booked slot: the slot's resource on the
/// clinic-local date of its start.
pub(super) fn calendar_of(clinic: &Clinic, slot: &Slot) -> CalendarId {
    CalendarId {
        resource_id: slot.resource_id,
        date: clinic.local_date(slot.start),
    }
}

/// `[start, end)` cut at clinic-local midnights: one piece per local day,
/// with that day's date. DST days are 23 or 25 hours long; a midnight
/// that falls in a DST gap starts the day at the end of the gap.
///
/// # Errors
/// `InvalidInput` (`end`) when `end` is not after `start` or the range
/// covers more than [`MAX_BLOCK_DAYS`] local days.
pub(super) fn local_days(
    tz: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<(NaiveDate, Interval)>, DomainError> {
    let range = Interval::new(start, end)?;
    let first = clinicbook_domain::schedule::local_date(tz, range.start);
    let last = clinicbook_domain::schedule::local_date(tz, range.end - Duration::nanoseconds(1));
    if (last - first).num_days() >= MAX_BLOCK_DAYS {
        return Err(DomainError::inconsistent(
            "end",
            format!("a block covers at most {MAX_BLOCK_DAYS} days"),
        ));
    }
    Ok(first
        .iter_days()
        .take_while(|date| *date <= last)
        .filter_map(|date| {
            let day = Interval {
                start: start_of_day(tz, date),
                end: date
                    .succ_opt()
                    .map_or(range.end, |next| start_of_day(tz, next)),
            };
            Interval::new(range.start.max(day.start), range.end.min(day.end))
                .ok()
                .map(|piece| (date, piece))
        })
        .collect())
}

/// The first instant of the clinic-local `date`: local midnight, or the
/// first minute after it that exists (a DST gap at midnight).
fn start_of_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    (0..=24 * 60)
        .find_map(|minute| {
            tz.from_local_datetime(&(midnight + Duration::minutes(minute)))
                .earliest()
        })
        .map_or_else(|| midnight.and_utc(), |at| at.with_timezone(&Utc))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_inside_one_day_is_one_piece() {
        let days = local_days(
            chrono_tz::Europe::Berlin,
            utc("2030-01-08T09:00:00Z"),
            utc("2030-01-08T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(
            days,
            vec![(
                date("2030-01-08"),
                Interval {
                    start: utc("2030-01-08T09:00:00Z"),
                    end: utc("2030-01-08T12:00:00Z")
                }
            )]
        );
    }

    #[test]
    fn days_are_cut_at_local_midnight_across_dst() {
        // Berlin springs forward on Sunday 2030-03-31: Saturday ends at
        // 23:00 UTC (CET), Sunday at 22:00 UTC (CEST).
        let days = local_days(
            chrono_tz::Europe::Berlin,
            utc("2030-03-30T12:00:00Z"),
            utc("2030-04-01T12:00:00Z"),
        )
        .unwrap();
        let cuts: Vec<_> = days.iter().map(|(d, i)| (*d, i.start, i.end)).collect();
        assert_eq!(
            cuts,
            vec![
                (
                    date("2030-03-30"),
                    utc("2030-03-30T12:00:00Z"),
                    utc("2030-03-30T23:00:00Z")
                ),
                (
                    date("2030-03-31"),
                    utc("2030-03-30T23:00:00Z"),
                    utc("2030-03-31T22:00:00Z")
                ),
                (
                    date("2030-04-01"),
                    utc("2030-03-31T22:00:00Z"),
                    utc("2030-04-01T12:00:00Z")
                ),
            ]
        );
    }

    #[test]
    fn a_range_ending_at_midnight_does_not_touch_the_next_day() {
        let days = local_days(
            chrono_tz::Europe::Berlin,
            utc("2030-01-07T23:00:00Z"),
            utc("2030-01-08T23:00:00Z"),
        )
        .unwrap();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].0, date("2030-01-08"));
    }

    #[test]
    fn a_midnight_in_a_dst_gap_starts_the_day_after_the_gap() {
        // Santiago de Chile sprang forward at midnight on 2019-09-08.
        let start = start_of_day(chrono_tz::America::Santiago, date("2019-09-08"));
        assert_eq!(start, utc("2019-09-08T04:00:00Z"));
    }

    #[test]
    fn reversed_and_huge_ranges_are_refused() {
        let tz = chrono_tz::Europe::Berlin;
        let t = utc("2030-01-08T09:00:00Z");
        assert_eq!(
            local_days(tz, t, t).unwrap_err().code(),
            "inconsistent_input"
        );
        assert_eq!(
            local_days(tz, t, t + Duration::days(400))
                .unwrap_err()
                .code(),
            "inconsistent_input"
        );
    }
}
