//! The one error type of the domain crate.

use thiserror::Error;

use crate::Money;

/// Why a command was refused. Every aggregate uses this one type, so a unit
/// of work over several aggregates has one error to report.
///
/// [`DomainError::code`] gives the stable machine-readable code of the HTTP
/// contract (`slot_unavailable`, `insufficient_funds`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// The aggregate or an entity inside it does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `"reservation 3f2…"` or `"treatment"`.
        what: String,
    },
    /// A create command was sent to an aggregate that already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists already.
        what: String,
    },
    /// A field of the command is malformed or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field, as named in the API.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Fields that are each well-formed but disagree with each other (an
    /// end before its start) or with the stored state (a wallet balance that
    /// would overflow). Unlike [`DomainError::InvalidInput`], no schema of a
    /// single field can refuse them, so the API answers 422, not 400.
    #[error("inconsistent {field}: {reason}")]
    InconsistentInput {
        /// The field named in the API that disagrees.
        field: String,
        /// With what, and why.
        reason: String,
    },
    /// The slot overlaps another booking, its buffer, or a block.
    #[error("the slot is not available")]
    SlotUnavailable,
    /// The command is not allowed in the aggregate's current status.
    #[error("cannot {action}: it is {from}")]
    InvalidTransition {
        /// The current status.
        from: String,
        /// The refused action.
        action: String,
    },
    /// A wallet debit larger than the balance.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        /// The balance before the debit.
        balance: Money,
        /// The amount asked for.
        requested: Money,
    },
    /// A wallet reference (deposit, debit or refund) was used before.
    #[error("wallet reference {reference:?} was already used")]
    DuplicateReference {
        /// The reused reference.
        reference: String,
    },
    /// The package has no session left.
    #[error("the package has no sessions left")]
    NoSessionsLeft,
    /// The package expired before the appointment.
    #[error("the package expired")]
    PackageExpired,
    /// The package is not valid at this clinic.
    #[error("the package is not valid at this clinic")]
    PackageNotValidHere,
    /// The package's program is for another treatment.
    #[error("the package is not for this treatment")]
    PackageNotForTreatment,
    /// The hold's time ran out (`expires_at` passed, recorded or not).
    #[error("the hold expired")]
    HoldExpired,
    /// The hold was released.
    #[error("the hold was released")]
    HoldReleased,
    /// The promo code is used outside its validity window.
    #[error("the promo code is not valid at this time")]
    PromoExpired,
    /// The promo code was deactivated.
    #[error("the promo code was deactivated")]
    PromoInactive,
    /// The promo code reached its maximum number of redemptions.
    #[error("the promo code has no redemptions left")]
    PromoExhausted,
    /// The patient reached the per-patient limit of the promo code.
    #[error("the patient has used this promo code as often as allowed")]
    PromoLimitPerPatient,
    /// The promo code does not apply to this treatment.
    #[error("the promo code does not apply to this treatment")]
    PromoNotApplicable,
    /// The booking is not inside the clinic's opening hours of one local day.
    #[error("outside opening hours")]
    OutsideOpeningHours,
    /// The booking starts before now.
    #[error("the start is in the past")]
    InThePast,
    /// A name that must be unique inside the clinic is taken.
    #[error("the name {name:?} is already used")]
    DuplicateName {
        /// The duplicate name.
        name: String,
    },
    /// The resource is of another kind than the treatment needs.
    #[error("the treatment needs a {needed}, this resource is a {actual}")]
    ResourceKindMismatch {
        /// The kind the treatment needs.
        needed: String,
        /// The kind of the resource.
        actual: String,
    },
    /// The patient's personal data was erased: the profile is gone for good.
    #[error("the patient's data was erased")]
    PatientErased,
}

impl DomainError {
    /// The stable, machine-readable code of this error (API.md).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::NotFound { .. } => "not_found",
            DomainError::AlreadyExists { .. } => "already_exists",
            DomainError::InvalidInput { .. } => "invalid_input",
            DomainError::InconsistentInput { .. } => "inconsistent_input",
            DomainError::SlotUnavailable => "slot_unavailable",
            DomainError::InvalidTransition { .. } => "invalid_transition",
            DomainError::InsufficientFunds { .. } => "insufficient_funds",
            DomainError::DuplicateReference { .. } => "duplicate_reference",
            DomainError::NoSessionsLeft => "no_sessions_left",
            DomainError::PackageExpired => "package_expired",
            DomainError::PackageNotValidHere => "package_not_valid_here",
            DomainError::PackageNotForTreatment => "package_not_for_treatment",
            DomainError::HoldExpired => "hold_expired",
            DomainError::HoldReleased => "hold_released",
            DomainError::PromoExpired => "promo_expired",
            DomainError::PromoInactive => "promo_inactive",
            DomainError::PromoExhausted => "promo_exhausted",
            DomainError::PromoLimitPerPatient => "promo_limit_per_patient",
            DomainError::PromoNotApplicable => "promo_not_applicable",
            DomainError::OutsideOpeningHours => "outside_opening_hours",
            DomainError::InThePast => "in_the_past",
            DomainError::DuplicateName { .. } => "duplicate_name",
            DomainError::ResourceKindMismatch { .. } => "resource_kind_mismatch",
            DomainError::PatientErased => "patient_erased",
        }
    }

    /// Shorthand for [`DomainError::InvalidInput`].
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        DomainError::InvalidInput {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`DomainError::InconsistentInput`].
    pub fn inconsistent(field: &str, reason: impl Into<String>) -> Self {
        DomainError::InconsistentInput {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`DomainError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        DomainError::NotFound { what: what.into() }
    }
}
