//! What `clinicbook demo` prints: the summary of the data set and a few
//! ready-to-paste curl commands with real ids.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, SecondsFormat, Utc, Weekday};
use clinicbook_wire::booking::{BookTreatment, PaymentInput};
use serde_json::Value;

use super::catalog::{Chain, CONSULTATION, LASER_LARGE, PROMO_LASER, TIMEZONE};
use super::patients::Patient;
use super::plan::{instant, TZ};
use super::{DemoSummary, Sample};
use clinicbook_domain::reservation::ReservationStatus;
use strum::VariantNames;

/// The values of the curl commands: a Friday-evening quote with the laser
/// promo code, and a consultation after the demo's days.
pub(super) fn sample(chain: &Chain, patients: &[Patient], first: NaiveDate, days: u32) -> Sample {
    let branch = &chain.branches[0];
    let patient = patients
        .iter()
        .find(|p| p.deposit_cents > 0)
        .or(patients.first());
    let friday = first
        .iter_days()
        .find(|d| d.weekday() == Weekday::Fri)
        .unwrap_or(first);
    let after = first + Duration::days(i64::from(days));
    let weekday = after
        .iter_days()
        .find(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .unwrap_or(after);
    let practitioner = &branch.resources[4];
    let large = &chain.treatments[LASER_LARGE];
    let consultation = &chain.treatments[CONSULTATION];
    let promo = chain.promos[PROMO_LASER].code;
    Sample {
        reservation_id: None,
        wallet_patient_id: patient.map(|p| p.id),
        quote: (
            branch.clinic_id,
            large.id,
            instant(friday, 17 * 60 + 30).unwrap_or_default(),
            promo.to_string(),
        ),
        quote_about: format!(
            "{} at {} on Friday {friday} 17:30 (+15 % Friday evening) with {promo}",
            large.name, branch.name
        ),
        booking: BookTreatment {
            reservation_id: None,
            patient_id: patient.map(|p| p.id).unwrap_or_default(),
            clinic_id: branch.clinic_id,
            resource_id: practitioner.id,
            treatment_id: consultation.id,
            start: instant(weekday, 11 * 60).unwrap_or_default(),
            payment: PaymentInput::AtClinic,
            promo_code: None,
        },
        booking_about: format!(
            "a consultation with {} at {} on {weekday} 11:00, paid at the clinic",
            practitioner.name, branch.name
        ),
    }
}

fn euros(cents: i64) -> String {
    format!("{}.{:02} EUR", cents / 100, (cents % 100).abs())
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&TZ).format("%Y-%m-%d %H:%M").to_string()
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.already_loaded {
            writeln!(
                f,
                "The demo chain (seed {}) is already loaded at {}; nothing was written.",
                self.seed, self.url
            )?;
            self.fmt_chain(f)?;
            self.fmt_offer(f)?;
            return self.fmt_messages(f);
        }
        writeln!(
            f,
            "Demo data loaded into {} in {:.1} s ({} requests, {} answered 429 and retried; seed {}).",
            self.url,
            self.elapsed.as_secs_f64(),
            self.requests,
            self.rate_limited,
            self.seed
        )?;
        self.fmt_chain(f)?;
        self.fmt_patients(f)?;
        self.fmt_reservations(f)?;
        self.fmt_disruptions(f)?;
        self.fmt_offer(f)?;
        self.fmt_messages(f)
    }
}

impl DemoSummary {
    /// Where the sample reservation's messages went.
    fn fmt_messages(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(id) = self.sample.reservation_id else {
            return Ok(());
        };
        if self.messages.is_empty() {
            return writeln!(f, "Messages of reservation {id}: none (yet)");
        }
        writeln!(f, "Messages of reservation {id}:")?;
        for m in &self.messages {
            writeln!(
                f,
                "  {} by {} to {} ({}): {}",
                m.kind.as_str(),
                m.channel.as_str(),
                m.to,
                m.language,
                m.status.as_str()
            )?;
        }
        Ok(())
    }

    fn fmt_offer(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(offer) = &self.offer else {
            return Ok(());
        };
        match (offer.offered_to, offer.expires_at) {
            (Some(reservation), Some(expires_at)) => writeln!(
                f,
                "Waitlist offer ({}, waitlist_mode offer): a cancelled slot is held for \
                 waitlisted reservation {reservation} until {} local; {} waiting in all",
                offer.clinic,
                local(expires_at),
                offer.waitlisted.len()
            ),
            _ => writeln!(
                f,
                "Waitlist offer ({}, waitlist_mode offer): no open offer now; {} waiting",
                offer.clinic,
                offer.waitlisted.len()
            ),
        }
    }

    fn fmt_chain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\nBranches ({TIMEZONE}; Mon-Fri 09:00-19:00, Sat 10:00-16:00; each with 2 rooms, \
             Laser A and B, 2 practitioners):"
        )?;
        for clinic in &self.clinics {
            writeln!(f, "  {:<40} {}", clinic.name, clinic.id)?;
        }
        writeln!(f, "Treatments (the same id at every branch):")?;
        for treatment in &self.treatments {
            writeln!(f, "  {:<40} {}", treatment.name, treatment.id)?;
        }
        writeln!(f, "Programs (365 days, every branch):")?;
        for program in &self.programs {
            writeln!(f, "  {:<46} {}", program.name, program.id)?;
        }
        writeln!(
            f,
            "Promo codes: {}; pricing: Friday 17:00-19:00 +15 %, Tuesday 09:00-12:00 -10 %, \
             last minute (within 24 h) -10 %",
            self.promo_codes.join(", ")
        )
    }

    fn fmt_patients(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Patients: {}; {} wallets funded with {}; {} packages ({} paid from the wallet, {} paid by card)",
            self.patient_ids.len(),
            self.funded_wallets,
            euros(self.deposited_cents),
            self.packages_from_wallet + self.packages_external,
            self.packages_from_wallet,
            self.packages_external
        )
    }

    fn fmt_reservations(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paid = |method: &str| self.bookings_by_payment.get(method).copied().unwrap_or(0);
        writeln!(
            f,
            "Bookings {} to {}: {} worth {} ({} package, {} wallet, {} at the clinic; {} with a promo code)",
            self.dates.0,
            self.dates.1,
            self.bookings(),
            euros(self.booked_cents),
            paid("package"),
            paid("wallet"),
            paid("at_clinic"),
            self.bookings_with_promo
        )?;
        // Every status a reservation can be in, in the domain's order.
        let counts: Vec<String> = ReservationStatus::VARIANTS
            .iter()
            .filter(|&&name| name != <&str>::from(ReservationStatus::New))
            .map(|&name| {
                let count = self.reservations.get(name).map_or(0, Vec::len);
                format!("{name} {count}")
            })
            .collect();
        writeln!(f, "Reservations now: {}", counts.join(", "))?;
        writeln!(
            f,
            "  {} rescheduled; {} credited back to wallets by cancellations",
            self.rescheduled.len(),
            euros(self.refunded_cents)
        )
    }

    fn fmt_disruptions(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(block) = &self.block {
            writeln!(
                f,
                "Emergency block: {} at {}, {} to {} local: {} bookings displaced",
                block.resource,
                block.clinic,
                local(block.start),
                local(block.end).get(11..).unwrap_or_default(),
                block.displaced.len()
            )?;
        }
        if let Some(closure) = &self.closure {
            writeln!(
                f,
                "Closure: {} on {} ({}): {} bookings displaced",
                closure.clinic,
                closure.date,
                closure.reason,
                closure.displaced.len()
            )?;
        }
        Ok(())
    }
}

/// Ready-to-paste curl commands against the summary's server, with `token`
/// (a staff token) and real ids from the data set.
pub fn curl_commands(summary: &DemoSummary, token: &str) -> String {
    let url = &summary.url;
    let sample = &summary.sample;
    let auth = "-H \"Authorization: Bearer $TOKEN\"";
    let mut out =
        format!("Try it (a staff token, valid for 12 hours):\n\n  export TOKEN='{token}'\n");
    if let Some(id) = sample.reservation_id {
        let completed = summary
            .reservations
            .get(<&str>::from(ReservationStatus::Completed))
            .is_some_and(|ids| ids.contains(&id));
        let what = if completed {
            "A completed reservation"
        } else {
            "A reservation"
        };
        out += &format!(
            "\n  # {what} with its status history\n  curl -s {auth} {url}/v1/reservations/{id}\n"
        );
    }
    if let Some(id) = sample.reservation_id {
        out += &format!(
            "\n  # Where its patient messages went (email, SMS: kind, channel, to, status)\n  \
             curl -s {auth} {url}/v1/reservations/{id}/messages\n"
        );
    }
    if let Some(patient) = sample.wallet_patient_id {
        out += &format!(
            "\n  # A patient's wallet: balance and transactions\n  curl -s {auth} {url}/v1/wallets/{patient}\n"
        );
    }
    if let Some(reservation) = summary.offer.as_ref().and_then(|o| o.offered_to) {
        out += &format!(
            "\n  # A waitlisted reservation with its open offer: {{hold_id, expires_at}}\n  \
             curl -s {auth} {url}/v1/reservations/{reservation}\n"
        );
    }
    let (clinic, treatment, start, promo) = &sample.quote;
    out += &format!(
        "\n  # A quote: {}\n  curl -s {auth} '{url}/v1/quotes?clinic_id={clinic}&treatment_id={treatment}&start={}&promo_code={promo}'\n",
        sample.quote_about,
        utc(*start)
    );
    out += &format!(
        "\n  # Book {} (sending it again with the same Idempotency-Key answers the same booking)\n  \
         curl -s -X POST {auth} -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-curl-{}' \\\n       \
         {url}/v1/reservations -d '{}'\n",
        sample.booking_about,
        sample.booking.start.date_naive(),
        booking_json(&sample.booking)
    );
    out
}

/// The booking as compact JSON without its empty optional fields.
fn booking_json(booking: &BookTreatment) -> String {
    let mut value = serde_json::to_value(booking).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euros_have_two_decimals() {
        assert_eq!(euros(123_405), "1234.05 EUR");
        assert_eq!(euros(0), "0.00 EUR");
    }

    #[test]
    fn the_sample_booking_omits_empty_fields() {
        let chain = Chain::new(3);
        let sample = sample(&chain, &[], NaiveDate::default(), 14);
        let json = booking_json(&sample.booking);
        assert!(!json.contains("null"), "{json}");
        assert!(json.contains("\"method\":\"at_clinic\""), "{json}");
    }
}
