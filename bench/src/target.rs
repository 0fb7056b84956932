//! The server under test and how client sockets reach it.
//!
//! Only loopback is ever loaded: [`Target::parse`] refuses any other address (no name is
//! resolved, `localhost` is taken as 127.0.0.1). Client sockets get TCP_NODELAY, and with
//! `--source-addrs N` are spread over source addresses 127.0.0.1..=127.0.0.N with
//! `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks ports per 4-tuple and ~19,000 connections
//! (plus the TIME_WAIT left by thousands of call setups) never exhaust ephemeral ports.

use anyhow::{Context as _, Result, anyhow, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// A loopback WebSocket endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given, used for the HTTP upgrade request.
    pub url: String,
    /// Where to connect; always a loopback address.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH]`, refusing anything that is not loopback.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = match url.strip_prefix("ws://") {
            Some(rest) => rest,
            None if url.starts_with("wss://") => {
                bail!("{url}: wss:// is not supported; benchmark the plain ws:// listener")
            }
            None => bail!("{url}: the URL must start with ws://"),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (host, port) = split_host_port(authority)
            .with_context(|| format!("{url}: cannot read host and port"))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .map_err(|_| anyhow!("{url}: `{host}` is not an IP literal; give a loopback address such as 127.0.0.1 (names are not resolved)"))?
        };
        if !ip.is_loopback() {
            bail!(
                "{url}: refusing to load {ip}: duet-bench only targets loopback (127.0.0.0/8, ::1)"
            );
        }
        Ok(Self {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
        })
    }
}

fn split_host_port(authority: &str) -> Result<(&str, u16)> {
    if authority.contains('@') {
        bail!("user info is not supported");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').context("unclosed [")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().with_context(|| format!("bad port `{p}`"))?,
        None => 80,
    };
    if host.is_empty() {
        bail!("no host");
    }
    Ok((host, port))
}

/// Opens client WebSockets to the target; cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    inner: Arc<DialerInner>,
}

struct DialerInner {
    target: Target,
    /// Source addresses to bind before connecting, used round-robin; empty = let the
    /// kernel choose.
    sources: Vec<IpAddr>,
    /// Round-robin position in `sources`.
    next: AtomicUsize,
}

impl Dialer {
    /// `source_addrs` > 1 spreads IPv4 connections over N loopback addresses: 127.0.0.1,
    /// 127.0.0.2, ... (up to 250 of them, as before), then on into 127.0.1.1 and so on.
    pub fn new(target: Target, source_addrs: u16) -> Result<Self> {
        let sources = match target.addr {
            SocketAddr::V4(_) if source_addrs > 1 => (0..source_addrs)
                .map(|i| {
                    let [hi, lo] = (i / 250).to_be_bytes();
                    IpAddr::V4(Ipv4Addr::new(127, hi, lo, (i % 250) as u8 + 1))
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            inner: Arc::new(DialerInner {
                target,
                sources,
                next: AtomicUsize::new(0),
            }),
        })
    }

    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// TCP connect (TCP_NODELAY set) and WebSocket handshake.
    pub async fn connect(&self) -> Result<Ws> {
        let inner = &self.inner;
        let addr = inner.target.addr;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .context("creating a socket (out of file descriptors?)")?;
        if !inner.sources.is_empty() {
            let i = inner.next.fetch_add(1, Ordering::Relaxed) % inner.sources.len();
            bind_address_no_port(&socket)?;
            socket
                .bind(SocketAddr::new(inner.sources[i], 0))
                .with_context(|| format!("binding source address {}", inner.sources[i]))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (ws, _response) = tokio_tungstenite::client_async_with_config(
            inner.target.url.as_str(),
            stream,
            Some(ws_config()),
        )
        .await
        .with_context(|| format!("WebSocket handshake with {}", inner.target.url))?;
        Ok(ws)
    }
}

/// tungstenite's default 128 KiB read buffer is allocated eagerly and zero-filled on reads:
/// with ~19,000 connections that is gigabytes and most of the client's CPU. Signaling
/// messages are small (an SDP is a few KiB; larger ones still work, the buffer grows).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(64 * 1024)
}

/// Defers the choice of the source port to `connect`, so a port is unique per 4-tuple
/// instead of per source address.
fn bind_address_no_port(socket: &TcpSocket) -> Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setting IP_BIND_ADDRESS_NO_PORT");
    }
    Ok(())
}

/// Polls the target's TCP port until it accepts a connection or `timeout` passes.
pub async fn wait_ready(target: &Target, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match TcpStream::connect(target.addr).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                bail!(
                    "{} not accepting connections after {timeout:?}: {e}",
                    target.addr
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        for (url, addr) in [
            ("ws://127.0.0.1:9090/", "127.0.0.1:9090"),
            ("ws://localhost:9090", "127.0.0.1:9090"),
            ("ws://127.3.2.1:1/ws", "127.3.2.1:1"),
            ("ws://[::1]:9090/ws?x=1", "[::1]:9090"),
            ("ws://127.0.0.1/", "127.0.0.1:80"),
        ] {
            let t = Target::parse(url).unwrap();
            assert_eq!(t.addr, addr.parse::<SocketAddr>().unwrap(), "{url}");
        }
        assert!(Target::parse("ws://[::1]:1/").unwrap().addr.ip() == std::net::Ipv6Addr::LOCALHOST);
    }

    #[test]
    fn refuses_everything_else() {
        for url in [
            "ws://10.0.0.1:9090/",
            "ws://0.0.0.0:9090/",
            "ws://example.org:9090/",
            "ws://[2001:db8::1]:9090/",
            "wss://127.0.0.1:9090/",
            "http://127.0.0.1:9090/",
            "ws://user@127.0.0.1:9090/",
            "ws://:9090/",
            "ws://127.0.0.1:notaport/",
        ] {
            assert!(Target::parse(url).is_err(), "{url} should be refused");
        }
    }
}
