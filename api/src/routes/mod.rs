//! Route handlers, one module per group of use cases.

pub mod admin;
pub mod analytics;
pub mod audit;
pub mod booking;
pub mod consistency;
pub mod holds;
pub mod money;
pub mod patients;
pub mod webhooks;
