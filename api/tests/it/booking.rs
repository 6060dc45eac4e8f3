//! End-to-end tests: booking.
