//! `--spawn` and `all`: a `clinicbook serve` process of the run's own, on a
//! free loopback port over a fresh database, without rate limit, stopped
//! when the guard is dropped. The database lives on a [`Backend`]: a
//! throwaway PostgreSQL and nats-server the run starts itself, or the
//! PostgreSQL and NATS given by `DATABASE_URL` / `NATS_URL` (databases are
//! created there for the run and dropped after it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clinicbook_testkit::Services;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::http::Api;

/// How long the server may take to answer `/healthz` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often `/healthz` is asked while the server starts.
const HEALTH_POLL: Duration = Duration::from_millis(100);

/// Lines of the server's log quoted when it fails.
const LOG_TAIL_LINES: usize = 20;

/// The server a benchmark talks to: a running one (`--url` and `--token`)
/// or one started for the run (`--spawn`). Flattened into the options of
/// each benchmark that goes through the HTTP API.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Base URL of a running server, e.g. http://127.0.0.1:8080. Run it with
    /// CLINICBOOK_RATE_LIMIT=0, or the clients are answered 429.
    #[arg(long, required_unless_present = "spawn", requires = "token")]
    url: Option<String>,
    /// An admin token for --url (`clinicbook token --role admin --sub bench`
    /// with the server's secret).
    #[arg(long, conflicts_with = "spawn")]
    token: Option<String>,
    /// Start `clinicbook serve` (API, relay, projectors and scheduler) for
    /// the run instead: on a free loopback port, over a throwaway
    /// PostgreSQL, without rate limit; killed at the end.
    #[arg(long, conflicts_with = "url")]
    spawn: bool,
    /// The `clinicbook` binary that --spawn starts.
    #[arg(long, default_value = "target/release/clinicbook")]
    bin: PathBuf,
}

impl Target {
    /// Starts the server with `--spawn`, and a client of it (or of `--url`)
    /// whose requests may take `timeout` each. Keep the server while the
    /// run lasts: dropping it stops the server.
    ///
    /// # Errors
    /// The server cannot be started, neither `--url` and `--token` nor
    /// `--spawn` is given, or the URL is not `http://`.
    pub async fn connect(&self, timeout: Duration) -> anyhow::Result<(Option<Server>, Api)> {
        let server = if self.spawn {
            Some(Server::start(&self.bin).await?)
        } else {
            None
        };
        let (url, token) = match (&server, &self.url, &self.token) {
            (Some(server), _, _) => (server.url.clone(), server.admin_token.clone()),
            (None, Some(url), Some(token)) => (url.clone(), token.clone()),
            _ => bail!("give --url and --token, or --spawn"),
        };
        let api = Api::new(&url, token, timeout)?;
        Ok((server, api))
    }
}

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
    /// The backend `start` made for this server alone, dropped after the
    /// server is killed (fields drop after `Drop::drop`).
    _own: Option<Backend>,
}

impl Server {
    /// Starts a throwaway PostgreSQL, then `<bin> serve` against a fresh
    /// database in it, with everything (`--role all`); see
    /// [`Server::spawn`].
    ///
    /// # Errors
    /// PostgreSQL cannot be started, or as [`Server::spawn`].
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin, &[]).await
    }

    /// [`Server::start`] with `extra` environment variables for the server.
    ///
    /// # Errors
    /// As [`Server::start`].
    pub async fn start_with(bin: &Path, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        check_bin(bin)?;
        let backend = Backend::start(None, None).await?;
        let db = backend.database().await?;
        let mut server = Self::spawn_with(bin, &backend, &db, "all", extra).await?;
        server._own = Some(backend);
        Ok(server)
    }

    /// `<bin> serve --role <role>` against `db` and the backend's NATS (in
    /// a namespace named after the database), with
    /// `CLINICBOOK_RATE_LIMIT=0` and a random `CLINICBOOK_JWT_SECRET`;
    /// mints an admin token with `<bin> token` and the same secret, and
    /// waits until `/healthz` answers.
    ///
    /// # Errors
    /// `bin` is missing, the server or the token command fails, or the
    /// server does not answer in time (the error quotes the end of its log).
    pub async fn spawn(
        bin: &Path,
        backend: &Backend,
        db: &BenchDb,
        role: &str,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(bin, backend, db, role, &[]).await
    }

    /// [`Server::spawn`] with `extra` environment variables for the server.
    ///
    /// # Errors
    /// As [`Server::spawn`].
    pub async fn spawn_with(
        bin: &Path,
        backend: &Backend,
        db: &BenchDb,
        role: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        check_bin(bin)?;
        let dir =
            std::env::temp_dir().join(format!("clinicbook-bench-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let mut env = vec![
            ("DATABASE_URL", db.url.clone()),
            ("CLINICBOOK_BIND", format!("127.0.0.1:{port}")),
            ("CLINICBOOK_RATE_LIMIT", "0".to_string()),
            ("CLINICBOOK_JWT_SECRET", secret),
            ("CLINICBOOK_VAR_DIR", dir.join("var").display().to_string()),
            ("CLINICBOOK_ROLE", role.to_string()),
            // The read side (relay, projectors) runs over it.
            ("NATS_URL", backend.nats_url()),
            ("CLINICBOOK_NATS_NAMESPACE", db.name.clone()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
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
            _own: None,
        };
        server.admin_token = mint_admin_token(bin, &env).await?;
        server.wait_healthy().await?;
        eprintln!(
            "started {} serve --role {role} at {} (database {}, log {})",
            bin.display(),
            server.url,
            db.name,
            log_path.display()
        );
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// Fails with how to build `bin` when it is missing.
fn check_bin(bin: &Path) -> anyhow::Result<()> {
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p clinicbook-api` \
             (with the same CARGO_TARGET_DIR) or pass --bin",
            bin.display()
        );
    }
    Ok(())
}

/// Where a run's databases and NATS live.
pub enum Backend {
    /// A throwaway PostgreSQL cluster and nats-server of the run's own
    /// (the test harness's: fsync off).
    Own(Box<Services>),
    /// A PostgreSQL and NATS the run was given.
    Given {
        /// URL of a database to connect to for `CREATE DATABASE`.
        admin_url: String,
        /// NATS URL.
        nats_url: String,
    },
}

/// A fresh, migrated database of a run.
#[derive(Clone, Debug)]
pub struct BenchDb {
    /// Its name, `bench_<uuid>` (or the harness's `t_<uuid>`).
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl Backend {
    /// The given PostgreSQL (`database_url`, where databases are created)
    /// and NATS, or a throwaway pair when neither is given.
    ///
    /// # Errors
    /// Only one of the two is given, or the throwaway services cannot be
    /// started.
    pub async fn start(
        database_url: Option<String>,
        nats_url: Option<String>,
    ) -> anyhow::Result<Self> {
        match (database_url, nats_url) {
            (Some(admin_url), Some(nats_url)) => Ok(Backend::Given {
                admin_url,
                nats_url,
            }),
            (None, None) => {
                let services = Services::start()
                    .await
                    .context("starting a throwaway PostgreSQL and nats-server")?;
                Ok(Backend::Own(Box::new(services)))
            }
            _ => bail!("give both DATABASE_URL and NATS_URL, or neither"),
        }
    }

    /// What the figures were measured against, for the report.
    pub fn describe(&self) -> String {
        match self {
            Backend::Own(_) => {
                "a throwaway PostgreSQL started by the run (fsync off, as the test harness)"
                    .to_string()
            }
            Backend::Given { admin_url, .. } => {
                let mut url = reqwest::Url::parse(admin_url).ok();
                if let Some(url) = &mut url {
                    let _ = url.set_password(None);
                }
                format!(
                    "the given PostgreSQL {}",
                    url.map_or_else(|| "(DATABASE_URL)".to_string(), |u| u.to_string())
                )
            }
        }
    }

    /// The NATS servers' URL.
    pub fn nats_url(&self) -> String {
        match self {
            Backend::Own(services) => services.nats.url(),
            Backend::Given { nats_url, .. } => nats_url.clone(),
        }
    }

    /// A fresh database with every migration applied.
    ///
    /// # Errors
    /// PostgreSQL refuses, or a migration fails.
    pub async fn database(&self) -> anyhow::Result<BenchDb> {
        match self {
            Backend::Own(services) => {
                let db = services
                    .try_database(&clinicbook_eventstore::MIGRATOR)
                    .await
                    .context("creating a benchmark database")?;
                // Whoever uses it brings a pool of its own.
                db.pool.close().await;
                Ok(BenchDb {
                    name: db.name,
                    url: db.url,
                })
            }
            Backend::Given { admin_url, .. } => {
                let name = format!("bench_{}", Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(admin_url)
                    .await
                    .context("connecting to DATABASE_URL")?;
                admin
                    .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
                    .await
                    .with_context(|| format!("CREATE DATABASE {name}"))?;
                admin.close().await?;
                let mut url = reqwest::Url::parse(admin_url).context("DATABASE_URL")?;
                url.set_path(&name);
                let db = BenchDb {
                    name,
                    url: url.to_string(),
                };
                let pool = clinicbook_eventstore::connect(&db.url, 1).await?;
                clinicbook_eventstore::migrate(&pool).await?;
                pool.close().await;
                Ok(db)
            }
        }
    }

    /// Drops `db` (and, on a given NATS, the events stream of its
    /// namespace); failures are reported, not fatal.
    pub async fn drop_database(&self, db: &BenchDb) {
        let Backend::Given {
            admin_url,
            nats_url,
        } = self
        else {
            // The throwaway cluster goes away as a whole.
            return;
        };
        let dropped = async {
            let mut admin = PgConnection::connect(admin_url).await?;
            admin
                .execute(format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, db.name).as_str())
                .await?;
            admin.close().await
        };
        if let Err(e) = dropped.await {
            eprintln!("could not drop the benchmark database {}: {e}", db.name);
        }
        let stream = clinicbook_eventstore::relay::Topology::namespaced(&db.name).stream;
        let deleted = async {
            let client = async_nats::connect(nats_url.as_str()).await?;
            async_nats::jetstream::new(client)
                .delete_stream(&stream)
                .await
                .map(drop)
                .map_err(anyhow::Error::from)
        };
        match deleted.await {
            // A server without a relay (`--role api`) never made it.
            Err(e) if e.to_string().contains("stream not found") => {}
            Err(e) => eprintln!("could not delete the NATS stream {stream}: {e}"),
            Ok(()) => {}
        }
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
