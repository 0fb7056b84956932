//! Relay sockets: every socket the `turn` crate relays through is wrapped so that it
//! drops datagrams to or from peers the [`PeerPolicy`] denies (defence in depth below
//! the gatekeeper's permission check, which Send indications bypass) and, with
//! `--turn-max-bps`, datagrams over the allocation's rate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use ::turn::relay::RelayAddressGenerator;
use ::turn::relay::relay_range::RelayAddressGeneratorRanges;
use async_trait::async_trait;
use webrtc_util::Conn;

use super::filter::{Filter, Filtered, Inbound, Outbound};
use super::policy::PeerPolicy;

/// Wraps the crate's port-range generator so every relay socket it hands out
/// is guarded by a [`RelayGuard`].
pub(super) struct GuardedGenerator {
    inner: RelayAddressGeneratorRanges,
    policy: PeerPolicy,
    /// Per-allocation cap, both directions together (0 = unlimited).
    max_bytes_per_sec: u64,
    /// Socket buffer size for relay sockets (`--turn-udp-buffer`; 0 = system default).
    buffer: usize,
}

impl GuardedGenerator {
    pub(super) fn new(
        inner: RelayAddressGeneratorRanges,
        policy: PeerPolicy,
        max_bytes_per_sec: u64,
        buffer: usize,
    ) -> Self {
        GuardedGenerator {
            inner,
            policy,
            max_bytes_per_sec,
            buffer,
        }
    }
}

/// Sets a socket's receive and send buffers to `bytes` (0: leaves them). Best effort: the
/// kernel caps the size at net.core.rmem_max / wmem_max, and a smaller buffer only means
/// drops under load, as before.
pub(super) fn set_buffers<'s>(socket: impl Into<socket2::SockRef<'s>>, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let socket = socket.into();
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
}

#[async_trait]
impl RelayAddressGenerator for GuardedGenerator {
    fn validate(&self) -> Result<(), ::turn::Error> {
        self.inner.validate()
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), ::turn::Error> {
        let (conn, addr) = self.inner.allocate_conn(use_ipv4, requested_port).await?;
        // The crate's generator binds real tokio sockets (no virtual network here).
        if let Some(socket) = conn.as_any().downcast_ref::<tokio::net::UdpSocket>() {
            set_buffers(socket, self.buffer);
        }
        let guard = RelayGuard {
            policy: self.policy,
            bucket: (self.max_bytes_per_sec > 0).then(|| TokenBucket::new(self.max_bytes_per_sec)),
        };
        Ok((Arc::new(Filtered::new(conn, guard)), addr))
    }
}

/// The [`Filter`] of one relay socket: drops traffic to/from denied peers and over the
/// rate.
pub(super) struct RelayGuard {
    policy: PeerPolicy,
    /// One bucket per allocation, shared by both directions; `None` when uncapped.
    bucket: Option<TokenBucket>,
}

impl RelayGuard {
    fn admit(&self, len: usize) -> bool {
        self.bucket.as_ref().is_none_or(|b| b.take(len as u64))
    }
}

impl Filter for RelayGuard {
    async fn inbound(&self, datagram: &[u8], src: SocketAddr) -> Inbound {
        // Dropped, never an error: the crate tears the allocation down on any relay
        // read error.
        if self.policy.allows(src.ip()) && self.admit(datagram.len()) {
            Inbound::Pass
        } else {
            Inbound::Drop
        }
    }

    fn outbound(&self, len: usize, target: SocketAddr) -> webrtc_util::Result<Outbound> {
        if !self.policy.allows(target.ip()) {
            return Err(webrtc_util::Error::Other(format!(
                "relay to {target} denied"
            )));
        }
        // Over the cap: drop like a congested link would.
        Ok(if self.admit(len) {
            Outbound::Send
        } else {
            Outbound::Drop
        })
    }
}

/// Classic token bucket holding up to one second of traffic. It locks itself because
/// both directions of a relay (and every reader of a listener) share one.
pub(super) struct TokenBucket {
    /// Tokens (bytes or requests) per second, also the capacity.
    rate: u64,
    state: Mutex<BucketState>,
}

struct BucketState {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: u64) -> Self {
        TokenBucket {
            rate,
            state: Mutex::new(BucketState {
                tokens: rate as f64,
                last: Instant::now(),
            }),
        }
    }

    /// Takes `n` tokens if there are that many.
    pub(super) fn take(&self, n: u64) -> bool {
        // A poisoned lock only means another packet panicked mid-update;
        // the bucket state is still usable.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(state.last).as_secs_f64() * self.rate as f64;
        state.tokens = (state.tokens + refill).min(self.rate as f64);
        state.last = now;
        if state.tokens >= n as f64 {
            state.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use tokio::net::UdpSocket;
    use tokio::time::timeout;

    use super::*;

    #[tokio::test]
    async fn guarded_relay_filters_both_directions() {
        // Defence in depth below the permission check: even with a permission the
        // relay socket itself neither sends to nor accepts from denied peers.
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let relay_addr = sock.local_addr().expect("addr");
        let guard = RelayGuard {
            policy: PeerPolicy {
                allow_loopback: false,
                allow_private: false,
            },
            bucket: None,
        };
        let relay = Filtered::new(Arc::new(sock), guard);
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("peer");
        assert!(
            relay
                .send_to(b"x", peer.local_addr().expect("addr"))
                .await
                .is_err()
        );
        peer.send_to(b"x", relay_addr).await.expect("send");
        let mut buf = [0u8; 8];
        assert!(
            timeout(Duration::from_millis(200), relay.recv_from(&mut buf))
                .await
                .is_err(),
            "must be dropped"
        );
    }
}
