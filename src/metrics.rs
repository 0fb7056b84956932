//! Counters and gauges, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Every label set is a small fixed enum (message kinds, error codes), so plain atomics in
//! arrays do the job with no hashing or locking on the relay path.
//!
//! The open-connection gauge is also the `--max-connections` limit's state, so it moves
//! only through a [`ConnectionPermit`]: taken in [`Metrics::open_connection`], given back
//! when dropped.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

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

    /// Renders every metric. `users_online` and `backend` come from the registry.
    pub fn render(&self, users_online: usize, backend: Option<(&'static str, bool)>) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "duet_connections_open",
            "WebSocket connections open.",
            self.connections_open.load(Relaxed),
        );
        gauge(
            "duet_users_online",
            "Logged-in users (cluster-wide with Redis).",
            users_online as i64,
        );
        let in_call = self.sessions_in_call.load(Relaxed);
        gauge(
            "duet_users_in_call",
            "Users on this node in an answered call.",
            in_call,
        );
        gauge(
            "duet_calls_in_progress",
            "Answered calls: users in a call on this node, halved and rounded up (exact on a \
             single node; in a cluster, sum duet_users_in_call over nodes and halve).",
            (in_call + 1) / 2,
        );
        if let Some((name, up)) = backend {
            gauge(
                &format!("duet_{name}_connected"),
                "1 when the registry backend is reachable.",
                i64::from(up),
            );
        }
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "duet_connections_total",
            "WebSocket connections accepted.",
            self.connections_total.load(Relaxed),
        );
        counter(
            "duet_connections_refused_total",
            "Connections refused at the connection limit.",
            self.connections_refused.load(Relaxed),
        );
        counter(
            "duet_logins_total",
            "Successful logins.",
            self.logins_total.load(Relaxed),
        );
        counter(
            "duet_slow_consumers_dropped_total",
            "Connections closed because they did not drain their queue.",
            self.slow_consumers.load(Relaxed),
        );
        counter(
            "duet_pong_timeouts_total",
            "Connections closed because they stopped answering pings.",
            self.pong_timeouts.load(Relaxed),
        );
        counter(
            "duet_rate_limit_closes_total",
            "Connections closed for persistently exceeding the rate limit.",
            self.rate_limit_closes.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP duet_messages_relayed_total Signaling messages delivered to a peer, by type.\n\
             # TYPE duet_messages_relayed_total counter"
        );
        for kind in SignalKind::ALL {
            let _ = writeln!(
                out,
                "duet_messages_relayed_total{{type=\"{}\"}} {}",
                kind.as_str(),
                self.relayed[kind_index(kind)].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP duet_errors_total Errors sent to clients, by code.\n\
             # TYPE duet_errors_total counter"
        );
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "duet_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                self.errors[code.index()].load(Relaxed)
            );
        }
        out
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

    #[test]
    fn a_limit_beyond_i64_does_not_refuse() {
        let metrics = Arc::new(Metrics::default());
        assert!(metrics.open_connection(usize::MAX).is_some());
        assert_eq!(open(&metrics), 0);
    }
}
