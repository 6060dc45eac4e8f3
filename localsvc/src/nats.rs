//! A nats-server of our own with JetStream: throwaway (killed like a crash,
//! store in the temp dir) or persistent (stopped with SIGTERM, store in
//! `var/nats`).

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::process;
use crate::LocalError;

/// How long nats-server gets to accept a connection and greet with `INFO`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);

/// How long a persistent nats-server gets after SIGTERM to flush its
/// JetStream store and exit before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything needed to launch the server; cheap to clone into a blocking task.
#[derive(Clone, Debug)]
struct Launch {
    binary: PathBuf,
    port: u16,
    store_dir: PathBuf,
    log_file: PathBuf,
    /// Read by the watchdog to stop the server after the owning process is gone.
    pid_file: PathBuf,
    /// `None`: stop with SIGKILL, as a crash would (throwaway). `Some`: SIGTERM
    /// first, SIGKILL if it is still running after this long (persistent).
    grace: Option<Duration>,
}

impl Launch {
    /// Spawns the server and waits until it greets a client with `INFO`.
    fn spawn(&self) -> Result<Child, LocalError> {
        let log_start = process::log_len(&self.log_file);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|e| LocalError::io(format!("opening {}", self.log_file.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| LocalError::io("duplicating the nats log handle", e))?;
        let mut command = Command::new(&self.binary);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // Its own process group: Ctrl-C in the terminal must not kill it
        // behind our back (halfway through a fault test, or before `serve`
        // has shut down cleanly); we or the watchdog own its end.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .map_err(|e| LocalError::io(format!("spawning {}", self.binary.display()), e))?;
        fs::write(&self.pid_file, child.id().to_string())
            .map_err(|e| LocalError::io(format!("writing {}", self.pid_file.display()), e))?;
        match self.wait_ready(&mut child, log_start) {
            Ok(()) => Ok(child),
            Err(e) => {
                self.stop_child(&mut child);
                Err(e)
            }
        }
    }

    fn wait_ready(&self, child: &mut Child, log_start: u64) -> Result<(), LocalError> {
        let log_tail = || process::tail(&process::log_since(&self.log_file, log_start));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| LocalError::io("polling nats-server", e))?
            {
                return Err(LocalError::Exited {
                    service: "nats-server",
                    status,
                    log_tail: log_tail(),
                });
            }
            if greets(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LocalError::NotReady {
                    service: "nats-server",
                    waited: READY_TIMEOUT,
                    log_tail: log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the server (see [`grace`](Self::grace)), reaps it and forgets its
    /// pid so the watchdog cannot signal a process that later reuses it.
    fn stop_child(&self, child: &mut Child) {
        let _ = fs::remove_file(&self.pid_file);
        if let Some(grace) = self.grace {
            if process::signal(child.id(), "TERM")
                && process::wait_until(grace, || !matches!(child.try_wait(), Ok(None)))
            {
                return;
            }
            tracing::warn!(?grace, "nats-server did not exit after SIGTERM; killing it");
        }
        if let Err(error) = child.kill().and_then(|()| child.wait().map(drop)) {
            tracing::warn!(%error, "stopping nats-server");
        }
    }

    /// Stops a nats-server an earlier run left running on our store (its pid
    /// is still in the pid file, and its command line names our store
    /// directory), so its port and store are ours again.
    fn stop_leftover(&self) -> Result<(), LocalError> {
        let Some(pid) = fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
        else {
            return Ok(());
        };
        let store = self.store_dir.display().to_string();
        let ours = process::command_line(pid)
            .is_some_and(|line| line.contains("nats-server") && line.contains(&store));
        if ours && process::start_time(pid).is_some() {
            tracing::warn!(
                pid,
                "a nats-server left running by an earlier run; stopping it to start it afresh"
            );
            process::signal(pid, "TERM");
            let grace = self.grace.unwrap_or(STOP_GRACE);
            if !process::wait_until(grace, || process::start_time(pid).is_none()) {
                process::signal(pid, "KILL");
                if !process::wait_until(grace, || process::start_time(pid).is_none()) {
                    return Err(LocalError::NotReady {
                        service: "a nats-server left running by an earlier run (stopping it)",
                        waited: grace * 2,
                        log_tail: format!("pid {pid} still runs"),
                    });
                }
            }
        }
        fs::remove_file(&self.pid_file)
            .map_err(|e| LocalError::io(format!("removing {}", self.pid_file.display()), e))
    }
}

/// True once a TCP client on `port` receives the server's `INFO {...}` line.
pub(crate) fn greets(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

/// A nats-server of our own with JetStream, listening on 127.0.0.1. Its store
/// directory outlives [`stop`](Self::stop), so streams survive a restart.
/// Dropping it stops the server the way [`stop`](Self::stop) does.
#[derive(Debug)]
pub struct Nats {
    launch: Launch,
    /// The running server, if any. A `std` child (not tokio's) so it does not
    /// belong to the runtime of whichever task started it.
    child: Mutex<Option<Child>>,
}

impl Nats {
    /// Throwaway: starts nats-server on a free port with its store in
    /// `root/nats`, trying another port if the first was taken in the
    /// meantime. Blocking.
    pub(crate) fn launch_throwaway(root: &Path, binary: PathBuf) -> Result<Self, LocalError> {
        let launch = Launch {
            binary,
            port: 0,
            store_dir: root.join("nats"),
            log_file: root.join("nats.log"),
            pid_file: root.join("nats.pid"),
            grace: None,
        };
        Self::launch(launch, None)
    }

    /// Persistent: stops a server an earlier run left on `store_dir` (found
    /// through `pid_file`), then starts one on `preferred` if that is free,
    /// else on a free port. Blocking.
    pub(crate) fn launch_persistent(
        store_dir: &Path,
        log_file: &Path,
        pid_file: &Path,
        binary: PathBuf,
        preferred: u16,
    ) -> Result<Self, LocalError> {
        let launch = Launch {
            binary,
            port: 0,
            store_dir: store_dir.to_path_buf(),
            log_file: log_file.to_path_buf(),
            pid_file: pid_file.to_path_buf(),
            grace: Some(STOP_GRACE),
        };
        launch.stop_leftover()?;
        Self::launch(launch, Some(preferred))
    }

    fn launch(mut launch: Launch, preferred: Option<u16>) -> Result<Self, LocalError> {
        let child =
            process::on_a_port("nats-server", "address already in use", preferred, |port| {
                launch.port = port;
                launch.spawn()
            })?;
        tracing::debug!(port = launch.port, store_dir = %launch.store_dir.display(), "nats-server started");
        Ok(Self {
            launch,
            child: Mutex::new(Some(child)),
        })
    }

    /// The TCP port on 127.0.0.1; it stays the same across [`stop`](Self::stop)
    /// and [`start`](Self::start).
    pub fn port(&self) -> u16 {
        self.launch.port
    }

    /// The client URL, `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// The JetStream store directory (`-sd`).
    pub fn store_dir(&self) -> &Path {
        &self.launch.store_dir
    }

    /// The server's stdout and stderr.
    pub fn log_file(&self) -> &Path {
        &self.launch.log_file
    }

    /// Stops the server and waits for it to exit. A throwaway server is
    /// killed (SIGKILL, as a crash would, which is what fault tests want); a
    /// persistent one gets SIGTERM and 10 s to flush its store before
    /// SIGKILL. Does nothing if it is already stopped.
    ///
    /// # Errors
    /// [`LocalError::Task`] if the blocking wait could not run.
    pub async fn stop(&self) -> Result<(), LocalError> {
        let mut slot = self.child.lock().await;
        if let Some(mut child) = slot.take() {
            let launch = self.launch.clone();
            tokio::task::spawn_blocking(move || launch.stop_child(&mut child)).await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and store directory and
    /// returns once it greets clients. Does nothing if it is running.
    ///
    /// # Errors
    /// [`LocalError::Exited`] with the end of its log if it does not come up
    /// (for instance because something else took the port meanwhile),
    /// [`LocalError::NotReady`] if it does not answer in time.
    pub async fn start(&self) -> Result<(), LocalError> {
        let mut slot = self.child.lock().await;
        if let Some(child) = slot.as_mut() {
            match child.try_wait() {
                Ok(None) => return Ok(()),
                // Exited on its own: reap it and start a new one.
                Ok(Some(_)) | Err(_) => *slot = None,
            }
        }
        let launch = self.launch.clone();
        *slot = Some(tokio::task::spawn_blocking(move || launch.spawn()).await??);
        Ok(())
    }
}

impl Drop for Nats {
    /// Stops the server as [`stop`](Nats::stop) does, blocking.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().take() {
            self.launch.stop_child(&mut child);
        }
    }
}
