//! Integration tests of the local services, against real PostgreSQL and nats-server.
//!
//! Persistent var dirs across restarts, crashes and leftovers of an earlier
//! run; taken ports; finding the binaries (in `finding`).

mod finding;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use clinicbook_localsvc::{LocalError, LocalServices, Ports};
use sqlx::{Connection as _, PgConnection};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// Tells the test binary, run again as a child process, which var dir
/// [`child_owns_services`] starts.
const CHILD_VAR: &str = "CLINICBOOK_LOCALSVC_IT_VAR";

/// The PostgreSQL and nats-server ports the child prefers, `"<pg> <nats>"`.
const CHILD_PORTS: &str = "CLINICBOOK_LOCALSVC_IT_PORTS";

/// A fresh var dir under the temp dir, removed (with whatever the servers
/// left in it) on drop.
struct VarDir(PathBuf);

impl VarDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "clinicbook-localsvc-it-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir)?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for VarDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two ports nothing listens on right now.
fn free_ports() -> anyhow::Result<Ports> {
    let postgres = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let nats = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(Ports {
        postgres: postgres.local_addr()?.port(),
        nats: nats.local_addr()?.port(),
    })
}

/// Whether anything accepts TCP connections on 127.0.0.1:`port`.
async fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// Polls `check` until it holds, for up to `secs` seconds.
async fn eventually<F: std::future::Future<Output = bool>>(
    secs: u64,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

/// Whether process `pid` exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .get(stat.rfind(')')? + 1..)?
                .split_whitespace()
                .next()?;
            Some(state != "Z")
        })
        .unwrap_or(false)
}

/// The first number in `path` (a pid file's first line).
fn pid_in(path: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    text.split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("no pid in {}", path.display()))
}

/// `CREATE TABLE visits` with one row, through `url`.
async fn write_a_row(url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::Executor::execute(
        &mut conn,
        "CREATE TABLE visits (id INT PRIMARY KEY, note TEXT NOT NULL); \
         INSERT INTO visits VALUES (1, 'kept');",
    )
    .await?;
    conn.close().await?;
    Ok(())
}

/// The row [`write_a_row`] wrote, read through `url`.
async fn read_the_row(url: &str) -> anyhow::Result<String> {
    let mut conn = PgConnection::connect(url).await?;
    let note = sqlx::query_scalar("SELECT note FROM visits WHERE id = 1")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(note)
}

/// One NATS request over the raw client protocol: the reply's payload.
async fn nats_request(url: &str, subject: &str, payload: &str) -> anyhow::Result<String> {
    let address = url
        .strip_prefix("nats://")
        .with_context(|| format!("not a nats URL: {url}"))?;
    let exchange = async {
        let stream = TcpStream::connect(address).await?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let info = lines.next_line().await?.unwrap_or_default();
        anyhow::ensure!(info.starts_with("INFO "), "no INFO greeting: {info}");
        write
            .write_all(
                format!(
                    "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB it.reply 1\r\n\
                     PUB {subject} it.reply {}\r\n{payload}\r\n",
                    payload.len()
                )
                .as_bytes(),
            )
            .await?;
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("MSG it.reply ") {
                return Ok(lines.next_line().await?.unwrap_or_default());
            }
            if line.starts_with("PING") {
                write.write_all(b"PONG\r\n").await?;
            }
            anyhow::ensure!(!line.starts_with("-ERR"), "nats-server: {line}");
        }
        anyhow::bail!("nats-server closed the connection")
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .context("no reply from nats-server within 20 s")?
}

/// Creates the file-backed JetStream stream `VISITS`.
async fn create_a_stream(nats_url: &str) -> anyhow::Result<()> {
    let reply = nats_request(
        nats_url,
        "$JS.API.STREAM.CREATE.VISITS",
        r#"{"name":"VISITS","subjects":["visits.>"],"storage":"file"}"#,
    )
    .await?;
    anyhow::ensure!(
        reply.contains(r#""name":"VISITS""#) && !reply.contains(r#""error""#),
        "stream not created: {reply}"
    );
    Ok(())
}

/// Whether JetStream knows the stream `VISITS`.
async fn stream_exists(nats_url: &str) -> anyhow::Result<bool> {
    let reply = nats_request(nats_url, "$JS.API.STREAM.INFO.VISITS", "").await?;
    Ok(reply.contains(r#""name":"VISITS""#) && !reply.contains(r#""error""#))
}

#[tokio::test]
async fn data_survives_a_restart_of_the_services() -> anyhow::Result<()> {
    let var = VarDir::new()?;
    let first = LocalServices::start_persistent(var.path()).await?;
    assert!(first.is_persistent());
    let url = first.database_url();
    assert!(
        url.starts_with("postgres://postgres@127.0.0.1:") && url.ends_with("/clinicbook"),
        "{url}"
    );
    assert_eq!(
        first.nats_url(),
        format!("nats://127.0.0.1:{}", first.nats.port())
    );
    write_a_row(&url).await?;
    create_a_stream(&first.nats_url()).await?;

    let described = first.describe();
    let var_dir = std::fs::canonicalize(var.path())?;
    for part in [
        var_dir.display().to_string(),
        url.clone(),
        first.nats_url(),
        var_dir
            .join("log")
            .join("postgres.log")
            .display()
            .to_string(),
        var_dir.join("log").join("nats.log").display().to_string(),
    ] {
        assert!(
            described.contains(&part),
            "{part} missing from:\n{described}"
        );
    }
    assert!(!described.ends_with('\n'));

    let (pg_port, nats_port) = (first.postgres.port(), first.nats.port());
    first.shutdown().await?;
    assert!(
        !accepts(pg_port).await,
        "PostgreSQL still runs after shutdown"
    );
    assert!(
        !accepts(nats_port).await,
        "nats-server still runs after shutdown"
    );
    assert!(var_dir.join("postgres").join("PG_VERSION").is_file());
    assert!(!var_dir.join("postgres").join("postmaster.pid").exists());
    assert!(var_dir.join("nats").join("jetstream").is_dir());
    assert!(!var_dir.join("run").join("owner.pid").exists());
    assert!(!var_dir.join("run").join("nats.pid").exists());

    let second = LocalServices::start_persistent(var.path()).await?;
    assert_eq!(read_the_row(&second.database_url()).await?, "kept");
    assert!(
        stream_exists(&second.nats_url()).await?,
        "the stream is gone"
    );
    second.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn dropping_without_shutdown_stops_the_servers_and_keeps_the_data() -> anyhow::Result<()> {
    let var = VarDir::new()?;
    let ports = free_ports()?;
    let services = LocalServices::start_persistent_on(var.path(), ports).await?;
    assert_eq!(
        services.database_url(),
        format!(
            "postgres://postgres@127.0.0.1:{}/clinicbook",
            ports.postgres
        )
    );
    assert_eq!(
        services.nats_url(),
        format!("nats://127.0.0.1:{}", ports.nats)
    );
    assert!(
        !services.describe().contains("note:"),
        "{}",
        services.describe()
    );
    write_a_row(&services.database_url()).await?;
    tokio::task::spawn_blocking(move || drop(services)).await?;
    assert!(!accepts(ports.postgres).await);
    assert!(!accepts(ports.nats).await);
    assert!(!var.path().join("run").join("owner.pid").exists());

    let again = LocalServices::start_persistent_on(var.path(), ports).await?;
    assert_eq!(read_the_row(&again.database_url()).await?, "kept");
    again.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_var_dir_runs_the_services_of_one_process_at_a_time() -> anyhow::Result<()> {
    let var = VarDir::new()?;
    let first = LocalServices::start_persistent_on(var.path(), free_ports()?).await?;
    let second = LocalServices::start_persistent_on(var.path(), free_ports()?).await;
    match second {
        Err(LocalError::InUse { pid, .. }) => assert_eq!(pid, std::process::id()),
        other => anyhow::bail!("expected InUse, got {other:?}"),
    }
    // The refused start touched nothing: the first still serves.
    write_a_row(&first.database_url()).await?;
    first.shutdown().await?;

    let third = LocalServices::start_persistent_on(var.path(), free_ports()?).await?;
    assert_eq!(read_the_row(&third.database_url()).await?, "kept");
    third.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn taken_ports_are_replaced_by_free_ones_and_described() -> anyhow::Result<()> {
    let var = VarDir::new()?;
    let postgres_squatter = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let nats_squatter = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let taken = Ports {
        postgres: postgres_squatter.local_addr()?.port(),
        nats: nats_squatter.local_addr()?.port(),
    };
    let services = LocalServices::start_persistent_on(var.path(), taken).await?;
    let (pg_port, nats_port) = (services.postgres.port(), services.nats.port());
    assert_ne!(pg_port, taken.postgres);
    assert_ne!(nats_port, taken.nats);
    let described = services.describe();
    for note in [
        format!(
            "port {} is taken by another program, so PostgreSQL listens on {pg_port}",
            taken.postgres
        ),
        format!(
            "port {} is taken by another program, so nats-server listens on {nats_port}",
            taken.nats
        ),
    ] {
        assert!(
            described.contains(&note),
            "{note:?} missing from:\n{described}"
        );
    }
    write_a_row(&services.database_url()).await?;
    services.shutdown().await?;
    Ok(())
}

/// Runs [`child_owns_services`] in a child process on `var` and `ports`;
/// returns once it has written its row, with the child still running.
async fn spawn_owner(var: &Path, ports: Ports) -> anyhow::Result<tokio::process::Child> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "child_owns_services", "--ignored", "--nocapture"])
        .env(CHILD_VAR, var)
        .env(CHILD_PORTS, format!("{} {}", ports.postgres, ports.nats))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let ready = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            if line == "READY" {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the child ended without starting its services")
    };
    tokio::time::timeout(Duration::from_secs(120), ready)
        .await
        .context("the child did not start its services within 120 s")??;
    Ok(child)
}

/// Not a test of its own: the child process of the crash tests, which starts
/// the services of the var dir in [`CHILD_VAR`], writes a row, says `READY`
/// and waits to be killed.
#[tokio::test]
#[ignore = "run as a child process by the tests that kill it"]
async fn child_owns_services() -> anyhow::Result<()> {
    let Some(var) = std::env::var_os(CHILD_VAR) else {
        return Ok(());
    };
    let ports = std::env::var(CHILD_PORTS)?;
    let (postgres, nats) = ports.split_once(' ').context("bad ports")?;
    let ports = Ports {
        postgres: postgres.parse()?,
        nats: nats.parse()?,
    };
    let services = LocalServices::start_persistent_on(Path::new(&var), ports).await?;
    write_a_row(&services.database_url()).await?;
    create_a_stream(&services.nats_url()).await?;
    println!("READY");
    tokio::time::sleep(Duration::from_secs(600)).await;
    drop(services);
    Ok(())
}

#[tokio::test]
async fn when_the_owner_is_killed_the_watchdog_stops_the_servers_and_keeps_the_data(
) -> anyhow::Result<()> {
    let var = VarDir::new()?;
    let ports = free_ports()?;
    let mut child = spawn_owner(var.path(), ports).await?;
    assert!(accepts(ports.postgres).await && accepts(ports.nats).await);

    child.kill().await?; // SIGKILL: no destructor, no shutdown
    let run = var.path().join("run");
    assert!(
        eventually(60, || async { !run.join("owner.pid").exists() }).await,
        "the watchdog did not finish"
    );
    assert!(
        !accepts(ports.postgres).await,
        "PostgreSQL outlived its owner"
    );
    assert!(!accepts(ports.nats).await, "nats-server outlived its owner");
    assert!(var.path().join("postgres").join("PG_VERSION").is_file());
    assert!(!var.path().join("postgres").join("postmaster.pid").exists());

    let services = LocalServices::start_persistent_on(var.path(), ports).await?;
    assert_eq!(read_the_row(&services.database_url()).await?, "kept");
    assert!(
        stream_exists(&services.nats_url()).await?,
        "the stream is gone"
    );
    services.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn servers_left_running_by_a_dead_owner_are_restarted_cleanly() -> anyhow::Result<()> {
    let var = VarDir::new()?;
    let ports = free_ports()?;
    let mut child = spawn_owner(var.path(), ports).await?;
    // Kill the watchdog first, then its owner: nothing stops the servers.
    let owner = std::fs::read_to_string(var.path().join("run").join("owner.pid"))?;
    let watchdog: u32 = owner
        .split_whitespace()
        .nth(2)
        .and_then(|pid| pid.parse().ok())
        .context("no watchdog pid in the owner file")?;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &watchdog.to_string()])
        .status()?;
    assert!(killed.success());
    child.kill().await?;
    let old_postmaster = pid_in(&var.path().join("postgres").join("postmaster.pid"))?;
    let old_nats = pid_in(&var.path().join("run").join("nats.pid"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(is_running(old_postmaster) && is_running(old_nats));
    assert!(accepts(ports.postgres).await && accepts(ports.nats).await);

    // The leftovers are on our preferred ports; they are stopped, not taken
    // for someone else's, so the new servers get those ports again.
    let services = LocalServices::start_persistent_on(var.path(), ports).await?;
    assert!(!is_running(old_postmaster), "the old postmaster still runs");
    assert!(!is_running(old_nats), "the old nats-server still runs");
    assert_eq!(
        (services.postgres.port(), services.nats.port()),
        (ports.postgres, ports.nats)
    );
    assert!(
        !services.describe().contains("taken"),
        "{}",
        services.describe()
    );
    assert_ne!(
        pid_in(&var.path().join("postgres").join("postmaster.pid"))?,
        old_postmaster
    );
    assert_eq!(read_the_row(&services.database_url()).await?, "kept");
    assert!(
        stream_exists(&services.nats_url()).await?,
        "the stream is gone"
    );
    services.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn as_root_a_var_dir_the_postgres_user_cannot_reach_is_refused_plainly() -> anyhow::Result<()>
{
    if !std::process::Command::new("id")
        .arg("-u")
        .output()?
        .stdout
        .starts_with(b"0\n")
    {
        return Ok(()); // PostgreSQL runs as ourselves: nothing to refuse.
    }
    let closed = VarDir::new()?;
    std::fs::set_permissions(
        closed.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let var = closed.path().join("var");
    match LocalServices::start_persistent_on(&var, free_ports()?).await {
        Err(error @ LocalError::Unreachable { .. }) => {
            let message = error.to_string();
            assert!(
                message.starts_with("the postgres user cannot reach ") && !message.contains('\n'),
                "{message}"
            );
        }
        other => anyhow::bail!("expected Unreachable, got {other:?}"),
    }
    // The refusal gave the var dir up again.
    assert!(!var.join("run").join("owner.pid").exists());
    Ok(())
}
