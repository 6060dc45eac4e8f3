//! The `Calendar` aggregate: one resource's bookings, holds and blocks on
//! one clinic-local day. It is the consistency boundary against double
//! booking: a hold takes its time by the same overlap rule as a booking
//! (buffer included), so holding, booking and rescheduling race safely.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::Interval;
use crate::{BlockId, CalendarId, DomainError, HoldId, ReservationId};

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

/// A hold on the calendar: the slot is taken for a while (a patient pays
/// or decides) by a `Hold`, then booked, released or expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSlot {
    /// The hold that takes the slot.
    pub hold_id: HoldId,
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
    /// Current holds (booked, released and expired ones are removed).
    #[serde(default)]
    pub holds: Vec<HeldSlot>,
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
    /// Hold `[start, end)` plus the buffer for a hold: the same checks as
    /// `Reserve`.
    Hold {
        /// This calendar's id (recorded on the first event).
        calendar_id: CalendarId,
        /// The hold.
        hold_id: HoldId,
        /// Appointment start.
        start: DateTime<Utc>,
        /// Appointment end.
        end: DateTime<Utc>,
        /// Minutes the resource stays free after `end`.
        buffer_minutes: u32,
        /// The clinic's opening intervals on this calendar's day (UTC).
        opening: Vec<Interval>,
        /// The current time: `start` must not be before it.
        now: DateTime<Utc>,
    },
    /// Free the slot a hold takes (released or expired); nothing to do
    /// when the hold takes none here.
    ReleaseHold {
        /// The hold.
        hold_id: HoldId,
    },
    /// The held slot becomes a reservation's booking: the same interval,
    /// in one event, so nobody can take it in between.
    BookHeld {
        /// The hold.
        hold_id: HoldId,
        /// The reservation that books it.
        reservation_id: ReservationId,
    },
    /// Block a time range. Without `emergency`, refused if it overlaps a
    /// booking; with it, overlapping bookings are displaced. Refused while
    /// it overlaps a hold (release the hold first).
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
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
    /// A slot was held.
    SlotHeld {
        /// Calendar id.
        calendar_id: CalendarId,
        /// The hold.
        hold: HeldSlot,
    },
    /// A held slot was freed (the hold was released or expired).
    HeldSlotReleased {
        /// The hold.
        hold_id: HoldId,
    },
    /// A held slot became a booking.
    HeldSlotBooked {
        /// The hold whose slot it was.
        hold_id: HoldId,
        /// The booking, over the same interval.
        booking: Booking,
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

impl Booking {
    /// The appointment itself, `[start, end)`.
    pub fn appointment(&self) -> Interval {
        Interval {
            start: self.start,
            end: self.end,
        }
    }

    /// The time the resource is busy, buffer included: `[start, occupied_until)`.
    pub fn occupied(&self) -> Interval {
        Interval {
            start: self.start,
            end: self.occupied_until,
        }
    }
}

impl HeldSlot {
    /// The time the resource is busy, buffer included: `[start, occupied_until)`.
    pub fn occupied(&self) -> Interval {
        Interval {
            start: self.start,
            end: self.occupied_until,
        }
    }
}

impl Block {
    /// The blocked time, `[start, end)`.
    pub fn interval(&self) -> Interval {
        Interval {
            start: self.start,
            end: self.end,
        }
    }
}

impl Calendar {
    /// The booking a reservation holds on this calendar.
    pub fn booking(&self, reservation_id: ReservationId) -> Option<&Booking> {
        self.bookings
            .iter()
            .find(|b| b.reservation_id == reservation_id)
    }

    /// The bookings whose busy time (buffer included) overlaps `interval`,
    /// in start order.
    pub fn overlapping(&self, interval: &Interval) -> Vec<&Booking> {
        self.bookings
            .iter()
            .filter(|b| b.occupied().overlaps(interval))
            .collect()
    }

    /// The slot a hold takes on this calendar.
    pub fn hold(&self, hold_id: HoldId) -> Option<&HeldSlot> {
        self.holds.iter().find(|h| h.hold_id == hold_id)
    }

    /// The holds whose busy time (buffer included) overlaps `interval`.
    pub fn overlapping_holds(&self, interval: &Interval) -> Vec<&HeldSlot> {
        self.holds
            .iter()
            .filter(|h| h.occupied().overlaps(interval))
            .collect()
    }

    /// True when no booking, no hold (buffers included) and no block
    /// overlaps `interval`.
    pub fn is_free(&self, interval: &Interval) -> bool {
        self.overlapping(interval).is_empty()
            && self.overlapping_holds(interval).is_empty()
            && !self.blocks.iter().any(|b| b.interval().overlaps(interval))
    }

    /// The busy time `[start, end + buffer)` of an appointment, checked
    /// against `now` and the opening as `Reserve` and `Hold` check it.
    ///
    /// # Errors
    /// `InvalidInput` (reversed interval), `InconsistentInput` (too far in
    /// the future), `InThePast`, `OutsideOpeningHours`.
    fn busy_time(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        buffer_minutes: u32,
        opening: &[Interval],
        now: DateTime<Utc>,
    ) -> Result<Interval, DomainError> {
        let appointment = Interval::new(start, end)?;
        let occupied_until = end
            .checked_add_signed(Duration::minutes(i64::from(buffer_minutes)))
            .ok_or_else(|| DomainError::inconsistent("start", "is too far in the future"))?;
        if start < now {
            return Err(DomainError::InThePast);
        }
        if !opening.iter().any(|open| open.contains(&appointment)) {
            return Err(DomainError::OutsideOpeningHours);
        }
        Ok(Interval {
            start,
            end: occupied_until,
        })
    }

    /// Checks `command` against the current state and returns the event it
    /// produces, or `None` when it repeats what the calendar already holds
    /// (the same reservation in the same slot, the same block): a retried
    /// command succeeds without writing anything.
    ///
    /// Reserve: the appointment `[start, end)` must start at or after `now`
    /// and lie inside one opening interval; the resource is then busy for
    /// `[start, end + buffer)`, which must not overlap another booking's busy
    /// time nor a block. A reservation holds at most one slot per calendar:
    /// to move it within the day, release it first.
    ///
    /// Hold: the checks of Reserve, for a hold; repeated for the same slot
    /// it is a no-op. ReleaseHold frees a held slot (a no-op when the hold
    /// takes none here). BookHeld turns a held slot into the booking of a
    /// reservation over the same interval.
    ///
    /// Block: refused while a booking's busy time overlaps it, unless it is an
    /// emergency, which displaces those bookings (listed in start order);
    /// refused while a hold overlaps it, emergency or not.
    ///
    /// # Errors
    /// `InvalidInput` for an empty or reversed interval, an oversized buffer
    /// or a command for another calendar; `InThePast`;
    /// `OutsideOpeningHours`; `SlotUnavailable` for any overlap (or a
    /// reservation already holding another slot here); `NotFound` when
    /// releasing a reservation that holds no slot here; `AlreadyExists` for
    /// a block id used for another block.
    pub fn decide(&self, command: CalendarCommand) -> Result<Option<CalendarEvent>, DomainError> {
        match command {
            CalendarCommand::Reserve {
                calendar_id,
                reservation_id,
                start,
                end,
                buffer_minutes,
                opening,
                now,
            } => {
                self.check_id(calendar_id)?;
                let appointment = Interval::new(start, end)?;
                let occupied_until = end
                    .checked_add_signed(Duration::minutes(i64::from(buffer_minutes)))
                    .ok_or_else(|| {
                        DomainError::inconsistent("start", "is too far in the future")
                    })?;
                let booking = Booking {
                    reservation_id,
                    start,
                    end,
                    occupied_until,
                };
                if let Some(held) = self.booking(reservation_id) {
                    return if *held == booking {
                        Ok(None)
                    } else {
                        Err(DomainError::SlotUnavailable)
                    };
                }
                if start < now {
                    return Err(DomainError::InThePast);
                }
                if !opening.iter().any(|open| open.contains(&appointment)) {
                    return Err(DomainError::OutsideOpeningHours);
                }
                if !self.is_free(&booking.occupied()) {
                    return Err(DomainError::SlotUnavailable);
                }
                Ok(Some(CalendarEvent::SlotReserved {
                    calendar_id,
                    booking,
                }))
            }
            CalendarCommand::Hold {
                calendar_id,
                hold_id,
                start,
                end,
                buffer_minutes,
                opening,
                now,
            } => {
                self.check_id(calendar_id)?;
                if let Some(held) = self.hold(hold_id) {
                    let occupied_until =
                        end.checked_add_signed(Duration::minutes(i64::from(buffer_minutes)));
                    return if held.start == start
                        && held.end == end
                        && Some(held.occupied_until) == occupied_until
                    {
                        Ok(None)
                    } else {
                        Err(DomainError::SlotUnavailable)
                    };
                }
                let busy = Self::busy_time(start, end, buffer_minutes, &opening, now)?;
                if !self.is_free(&busy) {
                    return Err(DomainError::SlotUnavailable);
                }
                Ok(Some(CalendarEvent::SlotHeld {
                    calendar_id,
                    hold: HeldSlot {
                        hold_id,
                        start,
                        end,
                        occupied_until: busy.end,
                    },
                }))
            }
            CalendarCommand::ReleaseHold { hold_id } => Ok(self
                .hold(hold_id)
                .map(|_| CalendarEvent::HeldSlotReleased { hold_id })),
            CalendarCommand::BookHeld {
                hold_id,
                reservation_id,
            } => {
                let Some(held) = self.hold(hold_id) else {
                    return Err(DomainError::SlotUnavailable);
                };
                if self.booking(reservation_id).is_some() {
                    return Err(DomainError::SlotUnavailable);
                }
                Ok(Some(CalendarEvent::HeldSlotBooked {
                    hold_id,
                    booking: Booking {
                        reservation_id,
                        start: held.start,
                        end: held.end,
                        occupied_until: held.occupied_until,
                    },
                }))
            }
            CalendarCommand::Release { reservation_id } => {
                if self.booking(reservation_id).is_none() {
                    return Err(DomainError::not_found(format!(
                        "reservation {reservation_id} on this calendar"
                    )));
                }
                Ok(Some(CalendarEvent::SlotReleased { reservation_id }))
            }
            CalendarCommand::Block {
                calendar_id,
                block_id,
                start,
                end,
                reason,
                emergency,
            } => {
                self.check_id(calendar_id)?;
                let interval = Interval::new(start, end)?;
                let block = Block {
                    block_id,
                    start,
                    end,
                    reason,
                    emergency,
                };
                if let Some(existing) = self.blocks.iter().find(|b| b.block_id == block_id) {
                    return if *existing == block {
                        Ok(None)
                    } else {
                        Err(DomainError::AlreadyExists {
                            what: format!("block {block_id}"),
                        })
                    };
                }
                let mut overlapping = self.overlapping(&interval);
                if (!overlapping.is_empty() && !emergency)
                    || !self.overlapping_holds(&interval).is_empty()
                {
                    return Err(DomainError::SlotUnavailable);
                }
                overlapping.sort_by_key(|b| (b.start, b.reservation_id));
                Ok(Some(CalendarEvent::BlockAdded {
                    calendar_id,
                    block,
                    displaced: overlapping.iter().map(|b| b.reservation_id).collect(),
                }))
            }
        }
    }

    /// A command names the calendar it is meant for; once the calendar has an
    /// id, a command for another one is a caller's bug, refused.
    fn check_id(&self, calendar_id: CalendarId) -> Result<(), DomainError> {
        match self.calendar_id {
            Some(id) if id != calendar_id => Err(DomainError::invalid(
                "calendar_id",
                format!("this is calendar {id}, not {calendar_id}"),
            )),
            _ => Ok(()),
        }
    }
}

impl Calendar {
    /// The state after `event` (the fold of every reader).
    fn evolve(&mut self, event: CalendarEvent) {
        match event {
            CalendarEvent::SlotReserved {
                calendar_id,
                booking,
            } => {
                self.calendar_id = Some(calendar_id);
                let at = self.bookings.partition_point(|b| b.start <= booking.start);
                self.bookings.insert(at, booking);
            }
            CalendarEvent::SlotReleased { reservation_id } => {
                self.bookings.retain(|b| b.reservation_id != reservation_id);
            }
            CalendarEvent::SlotHeld { calendar_id, hold } => {
                self.calendar_id = Some(calendar_id);
                let at = self.holds.partition_point(|h| h.start <= hold.start);
                self.holds.insert(at, hold);
            }
            CalendarEvent::HeldSlotReleased { hold_id } => {
                self.holds.retain(|h| h.hold_id != hold_id);
            }
            CalendarEvent::HeldSlotBooked { hold_id, booking } => {
                self.holds.retain(|h| h.hold_id != hold_id);
                let at = self.bookings.partition_point(|b| b.start <= booking.start);
                self.bookings.insert(at, booking);
            }
            CalendarEvent::BlockAdded {
                calendar_id,
                block,
                displaced,
            } => {
                self.calendar_id = Some(calendar_id);
                self.bookings
                    .retain(|b| !displaced.contains(&b.reservation_id));
                let at = self.blocks.partition_point(|b| b.start <= block.start);
                self.blocks.insert(at, block);
            }
        }
    }
}

crate::aggregate::aggregate!(Calendar: CalendarCommand => CalendarEvent);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a broken fixture should fail the test loudly
mod tests {
    use cqrs_es::test::TestFramework;
    use proptest::prelude::*;

    use cqrs_es::{Aggregate, DomainEvent};

    use super::*;
    use crate::ResourceId;

    type Given = TestFramework<Calendar>;

    /// 2026-06-01 08:00Z plus `minutes`.
    fn at(minutes: i64) -> DateTime<Utc> {
        "2026-06-01T08:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minutes)
    }

    fn cal() -> CalendarId {
        CalendarId {
            resource_id: ResourceId(uuid::Uuid::from_u128(7)),
            date: "2026-06-01".parse().unwrap(),
        }
    }

    fn other_cal() -> CalendarId {
        CalendarId {
            date: "2026-06-02".parse().unwrap(),
            ..cal()
        }
    }

    fn rid(n: u128) -> ReservationId {
        ReservationId(uuid::Uuid::from_u128(n))
    }

    fn bid(n: u128) -> BlockId {
        BlockId(uuid::Uuid::from_u128(1000 + n))
    }

    /// Open 08:00–12:00Z and 13:00–17:00Z (minutes 0–240 and 300–540).
    fn opening() -> Vec<Interval> {
        vec![
            Interval::new(at(0), at(240)).unwrap(),
            Interval::new(at(300), at(540)).unwrap(),
        ]
    }

    /// Reserve minutes `[start, end)` plus `buffer`, at minute -60.
    fn reserve(n: u128, start: i64, end: i64, buffer: u32) -> CalendarCommand {
        CalendarCommand::Reserve {
            calendar_id: cal(),
            reservation_id: rid(n),
            start: at(start),
            end: at(end),
            buffer_minutes: buffer,
            opening: opening(),
            now: at(-60),
        }
    }

    fn booking(n: u128, start: i64, end: i64, buffer: i64) -> Booking {
        Booking {
            reservation_id: rid(n),
            start: at(start),
            end: at(end),
            occupied_until: at(end + buffer),
        }
    }

    fn reserved(n: u128, start: i64, end: i64, buffer: i64) -> CalendarEvent {
        CalendarEvent::SlotReserved {
            calendar_id: cal(),
            booking: booking(n, start, end, buffer),
        }
    }

    fn block(n: u128, start: i64, end: i64, emergency: bool) -> Block {
        Block {
            block_id: bid(n),
            start: at(start),
            end: at(end),
            reason: "laser service".to_string(),
            emergency,
        }
    }

    fn block_cmd(b: Block) -> CalendarCommand {
        CalendarCommand::Block {
            calendar_id: cal(),
            block_id: b.block_id,
            start: b.start,
            end: b.end,
            reason: b.reason,
            emergency: b.emergency,
        }
    }

    fn blocked(b: Block, displaced: Vec<ReservationId>) -> CalendarEvent {
        CalendarEvent::BlockAdded {
            calendar_id: cal(),
            block: b,
            displaced,
        }
    }

    fn state(events: Vec<CalendarEvent>) -> Calendar {
        let mut calendar = Calendar::default();
        for event in events {
            calendar.apply(event);
        }
        calendar
    }

    // --- Reserve ----------------------------------------------------------

    #[test]
    fn reserve_holds_the_appointment_and_its_buffer() {
        Given::with(())
            .given_no_previous_events()
            .when(reserve(1, 60, 120, 15))
            .then_expect_events(vec![reserved(1, 60, 120, 15)]);
        let calendar = state(vec![reserved(1, 60, 120, 15)]);
        assert_eq!(calendar.calendar_id, Some(cal()));
        assert_eq!(
            calendar.booking(rid(1)).map(|b| b.occupied_until),
            Some(at(135))
        );
    }

    #[test]
    fn reserve_refuses_a_start_in_the_past() {
        let mut command = reserve(1, 60, 120, 0);
        if let CalendarCommand::Reserve { now, .. } = &mut command {
            *now = at(61);
        }
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(DomainError::InThePast);
    }

    #[test]
    fn reserve_accepts_a_start_right_now() {
        let mut command = reserve(1, 60, 120, 0);
        if let CalendarCommand::Reserve { now, .. } = &mut command {
            *now = at(60);
        }
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_events(vec![reserved(1, 60, 120, 0)]);
    }

    #[test]
    fn reserve_refuses_an_end_not_after_the_start() {
        for end in [60, 30] {
            Given::with(())
                .given_no_previous_events()
                .when(reserve(1, 60, end, 0))
                .then_expect_error(DomainError::inconsistent("end", "must be after start"));
        }
    }

    #[test]
    fn reserve_refuses_anything_not_inside_one_opening_interval() {
        // Before opening, across closing, across the lunch break, after closing.
        for (start, end) in [(-30, 30), (210, 270), (230, 310), (540, 600)] {
            Given::with(())
                .given_no_previous_events()
                .when(reserve(1, start, end, 0))
                .then_expect_error(DomainError::OutsideOpeningHours);
        }
        let mut closed = reserve(1, 60, 120, 0);
        if let CalendarCommand::Reserve { opening, .. } = &mut closed {
            opening.clear();
        }
        Given::with(())
            .given_no_previous_events()
            .when(closed)
            .then_expect_error(DomainError::OutsideOpeningHours);
    }

    #[test]
    fn reserve_accepts_exactly_the_opening_interval_and_a_buffer_past_closing() {
        Given::with(())
            .given_no_previous_events()
            .when(reserve(1, 0, 240, 30))
            .then_expect_events(vec![reserved(1, 0, 240, 30)]);
    }

    #[test]
    fn reserve_refuses_an_overlap_with_another_booking() {
        Given::with(())
            .given(vec![reserved(1, 60, 120, 0)])
            .when(reserve(2, 90, 150, 0))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn reserve_refuses_a_start_inside_another_bookings_buffer() {
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(reserve(2, 130, 160, 0))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn reserve_refuses_when_its_own_buffer_reaches_the_next_booking() {
        Given::with(())
            .given(vec![reserved(1, 120, 180, 0)])
            .when(reserve(2, 60, 110, 15))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn reserve_accepts_a_start_when_the_buffer_ends() {
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(reserve(2, 135, 165, 15))
            .then_expect_events(vec![reserved(2, 135, 165, 15)]);
    }

    #[test]
    fn reserve_refuses_an_overlap_with_a_block() {
        Given::with(())
            .given(vec![blocked(block(1, 100, 200, false), vec![])])
            .when(reserve(1, 60, 110, 0))
            .then_expect_error(DomainError::SlotUnavailable);
        // The buffer counts against blocks too.
        Given::with(())
            .given(vec![blocked(block(1, 100, 200, false), vec![])])
            .when(reserve(1, 60, 90, 15))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn reserve_accepts_a_slot_touching_a_block() {
        Given::with(())
            .given(vec![blocked(block(1, 100, 200, false), vec![])])
            .when(reserve(1, 60, 90, 10))
            .then_expect_events(vec![reserved(1, 60, 90, 10)]);
    }

    #[test]
    fn reserve_repeated_for_the_same_slot_is_a_no_op() {
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(reserve(1, 60, 120, 15))
            .then_expect_events(vec![]);
    }

    #[test]
    fn reserve_refuses_a_second_slot_for_the_same_reservation() {
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(reserve(1, 300, 360, 15))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn reserve_refuses_a_command_for_another_calendar() {
        let mut command = reserve(2, 300, 360, 0);
        if let CalendarCommand::Reserve { calendar_id, .. } = &mut command {
            *calendar_id = other_cal();
        }
        Given::with(())
            .given(vec![reserved(1, 60, 120, 0)])
            .when(command)
            .then_expect_error(DomainError::invalid(
                "calendar_id",
                format!("this is calendar {}, not {}", cal(), other_cal()),
            ));
    }

    // --- Holds ------------------------------------------------------------

    fn hid(n: u128) -> HoldId {
        HoldId(uuid::Uuid::from_u128(2000 + n))
    }

    /// Hold minutes `[start, end)` plus `buffer`, at minute -60.
    fn hold_cmd(n: u128, start: i64, end: i64, buffer: u32) -> CalendarCommand {
        CalendarCommand::Hold {
            calendar_id: cal(),
            hold_id: hid(n),
            start: at(start),
            end: at(end),
            buffer_minutes: buffer,
            opening: opening(),
            now: at(-60),
        }
    }

    fn held_slot(n: u128, start: i64, end: i64, buffer: i64) -> HeldSlot {
        HeldSlot {
            hold_id: hid(n),
            start: at(start),
            end: at(end),
            occupied_until: at(end + buffer),
        }
    }

    fn held(n: u128, start: i64, end: i64, buffer: i64) -> CalendarEvent {
        CalendarEvent::SlotHeld {
            calendar_id: cal(),
            hold: held_slot(n, start, end, buffer),
        }
    }

    #[test]
    fn hold_takes_the_appointment_and_its_buffer() {
        Given::with(())
            .given_no_previous_events()
            .when(hold_cmd(1, 60, 120, 15))
            .then_expect_events(vec![held(1, 60, 120, 15)]);
    }

    #[test]
    fn a_hold_blocks_bookings_and_holds_by_the_same_overlap_rule() {
        // Held 60–120 with a 15-minute buffer: busy until 135.
        let history = vec![held(1, 60, 120, 15)];
        for command in [
            reserve(2, 130, 160, 0),
            reserve(2, 30, 61, 0),
            hold_cmd(2, 134, 160, 0),
            hold_cmd(2, 0, 70, 0),
        ] {
            Given::with(())
                .given(history.clone())
                .when(command)
                .then_expect_error(DomainError::SlotUnavailable);
        }
        Given::with(())
            .given(history.clone())
            .when(reserve(2, 135, 160, 0))
            .then_expect_events(vec![reserved(2, 135, 160, 0)]);
        // A booking's buffer blocks a hold too.
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(hold_cmd(2, 130, 160, 0))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn hold_follows_the_rules_of_reserve() {
        Given::with(())
            .given_no_previous_events()
            .when(hold_cmd(1, 230, 260, 0))
            .then_expect_error(DomainError::OutsideOpeningHours);
        let mut past = hold_cmd(1, 60, 90, 0);
        if let CalendarCommand::Hold { now, .. } = &mut past {
            *now = at(61);
        }
        Given::with(())
            .given_no_previous_events()
            .when(past)
            .then_expect_error(DomainError::InThePast);
        Given::with(())
            .given(vec![blocked(block(1, 100, 200, false), vec![])])
            .when(hold_cmd(1, 60, 110, 0))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn hold_repeated_is_a_no_op_and_elsewhere_refused() {
        Given::with(())
            .given(vec![held(1, 60, 120, 15)])
            .when(hold_cmd(1, 60, 120, 15))
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![held(1, 60, 120, 15)])
            .when(hold_cmd(1, 300, 330, 15))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn release_hold_frees_the_slot_at_once_and_twice_is_a_no_op() {
        Given::with(())
            .given(vec![held(1, 60, 120, 15)])
            .when(CalendarCommand::ReleaseHold { hold_id: hid(1) })
            .then_expect_events(vec![CalendarEvent::HeldSlotReleased { hold_id: hid(1) }]);
        let released = vec![
            held(1, 60, 120, 15),
            CalendarEvent::HeldSlotReleased { hold_id: hid(1) },
        ];
        Given::with(())
            .given(released.clone())
            .when(CalendarCommand::ReleaseHold { hold_id: hid(1) })
            .then_expect_events(vec![]);
        Given::with(())
            .given(released)
            .when(reserve(2, 60, 120, 15))
            .then_expect_events(vec![reserved(2, 60, 120, 15)]);
    }

    #[test]
    fn book_held_turns_the_hold_into_a_booking_of_the_same_interval() {
        Given::with(())
            .given(vec![held(1, 60, 120, 15)])
            .when(CalendarCommand::BookHeld {
                hold_id: hid(1),
                reservation_id: rid(5),
            })
            .then_expect_events(vec![CalendarEvent::HeldSlotBooked {
                hold_id: hid(1),
                booking: booking(5, 60, 120, 15),
            }]);
        let calendar = state(vec![
            held(1, 60, 120, 15),
            CalendarEvent::HeldSlotBooked {
                hold_id: hid(1),
                booking: booking(5, 60, 120, 15),
            },
        ]);
        assert!(calendar.holds.is_empty());
        assert_eq!(calendar.bookings, vec![booking(5, 60, 120, 15)]);
    }

    #[test]
    fn book_held_refuses_a_hold_not_on_the_calendar() {
        Given::with(())
            .given(vec![
                held(1, 60, 120, 15),
                CalendarEvent::HeldSlotReleased { hold_id: hid(1) },
            ])
            .when(CalendarCommand::BookHeld {
                hold_id: hid(1),
                reservation_id: rid(5),
            })
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn blocks_are_refused_over_a_hold_even_in_an_emergency() {
        for emergency in [false, true] {
            Given::with(())
                .given(vec![held(1, 60, 120, 15)])
                .when(block_cmd(block(1, 125, 200, emergency)))
                .then_expect_error(DomainError::SlotUnavailable);
        }
    }

    // --- Release ----------------------------------------------------------

    #[test]
    fn release_frees_the_slot() {
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(CalendarCommand::Release {
                reservation_id: rid(1),
            })
            .then_expect_events(vec![CalendarEvent::SlotReleased {
                reservation_id: rid(1),
            }]);
        Given::with(())
            .given(vec![
                reserved(1, 60, 120, 15),
                CalendarEvent::SlotReleased {
                    reservation_id: rid(1),
                },
            ])
            .when(reserve(2, 60, 120, 15))
            .then_expect_events(vec![reserved(2, 60, 120, 15)]);
    }

    #[test]
    fn release_refuses_a_reservation_not_on_the_calendar() {
        let not_here = DomainError::not_found(format!("reservation {} on this calendar", rid(2)));
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(CalendarCommand::Release {
                reservation_id: rid(2),
            })
            .then_expect_error(not_here.clone());
        Given::with(())
            .given_no_previous_events()
            .when(CalendarCommand::Release {
                reservation_id: rid(2),
            })
            .then_expect_error(not_here);
    }

    // --- Block ------------------------------------------------------------

    #[test]
    fn block_a_free_range() {
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(block_cmd(block(1, 135, 200, false)))
            .then_expect_events(vec![blocked(block(1, 135, 200, false), vec![])]);
    }

    #[test]
    fn block_refuses_an_end_not_after_the_start() {
        Given::with(())
            .given_no_previous_events()
            .when(block_cmd(block(1, 100, 100, false)))
            .then_expect_error(DomainError::inconsistent("end", "must be after start"));
    }

    #[test]
    fn block_refuses_to_overlap_a_booking_without_emergency() {
        // Only the buffer (120–135) overlaps.
        Given::with(())
            .given(vec![reserved(1, 60, 120, 15)])
            .when(block_cmd(block(1, 130, 200, false)))
            .then_expect_error(DomainError::SlotUnavailable);
    }

    #[test]
    fn emergency_block_displaces_overlapping_bookings_in_start_order() {
        let history = vec![
            reserved(3, 180, 200, 0),
            reserved(1, 0, 30, 0),
            reserved(2, 60, 120, 15),
        ];
        Given::with(())
            .given(history.clone())
            .when(block_cmd(block(1, 100, 190, true)))
            .then_expect_events(vec![blocked(
                block(1, 100, 190, true),
                vec![rid(2), rid(3)],
            )]);
        let mut calendar = state(history);
        calendar.apply(blocked(block(1, 100, 190, true), vec![rid(2), rid(3)]));
        assert_eq!(calendar.bookings, vec![booking(1, 0, 30, 0)]);
        assert_eq!(calendar.blocks, vec![block(1, 100, 190, true)]);
    }

    #[test]
    fn emergency_block_without_overlap_displaces_nothing() {
        Given::with(())
            .given(vec![reserved(1, 60, 120, 0)])
            .when(block_cmd(block(1, 120, 200, true)))
            .then_expect_events(vec![blocked(block(1, 120, 200, true), vec![])]);
    }

    #[test]
    fn blocks_may_overlap_each_other() {
        Given::with(())
            .given(vec![blocked(block(1, 100, 200, false), vec![])])
            .when(block_cmd(block(2, 150, 250, false)))
            .then_expect_events(vec![blocked(block(2, 150, 250, false), vec![])]);
    }

    #[test]
    fn block_repeated_is_a_no_op_and_a_reused_id_is_refused() {
        let history = vec![blocked(block(1, 100, 200, true), vec![])];
        Given::with(())
            .given(history.clone())
            .when(block_cmd(block(1, 100, 200, true)))
            .then_expect_events(vec![]);
        Given::with(())
            .given(history)
            .when(block_cmd(block(1, 100, 300, true)))
            .then_expect_error(DomainError::AlreadyExists {
                what: format!("block {}", bid(1)),
            });
    }

    #[test]
    fn block_refuses_a_command_for_another_calendar() {
        let mut command = block_cmd(block(1, 100, 200, false));
        if let CalendarCommand::Block { calendar_id, .. } = &mut command {
            *calendar_id = other_cal();
        }
        let result = Given::with(())
            .given(vec![reserved(1, 0, 30, 0)])
            .when(command)
            .inspect_result();
        assert!(
            matches!(result, Err(DomainError::InvalidInput { field, .. }) if field == "calendar_id")
        );
    }

    // --- Queries and event names ------------------------------------------

    #[test]
    fn queries_use_the_busy_time() {
        let calendar = state(vec![
            reserved(1, 60, 120, 15),
            reserved(2, 200, 230, 0),
            blocked(block(1, 300, 360, false), vec![]),
        ]);
        let range = |a, b| Interval::new(at(a), at(b)).unwrap();
        let ids = |r: Interval| {
            calendar
                .overlapping(&r)
                .iter()
                .map(|b| b.reservation_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(range(130, 210)), vec![rid(1), rid(2)]);
        assert_eq!(ids(range(135, 200)), vec![]);
        assert!(calendar.is_free(&range(135, 200)));
        assert!(!calendar.is_free(&range(134, 136)));
        assert!(!calendar.is_free(&range(330, 340)));
        assert!(calendar.is_free(&range(360, 400)));
        assert_eq!(calendar.booking(rid(2)), Some(&booking(2, 200, 230, 0)));
        assert_eq!(calendar.booking(rid(9)), None);
    }

    #[test]
    fn event_types_are_the_variant_names() {
        let events = [
            (reserved(1, 0, 30, 0), "SlotReserved"),
            (
                CalendarEvent::SlotReleased {
                    reservation_id: rid(1),
                },
                "SlotReleased",
            ),
            (blocked(block(1, 0, 30, true), vec![rid(1)]), "BlockAdded"),
        ];
        for (event, name) in events {
            assert_eq!(event.event_type(), name);
            assert_eq!(event.event_version(), crate::EVENT_VERSION);
        }
        assert_eq!(Calendar::TYPE, "Calendar");
    }

    // --- Property: no double booking ---------------------------------------

    /// One random command on a calendar open all day (minutes from 00:00Z).
    #[derive(Clone, Debug)]
    enum Op {
        Reserve {
            n: u8,
            start: i64,
            len: i64,
            buffer: u32,
        },
        Release {
            n: u8,
        },
        Block {
            n: u8,
            start: i64,
            len: i64,
            emergency: bool,
        },
        Hold {
            n: u8,
            start: i64,
            len: i64,
            buffer: u32,
        },
        ReleaseHold {
            n: u8,
        },
        BookHeld {
            n: u8,
            reservation: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..12u8, 0..1440i64, 5..=240i64, 0..=60u32)
                .prop_map(|(n, start, len, buffer)| Op::Reserve { n, start, len, buffer }),
            2 => (0..12u8).prop_map(|n| Op::Release { n }),
            1 => (0..4u8, 0..1440i64, 5..=180i64, any::<bool>())
                .prop_map(|(n, start, len, emergency)| Op::Block { n, start, len, emergency }),
            3 => (0..8u8, 0..1440i64, 5..=240i64, 0..=60u32)
                .prop_map(|(n, start, len, buffer)| Op::Hold { n, start, len, buffer }),
            1 => (0..8u8).prop_map(|n| Op::ReleaseHold { n }),
            1 => (0..8u8, 0..12u8).prop_map(|(n, reservation)| Op::BookHeld { n, reservation }),
        ]
    }

    fn midnight(minutes: i64) -> DateTime<Utc> {
        at(minutes - 8 * 60)
    }

    fn whole_day() -> Interval {
        Interval::new(midnight(0), midnight(1440)).unwrap()
    }

    fn command(op: &Op) -> CalendarCommand {
        match *op {
            Op::Reserve {
                n,
                start,
                len,
                buffer,
            } => CalendarCommand::Reserve {
                calendar_id: cal(),
                reservation_id: rid(u128::from(n)),
                start: midnight(start),
                end: midnight(start + len),
                buffer_minutes: buffer,
                opening: vec![whole_day()],
                now: midnight(0),
            },
            Op::Release { n } => CalendarCommand::Release {
                reservation_id: rid(u128::from(n)),
            },
            Op::Block {
                n,
                start,
                len,
                emergency,
            } => CalendarCommand::Block {
                calendar_id: cal(),
                block_id: bid(u128::from(n)),
                start: midnight(start),
                end: midnight(start + len),
                reason: "random".to_string(),
                emergency,
            },
            Op::Hold {
                n,
                start,
                len,
                buffer,
            } => CalendarCommand::Hold {
                calendar_id: cal(),
                hold_id: hid(u128::from(n)),
                start: midnight(start),
                end: midnight(start + len),
                buffer_minutes: buffer,
                opening: vec![whole_day()],
                now: midnight(0),
            },
            Op::ReleaseHold { n } => CalendarCommand::ReleaseHold {
                hold_id: hid(u128::from(n)),
            },
            Op::BookHeld { n, reservation } => CalendarCommand::BookHeld {
                hold_id: hid(u128::from(n)),
                reservation_id: rid(u128::from(reservation)),
            },
        }
    }

    fn check_invariants(calendar: &Calendar) -> Result<(), TestCaseError> {
        // Every busy interval, of any kind: bookings and holds.
        let busy: Vec<(String, Interval)> = calendar
            .bookings
            .iter()
            .map(|b| (format!("{b:?}"), b.occupied()))
            .chain(
                calendar
                    .holds
                    .iter()
                    .map(|h| (format!("{h:?}"), h.occupied())),
            )
            .collect();
        for (i, (a, x)) in busy.iter().enumerate() {
            for (b, y) in &busy[i + 1..] {
                prop_assert!(!x.overlaps(y), "{a} overlaps {b}");
            }
            for block in &calendar.blocks {
                prop_assert!(!x.overlaps(&block.interval()), "{a} overlaps {block:?}");
            }
        }
        for (i, a) in calendar.holds.iter().enumerate() {
            let appointment = Interval {
                start: a.start,
                end: a.end,
            };
            prop_assert!(whole_day().contains(&appointment), "{a:?} outside opening");
            for b in &calendar.holds[i + 1..] {
                prop_assert_ne!(a.hold_id, b.hold_id);
            }
        }
        for (i, a) in calendar.bookings.iter().enumerate() {
            prop_assert!(
                whole_day().contains(&a.appointment()),
                "{a:?} outside opening"
            );
            for b in &calendar.bookings[i + 1..] {
                prop_assert!(
                    !a.occupied().overlaps(&b.occupied()),
                    "{a:?} overlaps {b:?}"
                );
                prop_assert_ne!(a.reservation_id, b.reservation_id);
            }
            for block in &calendar.blocks {
                prop_assert!(
                    !a.occupied().overlaps(&block.interval()),
                    "{a:?} overlaps {block:?}"
                );
            }
        }
        prop_assert!(calendar
            .bookings
            .windows(2)
            .all(|w| w[0].start <= w[1].start));
        Ok(())
    }

    /// What a Reserve or a Hold of minutes `[start, start + len)` plus
    /// `buffer` must answer (events written, or the refusal), given the
    /// slot the same reservation or hold takes already (`held`).
    fn placement(
        before: &Calendar,
        held: Option<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)>,
        start: i64,
        len: i64,
        buffer: u32,
    ) -> Result<usize, DomainError> {
        let wanted = Interval::new(midnight(start), midnight(start + len)).unwrap();
        let busy =
            Interval::new(midnight(start), midnight(start + len + i64::from(buffer))).unwrap();
        match held {
            Some(held) if held == (wanted.start, wanted.end, busy.end) => Ok(0),
            Some(_) => Err(DomainError::SlotUnavailable),
            None if !whole_day().contains(&wanted) => Err(DomainError::OutsideOpeningHours),
            None if !before.is_free(&busy) => Err(DomainError::SlotUnavailable),
            None => Ok(1),
        }
    }

    /// What the command must do, judged on the state before it.
    fn check_outcome(
        before: &Calendar,
        op: &Op,
        result: &Result<Vec<CalendarEvent>, DomainError>,
    ) -> Result<(), TestCaseError> {
        match *op {
            Op::Reserve {
                n,
                start,
                len,
                buffer,
            } => {
                let held = before
                    .booking(rid(u128::from(n)))
                    .map(|h| (h.start, h.end, h.occupied_until));
                let expected = placement(before, held, start, len, buffer);
                prop_assert_eq!(
                    result.as_ref().map(Vec::len).map_err(Clone::clone),
                    expected
                );
            }
            Op::Release { n } => {
                prop_assert_eq!(result.is_ok(), before.booking(rid(u128::from(n))).is_some());
            }
            Op::Hold {
                n,
                start,
                len,
                buffer,
            } => {
                let held = before
                    .hold(hid(u128::from(n)))
                    .map(|h| (h.start, h.end, h.occupied_until));
                let expected = placement(before, held, start, len, buffer);
                prop_assert_eq!(
                    result.as_ref().map(Vec::len).map_err(Clone::clone),
                    expected
                );
            }
            Op::ReleaseHold { n } => {
                let expected = usize::from(before.hold(hid(u128::from(n))).is_some());
                prop_assert_eq!(result.as_ref().map(Vec::len).ok(), Some(expected));
            }
            Op::BookHeld { n, reservation } => {
                let fits = before.hold(hid(u128::from(n))).is_some()
                    && before.booking(rid(u128::from(reservation))).is_none();
                prop_assert_eq!(result.is_ok(), fits);
            }
            Op::Block {
                n,
                start,
                len,
                emergency,
            } => {
                let range = Interval::new(midnight(start), midnight(start + len)).unwrap();
                let overlapping: Vec<_> = before
                    .overlapping(&range)
                    .iter()
                    .map(|b| b.reservation_id)
                    .collect();
                let over_a_hold = !before.overlapping_holds(&range).is_empty();
                match result {
                    Ok(events) if events.is_empty() => {
                        prop_assert!(before
                            .blocks
                            .iter()
                            .any(|b| b.block_id == bid(u128::from(n))));
                    }
                    Ok(events) => {
                        prop_assert!(!over_a_hold);
                        prop_assert!(emergency || overlapping.is_empty());
                        let displaced = match &events[0] {
                            CalendarEvent::BlockAdded { displaced, .. } => displaced.clone(),
                            other => {
                                return Err(TestCaseError::fail(format!("unexpected {other:?}")))
                            }
                        };
                        prop_assert_eq!(displaced, overlapping);
                    }
                    Err(DomainError::SlotUnavailable) => {
                        prop_assert!(over_a_hold || (!emergency && !overlapping.is_empty()))
                    }
                    Err(DomainError::AlreadyExists { .. }) => {
                        prop_assert!(before
                            .blocks
                            .iter()
                            .any(|b| b.block_id == bid(u128::from(n))));
                    }
                    Err(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_commands_never_overlap_bookings_holds_or_blocks(ops in prop::collection::vec(op(), 1..40)) {
            let mut history: Vec<CalendarEvent> = Vec::new();
            let mut calendar = Calendar::default();
            for op in &ops {
                let result = TestFramework::<Calendar>::with(())
                    .given(history.clone())
                    .when(command(op))
                    .inspect_result();
                check_outcome(&calendar, op, &result)?;
                if let Ok(events) = result {
                    for event in events {
                        calendar.apply(event.clone());
                        history.push(event);
                    }
                }
                check_invariants(&calendar)?;
            }
        }
    }
}
