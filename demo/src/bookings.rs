//! Bookings: a deterministic plan of who books what, where, when and how
//! they pay (package session, wallet, at the clinic; some with a promo
//! code), then the staff calls that book it. A slot taken meanwhile (409
//! `slot_unavailable`) is replaced by another free one; a reservation id
//! taken by an earlier, interrupted run of the same seed (409
//! `invalid_transition`) is taken over as that run made it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{NaiveDate, Timelike};
use clinicbook_wire::booking::{BookTreatment, Booked, PaymentInput, ReservationView};
use reqwest::StatusCode;
use uuid::Uuid;

use super::catalog::{worst_price, Chain, Kind, PROMO_LASER, PROMO_PERCENT};
use super::client::{each, Api, As};
use super::ids::{demo_id, key};
use super::patients::Patient;
use super::plan::{Planner, Slot, TZ};
use super::DemoError;

/// Attempts at one booking (another slot, another payment, no promo code).
const ATTEMPTS: u32 = 8;
/// Dates tried when planning one booking before giving it up.
const DATE_TRIES: usize = 8;
/// Percent of bookings at the patient's usual branch.
const HOME_PERCENT: u32 = 80;
/// Percent of a package holder's bookings that use the package.
const PACKAGE_USE_PERCENT: u32 = 70;
/// Percent of other bookings paid from a wallet that can afford it.
const WALLET_PERCENT: u32 = 65;
/// Percent of non-package bookings with a promo code.
const PROMO_PERCENT_OF_BOOKINGS: u32 = 15;
/// How often each treatment is booked (same order as the catalog).
const TREATMENT_WEIGHTS: [u32; 4] = [35, 20, 25, 20];

/// How a booking is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pay {
    /// A session of the patient's package.
    Package,
    /// Debited from the wallet.
    Wallet,
    /// Paid at the clinic on the day.
    AtClinic,
}

impl Pay {
    /// The API's name of the method.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Pay::Package => "package",
            Pay::Wallet => "wallet",
            Pay::AtClinic => "at_clinic",
        }
    }
}

/// One planned booking.
#[derive(Clone, Debug)]
pub(super) struct Booking {
    /// Its place in the plan (labels its idempotency keys).
    pub index: usize,
    /// The reservation id.
    pub id: Uuid,
    /// Index into the patients.
    pub patient: usize,
    /// Index into [`Chain::treatments`].
    pub treatment: usize,
    /// Where and when.
    pub slot: Slot,
    /// How it is paid.
    pub pay: Pay,
    /// Index into [`Chain::promos`].
    pub promo: Option<usize>,
}

/// A booking the server accepted.
#[derive(Clone, Debug)]
pub(super) struct Made {
    /// The booking as made (its slot, payment and promo may differ from
    /// the plan after a refusal).
    pub booking: Booking,
    /// What the patient pays.
    pub total_cents: i64,
}

/// What the plan has used up so far, so that no booking is planned to
/// fail: wallet money (at the worst price), package sessions, promo limits.
struct Budget {
    wallet: Vec<i64>,
    sessions: Vec<u32>,
    promo_total: Vec<u32>,
    promo_by_patient: HashMap<(usize, usize), u32>,
}

impl Budget {
    fn new(chain: &Chain, patients: &[Patient]) -> Self {
        Self {
            wallet: patients.iter().map(|p| p.wallet_budget(chain)).collect(),
            sessions: patients
                .iter()
                .map(|p| {
                    p.package
                        .as_ref()
                        .map_or(0, |k| chain.programs[k.program].sessions)
                })
                .collect(),
            promo_total: vec![0; chain.promos.len()],
            promo_by_patient: HashMap::new(),
        }
    }

    /// A promo code `patient` may still use on `treatment`, if any.
    fn promo(&self, chain: &Chain, patient: usize, treatment: usize) -> Option<usize> {
        [PROMO_LASER, PROMO_PERCENT].into_iter().find(|&p| {
            let promo = &chain.promos[p];
            let applies = promo
                .treatments
                .as_ref()
                .is_none_or(|ts| ts.contains(&treatment));
            let used = self
                .promo_by_patient
                .get(&(p, patient))
                .copied()
                .unwrap_or(0);
            applies && used < promo.per_patient_limit && self.promo_total[p] < promo.max_redemptions
        })
    }

    fn spend(&mut self, chain: &Chain, booking: &Booking) {
        match booking.pay {
            Pay::Package => self.sessions[booking.patient] -= 1,
            Pay::Wallet => {
                self.wallet[booking.patient] -= worst_price(&chain.treatments[booking.treatment]);
            }
            Pay::AtClinic => {}
        }
        if let Some(p) = booking.promo {
            self.promo_total[p] += 1;
            *self
                .promo_by_patient
                .entry((p, booking.patient))
                .or_default() += 1;
        }
    }
}

/// Plans `count` bookings on `dates`, holding their slots in `planner`.
/// A booking that finds no free slot in a few tries is left out.
pub(super) fn plan(
    rng: &mut fastrand::Rng,
    chain: &Chain,
    patients: &[Patient],
    planner: &mut Planner,
    dates: &[NaiveDate],
    count: usize,
    seed: u64,
) -> Vec<Booking> {
    let mut budget = Budget::new(chain, patients);
    let mut bookings = Vec::with_capacity(count);
    if patients.is_empty() || dates.is_empty() {
        return bookings;
    }
    for index in 0..count {
        let patient = rng.usize(..patients.len());
        let (treatment, pay) = choose_treatment(rng, chain, &budget, patients, patient);
        let branch = if rng.u32(..100) < HOME_PERCENT {
            patients[patient].home
        } else {
            rng.usize(..chain.branches.len())
        };
        let slot = (0..DATE_TRIES).find_map(|_| {
            let date = dates[rng.usize(..dates.len())];
            planner.take(rng, chain, branch, treatment, date)
        });
        let Some(slot) = slot else { continue };
        let promo = if pay != Pay::Package && rng.u32(..100) < PROMO_PERCENT_OF_BOOKINGS {
            budget.promo(chain, patient, treatment)
        } else {
            None
        };
        let booking = Booking {
            index,
            id: demo_id(seed, &format!("reservation/{index}")),
            patient,
            treatment,
            slot,
            pay,
            promo,
        };
        budget.spend(chain, &booking);
        bookings.push(booking);
    }
    bookings
}

/// The treatment and payment of a booking of `patient`: a session of
/// their package most of the time if they have one left, else a treatment
/// by popularity, paid from the wallet when it can surely afford it.
fn choose_treatment(
    rng: &mut fastrand::Rng,
    chain: &Chain,
    budget: &Budget,
    patients: &[Patient],
    patient: usize,
) -> (usize, Pay) {
    if let Some(package) = &patients[patient].package {
        if budget.sessions[patient] > 0 && rng.u32(..100) < PACKAGE_USE_PERCENT {
            return (chain.programs[package.program].treatment, Pay::Package);
        }
    }
    let mut roll = rng.u32(..TREATMENT_WEIGHTS.iter().sum::<u32>());
    let mut treatment = 0;
    for (i, weight) in TREATMENT_WEIGHTS.iter().enumerate() {
        if roll < *weight {
            treatment = i;
            break;
        }
        roll -= weight;
    }
    let affordable = budget.wallet[patient] >= worst_price(&chain.treatments[treatment]);
    let pay = if affordable && rng.u32(..100) < WALLET_PERCENT {
        Pay::Wallet
    } else {
        Pay::AtClinic
    };
    (treatment, pay)
}

/// What the staff calls of the booking phase need.
pub(super) struct Booker<'a> {
    /// The server.
    pub api: &'a Api,
    /// The chain.
    pub chain: &'a Chain,
    /// The patients.
    pub patients: &'a [Patient],
    /// Busy slots, shared by the bookings in flight.
    pub planner: &'a Mutex<Planner>,
    /// The open days of the demo.
    pub dates: &'a [NaiveDate],
    /// The run's seed.
    pub seed: u64,
}

impl Booker<'_> {
    /// Books every planned booking, at most `concurrency` at once, and
    /// returns those the server accepted, in plan order.
    ///
    /// # Errors
    /// A refusal the loader cannot work around, or a transport failure.
    pub(super) async fn book_all(
        &self,
        bookings: Vec<Booking>,
        concurrency: usize,
    ) -> Result<Vec<Made>, DemoError> {
        let made = each(bookings, concurrency, |booking| self.book(booking)).await?;
        Ok(made.into_iter().flatten().collect())
    }

    /// Books one reservation, working around a taken slot, a wallet that
    /// cannot pay and a promo code that does not apply; `None` when no
    /// free slot is left for it.
    async fn book(&self, mut booking: Booking) -> Result<Option<Made>, DemoError> {
        for attempt in 0..ATTEMPTS {
            let Some(body) = self.body(&booking) else {
                return Ok(None);
            };
            let label = format!("book/{}/{attempt}", booking.index);
            let reply = self
                .api
                .post(
                    As::Staff,
                    "/v1/reservations",
                    &body,
                    &key(self.seed, &label),
                )
                .await?;
            if reply.status == StatusCode::CREATED {
                let booked: Booked = reply.parse(StatusCode::CREATED)?;
                return Ok(Some(Made {
                    booking,
                    total_cents: booked.price.total_cents,
                }));
            }
            match (reply.status, reply.code()) {
                (StatusCode::CONFLICT, "slot_unavailable") => {
                    match self.another_slot(&booking, attempt) {
                        Some(slot) => booking.slot = slot,
                        None => return Ok(None),
                    }
                }
                (StatusCode::CONFLICT, "invalid_transition") => {
                    return self.adopt(booking).await.map(Some);
                }
                (StatusCode::CONFLICT, "concurrency_conflict") => {
                    tokio::time::sleep(Duration::from_millis(50 + fastrand::u64(..200))).await;
                }
                (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds") => {
                    booking.pay = Pay::AtClinic;
                }
                (StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND, code)
                    if booking.promo.is_some()
                        && (code.starts_with("promo_") || code == "not_found") =>
                {
                    booking.promo = None;
                }
                _ => return Err(reply.refused()),
            }
        }
        Ok(None)
    }

    /// The reservation an earlier, interrupted run made under this
    /// booking's id, after a refusal made it change the slot, payment or
    /// promo code: taken as it is, and its slot held in the planner.
    ///
    /// # Errors
    /// `BadAnswer` when the reservation is not one of the demo's.
    async fn adopt(&self, booking: Booking) -> Result<Made, DemoError> {
        let path = format!("/v1/reservations/{}", booking.id);
        let view: ReservationView = self
            .api
            .get(As::Staff, &path)
            .await?
            .parse(StatusCode::OK)?;
        let made = self
            .made_from(booking, &view)
            .ok_or_else(|| DemoError::BadAnswer {
                what: format!("GET {path}"),
                detail: "the id is taken by a reservation the demo did not plan".to_string(),
            })?;
        self.planner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hold(&made.booking.slot);
        Ok(made)
    }

    /// `booking` as the server holds it in `view`; `None` when the view is
    /// not of this booking's patient and treatment in this chain.
    fn made_from(&self, mut booking: Booking, view: &ReservationView) -> Option<Made> {
        let treatment = &self.chain.treatments[booking.treatment];
        if view.patient_id != self.patients[booking.patient].id || view.treatment_id != treatment.id
        {
            return None;
        }
        let branch = self
            .chain
            .branches
            .iter()
            .position(|b| b.clinic_id == view.clinic_id)?;
        let resource = self.chain.branches[branch]
            .resources
            .iter()
            .position(|r| Some(r.id) == view.resource_id)?;
        let start = view.start?.with_timezone(&TZ);
        let minutes = start.hour() * 60 + start.minute();
        booking.slot = Slot {
            branch,
            resource,
            date: start.date_naive(),
            start: minutes,
            end: minutes + treatment.duration_minutes,
            busy_until: minutes + treatment.duration_minutes + treatment.buffer_minutes,
        };
        booking.pay = match view.payment {
            PaymentInput::Package { .. } => Pay::Package,
            PaymentInput::Wallet => Pay::Wallet,
            PaymentInput::AtClinic => Pay::AtClinic,
        };
        booking.promo = view
            .promo_code
            .as_deref()
            .and_then(|code| self.chain.promos.iter().position(|p| p.code == code));
        Some(Made {
            booking,
            total_cents: view.price.map_or(0, |p| p.total_cents),
        })
    }

    fn body(&self, booking: &Booking) -> Option<BookTreatment> {
        let patient = &self.patients[booking.patient];
        let branch = &self.chain.branches[booking.slot.branch];
        let payment = match (booking.pay, &patient.package) {
            (Pay::Package, Some(package)) => PaymentInput::Package {
                package_id: package.id,
            },
            (Pay::Wallet, _) => PaymentInput::Wallet,
            _ => PaymentInput::AtClinic,
        };
        Some(BookTreatment {
            reservation_id: Some(booking.id),
            patient_id: patient.id,
            clinic_id: branch.clinic_id,
            resource_id: branch.resources[booking.slot.resource].id,
            treatment_id: self.chain.treatments[booking.treatment].id,
            start: booking.slot.start_utc()?,
            payment,
            promo_code: booking.promo.map(|p| self.chain.promos[p].code.to_string()),
        })
    }

    /// Another free slot for `booking`: the same day first, then any day.
    fn another_slot(&self, booking: &Booking, attempt: u32) -> Option<Slot> {
        let mut planner = self.planner.lock().unwrap_or_else(PoisonError::into_inner);
        let seed = self.seed ^ ((booking.index as u64) << 16) ^ u64::from(attempt);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut dates = vec![booking.slot.date];
        if !self.dates.is_empty() {
            dates.extend((0..DATE_TRIES).map(|_| self.dates[rng.usize(..self.dates.len())]));
        }
        dates.into_iter().find_map(|date| {
            planner.take(
                &mut rng,
                self.chain,
                booking.slot.branch,
                booking.treatment,
                date,
            )
        })
    }
}

/// True when `made` sits on a laser.
pub(super) fn on_a_laser(chain: &Chain, made: &Made) -> bool {
    let slot = made.booking.slot;
    chain.branches[slot.branch].resources[slot.resource].kind == Kind::Device
}
