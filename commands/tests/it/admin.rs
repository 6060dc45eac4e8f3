//! Tests of the admin use cases.
