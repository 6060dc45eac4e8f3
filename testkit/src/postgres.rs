//! A throwaway PostgreSQL cluster: `initdb` once, `pg_ctl start`/`stop` on demand.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::process::{self, RunAs};
use crate::HarnessError;

/// Everything needed to run `pg_ctl` for the cluster; cheap to clone into a
/// blocking task.
#[derive(Clone, Debug)]
struct Cluster {
    bin_dir: PathBuf,
    /// The per-process temp dir: working directory and unix-socket directory.
    root: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as: RunAs,
}

impl Cluster {
    fn pg_ctl(&self) -> Command {
        let mut command = self
            .run_as
            .command(&self.bin_dir.join("pg_ctl"), &self.root);
        command.arg("-D").arg(&self.data_dir);
        command
    }

    fn initdb(&self) -> Result<(), HarnessError> {
        let mut command = self
            .run_as
            .command(&self.bin_dir.join("initdb"), &self.root);
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        process::run(&mut command).map(drop)
    }

    fn is_running(&self) -> Result<bool, HarnessError> {
        let mut command = self.pg_ctl();
        command.arg("status");
        match process::run(&mut command) {
            Ok(_) => Ok(true),
            // pg_ctl status: 3 = not running.
            Err(HarnessError::CommandFailed { status, .. }) if status.code() == Some(3) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `pg_ctl start -w`: returns once the server accepts connections.
    fn start(&self) -> Result<(), HarnessError> {
        if self.is_running()? {
            return Ok(());
        }
        // Test-only speed settings: nothing here must survive a crash. The
        // unix socket goes into our own temp dir, which postgres owns.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k '{}' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=400 -c shared_buffers=128MB",
            self.port,
            self.root.display()
        );
        let mut command = self.pg_ctl();
        command
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        let log_start = process::log_len(&self.log_file);
        process::run(&mut command)
            .map(drop)
            .map_err(|error| match error {
                HarnessError::CommandFailed { status, .. } => HarnessError::Exited {
                    service: "PostgreSQL",
                    status,
                    log_tail: process::tail(&process::log_since(&self.log_file, log_start)),
                },
                other => other,
            })
    }

    /// `pg_ctl stop -m fast -w`: returns once the server is down.
    fn stop(&self) -> Result<(), HarnessError> {
        if !self.is_running()? {
            return Ok(());
        }
        let mut command = self.pg_ctl();
        command.args(["-m", "fast", "-w", "stop"]);
        process::run(&mut command).map(drop)
    }
}

/// A PostgreSQL cluster of our own: its own data directory, port and unix
/// socket, run as the `postgres` user when we are root. The superuser is
/// `postgres` with `trust` authentication on 127.0.0.1.
#[derive(Debug)]
pub struct Postgres {
    cluster: Cluster,
}

impl Postgres {
    /// Runs `initdb` in `root/data` and starts the server on a free port,
    /// trying another port if the first was taken in the meantime. Blocking.
    pub(crate) fn launch(
        root: &Path,
        bin_dir: PathBuf,
        run_as: RunAs,
    ) -> Result<Self, HarnessError> {
        let mut cluster = Cluster {
            bin_dir,
            root: root.to_path_buf(),
            data_dir: root.join("data"),
            log_file: root.join("pg.log"),
            port: 0,
            run_as,
        };
        cluster.initdb()?;
        process::on_a_free_port("PostgreSQL", "could not bind", |port| {
            cluster.port = port;
            cluster.start()
        })?;
        tracing::debug!(port = cluster.port, data_dir = %cluster.data_dir.display(), "test PostgreSQL started");
        Ok(Self { cluster })
    }

    /// The TCP port on 127.0.0.1 the server listens on; it stays the same across
    /// [`stop`](Self::stop) and [`start`](Self::start).
    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// A connection URL for database `db` as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port())
    }

    /// Connect options for database `db` as the superuser `postgres`. Unlike
    /// parsing [`url`](Self::url), they ignore `~/.pgpass` and pin TLS off, so a
    /// developer's `PGSSLMODE` cannot break the tests.
    pub fn connect_options(&self, db: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port())
            .username("postgres")
            .database(db)
            .ssl_mode(PgSslMode::Disable)
            .application_name("clinicbook-testkit")
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.cluster.data_dir
    }

    /// The server log (`pg_ctl -l`), where start-up failures are explained.
    pub fn log_file(&self) -> &Path {
        &self.cluster.log_file
    }

    /// The directory holding `pg_ctl`, `initdb` and `postgres`.
    pub fn bin_dir(&self) -> &Path {
        &self.cluster.bin_dir
    }

    /// Stops the server (`pg_ctl stop -m fast`): open sessions are ended and
    /// new connections are refused until [`start`](Self::start). Does nothing
    /// if it is already stopped. Meant for fault tests on a private
    /// [`Services`](crate::Services), since every test of a binary shares the
    /// one from [`services`](crate::services()).
    ///
    /// # Errors
    /// [`HarnessError::CommandFailed`] if `pg_ctl` fails; [`HarnessError::Io`]
    /// if it cannot be run.
    pub async fn stop(&self) -> Result<(), HarnessError> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.stop()).await?
    }

    /// Starts the server again on the same port and data directory and returns
    /// once it accepts connections. Does nothing if it is already running.
    ///
    /// # Errors
    /// [`HarnessError::Exited`] with the end of the server log if it does not
    /// come up (for instance because something else took the port meanwhile).
    pub async fn start(&self) -> Result<(), HarnessError> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.start()).await?
    }
}
