//! The watchdog process that stops the services once their owning process is
//! gone, however it ends, and [`Teardown`], which does the same in-process.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::nats::STOP_GRACE;
use crate::process::{self, RunAs};
use crate::LocalError;

/// What happens to the files once the services are stopped.
#[derive(Clone, Debug)]
pub(crate) enum Keep {
    /// Throwaway: stop PostgreSQL with `-m immediate` and nats-server with
    /// SIGKILL, then remove this directory.
    Nothing {
        /// The temp dir holding everything.
        root: PathBuf,
    },
    /// Persistent: stop PostgreSQL with `-m fast` and nats-server with
    /// SIGTERM (SIGKILL after a grace period), keep every file but this one.
    Data {
        /// The owner file of the var dir, removed last.
        owner_file: PathBuf,
    },
}

/// What the watchdog (and [`Teardown`]) must clean up.
#[derive(Clone, Debug)]
pub(crate) struct Cleanup {
    /// `pg_ctl` of the cluster.
    pub(crate) pg_ctl: PathBuf,
    /// The cluster's data directory.
    pub(crate) data_dir: PathBuf,
    /// Holds the pid of the running nats-server, if any.
    pub(crate) nats_pid_file: PathBuf,
    /// How to run `pg_ctl`.
    pub(crate) run_as: RunAs,
    /// Remove everything, or keep the data.
    pub(crate) keep: Keep,
}

/// Polls for the owning process (`$1`) every half second; once it is gone (or
/// a zombie), stops PostgreSQL, stops nats-server and removes the temp dir
/// (throwaway) or the owner file (persistent).
const WATCHDOG: &str = r#"
pid=$1 pg_ctl=$2 data=$3 runuser=$4 nats_pid=$5 pg_mode=$6 grace=$7 remove=$8 owner=$9
running() {
  kill -0 "$1" 2>/dev/null || return 1
  stat=
  read -r stat < "/proc/$1/stat" 2>/dev/null
  case "${stat##*") "}" in Z*) return 1 ;; esac
}
while running "$pid"; do sleep 0.5; done
if [ -f "$data/postmaster.pid" ]; then
  if [ -n "$runuser" ]; then
    "$runuser" -u postgres -- "$pg_ctl" -D "$data" -m "$pg_mode" stop
  else
    "$pg_ctl" -D "$data" -m "$pg_mode" stop
  fi
fi
if [ -f "$nats_pid" ]; then
  n=$(cat "$nats_pid")
  if [ "$grace" -gt 0 ] && kill -TERM "$n" 2>/dev/null; then
    i=0
    while running "$n" && [ "$i" -lt $((grace * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  fi
  if running "$n"; then kill -9 "$n"; fi
  rm -f "$nats_pid"
fi
if [ -n "$remove" ]; then rm -rf "$remove"; fi
if [ -n "$owner" ]; then rm -f "$owner"; fi
"#;

impl Cleanup {
    /// `pg_ctl stop` mode: nothing to save in a throwaway cluster.
    fn pg_stop_mode(&self) -> &'static str {
        match self.keep {
            Keep::Nothing { .. } => "immediate",
            Keep::Data { .. } => "fast",
        }
    }

    /// Starts the watchdog in its own session (or at least its own process
    /// group), so Ctrl-C in the terminal and the end of the owning process do
    /// not take it down before it has cleaned up. It gets no stdio, so it
    /// cannot hold a parent's pipes (cargo's, a shell's) open.
    fn spawn_watchdog(&self) -> Result<Child, LocalError> {
        let mut command = match process::find_on_path("setsid") {
            Some(setsid) => {
                let mut command = Command::new(setsid);
                command.arg("/bin/sh");
                command
            }
            None => {
                let mut command = Command::new("/bin/sh");
                command.process_group(0);
                command
            }
        };
        let (grace, remove, owner) = match &self.keep {
            Keep::Nothing { root } => (0, root.as_os_str(), OsStr::new("")),
            Keep::Data { owner_file } => {
                (STOP_GRACE.as_secs(), OsStr::new(""), owner_file.as_os_str())
            }
        };
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("clinicbook-localsvc-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.pg_ctl)
            .arg(&self.data_dir)
            .arg(self.run_as.runuser_arg())
            .arg(&self.nats_pid_file)
            .arg(self.pg_stop_mode())
            .arg(grace.to_string())
            .arg(remove)
            .arg(owner)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LocalError::io("spawning the clean-up watchdog (/bin/sh)", e))
    }

    /// Does now, in this process, what the watchdog would do at exit, except
    /// for nats-server, which [`Nats`](crate::Nats) stops itself when dropped.
    /// Best effort: failures are logged, not returned.
    fn run_now(&self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let mut command = self.run_as.command(&self.pg_ctl, Path::new("/"));
            command
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", self.pg_stop_mode(), "stop"]);
            if let Err(error) = process::run(&mut command) {
                tracing::warn!(%error, "stopping PostgreSQL");
            }
        }
        match &self.keep {
            Keep::Nothing { root } => {
                if let Err(error) = fs::remove_dir_all(root) {
                    tracing::warn!(%error, root = %root.display(), "removing the throwaway services' temp dir");
                }
            }
            Keep::Data { owner_file } => {
                if let Err(error) = fs::remove_file(owner_file) {
                    tracing::warn!(%error, file = %owner_file.display(), "removing the owner file");
                }
            }
        }
    }
}

/// Stops the local services and cleans up after them, now (when dropped) or,
/// through a watchdog process, once this process is gone however it ends
/// (even `kill -9`).
///
/// Part of [`LocalServices`](crate::LocalServices); callers that hold the
/// pieces themselves get it from
/// [`into_parts`](crate::LocalServices::into_parts) and must drop it after
/// the [`Nats`](crate::Nats) (which stops nats-server when dropped).
///
/// Dropping it stops PostgreSQL (`pg_ctl stop`, `-m immediate` for throwaway
/// services, `-m fast` for persistent ones) and then removes the throwaway
/// temp dir, or, for persistent services, only the var dir's owner file; it
/// blocks while it does.
#[derive(Debug)]
pub struct Teardown {
    cleanup: Cleanup,
    watchdog: Child,
}

impl Teardown {
    /// Starts the watchdog for `cleanup`.
    pub(crate) fn arm(cleanup: Cleanup) -> Result<Self, LocalError> {
        let watchdog = cleanup.spawn_watchdog()?;
        Ok(Self { cleanup, watchdog })
    }

    /// The watchdog's pid.
    pub(crate) fn watchdog_pid(&self) -> u32 {
        self.watchdog.id()
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.cleanup.run_now();
        if let Err(error) = self
            .watchdog
            .kill()
            .and_then(|()| self.watchdog.wait().map(drop))
        {
            tracing::warn!(%error, "stopping the clean-up watchdog");
        }
    }
}
