//! The shared services of a test binary.

use sqlx::{Connection as _, PgConnection};

use crate::{nats_greeting, MIGRATOR};

#[tokio::test]
async fn postgres_and_nats_answer() -> anyhow::Result<()> {
    let services = clinicbook_testkit::services().await;

    let mut conn = PgConnection::connect(&services.postgres.url("postgres")).await?;
    let (user, is_superuser): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, usesuper FROM pg_user WHERE usename = current_user",
    )
    .fetch_one(&mut conn)
    .await?;
    assert_eq!((user.as_str(), is_superuser), ("postgres", true));
    conn.close().await?;

    assert_eq!(
        services.nats.url(),
        format!("nats://127.0.0.1:{}", services.nats.port())
    );
    let greeting = nats_greeting(services.nats.port()).await?;
    assert!(
        greeting.starts_with("INFO {"),
        "unexpected greeting: {greeting}"
    );
    assert!(
        greeting.contains(r#""jetstream":true"#),
        "JetStream is off: {greeting}"
    );
    Ok(())
}

/// Each `#[tokio::test]` has its own runtime; the shared services must
/// outlive the runtime that started them and serve the next one.
#[test]
fn services_outlive_the_runtime_that_started_them() -> anyhow::Result<()> {
    let in_a_new_runtime = || -> anyhow::Result<(usize, i64)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let services = clinicbook_testkit::services().await;
            let db = services.database(&MIGRATOR).await;
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets")
                .fetch_one(&db.pool)
                .await?;
            // Compared by address: the very same instance.
            Ok((std::ptr::from_ref(services) as usize, count))
        })
    };
    let first = in_a_new_runtime()?;
    let second = in_a_new_runtime()?;
    assert_eq!(first, second);
    Ok(())
}

#[tokio::test]
async fn the_temp_dir_is_named_after_the_test_process() {
    let services = clinicbook_testkit::services().await;
    let root = services
        .postgres
        .data_dir()
        .parent()
        .map(|p| p.display().to_string());
    let prefix = format!("clinicbook-test-{}-", std::process::id());
    assert!(
        root.as_deref().is_some_and(|root| root.contains(&prefix)),
        "temp dir {root:?} is not named {prefix}<random>"
    );
}
