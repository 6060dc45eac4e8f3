//! PostgreSQL and nats-server run by clinicbook itself, from the installed
//! binaries: for `clinicbook serve` when no `DATABASE_URL`/`NATS_URL` is
//! given ([`LocalServices::start_persistent`], data kept under `./var/`), and
//! for tests (throwaway services in a temp dir, through `clinicbook-testkit`).
//!
//! ```no_run
//! # async fn serve() -> Result<(), clinicbook_localsvc::LocalError> {
//! use clinicbook_localsvc::LocalServices;
//!
//! let services = LocalServices::start_persistent(std::path::Path::new("var")).await?;
//! println!("{}", services.describe());
//! let (database_url, nats_url) = (services.database_url(), services.nats_url());
//! // ... serve until asked to stop ...
//! services.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Both servers listen on 127.0.0.1 only. PostgreSQL's superuser is
//! `postgres` with `trust` authentication, so any local user can connect as
//! it: this is for development on one machine, not for production. As root,
//! PostgreSQL (which refuses to run as root) runs as the `postgres` user
//! through `runuser`. Its binaries are found under `/usr/lib/postgresql/*/bin`
//! (the newest version, or the one that created an existing cluster) or on
//! `PATH`; nats-server on `PATH` or in `/usr/sbin`, `/usr/local/bin`,
//! `/usr/bin`. Missing ones give a one-line error naming the package.
//!
//! A watchdog process (`/bin/sh`, in its own session) waits for the owning
//! process to end, however it ends, even by `kill -9`, and then stops both
//! servers; for throwaway services it also removes their temp dir, for
//! persistent ones it keeps every file. The crate logs through `tracing`.

mod error;
mod nats;
mod owner;
mod postgres;
mod process;
mod watchdog;

use std::fs;
use std::path::{Path, PathBuf};

use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

pub use error::LocalError;
pub use nats::Nats;
pub use postgres::Postgres;
pub use process::{
    find_nats_server, find_nats_server_from, find_postgres_bin, find_postgres_bin_from,
};
pub use watchdog::Teardown;

use process::RunAs;
use watchdog::{Cleanup, Keep};

/// The PostgreSQL port persistent services use when it is free.
pub const DEFAULT_POSTGRES_PORT: u16 = 54329;

/// The nats-server port persistent services use when it is free.
pub const DEFAULT_NATS_PORT: u16 = 42229;

/// The database persistent services create and
/// [`database_url`](LocalServices::database_url) names.
pub const DATABASE: &str = "clinicbook";

/// The ports persistent services prefer; each is used if nothing listens on
/// it, else a free one is picked and [`describe`](LocalServices::describe)
/// says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// PostgreSQL's port.
    pub postgres: u16,
    /// nats-server's port.
    pub nats: u16,
}

impl Default for Ports {
    /// [`DEFAULT_POSTGRES_PORT`] and [`DEFAULT_NATS_PORT`].
    fn default() -> Self {
        Self {
            postgres: DEFAULT_POSTGRES_PORT,
            nats: DEFAULT_NATS_PORT,
        }
    }
}

/// A PostgreSQL cluster and a nats-server (with JetStream) of this process.
///
/// Throwaway ([`start_throwaway`](Self::start_throwaway)): everything in a
/// temp dir `clinicbook-test-<pid>-<random>`, fast unsafe settings, removed
/// with both servers when the value is dropped or this process ends.
///
/// Persistent ([`start_persistent`](Self::start_persistent)), in a var dir
/// that is kept between runs:
///
/// ```text
/// var/postgres/        the cluster (initdb the first time only)
/// var/nats/            the JetStream store
/// var/log/postgres.log, var/log/nats.log
/// var/run/owner.pid    this process and its watchdog, while they run
/// var/run/nats.pid     the running nats-server
/// ```
///
/// Only one live process may own a var dir ([`LocalError::InUse`] for
/// another). Servers an earlier owner left running (it was killed together
/// with its watchdog, say) are stopped cleanly and started afresh with our
/// settings rather than reused, since their ports, logs and options may
/// differ from ours: `pg_ctl stop -m fast` for a postmaster on our data dir,
/// SIGTERM for a nats-server whose pid is in `var/run/nats.pid` and whose
/// command line names our store.
///
/// Holds nothing tied to a tokio runtime, so one instance may serve several
/// runtimes (as the `#[tokio::test]`s of a test binary have).
#[derive(Debug)]
pub struct LocalServices {
    // Dropped in this order: nats-server stops itself, then the teardown
    // stops PostgreSQL and cleans up.
    /// The PostgreSQL cluster; superuser `postgres`, `trust` auth on 127.0.0.1.
    pub postgres: Postgres,
    /// The nats-server, with JetStream.
    pub nats: Nats,
    teardown: Teardown,
    /// The var dir or the temp dir.
    root: PathBuf,
    persistent: bool,
    /// What [`database_url`](Self::database_url) names.
    database: &'static str,
    /// What [`describe`](Self::describe) should point out, such as a port
    /// that was taken.
    notes: Vec<String>,
}

impl LocalServices {
    /// Starts throwaway services, each on a free port, in a new temp dir
    /// `clinicbook-test-<pid>-<random>`, plus the watchdog that stops both and
    /// removes the dir when this process ends. Dropping the value does the
    /// same at once. [`database_url`](Self::database_url) names the
    /// `postgres` database.
    ///
    /// # Errors
    /// [`LocalError::NotInstalled`] if PostgreSQL or nats-server is missing;
    /// [`LocalError::NoPostgresUser`] when root without a `postgres` user;
    /// [`LocalError::CommandFailed`], [`LocalError::Exited`] or
    /// [`LocalError::NotReady`] if a server does not come up.
    pub async fn start_throwaway() -> Result<Self, LocalError> {
        tokio::task::spawn_blocking(Self::start_throwaway_blocking).await?
    }

    fn start_throwaway_blocking() -> Result<Self, LocalError> {
        let pg_bin = process::find_postgres_bin()?;
        let nats_bin = process::find_nats_server()?;
        let run_as = RunAs::detect()?;

        let suffix = Uuid::new_v4().simple().to_string();
        let root = std::env::temp_dir().join(format!(
            "clinicbook-test-{}-{}",
            std::process::id(),
            &suffix[..8]
        ));
        fs::create_dir(&root)
            .map_err(|e| LocalError::io(format!("creating {}", root.display()), e))?;
        let cleanup = Cleanup {
            pg_ctl: pg_bin.join("pg_ctl"),
            data_dir: root.join("data"),
            nats_pid_file: root.join("nats.pid"),
            run_as: run_as.clone(),
            keep: Keep::Nothing { root: root.clone() },
        };
        // The watchdog comes first, so even a start-up that fails halfway (or
        // a process killed meanwhile) leaves nothing behind.
        let teardown = match run_as.chown(&root).and_then(|()| Teardown::arm(cleanup)) {
            Ok(teardown) => teardown,
            Err(e) => {
                let _ = fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let postgres = Postgres::launch_throwaway(&root, pg_bin, run_as)?;
        let nats = Nats::launch_throwaway(&root, nats_bin)?;
        Ok(Self {
            postgres,
            nats,
            teardown,
            root,
            persistent: false,
            database: "postgres",
            notes: Vec::new(),
        })
    }

    /// Starts persistent services in `var_dir` (created if missing) on
    /// [`DEFAULT_POSTGRES_PORT`] and [`DEFAULT_NATS_PORT`] where free, and
    /// creates the database [`DATABASE`] if missing; see
    /// [`start_persistent_on`](Self::start_persistent_on).
    ///
    /// # Errors
    /// As [`start_persistent_on`](Self::start_persistent_on).
    pub async fn start_persistent(var_dir: &Path) -> Result<Self, LocalError> {
        Self::start_persistent_on(var_dir, Ports::default()).await
    }

    /// Starts persistent services in `var_dir` (layout on [`LocalServices`]):
    /// `initdb` the first time only, then PostgreSQL and nats-server on
    /// `ports` where free (else on free ports, which
    /// [`describe`](Self::describe) points out), and the database
    /// [`DATABASE`] if missing. Both stop on [`shutdown`](Self::shutdown), on
    /// drop, and, through a watchdog, when this process dies however it
    /// dies; the files stay.
    ///
    /// # Errors
    /// [`LocalError::NotInstalled`] if PostgreSQL or nats-server is missing
    /// (before anything is created); [`LocalError::InUse`] if another live
    /// process runs the services of `var_dir`; [`LocalError::NoPostgresUser`]
    /// or [`LocalError::Unreachable`] when root and PostgreSQL cannot run as
    /// the `postgres` user there; [`LocalError::CommandFailed`],
    /// [`LocalError::Exited`] or [`LocalError::NotReady`] if a server does
    /// not come up (the error carries the end of its log);
    /// [`LocalError::Database`] if the database cannot be created;
    /// [`LocalError::Io`] for file-system failures.
    pub async fn start_persistent_on(var_dir: &Path, ports: Ports) -> Result<Self, LocalError> {
        let var_dir = var_dir.to_path_buf();
        let services =
            tokio::task::spawn_blocking(move || Self::start_persistent_blocking(&var_dir, ports))
                .await??;
        match services.create_database().await {
            Ok(()) => {
                tracing::info!(
                    dir = %services.root.display(),
                    database_url = services.database_url(),
                    nats_url = services.nats_url(),
                    "local PostgreSQL and nats-server started"
                );
                Ok(services)
            }
            Err(e) => {
                if let Err(error) = services.shutdown().await {
                    tracing::warn!(%error, "stopping the local services after a failed start");
                }
                Err(e)
            }
        }
    }

    fn start_persistent_blocking(var_dir: &Path, ports: Ports) -> Result<Self, LocalError> {
        let var_dir = std::path::absolute(var_dir)
            .map_err(|e| LocalError::io(format!("resolving {}", var_dir.display()), e))?;
        // Everything that can be missing is looked for before anything is created.
        let pg_bin = process::find_postgres_bin_for(&var_dir.join("postgres"))?;
        let nats_bin = process::find_nats_server()?;
        let run_as = RunAs::detect()?;

        for dir in ["log", "run", "nats"] {
            let dir = var_dir.join(dir);
            fs::create_dir_all(&dir)
                .map_err(|e| LocalError::io(format!("creating {}", dir.display()), e))?;
        }
        let var_dir = fs::canonicalize(&var_dir)
            .map_err(|e| LocalError::io(format!("resolving {}", var_dir.display()), e))?;
        let data_dir = var_dir.join("postgres");
        let log_dir = var_dir.join("log");
        let owner_file = var_dir.join("run").join("owner.pid");
        let nats_pid_file = var_dir.join("run").join("nats.pid");

        owner::claim(&var_dir, &owner_file)?;
        let cleanup = Cleanup {
            pg_ctl: pg_bin.join("pg_ctl"),
            data_dir: data_dir.clone(),
            nats_pid_file: nats_pid_file.clone(),
            run_as: run_as.clone(),
            keep: Keep::Data {
                owner_file: owner_file.clone(),
            },
        };
        // From here on, dropping `teardown` (on an error below) stops what
        // was started and gives up the var dir.
        let teardown = match Teardown::arm(cleanup) {
            Ok(teardown) => teardown,
            Err(e) => {
                let _ = fs::remove_file(&owner_file);
                return Err(e);
            }
        };
        owner::record_watchdog(&owner_file, teardown.watchdog_pid())?;

        let postgres = Postgres::launch_persistent(
            &data_dir,
            &log_dir.join("postgres.log"),
            pg_bin,
            run_as,
            ports.postgres,
        )?;
        let nats = Nats::launch_persistent(
            &var_dir.join("nats"),
            &log_dir.join("nats.log"),
            &nats_pid_file,
            nats_bin,
            ports.nats,
        )?;

        let mut notes = Vec::new();
        for (service, wanted, got) in [
            ("PostgreSQL", ports.postgres, postgres.port()),
            ("nats-server", ports.nats, nats.port()),
        ] {
            if wanted != got {
                tracing::warn!(
                    service,
                    wanted,
                    got,
                    "port taken by another program; using a free one"
                );
                notes.push(format!(
                    "port {wanted} is taken by another program, so {service} listens on {got}"
                ));
            }
        }
        Ok(Self {
            postgres,
            nats,
            teardown,
            root: var_dir,
            persistent: true,
            database: DATABASE,
            notes,
        })
    }

    /// `CREATE DATABASE` [`DATABASE`] unless it exists.
    async fn create_database(&self) -> Result<(), LocalError> {
        let mut admin =
            PgConnection::connect_with(&self.postgres.connect_options("postgres")).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(self.database)
                .fetch_one(&mut admin)
                .await?;
        if !exists {
            tracing::info!(database = self.database, "creating the database");
            sqlx::Executor::execute(
                &mut admin,
                format!(r#"CREATE DATABASE "{}""#, self.database).as_str(),
            )
            .await?;
        }
        admin.close().await?;
        Ok(())
    }

    /// The URL of the application database as the superuser `postgres`:
    /// `postgres://postgres@127.0.0.1:{port}/clinicbook` (the `postgres`
    /// database for throwaway services).
    pub fn database_url(&self) -> String {
        self.postgres.url(self.database)
    }

    /// The nats-server client URL, `nats://127.0.0.1:{port}`.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The var dir (persistent) or temp dir (throwaway) holding everything.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Whether these services keep their data between runs.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// A short multi-line summary for people: where the data and logs are,
    /// the URLs (so the ports), and any port that was taken. No trailing
    /// newline.
    pub fn describe(&self) -> String {
        let fate = if self.persistent {
            "kept between runs; the servers stop when this process exits"
        } else {
            "throwaway; removed when this process exits"
        };
        let version = self
            .postgres
            .version()
            .map(|version| format!(" {version}"))
            .unwrap_or_default();
        let mut lines = vec![
            format!(
                "local PostgreSQL and nats-server in {} ({fate}):",
                self.root.display()
            ),
            format!("  PostgreSQL{version}: {}", self.database_url()),
            format!(
                "    data {}, log {}",
                self.postgres.data_dir().display(),
                self.postgres.log_file().display()
            ),
            format!("  nats-server (JetStream): {}", self.nats_url()),
            format!(
                "    store {}, log {}",
                self.nats.store_dir().display(),
                self.nats.log_file().display()
            ),
        ];
        lines.extend(self.notes.iter().map(|note| format!("  note: {note}")));
        lines.join("\n")
    }

    /// Stops both servers (nats-server first, as [`Nats::stop`] does, then
    /// `pg_ctl stop -m fast`) and the watchdog; removes the temp dir of
    /// throwaway services, only the owner file of persistent ones.
    ///
    /// # Errors
    /// [`LocalError::CommandFailed`] if `pg_ctl stop` fails (the teardown
    /// still tries once more), [`LocalError::Task`] if a blocking step could
    /// not run.
    pub async fn shutdown(self) -> Result<(), LocalError> {
        let Self {
            postgres,
            nats,
            teardown,
            ..
        } = self;
        let nats_stopped = nats.stop().await;
        let postgres_stopped = postgres.stop().await;
        let torn_down = tokio::task::spawn_blocking(move || {
            drop(nats);
            drop(teardown);
        })
        .await;
        nats_stopped?;
        postgres_stopped?;
        Ok(torn_down?)
    }

    /// The pieces, for a caller that keeps [`postgres`](Self::postgres) and
    /// [`nats`](Self::nats) in a struct of its own. The [`Teardown`] must be
    /// dropped after the [`Nats`] (declare it after it in that struct).
    pub fn into_parts(self) -> (Postgres, Nats, Teardown) {
        (self.postgres, self.nats, self.teardown)
    }
}

/// Whoever awaits these inside `tokio::spawn` needs them `Send`; this stops
/// compiling if one stops being so.
fn _futures_are_send(services: LocalServices, path: &'static Path) {
    fn is_send<T: Send>(_: T) {}
    is_send(LocalServices::start_throwaway());
    is_send(LocalServices::start_persistent(path));
    is_send(services.shutdown());
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use crate::process::{on_a_free_port, on_a_port};
    use crate::LocalError;

    fn exited(log_tail: &str) -> LocalError {
        LocalError::Exited {
            service: "test",
            status: ExitStatus::from_raw(256),
            log_tail: log_tail.to_owned(),
        }
    }

    #[test]
    fn a_taken_port_is_retried_on_another() {
        let mut ports = Vec::new();
        let result = on_a_free_port("test", "address already in use", |port| {
            ports.push(port);
            match ports.len() {
                1 => Err(exited("bind: address already in use")),
                _ => Ok(port),
            }
        });
        assert_eq!(ports.len(), 2);
        assert!(matches!(result, Ok(port) if port == ports[1] && port != 0));
    }

    #[test]
    fn other_start_failures_are_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = on_a_free_port("test", "address already in use", |_| {
            calls += 1;
            Err(exited("FATAL: data directory has wrong ownership"))
        });
        assert_eq!(calls, 1);
        assert!(matches!(result, Err(LocalError::Exited { .. })));
    }

    #[test]
    fn a_port_that_stays_taken_gives_up() {
        let mut calls = 0;
        let result: Result<(), _> = on_a_free_port("test", "could not bind", |_| {
            calls += 1;
            Err(exited("could not bind IPv4 address"))
        });
        assert_eq!(calls, 5);
        assert!(result.is_err());
    }

    #[test]
    fn a_free_preferred_port_is_tried_first() -> std::io::Result<()> {
        let free = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let got = on_a_port("test", "in use", Some(free), Ok);
        assert_eq!(got.ok(), Some(free));
        Ok(())
    }

    #[test]
    fn a_taken_preferred_port_is_skipped() -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let taken = listener.local_addr()?.port();
        let got = on_a_port("test", "in use", Some(taken), Ok);
        assert!(got.is_ok_and(|port| port != taken && port != 0));
        Ok(())
    }

    #[test]
    fn a_preferred_port_taken_at_bind_time_falls_back_to_a_free_one() -> std::io::Result<()> {
        let mut ports = Vec::new();
        let free = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let result = on_a_port("test", "in use", Some(free), |port| {
            ports.push(port);
            match ports.len() {
                1 => Err(exited("address in use")),
                _ => Ok(port),
            }
        });
        assert_eq!(ports.first(), Some(&free));
        assert!(matches!(result, Ok(port) if port != free));
        Ok(())
    }
}
