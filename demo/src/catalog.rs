//! The demo chain: three Berlin-area branches with their rooms, lasers and
//! practitioners, opening hours and pricing rules; the treatments they
//! share by id; the programs and promo codes. [`Chain::new`] describes it
//! (pure, from the seed) and [`create`] sets it up through the admin routes.

use chrono::{DateTime, Duration, Utc, Weekday};
use clinicbook_wire::admin::{
    AddResource, AddTreatment, CreateProgram, CreatePromoCode, LastMinuteInput, OpeningHoursInput,
    PricingRuleInput, PricingRulesInput, RegisterClinic,
};
use reqwest::StatusCode;
use uuid::Uuid;

use super::client::{each, Api, As};
use super::ids::{demo_id, key};
use super::DemoError;

/// The timezone of every branch.
pub(super) const TIMEZONE: &str = "Europe/Berlin";
/// Hours of notice for a free cancellation.
const NOTICE_HOURS: u32 = 24;
/// Percent of the price kept on a late cancellation.
const LATE_FEE_PERCENT: i64 = 50;

/// The kinds of resources a treatment is booked on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A treatment room.
    Room,
    /// A laser.
    Device,
    /// A doctor.
    Practitioner,
}

impl Kind {
    /// The API's name of the kind.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Room => "room",
            Kind::Device => "device",
            Kind::Practitioner => "practitioner",
        }
    }
}

/// A room, laser or practitioner of a branch.
#[derive(Clone, Debug)]
pub(super) struct Resource {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique in the branch.
    pub name: String,
    /// What it is.
    pub kind: Kind,
}

/// One branch of the chain.
#[derive(Clone, Debug)]
pub(super) struct Branch {
    /// A short label for ids and keys.
    pub slug: &'static str,
    /// The display name.
    pub name: &'static str,
    /// Its clinic id.
    pub clinic_id: Uuid,
    /// Two rooms, two lasers, two practitioners.
    pub resources: Vec<Resource>,
}

/// A treatment every branch offers under the same id.
#[derive(Clone, Debug)]
pub(super) struct Treatment {
    /// A short label for ids.
    pub slug: &'static str,
    /// The display name.
    pub name: &'static str,
    /// Its id at every branch.
    pub id: Uuid,
    /// Length of an appointment.
    pub duration_minutes: u32,
    /// Time the resource stays free after it.
    pub buffer_minutes: u32,
    /// Base price in euro cents.
    pub price_cents: i64,
    /// What it is booked on.
    pub kind: Kind,
}

/// A package offer of the catalog.
#[derive(Clone, Debug)]
pub(super) struct Program {
    /// Its id.
    pub id: Uuid,
    /// The display name.
    pub name: &'static str,
    /// Index into [`Chain::treatments`].
    pub treatment: usize,
    /// Sessions per package.
    pub sessions: u32,
    /// Price of a package in euro cents.
    pub price_cents: i64,
}

/// A promo code of the catalog.
#[derive(Clone, Debug)]
pub(super) struct Promo {
    /// The code patients quote.
    pub code: &'static str,
    /// Percent off, or …
    pub percent_off: Option<i64>,
    /// … a fixed amount off.
    pub amount_off_cents: Option<i64>,
    /// Redemptions allowed in total.
    pub max_redemptions: u32,
    /// Redemptions allowed per patient.
    pub per_patient_limit: u32,
    /// Indexes into [`Chain::treatments`] it applies to; `None`: all.
    pub treatments: Option<Vec<usize>>,
}

/// Everything the admin sets up, with ids derived from the seed.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    /// The three branches.
    pub branches: Vec<Branch>,
    /// The shared treatments.
    pub treatments: Vec<Treatment>,
    /// The programs, valid at every branch.
    pub programs: Vec<Program>,
    /// The promo codes.
    pub promos: Vec<Promo>,
}

/// Index of the small-area laser treatment in [`Chain::treatments`].
pub(super) const LASER_SMALL: usize = 0;
/// Index of the large-area laser treatment.
pub(super) const LASER_LARGE: usize = 1;
/// Index of the consultation.
pub(super) const CONSULTATION: usize = 3;
/// Index of the percent-off promo code in [`Chain::promos`].
pub(super) const PROMO_PERCENT: usize = 0;
/// Index of the laser-only amount-off promo code.
pub(super) const PROMO_LASER: usize = 1;

impl Chain {
    /// The demo chain of the run with `seed`.
    pub(super) fn new(seed: u64) -> Self {
        let branches = [
            (
                "berlin-mitte",
                "Berlin Mitte",
                ["Dr. Lena Hoffmann", "Dr. Murat Yilmaz"],
            ),
            (
                "berlin-charlottenburg",
                "Berlin Charlottenburg",
                ["Dr. Sophie Wagner", "Dr. Felix Braun"],
            ),
            (
                "potsdam",
                "Potsdam",
                ["Dr. Clara Neumann", "Dr. Jonas Richter"],
            ),
        ]
        .into_iter()
        .map(|(slug, name, doctors)| branch(seed, slug, name, doctors))
        .collect();
        Self {
            branches,
            treatments: treatments(seed),
            programs: programs(seed),
            promos: promos(),
        }
    }

    /// The resources of `branch` a `treatment` is booked on.
    pub(super) fn resources_for(&self, branch: usize, treatment: usize) -> Vec<usize> {
        let kind = self.treatments[treatment].kind;
        self.branches[branch]
            .resources
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == kind)
            .map(|(i, _)| i)
            .collect()
    }
}

fn branch(seed: u64, slug: &'static str, name: &'static str, doctors: [&str; 2]) -> Branch {
    let resources = [
        ("Room 1", Kind::Room),
        ("Room 2", Kind::Room),
        ("Laser A", Kind::Device),
        ("Laser B", Kind::Device),
        (doctors[0], Kind::Practitioner),
        (doctors[1], Kind::Practitioner),
    ]
    .into_iter()
    .map(|(resource, kind)| Resource {
        id: demo_id(seed, &format!("{slug}/resource/{resource}")),
        name: resource.to_string(),
        kind,
    })
    .collect();
    Branch {
        slug,
        name,
        clinic_id: demo_id(seed, &format!("clinic/{slug}")),
        resources,
    }
}

fn treatments(seed: u64) -> Vec<Treatment> {
    [
        (
            "laser-small",
            "Laser hair removal (small area)",
            30,
            10,
            8_900,
            Kind::Device,
        ),
        (
            "laser-large",
            "Laser hair removal (large area)",
            60,
            15,
            18_900,
            Kind::Device,
        ),
        ("skin", "Skin rejuvenation", 45, 15, 14_900, Kind::Room),
        (
            "consultation",
            "Consultation",
            30,
            0,
            4_900,
            Kind::Practitioner,
        ),
    ]
    .into_iter()
    .map(
        |(slug, name, duration_minutes, buffer_minutes, price_cents, kind)| Treatment {
            slug,
            name,
            id: demo_id(seed, &format!("treatment/{slug}")),
            duration_minutes,
            buffer_minutes,
            price_cents,
            kind,
        },
    )
    .collect()
}

fn programs(seed: u64) -> Vec<Program> {
    vec![
        Program {
            id: demo_id(seed, "program/laser-small-6"),
            name: "Laser hair removal (small area), 6 sessions",
            treatment: LASER_SMALL,
            sessions: 6,
            price_cents: 44_900,
        },
        Program {
            id: demo_id(seed, "program/laser-large-10"),
            name: "Laser hair removal (large area), 10 sessions",
            treatment: LASER_LARGE,
            sessions: 10,
            price_cents: 149_000,
        },
    ]
}

fn promos() -> Vec<Promo> {
    vec![
        Promo {
            code: "WELCOME15",
            percent_off: Some(15),
            amount_off_cents: None,
            max_redemptions: 500,
            per_patient_limit: 1,
            treatments: None,
        },
        Promo {
            code: "LASER20",
            percent_off: None,
            amount_off_cents: Some(2_000),
            max_redemptions: 200,
            per_patient_limit: 2,
            treatments: Some(vec![LASER_SMALL, LASER_LARGE]),
        },
    ]
}

/// Opening hours of every branch in local minutes after midnight:
/// Monday to Friday 09:00-19:00, Saturday 10:00-16:00, closed on Sunday.
pub(super) fn opening(weekday: Weekday) -> Option<(u32, u32)> {
    match weekday {
        Weekday::Sun => None,
        Weekday::Sat => Some((10 * 60, 16 * 60)),
        _ => Some((9 * 60, 19 * 60)),
    }
}

fn opening_hours() -> OpeningHoursInput {
    OpeningHoursInput::from_days(|weekday| {
        opening(weekday.to_chrono())
            .map(|(from, to)| vec![[hh_mm(from), hh_mm(to)]])
            .unwrap_or_default()
    })
}

/// Friday evening +15 %, Tuesday morning -10 %, last minute (within 24 h)
/// -10 %.
fn pricing_rules() -> PricingRulesInput {
    let rule = |weekday: &str, from: &str, to: &str, percent| PricingRuleInput {
        weekdays: vec![weekday.to_string()],
        from: from.to_string(),
        to: to.to_string(),
        percent,
    };
    PricingRulesInput {
        rules: vec![
            rule("fri", "17:00", "19:00", 15),
            rule("tue", "09:00", "12:00", -10),
        ],
        last_minute: Some(LastMinuteInput {
            within_hours: 24,
            percent_off: 10,
        }),
    }
}

/// The highest price a treatment can have under [`pricing_rules`] (the
/// Friday evening surcharge), so a wallet is never planned to run dry.
pub(super) fn worst_price(treatment: &Treatment) -> i64 {
    (treatment.price_cents * 115 + 99) / 100
}

/// `HH:MM` of minutes after midnight.
pub(super) fn hh_mm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Sets the chain up: the branches (in parallel), then the programs and
/// promo codes, which need every branch's treatments.
///
/// # Errors
/// Any refusal of the admin routes, or a transport failure.
pub(super) async fn create(
    api: &Api,
    chain: &Chain,
    seed: u64,
    today: DateTime<Utc>,
) -> Result<(), DemoError> {
    each(chain.branches.clone(), chain.branches.len(), |branch| {
        create_branch(api, chain, branch, seed)
    })
    .await?;
    for program in &chain.programs {
        create_program(api, chain, program, seed).await?;
    }
    for promo in &chain.promos {
        create_promo(api, chain, promo, seed, today).await?;
    }
    Ok(())
}

async fn create_branch(
    api: &Api,
    chain: &Chain,
    branch: Branch,
    seed: u64,
) -> Result<(), DemoError> {
    let slug = branch.slug;
    let register = RegisterClinic {
        clinic_id: Some(branch.clinic_id),
        name: branch.name.to_string(),
        timezone: TIMEZONE.to_string(),
        currency: "EUR".to_string(),
        cancellation_notice_hours: Some(NOTICE_HOURS),
        late_cancel_fee_percent: Some(LATE_FEE_PERCENT),
    };
    api.post(
        As::Admin,
        "/v1/clinics",
        &register,
        &key(seed, &format!("clinic/{slug}")),
    )
    .await?
    .expect(StatusCode::CREATED)?;
    let base = format!("/v1/clinics/{}", branch.clinic_id);
    api.put(
        As::Admin,
        &format!("{base}/opening-hours"),
        &opening_hours(),
    )
    .await?
    .expect(StatusCode::OK)?;
    api.put(
        As::Admin,
        &format!("{base}/pricing-rules"),
        &pricing_rules(),
    )
    .await?
    .expect(StatusCode::OK)?;
    for resource in &branch.resources {
        let body = AddResource {
            resource_id: Some(resource.id),
            name: resource.name.clone(),
            kind: resource.kind.as_str().to_string(),
        };
        let label = format!("clinic/{slug}/resource/{}", resource.name);
        api.post(
            As::Admin,
            &format!("{base}/resources"),
            &body,
            &key(seed, &label),
        )
        .await?
        .expect(StatusCode::CREATED)?;
    }
    for treatment in &chain.treatments {
        let body = AddTreatment {
            treatment_id: Some(treatment.id),
            name: treatment.name.to_string(),
            duration_minutes: treatment.duration_minutes,
            buffer_minutes: treatment.buffer_minutes,
            price_cents: treatment.price_cents,
            resource_kind: treatment.kind.as_str().to_string(),
        };
        let label = format!("clinic/{slug}/treatment/{}", treatment.slug);
        api.post(
            As::Admin,
            &format!("{base}/treatments"),
            &body,
            &key(seed, &label),
        )
        .await?
        .expect(StatusCode::CREATED)?;
    }
    Ok(())
}

async fn create_program(
    api: &Api,
    chain: &Chain,
    program: &Program,
    seed: u64,
) -> Result<(), DemoError> {
    let body = CreateProgram {
        program_id: Some(program.id),
        name: program.name.to_string(),
        treatment_id: chain.treatments[program.treatment].id,
        sessions: program.sessions,
        price_cents: program.price_cents,
        validity_days: 365,
        clinic_ids: chain.branches.iter().map(|b| b.clinic_id).collect(),
    };
    api.post(
        As::Admin,
        "/v1/programs",
        &body,
        &key(seed, &format!("program/{}", program.id)),
    )
    .await?
    .expect(StatusCode::CREATED)
}

/// Creates a promo code valid from the start of `today` (UTC) for 90 days.
/// Codes are global, not per chain: one that already exists (made by an
/// earlier demo with another seed) is used as it is.
async fn create_promo(
    api: &Api,
    chain: &Chain,
    promo: &Promo,
    seed: u64,
    today: DateTime<Utc>,
) -> Result<(), DemoError> {
    let body = CreatePromoCode {
        code: promo.code.to_string(),
        percent_off: promo.percent_off,
        amount_off_cents: promo.amount_off_cents,
        valid_from: today,
        valid_until: today + Duration::days(90),
        max_redemptions: promo.max_redemptions,
        per_patient_limit: promo.per_patient_limit,
        treatment_ids: promo
            .treatments
            .as_ref()
            .map(|ts| ts.iter().map(|&t| chain.treatments[t].id).collect()),
    };
    let reply = api
        .post(
            As::Admin,
            "/v1/promo-codes",
            &body,
            &key(seed, &format!("promo/{}", promo.code)),
        )
        .await?;
    if reply.status == StatusCode::CONFLICT && reply.code() == "already_exists" {
        return Ok(());
    }
    reply.expect(StatusCode::CREATED)
}
