//! The per-connection rate limit: a token bucket that also decides when a client that
//! keeps sending past it is disconnected; and the limits on calls, against ring-bombing.

use tokio::time::Instant;

/// What the rate limit says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; the client is told to slow down.
    Refused,
    /// Refused once too often in a row (more than the burst): close the connection.
    Exceeded,
}

/// Token bucket: `rate` tokens per second, at most `burst` stored.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Refused messages since the last allowed one.
    excess: u32,
}

impl RateLimit {
    /// A full bucket; a `rate` of 0 (or less) allows everything.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: now,
            excess: 0,
        }
    }

    /// Takes a token for a message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.excess = 0;
            return Verdict::Allowed;
        }
        self.excess = self.excess.saturating_add(1);
        if f64::from(self.excess) > self.burst {
            Verdict::Exceeded
        } else {
            Verdict::Refused
        }
    }
}

/// Logins from one client address (an IPv4 address or an IPv6 /64): 60 at once (an
/// office behind one NAT signing in after a restart), then two a second. Each login and
/// logout is a presence update to everyone online, so one client churning logins could
/// otherwise flood every user (issue 15 finding 7).
pub const LOGINS_PER_SECOND: f64 = 2.0;
pub const LOGINS_BURST: f64 = 60.0;

/// Calls a connection may start: 10 at once, then one every 6 s (10 a minute). Nobody
/// dials ten people within a minute by hand; a script re-offering a victim does.
const CALLS_BURST: u32 = 10;
const CALLS_PER_SECOND: f64 = 1.0 / 6.0;

/// Incoming calls a connection may ring for: 20 at once, then one every 3 s (20 a minute),
/// from all callers together.
const RINGS_BURST: u32 = 20;
const RINGS_PER_SECOND: f64 = 1.0 / 3.0;

/// The limits on calls of one connection, against ring-bombing (re-offering a victim so
/// that it rings without end and is busy for everyone else): how many calls it may start,
/// and how many incoming calls may ring it. Renegotiation within a call is not counted.
pub struct CallLimits {
    started: RateLimit,
    rung: RateLimit,
}

impl CallLimits {
    /// The limits, or none at all when not `enabled` (`--rate-limit 0`).
    pub fn new(enabled: bool, now: Instant) -> Self {
        let on = |rate| if enabled { rate } else { 0.0 };
        CallLimits {
            started: RateLimit::new(on(CALLS_PER_SECOND), CALLS_BURST, now),
            rung: RateLimit::new(on(RINGS_PER_SECOND), RINGS_BURST, now),
        }
    }

    /// Whether our client may start a new call at `now` (counts it if so).
    pub fn may_start(&mut self, now: Instant) -> bool {
        self.started.check(now) == Verdict::Allowed
    }

    /// Whether a new incoming call may ring here at `now` (counts it if so).
    pub fn may_ring(&mut self, now: Instant) -> bool {
        self.rung.check(now) == Verdict::Allowed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refills_at_the_rate() {
        let start = Instant::now();
        let mut rl = RateLimit::new(10.0, 2, start);
        assert_eq!(rl.check(start), Verdict::Allowed);
        assert_eq!(rl.check(start), Verdict::Allowed);
        assert_eq!(rl.check(start), Verdict::Refused);
        assert_eq!(rl.excess, 1);
        assert_eq!(
            rl.check(start + Duration::from_millis(150)),
            Verdict::Allowed
        );
        assert_eq!(rl.excess, 0);
    }

    #[test]
    fn more_refusals_in_a_row_than_the_burst_exceed_it() {
        let start = Instant::now();
        let mut rl = RateLimit::new(1.0, 3, start);
        for _ in 0..3 {
            assert_eq!(rl.check(start), Verdict::Allowed);
        }
        for _ in 0..3 {
            assert_eq!(rl.check(start), Verdict::Refused);
        }
        assert_eq!(rl.check(start), Verdict::Exceeded);
    }

    #[test]
    fn calls_allow_a_burst_then_one_every_few_seconds() {
        let start = Instant::now();
        let mut limits = CallLimits::new(true, start);
        assert!((0..CALLS_BURST).all(|_| limits.may_start(start)));
        assert!(!limits.may_start(start));
        assert!(limits.may_start(start + Duration::from_secs(6)));
        assert!(!limits.may_start(start + Duration::from_secs(7)));
        assert!((0..RINGS_BURST).all(|_| limits.may_ring(start)));
        assert!(!limits.may_ring(start));
        assert!(limits.may_ring(start + Duration::from_secs(3)));
        let mut off = CallLimits::new(false, start);
        assert!((0..1000).all(|_| off.may_start(start) && off.may_ring(start)));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let start = Instant::now();
        let mut rl = RateLimit::new(0.0, 1, start);
        assert!((0..10_000).all(|_| rl.check(start) == Verdict::Allowed));
    }
}
