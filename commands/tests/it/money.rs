//! Tests of the money use cases.
