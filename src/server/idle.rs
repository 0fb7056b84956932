//! Idle deadline for a connection before it becomes a WebSocket: hyper times out a
//! request's headers only on HTTP/1 and only once the first byte arrived, so a TLS client
//! that completes the handshake and sends nothing, or an HTTP/2 client that sends its
//! preface and then only answers pings, would hold a descriptor for ever (an adversarial
//! run held 276 of 256 descriptors this way and made a normal call fail).
//!
//! [`Watched`] wraps the connection's stream and notes when bytes last arrived; the
//! connection task closes the connection once nothing arrived for the idle limit. After a
//! WebSocket upgrade the task no longer looks (the session's own keepalive takes over);
//! the note costs one relaxed store per read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When bytes last arrived, in milliseconds since the connection was accepted.
#[derive(Clone)]
pub struct LastRead {
    since: Instant,
    millis: Arc<AtomicU64>,
}

impl LastRead {
    pub fn new() -> LastRead {
        LastRead {
            since: Instant::now(),
            millis: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(now, Relaxed);
    }

    /// How long nothing has arrived.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.millis.load(Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// A stream that notes in a [`LastRead`] when bytes arrive.
pub struct Watched<S> {
    inner: S,
    last_read: LastRead,
}

impl<S> Watched<S> {
    pub fn new(inner: S, last_read: LastRead) -> Watched<S> {
        Watched { inner, last_read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last_read.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
