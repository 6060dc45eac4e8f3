//! The `Wallet` aggregate: a patient's prepaid balance (id = the patient's
//! UUID). The balance never goes below zero and each reference is used once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::Money;

/// Kind of a wallet transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    /// Money paid in.
    Deposit,
    /// Payment for a reservation or package.
    Debit,
    /// A booking's payment given back to the wallet.
    Credit,
    /// Money paid back out to the patient.
    Refund,
}

/// One transaction; `amount` is signed (debits and refunds negative).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletTransaction {
    /// Kind.
    pub kind: TransactionKind,
    /// Signed amount.
    pub amount: Money,
    /// Unique reference.
    pub reference: String,
}

/// The `Wallet` aggregate state. Invariant: `balance` equals the sum of the
/// transactions' signed amounts and is never negative.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Wallet {
    /// Current balance.
    pub balance: Money,
    /// Every transaction, oldest first.
    pub transactions: Vec<WalletTransaction>,
    /// References used so far.
    pub references: BTreeSet<String>,
}

/// Commands of the `Wallet` aggregate. Amounts must be positive; references
/// non-empty and unused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WalletCommand {
    /// Pay money in (external payment `reference`).
    Deposit {
        /// Positive amount.
        amount: Money,
        /// External payment reference, credited at most once.
        reference: String,
    },
    /// Pay for something from the balance.
    Debit {
        /// Positive amount, at most the balance.
        amount: Money,
        /// What it pays, e.g. `reservation:<uuid>`.
        reference: String,
    },
    /// Give a payment back to the wallet.
    Credit {
        /// Positive amount.
        amount: Money,
        /// What it gives back, e.g. `refund:reservation:<uuid>`.
        reference: String,
    },
    /// Pay balance back out to the patient.
    Refund {
        /// Positive amount, at most the balance.
        amount: Money,
        /// External reference.
        reference: String,
        /// Why.
        reason: String,
    },
}

/// Events of the `Wallet` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WalletEvent {
    /// Money paid in.
    FundsDeposited {
        /// Amount.
        amount: Money,
        /// Reference.
        reference: String,
    },
    /// Paid from the balance.
    FundsDebited {
        /// Amount.
        amount: Money,
        /// Reference.
        reference: String,
    },
    /// A payment given back.
    FundsCredited {
        /// Amount.
        amount: Money,
        /// Reference.
        reference: String,
    },
    /// Paid back out to the patient.
    FundsRefunded {
        /// Amount.
        amount: Money,
        /// Reference.
        reference: String,
        /// Why.
        reason: String,
    },
}
