//! The per-stream hash chain: each event's hash is SHA-256 over the previous
//! event's hash (32 zero bytes for a stream's first event) and the event's
//! canonical bytes. Every field is length-prefixed, so no two different
//! events share canonical bytes.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The previous hash of a stream's first event.
pub const GENESIS: Hash = [0; 32];

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

/// The hash of an event that follows `previous` in its stream.
pub fn chain(previous: &Hash, event: &EventFields<'_>) -> Hash {
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
    hasher.finalize().into()
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
}
