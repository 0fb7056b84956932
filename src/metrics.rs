//! Counters and gauges, rendered in the Prometheus text format at `GET /metrics` by the
//! `prometheus-client` crate, plus the process family (memory, open files, uptime).
//!
//! Every label set is a small fixed enum (message kinds, error codes), so plain atomics in
//! arrays do the job with no hashing or locking on the relay path.
//!
//! The open-connection gauge is also the `--max-connections` limit's state, so it moves
//! only through a [`ConnectionPermit`]: taken in [`Metrics::open_connection`], given back
//! when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeMetric as _, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use crate::protocol::{ErrorCode, SignalKind};

#[derive(Default)]
pub struct Metrics {
    /// WebSocket connections holding a [`ConnectionPermit`]: upgrading or in a session.
    /// Private: only a permit counts it up or down.
    connections_open: AtomicI64,
    /// WebSocket sessions accepted since start.
    pub connections_total: AtomicU64,
    /// Upgrades refused because `--max-connections` was reached.
    pub connections_refused: AtomicU64,
    /// Sessions in an answered call (each call counts on both of its sides).
    pub sessions_in_call: AtomicI64,
    pub logins_total: AtomicU64,
    relayed: [AtomicU64; 4],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Sessions disconnected because their outgoing queue was full.
    pub slow_consumers: AtomicU64,
    /// Sessions disconnected because they stopped answering pings.
    pub pong_timeouts: AtomicU64,
    /// Sessions closed for persistently exceeding the rate limit.
    pub rate_limit_closes: AtomicU64,
    /// Sessions closed because another node claimed their name (in a cluster: Redis lost
    /// its data, or this node was cut off from it).
    pub names_lost: AtomicU64,
    /// Logins carrying a resume token (with resume on).
    pub resume_attempts: AtomicU64,
    /// Of those, the ones that took back a held or connected session.
    pub resumes: AtomicU64,
    /// Of those, the ones refused with `invalid-token`.
    pub resumes_refused: AtomicU64,
    /// Held names freed because the resume window passed without a resume.
    pub resumes_expired: AtomicU64,
    /// For the uptime and start-time gauges.
    started: Started,
}

fn kind_index(kind: SignalKind) -> usize {
    kind as usize
}

/// One WebSocket connection's place under `--max-connections`, counted in
/// `duet_connections_open` for as long as the value lives. Whoever holds it holds the
/// place: it moves from the upgrade into the session, and dropping it, on whatever path
/// the connection ends (failed upgrade, session over, task dropped at shutdown), gives
/// the place back.
#[must_use = "the connection is uncounted as soon as the permit is dropped"]
pub struct ConnectionPermit {
    metrics: Arc<Metrics>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// Takes a place for one more WebSocket connection if fewer than `limit` are open;
    /// counts it in `connections_total`, or in `connections_refused` when at the limit.
    pub fn open_connection(self: &Arc<Self>, limit: usize) -> Option<ConnectionPermit> {
        // Counted up before the check (and the permit made at once, so that the count
        // comes down however this returns): racing upgrades cannot overshoot the limit.
        let open = self.connections_open.fetch_add(1, Relaxed) + 1;
        let permit = ConnectionPermit {
            metrics: self.clone(),
        };
        if usize::try_from(open).is_ok_and(|open| open <= limit) {
            self.connections_total.fetch_add(1, Relaxed);
            Some(permit)
        } else {
            drop(permit);
            self.connections_refused.fetch_add(1, Relaxed);
            None
        }
    }

    pub fn relayed(&self, kind: SignalKind) {
        self.relayed[kind_index(kind)].fetch_add(1, Relaxed);
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Relaxed);
    }

    /// Renders every metric in the Prometheus text format (0.0.4). `users_online` and
    /// `backend` come from the registry.
    pub fn render(&self, users_online: usize, backend: Option<(&'static str, bool)>) -> String {
        let in_call = self.sessions_in_call.load(Relaxed);
        let scrape = Scrape {
            connections_open: self.connections_open.load(Relaxed),
            users_online: i64::try_from(users_online).unwrap_or(i64::MAX),
            in_call,
            backend: backend.map(|(name, up)| (format!("duet_{name}_connected"), up)),
            connections_total: self.connections_total.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            logins_total: self.logins_total.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
            pong_timeouts: self.pong_timeouts.load(Relaxed),
            rate_limit_closes: self.rate_limit_closes.load(Relaxed),
            names_lost: self.names_lost.load(Relaxed),
            resume: [
                self.resume_attempts.load(Relaxed),
                self.resumes.load(Relaxed),
                self.resumes_refused.load(Relaxed),
                self.resumes_expired.load(Relaxed),
            ],
            relayed: SignalKind::ALL
                .map(|kind| (kind.as_str(), self.relayed[kind_index(kind)].load(Relaxed))),
            errors: ErrorCode::ALL
                .map(|code| (code.as_str(), self.errors[code.index()].load(Relaxed))),
            process: Process::read(&self.started),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; an encoder error would be a bug in it, and
        // a partial page is still the best answer to a scrape.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// When this server started, for the uptime and start-time gauges.
struct Started {
    at: Instant,
    wall: SystemTime,
}

impl Default for Started {
    fn default() -> Started {
        Started {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// The process-level family: what a Prometheus process collector reports, read from
/// `/proc` (Linux; elsewhere the ones that need it are left out).
#[derive(Debug)]
struct Process {
    uptime_seconds: f64,
    start_time_seconds: f64,
    resident_memory_bytes: Option<u64>,
    open_fds: Option<u64>,
}

impl Process {
    fn read(started: &Started) -> Process {
        let resident_memory_bytes =
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|status| {
                    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                    Some(kb * 1024)
                });
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        Process {
            uptime_seconds: started.at.elapsed().as_secs_f64(),
            start_time_seconds: started
                .wall
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            resident_memory_bytes,
            open_fds,
        }
    }
}

/// One scrape's values, taken from the atomics at once and handed to prometheus-client
/// as a collector: the counters stay plain atomics on the hot path (no registry lookups
/// while relaying), and the exposition format is the crate's.
#[derive(Debug)]
struct Scrape {
    connections_open: i64,
    users_online: i64,
    in_call: i64,
    backend: Option<(String, bool)>,
    connections_total: u64,
    connections_refused: u64,
    logins_total: u64,
    slow_consumers: u64,
    pong_timeouts: u64,
    rate_limit_closes: u64,
    names_lost: u64,
    /// Attempted, succeeded, refused, expired.
    resume: [u64; 4],
    relayed: [(&'static str, u64); SignalKind::ALL.len()],
    errors: [(&'static str, u64); ErrorCode::ALL.len()],
    process: Process,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    metric.encode_gauge(&value)
}

/// A counter; the encoder appends `_total` to `name`.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

/// A counter with one label, one sample per value.
fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: &[(&'static str, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(value, count) in samples {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        gauge(
            e,
            "duet_connections_open",
            "WebSocket connections open.",
            self.connections_open,
        )?;
        gauge(
            e,
            "duet_users_online",
            "Logged-in users (cluster-wide with Redis).",
            self.users_online,
        )?;
        gauge(
            e,
            "duet_users_in_call",
            "Users on this node in an answered call.",
            self.in_call,
        )?;
        gauge(
            e,
            "duet_calls_in_progress",
            "Answered calls: users in a call on this node, halved and rounded up (exact on a \
             single node; in a cluster, sum duet_users_in_call over nodes and halve).",
            (self.in_call + 1) / 2,
        )?;
        if let Some((name, up)) = &self.backend {
            gauge(
                e,
                name,
                "1 when the registry backend is reachable.",
                i64::from(*up),
            )?;
        }
        counter(
            e,
            "duet_connections",
            "WebSocket connections accepted.",
            self.connections_total,
        )?;
        counter(
            e,
            "duet_connections_refused",
            "Connections refused at the connection limit.",
            self.connections_refused,
        )?;
        counter(e, "duet_logins", "Successful logins.", self.logins_total)?;
        counter(
            e,
            "duet_slow_consumers_dropped",
            "Connections closed because they did not drain their queue.",
            self.slow_consumers,
        )?;
        counter(
            e,
            "duet_pong_timeouts",
            "Connections closed because they stopped answering pings.",
            self.pong_timeouts,
        )?;
        counter(
            e,
            "duet_rate_limit_closes",
            "Connections closed for persistently exceeding the rate limit.",
            self.rate_limit_closes,
        )?;
        counter(
            e,
            "duet_names_lost",
            "Sessions closed because another node claimed their name while this one could not vouch for it.",
            self.names_lost,
        )?;
        let [attempts, resumes, refused, expired] = self.resume;
        counter(
            e,
            "duet_resume_attempts",
            "Logins carrying a resume token.",
            attempts,
        )?;
        counter(
            e,
            "duet_resumes",
            "Logins that took back a held (or still connected) session with its token.",
            resumes,
        )?;
        counter(
            e,
            "duet_resumes_refused",
            "Logins refused with invalid-token (the name stayed held).",
            refused,
        )?;
        counter(
            e,
            "duet_resumes_expired",
            "Held names freed because the resume window passed without a resume.",
            expired,
        )?;
        counter_family(
            e,
            "duet_messages_relayed",
            "Signaling messages delivered to a peer, by type.",
            "type",
            &self.relayed,
        )?;
        counter_family(
            e,
            "duet_errors",
            "Errors sent to clients, by code.",
            "code",
            &self.errors,
        )?;
        let p = &self.process;
        gauge(
            e,
            "duet_uptime_seconds",
            "Seconds since this server started.",
            p.uptime_seconds,
        )?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            p.start_time_seconds,
        )?;
        if let Some(rss) = p.resident_memory_bytes {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                i64::try_from(rss).unwrap_or(i64::MAX),
            )?;
        }
        if let Some(fds) = p.open_fds {
            gauge(
                e,
                "process_open_fds",
                "Open file descriptors.",
                i64::try_from(fds).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(metrics: &Metrics) -> i64 {
        metrics.connections_open.load(Relaxed)
    }

    #[test]
    fn permits_count_up_to_the_limit_and_back_down_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let a = metrics.open_connection(2).expect("first place");
        let b = metrics.open_connection(2).expect("second place");
        assert_eq!(open(&metrics), 2);
        assert!(metrics.open_connection(2).is_none(), "over the limit");
        assert_eq!(open(&metrics), 2, "a refusal takes no place");
        assert_eq!(metrics.connections_refused.load(Relaxed), 1);
        drop(a);
        assert_eq!(open(&metrics), 1);
        let c = metrics.open_connection(2).expect("the freed place");
        drop((b, c));
        assert_eq!(open(&metrics), 0);
        assert_eq!(metrics.connections_total.load(Relaxed), 3);
        assert!(
            metrics
                .render(0, None)
                .contains("duet_connections_open 0\n")
        );
    }

    /// The names and types dashboards and tests rely on, through prometheus-client.
    #[test]
    fn render_keeps_the_metric_names() {
        let metrics = Arc::new(Metrics::default());
        metrics.logins_total.fetch_add(3, Relaxed);
        metrics.relayed(SignalKind::Offer);
        let body = metrics.render(2, Some(("redis", true)));
        for line in [
            "# TYPE duet_connections_open gauge",
            "duet_users_online 2",
            "duet_redis_connected 1",
            "# TYPE duet_logins_total counter",
            "duet_logins_total 3",
            "duet_connections_refused_total 0",
            "duet_resume_attempts_total 0",
            "# TYPE duet_resumes_expired_total counter",
            "duet_messages_relayed_total{type=\"offer\"} 1",
            "duet_errors_total{code=\"busy\"} 0",
            "# TYPE duet_uptime_seconds gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(body.lines().any(|l| l == line), "no `{line}` in\n{body}");
        }
        if cfg!(target_os = "linux") {
            assert!(body.contains("\nprocess_resident_memory_bytes "), "{body}");
            assert!(body.contains("\nprocess_open_fds "), "{body}");
        }
    }

    #[test]
    fn a_limit_beyond_i64_does_not_refuse() {
        let metrics = Arc::new(Metrics::default());
        assert!(metrics.open_connection(usize::MAX).is_some());
        assert_eq!(open(&metrics), 0);
    }
}
