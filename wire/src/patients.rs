//! Patient profiles (`/v1/patients`): bodies and answers. Personal fields
//! travel in plaintext only between the client and the server; the use
//! cases seal them before anything is stored.

use chrono::{DateTime, Utc};
use clinicbook_domain::patient::{Consent, Contact, Language};
use clinicbook_domain::DomainError;
use serde::{Deserialize, Serialize};
use strum::VariantNames;
use uuid::Uuid;

/// What the patient agreed to be contacted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentInput {
    /// Email messages (confirmations, reminders, notices).
    pub email: bool,
    /// SMS texts (sent through the clinic's gateway as `message.sms` webhooks).
    pub sms: bool,
}

impl From<ConsentInput> for Consent {
    fn from(c: ConsentInput) -> Self {
        Consent {
            email: c.email,
            sms: c.sms,
        }
    }
}

impl From<Consent> for ConsentInput {
    fn from(c: Consent) -> Self {
        ConsentInput {
            email: c.email,
            sms: c.sms,
        }
    }
}

/// Body of `POST /v1/patients` and `PUT /v1/patients/{patient_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientInput {
    /// Id of the patient (one bookings may already name); chosen by the
    /// server when left out. On `PUT` it must be the path's, if given.
    #[serde(default)]
    pub patient_id: Option<Uuid>,
    /// Name (stored encrypted).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Name))]
    pub name: String,
    /// Email address (stored encrypted).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::EmailAddress>))]
    pub email: Option<String>,
    /// Phone number in E.164 form (stored encrypted).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::PhoneNumber>))]
    pub phone: Option<String>,
    /// Language of the patient's messages: `en` (default) or `de`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Language>))]
    pub language: Option<String>,
    /// What the patient agreed to be contacted by.
    pub consent: ConsentInput,
}

/// A profile as the API answers it: plaintext, built in memory, never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientView {
    /// The patient.
    pub patient_id: Uuid,
    /// Name.
    pub name: String,
    /// Email address.
    pub email: Option<String>,
    /// Phone number (E.164).
    pub phone: Option<String>,
    /// Language of the patient's messages.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Language))]
    pub language: String,
    /// What the patient agreed to be contacted by.
    pub consent: ConsentInput,
}

/// Answer of `POST /v1/patients` (and, inside, of `PUT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientSaved {
    /// The patient.
    pub patient_id: Uuid,
}

/// Body of `POST /v1/patients/{patient_id}/erase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErasePatient {
    /// Why (kept in the audit trail in plaintext: write no personal data here).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Name))]
    pub reason: String,
}

/// Answer of `POST /v1/patients/{patient_id}/erase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatientErased {
    /// When the data was erased.
    pub erased_at: DateTime<Utc>,
}

/// The language named by `raw` (default `en`).
///
/// # Errors
/// `invalid_input` on `language` for a language the templates lack.
pub fn parse_language(raw: Option<&str>) -> Result<Language, DomainError> {
    match raw {
        None => Ok(Language::default()),
        Some(name) => name.parse().map_err(|_| {
            DomainError::invalid(
                "language",
                format!("must be one of {}", Language::VARIANTS.join(", ")),
            )
        }),
    }
}

/// A request checked: the contact in plaintext (valid), language, consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Name, email and phone, each valid.
    pub contact: Contact,
    /// The language (default `en`).
    pub language: Language,
    /// The consent.
    pub consent: Consent,
}

impl PatientInput {
    /// The request's fields parsed by the domain's rules.
    ///
    /// # Errors
    /// `invalid_input` naming a field that is not valid.
    pub fn check(&self) -> Result<Checked, DomainError> {
        Ok(Checked {
            contact: Contact::parse(&self.name, self.email.as_deref(), self.phone.as_deref())?,
            language: parse_language(self.language.as_deref())?,
            consent: self.consent.into(),
        })
    }

    /// The profile this input sets, as `GET` answers it (trimmed, defaults
    /// filled in).
    ///
    /// # Errors
    /// `invalid_input` naming a field that is not valid.
    pub fn view(&self, patient_id: Uuid) -> Result<PatientView, DomainError> {
        let checked = self.check()?;
        Ok(PatientView {
            patient_id,
            name: checked.contact.name,
            email: checked.contact.email.map(|e| e.as_str().to_owned()),
            phone: checked.contact.phone.map(|p| p.as_str().to_owned()),
            language: <&'static str>::from(checked.language).to_owned(),
            consent: checked.consent.into(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_checked_and_default_to_english() {
        assert_eq!(parse_language(None), Ok(Language::En));
        assert_eq!(parse_language(Some("de")), Ok(Language::De));
        assert_eq!(
            parse_language(Some("DE")),
            Err(DomainError::invalid("language", "must be one of en, de"))
        );
    }
}
