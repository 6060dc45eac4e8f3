//! The `wallets` projection: every wallet's transactions, and its
//! balance — what `GET /v1/wallets/{patient_id}` answers.
//!
//! The balance is recomputed from the transactions of each wallet a batch
//! touched, in the same statement batch, so it always equals their sum
//! (the aggregate's invariant) and a transaction written twice cannot
//! count twice.

use clinicbook_domain::wallet::{TransactionKind, WalletEvent};
use clinicbook_eventstore::FeedEvent;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql::{decode, uuid_id, Table};
use crate::{Projection, ProjectionError};

/// The projection.
pub const PROJECTION: Projection = Projection {
    name: "wallets",
    ddl: DDL,
    apply,
};

const DDL: &str = r"
-- One row per wallet (id = the patient): its balance, the sum of its
-- transactions' signed amounts.
CREATE TABLE IF NOT EXISTS wallets_wallets (
    patient_id    uuid PRIMARY KEY,
    balance_cents bigint NOT NULL,
    transactions  bigint NOT NULL
);

-- Every transaction of every wallet: amounts are signed (debits and
-- refunds negative), so they sum to the balance.
CREATE TABLE IF NOT EXISTS wallets_transactions (
    patient_id   uuid   NOT NULL,
    sequence     bigint NOT NULL,
    kind         text   NOT NULL,
    amount_cents bigint NOT NULL,
    reference    text   NOT NULL,
    recorded_at  timestamptz NOT NULL,
    position     bigint NOT NULL,
    PRIMARY KEY (patient_id, sequence)
);
";

pub(crate) static TRANSACTIONS: Table = Table {
    name: "wallets_transactions",
    key: &["patient_id", "sequence"],
    columns: &[
        ("patient_id", "uuid"),
        ("sequence", "bigint"),
        ("kind", "text"),
        ("amount_cents", "bigint"),
        ("reference", "text"),
        ("recorded_at", "timestamptz"),
        ("position", "bigint"),
    ],
};

/// A row of `wallets_transactions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TransactionRow {
    pub patient_id: Uuid,
    pub sequence: i64,
    pub kind: String,
    pub amount_cents: i64,
    pub reference: String,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    pub position: i64,
}

/// The stored (and API) name of a transaction kind.
pub(crate) fn kind_name(kind: TransactionKind) -> &'static str {
    match kind {
        TransactionKind::Deposit => "deposit",
        TransactionKind::Debit => "debit",
        TransactionKind::Credit => "credit",
        TransactionKind::Refund => "refund",
    }
}

fn apply<'a>(
    conn: &'a mut PgConnection,
    events: &'a [FeedEvent],
) -> BoxFuture<'a, Result<(), ProjectionError>> {
    Box::pin(apply_batch(conn, events))
}

async fn apply_batch(conn: &mut PgConnection, events: &[FeedEvent]) -> Result<(), ProjectionError> {
    let mut rows = Vec::new();
    let mut wallets = Vec::new();
    for event in events.iter().filter(|e| e.aggregate_type == "Wallet") {
        let patient_id = uuid_id(event)?;
        let change: WalletEvent = decode(event)?;
        rows.push(TransactionRow {
            patient_id,
            sequence: event.sequence,
            kind: kind_name(change.kind()).to_owned(),
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
    wallets.sort_unstable();
    wallets.dedup();
    sqlx::query(
        "INSERT INTO wallets_wallets (patient_id, balance_cents, transactions)
         SELECT patient_id, sum(amount_cents), count(*) FROM wallets_transactions
          WHERE patient_id IN (SELECT value::uuid FROM json_array_elements_text($1::json))
          GROUP BY patient_id
         ON CONFLICT (patient_id) DO UPDATE
            SET balance_cents = EXCLUDED.balance_cents, transactions = EXCLUDED.transactions",
    )
    .bind(Json(&wallets))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
