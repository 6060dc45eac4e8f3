//! `book --spawn`: a `clinicbook serve` process of the run's own, on a free
//! loopback port over a throwaway PostgreSQL, without rate limit, stopped
//! (with its database cluster) when the guard is dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clinicbook_testkit::Services;
use uuid::Uuid;

/// How long the server may take to answer `/healthz` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often `/healthz` is asked while the server starts.
const HEALTH_POLL: Duration = Duration::from_millis(100);

/// Lines of the server's log quoted when it fails.
const LOG_TAIL_LINES: usize = 20;

/// A running `clinicbook serve`; dropping it kills the process, removes its
/// temp dir and stops the PostgreSQL cluster it used.
pub struct Server {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// An admin token signed with the server's secret.
    pub admin_token: String,
    child: Child,
    /// The server's log and var dir.
    dir: PathBuf,
    /// Dropped after the server is killed (fields drop after `Drop::drop`).
    _services: Services,
}

impl Server {
    /// Starts a throwaway PostgreSQL, then `<bin> serve` against a fresh
    /// database in it, with `CLINICBOOK_RATE_LIMIT=0` and a random
    /// `CLINICBOOK_JWT_SECRET`; mints an admin token with `<bin> token` and
    /// the same secret, and waits until `/healthz` answers.
    ///
    /// # Errors
    /// `bin` is missing, PostgreSQL cannot be started, the server or the
    /// token command fails, or the server does not answer in time (the
    /// error quotes the end of its log).
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        if !bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p clinicbook-api` \
                 (with the same CARGO_TARGET_DIR) or pass --bin",
                bin.display()
            );
        }
        let services = Services::start()
            .await
            .context("starting a throwaway PostgreSQL")?;
        let db = services
            .try_database(&clinicbook_eventstore::MIGRATOR)
            .await
            .context("creating the benchmark database")?;
        // The server brings its own pool; this one would only hold a connection.
        db.pool.close().await;

        let dir =
            std::env::temp_dir().join(format!("clinicbook-bench-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let env = [
            ("DATABASE_URL", db.url.clone()),
            ("CLINICBOOK_BIND", format!("127.0.0.1:{port}")),
            ("CLINICBOOK_RATE_LIMIT", "0".to_string()),
            ("CLINICBOOK_JWT_SECRET", secret),
            ("CLINICBOOK_VAR_DIR", dir.join("var").display().to_string()),
            // The read side (relay, projectors) runs over it.
            ("NATS_URL", services.nats.url()),
        ];
        let log_path = dir.join("server.log");
        let child = match spawn_serve(bin, &env, &log_path) {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on, dropping `server` cleans everything up.
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            admin_token: String::new(),
            child,
            dir,
            _services: services,
        };
        server.admin_token = mint_admin_token(bin, &env).await?;
        server.wait_healthy().await?;
        eprintln!(
            "started {} serve at {} (database {}, log {})",
            bin.display(),
            server.url,
            db.name,
            log_path.display()
        );
        Ok(server)
    }

    /// Fails with the end of the server's log if it is no longer running,
    /// so figures of a run against a crashed server are never reported.
    ///
    /// # Errors
    /// The server exited, or its state cannot be read.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self
            .child
            .try_wait()
            .context("checking the clinicbook server")?
        {
            Some(status) => bail!(
                "clinicbook serve exited ({status}); its log ends with:\n{}",
                self.log_tail()
            ),
            None => Ok(()),
        }
    }

    /// Polls `/healthz` until it answers 200, the process exits or
    /// [`START_TIMEOUT`] passes.
    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        let url = format!("{}/healthz", self.url);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.ensure_running()?;
            if let Ok(answer) = client.get(&url).send().await {
                if answer.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "clinicbook serve did not answer {url} within {} s; its log ends with:\n{}",
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// The last lines of the server's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Fails only if it already exited, which `wait` then reaps.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago (the OS picks it).
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// `<bin> serve` with `env`, its output written to `log`.
fn spawn_serve(bin: &Path, env: &[(&str, String)], log: &Path) -> anyhow::Result<Child> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("opening {}", log.display()))?;
    Command::new(bin)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {} serve", bin.display()))
}

/// `<bin> token --role admin --sub bench` with the server's secret.
async fn mint_admin_token(bin: &Path, env: &[(&str, String)]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(bin)
        .args(["token", "--role", "admin", "--sub", "bench"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} token", bin.display()))?;
    if !output.status.success() {
        bail!(
            "{} token failed ({}): {}",
            bin.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let token = String::from_utf8(output.stdout)
        .context("the token is not UTF-8")?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("{} token printed nothing", bin.display());
    }
    Ok(token)
}
