//! Wallets and packages: deposits, refunds, package purchases (paid from
//! the wallet or outside) and transfers, and the views staff read back.
//!
//! A wallet exists for every patient: its id is the patient's UUID and a
//! wallet nobody used yet holds zero and has no transactions, so reading
//! it never answers `not_found` (clinicbook keeps no patient registry that
//! could say a patient does not exist).
//!
//! The views are folded from one read of the aggregate's stored events
//! (each event with its sequence, position and `recorded_at`), so a view's
//! state and its history always agree.

use clinicbook_eventstore::audit::{self, StoredEvent};
use clinicbook_eventstore::{EventStore, StoreError, StoredAggregate};

mod package;
mod wallet;

pub use package::{
    PackageBought, PackageChange, PackageHistoryEntry, PackagePayment, PackageView,
    PurchasePackage, TransferPackage,
};
pub use wallet::{
    Balance, Deposit, WalletRefund, WalletTransactionKind, WalletTransactionView, WalletView,
};

/// An aggregate folded from its stored events, with each event beside its
/// stored record.
struct Replayed<A: StoredAggregate> {
    state: A,
    events: Vec<(StoredEvent, A::Event)>,
}

/// Reads the stream `id` of `A` and folds it, up to and including global
/// position `up_to` when given (the state right after a given command).
///
/// # Errors
/// The database failed, or a stored payload no longer deserialises.
async fn replay<A: StoredAggregate>(
    store: &EventStore,
    id: &str,
    up_to: Option<i64>,
) -> Result<Replayed<A>, StoreError> {
    let stored = audit::stream_events(store.pool(), A::TYPE, id).await?;
    let mut state = A::default();
    let mut events = Vec::with_capacity(stored.len());
    for record in stored
        .into_iter()
        .filter(|e| up_to.is_none_or(|last| e.position <= last))
    {
        let event: A::Event =
            serde_json::from_value(record.payload.clone()).map_err(|e| StoreError::Corrupt {
                aggregate_type: A::TYPE.to_string(),
                aggregate_id: id.to_string(),
                reason: format!(
                    "event {} ({}) does not deserialise: {e}",
                    record.sequence, record.event_type
                ),
            })?;
        state.apply(event.clone());
        events.push((record, event));
    }
    Ok(Replayed { state, events })
}

/// A free-text field as stored: trimmed, so `" card-1"` and `"card-1"` are
/// one and the same wallet reference.
fn trimmed(text: &str) -> String {
    text.trim().to_string()
}
