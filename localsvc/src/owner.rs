//! Who runs the services of a var dir: the owner file `var/run/owner.pid`.
//!
//! One line, `<pid> <start> <watchdog pid> <watchdog start>`: the owning
//! process and its watchdog, each with its start time from `/proc`, so a
//! later process that reuses a pid is not mistaken for them. While the owner
//! lives, nobody else may start the services of that var dir. Once it is
//! gone, its watchdog stops the services and removes the file; a new owner
//! waits for a watchdog still doing that, and takes over a file whose
//! processes are both gone (the services they left running are then stopped
//! and started afresh by the caller).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process;
use crate::LocalError;

/// How long a new owner waits for the previous owner's watchdog to finish
/// stopping the services (`pg_ctl stop` waits up to 60 s, nats-server 10 s).
const WATCHDOG_WAIT: Duration = Duration::from_secs(90);

/// How often a claim is retried when other processes race for the file.
const CLAIM_ATTEMPTS: usize = 10;

/// The contents of an owner file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    pid: u32,
    start: u64,
    /// 0 until the watchdog runs.
    watchdog_pid: u32,
    watchdog_start: u64,
}

impl Record {
    /// This process, with `watchdog` if it runs already.
    fn current(watchdog: Option<u32>) -> Result<Self, LocalError> {
        let me = std::process::id();
        let start = |pid| {
            process::start_time(pid).ok_or_else(|| {
                LocalError::io(
                    format!("reading the start time of process {pid} from /proc"),
                    ErrorKind::NotFound.into(),
                )
            })
        };
        let (watchdog_pid, watchdog_start) = match watchdog {
            Some(pid) => (pid, start(pid)?),
            None => (0, 0),
        };
        Ok(Self {
            pid: me,
            start: start(me)?,
            watchdog_pid,
            watchdog_start,
        })
    }

    fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split_whitespace();
        let mut next = || fields.next();
        Some(Self {
            pid: next()?.parse().ok()?,
            start: next()?.parse().ok()?,
            watchdog_pid: next()?.parse().ok()?,
            watchdog_start: next()?.parse().ok()?,
        })
    }

    fn render(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.pid, self.start, self.watchdog_pid, self.watchdog_start
        )
    }

    fn owner_alive(&self) -> bool {
        process::start_time(self.pid) == Some(self.start)
    }

    fn watchdog_alive(&self) -> bool {
        self.watchdog_pid != 0
            && process::start_time(self.watchdog_pid) == Some(self.watchdog_start)
    }
}

/// A file next to `path` that only this process writes.
fn scratch(path: &Path, what: &str) -> PathBuf {
    path.with_extension(format!("{what}.{}", std::process::id()))
}

/// Writes `record` to `path` only if no such file exists: through a scratch
/// file and a hard link, so no reader ever sees it half written.
fn write_new(path: &Path, record: &Record) -> std::io::Result<()> {
    let tmp = scratch(path, "new");
    fs::write(&tmp, record.render())?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked
}

/// Makes this process the owner of the var dir whose owner file is `path`.
///
/// # Errors
/// [`LocalError::InUse`] while another live process (or the watchdog of one
/// that is gone, for longer than [`WATCHDOG_WAIT`]) owns it;
/// [`LocalError::Io`] if the file cannot be read or written.
pub(crate) fn claim(var_dir: &Path, path: &Path) -> Result<(), LocalError> {
    let me = Record::current(None)?;
    let io = |e| LocalError::io(format!("claiming {}", path.display()), e);
    for _ in 0..CLAIM_ATTEMPTS {
        match write_new(path, &me) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        let in_use = |pid| LocalError::InUse {
            var_dir: var_dir.to_path_buf(),
            pid,
        };
        if let Some(record) = Record::parse(&text) {
            if record.owner_alive() {
                return Err(in_use(record.pid));
            }
            if record.watchdog_alive() {
                tracing::info!(
                    watchdog = record.watchdog_pid,
                    "waiting for the previous run's watchdog to stop its services"
                );
                if !process::wait_until(WATCHDOG_WAIT, || !record.watchdog_alive()) {
                    return Err(in_use(record.watchdog_pid));
                }
            }
        }
        // Stale (or unreadable): move it aside, then make sure what we moved
        // is what we judged, not a live owner's file written meanwhile.
        let aside = scratch(path, "stale");
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        }
        if fs::read_to_string(&aside).ok().as_deref() != Some(text.as_str()) {
            let _ = fs::hard_link(&aside, path);
        } else {
            tracing::info!(owner = %text.trim(), "taking over a var dir whose owner is gone");
        }
        let _ = fs::remove_file(&aside);
    }
    Err(io(ErrorKind::WouldBlock.into()))
}

/// Adds `watchdog` to this process's owner file at `path`, so a later owner
/// waits for it.
///
/// # Errors
/// [`LocalError::Io`] if the file cannot be written.
pub(crate) fn record_watchdog(path: &Path, watchdog: u32) -> Result<(), LocalError> {
    let record = Record::current(Some(watchdog))?;
    let tmp = scratch(path, "update");
    fs::write(&tmp, record.render())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| LocalError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::Record;

    #[test]
    fn a_record_reads_back_what_it_wrote() {
        let record = Record {
            pid: 12,
            start: 345,
            watchdog_pid: 67,
            watchdog_start: 890,
        };
        assert_eq!(record.render(), "12 345 67 890\n");
        assert_eq!(Record::parse(&record.render()), Some(record));
        assert_eq!(Record::parse("12 345"), None);
        assert_eq!(Record::parse(""), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = Record::current(None).ok();
        assert!(me.is_some_and(|me| me.owner_alive() && !me.watchdog_alive()));
        let reused = me.map(|me| Record {
            start: me.start + 1,
            ..me
        });
        assert!(reused.is_some_and(|r| !r.owner_alive()));
    }
}
