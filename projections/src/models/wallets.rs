//! The `wallets` projection: every wallet's transactions, and its
//! balance — what `GET /v1/wallets/{patient_id}` answers.
//!
//! The balance is recomputed from the transactions of each wallet a batch
//! touched, in the same statement batch, so it always equals their sum
//! (the aggregate's invariant) and a transaction written twice cannot
//! count twice.

use chrono::{DateTime, Utc};
use clinicbook_domain::wallet::{TransactionKind, WalletEvent};
use clinicbook_domain::AggregateKind;
use clinicbook_eventstore::FeedEvent;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{apply_fn, decode, distinct, row, uuid_id, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "wallets",
    tables: &[&WALLETS.def, &TRANSACTIONS.def],
    ddl: "",
    kinds: &[AggregateKind::Wallet],
    apply: apply_fn!(apply_batch),
};

row! {
    /// A row of `wallets_wallets`: one wallet (its id is the patient) and
    /// its balance, the sum of its transactions' signed amounts.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct WalletRow {
        patient_id: Uuid,
        balance_cents: i64,
        transactions: i64,
    }
}

pub(crate) static WALLETS: Table<WalletRow> = Table::new("wallets_wallets", &["patient_id"], &[]);

row! {
    /// A row of `wallets_transactions`: one transaction of a wallet.
    /// Amounts are signed (debits and refunds negative), so they sum to
    /// the balance.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct TransactionRow {
        patient_id: Uuid,
        sequence: i64,
        kind: TransactionKind,
        amount_cents: i64,
        reference: String,
        recorded_at: DateTime<Utc>,
        position: i64,
    }
}

pub(crate) static TRANSACTIONS: Table<TransactionRow> =
    Table::new("wallets_transactions", &["patient_id", "sequence"], &[]);

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mut rows = Vec::new();
    let mut wallets = Vec::new();
    for event in events
        .iter()
        .filter(|e| e.kind() == Some(AggregateKind::Wallet))
    {
        let patient_id = uuid_id(event)?;
        let change: WalletEvent = decode(event)?;
        rows.push(TransactionRow {
            patient_id,
            sequence: event.sequence,
            kind: change.kind(),
            amount_cents: change.signed_amount().cents(),
            reference: change.reference().to_owned(),
            recorded_at: event.recorded_at,
            position: event.position,
        });
        wallets.push(patient_id);
    }
    if rows.is_empty() {
        return Ok(());
    }
    TRANSACTIONS.insert_new(conn, &rows).await?;
    // The balance is recomputed from the transactions (written once each),
    // so it always equals their sum.
    let wallets: Vec<WalletRow> = sqlx::query_as::<_, (Uuid, i64, i64)>(
        "SELECT patient_id, sum(amount_cents)::bigint, count(*) FROM wallets_transactions
          WHERE patient_id IN (SELECT value::uuid FROM json_array_elements_text($1::json))
          GROUP BY patient_id",
    )
    .bind(Json(distinct(wallets)))
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(patient_id, balance_cents, transactions)| WalletRow {
        patient_id,
        balance_cents,
        transactions,
    })
    .collect();
    WALLETS.upsert(conn, &wallets).await
}
