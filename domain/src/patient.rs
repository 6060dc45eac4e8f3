//! The `Patient` aggregate: a patient's profile (name, email, phone,
//! language, consent) whose personal fields are stored only as ciphertext,
//! and its erasure.
//!
//! The domain never sees a key: a profile is first parsed in plaintext
//! ([`Contact::parse`]: an email is an email, a phone is E.164, a name is
//! not blank), then sealed by the caller ([`Contact::seal`], with the
//! patient's data key) into a [`SealedContact`] that the commands and events
//! carry. So every stored personal field was valid when it was written, and
//! none is ever stored in plaintext. Erasure destroys the data key (outside
//! the domain, in the same unit of work as [`PatientEvent::PatientErased`]);
//! the events keep their ciphertext, which no one can read any more.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::clinic::checked_name;
use crate::{DomainError, PatientId};

named! {
    /// A language the message templates exist in.
    #[derive(Default, PartialOrd, Ord)]
    pub enum Language {
        /// English (the default).
        #[default]
        En,
        /// German.
        De,
    }
}

impl Language {
    /// Every language, in the API's order.
    pub const ALL: [Language; 2] = [Language::En, Language::De];
}

/// What the patient agreed to be contacted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Email messages (confirmations, reminders, notices).
    pub email: bool,
    /// SMS texts.
    pub sms: bool,
}

/// Longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// The characters an email's local part may have (RFC 5322's `atext`
/// and the dot): ASCII only, no spaces, quotes or brackets.
pub const EMAIL_LOCAL_CHARS: &str = "!#$%&'*+/=?^_`{|}~.-";

/// An email address: `local@domain`, the local part of ASCII letters,
/// digits and [`EMAIL_LOCAL_CHARS`], the domain two or more dot-separated
/// labels of letters, digits and `-` (not at a label's ends), at most
/// [`MAX_EMAIL_CHARS`] characters. Checked the way a form would check it;
/// whether mail arrives is SMTP's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// The address, trimmed.
    ///
    /// # Errors
    /// `InvalidInput` on `email` when it is not an address.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let email = raw.trim();
        if email.len() > MAX_EMAIL_CHARS {
            return Err(DomainError::invalid(
                "email",
                "must be at most 254 characters",
            ));
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || EMAIL_LOCAL_CHARS.contains(c))
                && domain.split('.').count() >= 2
                && domain.split('.').all(label_ok)
        });
        if !valid {
            return Err(DomainError::invalid(
                "email",
                "must be an address such as name@example.com",
            ));
        }
        Ok(Self(email.to_owned()))
    }

    /// The address.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    /// The number, trimmed.
    ///
    /// # Errors
    /// `InvalidInput` on `phone` when it is not E.164.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let phone = raw.trim();
        let digits = phone.strip_prefix('+').unwrap_or("");
        let e164 = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !e164 {
            return Err(DomainError::invalid(
                "phone",
                "must be E.164: + and 8 to 15 digits, e.g. +4930123456",
            ));
        }
        Ok(Self(phone.to_owned()))
    }

    /// The number.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A patient's personal fields in plaintext, each valid: what exists only
/// in memory, between the request and [`Contact::seal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Name, trimmed, not blank.
    pub name: String,
    /// Email address.
    pub email: Option<Email>,
    /// Phone number.
    pub phone: Option<Phone>,
}

impl Contact {
    /// Parses the personal fields of a profile.
    ///
    /// # Errors
    /// `InvalidInput` naming the first field that is not valid.
    pub fn parse(
        name: &str,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Result<Self, DomainError> {
        Ok(Self {
            name: checked_name("name", name)?,
            email: email.map(Email::parse).transpose()?,
            phone: phone.map(Phone::parse).transpose()?,
        })
    }

    /// The same fields sealed by `seal` (the patient's data key): the only
    /// way to make a [`SealedContact`], so every sealed field was valid.
    ///
    /// # Errors
    /// Whatever `seal` fails with.
    pub fn seal<E>(
        &self,
        mut seal: impl FnMut(&str) -> Result<Sealed, E>,
    ) -> Result<SealedContact, E> {
        Ok(SealedContact {
            name: seal(&self.name)?,
            email: self.email.as_ref().map(|e| seal(e.as_str())).transpose()?,
            phone: self.phone.as_ref().map(|p| seal(p.as_str())).transpose()?,
        })
    }
}

/// A personal field as stored: ciphertext under the patient's data key
/// (its text form is the event store's, e.g. `sealed:v1:…`), opaque to the
/// domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

/// The personal fields of a profile, sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedContact {
    /// Name.
    pub name: Sealed,
    /// Email address.
    pub email: Option<Sealed>,
    /// Phone number.
    pub phone: Option<Sealed>,
}

/// A profile as the aggregate keeps it: sealed personal fields, the
/// language and the consent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Sealed name, email and phone.
    pub contact: SealedContact,
    /// Language of the patient's messages.
    pub language: Language,
    /// What the patient may be contacted by.
    pub consent: Consent,
}

/// The `Patient` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    /// `None` until registered.
    pub patient_id: Option<PatientId>,
    /// The profile; `None` once erased.
    pub profile: Option<Profile>,
    /// When the patient's data was erased.
    pub erased_at: Option<DateTime<Utc>>,
}

/// Commands of the `Patient` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PatientCommand {
    /// Create the profile.
    Register {
        /// Id (may be one bookings already name: a walk-in).
        patient_id: PatientId,
        /// The profile.
        profile: Profile,
    },
    /// Replace the profile's fields.
    Update {
        /// The new profile.
        profile: Profile,
    },
    /// Erase the personal data (the caller destroys the data key in the
    /// same unit of work).
    Erase {
        /// Why, for the audit trail (not blank).
        reason: String,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// Events of the `Patient` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum PatientEvent {
    /// The profile was created.
    PatientRegistered {
        /// Id.
        patient_id: PatientId,
        /// The profile.
        profile: Profile,
    },
    /// The profile's fields were replaced.
    PatientUpdated {
        /// The new profile.
        profile: Profile,
    },
    /// The personal data was erased: its key is gone.
    PatientErased {
        /// Why.
        reason: String,
        /// When.
        erased_at: DateTime<Utc>,
    },
}

impl Patient {
    /// True once registered (erased patients still exist).
    #[must_use]
    pub fn exists(&self) -> bool {
        self.patient_id.is_some()
    }

    /// The profile of a registered patient that was not erased.
    ///
    /// # Errors
    /// `NotFound` for a patient never registered, `PatientErased` after erasure.
    pub fn live_profile(&self) -> Result<&Profile, DomainError> {
        if self.erased_at.is_some() {
            return Err(DomainError::PatientErased);
        }
        self.profile
            .as_ref()
            .ok_or_else(|| DomainError::not_found("patient"))
    }

    /// Checks `command` and returns the event it produces.
    ///
    /// # Errors
    /// `AlreadyExists` for a second registration (even after erasure: an
    /// erased id stays erased); `NotFound` updating or erasing a patient
    /// never registered; `PatientErased` updating or erasing after erasure;
    /// `InvalidInput` for a blank erasure reason.
    pub fn decide(&self, command: PatientCommand) -> Result<PatientEvent, DomainError> {
        match command {
            PatientCommand::Register {
                patient_id,
                profile,
            } => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists {
                        what: format!("patient {patient_id}"),
                    });
                }
                Ok(PatientEvent::PatientRegistered {
                    patient_id,
                    profile,
                })
            }
            PatientCommand::Update { profile } => {
                self.live_profile()?;
                Ok(PatientEvent::PatientUpdated { profile })
            }
            PatientCommand::Erase { reason, at } => {
                // The input first: a bad request is refused as such, whatever
                // the patient's state.
                let reason = checked_name("reason", &reason)?;
                self.live_profile()?;
                Ok(PatientEvent::PatientErased {
                    reason,
                    erased_at: at,
                })
            }
        }
    }
}

impl Aggregate for Patient {
    const TYPE: &'static str = crate::AggregateKind::Patient.name();
    type Command = PatientCommand;
    type Event = PatientEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PatientCommand,
        _service: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: PatientEvent) {
        match event {
            PatientEvent::PatientRegistered {
                patient_id,
                profile,
            } => {
                self.patient_id = Some(patient_id);
                self.profile = Some(profile);
            }
            PatientEvent::PatientUpdated { profile } => self.profile = Some(profile),
            PatientEvent::PatientErased { erased_at, .. } => {
                self.profile = None;
                self.erased_at = Some(erased_at);
            }
        }
    }
}

impl DomainEvent for PatientEvent {
    fn event_type(&self) -> String {
        <&'static str>::from(self).to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a broken fixture should fail the test loudly
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Patient>;

    fn patient_id() -> PatientId {
        PatientId(uuid::Uuid::from_u128(7))
    }

    /// A stand-in for the store's cipher: what matters here is only that
    /// the aggregate carries what it is given.
    fn fake_seal(plain: &str) -> Result<Sealed, std::convert::Infallible> {
        Ok(Sealed(format!("sealed:{}", plain.len())))
    }

    fn profile(language: Language) -> Profile {
        let contact = Contact::parse("Ada Lovelace", Some("ada@example.com"), Some("+4930123456"))
            .unwrap()
            .seal(fake_seal)
            .unwrap();
        Profile {
            contact,
            language,
            consent: Consent {
                email: true,
                sms: false,
            },
        }
    }

    fn registered() -> PatientEvent {
        PatientEvent::PatientRegistered {
            patient_id: patient_id(),
            profile: profile(Language::En),
        }
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn erased() -> PatientEvent {
        PatientEvent::PatientErased {
            reason: "patient asked".to_owned(),
            erased_at: at(),
        }
    }

    #[test]
    fn register_a_patient() {
        Given::with(())
            .given_no_previous_events()
            .when(PatientCommand::Register {
                patient_id: patient_id(),
                profile: profile(Language::En),
            })
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn register_twice_is_refused_even_after_erasure() {
        for given in [vec![registered()], vec![registered(), erased()]] {
            Given::with(())
                .given(given)
                .when(PatientCommand::Register {
                    patient_id: patient_id(),
                    profile: profile(Language::De),
                })
                .then_expect_error(DomainError::AlreadyExists {
                    what: format!("patient {}", patient_id()),
                });
        }
    }

    #[test]
    fn update_replaces_the_profile() {
        Given::with(())
            .given(vec![registered()])
            .when(PatientCommand::Update {
                profile: profile(Language::De),
            })
            .then_expect_events(vec![PatientEvent::PatientUpdated {
                profile: profile(Language::De),
            }]);
        let mut patient = Patient::default();
        patient.apply(registered());
        patient.apply(PatientEvent::PatientUpdated {
            profile: profile(Language::De),
        });
        assert_eq!(patient.live_profile().unwrap().language, Language::De);
    }

    #[test]
    fn update_or_erase_of_an_unknown_patient_is_not_found() {
        let commands = [
            PatientCommand::Update {
                profile: profile(Language::En),
            },
            PatientCommand::Erase {
                reason: "asked".to_owned(),
                at: at(),
            },
        ];
        for command in commands {
            Given::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(DomainError::not_found("patient"));
        }
    }

    #[test]
    fn erase_drops_the_profile_and_records_when() {
        Given::with(())
            .given(vec![registered()])
            .when(PatientCommand::Erase {
                reason: " patient asked ".to_owned(),
                at: at(),
            })
            .then_expect_events(vec![erased()]);
        let mut patient = Patient::default();
        patient.apply(registered());
        patient.apply(erased());
        assert!(patient.exists());
        assert_eq!(patient.profile, None);
        assert_eq!(patient.erased_at, Some(at()));
        assert_eq!(patient.live_profile(), Err(DomainError::PatientErased));
    }

    #[test]
    fn nothing_changes_an_erased_patient() {
        let commands = [
            PatientCommand::Update {
                profile: profile(Language::En),
            },
            PatientCommand::Erase {
                reason: "again".to_owned(),
                at: at(),
            },
        ];
        for command in commands {
            Given::with(())
                .given(vec![registered(), erased()])
                .when(command)
                .then_expect_error(DomainError::PatientErased);
        }
    }

    #[test]
    fn erase_needs_a_reason() {
        Given::with(())
            .given(vec![registered()])
            .when(PatientCommand::Erase {
                reason: "  ".to_owned(),
                at: at(),
            })
            .then_expect_error(DomainError::invalid("reason", "must not be empty"));
    }

    #[test]
    fn a_blank_reason_is_refused_as_input_even_after_erasure() {
        Given::with(())
            .given(vec![registered(), erased()])
            .when(PatientCommand::Erase {
                reason: String::new(),
                at: at(),
            })
            .then_expect_error(DomainError::invalid("reason", "must not be empty"));
    }

    #[test]
    fn contact_fields_are_checked_before_sealing() {
        let ok = Contact::parse(" Ada ", Some(" ada@example.com "), Some("+4930123456")).unwrap();
        assert_eq!(ok.name, "Ada");
        assert_eq!(
            ok.email.as_ref().map(Email::as_str),
            Some("ada@example.com")
        );
        assert_eq!(ok.phone.as_ref().map(Phone::as_str), Some("+4930123456"));
        assert_eq!(Contact::parse("Ada", None, None).unwrap().email, None);
        assert_eq!(
            Contact::parse("", None, None),
            Err(DomainError::invalid("name", "must not be empty"))
        );
        for email in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@example..com",
            "ada@-example.com",
            "<ada@example.com>",
        ] {
            let refused = Contact::parse("Ada", Some(email), None).unwrap_err();
            assert!(
                matches!(&refused, DomainError::InvalidInput { field, .. } if field == "email"),
                "{email:?}: {refused:?}"
            );
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            Contact::parse("Ada", Some(&long), None),
            Err(DomainError::invalid(
                "email",
                "must be at most 254 characters"
            ))
        );
        assert!(Contact::parse("Ada", Some("o'neil+x@a-b.example.de"), None).is_ok());
        assert!(Contact::parse("Ada", Some("jürgen@example.com"), None).is_err());
        for phone in [
            "4930123456",
            "+0930123456",
            "+49 30 123456",
            "+1234567",
            "+1234567890123456",
            "+49301234ab",
            "+",
        ] {
            assert_eq!(
                Contact::parse("Ada", None, Some(phone)),
                Err(DomainError::invalid(
                    "phone",
                    "must be E.164: + and 8 to 15 digits, e.g. +4930123456"
                )),
                "{phone:?}"
            );
        }
        assert!(Contact::parse("Ada", None, Some("+123456789012345")).is_ok());
    }

    #[test]
    fn sealing_seals_every_personal_field() {
        let contact = Contact::parse("Ada", Some("ada@example.com"), Some("+4930123456")).unwrap();
        let mut seen = Vec::new();
        let sealed = contact
            .seal(|plain| {
                seen.push(plain.to_owned());
                Ok::<_, ()>(Sealed(format!("x{}", seen.len())))
            })
            .unwrap();
        assert_eq!(seen, ["Ada", "ada@example.com", "+4930123456"]);
        assert_eq!(sealed.name, Sealed("x1".to_owned()));
        assert_eq!(sealed.email, Some(Sealed("x2".to_owned())));
        assert_eq!(sealed.phone, Some(Sealed("x3".to_owned())));
        let stored = serde_json::to_value(&sealed).unwrap();
        assert_eq!(stored["name"], "x1");
    }

    #[test]
    fn languages_are_the_templates_languages() {
        assert_eq!(Language::default(), Language::En);
        assert_eq!("de".parse::<Language>(), Ok(Language::De));
        assert!("fr".parse::<Language>().is_err());
        assert_eq!(serde_json::to_value(Language::De).unwrap(), "de");
    }

    #[test]
    fn event_type_is_the_variant_name() {
        assert_eq!(registered().event_type(), "PatientRegistered");
        assert_eq!(erased().event_type(), "PatientErased");
        assert_eq!(Patient::TYPE, "Patient");
    }
}
