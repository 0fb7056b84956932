//! Per-source limits for answers to unauthenticated TURN requests (issue 15 finding 3).
//! One shared bucket let a spoofed flood of ~2,900 packets/s from one address take every
//! challenge, so 0 of 8 legitimate allocations succeeded. Here each source address has its
//! own budget ([`crate::source_limit`]), with a server-wide ceiling above them that bounds
//! what a flood from many (spoofed) addresses can make the server send.

use std::net::IpAddr;

use super::relay::TokenBucket;
use crate::source_limit::SourceLimiter;

/// Answers per second to one source. A browser needs one challenge per allocation (at
/// most six per call: UDP, TCP and TLS servers, twice before BUNDLE settles) and one 438
/// an hour per allocation, so even a carrier-grade NAT full of callers stays below this.
const PER_SOURCE_PER_SEC: f64 = 10.0;
/// A source may spend this many at once (a page opening two calls' worth of servers).
const PER_SOURCE_BURST: f64 = 20.0;
/// All sources together: ~200 KB/s of 100-byte challenges at most.
const GLOBAL_PER_SEC: u64 = 2000;

pub(super) struct UnauthenticatedLimit {
    sources: SourceLimiter,
    global: TokenBucket,
}

impl UnauthenticatedLimit {
    pub(super) fn new() -> Self {
        UnauthenticatedLimit {
            sources: SourceLimiter::new(PER_SOURCE_PER_SEC, PER_SOURCE_BURST),
            global: TokenBucket::new(GLOBAL_PER_SEC),
        }
    }

    /// Takes one answer from `ip`'s budget and the server's, if both have one. The global
    /// bucket is asked only for sources within their own budget, so one flooding source
    /// cannot use up the ceiling for the others.
    pub(super) fn allow(&self, ip: IpAddr) -> bool {
        self.sources.allow_if(ip, || self.global.take(1))
    }
}
