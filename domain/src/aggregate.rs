//! The aggregate types of clinicbook, listed once.
//!
//! [`AggregateKind`], each aggregate's `Aggregate::TYPE`, the store's
//! dispatch from a stored type name to the Rust type ([`with_aggregate!`]),
//! the upcaster registry and the projections' filters all come from the one
//! list below. A new aggregate is one line here (and its module); its
//! stored name is the variant's name and is frozen once events are stored.

macro_rules! aggregates {
    ($d:tt $($kind:ident => $module:ident :: $ty:ident),+ $(,)?) => {
        /// The aggregate types, by their stored names (`Aggregate::TYPE`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AggregateKind {
            $(
                #[doc = concat!("[`crate::", stringify!($module), "::", stringify!($ty), "`].")]
                $kind,
            )+
        }

        impl AggregateKind {
            /// Every kind, in the order the API lists them.
            pub const ALL: &'static [AggregateKind] = &[$(AggregateKind::$kind),+];

            /// The stored type name (`Aggregate::TYPE` of the aggregate).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(AggregateKind::$kind => stringify!($kind),)+
                }
            }
        }

        /// Runs `$body` with the type alias `$A` bound to the aggregate type
        /// of the [`AggregateKind`] `$kind`: the one dispatch from a stored
        /// type name to the Rust type (replay, checks, audit).
        ///
        /// ```
        /// use clinicbook_domain::{with_aggregate, AggregateKind};
        /// use cqrs_es::Aggregate;
        /// let name = with_aggregate!(AggregateKind::Wallet, A => A::TYPE);
        /// assert_eq!(name, "Wallet");
        /// ```
        #[macro_export]
        macro_rules! with_aggregate {
            ($d kind:expr, $d A:ident => $d body:expr) => {
                match $d kind {
                    $(
                        $crate::AggregateKind::$kind => {
                            type $d A = $crate::$module::$ty;
                            $d body
                        }
                    )+
                }
            };
        }
    };
}

aggregates! {$
    Clinic => clinic::Clinic,
    Calendar => calendar::Calendar,
    Reservation => reservation::Reservation,
    Package => package::Package,
    Wallet => wallet::Wallet,
    PromoCode => promo::PromoCode,
    Program => program::Program,
    Patient => patient::Patient,
    Hold => hold::Hold,
    PatientOffers => offers::PatientOffers,
}

impl AggregateKind {
    /// The stored names, comma-separated, for messages.
    #[must_use]
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|kind| kind.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for AggregateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an aggregate type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown aggregate type {0:?}; the aggregate types are {names}", names = AggregateKind::names())]
pub struct UnknownAggregateType(pub String);

impl std::str::FromStr for AggregateKind {
    type Err = UnknownAggregateType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| UnknownAggregateType(s.to_string()))
    }
}

/// The `cqrs_es` glue every aggregate shares, written once: `Aggregate`
/// for `$ty` over its own `decide` (the event a command produces, or none:
/// an event or an `Option` of one) and `evolve` (the state after an
/// event), with `TYPE` from [`AggregateKind`]; and `DomainEvent` for its
/// event enum, whose type is the variant's name (strum's `IntoStaticStr`,
/// as serde's tag) and whose version is [`crate::EVENT_VERSION`], or what
/// `version` answers for an event whose shape changed since.
macro_rules! aggregate {
    ($ty:ident: $command:ty => $event:ty) => {
        $crate::aggregate::aggregate!($ty: $command => $event, version = |_: &$event| $crate::EVENT_VERSION);
    };
    ($ty:ident: $command:ty => $event:ty, version = $version:expr) => {
        impl cqrs_es::Aggregate for $ty {
            const TYPE: &'static str = $crate::AggregateKind::$ty.name();
            type Command = $command;
            type Event = $event;
            type Error = $crate::DomainError;
            type Services = ();

            async fn handle(
                &mut self,
                command: $command,
                _service: &(),
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), $crate::DomainError> {
                if let Some(event) = Option::<$event>::from(self.decide(command)?) {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: $event) {
                self.evolve(event);
            }
        }

        impl cqrs_es::DomainEvent for $event {
            fn event_type(&self) -> String {
                <&'static str>::from(self).to_owned()
            }

            fn event_version(&self) -> String {
                let version: fn(&$event) -> &'static str = $version;
                version(self).to_owned()
            }
        }
    };
}
pub(crate) use aggregate;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use cqrs_es::Aggregate;

    use super::*;

    #[test]
    fn each_kind_names_its_aggregate_and_parses_back() {
        for &kind in AggregateKind::ALL {
            assert_eq!(with_aggregate!(kind, A => A::TYPE), kind.name());
            assert_eq!(kind.name().parse::<AggregateKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(
            AggregateKind::names(),
            "Clinic, Calendar, Reservation, Package, Wallet, PromoCode, Program, Patient, Hold, PatientOffers"
        );
        let unknown = "wallet".parse::<AggregateKind>().unwrap_err();
        assert_eq!(unknown, UnknownAggregateType("wallet".to_string()));
        assert!(unknown
            .to_string()
            .contains("the aggregate types are Clinic,"));
    }
}
