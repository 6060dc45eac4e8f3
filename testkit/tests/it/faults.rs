//! Stopping and starting the services, on private instances so the shared
//! ones stay up for the other tests.

use clinicbook_testkit::Services;
use sqlx::{Connection as _, PgConnection};

use crate::{accepts, nats_greeting, MIGRATOR};

#[tokio::test]
async fn postgres_stop_then_start_keeps_data_and_drop_cleans_up() -> anyhow::Result<()> {
    let services = Services::start().await?;
    let port = services.postgres.port();
    let db = services.try_database(&MIGRATOR).await?;
    sqlx::query("INSERT INTO widgets (id, name) VALUES (7, 'survives')")
        .execute(&db.pool)
        .await?;

    services.postgres.stop().await?;
    assert!(!accepts(port).await, "PostgreSQL still accepts after stop");
    assert!(PgConnection::connect_with(&db.connect_options())
        .await
        .is_err());
    services.postgres.stop().await?; // already stopped: a no-op

    services.postgres.start().await?;
    assert_eq!(services.postgres.port(), port);
    // The pool drops its dead connections and opens new ones.
    let name: String = sqlx::query_scalar("SELECT name FROM widgets WHERE id = 7")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(name, "survives");
    services.postgres.start().await?; // already running: a no-op

    db.pool.close().await;
    let root = services
        .postgres
        .data_dir()
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("data dir has no parent"))?;
    let nats_port = services.nats.port();
    assert!(root.exists());
    drop(services);
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(!accepts(port).await, "PostgreSQL still runs after drop");
    assert!(
        !accepts(nats_port).await,
        "nats-server still runs after drop"
    );
    Ok(())
}

#[tokio::test]
async fn nats_stop_then_start_accepts_again_on_the_same_port() -> anyhow::Result<()> {
    let services = Services::start().await?;
    let port = services.nats.port();
    assert!(nats_greeting(port).await?.starts_with("INFO {"));

    services.nats.stop().await?;
    assert!(!accepts(port).await, "nats-server still accepts after stop");
    services.nats.stop().await?; // already stopped: a no-op

    services.nats.start().await?;
    assert_eq!(services.nats.port(), port);
    assert!(nats_greeting(port).await?.starts_with("INFO {"));
    assert!(services.nats.store_dir().join("jetstream").is_dir());
    Ok(())
}
