//! Read-side commands of the `clinicbook` binary: `rebuild` and
//! `projections status`.

use std::time::Instant;

use anyhow::Context;
use clinicbook_projections::{projection, projections, rebuild, Projection, ReadModels};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

async fn read_models(database_url: &str) -> anyhow::Result<ReadModels> {
    // A rebuild holds transactions while it replays.
    let pool = clinicbook_eventstore::connect_for(
        database_url,
        4,
        clinicbook_eventstore::Sessions::LongRunning,
    )
    .await
    .context("cannot connect to the database (check DATABASE_URL)")?;
    clinicbook_eventstore::migrate(&pool)
        .await
        .context("migration failed")?;
    Ok(ReadModels::new(pool))
}

/// A spinner with events/s on stderr when it is a terminal (none otherwise).
fn progress_bar(name: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix}: {human_pos} events ({per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(name.to_owned());
    bar
}

/// `clinicbook rebuild <projection|all>`.
pub async fn rebuild(database_url: &str, name: &str) -> anyhow::Result<()> {
    let read = read_models(database_url).await?;
    let chosen: Vec<&Projection> = if name == "all" {
        projections().iter().collect()
    } else {
        let Some(one) = projection(name) else {
            let names: Vec<&str> = projections().iter().map(|p| p.name).collect();
            anyhow::bail!(
                "no projection is called {name:?}; choose one of {} or all",
                names.join(", ")
            );
        };
        vec![one]
    };
    for projection in chosen {
        let bar = progress_bar(projection.name);
        let started = Instant::now();
        let tick = |events: u64| bar.set_position(events);
        let rebuilt = rebuild::rebuild(&read, projection, &tick)
            .await
            .with_context(|| format!("rebuilding {}", projection.name))?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}: {} events in {:.1} s ({:.0} events/s), swapped in at position {}",
            projection.name,
            rebuilt.events,
            seconds,
            rebuilt.events as f64 / seconds.max(1e-9),
            rebuilt.point.position
        );
    }
    Ok(())
}

/// `clinicbook projections status`.
pub async fn status(database_url: &str) -> anyhow::Result<()> {
    let read = read_models(database_url).await?;
    println!(
        "{:<14} {:>12} {:>12} {:>10}  updated",
        "name", "position", "applied", "behind"
    );
    for status in read.status().await? {
        println!(
            "{:<14} {:>12} {:>12} {:>10}  {}",
            status.name,
            status.position,
            status.applied,
            status.behind,
            status
                .updated_at
                .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339())
        );
    }
    Ok(())
}
