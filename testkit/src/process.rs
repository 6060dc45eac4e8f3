//! Finding programs, running them as the `postgres` user, free ports, log tails
//! and the watchdog that cleans up after the test process is gone.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::HarnessError;

/// Where Debian and Ubuntu install the PostgreSQL server, one folder per major version.
const POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// The PostgreSQL programs the harness runs; all must sit in one `bin` folder.
const POSTGRES_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Folders tried for nats-server after `PATH` (root's `PATH` has `/usr/sbin`, others may not).
const NATS_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/bin", "/usr/bin"];

/// The newest PostgreSQL `bin` folder under `/usr/lib/postgresql/*/bin`, else
/// the folder of a `pg_ctl` on `PATH`.
pub(crate) fn find_postgres_bin() -> Result<PathBuf, HarnessError> {
    find_postgres_bin_from(Path::new(POSTGRES_ROOT), std::env::var_os("PATH"))
}

/// [`find_postgres_bin`] with the places to look passed in.
pub(crate) fn find_postgres_bin_from(
    root: &Path,
    path: Option<OsString>,
) -> Result<PathBuf, HarnessError> {
    newest_postgres_bin(root)
        .or_else(|| {
            let pg_ctl = find_on(path.as_deref(), "pg_ctl")?;
            let dir = pg_ctl.parent()?.to_path_buf();
            has_postgres_programs(&dir).then_some(dir)
        })
        .ok_or_else(|| HarnessError::NotInstalled {
            program: "PostgreSQL server binaries",
            looked_in: format!("{}/*/bin and PATH", root.display()),
            install: "apt-get install postgresql",
        })
}

/// The `bin` folder of the highest version under `root` that has every program we run.
fn newest_postgres_bin(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = version_key(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            has_postgres_programs(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; `None` for folders that are not versions.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn has_postgres_programs(dir: &Path) -> bool {
    POSTGRES_PROGRAMS
        .iter()
        .all(|program| is_executable(&dir.join(program)))
}

/// nats-server from `PATH`, else from the usual system folders.
pub(crate) fn find_nats_server() -> Result<PathBuf, HarnessError> {
    find_nats_server_from(std::env::var_os("PATH"), &NATS_DIRS)
}

/// [`find_nats_server`] with the places to look passed in.
pub(crate) fn find_nats_server_from(
    path: Option<OsString>,
    dirs: &[&str],
) -> Result<PathBuf, HarnessError> {
    find_on(path.as_deref(), "nats-server")
        .or_else(|| {
            dirs.iter()
                .map(|dir| Path::new(dir).join("nats-server"))
                .find(|path| is_executable(path))
        })
        .ok_or_else(|| HarnessError::NotInstalled {
            program: "nats-server",
            looked_in: format!("PATH, {}", dirs.join(", ")),
            install: "apt-get install nats-server",
        })
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    find_on(std::env::var_os("PATH").as_deref(), program)
}

fn find_on(path: Option<&OsStr>, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Which OS user the PostgreSQL programs run as.
#[derive(Clone, Debug)]
pub(crate) enum RunAs {
    /// Our own user: we are not root.
    Current,
    /// We are root, which PostgreSQL refuses; go through `runuser -u postgres`.
    Postgres {
        /// `runuser` itself.
        runuser: PathBuf,
        /// The `postgres` user's uid, for `chown`.
        uid: u32,
        /// The `postgres` user's primary gid, for `chown`.
        gid: u32,
    },
}

impl RunAs {
    /// `Postgres` when the effective uid is 0, else `Current`.
    pub(crate) fn detect() -> Result<Self, HarnessError> {
        if id(&["-u"])? != 0 {
            return Ok(Self::Current);
        }
        let runuser = find_on_path("runuser")
            .or_else(|| Some(PathBuf::from("/usr/sbin/runuser")).filter(|p| is_executable(p)))
            .ok_or_else(|| HarnessError::NotInstalled {
                program: "runuser (needed to run PostgreSQL as the postgres user while root)",
                looked_in: "PATH, /usr/sbin".to_owned(),
                install: "apt-get install util-linux",
            })?;
        let uid = id(&["-u", "postgres"]).map_err(|_| HarnessError::NoPostgresUser)?;
        let gid = id(&["-g", "postgres"]).map_err(|_| HarnessError::NoPostgresUser)?;
        Ok(Self::Postgres { runuser, uid, gid })
    }

    /// A command that runs `program` as the right user, from `cwd` (which
    /// that user can enter, unlike a root-only working directory).
    pub(crate) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut command = match self {
            Self::Current => Command::new(program),
            Self::Postgres { runuser, .. } => {
                let mut command = Command::new(runuser);
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            }
        };
        command.current_dir(cwd);
        command
    }

    /// Hands `path` to the `postgres` user when we run as root.
    pub(crate) fn chown(&self, path: &Path) -> Result<(), HarnessError> {
        match self {
            Self::Current => Ok(()),
            Self::Postgres { uid, gid, .. } => {
                std::os::unix::fs::chown(path, Some(*uid), Some(*gid)).map_err(|e| {
                    HarnessError::io(format!("chown {} to postgres", path.display()), e)
                })
            }
        }
    }

    /// The `runuser` path the watchdog needs, or "" when it runs programs directly.
    fn runuser_arg(&self) -> &OsStr {
        match self {
            Self::Current => OsStr::new(""),
            Self::Postgres { runuser, .. } => runuser.as_os_str(),
        }
    }
}

fn id(args: &[&str]) -> Result<u32, HarnessError> {
    let mut command = Command::new("id");
    command.args(args);
    let out = run(&mut command)?;
    out.trim().parse().map_err(|_| {
        HarnessError::io(
            format!("parsing the output of `id {}`: {out:?}", args.join(" ")),
            std::io::ErrorKind::InvalidData.into(),
        )
    })
}

/// Runs `command` to completion with no stdin; its stdout on success.
///
/// # Errors
/// [`HarnessError::Io`] if it cannot be spawned, [`HarnessError::CommandFailed`]
/// (with its output) if it exits unsuccessfully.
pub(crate) fn run(command: &mut Command) -> Result<String, HarnessError> {
    let described = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(format!("spawning {described}"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(HarnessError::CommandFailed {
        command: described,
        status: out.status,
        output: format!("{}\n{}", stderr.trim(), stdout.trim())
            .trim()
            .to_owned(),
    })
}

/// How many ports a start-up tries before giving up.
const PORT_ATTEMPTS: usize = 5;

/// Runs `start` on a port that was free a moment ago; another process may
/// take it before the service binds it, so while `start` fails with a log
/// saying so (`taken` appears in it), it is tried again on a new port.
pub(crate) fn on_a_free_port<T>(
    service: &'static str,
    taken: &str,
    mut start: impl FnMut(u16) -> Result<T, HarnessError>,
) -> Result<T, HarnessError> {
    let mut attempt = 1;
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .map_err(|e| HarnessError::io("finding a free port on 127.0.0.1", e))?;
        match start(port) {
            Err(HarnessError::Exited { log_tail, .. })
                if attempt < PORT_ATTEMPTS && log_tail.contains(taken) =>
            {
                tracing::debug!(
                    service,
                    port,
                    "port taken before the server bound it; retrying"
                );
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The current length of a log file (0 if it does not exist yet), so a later
/// [`log_since`] shows only what one start attempt wrote.
pub(crate) fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |meta| meta.len())
}

/// The log text written after byte `offset`.
pub(crate) fn log_since(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last lines of `text`, for error messages.
pub(crate) fn tail(text: &str) -> String {
    const LINES: usize = 20;
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// What the watchdog (and an explicit teardown) must clean up.
#[derive(Clone, Debug)]
pub(crate) struct Cleanup {
    /// The per-process temp dir; removed last.
    pub(crate) root: PathBuf,
    /// `pg_ctl` of the cluster.
    pub(crate) pg_ctl: PathBuf,
    /// The cluster's data directory.
    pub(crate) data_dir: PathBuf,
    /// Holds the pid of the running nats-server, if any.
    pub(crate) nats_pid_file: PathBuf,
    /// How to run `pg_ctl`.
    pub(crate) run_as: RunAs,
}

/// Polls for the test process (`$1`) every half second; once it is gone (or a
/// zombie), stops PostgreSQL at once, kills nats-server and removes the temp dir.
const WATCHDOG: &str = r#"
pid=$1 root=$2 pg_ctl=$3 data=$4 runuser=$5 nats_pid=$6
while kill -0 "$pid" 2>/dev/null; do
  stat=
  read -r stat < "/proc/$pid/stat" 2>/dev/null
  case "${stat##*") "}" in Z*) break ;; esac
  sleep 0.5
done
if [ -f "$data/postmaster.pid" ]; then
  if [ -n "$runuser" ]; then
    "$runuser" -u postgres -- "$pg_ctl" -D "$data" -m immediate stop
  else
    "$pg_ctl" -D "$data" -m immediate stop
  fi
fi
if [ -f "$nats_pid" ]; then kill -9 "$(cat "$nats_pid")"; fi
rm -rf "$root"
"#;

impl Cleanup {
    /// Starts the watchdog in its own session (or at least its own process
    /// group), so Ctrl-C in the terminal and the end of the test process do
    /// not take it down before it has cleaned up. It gets no stdio, so it
    /// cannot hold cargo's pipes open.
    pub(crate) fn spawn_watchdog(&self) -> Result<Child, HarnessError> {
        let mut command = match find_on_path("setsid") {
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
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("clinicbook-testkit-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .arg(&self.pg_ctl)
            .arg(&self.data_dir)
            .arg(self.run_as.runuser_arg())
            .arg(&self.nats_pid_file)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| HarnessError::io("spawning the clean-up watchdog (/bin/sh)", e))
    }

    /// Does now, in this process, what the watchdog would do at exit.
    /// Best effort: failures are logged, not returned.
    pub(crate) fn run_now(&self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let mut command = self.run_as.command(&self.pg_ctl, &self.root);
            command
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "stop"]);
            if let Err(error) = run(&mut command) {
                tracing::warn!(%error, "stopping the test PostgreSQL");
            }
        }
        if let Err(error) = fs::remove_dir_all(&self.root) {
            tracing::warn!(%error, root = %self.root.display(), "removing the test services' temp dir");
        }
    }
}
