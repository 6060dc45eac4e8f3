//! The webhook event names (API.md) and the stored events they stand for.

/// Every event name a subscription may ask for (`["*"]` is all of them).
pub const EVENT_TYPES: &[&str] = &[
    "reservation.booked",
    "reservation.rescheduled",
    "reservation.cancelled",
    "reservation.checked_in",
    "reservation.completed",
    "reservation.no_show",
    "reservation.displaced",
    "hold.expired",
    "waitlist.offered",
    "reminder.due",
    "wallet.credited",
    "wallet.debited",
    "package.purchased",
    "message.sms",
];

/// The subscription wildcard.
pub const ALL: &str = "*";

/// The name of an SMS text for the clinic's gateway: not a stored event
/// but a message the engine decided to send (the patient messages).
pub const MESSAGE_SMS: &str = "message.sms";

/// The webhook name of a stored event, if it has one.
#[must_use]
pub fn webhook_type(aggregate_type: &str, event_type: &str) -> Option<&'static str> {
    Some(match (aggregate_type, event_type) {
        ("Reservation", "ReservationBooked") => "reservation.booked",
        ("Reservation", "ReservationRescheduled") => "reservation.rescheduled",
        ("Reservation", "ReservationCancelled") => "reservation.cancelled",
        ("Reservation", "CheckedIn") => "reservation.checked_in",
        ("Reservation", "ReservationCompleted") => "reservation.completed",
        ("Reservation", "MarkedNoShow") => "reservation.no_show",
        ("Reservation", "ReservationDisplaced") => "reservation.displaced",
        ("Wallet", "FundsDeposited" | "FundsCredited") => "wallet.credited",
        ("Wallet", "FundsDebited" | "FundsRefunded") => "wallet.debited",
        ("Package", "PackagePurchased") => "package.purchased",
        ("Hold", "HoldExpired") => "hold.expired",
        ("PatientOffers", "OfferOpened") => "waitlist.offered",
        ("Reservation", "ReminderDue") => "reminder.due",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_name_is_a_subscribable_name() {
        let stored = [
            ("Reservation", "ReservationBooked"),
            ("Reservation", "ReservationRescheduled"),
            ("Reservation", "ReservationCancelled"),
            ("Reservation", "CheckedIn"),
            ("Reservation", "ReservationCompleted"),
            ("Reservation", "MarkedNoShow"),
            ("Reservation", "ReservationDisplaced"),
            ("Wallet", "FundsDeposited"),
            ("Wallet", "FundsDebited"),
            ("Package", "PackagePurchased"),
            ("Hold", "HoldExpired"),
            ("PatientOffers", "OfferOpened"),
            ("Reservation", "ReminderDue"),
        ];
        for (ty, event) in stored {
            let name = webhook_type(ty, event).unwrap_or_default();
            assert!(EVENT_TYPES.contains(&name), "{ty}/{event}");
        }
        assert_eq!(webhook_type("Patient", "PatientRegistered"), None);
        assert_eq!(webhook_type("Clinic", "ReservationBooked"), None);
    }
}
