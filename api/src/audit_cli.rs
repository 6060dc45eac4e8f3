//! The auditor's commands of the `clinicbook` binary, straight against the
//! database (no server): `replay` (one stream's events and state, or every
//! stream re-run through its aggregate with `--all --check`) and `verify`
//! (every hash chain); `replay --all --check --projections` also rebuilds
//! every projection into a scratch schema and diffs it with the live one.
//! They fail (non-zero exit) when history does not
//! hold, naming each stream and sequence.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use clinicbook_eventstore::replay::{self, CheckOptions, CheckReport};
use clinicbook_eventstore::{audit, EventStore, StoreConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::routes::audit::{aggregate_kind, until, StreamHistory, StreamQuery, Verification};

/// Arguments of `clinicbook replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Aggregate type of the stream: Clinic, Calendar, Reservation,
    /// Package, Wallet, PromoCode or Program.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub aggregate_type: Option<String>,
    /// Aggregate id of the stream.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Replay up to this RFC 3339 instant (events recorded at or before it).
    #[arg(long, conflicts_with_all = ["version", "all"])]
    pub as_of: Option<String>,
    /// Replay up to this sequence.
    #[arg(long, conflicts_with = "all")]
    pub version: Option<i64>,
    /// Re-run every stream through its aggregate (with --check).
    #[arg(long, requires = "check")]
    pub all: bool,
    /// With --all: every event must deserialise and apply in sequence, and
    /// each final state must equal the snapshot's (at its sequence) and the
    /// store's normal load; exits non-zero on any mismatch.
    #[arg(long, requires = "all")]
    pub check: bool,
    /// With --all --check: also rebuild every projection into a scratch
    /// schema up to its live checkpoint and compare it row by row with the
    /// live tables; exits non-zero on any difference.
    #[arg(long, requires = "check")]
    pub projections: bool,
    /// Events read per query by --all.
    #[arg(long, default_value_t = 20_000)]
    pub batch: i64,
    /// Streams whose normal load --all compares at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/clinicbook
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The timeout of the short work's sessions (the long transactions of
    /// `--all --check` have none).
    #[command(flatten)]
    pub sessions: crate::SessionArgs,
}

/// Arguments of `clinicbook verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Only streams of this aggregate type.
    #[arg(long = "type")]
    pub aggregate_type: Option<String>,
    /// Only streams with this id.
    #[arg(long)]
    pub id: Option<String>,
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/clinicbook
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
}

/// `clinicbook replay`: one stream printed as JSON, or `--all --check`.
///
/// # Errors
/// Bad arguments, the database failed, no such stream, or (with `--all
/// --check`) a stream does not replay as stored.
pub async fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    if args.all {
        return check_all(args).await;
    }
    let (Some(aggregate_type), Some(id)) = (&args.aggregate_type, &args.id) else {
        anyhow::bail!("give an aggregate type and an id, or --all --check");
    };
    let kind = aggregate_kind(aggregate_type).map_err(|e| anyhow::anyhow!(e.problem().detail))?;
    let until = until(&StreamQuery {
        as_of: args.as_of.clone(),
        version: args.version,
    })
    .map_err(|e| anyhow::anyhow!(e.problem().detail))?;
    let pool = clinicbook_eventstore::connect(&args.database_url, 2)
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
    let at = replay::stream_at(&pool, kind, id, until)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stream {kind}/{id}"))?;
    if let replay::Until::Sequence(version) = until {
        anyhow::ensure!(
            version <= at.last_sequence,
            "stream {kind}/{id} has {} events; there is no version {version}",
            at.last_sequence
        );
    }
    let history = StreamHistory::from(at);
    println!("{}", serde_json::to_string_pretty(&history)?);
    Ok(())
}

/// A progress bar on stderr showing events/s, hidden when stderr is not a
/// terminal.
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} events ({rate} events/s, eta {eta})",
    )
    .map(|s| {
        s.progress_chars("=> ").with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                // Nothing to do if the terminal write fails.
                let _ = write!(w, "{:.0}", state.per_sec());
            },
        )
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

async fn check_all(args: &ReplayArgs) -> anyhow::Result<()> {
    let connections = u32::try_from(args.concurrency.max(1))
        .unwrap_or(64)
        .saturating_add(2);
    let pool =
        clinicbook_eventstore::connect_for(&args.database_url, connections, args.sessions.api())
            .await
            .context("cannot connect to the database (check DATABASE_URL)")?;
    // Nothing is cached: each comparison is a fresh normal load.
    let store = EventStore::new(
        pool.clone(),
        StoreConfig {
            cache_capacity: 0,
            ..StoreConfig::default()
        },
    );
    let (total, _) = audit::totals(&pool).await?;
    let bar = progress_bar(u64::try_from(total).unwrap_or(0));
    let started = Instant::now();
    let options = CheckOptions {
        batch: args.batch.max(1),
        concurrency: args.concurrency.max(1),
    };
    let report = replay::check_all(&store, options, |done| bar.set_position(done)).await;
    bar.finish_and_clear();
    let report: CheckReport = report?;
    let elapsed = started.elapsed();
    for m in &report.mismatches {
        println!(
            "MISMATCH {}/{} at sequence {}: {}",
            m.aggregate_type, m.aggregate_id, m.sequence, m.reason
        );
    }
    println!(
        "replayed {} streams, {} events in {:.1} s ({:.0} events/s); {} snapshots compared, {} of an older shape ignored, {} streams changed during the check",
        report.streams_checked,
        report.events_checked,
        elapsed.as_secs_f64(),
        rate(report.events_checked, elapsed),
        report.snapshots_checked,
        report.snapshots_unreadable,
        report.changed_during_check,
    );
    let projections_differ = if args.projections {
        // Each check holds a transaction for a whole rebuild.
        let long = clinicbook_eventstore::connect_for(
            &args.database_url,
            4,
            clinicbook_eventstore::Sessions::LongRunning,
        )
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
        check_projections(&clinicbook_projections::ReadModels::new(long)).await?
    } else {
        0
    };
    anyhow::ensure!(
        report.ok,
        "{} streams do not replay as stored",
        report.mismatches.len()
    );
    println!("OK: every stream replays as stored");
    anyhow::ensure!(
        projections_differ == 0,
        "{projections_differ} projections differ from a rebuild"
    );
    Ok(())
}

/// Rebuilds every projection into a scratch schema up to its live
/// checkpoint and diffs it with the live tables; answers how many differ.
async fn check_projections(read: &clinicbook_projections::ReadModels) -> anyhow::Result<usize> {
    use clinicbook_projections::{projections, ProjectionError};
    let mut differ = 0;
    for projection in projections() {
        let bar = progress_bar(0);
        let started = Instant::now();
        let schema = format!("replay_check_{}", projection.name);
        let checked = clinicbook_projections::rebuild::check_against_live(
            read,
            projection,
            &schema,
            &|events| bar.set_position(events),
        )
        .await;
        bar.finish_and_clear();
        let (built, diffs) = match checked {
            Ok(checked) => checked,
            Err(ProjectionError::UnknownProjection(_)) => {
                println!(
                    "projection {}: not built live (no checkpoint), nothing to compare",
                    projection.name
                );
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("rebuilding {}", projection.name)),
        };
        let elapsed = started.elapsed();
        for diff in &diffs {
            println!(
                "PROJECTION {} table {}: {} rows only in the rebuild, {} only live",
                projection.name, diff.table, diff.only_in_first, diff.only_in_second
            );
        }
        differ += usize::from(!diffs.is_empty());
        println!(
            "projection {}: rebuilt from {} events in {:.1} s ({:.0} events/s), {}",
            projection.name,
            built.events,
            elapsed.as_secs_f64(),
            rate(built.events, elapsed),
            if diffs.is_empty() {
                "same as live"
            } else {
                "DIFFERS from live"
            }
        );
    }
    Ok(differ)
}

/// `clinicbook verify`: recomputes every hash chain (or those matching the
/// filters) and names each broken stream.
///
/// # Errors
/// Bad arguments, the database failed, or a chain is broken.
pub async fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let kind = args
        .aggregate_type
        .as_deref()
        .map(aggregate_kind)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e.problem().detail))?;
    let pool = clinicbook_eventstore::connect(&args.database_url, 2)
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
    let started = Instant::now();
    let report: Verification = audit::verify(&pool, kind.map(|k| k.name()), args.id.as_deref())
        .await?
        .into();
    let elapsed = started.elapsed();
    for b in &report.broken {
        println!(
            "BROKEN {}/{} at sequence {}: {}",
            b.aggregate_type, b.aggregate_id, b.sequence, b.reason
        );
    }
    println!(
        "verified {} streams, {} events in {:.1} s ({:.0} events/s)",
        report.streams_checked,
        report.events_checked,
        elapsed.as_secs_f64(),
        rate(report.events_checked, elapsed),
    );
    anyhow::ensure!(
        report.ok,
        "{} of {} streams have a broken hash chain",
        report.broken.len(),
        report.streams_checked
    );
    println!("OK: every hash chain holds");
    Ok(())
}
