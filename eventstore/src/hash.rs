//! The per-stream hash chain: each event's hash is SHA-256 over the previous
//! event's hash (32 zero bytes for a stream's first event) and the event's
//! canonical bytes. Every field is length-prefixed, so no two different
//! events share canonical bytes.
//!
//! Each event records the rule its hash follows (`events.chain_version`).
//! Version 1 covers the event's identity, type, version, payload and
//! metadata; version 2, which every new event gets, also covers
//! `recorded_at` (set by the application, to the microsecond), so as-of
//! answers cannot be changed without verification noticing. Old events keep
//! verifying by their own rule.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The previous hash of a stream's first event.
pub const GENESIS: Hash = [0; 32];

/// The rule an event's hash follows, as stored in `events.chain_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChainVersion {
    /// Identity, type, version, payload and metadata (events stored before
    /// chain version 2 existed).
    V1,
    /// Version 1's fields and `recorded_at` in microseconds.
    V2,
}

impl ChainVersion {
    /// The rule new events follow.
    pub const CURRENT: ChainVersion = ChainVersion::V2;

    /// The number stored in `events.chain_version`.
    #[must_use]
    pub fn number(self) -> i16 {
        match self {
            ChainVersion::V1 => 1,
            ChainVersion::V2 => 2,
        }
    }

    /// The rule stored as `number`, if there is one.
    #[must_use]
    pub fn from_number(number: i16) -> Option<Self> {
        match number {
            1 => Some(ChainVersion::V1),
            2 => Some(ChainVersion::V2),
            _ => None,
        }
    }
}

/// An instant as the store records it: cut to the microsecond, the
/// precision of `timestamptz`, so the hashed instant is the stored one.
#[must_use]
pub fn recorded_instant(at: DateTime<Utc>) -> DateTime<Utc> {
    clinicbook_domain::micros(at)
}

/// The fields of a stored event that its hash covers. `payload` and
/// `metadata` are the exact JSON texts stored in their `json` columns.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    /// Aggregate type.
    pub aggregate_type: &'a str,
    /// Aggregate id.
    pub aggregate_id: &'a str,
    /// Sequence in the stream.
    pub sequence: u64,
    /// Event type.
    pub event_type: &'a str,
    /// Event version.
    pub event_version: &'a str,
    /// Payload JSON text.
    pub payload: &'a str,
    /// Metadata JSON text.
    pub metadata: &'a str,
}

/// The hash of an event that follows `previous` in its stream, by the
/// version 1 rule (which does not cover `recorded_at`): what events stored
/// before chain version 2 carry.
pub fn chain(previous: &Hash, event: &EventFields<'_>) -> Hash {
    fields_hasher(previous, event).finalize().into()
}

/// The hash of an event that follows `previous` in its stream, by the
/// version 2 rule: version 1's bytes, a version tag, and `recorded_at` in
/// microseconds since the Unix epoch.
pub fn chain_v2(previous: &Hash, event: &EventFields<'_>, recorded_at: DateTime<Utc>) -> Hash {
    let mut hasher = fields_hasher(previous, event);
    hasher.update(b"clinicbook-chain-v2");
    hasher.update(recorded_at.timestamp_micros().to_be_bytes());
    hasher.finalize().into()
}

/// The hash of an event by the rule `version`.
pub fn link(
    version: ChainVersion,
    previous: &Hash,
    event: &EventFields<'_>,
    recorded_at: DateTime<Utc>,
) -> Hash {
    match version {
        ChainVersion::V1 => chain(previous, event),
        ChainVersion::V2 => chain_v2(previous, event, recorded_at),
    }
}

fn fields_hasher(previous: &Hash, event: &EventFields<'_>) -> Sha256 {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    for field in [
        event.aggregate_type,
        event.aggregate_id,
        event.event_type,
        event.event_version,
        event.payload,
        event.metadata,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(event.sequence.to_be_bytes());
    hasher
}

/// Converts a stored `bytea` to a hash, if it has the right length.
pub fn from_bytes(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(payload: &str) -> EventFields<'_> {
        EventFields {
            aggregate_type: "Wallet",
            aggregate_id: "w",
            sequence: 1,
            event_type: "FundsDeposited",
            event_version: "1.0.0",
            payload,
            metadata: "{}",
        }
    }

    #[test]
    fn hash_depends_on_payload_and_predecessor() {
        let a = chain(&GENESIS, &fields("{\"amount\":1}"));
        let b = chain(&GENESIS, &fields("{\"amount\":2}"));
        assert_ne!(a, b);
        assert_ne!(chain(&a, &fields("{}")), chain(&b, &fields("{}")));
        assert_eq!(a, chain(&GENESIS, &fields("{\"amount\":1}")));
    }

    #[test]
    fn length_prefix_separates_fields() {
        let mut x = fields("ab");
        x.event_version = "1.0.0";
        let mut y = fields("b");
        y.event_version = "1.0.0a";
        assert_ne!(chain(&GENESIS, &x), chain(&GENESIS, &y));
    }

    #[test]
    fn version_2_covers_recorded_at_to_the_microsecond() {
        let at = |micros: i64| DateTime::from_timestamp_micros(micros).unwrap_or_default();
        let e = fields("{}");
        let t = 1_900_000_000_000_001;
        assert_eq!(chain_v2(&GENESIS, &e, at(t)), chain_v2(&GENESIS, &e, at(t)));
        assert_ne!(
            chain_v2(&GENESIS, &e, at(t)),
            chain_v2(&GENESIS, &e, at(t + 1))
        );
        assert_ne!(chain_v2(&GENESIS, &e, at(t)), chain(&GENESIS, &e));
        assert_eq!(
            link(ChainVersion::V1, &GENESIS, &e, at(t)),
            chain(&GENESIS, &e)
        );
        let nanos = at(t) + chrono::Duration::nanoseconds(999);
        assert_eq!(recorded_instant(nanos), at(t));
        for v in [ChainVersion::V1, ChainVersion::V2] {
            assert_eq!(ChainVersion::from_number(v.number()), Some(v));
        }
        assert_eq!(ChainVersion::from_number(3), None);
    }
}
