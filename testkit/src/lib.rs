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
//! The servers are the throwaway ones of `clinicbook-localsvc`, which owns
//! finding and running them: they run from a temp dir
//! `clinicbook-test-<pid>-<random>`; a watchdog process stops them and removes
//! it once the test process is gone, however it ends. The harness logs
//! through `tracing` and installs no subscriber, so it is silent unless the
//! test enables logging (`TEST_LOG=1`). It needs PostgreSQL server binaries
//! (`/usr/lib/postgresql/*/bin`, the newest version wins) and nats-server; as
//! root it runs PostgreSQL through `runuser -u postgres`.
//!
//! [`SmtpServer`] is a real SMTP server (Python's `aiosmtpd`, installed into
//! a virtualenv under the target dir on first use) for the patient
//! messages' tests.

mod error;
mod services;
pub mod smtp;

use tokio::sync::OnceCell;

pub use clinicbook_localsvc::{LocalError, Nats, Postgres};
pub use error::HarnessError;
pub use services::{Services, TestDatabase};
pub use smtp::SmtpServer;

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
