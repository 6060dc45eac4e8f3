//! Benchmarks of clinicbook.
//!
//! - `clinicbook-benches store` drives the event store directly with
//!   booking-shaped units of work (a `Calendar` slot, a `Reservation` and a
//!   `Wallet` debit in one transaction) from N concurrent clients. Without
//!   `--database-url` it starts a throwaway PostgreSQL through the test
//!   harness.
//! - `clinicbook-benches book` drives the HTTP API: it sets up a clinic
//!   through the admin routes, then N concurrent clients book treatments
//!   with `POST /v1/reservations`. With `--spawn` it starts `clinicbook
//!   serve` itself over a throwaway PostgreSQL.
//!
//! - `clinicbook-benches lag` books at a steady rate through the API and
//!   reads each booking back from its read model until it shows: the
//!   projection lag a client sees.
//!
//! - `clinicbook-benches seed --events 1000000` writes a realistic history
//!   through the event store (clinics, wallets topped up by runs of
//!   deposits, laser days booked from wallets and settled), for timing the
//!   auditor's commands on it.
//!
//! - `clinicbook-benches all [--json FILE]` runs every scenario of issue
//!   11 on fresh databases, each machine-dependent figure next to a
//!   ceiling measured in the same run, and prints one table.
//!
//! - `clinicbook-benches notify` books patients at a steady rate with a
//!   real SMTP server and a webhook receiver of its own, and measures
//!   commit to webhook, commit to confirmation sent and due to reminder
//!   sent.
//!
//! All print throughput, latency percentiles and the answers by kind, and
//! write the same as JSON with `--json`.

mod all;
mod holds;
mod http;
mod lag;
mod notify;
mod report;
mod seed;
mod server;
mod store;

use clap::{Parser, Subcommand, ValueEnum};

/// clinicbook benchmarks.
#[derive(Debug, Parser)]
struct Cli {
    /// Which benchmark to run.
    #[command(subcommand)]
    command: Command,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum Command {
    /// Booking-shaped transactions straight against the event store.
    Store(store::StoreArgs),
    /// Bookings through the HTTP API, against a running server (`--url`)
    /// or one started for the run (`--spawn`).
    Book(http::BookArgs),
    /// Projection lag: bookings at a steady rate, each read back from its
    /// read model until it shows.
    Lag(lag::LagArgs),
    /// About a million realistic events through the event store's write
    /// path, for timing `clinicbook verify` and `clinicbook replay --all
    /// --check`.
    Seed(seed::SeedArgs),
    /// Every scenario of issue 11 (bookings against the raw-SQL ceiling,
    /// the hot slot, lag, availability, command latency on a small and a
    /// large store, rebuilds against COPY, RSS), one table.
    All(all::AllArgs),
    /// Hold expiry delay (`expired_at - expires_at`, p50/p99) over many holds.
    Holds(holds::HoldsArgs),
    /// Webhook and patient message delays (commit to webhook, commit to
    /// confirmation sent, due to reminder sent; p50/p99) over many
    /// bookings, every signature checked.
    Notify(notify::NotifyArgs),
}

/// What the clients of a benchmark book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Every client books its own free slots.
    Distinct,
    /// All clients race for the same slot, one slot after another.
    Hot,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Distinct => "distinct",
            Mode::Hot => "hot",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Store(args) => store::run(args).await,
        Command::Book(args) => http::run(args).await,
        Command::Lag(args) => lag::run(args).await,
        Command::Seed(args) => seed::run(args).await,
        Command::All(args) => all::run(args).await,
        Command::Holds(args) => holds::run(args).await,
        Command::Notify(args) => notify::run(args).await,
    }
}
