//! End-to-end tests: money.
