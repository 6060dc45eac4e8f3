//! A real SMTP server for tests: Python's `aiosmtpd` (from PyPI), which
//! writes each message it accepts to a directory, with the envelope and the
//! message as Python's `email` package decodes it (an independent check of
//! how clinicbook encodes subjects and bodies).
//!
//! The interpreter is `CLINICBOOK_TEST_PYTHON` when set (it must have
//! `aiosmtpd`); otherwise a virtualenv under the target dir
//! (`target/smtp-venv`), made with `python3 -m venv` and
//! `pip install aiosmtpd==1.4.6` on first use. A lock directory keeps
//! parallel test binaries from making it at the same time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::HarnessError;

/// The pinned server package.
pub const AIOSMTPD: &str = "aiosmtpd==1.4.6";

const SCRIPT: &str = include_str!("server.py");

/// One message the server accepted.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Received {
    /// The envelope sender.
    pub mail_from: String,
    /// The envelope recipients.
    pub rcpt_tos: Vec<String>,
    /// The subject, decoded (RFC 2047).
    pub subject: String,
    /// The `From` header, decoded.
    pub from: String,
    /// The `To` header, decoded.
    pub to: String,
    /// The `Message-ID` header.
    pub message_id: String,
    /// The `Content-Language` header.
    pub content_language: String,
    /// The text/plain body, decoded.
    pub text: Option<String>,
    /// The text/html body, decoded.
    pub html: Option<String>,
    /// Each leaf part's `Content-Transfer-Encoding`.
    pub transfer_encodings: Vec<String>,
    /// The message as received (ASCII; anything else shows as U+FFFD).
    pub raw: String,
}

/// A running SMTP server; stopped (and its directory removed) when dropped.
pub struct SmtpServer {
    child: Child,
    _stdin: ChildStdin,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SmtpServer {
    /// Starts a server on a free port that accepts every message.
    ///
    /// # Errors
    /// Python or `aiosmtpd` cannot be had, or the server did not start.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_failing_first(0).await
    }

    /// Starts a server that answers the first `n` messages with a
    /// temporary failure (451), then accepts.
    ///
    /// # Errors
    /// As [`SmtpServer::start`].
    pub async fn start_failing_first(n: u32) -> Result<Self, HarnessError> {
        tokio::task::spawn_blocking(move || Self::start_blocking(n, None))
            .await
            .map_err(|e| HarnessError::Smtp(format!("start task: {e}")))?
    }

    /// Starts a server on `port` (a restart on the same address).
    ///
    /// # Errors
    /// As [`SmtpServer::start`].
    pub async fn start_on(port: u16) -> Result<Self, HarnessError> {
        tokio::task::spawn_blocking(move || Self::start_blocking(0, Some(port)))
            .await
            .map_err(|e| HarnessError::Smtp(format!("start task: {e}")))?
    }

    fn start_blocking(fail_first: u32, port: Option<u16>) -> Result<Self, HarnessError> {
        let python = python()?;
        let dir = std::env::temp_dir().join(format!(
            "clinicbook-smtp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let out = dir.join("received");
        std::fs::create_dir_all(&out).map_err(|e| io("creating its directory", &e))?;
        let script = dir.join("server.py");
        std::fs::write(&script, SCRIPT).map_err(|e| io("writing server.py", &e))?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = match port {
                Some(port) => port,
                None => free_port()?,
            };
            let mut child = Command::new(&python)
                .arg(&script)
                .arg(&out)
                .arg(port.to_string())
                .arg(fail_first.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| io("starting python", &e))?;
            let stdin = child.stdin.take();
            let ready = child
                .stdout
                .take()
                .map(BufReader::new)
                .and_then(|mut lines| {
                    let mut line = String::new();
                    lines.read_line(&mut line).ok()?;
                    Some(line)
                })
                .is_some_and(|line| line.trim() == "READY");
            match (ready, stdin) {
                (true, Some(stdin)) => {
                    return Ok(Self {
                        child,
                        _stdin: stdin,
                        port,
                        dir,
                    })
                }
                _ => {
                    let _ = child.kill();
                    let output = child.wait_with_output().ok();
                    last = output
                        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                        .unwrap_or_default();
                }
            }
        }
        Err(HarnessError::Smtp(format!(
            "aiosmtpd did not start: {last}"
        )))
    }

    /// `smtp://127.0.0.1:<port>`, for `CLINICBOOK_SMTP_URL`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far, in the order received.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("received")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect()
    }

    /// Polls until at least `n` messages arrived or `timeout` passed;
    /// answers what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= n || Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn io(what: &str, e: &std::io::Error) -> HarnessError {
    HarnessError::Smtp(format!("{what}: {e}"))
}

fn free_port() -> Result<u16, HarnessError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| io("finding a free port", &e))
}

/// The interpreter with `aiosmtpd`: `CLINICBOOK_TEST_PYTHON`, or the
/// virtualenv under the target dir, made on first use.
fn python() -> Result<PathBuf, HarnessError> {
    if let Some(python) = std::env::var_os("CLINICBOOK_TEST_PYTHON") {
        return Ok(PathBuf::from(python));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let venv = target.join("smtp-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".clinicbook-ready");
    if ready.exists() {
        return Ok(python);
    }
    let _lock = Lock::take(&target.join("smtp-venv.lock"))?;
    if ready.exists() {
        return Ok(python);
    }
    let run = |command: &mut Command, what: &str| -> Result<(), HarnessError> {
        let output = command.output().map_err(|e| io(what, &e))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(HarnessError::Smtp(format!(
                "{what} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    };
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv (Debian: apt-get install python3-venv)",
    )?;
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            AIOSMTPD,
        ]),
        "pip install aiosmtpd",
    )?;
    std::fs::write(&ready, AIOSMTPD).map_err(|e| io("marking the virtualenv ready", &e))?;
    Ok(python)
}

/// A lock directory, taken by creating it and given back by removing it; a
/// lock older than ten minutes is taken to be left by a process that died.
struct Lock(PathBuf);

impl Lock {
    fn take(path: &Path) -> Result<Self, HarnessError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating the target dir", &e))?;
        }
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => return Ok(Self(path.to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|at| SystemTime::now().duration_since(at).ok())
                        .is_some_and(|age| age > Duration::from_secs(600));
                    if stale {
                        let _ = std::fs::remove_dir(path);
                    } else if Instant::now() > deadline {
                        return Err(HarnessError::Smtp(format!(
                            "{} is held by another test binary",
                            path.display()
                        )));
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(e) => return Err(io("taking the virtualenv lock", &e)),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
