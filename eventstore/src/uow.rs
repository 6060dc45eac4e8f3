//! The unit of work: every aggregate a command touches, loaded once, changed
//! on copies, and committed together by [`crate::EventStore::execute`].

use std::any::Any;

use clinicbook_domain::patient::{Contact, SealedContact};
use clinicbook_domain::PatientId;
use cqrs_es::event_sink::EventSink;
use cqrs_es::DomainEvent;

use crate::error::{StoreError, UowError};
use crate::hash::Hash;
use crate::personal::{DataKey, KeyChange};
use crate::store::{EventStore, StoredAggregate, StreamKey};

/// How a command depends on a stream it loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Read for information only; a concurrent change does not matter.
    Read,
    /// Read and relied upon: the commit fails (and the command is retried)
    /// if the stream changed since it was loaded.
    Guarded,
    /// Appended to: guarded by its expected sequence.
    Write,
}

/// An event ready to be appended: its serialised form.
pub(crate) struct PendingEvent {
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
}

/// Serialises a type-erased aggregate state (for snapshots).
pub(crate) type SerializeState =
    fn(&(dyn Any + Send + Sync)) -> Option<Result<String, serde_json::Error>>;

/// One stream as the unit of work holds it.
pub(crate) struct Tracked {
    pub key: StreamKey,
    /// The stream's sequence when it was loaded.
    pub expected: u64,
    /// The hash of the stream's last event when it was loaded.
    pub last_hash: Hash,
    /// The aggregate's state, including the pending events.
    pub state: Box<dyn Any + Send + Sync>,
    pub pending: Vec<PendingEvent>,
    pub mode: Mode,
    pub serialize: SerializeState,
}

fn serialize_state<A: StoredAggregate>(
    state: &(dyn Any + Send + Sync),
) -> Option<Result<String, serde_json::Error>> {
    state.downcast_ref::<A>().map(serde_json::to_string)
}

/// The aggregates one attempt of a command works on.
///
/// Each aggregate is loaded at most once per attempt; `handle` runs the
/// aggregate's command handler on a clone, so a refused command leaves the
/// unit of work exactly as it was (cqrs-es 0.5 applies events to the
/// aggregate as they are written, even when `handle` then fails).
pub struct UnitOfWork {
    store: EventStore,
    pub(crate) tracked: Vec<Tracked>,
    /// Data keys created or destroyed by this attempt, committed with it.
    pub(crate) keys: Vec<KeyChange>,
    /// Keys this attempt sealed with (created here or read from the table).
    sealing: Vec<DataKey>,
}

impl UnitOfWork {
    pub(crate) fn new(store: EventStore) -> Self {
        Self {
            store,
            tracked: Vec::new(),
            keys: Vec::new(),
            sealing: Vec::new(),
        }
    }

    /// `contact` sealed with `patient`'s data key; a patient without one
    /// gets a new key, stored with this unit of work's commit.
    ///
    /// # Errors
    /// The key table cannot be read or the stored key does not unwrap.
    pub async fn seal_contact(
        &mut self,
        patient: PatientId,
        contact: &Contact,
    ) -> Result<SealedContact, UowError> {
        let key = match self.sealing.iter().find(|k| k.patient() == patient) {
            Some(key) => key.clone(),
            None => {
                let key = match self.store.data_key(patient).await? {
                    Some(key) => key,
                    None => {
                        let (key, wrapped) = self.store.master_key().new_data_key(patient)?;
                        self.keys.push(KeyChange::Create { patient, wrapped });
                        key
                    }
                };
                self.sealing.push(key.clone());
                key
            }
        };
        Ok(contact.seal(|plain| key.seal(plain))?)
    }

    /// Destroys `patient`'s data key when this unit of work commits (in
    /// its transaction): erasure.
    pub fn destroy_key(&mut self, patient: PatientId) {
        self.sealing.retain(|k| k.patient() != patient);
        self.keys.retain(
            |change| !matches!(change, KeyChange::Create { patient: p, .. } if *p == patient),
        );
        self.keys.push(KeyChange::Destroy { patient });
    }

    async fn track<A: StoredAggregate>(&mut self, id: &str) -> Result<usize, StoreError> {
        let key = StreamKey::of::<A>(id);
        if let Some(index) = self.tracked.iter().position(|t| t.key == key) {
            return Ok(index);
        }
        let loaded = self.store.load::<A>(id).await?;
        self.tracked.push(Tracked {
            key,
            expected: loaded.sequence,
            last_hash: loaded.last_hash,
            state: Box::new(loaded.state),
            pending: Vec::new(),
            mode: Mode::Read,
            serialize: serialize_state::<A>,
        });
        Ok(self.tracked.len() - 1)
    }

    fn state_at<A: StoredAggregate>(&self, index: usize) -> Result<&A, StoreError> {
        let tracked = &self.tracked[index];
        tracked
            .state
            .downcast_ref::<A>()
            .ok_or_else(|| StoreError::Corrupt {
                aggregate_type: tracked.key.aggregate_type.to_string(),
                aggregate_id: tracked.key.aggregate_id.clone(),
                reason: "held state has another type".to_string(),
            })
    }

    /// The current state of an aggregate (with this attempt's changes), for
    /// information only: if another command changes it concurrently, this
    /// command still commits.
    ///
    /// # Errors
    /// Loading failed.
    pub async fn load<A: StoredAggregate>(&mut self, id: &str) -> Result<&A, UowError> {
        let index = self.track::<A>(id).await?;
        Ok(self.state_at::<A>(index)?)
    }

    /// The current state of an aggregate this command relies on without
    /// changing it (a clinic's opening hours while booking): the commit
    /// fails and the command is retried if the aggregate changes
    /// concurrently.
    ///
    /// # Errors
    /// Loading failed.
    pub async fn guard<A: StoredAggregate>(&mut self, id: &str) -> Result<&A, UowError> {
        let index = self.track::<A>(id).await?;
        let tracked = &mut self.tracked[index];
        if tracked.mode == Mode::Read {
            tracked.mode = Mode::Guarded;
        }
        Ok(self.state_at::<A>(index)?)
    }

    /// Runs `command` on the aggregate `id` and keeps the events it produces
    /// for the commit. Returns those events.
    ///
    /// # Errors
    /// `UowError::Domain` if the aggregate refuses the command (nothing of
    /// it is kept); `UowError::Store` if loading or serialising failed.
    pub async fn handle<A: StoredAggregate>(
        &mut self,
        id: &str,
        command: A::Command,
    ) -> Result<Vec<A::Event>, UowError>
    where
        A::Command: Send,
    {
        let index = self.track::<A>(id).await?;
        let mut working = self.state_at::<A>(index)?.clone();
        let sink = EventSink::<A>::default();
        working.handle(command, &(), &sink).await?;
        let events = sink.collect().await;
        let tracked = &mut self.tracked[index];
        for event in &events {
            let payload = serde_json::to_string(event).map_err(|source| StoreError::Serde {
                what: format!("{} event {}", A::TYPE, event.event_type()),
                source,
            })?;
            tracked.pending.push(PendingEvent {
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload,
            });
        }
        if !events.is_empty() {
            tracked.mode = Mode::Write;
        }
        tracked.state = Box::new(working);
        Ok(events)
    }
}
