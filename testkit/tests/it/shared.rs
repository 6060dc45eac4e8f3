//! The shared services of a test binary.

use sqlx::{Connection as _, PgConnection};

use crate::nats_greeting;

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

#[tokio::test]
async fn every_test_of_the_binary_gets_the_same_services() {
    let first = clinicbook_testkit::services().await;
    let second = tokio::spawn(clinicbook_testkit::services()).await;
    assert!(matches!(second, Ok(second) if std::ptr::eq(first, second)));

    let root = first
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
