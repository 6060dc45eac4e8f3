//! Availability answers kept in memory (moka), so a read of a busy clinic
//! day is a lookup and a copy of rendered JSON instead of four queries, an
//! overlap test of every candidate start and a serialisation per request.
//!
//! An answer is computed inside one snapshot of the read models and keeps
//! the `schedule` checkpoint of that snapshot (`at`). It stays good as long
//! as nothing it depends on changed after `at`:
//!
//! - every clinic event (hours, closures, resources, treatments, timezone)
//!   stamps its clinic;
//! - every calendar event stamps its calendar, a resource's local day.
//!
//! The stamps are set by [`ReadModels::apply`] *before* the batch commits,
//! with the batch's last point, so once the checkpoint of a batch is
//! visible (a `min_position` wait saw it) its stamps are already there: a
//! cached answer computed before the batch (`at` below the stamp) is never
//! answered again, and one computed from a snapshot taken before the commit
//! but stored after it is refused the same way.
//!
//! Projectors of another process (two `serve --role all`, a `--role api`
//! whose read side runs elsewhere, a rebuild swapped in by the CLI) do not
//! stamp here. Each read therefore also looks at the live checkpoint: when
//! it is past the last batch this process applied, something else moved
//! it, and every answer older than it is dropped (the `floor`). Such a
//! process still serves from the cache while the schedule does not move.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use clinicbook_domain::{AggregateKind, CalendarId};
use clinicbook_eventstore::{FeedEvent, FeedPoint};
use moka::future::Cache;
use uuid::Uuid;

use crate::query::schedule::{Availability, FreeSlot};

/// Most bytes of answers kept (slots and their rendered JSON).
const CAPACITY_BYTES: u64 = 32 * 1024 * 1024;

/// Most day stamps kept before they are folded into the floor.
const MAX_DAY_STAMPS: usize = 200_000;

/// What an availability answer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AvailabilityKey {
    pub clinic_id: Uuid,
    pub treatment_id: Uuid,
    pub date: NaiveDate,
}

/// An answer as computed at `at`, before the `now` cut (slots that start
/// at or before `now` are left out at answer time).
#[derive(Debug)]
pub(crate) struct Computed {
    /// The `schedule` checkpoint of the snapshot it was computed in.
    pub at: FeedPoint,
    /// The resources it looked at (their calendars of `date`).
    pub resources: Vec<Uuid>,
    /// Every free slot, by resource, then start.
    pub free: Vec<FreeSlot>,
    /// The JSON of the last cut answered, and the instants it holds for.
    rendered: Mutex<Option<Rendered>>,
}

/// A rendered answer, good for every `now` in `[from, until)`.
#[derive(Debug, Clone)]
struct Rendered {
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    json: Bytes,
}

impl Computed {
    pub(crate) fn new(at: FeedPoint, resources: Vec<Uuid>, free: Vec<FreeSlot>) -> Self {
        Self {
            at,
            resources,
            free,
            rendered: Mutex::new(None),
        }
    }

    /// The slots still ahead at `now`.
    pub(crate) fn answer(&self, key: AvailabilityKey, now: DateTime<Utc>) -> Availability {
        Availability {
            clinic_id: key.clinic_id,
            treatment_id: key.treatment_id,
            date: key.date,
            slots: self
                .free
                .iter()
                .filter(|slot| slot.start > now)
                .copied()
                .collect(),
        }
    }

    /// [`Computed::answer`] as JSON, rendered once for every `now` that
    /// cuts the same slots.
    pub(crate) fn json(
        &self,
        key: AvailabilityKey,
        now: DateTime<Utc>,
    ) -> Result<Bytes, serde_json::Error> {
        let mut rendered = self.rendered.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = rendered.as_ref() {
            if done.from.is_none_or(|from| from <= now)
                && done.until.is_none_or(|until| now < until)
            {
                return Ok(done.json.clone());
            }
        }
        // The same slots are cut for every `now` between the latest start
        // at or before it and the earliest start after it.
        let from = self
            .free
            .iter()
            .map(|s| s.start)
            .filter(|s| *s <= now)
            .max();
        let until = self.free.iter().map(|s| s.start).filter(|s| *s > now).min();
        let json = Bytes::from(serde_json::to_vec(&self.answer(key, now))?);
        *rendered = Some(Rendered {
            from,
            until,
            json: json.clone(),
        });
        Ok(json)
    }

    /// Bytes it holds, roughly (for the cache's capacity).
    fn weight(&self) -> u32 {
        // A slot takes ~40 bytes and ~110 of JSON.
        u32::try_from(self.free.len().saturating_mul(150).saturating_add(256)).unwrap_or(u32::MAX)
    }
}

/// Which answers the projector has made old, by the point it made them so.
#[derive(Debug, Default)]
struct Stamps {
    /// Answers computed before this are old, whatever they depend on.
    floor: FeedPoint,
    /// The last batch this process applied (or is applying).
    applied: FeedPoint,
    /// The last change of each clinic's setup.
    clinics: HashMap<Uuid, FeedPoint>,
    /// The last change of each calendar (resource, local day).
    days: HashMap<(Uuid, NaiveDate), FeedPoint>,
}

impl Stamps {
    fn fresh(&self, key: &AvailabilityKey, computed: &Computed) -> bool {
        let at = computed.at;
        at >= self.floor
            && self.clinics.get(&key.clinic_id).is_none_or(|p| at >= *p)
            && computed.resources.iter().all(|resource| {
                self.days
                    .get(&(*resource, key.date))
                    .is_none_or(|p| at >= *p)
            })
    }
}

/// The availability cache a [`crate::ReadModels`] and its clones share.
#[derive(Clone)]
pub(crate) struct AvailabilityCache {
    answers: Cache<AvailabilityKey, Arc<Computed>>,
    stamps: Arc<Mutex<Stamps>>,
}

impl std::fmt::Debug for AvailabilityCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvailabilityCache")
            .field("answers", &self.answers.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for AvailabilityCache {
    fn default() -> Self {
        Self {
            answers: Cache::builder()
                .max_capacity(CAPACITY_BYTES)
                .weigher(|_, computed: &Arc<Computed>| computed.weight())
                .build(),
            stamps: Arc::default(),
        }
    }
}

impl AvailabilityCache {
    fn stamps(&self) -> std::sync::MutexGuard<'_, Stamps> {
        self.stamps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer for `key`, if one is kept and still good. `live` is the
    /// `schedule` checkpoint as it is now.
    pub(crate) async fn get(
        &self,
        key: &AvailabilityKey,
        live: FeedPoint,
    ) -> Option<Arc<Computed>> {
        let computed = self.answers.get(key).await?;
        let fresh = {
            let mut stamps = self.stamps();
            if live > stamps.applied && live > stamps.floor {
                // Another process moved the checkpoint.
                stamps.floor = live;
            }
            stamps.fresh(key, &computed)
        };
        if fresh {
            Some(computed)
        } else {
            self.answers.invalidate(key).await;
            None
        }
    }

    /// Keeps `computed` for `key` unless a batch made it old already.
    pub(crate) async fn put(&self, key: AvailabilityKey, computed: Arc<Computed>) {
        if self.stamps().fresh(&key, &computed) {
            self.answers.insert(key, computed).await;
        }
    }

    /// Marks what a batch of the `schedule` projection changes, before it
    /// commits: `from` is the checkpoint it starts at, `to` its last event.
    pub(crate) fn applying(&self, from: FeedPoint, to: FeedPoint, events: &[FeedEvent]) {
        let mut stamps = self.stamps();
        if from != stamps.applied && from > stamps.floor {
            // Something else applied since this process's last batch.
            stamps.floor = from;
        }
        stamps.applied = stamps.applied.max(to);
        for event in events {
            match event.kind() {
                Some(AggregateKind::Clinic) => {
                    if let Ok(clinic_id) = event.aggregate_id.parse::<Uuid>() {
                        stamps.clinics.insert(clinic_id, to);
                    } else {
                        stamps.floor = to;
                    }
                }
                Some(AggregateKind::Calendar) => {
                    if let Ok(calendar) = event.aggregate_id.parse::<CalendarId>() {
                        stamps
                            .days
                            .insert((calendar.resource_id.0, calendar.date), to);
                    } else {
                        stamps.floor = to;
                    }
                }
                _ => {}
            }
        }
        if stamps.days.len() > MAX_DAY_STAMPS {
            // Forget the stamps, not what they said: everything older is old.
            stamps.days.clear();
            stamps.floor = to;
        }
    }

    /// Drops every answer (a rebuild swapped the tables in).
    pub(crate) fn clear(&self) {
        let mut stamps = self.stamps();
        stamps.floor = stamps.floor.max(stamps.applied);
        drop(stamps);
        self.answers.invalidate_all();
    }
}
