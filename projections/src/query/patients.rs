//! A patient's profile as the `patients` read model holds it: sealed.

use chrono::{DateTime, Utc};
use clinicbook_domain::patient::{Consent, Language, Sealed, SealedContact};
use uuid::Uuid;

use crate::models::patients;
use crate::{ProjectionError, ReadModels};

/// A stored profile: its personal fields still sealed (the caller opens
/// them with the patient's key), or erased.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPatient {
    /// The patient.
    pub patient_id: Uuid,
    /// The sealed name, email and phone; `None` once erased.
    pub contact: Option<SealedContact>,
    /// Language of the patient's messages.
    pub language: Language,
    /// What the patient may be contacted by (nothing once erased).
    pub consent: Consent,
    /// When the data was erased.
    pub erased_at: Option<DateTime<Utc>>,
}

impl ReadModels {
    /// The stored profile of `patient_id` (`GET /v1/patients/{id}`).
    ///
    /// # Errors
    /// [`ProjectionError::NotFound`] for a patient without a profile; the
    /// database failed.
    pub async fn patient(&self, patient_id: Uuid) -> Result<StoredPatient, ProjectionError> {
        let mut conn = self.read_connection().await?;
        let row = patients::PROFILES
            .load(&mut conn, "patient_id", &[patient_id])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ProjectionError::NotFound(format!("patient {patient_id}")))?;
        let contact = row.name.map(|name| SealedContact {
            name: Sealed(name),
            email: row.email.map(Sealed),
            phone: row.phone.map(Sealed),
        });
        Ok(StoredPatient {
            patient_id,
            contact,
            language: row.language,
            consent: Consent {
                email: row.consent_email,
                sms: row.consent_sms,
            },
            erased_at: row.erased_at,
        })
    }
}
