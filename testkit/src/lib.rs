//! Test support for clinicbook: a real PostgreSQL cluster and nats-server of
//! the test binary's own, started lazily on first use and shared by all its
//! tests, and a fresh database per test cloned from a template that was
//! migrated once. Integration tests of every crate depend on this crate; it
//! depends on no clinicbook crate (migrations come in as a `Migrator`), so any
//! crate can use it without a cycle.
//!
//! ```no_run
//! // In another crate this would be sqlx::migrate!("../migrations").
//! static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/fixtures/migrations");
//!
//! #[tokio::test]
//! async fn books_a_slot() {
//!     let db = clinicbook_testkit::services().await.database(&MIGRATOR).await;
//!     sqlx::query("SELECT 1").execute(&db.pool).await.unwrap();
//! }
//! ```
//!
//! The servers run from a temp dir `clinicbook-test-<pid>-<random>`; a
//! watchdog process stops them and removes it once the test process is gone,
//! however it ends. The harness logs through `tracing` and installs no
//! subscriber, so it is silent unless the test enables logging (`TEST_LOG=1`).
//! It needs PostgreSQL server binaries (`/usr/lib/postgresql/*/bin`, the newest
//! version wins) and nats-server; as root it runs PostgreSQL through
//! `runuser -u postgres`.

mod error;
mod nats;
mod postgres;
mod process;
mod services;

use tokio::sync::OnceCell;

pub use error::HarnessError;
pub use nats::Nats;
pub use postgres::Postgres;
pub use services::{Services, TestDatabase};

/// The services of this test binary. Behind a runtime-independent cell: each
/// `#[tokio::test]` has its own runtime, and all of them share this. A failed
/// start is kept too, so every test fails with the same message instead of
/// each trying again.
static SHARED: OnceCell<Result<Services, String>> = OnceCell::const_new();

/// The PostgreSQL cluster and nats-server shared by every test of this binary
/// (process), started on first use.
///
/// Tests must not stop these (other tests use them at the same time); fault
/// tests take a private [`Services::start`].
///
/// # Panics
/// With one line saying what is missing or why start-up failed, e.g.
/// `clinicbook-testkit: PostgreSQL server binaries not found under ...; install with: apt-get install postgresql`.
pub async fn services() -> &'static Services {
    let shared = SHARED
        .get_or_init(|| async { Services::start().await.map_err(|e| e.to_string()) })
        .await;
    match shared {
        Ok(services) => services,
        Err(message) => panic!("clinicbook-testkit: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use crate::process::{find_nats_server_from, find_postgres_bin_from, on_a_free_port};
    use crate::HarnessError;

    fn exited(log_tail: &str) -> HarnessError {
        HarnessError::Exited {
            service: "test",
            status: ExitStatus::from_raw(256),
            log_tail: log_tail.to_owned(),
        }
    }

    #[test]
    fn a_taken_port_is_retried_on_another() {
        let mut ports = Vec::new();
        let result = on_a_free_port("test", "address already in use", |port| {
            ports.push(port);
            match ports.len() {
                1 => Err(exited("bind: address already in use")),
                _ => Ok(port),
            }
        });
        assert_eq!(ports.len(), 2);
        assert!(matches!(result, Ok(port) if port == ports[1] && port != 0));
    }

    #[test]
    fn other_start_failures_are_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = on_a_free_port("test", "address already in use", |_| {
            calls += 1;
            Err(exited("FATAL: data directory has wrong ownership"))
        });
        assert_eq!(calls, 1);
        assert!(matches!(result, Err(HarnessError::Exited { .. })));
    }

    #[test]
    fn a_port_that_stays_taken_gives_up() {
        let mut calls = 0;
        let result: Result<(), _> = on_a_free_port("test", "could not bind", |_| {
            calls += 1;
            Err(exited("could not bind IPv4 address"))
        });
        assert_eq!(calls, 5);
        assert!(result.is_err());
    }

    #[test]
    fn missing_postgres_is_one_line_with_the_install_command() {
        let error = find_postgres_bin_from(Path::new("/nonexistent/postgresql"), None)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "PostgreSQL server binaries not found under /nonexistent/postgresql/*/bin and PATH; \
                 install with: apt-get install postgresql"
            )
        );
    }

    #[test]
    fn missing_nats_is_one_line_with_the_install_command() {
        let error = find_nats_server_from(None, &["/nonexistent/sbin"])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("nats-server not found under PATH, /nonexistent/sbin; install with: apt-get install nats-server")
        );
    }

    #[test]
    fn picks_the_newest_complete_postgres_version() -> std::io::Result<()> {
        let root =
            std::env::temp_dir().join(format!("clinicbook-testkit-unit-{}", std::process::id()));
        for (version, programs) in [
            ("9.6", &["initdb", "pg_ctl", "postgres"][..]),
            ("13", &["initdb", "pg_ctl", "postgres"][..]),
            ("15", &["initdb", "pg_ctl", "postgres"][..]),
            // Incomplete: no server binary, so 15 must win.
            ("16", &["initdb", "pg_ctl"][..]),
        ] {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin)?;
            for program in programs {
                let path = bin.join(program);
                std::fs::write(&path, "")?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
            }
        }
        std::fs::create_dir_all(root.join("not-a-version").join("bin"))?;
        let found = find_postgres_bin_from(&root, None).ok();
        std::fs::remove_dir_all(&root)?;
        assert_eq!(found, Some(root.join("15").join("bin")));
        Ok(())
    }
}
