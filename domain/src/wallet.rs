//! The `Wallet` aggregate: a patient's prepaid balance (id = the patient's
//! UUID). The balance never goes below zero and each reference is used once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{DomainError, Money};

named! {
    /// Kind of a wallet transaction.
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
}

impl TransactionKind {
    /// The API and read-model name (`deposit`, `debit`, ...): serde's and
    /// strum's `snake_case` of the variant.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
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

impl TransactionKind {
    /// True for the kinds that take money out of the wallet (debit, refund).
    pub fn is_outgoing(self) -> bool {
        matches!(self, TransactionKind::Debit | TransactionKind::Refund)
    }
}

impl WalletEvent {
    /// The kind of transaction the event records.
    pub fn kind(&self) -> TransactionKind {
        match self {
            WalletEvent::FundsDeposited { .. } => TransactionKind::Deposit,
            WalletEvent::FundsDebited { .. } => TransactionKind::Debit,
            WalletEvent::FundsCredited { .. } => TransactionKind::Credit,
            WalletEvent::FundsRefunded { .. } => TransactionKind::Refund,
        }
    }

    /// The (positive) amount moved.
    pub fn amount(&self) -> Money {
        match self {
            WalletEvent::FundsDeposited { amount, .. }
            | WalletEvent::FundsDebited { amount, .. }
            | WalletEvent::FundsCredited { amount, .. }
            | WalletEvent::FundsRefunded { amount, .. } => *amount,
        }
    }

    /// The amount as it changes the balance: negative for debits and refunds.
    pub fn signed_amount(&self) -> Money {
        if self.kind().is_outgoing() {
            -self.amount()
        } else {
            self.amount()
        }
    }

    /// The transaction's reference.
    pub fn reference(&self) -> &str {
        match self {
            WalletEvent::FundsDeposited { reference, .. }
            | WalletEvent::FundsDebited { reference, .. }
            | WalletEvent::FundsCredited { reference, .. }
            | WalletEvent::FundsRefunded { reference, .. } => reference,
        }
    }
}

impl From<WalletCommand> for WalletEvent {
    /// The event a command records once it passed the checks.
    fn from(command: WalletCommand) -> Self {
        match command {
            WalletCommand::Deposit { amount, reference } => {
                WalletEvent::FundsDeposited { amount, reference }
            }
            WalletCommand::Debit { amount, reference } => {
                WalletEvent::FundsDebited { amount, reference }
            }
            WalletCommand::Credit { amount, reference } => {
                WalletEvent::FundsCredited { amount, reference }
            }
            WalletCommand::Refund {
                amount,
                reference,
                reason,
            } => WalletEvent::FundsRefunded {
                amount,
                reference,
                reason,
            },
        }
    }
}

impl Wallet {
    /// The current balance (never negative).
    pub fn balance(&self) -> Money {
        self.balance
    }

    /// True when `reference` was used by any earlier transaction.
    pub fn has_reference(&self, reference: &str) -> bool {
        self.references.contains(reference)
    }

    /// Checks what every transaction needs: a positive amount, a non-empty
    /// and unused reference, and a balance that stays between zero and the
    /// largest representable amount.
    fn check(&self, transaction: &WalletEvent) -> Result<(), DomainError> {
        let amount = transaction.amount();
        let reference = transaction.reference();
        if amount.cents() <= 0 {
            return Err(DomainError::invalid(
                "amount_cents",
                format!("must be positive, got {}", amount.cents()),
            ));
        }
        if reference.trim().is_empty() {
            return Err(DomainError::invalid("reference", "must not be empty"));
        }
        if self.has_reference(reference) {
            return Err(DomainError::DuplicateReference {
                reference: reference.to_string(),
            });
        }
        if transaction.kind().is_outgoing() {
            if amount > self.balance {
                return Err(DomainError::InsufficientFunds {
                    balance: self.balance,
                    requested: amount,
                });
            }
        } else if self.balance.cents().checked_add(amount.cents()).is_none() {
            return Err(DomainError::inconsistent(
                "amount_cents",
                "the balance would exceed the largest representable amount",
            ));
        }
        Ok(())
    }
}

impl Wallet {
    /// The event `command` produces.
    ///
    /// # Errors
    /// `InvalidInput` (`amount_cents` not positive or overflowing the balance,
    /// `reference` empty), `DuplicateReference` for a reference used by any
    /// earlier transaction, `InsufficientFunds` for a debit or refund above
    /// the balance.
    fn decide(&self, command: WalletCommand) -> Result<WalletEvent, DomainError> {
        let event = WalletEvent::from(command);
        self.check(&event)?;
        Ok(event)
    }

    /// The state after `event` (the fold of every reader).
    fn evolve(&mut self, event: WalletEvent) {
        let kind = event.kind();
        let amount = event.signed_amount();
        let reference = event.reference().to_string();
        self.balance += amount;
        self.references.insert(reference.clone());
        self.transactions.push(WalletTransaction {
            kind,
            amount,
            reference,
        });
    }
}

crate::aggregate::aggregate!(Wallet: WalletCommand => WalletEvent);

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use proptest::prelude::*;

    use cqrs_es::{Aggregate, DomainEvent};

    use super::*;
    use crate::testing::fold;

    fn deposit(cents: i64, reference: &str) -> WalletCommand {
        WalletCommand::Deposit {
            amount: Money(cents),
            reference: reference.to_string(),
        }
    }

    fn debit(cents: i64, reference: &str) -> WalletCommand {
        WalletCommand::Debit {
            amount: Money(cents),
            reference: reference.to_string(),
        }
    }

    fn credit(cents: i64, reference: &str) -> WalletCommand {
        WalletCommand::Credit {
            amount: Money(cents),
            reference: reference.to_string(),
        }
    }

    fn refund(cents: i64, reference: &str) -> WalletCommand {
        WalletCommand::Refund {
            amount: Money(cents),
            reference: reference.to_string(),
            reason: "closing the account".to_string(),
        }
    }

    fn deposited(cents: i64, reference: &str) -> WalletEvent {
        WalletEvent::from(deposit(cents, reference))
    }

    /// One command of each kind, for `cents` under `reference`.
    fn every_kind(cents: i64, reference: &str) -> [WalletCommand; 4] {
        [
            deposit(cents, reference),
            debit(cents, reference),
            credit(cents, reference),
            refund(cents, reference),
        ]
    }

    fn replay(events: &[WalletEvent]) -> Wallet {
        fold(events)
    }

    fn wallet_test() -> TestFramework<Wallet> {
        TestFramework::with(())
    }

    #[test]
    fn deposit_is_recorded() {
        wallet_test()
            .given_no_previous_events()
            .when(deposit(5_000, "pay-1"))
            .then_expect_events(vec![WalletEvent::FundsDeposited {
                amount: Money(5_000),
                reference: "pay-1".to_string(),
            }]);
    }

    #[test]
    fn debit_up_to_the_balance_is_recorded() {
        wallet_test()
            .given(vec![deposited(5_000, "pay-1")])
            .when(debit(5_000, "reservation:1"))
            .then_expect_events(vec![WalletEvent::FundsDebited {
                amount: Money(5_000),
                reference: "reservation:1".to_string(),
            }]);
    }

    #[test]
    fn credit_is_recorded_even_on_an_empty_wallet() {
        wallet_test()
            .given_no_previous_events()
            .when(credit(1_200, "refund:reservation:1"))
            .then_expect_events(vec![WalletEvent::FundsCredited {
                amount: Money(1_200),
                reference: "refund:reservation:1".to_string(),
            }]);
    }

    #[test]
    fn refund_up_to_the_balance_is_recorded() {
        wallet_test()
            .given(vec![deposited(5_000, "pay-1")])
            .when(refund(3_000, "bank-9"))
            .then_expect_events(vec![WalletEvent::FundsRefunded {
                amount: Money(3_000),
                reference: "bank-9".to_string(),
                reason: "closing the account".to_string(),
            }]);
    }

    #[test]
    fn amounts_must_be_positive() {
        for cents in [0, -1, i64::MIN] {
            for command in every_kind(cents, "ref") {
                let error = wallet_test()
                    .given(vec![deposited(5_000, "pay-1")])
                    .when(command.clone())
                    .inspect_result();
                assert!(
                    matches!(&error, Err(DomainError::InvalidInput { field, .. }) if field == "amount_cents"),
                    "{command:?}: {error:?}"
                );
            }
        }
    }

    #[test]
    fn references_must_not_be_empty() {
        for reference in ["", "   "] {
            for command in every_kind(100, reference) {
                let error = wallet_test()
                    .given(vec![deposited(5_000, "pay-1")])
                    .when(command.clone())
                    .inspect_result();
                assert!(
                    matches!(&error, Err(DomainError::InvalidInput { field, .. }) if field == "reference"),
                    "{command:?}: {error:?}"
                );
            }
        }
    }

    #[test]
    fn a_reference_is_never_reused_across_kinds() {
        let history = vec![
            deposited(5_000, "dep"),
            WalletEvent::FundsDebited {
                amount: Money(100),
                reference: "deb".to_string(),
            },
            WalletEvent::FundsCredited {
                amount: Money(100),
                reference: "cred".to_string(),
            },
            WalletEvent::FundsRefunded {
                amount: Money(100),
                reference: "ref".to_string(),
                reason: "asked".to_string(),
            },
        ];
        for used in ["dep", "deb", "cred", "ref"] {
            for command in every_kind(10, used) {
                wallet_test()
                    .given(history.clone())
                    .when(command)
                    .then_expect_error(DomainError::DuplicateReference {
                        reference: used.to_string(),
                    });
            }
        }
    }

    #[test]
    fn debit_above_the_balance_is_refused() {
        wallet_test()
            .given(vec![deposited(5_000, "pay-1")])
            .when(debit(5_001, "reservation:1"))
            .then_expect_error(DomainError::InsufficientFunds {
                balance: Money(5_000),
                requested: Money(5_001),
            });
    }

    #[test]
    fn refund_above_the_balance_is_refused() {
        wallet_test()
            .given_no_previous_events()
            .when(refund(1, "bank-1"))
            .then_expect_error(DomainError::InsufficientFunds {
                balance: Money::ZERO,
                requested: Money(1),
            });
    }

    #[test]
    fn money_in_may_not_overflow_the_balance() {
        for command in [deposit(1, "more"), credit(1, "more")] {
            let error = wallet_test()
                .given(vec![deposited(i64::MAX, "all")])
                .when(command)
                .inspect_result();
            assert!(
                matches!(&error, Err(DomainError::InconsistentInput { field, .. }) if field == "amount_cents"),
                "{error:?}"
            );
        }
    }

    #[test]
    fn state_keeps_signed_transactions_and_references() {
        let wallet = replay(&[
            deposited(5_000, "dep"),
            WalletEvent::from(debit(1_500, "deb")),
            WalletEvent::from(credit(500, "cred")),
            WalletEvent::from(refund(1_000, "ref")),
        ]);
        assert_eq!(wallet.balance(), Money(3_000));
        let signed: Vec<_> = wallet
            .transactions
            .iter()
            .map(|t| (t.kind, t.amount.cents()))
            .collect();
        assert_eq!(
            signed,
            vec![
                (TransactionKind::Deposit, 5_000),
                (TransactionKind::Debit, -1_500),
                (TransactionKind::Credit, 500),
                (TransactionKind::Refund, -1_000),
            ]
        );
        assert!(["dep", "deb", "cred", "ref"]
            .iter()
            .all(|r| wallet.has_reference(r)));
    }

    #[test]
    fn event_types_are_the_variant_names() {
        let events = [
            deposited(1, "a"),
            WalletEvent::from(debit(1, "b")),
            WalletEvent::from(credit(1, "c")),
            WalletEvent::from(refund(1, "d")),
        ];
        let types: Vec<_> = events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(
            types,
            [
                "FundsDeposited",
                "FundsDebited",
                "FundsCredited",
                "FundsRefunded"
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.event_version() == crate::EVENT_VERSION));
        assert_eq!(Wallet::TYPE, "Wallet");
    }

    fn any_command() -> impl Strategy<Value = WalletCommand> {
        let amount = prop_oneof![-5..=3_000i64, Just(i64::MAX), Just(i64::MIN), Just(0)];
        let reference = prop_oneof![
            (0..12u8).prop_map(|n| format!("ref-{n}")),
            Just(String::new())
        ];
        (0..4u8, amount, reference).prop_map(|(kind, cents, reference)| match kind {
            0 => deposit(cents, &reference),
            1 => debit(cents, &reference),
            2 => credit(cents, &reference),
            _ => refund(cents, &reference),
        })
    }

    proptest! {
        /// Whatever is asked, the balance stays non-negative, equals the sum
        /// of the transactions, and every reference is used at most once.
        #[test]
        fn balance_is_never_negative_and_matches_the_transactions(
            commands in prop::collection::vec(any_command(), 1..40)
        ) {
            let mut history: Vec<WalletEvent> = Vec::new();
            for command in commands {
                let before = replay(&history);
                let event = WalletEvent::from(command.clone());
                let must_refuse = event.amount().cents() <= 0
                    || event.reference().trim().is_empty()
                    || before.has_reference(event.reference())
                    || if event.kind().is_outgoing() {
                        event.amount() > before.balance()
                    } else {
                        before.balance().cents().checked_add(event.amount().cents()).is_none()
                    };
                let result = wallet_test().given(history.clone()).when(command).inspect_result();
                match result {
                    Ok(events) => {
                        prop_assert!(!must_refuse, "{:?} accepted", event);
                        prop_assert_eq!(&events, &vec![event]);
                        history.extend(events);
                    }
                    Err(error) => prop_assert!(must_refuse, "{:?} refused: {:?}", event, error),
                }
                let wallet = replay(&history);
                let sum: i128 = wallet.transactions.iter().map(|t| i128::from(t.amount.cents())).sum();
                prop_assert!(wallet.balance() >= Money::ZERO);
                prop_assert_eq!(i128::from(wallet.balance().cents()), sum);
                prop_assert_eq!(wallet.references.len(), wallet.transactions.len());
            }
        }
    }
}
