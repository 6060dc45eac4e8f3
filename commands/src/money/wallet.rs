//! Wallet use cases: deposit, refund, and the wallet view.

use clinicbook_domain::wallet::{Wallet, WalletCommand};
use clinicbook_domain::{DomainError, Money, PatientId};
use clinicbook_eventstore::{UnitOfWork, UowError, UseCase};
use clinicbook_wire::money::{Balance, Deposit, WalletRefund, WalletTransactionView, WalletView};
use uuid::Uuid;

use super::{replay, trimmed};
use crate::{CommandError, Commands, Ctx, Done};

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

    /// The patient's wallet folded from its aggregate: balance and every
    /// transaction (one page holding them all). A wallet never used
    /// answers a zero balance and no transactions: every patient has a
    /// wallet. The API reads the read model instead; this is the fold the
    /// read model is checked against.
    ///
    /// # Errors
    /// Storage failed or the stream is corrupt ([`CommandError::Store`]).
    pub async fn wallet(&self, patient_id: Uuid) -> Result<WalletView, CommandError> {
        let id = PatientId(patient_id).to_string();
        let wallet = replay::<Wallet>(self.store(), &id, None).await?;
        let transactions: Vec<WalletTransactionView> = wallet
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
            transactions_total: i64::try_from(transactions.len()).unwrap_or(i64::MAX),
            transactions,
            next_after: None,
        })
    }
}
