//! Plain HTTP where duet serves HTTPS: `http://` typed for the HTTPS port (the most likely
//! LAN mistake, which browsers otherwise show as ERR_INVALID_HTTP_RESPONSE), and the
//! optional `--http-redirect-listen` port. Either gets a `301` to the same host and path
//! over `https://`, then the connection closes. With `--acme-challenge http-01`, the
//! redirect port also answers the ACME server's `/.well-known/acme-challenge/` requests.
//!
//! Hand-written rather than through hyper: the answer is one fixed response, and the
//! connection was already sniffed as not-TLS on a socket hyper does not own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_acme::ResolvesServerCertAcme;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// A browser's request head is well under this; a longer one gets the fallback path.
const MAX_HEAD: usize = 8 * 1024;

/// How long a client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the first byte of a connection opens a TLS record (a ClientHello is a
/// handshake record, content type 22).
pub fn is_tls(first_byte: u8) -> bool {
    first_byte == 0x16
}

/// Reads one request head from `stream`, answers it with a redirect to
/// `https://<host><path>` and closes. `https_port` replaces the port of the `Host`
/// header (for the separate redirect port), `None` keeps it (for the HTTPS port itself).
/// `acme` answers HTTP-01 challenges instead of redirecting them.
pub async fn answer(
    mut stream: TcpStream,
    addr: SocketAddr,
    https_port: Option<u16>,
    acme: Option<Arc<ResolvesServerCertAcme>>,
) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_err() || head.is_empty() {
        debug!(%addr, "plain HTTP without a request in time; closing");
        return;
    }
    if let Some(answer) = acme.and_then(|acme| crate::acme::http01_answer(&acme, &path(&head))) {
        let (status, body) = match answer {
            Some(key_authorization) => ("200 OK", key_authorization),
            None => ("404 Not Found", "No such ACME challenge.\n".to_string()),
        };
        debug!(%addr, status, "ACME HTTP-01 challenge request");
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let fallback_host = stream.local_addr().ok().map(|a| a.to_string());
    let location = location(&head, fallback_host.as_deref(), https_port);
    let body = "This port serves HTTPS.\n";
    let response = format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    debug!(%addr, %location, "plain HTTP redirected to https");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The redirect target for a request head: its `Host` (if well-formed, else
/// `fallback_host`) and its path (if well-formed, else `/`).
fn location(head: &[u8], fallback_host: Option<&str>, https_port: Option<u16>) -> String {
    let text = String::from_utf8_lossy(head);
    let path = path(head);
    let host = text
        .split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim())
        })
        .filter(|h| valid_host(h))
        .or(fallback_host)
        .unwrap_or("localhost");
    let host = match https_port {
        None => host.to_string(),
        Some(port) => {
            let bare = strip_port(host);
            if port == 443 {
                bare.to_string()
            } else {
                format!("{bare}:{port}")
            }
        }
    };
    format!("https://{host}{path}")
}

/// The request line's path, if well-formed (absolute, printable ASCII), else `/`.
fn path(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .filter(|p| p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("/")
        .to_string()
}

/// Host names, IPv4 and bracketed IPv6 addresses, with an optional port: nothing that
/// could break out of the `Location` header or point elsewhere (no `/`, `@`).
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// `host:port` or `[v6]:port` without the port.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((bare, port)) if port.bytes().all(|b| b.is_ascii_digit()) => bare,
        _ => host,
    }
}

/// Serves redirects to `https_port` on `listener` (`--http-redirect-listen`) until
/// `cancel` fires, each connection a task of `connections`.
pub async fn serve(
    listener: TcpListener,
    https_port: u16,
    acme: Option<Arc<ResolvesServerCertAcme>>,
    connections: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                connections.spawn(answer(stream, addr, Some(https_port), acme.clone()));
            }
            Err(e) => {
                warn!(error = %e, "redirect port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keeps_host_and_path() {
        let head = b"GET /room?x=1 HTTP/1.1\r\nHost: 192.168.1.20:9090\r\n\r\n";
        assert_eq!(
            location(head, None, None),
            "https://192.168.1.20:9090/room?x=1"
        );
        assert_eq!(
            location(head, None, Some(443)),
            "https://192.168.1.20/room?x=1"
        );
        let head = b"GET / HTTP/1.1\r\nhost: [::1]:80\r\n\r\n";
        assert_eq!(location(head, None, Some(8443)), "https://[::1]:8443/");
    }

    #[test]
    fn location_refuses_what_could_escape() {
        let head = b"GET http://evil/ HTTP/1.1\r\nHost: evil.example/@x\r\n\r\n";
        assert_eq!(
            location(head, Some("10.0.0.1:9090"), None),
            "https://10.0.0.1:9090/"
        );
        assert_eq!(location(b"\x00\x01", None, None), "https://localhost/");
    }
}
