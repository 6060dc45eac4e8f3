//! A database per test, cloned from a template migrated once per migrator.

use chrono_free::installed_on;
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::{migrator_with, MIGRATOR};

mod chrono_free {
    //! Reads `_sqlx_migrations` without pulling chrono into this crate.

    use sqlx::PgPool;

    /// When each migration was applied, as text, in version order.
    pub async fn installed_on(pool: &PgPool) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT installed_on::text FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
    }
}

async fn table_exists(pool: &PgPool, table: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
}

#[tokio::test]
async fn databases_from_one_migrator_are_independent() -> anyhow::Result<()> {
    let services = clinicbook_testkit::services().await;
    let a = services.database(&MIGRATOR).await;
    let b = services.database(&MIGRATOR).await;
    assert_ne!(a.name, b.name);

    assert!(table_exists(&a.pool, "widgets").await? && table_exists(&b.pool, "widgets").await?);
    sqlx::query("INSERT INTO widgets (id, name) VALUES (1, 'only in a')")
        .execute(&a.pool)
        .await?;
    sqlx::query("CREATE TABLE only_in_a (id INT)")
        .execute(&a.pool)
        .await?;

    let count = |pool| sqlx::query_scalar::<_, i64>("SELECT count(*) FROM widgets").fetch_one(pool);
    assert_eq!(count(&a.pool).await?, 1);
    assert_eq!(count(&b.pool).await?, 0);
    assert!(table_exists(&a.pool, "only_in_a").await?);
    assert!(!table_exists(&b.pool, "only_in_a").await?);
    Ok(())
}

#[tokio::test]
async fn clones_share_one_migration_run_of_the_template() -> anyhow::Result<()> {
    let services = clinicbook_testkit::services().await;
    let a = services.database(&MIGRATOR).await;
    let b = services.database(&MIGRATOR).await;
    let applied = installed_on(&a.pool).await?;
    assert_eq!(applied.len(), MIGRATOR.iter().count());
    // Same timestamps: both are copies of one run, not two runs.
    assert_eq!(applied, installed_on(&b.pool).await?);
    Ok(())
}

#[tokio::test]
async fn concurrent_first_use_of_a_migrator_migrates_once() -> anyhow::Result<()> {
    let services = clinicbook_testkit::services().await;
    // Unique to this test, so its template cannot exist yet.
    let sql = format!(
        "CREATE TABLE gadgets (id INT); COMMENT ON TABLE gadgets IS '{}';",
        uuid::Uuid::new_v4()
    );
    let migrator: &'static _ = Box::leak(Box::new(migrator_with(&sql).await?));

    let tasks: Vec<_> = (0..16)
        .map(|_| tokio::spawn(async move { services.try_database(migrator).await }))
        .collect();
    let mut runs = Vec::new();
    let mut names = Vec::new();
    for task in tasks {
        let db = task.await??;
        assert!(table_exists(&db.pool, "gadgets").await?);
        assert!(
            !table_exists(&db.pool, "widgets").await?,
            "got the other migrator's template"
        );
        runs.push(installed_on(&db.pool).await?);
        names.push(db.name);
    }
    runs.dedup();
    assert_eq!(runs.len(), 1, "template migrated more than once: {runs:?}");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 16);
    Ok(())
}

#[tokio::test]
async fn url_options_and_superuser_pool_reach_the_same_database() -> anyhow::Result<()> {
    let services = clinicbook_testkit::services().await;
    let db = services.database(&MIGRATOR).await;
    assert_eq!(
        db.url,
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            services.postgres.port(),
            db.name
        )
    );

    let current = "SELECT current_database()::text";
    let mut by_url = PgConnection::connect(&db.url).await?;
    assert_eq!(
        sqlx::query_scalar::<_, String>(current)
            .fetch_one(&mut by_url)
            .await?,
        db.name
    );
    let mut by_options = PgConnection::connect_with(&db.connect_options()).await?;
    assert_eq!(
        sqlx::query_scalar::<_, String>(current)
            .fetch_one(&mut by_options)
            .await?,
        db.name
    );

    let superuser = db.superuser_pool().await;
    let (name, is_superuser): (String, bool) =
        sqlx::query_as("SELECT current_database()::text, current_setting('is_superuser') = 'on'")
            .fetch_one(&superuser)
            .await?;
    assert_eq!((name.as_str(), is_superuser), (db.name.as_str(), true));
    // What tests need it for: bypassing triggers for this session.
    sqlx::query("SET session_replication_role = replica")
        .execute(&superuser)
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_pool_serves_64_concurrent_tasks() -> anyhow::Result<()> {
    let services = clinicbook_testkit::services().await;
    let db = services.database(&MIGRATOR).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                // Hold each connection a moment so the tasks overlap.
                sqlx::query("SELECT pg_sleep(0.05)").execute(&pool).await?;
                sqlx::query("INSERT INTO widgets (id, name) VALUES ($1, 'w')")
                    .bind(i64::from(i))
                    .execute(&pool)
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(count, 64);
    Ok(())
}
