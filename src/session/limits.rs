//! The per-connection rate limit: a token bucket that also decides when a client that
//! keeps sending past it is disconnected.

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
    fn zero_rate_is_unlimited() {
        let start = Instant::now();
        let mut rl = RateLimit::new(0.0, 1, start);
        assert!((0..10_000).all(|_| rl.check(start) == Verdict::Allowed));
    }
}
