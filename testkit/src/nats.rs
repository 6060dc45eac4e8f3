//! A throwaway nats-server with JetStream, stored in the per-process temp dir.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::process;
use crate::HarnessError;

/// How long nats-server gets to accept a connection and greet with `INFO`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);

/// Everything needed to launch the server; cheap to clone into a blocking task.
#[derive(Clone, Debug)]
struct Launch {
    binary: PathBuf,
    port: u16,
    store_dir: PathBuf,
    log_file: PathBuf,
    /// Read by the watchdog to kill the server after the test process is gone.
    pid_file: PathBuf,
}

impl Launch {
    /// Spawns the server and waits until it greets a client with `INFO`.
    fn spawn(&self) -> Result<Child, HarnessError> {
        let log_start = process::log_len(&self.log_file);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|e| HarnessError::io(format!("opening {}", self.log_file.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the nats log handle", e))?;
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
        // Its own process group: Ctrl-C on the test run must not kill it
        // halfway through a fault test; the watchdog owns its end.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning {}", self.binary.display()), e))?;
        fs::write(&self.pid_file, child.id().to_string())
            .map_err(|e| HarnessError::io(format!("writing {}", self.pid_file.display()), e))?;
        match self.wait_ready(&mut child, log_start) {
            Ok(()) => Ok(child),
            Err(e) => {
                stop_child(&mut child, &self.pid_file);
                Err(e)
            }
        }
    }

    fn wait_ready(&self, child: &mut Child, log_start: u64) -> Result<(), HarnessError> {
        let log_tail = || process::tail(&process::log_since(&self.log_file, log_start));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| HarnessError::io("polling nats-server", e))?
            {
                return Err(HarnessError::Exited {
                    service: "nats-server",
                    status,
                    log_tail: log_tail(),
                });
            }
            if greets(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    service: "nats-server",
                    waited: READY_TIMEOUT,
                    log_tail: log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
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

/// Kills the server, reaps it and forgets its pid so the watchdog cannot kill
/// a process that later reuses it.
fn stop_child(child: &mut Child, pid_file: &Path) {
    let _ = fs::remove_file(pid_file);
    if let Err(error) = child.kill().and_then(|()| child.wait().map(drop)) {
        tracing::warn!(%error, "stopping nats-server");
    }
}

/// A nats-server of our own with JetStream, listening on 127.0.0.1. Its store
/// directory outlives [`stop`](Self::stop), so streams survive a restart.
#[derive(Debug)]
pub struct Nats {
    launch: Launch,
    /// The running server, if any. A `std` child (not tokio's) so it does not
    /// belong to the runtime of whichever test started it.
    child: Mutex<Option<Child>>,
}

impl Nats {
    /// Starts nats-server on a free port with its store in `root/nats`,
    /// trying another port if the first was taken in the meantime. Blocking.
    pub(crate) fn launch(root: &Path, binary: PathBuf) -> Result<Self, HarnessError> {
        let mut launch = Launch {
            binary,
            port: 0,
            store_dir: root.join("nats"),
            log_file: root.join("nats.log"),
            pid_file: root.join("nats.pid"),
        };
        let child = process::on_a_free_port("nats-server", "address already in use", |port| {
            launch.port = port;
            launch.spawn()
        })?;
        tracing::debug!(port = launch.port, "test nats-server started");
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

    /// Kills the server (SIGKILL, as a crash would) and waits for it to exit.
    /// Does nothing if it is already stopped. Meant for fault tests on a
    /// private [`Services`](crate::Services).
    ///
    /// # Errors
    /// [`HarnessError::Task`] if the blocking wait could not run.
    pub async fn stop(&self) -> Result<(), HarnessError> {
        let mut slot = self.child.lock().await;
        if let Some(mut child) = slot.take() {
            let pid_file = self.launch.pid_file.clone();
            tokio::task::spawn_blocking(move || stop_child(&mut child, &pid_file)).await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and store directory and
    /// returns once it greets clients. Does nothing if it is running.
    ///
    /// # Errors
    /// [`HarnessError::Exited`] with the end of its log if it does not come up
    /// (for instance because something else took the port meanwhile),
    /// [`HarnessError::NotReady`] if it does not answer in time.
    pub async fn start(&self) -> Result<(), HarnessError> {
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

    /// Kills the server now, for [`Services`](crate::Services)' `Drop`.
    pub(crate) fn kill_now(&mut self) {
        if let Some(mut child) = self.child.get_mut().take() {
            stop_child(&mut child, &self.launch.pid_file);
        }
    }
}
