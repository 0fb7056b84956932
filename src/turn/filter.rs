//! One `Conn` wrapper for the connections duet puts between the `turn` crate and a
//! socket: [`Filtered`] forwards the seven `webrtc_util::Conn` methods a filter has no
//! business with, and asks its [`Filter`] about each datagram on the two that carry
//! traffic (`recv_from`, `send_to`).
//!
//! A wrapper type rather than a macro: what a relay guard adds is a decision per
//! datagram, which a small trait states exactly, and a filter is then plain code that can
//! be tested without a socket. The listeners' gatekeeper needs no wrapper: duet runs the
//! listeners' read loops itself (`listener.rs`) and asks it there.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use webrtc_util::Conn;

/// What becomes of a datagram read from the inner connection.
pub(super) enum Inbound {
    /// Hand it to the crate.
    Pass,
    /// Drop it without a word, as a lossy link would.
    Drop,
}

/// What becomes of a datagram the crate sends.
pub(super) enum Outbound {
    Send,
    /// Report it as sent and drop it, as a congested link would: an error would make
    /// the crate tear the allocation down.
    Drop,
}

/// The per-datagram decisions of a [`Filtered`] connection.
pub(super) trait Filter: Send + Sync + 'static {
    /// Decides about `datagram`, just received from `src`. Never an error: the crate
    /// ends its read loop (or the allocation) on any read error, so refusing one
    /// datagram must not look like a broken socket.
    fn inbound(&self, datagram: &[u8], src: SocketAddr) -> impl Future<Output = Inbound> + Send;

    /// Decides about `len` bytes the crate sends to `target`; an error is returned to
    /// the crate's sender as is. Everything is sent unless a filter says otherwise.
    fn outbound(&self, _len: usize, _target: SocketAddr) -> webrtc_util::Result<Outbound> {
        Ok(Outbound::Send)
    }
}

/// A connection whose traffic passes through a [`Filter`].
pub(super) struct Filtered<F> {
    inner: Arc<dyn Conn + Send + Sync>,
    filter: F,
}

impl<F: Filter> Filtered<F> {
    pub(super) fn new(inner: Arc<dyn Conn + Send + Sync>, filter: F) -> Self {
        Filtered { inner, filter }
    }
}

#[async_trait]
impl<F: Filter> Conn for Filtered<F> {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            match self.filter.inbound(&buf[..n], src).await {
                Inbound::Pass => return Ok((n, src)),
                Inbound::Drop => {}
            }
        }
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        match self.filter.outbound(buf.len(), target)? {
            Outbound::Send => self.inner.send_to(buf, target).await,
            Outbound::Drop => Ok(buf.len()),
        }
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
