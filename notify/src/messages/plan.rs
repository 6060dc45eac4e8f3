//! The planner: reads the event feed after its cursor and writes one
//! `messages` row per intended message, in the transaction that moves the
//! cursor, so a message is decided exactly once. One planner works at a
//! time across processes (a lease on the cursor row, as the webhook
//! workers hold theirs).
//!
//! | event | message (kind, start) |
//! |---|---|
//! | `Reservation` `ReservationBooked` | confirmation, the slot's start |
//! | `Reservation` `ReminderDue` | reminder, the reminded start |
//! | `Reservation` `ReservationCancelled` of a booking | cancellation, its start |
//! | `Reservation` `ReservationDisplaced` | displacement, its start, with the next three free starts |
//! | `PatientOffers` `OfferOpened` | waitlist offer, the offered start |
//!
//! Each goes by email when the patient has a profile with an email and
//! consent to email, and as an SMS text when they have a phone and consent
//! to SMS; a walk-in without a profile, or an erased patient, gets none.
//! A `PatientErased` scrubs the patient's SMS texts from the webhook
//! deliveries in the same transaction.

use std::time::Duration;

use chrono::{DateTime, Days, Utc};
use clinicbook_domain::clinic::Clinic;
use clinicbook_domain::offers::PatientOffersEvent;
use clinicbook_domain::patient::{Patient, Sealed};
use clinicbook_domain::reservation::{Reservation, ReservationEvent};
use clinicbook_domain::{ClinicId, PatientId, ReservationId, TreatmentId};
use clinicbook_eventstore::feed::{self, FeedEvent, FeedPoint};
use clinicbook_eventstore::EventStore;
use clinicbook_projections::ReadModels;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};
use uuid::Uuid;

use super::{MessageChannel, MessageConfig, MessageError, MessageKind};

/// How long the planner's lease lasts without renewal.
const LEASE: Duration = Duration::from_secs(30);

/// Free starts a displacement message offers.
const ALTERNATIVES: usize = 3;

/// Days after the displaced start searched for free starts.
const SEARCH_DAYS: u64 = 14;

/// One message the planner decided on.
#[derive(Clone, Debug)]
struct Intended {
    reservation_id: Uuid,
    kind: MessageKind,
    start: DateTime<Utc>,
    channel: MessageChannel,
    patient_id: Uuid,
    clinic_id: Uuid,
    treatment_id: Uuid,
    to: Sealed,
    language: &'static str,
    details: serde_json::Value,
}

/// What an event asks to tell a patient, before their profile is read.
struct Notice {
    reservation_id: ReservationId,
    kind: MessageKind,
    start: DateTime<Utc>,
    patient_id: PatientId,
    clinic_id: ClinicId,
    treatment_id: TreatmentId,
    details: serde_json::Value,
}

/// Starts the planner until `cancel`.
pub fn spawn(
    store: EventStore,
    read: ReadModels,
    config: MessageConfig,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            let holder = Uuid::new_v4();
            loop {
                let pause = match lease(store.pool(), holder).await {
                    Ok(true) => match step(&store, &read, &config).await {
                        Ok(true) => Duration::ZERO,
                        Ok(false) => config.poll,
                        Err(e) => {
                            warn!(error = %e, "message planner step failed; retrying");
                            config.poll * 10
                        }
                    },
                    Ok(false) => LEASE / 6,
                    Err(e) => {
                        warn!(error = %e, "cannot take the message planner's lease");
                        config.poll * 10
                    }
                };
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            let _ = sqlx::query(
                "UPDATE message_cursor SET leased_by = NULL, lease_until = '-infinity' WHERE leased_by = $1",
            )
            .bind(holder)
            .execute(store.pool())
            .await;
        }
        .instrument(tracing::info_span!("message_planner")),
    )
}

/// Takes or renews `holder`'s lease on the cursor (created at the feed's
/// head the first time: messages are about what happens from then on).
async fn lease(pool: &PgPool, holder: Uuid) -> Result<bool, MessageError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM message_cursor)")
        .fetch_one(pool)
        .await?;
    if !exists {
        let head = feed::head(pool).await?;
        sqlx::query(
            "INSERT INTO message_cursor (transaction_id, position) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(head.transaction_id)
        .bind(head.position)
        .execute(pool)
        .await?;
    }
    let taken = sqlx::query(
        "UPDATE message_cursor
            SET leased_by = $1, lease_until = now() + $2 * interval '1 millisecond'
          WHERE leased_by = $1 OR lease_until < now()",
    )
    .bind(holder)
    .bind(i64::try_from(LEASE.as_millis()).unwrap_or(30_000))
    .execute(pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// The cursor: the last event the planner has decided on.
///
/// # Errors
/// The database failed.
pub async fn cursor(pool: &PgPool) -> Result<Option<FeedPoint>, MessageError> {
    let row = sqlx::query("SELECT transaction_id, position FROM message_cursor")
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(row) => Some(FeedPoint {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        }),
        None => None,
    })
}

/// Plans the next batch of events; answers whether there was one.
async fn step(
    store: &EventStore,
    read: &ReadModels,
    config: &MessageConfig,
) -> Result<bool, MessageError> {
    let pool = store.pool();
    let Some(after) = cursor(pool).await? else {
        return Ok(false);
    };
    let batch = feed::read_after(pool, after, config.batch).await?;
    let Some(last) = batch.last().map(FeedEvent::point) else {
        return Ok(false);
    };
    let mut planned = Vec::new();
    let erased: Vec<Uuid> = batch
        .iter()
        .filter(|e| e.aggregate_type == "Patient" && e.event_type == "PatientErased")
        .filter_map(|e| e.aggregate_id.parse().ok())
        .collect();
    for event in &batch {
        let Some(notice) = notice_of(store, event).await? else {
            continue;
        };
        for intended in addressed(store, read, notice).await? {
            planned.push((event, intended));
        }
    }
    let mut tx = pool.begin().await?;
    for (event, m) in &planned {
        let inserted = sqlx::query(
            "INSERT INTO messages (message_id, reservation_id, kind, start, channel, patient_id,
                                   clinic_id, treatment_id, to_sealed, language, details,
                                   position, occurred_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (reservation_id, kind, start, channel) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(m.reservation_id)
        .bind(m.kind.as_str())
        .bind(m.start)
        .bind(m.channel.as_str())
        .bind(m.patient_id)
        .bind(m.clinic_id)
        .bind(m.treatment_id)
        .bind(&m.to.0)
        .bind(m.language)
        .bind(&m.details)
        .bind(event.position)
        .bind(event.recorded_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            metrics::counter!("clinicbook_messages_queued_total",
                "kind" => m.kind.as_str(), "channel" => m.channel.as_str())
            .increment(1);
            debug!(reservation_id = %m.reservation_id, kind = m.kind.as_str(),
                   channel = m.channel.as_str(), "message queued");
        }
    }
    for patient in &erased {
        forget(&mut tx, *patient).await?;
    }
    sqlx::query("UPDATE message_cursor SET transaction_id = $1, position = $2")
        .bind(last.transaction_id)
        .bind(last.position)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Drops what an erased patient's messages left in plaintext outside the
/// sealed address: the SMS texts queued for the gateway (their phone
/// number and text become `"[erased]"`, and those not delivered yet are
/// dead-lettered) and the last SMTP errors (a relay may quote the address).
async fn forget(tx: &mut sqlx::PgConnection, patient: Uuid) -> Result<(), MessageError> {
    sqlx::query(
        "UPDATE webhook_deliveries d
            SET body = jsonb_build_object('id', d.event_id, 'type', d.type,
                         'data', jsonb_build_object('to', '[erased]', 'text', '[erased]'))::text,
                dead_lettered_at = CASE WHEN d.delivered_at IS NULL
                                        THEN coalesce(d.dead_lettered_at, now())
                                        ELSE d.dead_lettered_at END
          WHERE d.type = $2
            AND d.event_id IN (SELECT 'Message/' || message_id FROM messages
                                WHERE patient_id = $1 AND channel = 'sms')",
    )
    .bind(patient)
    .bind(crate::names::MESSAGE_SMS)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE messages SET last_error = NULL WHERE patient_id = $1")
        .bind(patient)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(event: &FeedEvent) -> Result<T, MessageError> {
    serde_json::from_value(event.payload.clone()).map_err(|e| MessageError::Decode {
        what: "event",
        reason: format!(
            "{}/{} {}: {e}",
            event.aggregate_type, event.aggregate_id, event.event_type
        ),
    })
}

/// What `event` asks to tell a patient, if anything.
async fn notice_of(store: &EventStore, event: &FeedEvent) -> Result<Option<Notice>, MessageError> {
    match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        (
            "Reservation",
            "ReservationBooked" | "ReminderDue" | "ReservationCancelled" | "ReservationDisplaced",
        ) => {}
        ("PatientOffers", "OfferOpened") => {
            let PatientOffersEvent::OfferOpened { patient_id, offer } =
                decode::<PatientOffersEvent>(event)?
            else {
                return Ok(None);
            };
            let (waiting, _) = store
                .aggregate::<Reservation>(&offer.reservation_id.to_string())
                .await?;
            let (Some(clinic_id), Some(treatment_id)) = (waiting.clinic_id, waiting.treatment_id)
            else {
                return Ok(None);
            };
            return Ok(Some(Notice {
                reservation_id: offer.reservation_id,
                kind: MessageKind::WaitlistOffer,
                start: offer.slot.start,
                patient_id,
                clinic_id,
                treatment_id,
                details: serde_json::json!({
                    "expires_at": offer.expires_at,
                    "hold_id": offer.hold_id,
                }),
            }));
        }
        _ => return Ok(None),
    }
    let change: ReservationEvent = decode(event)?;
    let (reservation, _) = store.aggregate::<Reservation>(&event.aggregate_id).await?;
    let (Some(reservation_id), Some(patient_id), Some(clinic_id), Some(treatment_id)) = (
        reservation.reservation_id,
        reservation.patient_id,
        reservation.clinic_id,
        reservation.treatment_id,
    ) else {
        return Ok(None);
    };
    let notice = |kind, start, details| Notice {
        reservation_id,
        kind,
        start,
        patient_id,
        clinic_id,
        treatment_id,
        details,
    };
    let none = serde_json::json!({});
    Ok(match change {
        ReservationEvent::ReservationBooked { slot, .. } => {
            Some(notice(MessageKind::Confirmation, slot.start, none))
        }
        ReservationEvent::ReminderDue { start, .. } => {
            Some(notice(MessageKind::Reminder, start, none))
        }
        // A waitlist entry cancelled had no slot: nothing to tell.
        ReservationEvent::ReservationCancelled { .. } => reservation
            .slot
            .map(|slot| notice(MessageKind::Cancellation, slot.start, none)),
        ReservationEvent::ReservationDisplaced { .. } => reservation.slot.map(|slot| {
            notice(
                MessageKind::Displacement,
                slot.start,
                serde_json::json!({ "alternatives": [] }),
            )
        }),
        _ => None,
    })
}

/// The messages of `notice` by each channel the patient agreed to, with
/// the free starts a displacement offers.
async fn addressed(
    store: &EventStore,
    read: &ReadModels,
    mut notice: Notice,
) -> Result<Vec<Intended>, MessageError> {
    let (patient, _) = store
        .aggregate::<Patient>(&notice.patient_id.to_string())
        .await?;
    // A walk-in has no profile; an erased patient has none any more.
    let Some(profile) = patient.profile.filter(|_| patient.erased_at.is_none()) else {
        return Ok(Vec::new());
    };
    let mut channels = Vec::new();
    if let (true, Some(email)) = (profile.consent.email, &profile.contact.email) {
        channels.push((MessageChannel::Email, email.clone()));
    }
    if let (true, Some(phone)) = (profile.consent.sms, &profile.contact.phone) {
        channels.push((MessageChannel::Sms, phone.clone()));
    }
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    if notice.kind == MessageKind::Displacement {
        let starts = free_starts(store, read, &notice).await?;
        notice.details = serde_json::json!({ "alternatives": starts });
    }
    Ok(channels
        .into_iter()
        .map(|(channel, to)| Intended {
            reservation_id: notice.reservation_id.0,
            kind: notice.kind,
            start: notice.start,
            channel,
            patient_id: notice.patient_id.0,
            clinic_id: notice.clinic_id.0,
            treatment_id: notice.treatment_id.0,
            to,
            language: profile.language.into(),
            details: notice.details.clone(),
        })
        .collect())
}

/// The next [`ALTERNATIVES`] free starts of the notice's treatment at its
/// clinic (on any resource, the displaced start too when another resource
/// has it), from the availability read model, after now, over the
/// [`SEARCH_DAYS`] from the displaced day.
async fn free_starts(
    store: &EventStore,
    read: &ReadModels,
    notice: &Notice,
) -> Result<Vec<DateTime<Utc>>, MessageError> {
    let (clinic, _) = store
        .aggregate::<Clinic>(&notice.clinic_id.to_string())
        .await?;
    let tz = clinic.timezone.unwrap_or(chrono_tz::UTC);
    let now = Utc::now();
    let from = notice.start.max(now).with_timezone(&tz).date_naive();
    let mut starts = Vec::new();
    for day in 0..SEARCH_DAYS {
        let Some(date) = from.checked_add_days(Days::new(day)) else {
            break;
        };
        let free = read
            .availability(notice.clinic_id.0, notice.treatment_id.0, date, now)
            .await?;
        let mut day_starts: Vec<DateTime<Utc>> = free
            .slots
            .iter()
            .map(|slot| slot.start)
            .filter(|start| *start > now)
            .collect();
        day_starts.sort();
        day_starts.dedup();
        starts.extend(day_starts);
        if starts.len() >= ALTERNATIVES {
            break;
        }
    }
    starts.truncate(ALTERNATIVES);
    Ok(starts)
}
