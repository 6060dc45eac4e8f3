//! The one error type of the crate.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a local service could not be found, started, stopped or used.
///
/// Every message fits on one line except the start-up failures, which append
/// the tail of the service's log because that is where the reason is.
#[derive(thiserror::Error, Debug)]
pub enum LocalError {
    /// A program we need is not installed.
    #[error("{program} not found under {looked_in}; install with: {install}")]
    NotInstalled {
        /// What is missing, e.g. "PostgreSQL server binaries".
        program: &'static str,
        /// Where we looked.
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

    /// We run as root, so PostgreSQL runs as the `postgres` user, and that user
    /// cannot reach the data directory (a parent folder is closed to others,
    /// like `/root`).
    #[error(
        "the postgres user cannot reach {}; make its parent folders traversable \
         (chmod o+x) or use a var dir elsewhere",
        dir.display()
    )]
    Unreachable {
        /// The directory PostgreSQL must write to.
        dir: PathBuf,
    },

    /// Another live process already runs the services of this var dir.
    #[error(
        "{} is in use by process {pid}, which runs its PostgreSQL and nats-server; \
         stop it or use another var dir",
        var_dir.display()
    )]
    InUse {
        /// The var dir.
        var_dir: PathBuf,
        /// The process that owns it.
        pid: u32,
    },

    /// A file-system operation or a process spawn failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
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

    /// A service process exited while we waited for it to come up.
    #[error("{service} exited during start-up ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// Which service.
        service: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// The end of its log file.
        log_tail: String,
    },

    /// A service did not accept connections (or, for a leftover of an earlier
    /// run, did not go away) before the deadline.
    #[error("{service} was not ready after {waited:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// Which service.
        service: &'static str,
        /// How long we waited.
        waited: Duration,
        /// The end of its log file.
        log_tail: String,
    },

    /// Talking to the local PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    /// A blocking helper task panicked or was cancelled.
    #[error("local services task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LocalError {
    /// Wraps an I/O error with what we were doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
