//! Patients' personal data at rest: a data key per patient, wrapped by the
//! master key, and sealed fields (XChaCha20-Poly1305, RustCrypto's
//! `chacha20poly1305`).
//!
//! A patient's data key is created in the unit of work that first seals a
//! field for them ([`crate::UnitOfWork::seal_contact`]) and lives, wrapped,
//! in `patient_keys`: the one table whose rows are deleted. Erasure deletes
//! the row in the same transaction as `PatientErased`
//! ([`crate::UnitOfWork::destroy_key`]); every sealed field of that patient,
//! in events, snapshots and read models, is then unreadable, and readers
//! show [`ERASED`]. Events keep their ciphertext, which their hashes cover,
//! so `verify` still passes.
//!
//! Keys are never cached: each read unwraps the key it needs, so a key
//! destroyed by another process is gone for this one at once.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use clinicbook_domain::patient::Sealed;
use clinicbook_domain::PatientId;
use rand_core::{OsRng, RngCore};

use crate::error::StoreError;

/// What readers show where a field's key was destroyed.
pub const ERASED: &str = "[erased]";

/// The text form of a sealed field: this prefix, then the hex of the
/// 24-byte nonce and the ciphertext with its tag.
pub const SEALED_PREFIX: &str = "sealed:v1:";

const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// The master key that wraps every patient's data key
/// (`CLINICBOOK_MASTER_KEY`, or `var/master-key`). Its `Debug` shows
/// nothing of it.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A master key that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("a master key is 64 hex digits (32 bytes)")]
pub struct MalformedMasterKey;

impl MasterKey {
    /// A fresh random key from the OS random source.
    #[must_use]
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// The key from its hex form (surrounding spaces ignored).
    ///
    /// # Errors
    /// Not 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, MalformedMasterKey> {
        let bytes = hex::decode(text.trim()).map_err(|_| MalformedMasterKey)?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| MalformedMasterKey)?;
        Ok(Self(key))
    }

    /// The hex form, to keep in a private file.
    #[must_use]
    pub fn secret_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }

    /// A new data key for `patient`, and its wrapped form for the key table.
    pub(crate) fn new_data_key(
        &self,
        patient: PatientId,
    ) -> Result<(DataKey, Vec<u8>), StoreError> {
        let mut key = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut key);
        let wrapped = seal_bytes(&self.cipher(), &aad(b"key", patient), &key)?;
        Ok((DataKey { patient, key }, wrapped))
    }

    /// The data key of `patient` from its wrapped form.
    pub(crate) fn unwrap_key(
        &self,
        patient: PatientId,
        wrapped: &[u8],
    ) -> Result<DataKey, StoreError> {
        let bytes = open_bytes(&self.cipher(), &aad(b"key", patient), wrapped)
            .ok_or_else(|| corrupt(patient, "its data key does not unwrap with this master key"))?;
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| corrupt(patient, "its wrapped data key has the wrong length"))?;
        Ok(DataKey { patient, key })
    }
}

/// One patient's data key, unwrapped (in memory only, for one operation).
#[derive(Clone)]
pub(crate) struct DataKey {
    patient: PatientId,
    key: [u8; KEY_LEN],
}

impl DataKey {
    /// Whose key it is.
    pub(crate) fn patient(&self) -> PatientId {
        self.patient
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.key).into())
    }

    /// `plain` sealed under this key.
    pub(crate) fn seal(&self, plain: &str) -> Result<Sealed, StoreError> {
        let bytes = seal_bytes(
            &self.cipher(),
            &aad(b"field", self.patient),
            plain.as_bytes(),
        )?;
        Ok(Sealed(format!("{SEALED_PREFIX}{}", hex::encode(bytes))))
    }

    /// The plaintext of a field sealed under this key.
    pub(crate) fn open(&self, sealed: &str) -> Result<String, StoreError> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| corrupt(self.patient, "a sealed field is not in sealed:v1 form"))?;
        let plain = open_bytes(&self.cipher(), &aad(b"field", self.patient), &bytes)
            .ok_or_else(|| corrupt(self.patient, "a sealed field does not open with its key"))?;
        String::from_utf8(plain).map_err(|_| corrupt(self.patient, "a sealed field is not text"))
    }
}

/// Binds a ciphertext to its patient and purpose, so a field or key
/// copied to another patient does not open.
fn aad(purpose: &[u8], patient: PatientId) -> Vec<u8> {
    let mut aad = b"clinicbook/".to_vec();
    aad.extend_from_slice(purpose);
    aad.push(b'/');
    aad.extend_from_slice(patient.0.as_bytes());
    aad
}

fn seal_bytes(cipher: &XChaCha20Poly1305, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| StoreError::Crypto("sealing failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

fn open_bytes(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

fn corrupt(patient: PatientId, reason: &str) -> StoreError {
    StoreError::Corrupt {
        aggregate_type: clinicbook_domain::AggregateKind::Patient.name().to_owned(),
        aggregate_id: patient.to_string(),
        reason: reason.to_owned(),
    }
}

/// Opens one patient's sealed fields, as their key stands at one moment
/// ([`crate::EventStore::opener`]).
pub struct Opener {
    key: Option<DataKey>,
}

impl Opener {
    pub(crate) fn new(key: Option<DataKey>) -> Self {
        Self { key }
    }

    /// True when the patient has no key: erased (or never sealed anything).
    #[must_use]
    pub fn is_erased(&self) -> bool {
        self.key.is_none()
    }

    /// The plaintext of `sealed`, or [`ERASED`] when the key is gone.
    ///
    /// # Errors
    /// The field does not open with the patient's key (tampered, or
    /// another master key).
    pub fn open(&self, sealed: &Sealed) -> Result<String, StoreError> {
        match &self.key {
            Some(key) => key.open(&sealed.0),
            None => Ok(ERASED.to_owned()),
        }
    }

    /// Every sealed string inside `value` (an event's payload, a replayed
    /// state) replaced by its plaintext, or by [`ERASED`] when the key is
    /// gone.
    ///
    /// # Errors
    /// As [`Opener::open`].
    pub fn reveal(&self, value: &mut serde_json::Value) -> Result<(), StoreError> {
        reveal_json(self.key.as_ref(), value)
    }
}

/// A change of the key table that commits with a unit of work.
pub(crate) enum KeyChange {
    /// A new data key.
    Create {
        patient: PatientId,
        wrapped: Vec<u8>,
    },
    /// Erasure: the key is destroyed.
    Destroy { patient: PatientId },
}

impl KeyChange {
    pub(crate) async fn execute(&self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        match self {
            // A concurrent first seal for the same patient is a unique
            // violation: the command is retried and then uses that key.
            KeyChange::Create { patient, wrapped } => {
                sqlx::query("INSERT INTO patient_keys (patient_id, wrapped) VALUES ($1, $2)")
                    .bind(patient.0)
                    .bind(wrapped)
                    .execute(conn)
                    .await?;
            }
            KeyChange::Destroy { patient } => {
                sqlx::query("DELETE FROM patient_keys WHERE patient_id = $1")
                    .bind(patient.0)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Replaces every sealed string inside `value` with its plaintext under
/// `key`, or with [`ERASED`] when there is no key.
pub(crate) fn reveal_json(
    key: Option<&DataKey>,
    value: &mut serde_json::Value,
) -> Result<(), StoreError> {
    match value {
        serde_json::Value::String(text) if text.starts_with(SEALED_PREFIX) => {
            *text = match key {
                Some(key) => key.open(text)?,
                None => ERASED.to_owned(),
            };
        }
        serde_json::Value::Array(items) => {
            for item in items {
                reveal_json(key, item)?;
            }
        }
        serde_json::Value::Object(fields) => {
            for (_, item) in fields.iter_mut() {
                reveal_json(key, item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Opens the sealed fields of the events and states one answer shows
/// (audit routes), reading each patient's key once per answer.
pub struct Revealer<'s> {
    store: &'s crate::EventStore,
    openers: std::collections::HashMap<PatientId, Opener>,
}

impl<'s> Revealer<'s> {
    /// A revealer over `store`'s keys.
    #[must_use]
    pub fn new(store: &'s crate::EventStore) -> Self {
        Self {
            store,
            openers: std::collections::HashMap::new(),
        }
    }

    /// Opens the sealed strings of `value`, which belongs to the stream
    /// `aggregate_type`/`aggregate_id` (an event's payload or a replayed
    /// state): plaintext while the patient's key exists, [`ERASED`] after.
    /// Streams of other types hold no sealed fields and are left as they are.
    ///
    /// # Errors
    /// The key table cannot be read, or a field does not open with its key.
    pub async fn reveal(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        value: &mut serde_json::Value,
    ) -> Result<(), StoreError> {
        if aggregate_type != clinicbook_domain::AggregateKind::Patient.name() {
            return Ok(());
        }
        let Ok(id) = uuid::Uuid::parse_str(aggregate_id) else {
            return Ok(());
        };
        let patient = PatientId(id);
        if !self.openers.contains_key(&patient) {
            let opener = self.store.opener(patient).await?;
            self.openers.insert(patient, opener);
        }
        match self.openers.get(&patient) {
            Some(opener) => opener.reveal(value),
            None => Ok(()),
        }
    }

    /// [`Revealer::reveal`] of every stored event's payload, each of its
    /// own stream.
    ///
    /// # Errors
    /// As [`Revealer::reveal`].
    pub async fn reveal_events<'e>(
        &mut self,
        events: impl IntoIterator<Item = &'e mut crate::audit::StoredEvent>,
    ) -> Result<(), StoreError> {
        for event in events {
            self.reveal(
                &event.aggregate_type,
                &event.aggregate_id,
                &mut event.payload,
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn patient(n: u128) -> PatientId {
        PatientId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_sealed_field_opens_with_its_key_only() {
        let master = MasterKey::generate();
        let (key, wrapped) = master.new_data_key(patient(1)).unwrap();
        let sealed = key.seal("Ada Lovelace").unwrap();
        assert!(sealed.0.starts_with(SEALED_PREFIX));
        assert!(!sealed.0.contains("Ada"));
        // Two seals of the same text differ (random nonces).
        assert_ne!(key.seal("Ada Lovelace").unwrap(), sealed);
        let unwrapped = master.unwrap_key(patient(1), &wrapped).unwrap();
        assert_eq!(unwrapped.open(&sealed.0).unwrap(), "Ada Lovelace");
        // Another patient's key, or this key unwrapped as another patient's, fails.
        let (other, _) = master.new_data_key(patient(2)).unwrap();
        assert!(other.open(&sealed.0).is_err());
        assert!(master.unwrap_key(patient(2), &wrapped).is_err());
        // Another master key cannot unwrap it.
        assert!(MasterKey::generate()
            .unwrap_key(patient(1), &wrapped)
            .is_err());
        // A changed byte is refused.
        let mut tampered = sealed.0.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(unwrapped.open(&tampered).is_err());
    }

    #[test]
    fn reveal_opens_or_erases_every_sealed_string() {
        let master = MasterKey::generate();
        let (key, _) = master.new_data_key(patient(1)).unwrap();
        let sealed = key.seal("ada@example.com").unwrap().0;
        let doc = serde_json::json!({"a": [sealed.clone(), {"b": sealed}], "c": "plain", "d": 3});
        let mut open = doc.clone();
        reveal_json(Some(&key), &mut open).unwrap();
        assert_eq!(
            open,
            serde_json::json!({"a": ["ada@example.com", {"b": "ada@example.com"}], "c": "plain", "d": 3})
        );
        let mut erased = doc;
        reveal_json(None, &mut erased).unwrap();
        assert_eq!(
            erased,
            serde_json::json!({"a": [ERASED, {"b": ERASED}], "c": "plain", "d": 3})
        );
    }

    #[test]
    fn master_keys_round_trip_through_hex() {
        let key = MasterKey::generate();
        let again = MasterKey::from_hex(&format!(" {} \n", key.secret_hex())).unwrap();
        assert_eq!(again.secret_hex(), key.secret_hex());
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
    }
}
