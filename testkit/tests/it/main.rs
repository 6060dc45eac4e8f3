//! Integration tests of the harness itself, against real PostgreSQL and nats-server.

mod databases;
mod faults;
mod shared;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;

/// One table, `widgets`.
static MIGRATOR: Migrator = sqlx::migrate!("tests/fixtures/migrations");

/// The first line nats-server sends a new client (`INFO {...}`).
async fn nats_greeting(port: u16) -> anyhow::Result<String> {
    let read = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        anyhow::Ok(line)
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .context("no greeting from nats-server within 10 s")?
}

/// Whether anything accepts TCP connections on 127.0.0.1:`port`.
async fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// A migrator over one migration holding `sql`, loaded at run time from a
/// scratch folder, so a test can have a migrator no other test shares.
async fn migrator_with(sql: &str) -> anyhow::Result<Migrator> {
    let dir = std::env::temp_dir().join(format!(
        "clinicbook-testkit-mig-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir(&dir)?;
    std::fs::write(dir.join("20250101000000_scratch.sql"), sql)?;
    let migrator = Migrator::new(Path::new(&dir)).await;
    std::fs::remove_dir_all(&dir)?;
    Ok(migrator?)
}
