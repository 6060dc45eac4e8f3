//! The one error type of the harness.

use std::process::ExitStatus;
use std::time::Duration;

/// Why a throwaway service could not be found, started, stopped or used.
///
/// Every message fits on one line except the start-up failures, which append
/// the tail of the service's log because that is where the reason is.
#[derive(thiserror::Error, Debug)]
pub enum HarnessError {
    /// A program the harness needs is not installed.
    #[error("{program} not found under {looked_in}; install with: {install}")]
    NotInstalled {
        /// What is missing, e.g. "PostgreSQL server binaries".
        program: &'static str,
        /// Where the harness looked.
        looked_in: String,
        /// The command that installs it.
        install: &'static str,
    },

    /// We run as root, PostgreSQL refuses to, and there is no `postgres` user
    /// to run it as.
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` user to run it as; \
         create one with: useradd --system postgres"
    )]
    NoPostgresUser,

    /// A file-system operation or a process spawn failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A helper command (`initdb`, `pg_ctl`, ...) exited unsuccessfully.
    #[error("{command} failed ({status}): {output}")]
    CommandFailed {
        /// The command line, as `Debug` shows it.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its stderr and stdout, trimmed.
        output: String,
    },

    /// A service process exited while the harness waited for it to come up.
    #[error("{service} exited during start-up ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// Which service.
        service: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// The end of its log file.
        log_tail: String,
    },

    /// A service did not accept connections before the deadline.
    #[error("{service} was not ready after {waited:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// Which service.
        service: &'static str,
        /// How long the harness waited.
        waited: Duration,
        /// The end of its log file.
        log_tail: String,
    },

    /// Talking to the test PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    /// Running the migrations into a template database failed.
    #[error("migrating the template database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// A blocking helper task panicked or was cancelled.
    #[error("harness task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl HarnessError {
    /// Wraps an I/O error with what the harness was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
