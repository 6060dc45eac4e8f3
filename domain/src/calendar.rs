//! The `Calendar` aggregate: one resource's bookings and blocks on one
//! clinic-local day. It is the consistency boundary against double booking.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::Interval;
use crate::{BlockId, CalendarId, ReservationId};

/// A booking held on the calendar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    /// The reservation that holds the slot.
    pub reservation_id: ReservationId,
    /// Appointment start.
    pub start: DateTime<Utc>,
    /// Appointment end.
    pub end: DateTime<Utc>,
    /// `end` plus the treatment's buffer: the resource is busy until then.
    pub occupied_until: DateTime<Utc>,
}

/// A block: time the resource cannot be booked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Its id (a closure's blocks use the closure id's UUID).
    pub block_id: BlockId,
    /// Start instant.
    pub start: DateTime<Utc>,
    /// End instant (exclusive).
    pub end: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// An emergency block displaces overlapping bookings.
    pub emergency: bool,
}

/// The `Calendar` aggregate state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    /// `None` until the first event.
    pub calendar_id: Option<CalendarId>,
    /// Current bookings (released ones are removed).
    pub bookings: Vec<Booking>,
    /// Blocks.
    pub blocks: Vec<Block>,
}

/// Commands of the `Calendar` aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CalendarCommand {
    /// Hold `[start, end)` plus the buffer for a reservation.
    Reserve {
        /// This calendar's id (recorded on the first event).
        calendar_id: CalendarId,
        /// The reservation.
        reservation_id: ReservationId,
        /// Appointment start.
        start: DateTime<Utc>,
        /// Appointment end.
        end: DateTime<Utc>,
        /// Minutes the resource stays free after `end`.
        buffer_minutes: u32,
        /// The clinic's opening intervals on this calendar's day (UTC); the
        /// appointment `[start, end)` must lie inside one of them.
        opening: Vec<Interval>,
        /// The current time: `start` must not be before it.
        now: DateTime<Utc>,
    },
    /// Free the slot a reservation holds (cancel, reschedule away).
    Release {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// Block a time range. Without `emergency`, refused if it overlaps a
    /// booking; with it, overlapping bookings are displaced.
    Block {
        /// This calendar's id.
        calendar_id: CalendarId,
        /// New block id.
        block_id: BlockId,
        /// Start instant.
        start: DateTime<Utc>,
        /// End instant, after start.
        end: DateTime<Utc>,
        /// Why.
        reason: String,
        /// Displace overlapping bookings instead of refusing.
        emergency: bool,
    },
}

/// Events of the `Calendar` aggregate. Variant names are stored event types: frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CalendarEvent {
    /// A slot was reserved.
    SlotReserved {
        /// Calendar id.
        calendar_id: CalendarId,
        /// The booking.
        booking: Booking,
    },
    /// A slot was released.
    SlotReleased {
        /// The reservation whose slot was freed.
        reservation_id: ReservationId,
    },
    /// A block was added; `displaced` bookings were removed.
    BlockAdded {
        /// Calendar id.
        calendar_id: CalendarId,
        /// The block.
        block: Block,
        /// Reservations displaced by an emergency block.
        displaced: Vec<ReservationId>,
    },
}
