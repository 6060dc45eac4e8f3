//! The pair of services a test binary shares, and a fresh database per test
//! cloned from a template migrated once per migrator.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clinicbook_localsvc::{LocalServices, Teardown};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::{HarnessError, Nats, Postgres};

/// Pool size per test database: tests run up to 64 concurrent tasks.
const TEST_POOL_SIZE: u32 = 80;

/// How long a test waits for a pooled connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `CREATE DATABASE .. TEMPLATE` is tried while the template still
/// has a session on its way out.
const CLONE_ATTEMPTS: u32 = 10;

/// SQLSTATE `object_in_use`: "source database is being accessed by other users".
const OBJECT_IN_USE: &str = "55006";

/// A PostgreSQL cluster and a nats-server of our own, in one temp dir
/// (`clinicbook-test-<pid>-<random>`) that a watchdog process removes, with
/// both servers, once this process is gone: the throwaway
/// [`LocalServices`] of `clinicbook-localsvc`, plus test databases.
///
/// Holds nothing tied to a tokio runtime, so one instance serves the
/// `#[tokio::test]`s of a binary even though each has its own runtime.
#[derive(Debug)]
pub struct Services {
    /// The PostgreSQL cluster; superuser `postgres`, `trust` auth.
    pub postgres: Postgres,
    /// The nats-server, with JetStream.
    pub nats: Nats,
    /// Template database name per migrator key; the cell makes concurrent
    /// tests wait for the one that migrates instead of racing it.
    templates: Mutex<HashMap<u64, Arc<OnceCell<String>>>>,
    /// Stops PostgreSQL and removes the temp dir when dropped; after `nats`,
    /// which stops nats-server when dropped.
    _teardown: Teardown,
}

impl Services {
    /// Starts a private PostgreSQL cluster and nats-server, each on a free
    /// port, plus the watchdog that cleans both up when this process ends.
    ///
    /// Most tests want the shared [`services`](crate::services()) instead. Use
    /// this for fault tests that stop a service, which would break the other
    /// tests sharing it. Dropping the value stops both servers and removes the
    /// temp dir.
    ///
    /// # Errors
    /// [`HarnessError::Services`] with [`LocalError::NotInstalled`] if
    /// PostgreSQL or nats-server is missing,
    /// [`LocalError::NoPostgresUser`] when root without a `postgres` user,
    /// [`LocalError::CommandFailed`], [`LocalError::Exited`] or
    /// [`LocalError::NotReady`] if a server does not come up.
    ///
    /// [`LocalError::NotInstalled`]: crate::LocalError::NotInstalled
    /// [`LocalError::NoPostgresUser`]: crate::LocalError::NoPostgresUser
    /// [`LocalError::CommandFailed`]: crate::LocalError::CommandFailed
    /// [`LocalError::Exited`]: crate::LocalError::Exited
    /// [`LocalError::NotReady`]: crate::LocalError::NotReady
    pub async fn start() -> Result<Self, HarnessError> {
        let (postgres, nats, teardown) = LocalServices::start_throwaway().await?.into_parts();
        Ok(Self {
            postgres,
            nats,
            templates: Mutex::default(),
            _teardown: teardown,
        })
    }

    /// A fresh database for one test, with `migrator`'s migrations applied.
    ///
    /// # Panics
    /// With a one-line message if the database cannot be created; see
    /// [`try_database`](Self::try_database).
    pub async fn database(&self, migrator: &Migrator) -> TestDatabase {
        match self.try_database(migrator).await {
            Ok(db) => db,
            Err(e) => panic!("clinicbook-testkit: could not create a test database: {e}"),
        }
    }

    /// A fresh database `t_<uuid>` for one test, cloned from a template that
    /// was migrated with `migrator` once per distinct set of migrations
    /// (versions and checksums), so each test pays for a file copy rather
    /// than for running every migration.
    ///
    /// # Errors
    /// [`HarnessError::Migrate`] if the migrations fail on the template (the
    /// next call tries again); [`HarnessError::Database`] if PostgreSQL
    /// refuses the clone or the connection.
    pub async fn try_database(&self, migrator: &Migrator) -> Result<TestDatabase, HarnessError> {
        let template = self.template(migrator).await?;
        let name = format!("t_{}", Uuid::new_v4().simple());
        let mut admin = self.admin().await?;
        clone_database(&mut admin, &template, &name).await?;
        admin.close().await?;

        let options = self.postgres.connect_options(&name);
        let pool = PgPoolOptions::new()
            .max_connections(TEST_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        tracing::debug!(%name, %template, "test database created");
        Ok(TestDatabase {
            url: self.postgres.url(&name),
            name,
            pool,
            options,
        })
    }

    /// The template for `migrator`, created on first use.
    async fn template(&self, migrator: &Migrator) -> Result<String, HarnessError> {
        let key = migrator_key(migrator);
        let cell = self
            .templates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.create_template(key, migrator))
            .await
            .cloned()
    }

    async fn create_template(&self, key: u64, migrator: &Migrator) -> Result<String, HarnessError> {
        let name = format!("tpl_{key:016x}");
        let mut admin = self.admin().await?;
        // An earlier attempt whose migrations failed leaves it half-migrated.
        execute(&mut admin, &format!(r#"DROP DATABASE IF EXISTS "{name}""#)).await?;
        execute(&mut admin, &format!(r#"CREATE DATABASE "{name}""#)).await?;

        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.postgres.connect_options(&name))
            .await?;
        let migrated = migrator.run(&pool).await;
        // CREATE DATABASE .. TEMPLATE needs the template without sessions.
        pool.close().await;
        migrated?;
        execute(
            &mut admin,
            &format!(r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false"#),
        )
        .await?;
        admin.close().await?;
        tracing::debug!(%name, migrations = migrator.iter().count(), "template database migrated");
        Ok(name)
    }

    /// A maintenance connection to the `postgres` database.
    async fn admin(&self) -> Result<PgConnection, HarnessError> {
        Ok(PgConnection::connect_with(&self.postgres.connect_options("postgres")).await?)
    }
}

/// Identifies a migrator by what it would apply: versions, direction and
/// checksums. Two migrators over the same files share one template.
fn migrator_key(migrator: &Migrator) -> u64 {
    let mut hasher = DefaultHasher::new();
    for migration in migrator.iter() {
        migration.version.hash(&mut hasher);
        migration
            .migration_type
            .is_down_migration()
            .hash(&mut hasher);
        migration.checksum.hash(&mut hasher);
    }
    hasher.finish()
}

/// Runs one statement. Through `Executor::execute`, whose future is boxed
/// and `Send`: the generic `raw_sql(..).execute(..)` future trips the
/// compiler's "`Send` is not general enough" and would make
/// `try_database` unusable in `tokio::spawn`.
async fn execute(conn: &mut PgConnection, sql: &str) -> sqlx::Result<()> {
    sqlx::Executor::execute(conn, sql).await.map(drop)
}

/// `CREATE DATABASE name TEMPLATE template`, retried briefly while the
/// template's migration session is still closing on the server side.
async fn clone_database(
    admin: &mut PgConnection,
    template: &str,
    name: &str,
) -> Result<(), HarnessError> {
    let sql = format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#);
    let mut attempt = 1;
    loop {
        match execute(admin, &sql).await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some(OBJECT_IN_USE) && attempt < CLONE_ATTEMPTS =>
            {
                tokio::time::sleep(Duration::from_millis(25) * attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One test's database. Left behind when the test ends: the cluster is
/// throwaway, and dropping would need an async `Drop`.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database name, `t_<uuid>`.
    pub name: String,
    /// `postgres://postgres@127.0.0.1:{port}/{name}`, for code under test that
    /// takes a URL.
    pub url: String,
    /// A pool on this database (80 connections, 30 s acquire timeout), made
    /// in the calling test's runtime.
    pub pool: PgPool,
    options: PgConnectOptions,
}

impl TestDatabase {
    /// Connect options for this database, for code under test that builds
    /// its own pool or connection.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A small pool on this database as the cluster superuser `postgres`,
    /// for tests that must do what the application may not, such as
    /// disabling triggers.
    ///
    /// # Panics
    /// With a one-line message if it cannot connect; see
    /// [`try_superuser_pool`](Self::try_superuser_pool).
    pub async fn superuser_pool(&self) -> PgPool {
        match self.try_superuser_pool().await {
            Ok(pool) => pool,
            Err(e) => panic!(
                "clinicbook-testkit: could not connect as superuser to {}: {e}",
                self.name
            ),
        }
    }

    /// Like [`superuser_pool`](Self::superuser_pool), returning the error.
    ///
    /// # Errors
    /// [`HarnessError::Database`] if it cannot connect.
    pub async fn try_superuser_pool(&self) -> Result<PgPool, HarnessError> {
        Ok(PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(self.options.clone().username("postgres"))
            .await?)
    }

    /// The whole database as `pg_dump` writes it (plain SQL: schema and
    /// every table's rows), for tests that look for data that must not be
    /// stored anywhere.
    ///
    /// # Panics
    /// With the error if `pg_dump` cannot be found or fails.
    pub async fn pg_dump(&self) -> String {
        let bin = clinicbook_localsvc::find_postgres_bin()
            .unwrap_or_else(|e| panic!("clinicbook-testkit: no pg_dump: {e}"));
        let output = tokio::process::Command::new(bin.join("pg_dump"))
            .arg("--no-owner")
            .arg("--dbname")
            .arg(&self.url)
            .output()
            .await
            .unwrap_or_else(|e| panic!("clinicbook-testkit: running pg_dump: {e}"));
        assert!(
            output.status.success(),
            "clinicbook-testkit: pg_dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `sql` on this database as the superuser with triggers off
    /// (`session_replication_role = replica`), binding `binds` as text
    /// parameters `$1, $2, ...`: a change only someone with full database
    /// access could make, for tests of tamper evidence (crates without
    /// sqlx of their own use it too). Returns the rows affected.
    ///
    /// # Panics
    /// With the statement and the error if it fails.
    pub async fn tamper(&self, sql: &str, binds: &[&str]) -> u64 {
        let pool = self.superuser_pool().await;
        let run = async {
            let mut conn = pool.acquire().await?;
            sqlx::query("SET session_replication_role = replica")
                .execute(&mut *conn)
                .await?;
            let mut query = sqlx::query(sql);
            for bind in binds {
                query = query.bind(*bind);
            }
            Ok::<u64, sqlx::Error>(query.execute(&mut *conn).await?.rows_affected())
        };
        let affected = run.await;
        pool.close().await;
        affected.unwrap_or_else(|e| panic!("clinicbook-testkit: tampering with {sql:?}: {e}"))
    }
}

/// The futures tests hand to `tokio::spawn` must be `Send`; this stops
/// compiling if one stops being so.
fn _futures_are_send(
    services: &'static Services,
    migrator: &'static Migrator,
    db: &'static TestDatabase,
) {
    fn is_send<T: Send>(_: T) {}
    is_send(crate::services());
    is_send(Services::start());
    is_send(services.database(migrator));
    is_send(db.superuser_pool());
    is_send(services.postgres.stop());
    is_send(services.nats.start());
}
