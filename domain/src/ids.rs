//! Identifier newtypes: a value of one of these types is always well formed.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random identifier.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self(Uuid::nil())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| DomainError::InvalidInput {
                    field: stringify!($name).to_string(),
                    reason: format!("{s:?} is not a UUID"),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A clinic (one branch of a chain).
    ClinicId
);
uuid_id!(
    /// A bookable resource of a clinic: a room, a device or a practitioner.
    ResourceId
);
uuid_id!(
    /// A treatment offered by a clinic.
    TreatmentId
);
uuid_id!(
    /// A reservation, including waitlist entries.
    ReservationId
);
uuid_id!(
    /// A patient; also the identity of the patient's wallet.
    PatientId
);
uuid_id!(
    /// A purchased package of sessions.
    PackageId
);
uuid_id!(
    /// A catalog program (a package offer).
    ProgramId
);
uuid_id!(
    /// A block on a resource's calendar.
    BlockId
);
uuid_id!(
    /// A clinic closure.
    ClosureId
);
uuid_id!(
    /// A hold: a slot taken for a short time while the patient pays or
    /// decides (also a waitlist offer).
    HoldId
);

/// Identity of a `Calendar`: one resource on one clinic-local day.
///
/// Stored as `"{resource_id}/{YYYY-MM-DD}"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CalendarId {
    /// The resource whose day this is.
    pub resource_id: ResourceId,
    /// The clinic-local date.
    pub date: NaiveDate,
}

impl fmt::Display for CalendarId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.resource_id, self.date.format("%Y-%m-%d"))
    }
}

impl FromStr for CalendarId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || DomainError::InvalidInput {
            field: "calendar_id".to_string(),
            reason: format!("{s:?} is not \"<resource uuid>/<YYYY-MM-DD>\""),
        };
        let (resource, date) = s.split_once('/').ok_or_else(invalid)?;
        Ok(Self {
            resource_id: resource.parse().map_err(|_| invalid())?,
            date: NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| invalid())?,
        })
    }
}

/// A promo code in its normalised form: trimmed, upper case, 3 to 32
/// characters of `A-Z`, `0-9`, `-` and `_`. This is the `PromoCode` aggregate id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromoCodeKey(String);

impl PromoCodeKey {
    /// Normalises `raw` (trim, upper-case) and checks its alphabet and length.
    ///
    /// # Errors
    /// `DomainError::InvalidInput` naming the field `code`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let code = raw.trim().to_ascii_uppercase();
        let ok_chars = code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !(3..=32).contains(&code.len()) || !ok_chars {
            return Err(DomainError::InvalidInput {
                field: "code".to_string(),
                reason: "a promo code has 3 to 32 characters of A-Z, 0-9, '-' and '_'".to_string(),
            });
        }
        Ok(Self(code))
    }

    /// The normalised code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PromoCodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PromoCodeKey {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PromoCodeKey> for String {
    fn from(value: PromoCodeKey) -> Self {
        value.0
    }
}
