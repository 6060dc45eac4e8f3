//! The message templates (minijinja): for each kind and language a text
//! template (`<lang>/<kind>.txt`, with the blocks `subject`, `body` and
//! `sms`) and an HTML one (`<lang>/<kind>.html`, escaped as HTML), in
//! `notify/templates/`, compiled into the binary. Times are the
//! appointment's local time in the clinic's timezone.

use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use clinicbook_domain::patient::Language;
use minijinja::Environment;
use serde::Serialize;

use super::{MessageError, MessageKind};

/// Declares every template file, by name, from `notify/templates/`.
macro_rules! templates {
    ($($lang:literal / $kind:literal),+ $(,)?) => {
        &[$(
            (concat!($lang, "/", $kind, ".txt"),
             include_str!(concat!("../../templates/", $lang, "/", $kind, ".txt"))),
            (concat!($lang, "/", $kind, ".html"),
             include_str!(concat!("../../templates/", $lang, "/", $kind, ".html"))),
        )+]
    };
}

const SOURCES: &[(&str, &str)] = templates!(
    "en" / "confirmation",
    "en" / "reminder",
    "en" / "cancellation",
    "en" / "displacement",
    "en" / "waitlist_offer",
    "de" / "confirmation",
    "de" / "reminder",
    "de" / "cancellation",
    "de" / "displacement",
    "de" / "waitlist_offer",
);

static TEMPLATES: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, source) in SOURCES {
        env.add_template(name, source)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(env)
});

/// What a message says, before its language and kind shape it.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    /// The patient's name.
    pub patient_name: String,
    /// The clinic's name.
    pub clinic_name: String,
    /// The treatment's name.
    pub treatment_name: String,
    /// The appointment's start, in the clinic's local time, in words.
    pub when: String,
    /// The clinic's timezone (`Europe/Berlin`).
    pub zone: String,
    /// Free starts offered instead (a displacement), local, in words.
    pub alternatives: Vec<String>,
    /// Until when an offer holds (a waitlist offer), local, in words.
    pub expires: Option<String>,
}

/// A rendered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line.
    pub subject: String,
    /// The plain text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
    /// The SMS text.
    pub sms: String,
}

/// Renders the `kind` message in `language` with `facts`.
///
/// # Errors
/// A template is missing or fails to render (a bug, found by the tests).
pub fn render(
    kind: MessageKind,
    language: Language,
    facts: &Facts,
) -> Result<Rendered, MessageError> {
    let env = TEMPLATES.as_ref().map_err(|e| MessageError::Template {
        name: "templates".to_owned(),
        reason: e.clone(),
    })?;
    let lang: &'static str = language.into();
    let name = |ext: &str| format!("{lang}/{}.{ext}", kind.as_str());
    let failed = |name: &str, e: minijinja::Error| MessageError::Template {
        name: name.to_owned(),
        reason: format!("{e:#}"),
    };
    let text_name = name("txt");
    let text = env
        .get_template(&text_name)
        .map_err(|e| failed(&text_name, e))?;
    let mut captured = text
        .render_captured(facts)
        .map_err(|e| failed(&text_name, e))?;
    let (subject, body, sms) = captured
        .with_state_mut(|state| {
            Ok::<_, minijinja::Error>((
                state.render_block("subject")?,
                state.render_block("body")?,
                state.render_block("sms")?,
            ))
        })
        .map_err(|e| failed(&text_name, e))?;
    let html_name = name("html");
    let html = env
        .get_template(&html_name)
        .and_then(|t| t.render(facts))
        .map_err(|e| failed(&html_name, e))?;
    Ok(Rendered {
        subject: one_line(&subject),
        text: body.trim().to_owned() + "\n",
        html,
        sms: one_line(&sms),
    })
}

/// `text` with its whitespace runs (newlines too) as single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

const EN_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const DE_DAYS: [&str; 7] = [
    "Montag",
    "Dienstag",
    "Mittwoch",
    "Donnerstag",
    "Freitag",
    "Samstag",
    "Sonntag",
];
const EN_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DE_MONTHS: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];

/// `at` in the clinic's local time, in words of `language`:
/// "Tuesday, 8 January 2030, 10:00" or "Dienstag, 8. Januar 2030, 10:00 Uhr".
#[must_use]
pub fn local_time(at: DateTime<Utc>, tz: Tz, language: Language) -> String {
    let local = at.with_timezone(&tz);
    let day = local.weekday().num_days_from_monday() as usize;
    let month = local.month0() as usize;
    let (h, m) = (local.hour(), local.minute());
    match language {
        Language::En => format!(
            "{}, {} {} {}, {h:02}:{m:02}",
            EN_DAYS[day % 7],
            local.day(),
            EN_MONTHS[month % 12],
            local.year()
        ),
        Language::De => format!(
            "{}, {}. {} {}, {h:02}:{m:02} Uhr",
            DE_DAYS[day % 7],
            local.day(),
            DE_MONTHS[month % 12],
            local.year()
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            patient_name: "Jürgen <Ä> Müller".to_owned(),
            clinic_name: "Berlin Mitte".to_owned(),
            treatment_name: "Laser".to_owned(),
            when: "Dienstag, 8. Januar 2030, 10:00 Uhr".to_owned(),
            zone: "Europe/Berlin".to_owned(),
            alternatives: vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
            expires: Some("x".to_owned()),
        }
    }

    #[test]
    fn every_kind_renders_in_every_language() {
        use strum::VariantNames;
        for kind in MessageKind::VARIANTS {
            let kind: MessageKind = kind.parse().unwrap();
            for language in Language::ALL {
                let r = render(kind, language, &facts()).unwrap();
                assert!(!r.subject.is_empty() && !r.subject.contains('\n'));
                assert!(r.text.contains("Berlin Mitte"), "{kind:?} {language:?}");
                assert!(
                    r.text.contains("Jürgen <Ä> Müller"),
                    "{kind:?} {language:?}"
                );
                assert!(
                    r.html.contains("Jürgen &lt;Ä&gt; Müller"),
                    "{kind:?} {language:?}"
                );
                assert!(r.sms.contains("Berlin Mitte"), "{kind:?} {language:?}");
            }
        }
    }

    #[test]
    fn times_are_local_in_words() {
        let at: DateTime<Utc> = "2030-01-08T09:00:00Z".parse().unwrap();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            local_time(at, tz, Language::En),
            "Tuesday, 8 January 2030, 10:00"
        );
        assert_eq!(
            local_time(at, tz, Language::De),
            "Dienstag, 8. Januar 2030, 10:00 Uhr"
        );
        let summer: DateTime<Utc> = "2030-07-02T08:30:00Z".parse().unwrap();
        assert_eq!(
            local_time(summer, tz, Language::En),
            "Tuesday, 2 July 2030, 10:30"
        );
    }
}
