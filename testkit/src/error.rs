//! The one error type of the harness.

use clinicbook_localsvc::LocalError;

/// Why the test services or a test database could not be set up.
///
/// Every message fits on one line except the start-up failures, which append
/// the tail of the service's log because that is where the reason is.
#[derive(thiserror::Error, Debug)]
pub enum HarnessError {
    /// Finding, starting or stopping PostgreSQL or nats-server failed
    /// (missing binaries, a server that does not come up, ...).
    #[error(transparent)]
    Services(#[from] LocalError),

    /// Talking to the test PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    /// Running the migrations into a template database failed.
    #[error("migrating the template database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The test SMTP server (Python's aiosmtpd) could not be had or started.
    #[error("test SMTP server: {0}")]
    Smtp(String),
}
