//! Integration tests of the read side over real PostgreSQL and nats-server.

mod runtime;
