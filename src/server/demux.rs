//! One port for HTTP(S), WebSockets and TURN: telling a TURN client from an HTTP one on
//! an accepted connection (after the TLS handshake on the HTTPS port), so that a network
//! that lets out nothing but TCP to port 443 still reaches the relay.
//!
//! The decision, in order:
//! 1. TLS ALPN: `stun.turn` (RFC 7443) is TURN, `h2` is HTTP, with no byte read. The
//!    server lists `stun.turn` first, so a client offering it gets it. `http/1.1` does
//!    not decide: coturn's client offers it next to `stun.turn` (to look like HTTPS to
//!    firewalls), and clients of other TURN servers may offer it alone.
//! 2. Otherwise the first bytes. A TURN client's first message on a new connection is a
//!    STUN request (ChannelData needs a channel, which needs an allocation on this very
//!    connection): the top two bits of byte 0 are `00` and bytes 4..8 are the magic cookie
//!    0x2112A442 (RFC 8489 §6). An HTTP/1 request line starts with a method token
//!    (letters, 0x41 and up) and HTTP/2's preface with `PRI`, so byte 0 alone settles
//!    every HTTP client; only a byte below 0x40 waits for eight.
//!
//! The bytes read to decide are replayed to whoever gets the connection ([`Prefixed`]).
//! Cost per connection: one read of at most eight bytes into the stack and a branch per
//! later read; nothing when ALPN decided. The wait for those bytes is bounded by the
//! caller (the idle limit), so a silent or trickling client costs one task for at most
//! that long.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// ALPN protocol id of TURN (RFC 7443 §6).
pub const TURN_ALPN: &[u8] = b"stun.turn";

/// STUN's magic cookie, bytes 4..8 of every STUN message (RFC 8489 §6).
const MAGIC_COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();

/// Bytes needed to recognise a STUN header.
const STUN_PREFIX: usize = 8;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// HTTP/1, HTTP/2 or a WebSocket upgrade (or garbage, which hyper refuses).
    Http,
    /// A TURN (or STUN) client.
    Turn,
}

/// Decides from what the client has sent so far; `None` while more bytes are needed.
pub fn classify(head: &[u8]) -> Option<Peer> {
    let first = *head.first()?;
    if first >> 6 != 0 {
        return Some(Peer::Http);
    }
    let cookie = head.get(4..STUN_PREFIX)?;
    Some(if cookie == MAGIC_COOKIE {
        Peer::Turn
    } else {
        Peer::Http
    })
}

/// The peer a TLS session's negotiated ALPN protocol names, if it names one.
pub fn classify_alpn(alpn: Option<&[u8]>) -> Option<Peer> {
    match alpn? {
        TURN_ALPN => Some(Peer::Turn),
        b"h2" => Some(Peer::Http),
        _ => None,
    }
}

/// Reads from `stream` until [`classify`] decides. Returns the decision and the bytes
/// read, which belong to the connection ([`Prefixed`]). EOF before a decision is an
/// `UnexpectedEof` error. Not bounded in time: the caller puts a deadline on it.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Peer, Head)> {
    let mut head = Head::default();
    loop {
        if let Some(peer) = classify(head.bytes()) {
            return Ok((peer, head));
        }
        let n = stream.read(&mut head.buf[head.len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.len += n;
    }
}

/// The bytes [`sniff`] read: at most [`STUN_PREFIX`], kept inline.
#[derive(Debug, Default, Clone, Copy)]
pub struct Head {
    buf: [u8; STUN_PREFIX],
    len: usize,
}

impl Head {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A stream that first yields the bytes already read from it.
pub struct Prefixed<S> {
    head: Head,
    /// How much of `head` has been yielded.
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(head: Head, inner: S) -> Prefixed<S> {
        Prefixed {
            head,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let rest = &this.head.bytes()[this.pos..];
        if !rest.is_empty() {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN Binding request header (type 0x0001, length 0, cookie, transaction id).
    fn stun_header() -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x00];
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m
    }

    #[test]
    fn first_bytes_decide() {
        assert_eq!(classify(b""), None);
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST",
            b"PRI * HTTP/2.0",
            b"OPTIONS",
            b"G",
            // ChannelData (0x40-0x7F) cannot open a connection; it is not TURN here.
            &[0x40, 0x00, 0x00, 0x04],
        ] {
            assert_eq!(classify(http), Some(Peer::Http), "{http:?}");
        }
        let stun = stun_header();
        for n in 1..STUN_PREFIX {
            assert_eq!(classify(&stun[..n]), None, "{n} bytes of STUN");
        }
        assert_eq!(classify(&stun[..STUN_PREFIX]), Some(Peer::Turn));
        assert_eq!(classify(&stun), Some(Peer::Turn));
        // Low first byte without the cookie (an HTTP client's stray CRLF, or noise): hyper
        // gets it and answers or refuses as HTTP.
        assert_eq!(classify(b"\r\nGET / "), Some(Peer::Http));
        assert_eq!(classify(&[0; 8]), Some(Peer::Http));
    }

    #[test]
    fn alpn_decides_when_present() {
        assert_eq!(classify_alpn(Some(b"stun.turn")), Some(Peer::Turn));
        assert_eq!(classify_alpn(Some(b"h2")), Some(Peer::Http));
        assert_eq!(
            classify_alpn(Some(b"http/1.1")),
            None,
            "the first bytes decide"
        );
        assert_eq!(classify_alpn(None), None);
        assert_eq!(classify_alpn(Some(b"acme-tls/1")), None);
    }

    #[tokio::test]
    async fn sniffed_bytes_are_replayed() {
        let mut wire = stun_header();
        wire.extend_from_slice(b"rest");
        // One byte per write, as a trickling client sends them.
        let (mut client, mut stream) = tokio::io::duplex(64);
        let sent = wire.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in sent {
                client.write_all(&[b]).await.expect("write");
                tokio::task::yield_now().await;
            }
        });
        let (peer, head) = sniff(&mut stream).await.expect("sniff");
        assert_eq!(peer, Peer::Turn);
        assert_eq!(head.bytes(), &wire[..STUN_PREFIX]);
        let mut all = Vec::new();
        Prefixed::new(head, stream)
            .read_to_end(&mut all)
            .await
            .expect("read");
        assert_eq!(all, wire);

        let mut http = &b"GET / HTTP/1.1\r\n\r\n"[..];
        let (peer, head) = sniff(&mut http).await.expect("sniff");
        assert_eq!(peer, Peer::Http);
        let mut all = Vec::new();
        Prefixed::new(head, http)
            .read_to_end(&mut all)
            .await
            .expect("read");
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\n");

        let mut short = &stun_header()[..3];
        assert!(sniff(&mut short).await.is_err(), "EOF before a decision");
    }
}
