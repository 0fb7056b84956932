//! Limits per client address, in constant memory: each source address has its own token
//! bucket, in a fixed-size table hashed with a per-process key, so memory is the same
//! however many sources there are (a flood from spoofed addresses cannot grow it), and a
//! flooder cannot aim at a chosen victim's bucket. Used for unauthenticated TURN requests
//! (issue 15 finding 3: one shared bucket let one spoofing source starve everyone) and for
//! logins (finding 7: one client churning logins flooded every user with presence).
//!
//! Written here rather than taken from `governor`: its keyed limiter keeps one entry per
//! key in a map that grows with the sources seen until pruned, the opposite of what a
//! limit against spoofed floods needs, and this table is forty lines.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Buckets in the table. Two sources share one only when their hashes collide.
const SLOTS: usize = 4096;

pub struct SourceLimiter {
    slots: Mutex<Vec<Slot>>,
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
    per_sec: f64,
    burst: f64,
}

#[derive(Clone, Copy)]
struct Slot {
    tokens: f64,
    /// Milliseconds since `epoch` of the last refill.
    last_ms: u64,
}

impl SourceLimiter {
    /// Each source may spend `burst` at once, then `per_sec`.
    pub fn new(per_sec: f64, burst: f64) -> Self {
        SourceLimiter {
            slots: Mutex::new(vec![
                Slot {
                    tokens: burst,
                    last_ms: 0,
                };
                SLOTS
            ]),
            hasher: Default::default(),
            epoch: Instant::now(),
            per_sec,
            burst,
        }
    }

    /// Takes one token from `ip`'s budget, if it has one.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_if(ip, || true)
    }

    /// Takes one token from `ip`'s budget if it has one and `also` (asked only then: a
    /// server-wide ceiling that one flooding source must not use up for the others)
    /// agrees.
    pub fn allow_if(&self, ip: IpAddr, also: impl FnOnce() -> bool) -> bool {
        let slot = (self.hasher.hash_one(source_key(ip)) % SLOTS as u64) as usize;
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        // A poisoned lock only means another thread panicked mid-update; the buckets are
        // still usable.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = slots.get_mut(slot) else {
            return false;
        };
        let elapsed = now_ms.saturating_sub(s.last_ms) as f64 / 1000.0;
        s.tokens = (s.tokens + elapsed * self.per_sec).min(self.burst);
        s.last_ms = now_ms;
        if s.tokens >= 1.0 && also() {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What counts as one source: an IPv4 address, or an IPv6 /64 (one subscriber's
/// prefix: one host can pick any address in it).
pub fn source_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6) >> 64 << 64 | 1 << 32,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_have_their_own_budgets() {
        let l = SourceLimiter::new(10.0, 20.0);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let granted = (0..1000).filter(|_| l.allow(a)).count();
        assert!((20..=22).contains(&granted), "{granted}");
        // b is untouched by a's flood (unless the two collide in the table).
        let same_slot = l.hasher.hash_one(source_key(a)) % SLOTS as u64
            == l.hasher.hash_one(source_key(b)) % SLOTS as u64;
        if !same_slot {
            assert!(l.allow(b));
            // A refusal of the ceiling spends nothing of b's own budget.
            assert!(!l.allow_if(b, || false));
            assert_eq!((0..1000).filter(|_| l.allow(b)).count(), 19);
        }
        // One host's addresses in a /64 are one source.
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8::ffff:1".parse().expect("ip");
        assert_eq!(source_key(v6), source_key(v6b));
        assert_ne!(source_key(v6), source_key(a));
    }
}
