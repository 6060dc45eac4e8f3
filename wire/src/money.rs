//! Money: wallet deposits and refunds, package purchases and transfers,
//! and the wallet and package views the read side answers.

use chrono::{DateTime, Utc};
use clinicbook_domain::package::{self as domain, PackageEvent};
use clinicbook_domain::wallet::TransactionKind;
use clinicbook_domain::{ClinicId, DomainError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Money paid into a patient's wallet (`POST /v1/wallets/{patient_id}/deposits`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deposit {
    /// Amount paid in, positive.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 9223372036854775807_i64)
    )]
    pub amount_cents: i64,
    /// The external payment's reference (card slip, bank transfer): a
    /// reference is credited at most once, so a repeated deposit is refused
    /// instead of counted twice. Leading and trailing spaces are ignored.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::ExternalReference))]
    pub reference: String,
}

/// Balance paid back out to the patient (`POST /v1/wallets/{patient_id}/refunds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletRefund {
    /// Amount paid out, positive and at most the balance.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 9223372036854775807_i64)
    )]
    pub amount_cents: i64,
    /// The payout's external reference, used at most once per wallet.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::ExternalReference))]
    pub reference: String,
    /// Why the money goes back, for the audit trail (not empty).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NotBlank))]
    pub reason: String,
}

/// A wallet's balance after a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Balance {
    /// The balance, never negative.
    pub balance_cents: i64,
}

/// What a wallet transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WalletTransactionKind {
    /// Money paid in.
    Deposit,
    /// A payment from the balance (a reservation, a package).
    Debit,
    /// A payment given back to the wallet (a cancelled reservation).
    Credit,
    /// Money paid back out to the patient.
    Refund,
}

impl From<TransactionKind> for WalletTransactionKind {
    fn from(kind: TransactionKind) -> Self {
        match kind {
            TransactionKind::Deposit => Self::Deposit,
            TransactionKind::Debit => Self::Debit,
            TransactionKind::Credit => Self::Credit,
            TransactionKind::Refund => Self::Refund,
        }
    }
}

/// One transaction of a wallet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletTransactionView {
    /// What it did.
    pub kind: WalletTransactionKind,
    /// How it changed the balance: negative for debits and refunds.
    pub amount_cents: i64,
    /// Its reference (`package:<id>`, `reservation:<id>` for payments).
    pub reference: String,
    /// Its place in the wallet's stream (1, 2, ...).
    pub sequence: i64,
    /// When it was stored.
    pub recorded_at: DateTime<Utc>,
}

/// `GET /v1/wallets/{patient_id}`: a wallet's balance and one page of its
/// history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletView {
    /// The owner; also the wallet's id.
    pub patient_id: Uuid,
    /// The balance (of every transaction, not only this page's), never
    /// negative.
    pub balance_cents: i64,
    /// How many transactions the wallet has in all.
    pub transactions_total: i64,
    /// The transactions after the page's `after` sequence, oldest first, at
    /// most `limit` of them.
    pub transactions: Vec<WalletTransactionView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// How a package is paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PackagePayment {
    /// The program's price is debited from the patient's wallet, in the
    /// same transaction as the purchase, under the reference `package:<id>`.
    ///
    /// A struct variant with no fields, not a unit variant: serde's
    /// `deny_unknown_fields` ignores extra fields next to the tag of a
    /// unit variant, so `{"method": "wallet", "reference": …}` would pass.
    Wallet {},
    /// Paid outside clinicbook (card terminal, bank transfer).
    External {
        /// The external payment's reference (not empty).
        #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NotBlank))]
        reference: String,
    },
}

impl PackagePayment {
    /// The domain's payment, checked before anything is read: a retry of a
    /// purchase with a blank reference is refused like the first attempt,
    /// not answered with the package bought before.
    ///
    /// # Errors
    /// `invalid_input` (`payment.reference`) for a blank external reference.
    pub fn to_domain(&self) -> Result<domain::PackagePayment, DomainError> {
        match self {
            Self::Wallet {} => Ok(domain::PackagePayment::Wallet),
            Self::External { reference } => {
                let reference = reference.trim().to_string();
                if reference.is_empty() {
                    return Err(DomainError::invalid(
                        "payment.reference",
                        "must not be empty",
                    ));
                }
                Ok(domain::PackagePayment::External { reference })
            }
        }
    }
}

impl From<domain::PackagePayment> for PackagePayment {
    fn from(payment: domain::PackagePayment) -> Self {
        match payment {
            domain::PackagePayment::Wallet => Self::Wallet {},
            domain::PackagePayment::External { reference } => Self::External { reference },
        }
    }
}

/// A patient buys a program as a package (`POST /v1/packages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurchasePackage {
    /// The new package's id; send one to make a retry safe (the same
    /// purchase retried answers the package bought first and charges
    /// nothing). Chosen by the server when absent.
    #[serde(default)]
    pub package_id: Option<Uuid>,
    /// The buyer.
    pub patient_id: Uuid,
    /// The program bought: its sessions, price, validity and clinics.
    pub program_id: Uuid,
    /// How it is paid.
    pub payment: PackagePayment,
}

/// The package a purchase created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageBought {
    /// Its id.
    pub package_id: Uuid,
    /// Sessions that can still be booked.
    pub sessions_left: u32,
    /// Last instant an appointment may start and use it: the purchase time
    /// plus the program's validity days.
    pub valid_until: DateTime<Utc>,
}

/// Makes a package valid at one other clinic instead of its current ones
/// (`POST /v1/packages/{package_id}/transfer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferPackage {
    /// The clinic the package moves to; it must offer the package's treatment.
    pub to_clinic_id: Uuid,
}

/// `GET /v1/packages/{package_id}`: a package with its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageView {
    /// Its id.
    pub package_id: Uuid,
    /// The owner.
    pub patient_id: Uuid,
    /// The program bought.
    pub program_id: Uuid,
    /// The treatment its sessions are for.
    pub treatment_id: Uuid,
    /// Sessions bought.
    pub sessions_total: u32,
    /// Sessions held by reservations.
    pub sessions_used: u32,
    /// Sessions that can still be booked.
    pub sessions_left: u32,
    /// Last instant an appointment may start and use it.
    pub valid_until: DateTime<Utc>,
    /// Clinics where it may be used.
    pub clinic_ids: Vec<Uuid>,
    /// Price paid.
    pub price_cents: i64,
    /// Everything that happened to it, oldest first.
    pub history: Vec<PackageHistoryEntry>,
}

/// One event of a package's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageHistoryEntry {
    /// Its place in the package's stream (1, 2, ...).
    pub sequence: i64,
    /// When it was stored.
    pub recorded_at: DateTime<Utc>,
    /// What happened, tagged by `event`.
    #[serde(flatten)]
    pub change: PackageChange,
}

/// What happened to a package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PackageChange {
    /// Bought.
    Purchased {
        /// Sessions bought.
        sessions: u32,
        /// Price paid.
        price_cents: i64,
        /// Expiry.
        valid_until: DateTime<Utc>,
        /// Clinics where valid.
        clinic_ids: Vec<Uuid>,
        /// How it was paid.
        payment: PackagePayment,
    },
    /// A reservation took one session.
    SessionConsumed {
        /// The reservation.
        reservation_id: Uuid,
    },
    /// A reservation gave its session back.
    SessionRestored {
        /// The reservation.
        reservation_id: Uuid,
    },
    /// Moved to another clinic.
    Transferred {
        /// Clinics before.
        from_clinic_ids: Vec<Uuid>,
        /// The clinic now.
        to_clinic_id: Uuid,
    },
}

fn uuids(clinic_ids: Vec<ClinicId>) -> Vec<Uuid> {
    clinic_ids.into_iter().map(|id| id.0).collect()
}

impl From<PackageEvent> for PackageChange {
    fn from(event: PackageEvent) -> Self {
        match event {
            PackageEvent::PackagePurchased {
                sessions,
                price,
                valid_until,
                clinic_ids,
                payment,
                ..
            } => Self::Purchased {
                sessions,
                price_cents: price.cents(),
                valid_until,
                clinic_ids: uuids(clinic_ids),
                payment: payment.into(),
            },
            PackageEvent::SessionConsumed { reservation_id } => Self::SessionConsumed {
                reservation_id: reservation_id.0,
            },
            PackageEvent::SessionRestored { reservation_id } => Self::SessionRestored {
                reservation_id: reservation_id.0,
            },
            PackageEvent::PackageTransferred {
                from_clinic_ids,
                to_clinic_id,
            } => Self::Transferred {
                from_clinic_ids: uuids(from_clinic_ids),
                to_clinic_id: to_clinic_id.0,
            },
        }
    }
}
