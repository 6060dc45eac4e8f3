//! Wallet use cases: deposit, refund, and the wallet view.

use chrono::{DateTime, Utc};
use clinicbook_domain::wallet::{TransactionKind, Wallet, WalletCommand};
use clinicbook_domain::{DomainError, Money, PatientId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{replay, trimmed};
use crate::{CommandError, Commands, Ctx, Done};

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
    /// How it changed the balance: negative for debits and refunds, so the
    /// amounts of all transactions sum to the balance.
    pub amount_cents: i64,
    /// Its reference (`package:<id>`, `reservation:<id>` for payments).
    pub reference: String,
    /// Its place in the wallet's stream (1, 2, ...).
    pub sequence: i64,
    /// When it was stored.
    pub recorded_at: DateTime<Utc>,
}

/// A wallet with its history (`GET /v1/wallets/{patient_id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletView {
    /// The owner; also the wallet's id.
    pub patient_id: Uuid,
    /// The balance, never negative.
    pub balance_cents: i64,
    /// Every transaction, oldest first.
    pub transactions: Vec<WalletTransactionView>,
}

/// One wallet command on one wallet; answers the balance after it.
struct ChangeWallet {
    patient_id: PatientId,
    command: WalletCommand,
}

impl UseCase for ChangeWallet {
    type Output = Balance;

    async fn run(&self, uow: &mut UnitOfWork) -> Result<Balance, UowError> {
        let id = self.patient_id.to_string();
        uow.handle::<Wallet>(&id, self.command.clone()).await?;
        let wallet = uow.load::<Wallet>(&id).await?;
        Ok(Balance {
            balance_cents: wallet.balance().cents(),
        })
    }
}

/// Reference prefixes the engine writes itself when it debits or credits a
/// wallet (`package:<id>`, `reservation:<id>`, `refund:reservation:<id>`).
/// A client's deposit or refund may not use them: a wallet uses each
/// reference once, so such a deposit would block the later payment.
pub const INTERNAL_REFERENCE_PREFIXES: [&str; 3] = ["package:", "reservation:", "refund:"];

/// A client's payment reference, trimmed, outside the engine's own namespaces.
fn external_reference(raw: &str) -> Result<String, DomainError> {
    let reference = trimmed(raw);
    let lowered = reference.to_ascii_lowercase();
    if INTERNAL_REFERENCE_PREFIXES
        .iter()
        .any(|p| lowered.starts_with(p))
    {
        return Err(DomainError::invalid(
            "reference",
            format!(
                "references starting with {INTERNAL_REFERENCE_PREFIXES:?} are the engine's own"
            ),
        ));
    }
    Ok(reference)
}

impl Commands {
    /// Pays `amount_cents` into the patient's wallet.
    ///
    /// # Errors
    /// `invalid_input` for an amount that is not positive (or would push the
    /// balance past the largest amount), an empty reference or one in the
    /// engine's namespaces ([`INTERNAL_REFERENCE_PREFIXES`]);
    /// `duplicate_reference` when the wallet used this reference before
    /// (nothing is credited twice); otherwise see [`CommandError`].
    #[tracing::instrument(skip_all, fields(patient_id = %patient_id))]
    pub async fn deposit(
        &self,
        ctx: &Ctx,
        patient_id: Uuid,
        deposit: Deposit,
    ) -> Result<Done<Balance>, CommandError> {
        let command = WalletCommand::Deposit {
            amount: Money(deposit.amount_cents),
            reference: external_reference(&deposit.reference)?,
        };
        self.change_wallet(ctx, patient_id, command).await
    }

    /// Pays `amount_cents` of the balance back out to the patient.
    ///
    /// # Errors
    /// `invalid_input` for an amount that is not positive, an empty
    /// reference or an empty reason; `insufficient_funds` above the balance;
    /// `duplicate_reference` for a reference used before; otherwise see
    /// [`CommandError`].
    #[tracing::instrument(skip_all, fields(patient_id = %patient_id))]
    pub async fn refund(
        &self,
        ctx: &Ctx,
        patient_id: Uuid,
        refund: WalletRefund,
    ) -> Result<Done<Balance>, CommandError> {
        let reason = trimmed(&refund.reason);
        if reason.is_empty() {
            return Err(DomainError::invalid("reason", "must not be empty").into());
        }
        let command = WalletCommand::Refund {
            amount: Money(refund.amount_cents),
            reference: external_reference(&refund.reference)?,
            reason,
        };
        self.change_wallet(ctx, patient_id, command).await
    }

    async fn change_wallet(
        &self,
        ctx: &Ctx,
        patient_id: Uuid,
        command: WalletCommand,
    ) -> Result<Done<Balance>, CommandError> {
        let use_case = ChangeWallet {
            patient_id: PatientId(patient_id),
            command,
        };
        self.run(ctx, &use_case).await
    }

    /// The patient's wallet: balance and every transaction with its signed
    /// amount, sequence and storage time. A wallet never used answers a
    /// zero balance and no transactions: every patient has a wallet.
    ///
    /// # Errors
    /// Storage failed or the stream is corrupt ([`CommandError::Store`]).
    pub async fn wallet(&self, patient_id: Uuid) -> Result<WalletView, CommandError> {
        let id = PatientId(patient_id).to_string();
        let wallet = replay::<Wallet>(self.store(), &id, None).await?;
        let transactions = wallet
            .events
            .iter()
            .map(|(record, event)| WalletTransactionView {
                kind: event.kind().into(),
                amount_cents: event.signed_amount().cents(),
                reference: event.reference().to_string(),
                sequence: record.sequence,
                recorded_at: record.recorded_at,
            })
            .collect();
        Ok(WalletView {
            patient_id,
            balance_cents: wallet.state.balance().cents(),
            transactions,
        })
    }
}
