//! Per-source limits for answers to unauthenticated TURN requests (issue 15 finding 3).
//! One shared bucket let a spoofed flood of ~2,900 packets/s from one address take every
//! challenge, so 0 of 8 legitimate allocations succeeded. Here each source address has
//! its own token bucket, in a fixed-size table hashed with a per-process key (memory is
//! the same however many sources there are), with a server-wide ceiling above them that
//! bounds what a flood from many (spoofed) addresses can make the server send.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::relay::TokenBucket;

/// Buckets in the table. Two sources share one only when their hashes collide, and the
/// hash key is random per process, so a flooder cannot aim at a chosen victim's bucket.
const SLOTS: usize = 4096;
/// Answers per second to one source. A browser needs one challenge per allocation (at
/// most six per call: UDP, TCP and TLS servers, twice before BUNDLE settles) and one 438
/// an hour per allocation, so even a carrier-grade NAT full of callers stays below this.
pub(super) const PER_SOURCE_PER_SEC: f64 = 10.0;
/// A source may spend this many at once (a page opening two calls' worth of servers).
const PER_SOURCE_BURST: f64 = 20.0;
/// All sources together: ~200 KB/s of 100-byte challenges at most.
pub(super) const GLOBAL_PER_SEC: u64 = 2000;

pub(super) struct SourceLimiter {
    slots: Mutex<Vec<Slot>>,
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
    global: TokenBucket,
}

#[derive(Clone, Copy)]
struct Slot {
    tokens: f64,
    /// Milliseconds since `epoch` of the last refill.
    last_ms: u64,
}

impl SourceLimiter {
    pub(super) fn new() -> Self {
        SourceLimiter {
            slots: Mutex::new(vec![
                Slot {
                    tokens: PER_SOURCE_BURST,
                    last_ms: 0,
                };
                SLOTS
            ]),
            hasher: Default::default(),
            epoch: Instant::now(),
            global: TokenBucket::new(GLOBAL_PER_SEC),
        }
    }

    /// Takes one answer from `ip`'s budget and the server's, if both have one.
    pub(super) fn allow(&self, ip: IpAddr) -> bool {
        let slot = (self.hasher.hash_one(source_key(ip)) % SLOTS as u64) as usize;
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        // A poisoned lock only means another packet panicked mid-update; the buckets
        // are still usable.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = slots.get_mut(slot) else {
            return false;
        };
        let elapsed = now_ms.saturating_sub(s.last_ms) as f64 / 1000.0;
        s.tokens = (s.tokens + elapsed * PER_SOURCE_PER_SEC).min(PER_SOURCE_BURST);
        s.last_ms = now_ms;
        // The global bucket is asked only for sources within their own budget, so one
        // flooding source cannot use up the ceiling for the others.
        if s.tokens >= 1.0 && self.global.take(1) {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What counts as one source: an IPv4 address, or an IPv6 /64 (one subscriber's
/// prefix: one host can pick any address in it).
fn source_key(ip: IpAddr) -> u128 {
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
        let l = SourceLimiter::new();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let granted = (0..1000).filter(|_| l.allow(a)).count();
        assert!((20..=22).contains(&granted), "{granted}");
        // b is untouched by a's flood (unless the two collide in the table).
        let same_slot = l.hasher.hash_one(source_key(a)) % SLOTS as u64
            == l.hasher.hash_one(source_key(b)) % SLOTS as u64;
        if !same_slot {
            assert!(l.allow(b));
        }
        // One host's addresses in a /64 are one source.
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8::ffff:1".parse().expect("ip");
        assert_eq!(source_key(v6), source_key(v6b));
        assert_ne!(source_key(v6), source_key(a));
    }
}
