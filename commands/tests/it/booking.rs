//! Tests of the booking use cases.
