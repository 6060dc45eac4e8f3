//! Route handlers, one module per group of use cases.

pub mod admin;
pub mod booking;
pub mod money;
