//! idempotence
