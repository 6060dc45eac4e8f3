//! Figures shared by the benchmarks: latency percentiles and the JSON file
//! a run's report is written to.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

/// Latency percentiles of a run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The slowest request.
    pub max: f64,
}

impl Latency {
    /// The percentiles of `samples` (sorted in place); all zero when there
    /// are none.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        Self {
            p50: percentile(samples, 0.50),
            p95: percentile(samples, 0.95),
            p99: percentile(samples, 0.99),
            max: percentile(samples, 1.0),
        }
    }
}

/// `p50 1.2  p95 3.4  p99 5.6  max 7.8`: the figures for people.
impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
            self.p50, self.p95, self.p99, self.max
        )
    }
}

/// The sample at rank `p` (0 to 1, rounded to the nearest rank) of sorted
/// `samples`, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let rank = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[rank.min(last)].as_secs_f64() * 1000.0
}

/// Per second over `seconds` of wall time (zero for an empty run).
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Writes `report` as pretty JSON to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write_json(path: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report).context("serialising the report")?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_take_the_nearest_rank_of_the_sorted_samples() {
        let mut samples = ms(&[100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let latency = Latency::of(&mut samples);
        assert_eq!(latency.p50, 6.0);
        assert_eq!(latency.p95, 100.0);
        assert_eq!(latency.max, 100.0);
    }

    #[test]
    fn an_empty_run_has_zero_latency() {
        assert_eq!(Latency::of(&mut []), Latency::default());
        assert_eq!(per_second(5, 0.0), 0.0);
    }
}
