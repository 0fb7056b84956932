//! One read loop per listener, in place of the `turn` crate's `Server`: it asks the
//! [`Gatekeeper`] about each datagram and hands what passes to the crate's per-datagram
//! handler (`turn::server::request::Request`), with the listener's allocation table.
//!
//! Why not the crate's `Server`: its loop shares one nonce table for all clients and adds
//! an entry for every request without MESSAGE-INTEGRITY, which a spoofed flood grows
//! without bound (issue 15 finding 2), and it logs every refused request at ERROR. Here
//! the gatekeeper has already checked the nonce (stateless, `nonce.rs`) and the
//! MESSAGE-INTEGRITY, so each request gets a table holding just its own nonce, and the
//! crate's nonce check passes without anything being kept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::turn::allocation::allocation_manager::Manager;
use ::turn::auth::AuthHandler;
use ::turn::server::request::Request;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;

use super::gate::{Gatekeeper, Verdict};

/// Largest datagram the crate's handler takes (`INBOUND_MTU` upstream).
const INBOUND_MTU: usize = 1500;
/// Channel bindings last 10 minutes unless refreshed (RFC 8656 §12).
const CHANNEL_BIND_LIFETIME: Duration = Duration::from_secs(600);

/// What one listener's loop needs.
pub(super) struct Listener {
    /// The socket (UDP) or the TCP mux; also every allocation's "turn socket".
    pub(super) conn: Arc<dyn Conn + Send + Sync>,
    /// This listener's allocations (the crate keys them by 5-tuple without transport,
    /// so each listener has its own table).
    pub(super) manager: Arc<Manager>,
    pub(super) gate: Arc<Gatekeeper>,
    pub(super) auth: Arc<dyn AuthHandler + Send + Sync>,
    pub(super) realm: String,
}

impl Listener {
    /// Serves until `shutdown`, then closes this listener's allocations.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; INBOUND_MTU];
        loop {
            let (n, src) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.conn.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // The mux ends only on shutdown; a UDP socket error is fatal to
                        // the listener, as in the crate's loop.
                        tracing::warn!("TURN listener read: {e}");
                        break;
                    }
                },
            };
            let datagram = &buf[..n];
            let nonce = match self.gate.check(datagram, src).await {
                Verdict::Pass { nonce } => nonce,
                Verdict::Drop => continue,
                Verdict::Answer(reply) => {
                    let _ = self.conn.send_to(&reply, src).await;
                    continue;
                }
            };
            self.handle(datagram, src, nonce).await;
        }
        let _ = self.manager.close().await;
    }

    async fn handle(&self, datagram: &[u8], src: SocketAddr, nonce: Option<String>) {
        let nonces: HashMap<String, Instant> =
            nonce.into_iter().map(|n| (n, Instant::now())).collect();
        let mut request = Request {
            conn: Arc::clone(&self.conn),
            src_addr: src,
            buff: datagram.to_vec(),
            allocation_manager: Arc::clone(&self.manager),
            nonces: Arc::new(tokio::sync::Mutex::new(nonces)),
            auth_handler: Arc::clone(&self.auth),
            realm: self.realm.clone(),
            channel_bind_timeout: CHANNEL_BIND_LIFETIME,
        };
        // The crate answers the client itself where the protocol wants an answer; what
        // is left is a refused or malformed datagram, a client's problem, not ours.
        if let Err(e) = request.handle_request().await {
            tracing::debug!(%src, "TURN: {e}");
        }
    }
}
