//! A PostgreSQL cluster of our own: `initdb` once, `pg_ctl start`/`stop` on
//! demand; throwaway (fast and unsafe settings, in a temp dir) or persistent
//! (default durable settings, in `var/postgres`).

use std::fs;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::process::{self, RunAs};
use crate::LocalError;

/// What PostgreSQL reports in `application_name` for our connections.
const APPLICATION_NAME: &str = "clinicbook-localsvc";

/// How a cluster is set up and run.
#[derive(Clone, Debug)]
enum Profile {
    /// For tests: no fsync, a unix socket in the temp dir, room for many
    /// concurrent test pools. Nothing here must survive a crash.
    Throwaway {
        /// Where the unix socket goes (the temp dir, which postgres owns).
        socket_dir: PathBuf,
    },
    /// For `clinicbook serve`: PostgreSQL's durable defaults, TCP only (a
    /// socket path under a deep var dir could exceed the 107-byte limit).
    Persistent,
}

/// Everything needed to run `pg_ctl` for the cluster; cheap to clone into a
/// blocking task.
#[derive(Clone, Debug)]
struct Cluster {
    bin_dir: PathBuf,
    /// Working directory of the PostgreSQL programs (the user they run as
    /// must be able to enter it).
    workdir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as: RunAs,
    profile: Profile,
}

impl Cluster {
    fn pg_ctl(&self) -> Command {
        let mut command = self
            .run_as
            .command(&self.bin_dir.join("pg_ctl"), &self.workdir);
        command.arg("-D").arg(&self.data_dir);
        command
    }

    fn initdb(&self) -> Result<(), LocalError> {
        let mut command = self
            .run_as
            .command(&self.bin_dir.join("initdb"), &self.workdir);
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .arg("--locale=C");
        if matches!(self.profile, Profile::Throwaway { .. }) {
            command.arg("--no-sync");
        }
        process::run(&mut command).map(drop)
    }

    fn is_running(&self) -> Result<bool, LocalError> {
        let mut command = self.pg_ctl();
        command.arg("status");
        match process::run(&mut command) {
            Ok(_) => Ok(true),
            // pg_ctl status: 3 = not running.
            Err(LocalError::CommandFailed { status, .. }) if status.code() == Some(3) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `pg_ctl start -w`: returns once the server accepts connections.
    fn start(&self) -> Result<(), LocalError> {
        if self.is_running()? {
            return Ok(());
        }
        let options = match &self.profile {
            Profile::Throwaway { socket_dir } => format!(
                "-p {} -c listen_addresses=127.0.0.1 -k '{}' -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=400 -c shared_buffers=128MB",
                self.port,
                socket_dir.display()
            ),
            Profile::Persistent => {
                format!("-p {} -c listen_addresses=127.0.0.1 -k ''", self.port)
            }
        };
        let mut command = self.pg_ctl();
        command
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        let log_start = process::log_len(&self.log_file);
        process::run(&mut command)
            .map(drop)
            .map_err(|error| match error {
                LocalError::CommandFailed { status, .. } => LocalError::Exited {
                    service: "PostgreSQL",
                    status,
                    log_tail: process::tail(&process::log_since(&self.log_file, log_start)),
                },
                other => other,
            })
    }

    /// `pg_ctl stop -m fast -w`: returns once the server is down.
    fn stop(&self) -> Result<(), LocalError> {
        if !self.is_running()? {
            return Ok(());
        }
        let mut command = self.pg_ctl();
        command.args(["-m", "fast", "-w", "stop"]);
        process::run(&mut command).map(drop)
    }
}

/// A PostgreSQL cluster of our own: its own data directory and port, run as
/// the `postgres` user when we are root. The superuser is `postgres` with
/// `trust` authentication on 127.0.0.1 (so any local user may connect as it:
/// this is for development and tests on one machine).
#[derive(Debug)]
pub struct Postgres {
    cluster: Cluster,
}

impl Postgres {
    /// Throwaway: runs `initdb` in `root/data` and starts the server on a
    /// free port, trying another port if the first was taken in the meantime.
    /// Blocking.
    pub(crate) fn launch_throwaway(
        root: &Path,
        bin_dir: PathBuf,
        run_as: RunAs,
    ) -> Result<Self, LocalError> {
        let mut cluster = Cluster {
            bin_dir,
            workdir: root.to_path_buf(),
            data_dir: root.join("data"),
            log_file: root.join("pg.log"),
            port: 0,
            run_as,
            profile: Profile::Throwaway {
                socket_dir: root.to_path_buf(),
            },
        };
        cluster.initdb()?;
        process::on_a_free_port("PostgreSQL", "could not bind", |port| {
            cluster.port = port;
            cluster.start()
        })?;
        tracing::debug!(port = cluster.port, data_dir = %cluster.data_dir.display(), "throwaway PostgreSQL started");
        Ok(Self { cluster })
    }

    /// Persistent: the cluster in `data_dir`, created by `initdb` if it has
    /// no `PG_VERSION` yet. A server still running there (left by an earlier
    /// run whose owner is gone) is stopped first (`pg_ctl stop -m fast`) and
    /// started again with our settings. Listens on `preferred` if that is
    /// free, else on a free port. Blocking.
    pub(crate) fn launch_persistent(
        data_dir: &Path,
        log_file: &Path,
        bin_dir: PathBuf,
        run_as: RunAs,
        preferred: u16,
    ) -> Result<Self, LocalError> {
        let mut cluster = Cluster {
            bin_dir,
            workdir: data_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            log_file: log_file.to_path_buf(),
            port: 0,
            run_as,
            profile: Profile::Persistent,
        };
        if !data_dir.join("PG_VERSION").exists() {
            // initdb accepts an empty directory of the user it runs as, and
            // the directory must exist to be the programs' working directory.
            fs::create_dir_all(data_dir)
                .map_err(|e| LocalError::io(format!("creating {}", data_dir.display()), e))?;
            cluster.run_as.chown(data_dir)?;
            cluster.run_as.check_reachable(data_dir)?;
            tracing::info!(data_dir = %data_dir.display(), "creating the PostgreSQL cluster (initdb)");
            cluster.initdb()?;
        } else {
            cluster.run_as.check_reachable(data_dir)?;
            if cluster.is_running()? {
                tracing::warn!(
                    data_dir = %data_dir.display(),
                    "a PostgreSQL left running by an earlier run; stopping it to start it afresh"
                );
                cluster.stop()?;
            }
        }
        // pg_ctl opens the log as the user it runs as.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(log_file)
            .map_err(|e| LocalError::io(format!("creating {}", log_file.display()), e))?;
        cluster.run_as.chown(log_file)?;
        process::on_a_port("PostgreSQL", "could not bind", Some(preferred), |port| {
            cluster.port = port;
            cluster.start()
        })?;
        tracing::debug!(port = cluster.port, data_dir = %data_dir.display(), "PostgreSQL started");
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
    /// developer's `PGSSLMODE` cannot get in the way.
    pub fn connect_options(&self, db: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port())
            .username("postgres")
            .database(db)
            .ssl_mode(PgSslMode::Disable)
            .application_name(APPLICATION_NAME)
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

    /// The major version that created the cluster (its `PG_VERSION`), e.g. `"15"`.
    pub fn version(&self) -> Option<String> {
        fs::read_to_string(self.cluster.data_dir.join("PG_VERSION"))
            .ok()
            .map(|version| version.trim().to_owned())
    }

    /// Stops the server (`pg_ctl stop -m fast`): open sessions are ended and
    /// new connections are refused until [`start`](Self::start). Does nothing
    /// if it is already stopped.
    ///
    /// # Errors
    /// [`LocalError::CommandFailed`] if `pg_ctl` fails; [`LocalError::Io`]
    /// if it cannot be run.
    pub async fn stop(&self) -> Result<(), LocalError> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.stop()).await?
    }

    /// Starts the server again on the same port and data directory and returns
    /// once it accepts connections. Does nothing if it is already running.
    ///
    /// # Errors
    /// [`LocalError::Exited`] with the end of the server log if it does not
    /// come up (for instance because something else took the port meanwhile).
    pub async fn start(&self) -> Result<(), LocalError> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.start()).await?
    }
}
