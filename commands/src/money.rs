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

use clinicbook_eventstore::replay::{history, History};
use clinicbook_eventstore::{EventStore, StoreError, StoredAggregate};

mod package;
mod wallet;

/// The requests and answers, defined once in the wire crate.
pub use clinicbook_wire::money::{
    Balance, Deposit, PackageBought, PackageChange, PackageHistoryEntry, PackagePayment,
    PackageView, PurchasePackage, TransferPackage, WalletRefund, WalletTransactionKind,
    WalletTransactionView, WalletView,
};

/// Reads the stream `id` of `A` and folds it (the store's one fold), up to
/// and including global position `up_to` when given (the state right after
/// a given command).
///
/// # Errors
/// The database failed, or a stored event no longer reads as `A`'s.
async fn replay<A: StoredAggregate>(
    store: &EventStore,
    id: &str,
    up_to: Option<i64>,
) -> Result<History<A>, StoreError> {
    history::<A>(store.pool(), id, up_to).await
}

/// A free-text field as stored: trimmed, so `" card-1"` and `"card-1"` are
/// one and the same wallet reference.
fn trimmed(text: &str) -> String {
    text.trim().to_string()
}
