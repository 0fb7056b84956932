//! The load scenarios. Each takes the shared [`Ctx`](crate::Ctx) and its own
//! arguments, runs bounded in time and count, and returns a [`Report`](crate::report::Report).

pub mod calls;
pub mod idle;
pub mod latency;
pub mod soak;
pub mod throughput;

use crate::report::Report;
use hdrhistogram::Histogram;

/// A histogram of nanoseconds, 1 ns to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant histogram bounds are valid")
}

/// Adds `{prefix}_p50` .. `{prefix}_max` and `{prefix}_mean` of a nanosecond histogram,
/// converted by dividing by `div` into `unit`.
pub fn percentiles(
    report: &mut Report,
    prefix: &str,
    h: &Histogram<u64>,
    div: f64,
    unit: &'static str,
) {
    if h.is_empty() {
        return;
    }
    for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)] {
        report.metric(
            &format!("{prefix}_{name}"),
            h.value_at_quantile(q) as f64 / div,
            unit,
        );
    }
    report.metric(&format!("{prefix}_max"), h.max() as f64 / div, unit);
    report.metric(&format!("{prefix}_mean"), h.mean() / div, unit);
}

/// Keeps the first few distinct error texts of a run, for the report.
#[derive(Debug, Default)]
pub struct ErrorLog {
    pub count: u64,
    pub first: Vec<String>,
}

impl ErrorLog {
    pub fn push(&mut self, text: String) {
        self.count += 1;
        if self.first.len() < 5 && !self.first.contains(&text) {
            self.first.push(text);
        }
    }

    pub fn merge(&mut self, other: ErrorLog) {
        self.count += other.count.saturating_sub(other.first.len() as u64);
        for t in other.first {
            self.push(t);
        }
    }

    /// Adds the count as `key` and the texts as notes.
    pub fn report(&self, report: &mut Report, key: &str) {
        report.metric(key, self.count as f64, "");
        for t in &self.first {
            report.note(format!("{key}: {t}"));
        }
    }
}
