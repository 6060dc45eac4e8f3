//! Integration tests of the use cases on a real PostgreSQL: every rule
//! that spans aggregates, through the same code the API calls.

mod admin;
mod booking;
mod common;
mod money;
