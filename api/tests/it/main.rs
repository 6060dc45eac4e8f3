//! End-to-end tests of the HTTP API: the server on a free port over the
//! harness's PostgreSQL, driven with a real HTTP client.

mod admin;
mod analytics;
mod audit;
mod booking;
mod common;
mod demo;
mod faults;
mod holds;
mod limits;
mod messages;
mod money;
mod patients;
mod platform;
mod processes;
mod readside;
mod webhooks;
