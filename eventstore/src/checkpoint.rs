//! Signed checkpoints of the whole store: a per-stream hash chain shows an
//! event changed or removed inside a stream, but not a stream's tail (or a
//! whole stream) deleted. A checkpoint lists every stream's head (type, id,
//! sequence, hash) when it was taken, with a SHA-256 digest of that list
//! signed with the deployment's Ed25519 audit key; an auditor keeps it
//! outside the database and later verifies the store against it, which
//! names every stream that is missing, shorter than the checkpoint says, or
//! whose event at the checkpoint's sequence is no longer the one it saw.
//!
//! Signing and verification are ed25519-dalek's; this module only decides
//! what is signed.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::audit::{self, StreamProblem, VerifyReport};
use crate::error::{CheckpointError, StoreError};
use crate::hash::{self, Hash};

/// The deployment's Ed25519 signing key for checkpoints. Its `Debug` shows
/// only the public half; the secret never leaves except through
/// [`AuditKey::secret_hex`], for writing the key file once.
pub struct AuditKey(SigningKey);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("public_key", &self.public_key().to_hex())
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// A fresh key from the operating system's random source.
    #[must_use]
    pub fn generate() -> Self {
        AuditKey(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// A key from its 32-byte seed written as 64 hex digits (the format
    /// of `CLINICBOOK_AUDIT_KEY` and of the key file).
    ///
    /// # Errors
    /// [`CheckpointError::InvalidKey`] when it is not 64 hex digits; the
    /// message never repeats the input.
    pub fn from_hex(secret: &str) -> Result<Self, CheckpointError> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(secret.trim(), &mut seed).map_err(|_| {
            CheckpointError::InvalidKey(
                "an audit signing key is 64 hex digits (an Ed25519 seed)".to_owned(),
            )
        })?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(AuditKey(key))
    }

    /// The secret seed as 64 hex digits: only for storing the key.
    #[must_use]
    pub fn secret_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The public half, which verifies this key's checkpoints.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

/// An Ed25519 public key that checkpoints are verified with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// A key from 64 hex digits.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidKey`] when it is not 64 hex digits or not
    /// a point of the curve.
    pub fn from_hex(text: &str) -> Result<Self, CheckpointError> {
        let invalid = || {
            CheckpointError::InvalidKey(
                "an audit public key is 64 hex digits (an Ed25519 public key)".to_owned(),
            )
        };
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| invalid())?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| invalid())
    }

    /// The key as 64 hex digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }
}

/// A stream's last event when a checkpoint was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamHead {
    /// Aggregate type (any text: a type this store does not have is
    /// reported missing). No NUL, as PostgreSQL text cannot hold one.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\u0000]*$"))]
    pub aggregate_type: String,
    /// Aggregate id.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\u0000]*$"))]
    pub aggregate_id: String,
    /// The stream's last sequence.
    pub sequence: i64,
    /// That event's chain hash, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub hash: String,
}

/// Every stream's head, signed: what `clinicbook checkpoint` prints and
/// `GET /v1/audit/checkpoint` answers, and what `verify --against` and
/// `POST /v1/audit/verify` take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The highest position among the events it covers (every event
    /// committed when it was taken).
    pub position: i64,
    /// When it was taken (UTC, to the microsecond).
    pub taken_at: DateTime<Utc>,
    /// Every stream's head, ordered by type and id.
    pub streams: Vec<StreamHead>,
    /// SHA-256 over the canonical bytes of `position`, `taken_at` and
    /// `streams`, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub digest: String,
    /// Ed25519 signature of the digest's 32 bytes by the audit key, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{128}$"))]
    pub signature: String,
}

/// Domain separation of the digest's bytes.
const DIGEST_TAG: &[u8] = b"clinicbook-checkpoint-v1";

/// The digest of a checkpoint's contents: every field length-prefixed or
/// of fixed width, so no two different contents share bytes.
fn digest_of(
    position: i64,
    taken_at: DateTime<Utc>,
    streams: &[StreamHead],
) -> Result<Hash, CheckpointError> {
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_TAG);
    hasher.update(position.to_be_bytes());
    hasher.update(taken_at.timestamp_micros().to_be_bytes());
    hasher.update((streams.len() as u64).to_be_bytes());
    for (i, head) in streams.iter().enumerate() {
        for text in [&head.aggregate_type, &head.aggregate_id] {
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.update(head.sequence.to_be_bytes());
        hasher.update(decode_hash(&format!("streams[{i}].hash"), &head.hash)?);
    }
    Ok(hasher.finalize().into())
}

fn decode_hash(field: &str, text: &str) -> Result<Hash, CheckpointError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| CheckpointError::Malformed {
        field: field.to_owned(),
        reason: "expected 64 hex digits".to_owned(),
    })?;
    Ok(bytes)
}

/// Takes a checkpoint of every stream committed now, in one snapshot of the
/// database, and signs it with `key`.
///
/// # Errors
/// The database failed.
pub async fn take(pool: &PgPool, key: &AuditKey) -> Result<Checkpoint, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let position: i64 = sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT DISTINCT ON (aggregate_type, aggregate_id) aggregate_type, aggregate_id, sequence, hash
           FROM events ORDER BY aggregate_type, aggregate_id, sequence DESC",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let streams = rows
        .iter()
        .map(|row| {
            let hash: Vec<u8> = row.try_get("hash")?;
            Ok(StreamHead {
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                hash: hex::encode(hash),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let taken_at = hash::recorded_instant(Utc::now());
    // Every hash came from a `bytea` of checked length, so it decodes.
    let digest = digest_of(position, taken_at, &streams).map_err(|e| StoreError::Corrupt {
        aggregate_type: "events".to_owned(),
        aggregate_id: String::new(),
        reason: e.to_string(),
    })?;
    let signature = key.0.sign(&digest);
    Ok(Checkpoint {
        position,
        taken_at,
        streams,
        digest: hex::encode(digest),
        signature: hex::encode(signature.to_bytes()),
    })
}

/// Checks that `checkpoint` is one `key` signed, unchanged: its digest
/// matches its contents and the signature verifies.
///
/// # Errors
/// `Malformed` for a field that is not hex of the right length,
/// `DigestMismatch` when the contents were changed, `BadSignature` when
/// the signature is not the key's over the digest.
pub fn check(checkpoint: &Checkpoint, key: &PublicKey) -> Result<(), CheckpointError> {
    let claimed = decode_hash("digest", &checkpoint.digest)?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(&checkpoint.signature, &mut signature).map_err(|_| {
        CheckpointError::Malformed {
            field: "signature".to_owned(),
            reason: "expected 128 hex digits".to_owned(),
        }
    })?;
    let digest = digest_of(
        checkpoint.position,
        checkpoint.taken_at,
        &checkpoint.streams,
    )?;
    if digest != claimed {
        return Err(CheckpointError::DigestMismatch);
    }
    key.0
        .verify_strict(&digest, &Signature::from_bytes(&signature))
        .map_err(|_| CheckpointError::BadSignature)
}

/// The streams of `checkpoint` the store no longer holds as it said: the
/// stream is gone (sequence 1), shorter (the first missing sequence), or
/// its event at the checkpoint's sequence has another hash.
///
/// # Errors
/// The database failed, or a head's hash is not hex.
pub async fn compare(
    pool: &PgPool,
    checkpoint: &Checkpoint,
) -> Result<Vec<StreamProblem>, CheckpointError> {
    let types: Vec<&str> = checkpoint
        .streams
        .iter()
        .map(|s| s.aggregate_type.as_str())
        .collect();
    let ids: Vec<&str> = checkpoint
        .streams
        .iter()
        .map(|s| s.aggregate_id.as_str())
        .collect();
    let sequences: Vec<i64> = checkpoint.streams.iter().map(|s| s.sequence).collect();
    let rows = sqlx::query(
        "SELECT c.ord, s.head, e.hash
           FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS c(ty, id, seq, ord)
           LEFT JOIN LATERAL (SELECT max(sequence) AS head FROM events
                               WHERE aggregate_type = c.ty AND aggregate_id = c.id) AS s ON true
           LEFT JOIN events e
                  ON e.aggregate_type = c.ty AND e.aggregate_id = c.id AND e.sequence = c.seq
          ORDER BY c.ord",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)?;
    let mut broken = Vec::new();
    for (i, (head, row)) in checkpoint.streams.iter().zip(&rows).enumerate() {
        let expected = decode_hash(&format!("streams[{i}].hash"), &head.hash)?;
        let current: Option<i64> = row.try_get("head").map_err(StoreError::from)?;
        let stored: Option<Vec<u8>> = row.try_get("hash").map_err(StoreError::from)?;
        let (sequence, reason) = match current {
            None => (
                1,
                format!(
                    "stream missing: the checkpoint says it has {} events",
                    head.sequence
                ),
            ),
            Some(current) if current < head.sequence => (
                current + 1,
                format!(
                    "stream shorter than the checkpoint: {current} events, the checkpoint says {}",
                    head.sequence
                ),
            ),
            Some(_) if stored.as_deref() != Some(expected.as_slice()) => (
                head.sequence,
                "event differs from the one the checkpoint saw".to_owned(),
            ),
            Some(_) => continue,
        };
        broken.push(StreamProblem::at(
            &head.aggregate_type,
            &head.aggregate_id,
            sequence,
            reason,
        ));
    }
    Ok(broken)
}

/// Verifies the whole store against a checkpoint signed by `key`: every
/// hash chain (as [`audit::verify`]) and every stream the checkpoint names
/// (as [`compare`]); a stream broken both ways is named once, at the
/// earlier sequence.
///
/// # Errors
/// The checkpoint is refused (see [`check`]), or the database failed.
pub async fn verify_against(
    pool: &PgPool,
    checkpoint: &Checkpoint,
    key: &PublicKey,
) -> Result<VerifyReport, CheckpointError> {
    check(checkpoint, key)?;
    let mut report = audit::verify(pool, None, None).await?;
    for link in compare(pool, checkpoint).await? {
        match report.broken.iter_mut().find(|b| {
            b.aggregate_type == link.aggregate_type && b.aggregate_id == link.aggregate_id
        }) {
            Some(existing) if existing.sequence <= link.sequence => {}
            Some(existing) => *existing = link,
            None => report.broken.push(link),
        }
    }
    report.ok = report.broken.is_empty();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(key: &AuditKey) -> Checkpoint {
        let streams = vec![StreamHead {
            aggregate_type: "Wallet".to_owned(),
            aggregate_id: "w".to_owned(),
            sequence: 3,
            hash: hex::encode([7u8; 32]),
        }];
        let taken_at = DateTime::from_timestamp_micros(1_900_000_000_000_000).unwrap_or_default();
        let digest = digest_of(12, taken_at, &streams).unwrap_or_default();
        Checkpoint {
            position: 12,
            taken_at,
            streams,
            digest: hex::encode(digest),
            signature: hex::encode(key.0.sign(&digest).to_bytes()),
        }
    }

    #[test]
    fn a_signed_checkpoint_checks_and_any_change_is_refused() {
        let key = AuditKey::generate();
        let public = key.public_key();
        let good = signed(&key);
        assert!(check(&good, &public).is_ok());

        let mut longer = good.clone();
        longer.streams[0].sequence = 4;
        assert!(matches!(
            check(&longer, &public),
            Err(CheckpointError::DigestMismatch)
        ));

        let mut forged = good.clone();
        let mut bytes = hex::decode(&forged.signature).unwrap_or_default();
        bytes[10] ^= 1;
        forged.signature = hex::encode(bytes);
        assert!(matches!(
            check(&forged, &public),
            Err(CheckpointError::BadSignature)
        ));

        let other = AuditKey::generate().public_key();
        assert!(matches!(
            check(&good, &other),
            Err(CheckpointError::BadSignature)
        ));

        let mut short = good.clone();
        short.signature.truncate(10);
        assert!(matches!(
            check(&short, &public),
            Err(CheckpointError::Malformed { ref field, .. }) if field == "signature"
        ));
    }

    #[test]
    fn keys_round_trip_as_hex_and_debug_shows_no_secret() {
        let key = AuditKey::generate();
        let again = AuditKey::from_hex(&key.secret_hex()).unwrap_or_else(|_| AuditKey::generate());
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(
            PublicKey::from_hex(&key.public_key().to_hex()).ok(),
            Some(key.public_key())
        );
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.secret_hex()), "{shown}");
        let bad = AuditKey::from_hex("zz-not-a-key")
            .err()
            .map(|e| e.to_string());
        assert!(bad.is_some_and(|m| !m.contains("zz-not-a-key")));
    }
}
