//! A few holds for the demo: slots taken for an hour on the last demo day,
//! as an online checkout leaves them, found free through the availability
//! route and held through `POST /v1/holds`.

use chrono::NaiveDate;
use clinicbook_wire::holds::{HoldPlaced, PlaceHold};
use reqwest::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use crate::catalog::{Chain, LASER_SMALL};
use crate::client::{Api, As};
use crate::ids::{demo_id, key};
use crate::DemoError;

/// Holds placed.
const HOLDS: usize = 3;

/// The free slots the availability route answers.
#[derive(Deserialize)]
struct Availability {
    slots: Vec<FreeSlot>,
}

/// One free slot.
#[derive(Deserialize)]
struct FreeSlot {
    resource_id: Uuid,
    start: chrono::DateTime<chrono::Utc>,
}

/// Holds the first [`HOLDS`] free small-area laser slots of the first
/// branch on `date` for an hour, for demo patients; answers the hold ids.
///
/// # Errors
/// The server refused a request.
pub(super) async fn place(
    api: &Api,
    chain: &Chain,
    date: NaiveDate,
    seed: u64,
) -> Result<Vec<Uuid>, DemoError> {
    let (Some(branch), Some(treatment)) =
        (chain.branches.first(), chain.treatments.get(LASER_SMALL))
    else {
        return Ok(Vec::new());
    };
    let free: Availability = api
        .get(
            As::Staff,
            &format!(
                "/v1/clinics/{}/availability?treatment_id={}&date={date}",
                branch.clinic_id, treatment.id
            ),
        )
        .await?
        .parse(StatusCode::OK)?;
    let mut held = Vec::new();
    for (k, slot) in free.slots.iter().step_by(4).take(HOLDS).enumerate() {
        let body = PlaceHold {
            hold_id: Some(demo_id(seed, &format!("hold/{k}"))),
            patient_id: demo_id(seed, &format!("hold-patient/{k}")),
            clinic_id: branch.clinic_id,
            resource_id: slot.resource_id,
            treatment_id: treatment.id,
            start: slot.start,
            ttl_seconds: Some(3600),
            promo_code: None,
        };
        let placed: HoldPlaced = api
            .post(
                As::Staff,
                "/v1/holds",
                &body,
                &key(seed, &format!("hold/{k}")),
            )
            .await?
            .parse(StatusCode::CREATED)?;
        held.push(placed.hold_id);
    }
    Ok(held)
}
