//! Finding programs, running them as the `postgres` user, free ports, log
//! tails and what we know about other processes.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::LocalError;

/// Where Debian and Ubuntu install the PostgreSQL server, one folder per major version.
const POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// The PostgreSQL programs the harness runs; all must sit in one `bin` folder.
const POSTGRES_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Folders tried for nats-server after `PATH` (root's `PATH` has `/usr/sbin`, others may not).
const NATS_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/bin", "/usr/bin"];

/// The newest PostgreSQL `bin` folder under `/usr/lib/postgresql/*/bin`, else
/// the folder of a `pg_ctl` on `PATH`. The folder holds `initdb`, `pg_ctl`
/// and `postgres`.
///
/// # Errors
/// [`LocalError::NotInstalled`], one line naming the package to install.
pub fn find_postgres_bin() -> Result<PathBuf, LocalError> {
    find_postgres_bin_from(Path::new(POSTGRES_ROOT), std::env::var_os("PATH"))
}

/// The `bin` folder for an existing cluster in `data_dir`: the one of the
/// major version in its `PG_VERSION` when that is installed (a cluster only
/// runs on the major version that created it), else [`find_postgres_bin`].
pub(crate) fn find_postgres_bin_for(data_dir: &Path) -> Result<PathBuf, LocalError> {
    let root = Path::new(POSTGRES_ROOT);
    fs::read_to_string(data_dir.join("PG_VERSION"))
        .ok()
        .map(|version| root.join(version.trim()).join("bin"))
        .filter(|bin| has_postgres_programs(bin))
        .map_or_else(find_postgres_bin, Ok)
}

/// [`find_postgres_bin`] with the places to look passed in: `root` holds one
/// folder per major version (`<root>/<version>/bin`), `path` is a `PATH`-style
/// list tried after it.
///
/// # Errors
/// [`LocalError::NotInstalled`] if neither has all three programs.
pub fn find_postgres_bin_from(root: &Path, path: Option<OsString>) -> Result<PathBuf, LocalError> {
    newest_postgres_bin(root)
        .or_else(|| {
            let pg_ctl = find_on(path.as_deref(), "pg_ctl")?;
            let dir = pg_ctl.parent()?.to_path_buf();
            has_postgres_programs(&dir).then_some(dir)
        })
        .ok_or_else(|| LocalError::NotInstalled {
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

/// nats-server from `PATH`, else from the usual system folders
/// (`/usr/sbin`, `/usr/local/bin`, `/usr/bin`).
///
/// # Errors
/// [`LocalError::NotInstalled`], one line naming the package to install.
pub fn find_nats_server() -> Result<PathBuf, LocalError> {
    find_nats_server_from(std::env::var_os("PATH"), &NATS_DIRS)
}

/// [`find_nats_server`] with the places to look passed in: a `PATH`-style
/// list, then `dirs`.
///
/// # Errors
/// [`LocalError::NotInstalled`] if none holds an executable `nats-server`.
pub fn find_nats_server_from(path: Option<OsString>, dirs: &[&str]) -> Result<PathBuf, LocalError> {
    find_on(path.as_deref(), "nats-server")
        .or_else(|| {
            dirs.iter()
                .map(|dir| Path::new(dir).join("nats-server"))
                .find(|path| is_executable(path))
        })
        .ok_or_else(|| LocalError::NotInstalled {
            program: "nats-server",
            looked_in: format!("PATH, {}", dirs.join(", ")),
            install: "apt-get install nats-server",
        })
}

pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
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
    pub(crate) fn detect() -> Result<Self, LocalError> {
        if id(&["-u"])? != 0 {
            return Ok(Self::Current);
        }
        let runuser = find_on_path("runuser")
            .or_else(|| Some(PathBuf::from("/usr/sbin/runuser")).filter(|p| is_executable(p)))
            .ok_or_else(|| LocalError::NotInstalled {
                program: "runuser (needed to run PostgreSQL as the postgres user while root)",
                looked_in: "PATH, /usr/sbin".to_owned(),
                install: "apt-get install util-linux",
            })?;
        let uid = id(&["-u", "postgres"]).map_err(|_| LocalError::NoPostgresUser)?;
        let gid = id(&["-g", "postgres"]).map_err(|_| LocalError::NoPostgresUser)?;
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
    pub(crate) fn chown(&self, path: &Path) -> Result<(), LocalError> {
        match self {
            Self::Current => Ok(()),
            Self::Postgres { uid, gid, .. } => {
                std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                    .map_err(|e| LocalError::io(format!("chown {} to postgres", path.display()), e))
            }
        }
    }

    /// Fails with [`LocalError::Unreachable`] unless the user the PostgreSQL
    /// programs run as can enter and write `dir`.
    pub(crate) fn check_reachable(&self, dir: &Path) -> Result<(), LocalError> {
        let Self::Postgres { runuser, .. } = self else {
            return Ok(());
        };
        let mut command = Command::new(runuser);
        command
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(dir)
            .arg("-a")
            .arg("-x")
            .arg(dir)
            .current_dir("/");
        match run(&mut command) {
            Ok(_) => Ok(()),
            Err(LocalError::CommandFailed { .. }) => Err(LocalError::Unreachable {
                dir: dir.to_path_buf(),
            }),
            Err(other) => Err(other),
        }
    }

    /// The `runuser` path the watchdog needs, or "" when it runs programs directly.
    pub(crate) fn runuser_arg(&self) -> &OsStr {
        match self {
            Self::Current => OsStr::new(""),
            Self::Postgres { runuser, .. } => runuser.as_os_str(),
        }
    }
}

fn id(args: &[&str]) -> Result<u32, LocalError> {
    let mut command = Command::new("id");
    command.args(args);
    let out = run(&mut command)?;
    out.trim().parse().map_err(|_| {
        LocalError::io(
            format!("parsing the output of `id {}`: {out:?}", args.join(" ")),
            std::io::ErrorKind::InvalidData.into(),
        )
    })
}

/// Runs `command` to completion with no stdin; its stdout on success.
///
/// # Errors
/// [`LocalError::Io`] if it cannot be spawned, [`LocalError::CommandFailed`]
/// (with its output) if it exits unsuccessfully.
pub(crate) fn run(command: &mut Command) -> Result<String, LocalError> {
    let described = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LocalError::io(format!("spawning {described}"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(LocalError::CommandFailed {
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
    start: impl FnMut(u16) -> Result<T, LocalError>,
) -> Result<T, LocalError> {
    on_a_port(service, taken, None, start)
}

/// [`on_a_free_port`], but the first attempt is on `preferred` if nothing
/// listens there now; later attempts (and the first one, if `preferred` is
/// taken) are on free ports the system picks.
pub(crate) fn on_a_port<T>(
    service: &'static str,
    taken: &str,
    preferred: Option<u16>,
    mut start: impl FnMut(u16) -> Result<T, LocalError>,
) -> Result<T, LocalError> {
    let mut attempt = 1;
    let mut preferred = preferred.filter(|&port| port_is_free(port));
    loop {
        let port = match preferred.take() {
            Some(port) => port,
            None => TcpListener::bind(("127.0.0.1", 0))
                .and_then(|listener| listener.local_addr())
                .map(|addr| addr.port())
                .map_err(|e| LocalError::io("finding a free port on 127.0.0.1", e))?,
        };
        match start(port) {
            Err(LocalError::Exited { log_tail, .. })
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

/// Whether a server could bind 127.0.0.1:`port` now.
pub(crate) fn port_is_free(port: u16) -> bool {
    port != 0 && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The start time of process `pid` (clock ticks after boot, from
/// `/proc/<pid>/stat`), which tells a process from a later one that reuses
/// its pid; `None` if there is no such process or it is a zombie.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields
    // after its closing parenthesis start with the state (field 3).
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    // Field 22 is the start time: 18 fields after the state.
    fields.nth(18)?.parse().ok()
}

/// The command line of process `pid`, arguments joined by spaces.
pub(crate) fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .split('\0')
            .filter(|arg| !arg.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Sends `signal` (`"TERM"`, `"KILL"`) to `pid` with the shell's `kill`
/// builtin (there may be no kill(1) on a slim system); whether it was
/// delivered.
pub(crate) fn signal(pid: u32, signal: &str) -> bool {
    Command::new("/bin/sh")
        .args([
            "-c",
            r#"kill -s "$1" "$2""#,
            "clinicbook-localsvc-kill",
            signal,
        ])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Polls `done` every 50 ms until it holds or `timeout` passes; whether it held.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
