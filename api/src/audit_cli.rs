//! The auditor's commands of the `clinicbook` binary, straight against the
//! database (no server): `replay` (one stream's events and state, or every
//! stream re-run through its aggregate with `--all --check`) and `verify`
//! (every hash chain, and with `--against FILE` every stream a signed
//! checkpoint names), and `checkpoint` (print one);
//! `replay --all --check --projections` also rebuilds every projection into
//! a scratch schema and diffs it with the live one. They fail (non-zero
//! exit) when history does not hold, naming each stream and sequence.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clinicbook_eventstore::audit::StreamProblem;
use clinicbook_eventstore::checkpoint::{self, Checkpoint, PublicKey};
use clinicbook_eventstore::replay::{self, CheckOptions, CheckReport};
use clinicbook_eventstore::{audit, EventStore, StoreConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use secrecy::SecretString;

use crate::routes::audit::{aggregate_kind, until, StreamHistory, StreamQuery};

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
    #[arg(long = "type", conflicts_with = "against")]
    pub aggregate_type: Option<String>,
    /// Only streams with this id.
    #[arg(long, conflicts_with = "against")]
    pub id: Option<String>,
    /// A checkpoint (`clinicbook checkpoint > FILE`, or
    /// `GET /v1/audit/checkpoint`): also name every stream it lists that
    /// is missing, shorter, or holds another event at its sequence.
    #[arg(long, value_name = "FILE")]
    pub against: Option<PathBuf>,
    /// With --against: the public key (hex, as `GET /v1/audit/public-key`
    /// answers) the checkpoint must be signed with; without it, the public
    /// half of the configured audit key.
    #[arg(long, requires = "against")]
    pub public_key: Option<String>,
    /// The audit key.
    #[command(flatten)]
    pub key: AuditKeyArgs,
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/clinicbook
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
}

/// Where the audit signing key comes from, as for `serve`.
#[derive(Debug, clap::Args)]
pub struct AuditKeyArgs {
    /// Ed25519 key checkpoints are signed with (64 hex digits); without it,
    /// the one kept in <var-dir>/audit-key.
    #[arg(long, env = "CLINICBOOK_AUDIT_KEY", hide_env_values = true)]
    pub audit_key: Option<SecretString>,
    /// Where local state lives (the key file), as for `serve`.
    #[arg(long, env = "CLINICBOOK_VAR_DIR", default_value = "var")]
    pub var_dir: PathBuf,
}

/// Arguments of `clinicbook checkpoint`.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// Print only the public key (hex) checkpoints are signed with.
    #[arg(long)]
    pub print_public_key: bool,
    /// The audit key.
    #[command(flatten)]
    pub key: AuditKeyArgs,
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/clinicbook
    #[arg(
        long,
        env = "DATABASE_URL",
        required_unless_present = "print_public_key"
    )]
    pub database_url: Option<String>,
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

/// One line per stream that does not check out, under `label`.
fn print_problems(label: &str, problems: &[StreamProblem]) {
    for p in problems {
        println!(
            "{label} {}/{} at sequence {}: {}",
            p.aggregate_type, p.aggregate_id, p.sequence, p.reason
        );
    }
}

/// `N events in S s (R events/s)`: how fast a run read the store.
fn pace(events: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = events as f64 / seconds.max(1e-9);
    format!("{events} events in {seconds:.1} s ({rate:.0} events/s)")
}

/// `N streams, M events in S s (R events/s)`: what a run over the whole
/// store read, and how fast.
fn streams_pace(streams: u64, events: u64, elapsed: Duration) -> String {
    format!("{streams} streams, {}", pace(events, elapsed))
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
    print_problems("MISMATCH", &report.mismatches);
    println!(
        "replayed {}; {} snapshots compared, {} of an older shape ignored, {} streams changed during the check",
        streams_pace(report.streams_checked, report.events_checked, elapsed),
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
            "projection {}: rebuilt from {}, {}",
            projection.name,
            pace(built.events, elapsed),
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
/// filters) and names each broken stream; with `--against FILE`, also each
/// stream the checkpoint names that is missing or shorter than it says.
///
/// # Errors
/// Bad arguments, the database failed, the checkpoint is refused, or a
/// stream does not verify.
pub async fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let kind = args
        .aggregate_type
        .as_deref()
        .map(aggregate_kind)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e.problem().detail))?;
    let against = match &args.against {
        Some(path) => Some((read_checkpoint(path)?, verifying_key(args)?)),
        None => None,
    };
    let pool = clinicbook_eventstore::connect(&args.database_url, 2)
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
    let started = Instant::now();
    let report = match &against {
        Some((taken, key)) => checkpoint::verify_against(&pool, taken, key)
            .await
            .map_err(|e| anyhow::anyhow!("checkpoint refused: {e}"))?,
        None => audit::verify(&pool, kind.map(|k| k.name()), args.id.as_deref()).await?,
    };
    let elapsed = started.elapsed();
    print_problems("BROKEN", &report.broken);
    println!(
        "verified {}",
        streams_pace(report.streams_checked, report.events_checked, elapsed)
    );
    if let Some((taken, _)) = &against {
        println!(
            "against the checkpoint of {} at position {}: {} streams",
            taken.taken_at.to_rfc3339(),
            taken.position,
            taken.streams.len()
        );
    }
    anyhow::ensure!(
        report.ok,
        "{} of {} streams have a broken hash chain{}",
        report.broken.len(),
        report.streams_checked,
        if against.is_some() {
            ", or are missing or shorter than the checkpoint says"
        } else {
            ""
        }
    );
    println!("OK: every hash chain holds");
    Ok(())
}

/// A checkpoint file, naming the file and the field when it is not one.
fn read_checkpoint(path: &std::path::Path) -> anyhow::Result<Checkpoint> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    crate::extract::parse::<Checkpoint>(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a checkpoint: {}",
            path.display(),
            e.problem().detail
        )
    })
}

/// The key a checkpoint must verify with: `--public-key`, else the public
/// half of the configured audit key (never a new one).
fn verifying_key(args: &VerifyArgs) -> anyhow::Result<PublicKey> {
    if let Some(text) = &args.public_key {
        return PublicKey::from_hex(text).context("--public-key");
    }
    let key = crate::keys::audit_key(args.key.audit_key.as_ref(), &args.key.var_dir, false)?;
    Ok(key.public_key())
}

/// `clinicbook checkpoint`: prints a signed checkpoint of every stream's
/// head as JSON (or, with `--print-public-key`, the key's public half).
///
/// # Errors
/// The audit key is malformed or cannot be kept, or the database failed.
pub async fn checkpoint(args: &CheckpointArgs) -> anyhow::Result<()> {
    let key = crate::keys::audit_key(args.key.audit_key.as_ref(), &args.key.var_dir, true)?;
    if args.print_public_key {
        println!("{}", key.public_key().to_hex());
        return Ok(());
    }
    let Some(database_url) = &args.database_url else {
        anyhow::bail!("give --database-url or DATABASE_URL");
    };
    let pool = clinicbook_eventstore::connect(database_url, 2)
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
    let taken = checkpoint::take(&pool, &key).await?;
    println!("{}", serde_json::to_string_pretty(&taken)?);
    Ok(())
}
