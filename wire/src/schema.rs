//! The rules of the inputs' text fields as JSON Schema patterns, written
//! once for the OpenAPI document, beside the parsers that apply them.
//!
//! Each pattern says exactly what the use cases accept, character for
//! character: a schema that allowed more would promise what the server
//! refuses, one that allowed less would refuse what it takes. Patterns use
//! only what ECMA 262 and Python's `re` read alike (no `\s`, whose members
//! differ: blanks are listed as [`BLANK`], Rust's `char::is_whitespace`,
//! which `str::trim` removes).
//!
//! With the `openapi` feature, each rule is also a schema component to
//! name in `#[schema(value_type = ...)]`, and the enums of names (resource
//! kinds, weekdays, timezones) come from the enums the parsers use.

/// The characters `str::trim` removes (Unicode `White_Space`), as the
/// inside of a regex character class; a macro so that `concat!` can use it.
macro_rules! blank {
    () => {
        r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// [`blank!`] as a constant.
pub const BLANK: &str = blank!();

/// A display name: 1 to 200 characters once trimmed (see
/// `clinicbook_domain::clinic::checked_name`), no NUL.
pub const NAME: &str = concat!(
    r"^[",
    blank!(),
    r"]*",
    r"[^",
    blank!(),
    r"\u0000]",
    r"(?:[^\u0000]{0,198}",
    r"[^",
    blank!(),
    r"\u0000])?",
    r"[",
    blank!(),
    r"]*$"
);

/// Text that must not be blank (a reason, a reference): at least one
/// character that is not a blank, no NUL.
pub const NOT_BLANK: &str = concat!(r"^[^\u0000]*", r"[^", blank!(), r"\u0000]", r"[^\u0000]*$");

/// Any text without NUL (PostgreSQL text cannot hold it).
pub const TEXT: &str = r"^[^\u0000]*$";

/// A payment reference a client may use: not blank, and not in the
/// engine's own namespaces (`package:`, `reservation:`, `refund:` in any
/// ASCII case, after leading blanks), no NUL.
pub const EXTERNAL_REFERENCE: &str = concat!(
    r"^(?![",
    blank!(),
    r"]*",
    r"(?:[Pp][Aa][Cc][Kk][Aa][Gg][Ee]|[Rr][Ee][Ss][Ee][Rr][Vv][Aa][Tt][Ii][Oo][Nn]|[Rr][Ee][Ff][Uu][Nn][Dd]):)",
    r"[^\u0000]*",
    r"[^",
    blank!(),
    r"\u0000]",
    r"[^\u0000]*$"
);

/// A promo code as clients may write it: 3 to 32 of `A-Z a-z 0-9 - _`,
/// blanks around it ignored (see `clinicbook_domain::PromoCodeKey::parse`).
pub const PROMO_CODE: &str = concat!(
    r"^[",
    blank!(),
    r"]*",
    r"[A-Za-z0-9_-]{3,32}",
    r"[",
    blank!(),
    r"]*$"
);

/// An optional promo code: a blank one means none.
pub const OPTIONAL_PROMO_CODE: &str = concat!(
    r"^[",
    blank!(),
    r"]*",
    r"(?:[A-Za-z0-9_-]{3,32}",
    r"[",
    blank!(),
    r"]*)?$"
);

/// A clinic-local time of day, `HH:MM` from `00:00` to `23:59` (see
/// `admin::parse_local_time`).
pub const LOCAL_TIME: &str = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$";

/// An ISO 4217 code: three upper-case ASCII letters.
pub const CURRENCY: &str = r"^[A-Z]{3}$";

/// An RFC 3339 instant whose second is not 60 (a leap second is refused,
/// see [`crate::instant`]); `format: date-time` says the rest.
pub const INSTANT: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9]";

#[cfg(feature = "openapi")]
pub use types::*;

/// An email address as `clinicbook_domain::patient::Email::parse` takes
/// it: blanks around it ignored, at most 254 characters, a local part of
/// ASCII letters, digits and `!#$%&'*+/=?^_`{|}~.-`, then `@` and two or
/// more dot-separated labels of letters, digits and `-` (not at a label's
/// ends).
pub const EMAIL: &str = concat!(
    r"^[",
    blank!(),
    r"]*(?=[^",
    blank!(),
    r"]{1,254}[",
    blank!(),
    r"]*$)",
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@",
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?",
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+",
    r"[",
    blank!(),
    r"]*$"
);

/// A phone number in E.164 form (`clinicbook_domain::patient::Phone`):
/// `+`, then 8 to 15 digits, the first not 0; blanks around it ignored.
pub const PHONE: &str = concat!(r"^[", blank!(), r"]*\+[1-9][0-9]{7,14}[", blank!(), r"]*$");

/// Schemas for `#[schema(value_type = ...)]`: one component per rule, so
/// every field under a rule points at the same pattern or enum.
#[cfg(feature = "openapi")]
mod types {
    use std::borrow::Cow;

    use clinicbook_domain::{clinic, patient, schedule};
    use utoipa::openapi::schema::{
        ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
    };
    use utoipa::openapi::{Ref, RefOr};

    /// A string schema component named `$name`, built by `$with` from a
    /// string schema builder.
    macro_rules! string_schema {
        ($(#[$meta:meta])* $name:ident, $with:expr, $description:expr) => {
            $(#[$meta])*
            pub struct $name;

            impl utoipa::PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    let with: fn(ObjectBuilder) -> ObjectBuilder = $with;
                    with(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some($description))
                        .into()
                }
            }

            impl utoipa::ToSchema for $name {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($name))
                }
            }
        };
    }

    /// A string schema component named `$name` with `pattern`.
    macro_rules! text_schema {
        ($(#[$meta:meta])* $name:ident, $pattern:expr, $description:expr) => {
            string_schema!($(#[$meta])* $name, |s| s.pattern(Some($pattern)), $description);
        };
    }

    /// A string schema component named `$name` whose values are the
    /// strum names of `$names`.
    macro_rules! names_schema {
        ($(#[$meta:meta])* $name:ident, $names:expr, $description:expr) => {
            string_schema!(
                $(#[$meta])* $name,
                |s| s.enum_values(Some($names.iter().copied())),
                $description
            );
        };
    }

    /// [`names_schema!`] for enums of the domain that derive
    /// `strum::VariantNames`, one a line: `Name = Enum: "description";`.
    macro_rules! variant_schemas {
        ($($(#[$meta:meta])* $name:ident = $enum:ty: $description:expr;)*) => {
            $(names_schema!(
                $(#[$meta])* $name,
                <$enum as strum::VariantNames>::VARIANTS,
                $description
            );)*
        };
    }

    text_schema!(
        /// [`super::NAME`].
        Name,
        super::NAME,
        "A display name: 1 to 200 characters once blanks around it are removed."
    );
    text_schema!(
        /// [`super::NOT_BLANK`].
        NotBlank,
        super::NOT_BLANK,
        "Text with at least one character that is not a blank."
    );
    text_schema!(
        /// [`super::TEXT`].
        Text,
        super::TEXT,
        "Any text (without NUL)."
    );
    text_schema!(
        /// [`super::EXTERNAL_REFERENCE`].
        ExternalReference,
        super::EXTERNAL_REFERENCE,
        "A payment reference: not blank, and not starting with the engine's own `package:`, `reservation:` or `refund:`."
    );
    text_schema!(
        /// [`super::PROMO_CODE`].
        PromoCode,
        super::PROMO_CODE,
        "A promo code: 3 to 32 of A-Z, a-z, 0-9, `-` and `_` (stored upper-case)."
    );
    text_schema!(
        /// [`super::OPTIONAL_PROMO_CODE`].
        OptionalPromoCode,
        super::OPTIONAL_PROMO_CODE,
        "A promo code, or blank for none."
    );
    text_schema!(
        /// [`super::LOCAL_TIME`].
        LocalTime,
        super::LOCAL_TIME,
        "A clinic-local time of day, `HH:MM` (00:00 to 23:59)."
    );
    text_schema!(
        /// [`super::CURRENCY`].
        Currency,
        super::CURRENCY,
        "An ISO 4217 currency code: three upper-case letters."
    );
    text_schema!(
        /// [`super::EMAIL`].
        EmailAddress,
        super::EMAIL,
        "An email address such as name@example.com (ASCII, at most 254 characters)."
    );
    text_schema!(
        /// [`super::PHONE`].
        PhoneNumber,
        super::PHONE,
        "A phone number in E.164 form: + and 8 to 15 digits, the first not 0."
    );
    variant_schemas! {
        /// The languages of the message templates.
        Language = patient::Language: "A language the patient messages exist in.";
        /// The kinds of resources.
        ResourceKind = clinic::ResourceKind: "The kind of a resource.";
        /// What a freed slot does for the waitlist.
        WaitlistMode = clinic::WaitlistMode: "`auto_book` books the first fitting waitlisted patient; `offer` holds the slot for them to confirm.";
        /// The weekdays.
        Weekday = schedule::Weekday: "A weekday.";
    }
    names_schema!(
        /// The statuses of a hold.
        HoldStatus,
        clinicbook_domain::hold::HoldStatus::ALL.map(|status| status.as_str()),
        "The status of a hold."
    );
    names_schema!(
        /// Every IANA timezone name chrono-tz knows.
        Timezone,
        chrono_tz::TZ_VARIANTS.map(|tz| tz.name()),
        "An IANA timezone name."
    );

    /// A clinic-local range `["HH:MM", "HH:MM"]`.
    pub struct TimeRange;

    impl utoipa::PartialSchema for TimeRange {
        fn schema() -> RefOr<Schema> {
            ArrayBuilder::new()
                .items(RefOr::Ref(Ref::from_schema_name("LocalTime")))
                .min_items(Some(2))
                .max_items(Some(2))
                .description(Some(
                    "From (inclusive) and to (exclusive), clinic-local `HH:MM`.",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for TimeRange {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("TimeRange")
        }

        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            schemas.push((
                "LocalTime".to_string(),
                <LocalTime as utoipa::PartialSchema>::schema(),
            ));
        }
    }

    /// A list of ids, at least one, none twice.
    pub struct DistinctIds;

    impl utoipa::PartialSchema for DistinctIds {
        fn schema() -> RefOr<Schema> {
            ArrayBuilder::new()
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                )
                .min_items(Some(1))
                .unique_items(true)
                .description(Some("At least one id, none twice."))
                .into()
        }
    }

    impl utoipa::ToSchema for DistinctIds {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("DistinctIds")
        }
    }

    /// An input instant: RFC 3339 ([`super::INSTANT`]: no leap second).
    pub struct Instant;

    impl utoipa::PartialSchema for Instant {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .pattern(Some(super::INSTANT))
                .description(Some(
                    "An RFC 3339 instant with an offset; a second of 60 is refused.",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for Instant {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("Instant")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The characters of a class body such as [`BLANK`]: `\t \n \f \r`,
    /// `\uXXXX`, literal characters and `a-b` ranges.
    fn class_members(class: &str) -> Vec<char> {
        let mut singles = Vec::new();
        let mut rest = class;
        while let Some(c) = rest.chars().next() {
            let (ch, len) = if let Some(escape) = rest.strip_prefix('\\') {
                match escape.chars().next() {
                    Some('t') => ('\t', 2),
                    Some('n') => ('\n', 2),
                    Some('f') => ('\u{c}', 2),
                    Some('r') => ('\r', 2),
                    Some('u') => {
                        let code = u32::from_str_radix(&escape[1..5], 16).unwrap();
                        (char::from_u32(code).unwrap(), 6)
                    }
                    other => panic!("unexpected escape {other:?}"),
                }
            } else {
                (c, c.len_utf8())
            };
            singles.push(ch);
            rest = &rest[len..];
        }
        // Expand `a-b`.
        let mut members = Vec::new();
        let mut i = 0;
        while i < singles.len() {
            if i + 2 < singles.len() && singles[i + 1] == '-' {
                members.extend(singles[i]..=singles[i + 2]);
                i += 3;
            } else {
                members.push(singles[i]);
                i += 1;
            }
        }
        members
    }

    #[test]
    fn the_blank_class_is_what_trim_removes() {
        let members = class_members(BLANK);
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(c.is_whitespace(), members.contains(&c), "{c:?}");
        }
        for pattern in [
            NAME,
            NOT_BLANK,
            EXTERNAL_REFERENCE,
            PROMO_CODE,
            OPTIONAL_PROMO_CODE,
        ] {
            assert!(pattern.contains(BLANK), "{pattern}");
        }
    }
}
