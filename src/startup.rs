//! What duet tells the operator when it starts: the URLs to open, a warning when other
//! machines would get plain HTTP (and so no camera), and for a listen address that cannot
//! be bound, what to do about it.

use std::net::{IpAddr, SocketAddr};

use tracing::{info, warn};

/// How the listen port is served, as far as the URLs to open are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    /// `--tls-self-signed`: the certificate covers every local address, so each is a URL
    /// that works (after accepting the browser's warning once).
    HttpsSelfSigned,
    /// Certificate files: a browser accepts only the names in the certificate, which
    /// the operator knows (usually a domain pointing here).
    HttpsFiles,
    /// `--acme-domain`: the certificate is for those domains only; their URLs are
    /// announced by the caller.
    HttpsAcme,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::HttpsSelfSigned | Scheme::HttpsFiles | Scheme::HttpsAcme => "https",
        }
    }
}

/// The URLs to open for a server bound to `addr`: localhost when it is reachable there,
/// the bound address itself when it is a specific one, and, with a self-signed
/// certificate on a wildcard address, every LAN address of this machine (`lan`).
pub fn urls(addr: SocketAddr, scheme: Scheme, lan: &[IpAddr]) -> Vec<String> {
    let s = scheme.as_str();
    let port = addr.port();
    let ip = addr.ip();
    let mut urls = Vec::new();
    if scheme == Scheme::HttpsAcme {
        return urls;
    }
    if ip.is_unspecified() || ip.is_loopback() {
        urls.push(format!("{s}://localhost:{port}/"));
    }
    if !ip.is_unspecified() && !ip.is_loopback() {
        urls.push(format!("{s}://{}/", SocketAddr::new(ip, port)));
    }
    if ip.is_unspecified() && scheme == Scheme::HttpsSelfSigned {
        for &lan_ip in lan {
            // An IPv4 wildcard does not accept IPv6 connections.
            if (addr.is_ipv4() && !lan_ip.is_ipv4()) || !usable_in_url(lan_ip) {
                continue;
            }
            urls.push(format!("{s}://{}/", SocketAddr::new(lan_ip, port)));
        }
    }
    urls
}

/// Loopback is already covered by `localhost`; a link-local IPv6 address needs a zone
/// index, which browsers do not accept in a URL.
fn usable_in_url(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// This machine's interface addresses, sorted, IPv4 first (the ones people type).
pub fn lan_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(ifaces) => ifaces.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            warn!("cannot list network interfaces: {e}");
            Vec::new()
        }
    };
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips
}

/// Logs where to go, once the socket is bound, and warns when the port is plain HTTP to
/// other machines: browsers grant the camera only to https:// pages and to localhost.
pub fn announce(addr: SocketAddr, scheme: Scheme) {
    let lan = if scheme == Scheme::HttpsSelfSigned {
        lan_addresses()
    } else {
        Vec::new()
    };
    info!(%addr, scheme = scheme.as_str(), "duet listening");
    for url in urls(addr, scheme, &lan) {
        info!("open {url}");
    }
    if scheme == Scheme::HttpsFiles {
        info!("or https://<a name in the certificate>:{}/", addr.port());
    }
    if scheme == Scheme::Http && !addr.ip().is_loopback() {
        warn!(
            "listening on {addr} over plain HTTP: other machines can connect, but their \
             browsers will refuse camera and microphone (only https:// pages and localhost \
             get them). Fine behind a reverse proxy that adds HTTPS; otherwise add \
             --tls-self-signed (a LAN) or --tls-cert/--tls-key (a public host), or \
             --listen 127.0.0.1:{} to keep it to this machine.",
            addr.port()
        );
    }
}

/// The error for a listen address that cannot be bound: `option` names the flag it came
/// from, and a hint follows when [`bind_hint`] has one.
pub fn cannot_listen(addr: SocketAddr, option: &str, error: &std::io::Error) -> anyhow::Error {
    let what = format!("cannot listen on {addr} ({option}): {error}");
    match bind_hint(addr, option, error) {
        Some(hint) => anyhow::anyhow!("{what}\n{hint}"),
        None => anyhow::anyhow!(what),
    }
}

/// What to do when `addr`, given with `option`, cannot be bound, for the errors people
/// actually hit.
pub fn bind_hint(addr: SocketAddr, option: &str, error: &std::io::Error) -> Option<String> {
    use std::io::ErrorKind;
    let port = addr.port();
    let (ss, known, other) = match port {
        9090 => (
            "-ltnp",
            " (9090 is also the default port of Prometheus and Cockpit)",
            9091,
        ),
        // The TURN port: UDP unless given with --turn-listen-tcp.
        3478 => (
            if option == "--turn-listen-tcp" {
                "-ltnp"
            } else {
                "-lunp"
            },
            " (3478 is the standard STUN/TURN port: is coturn or another TURN server running?)",
            3479,
        ),
        _ if option.starts_with("--turn") => ("-lunp", "", 3478),
        _ => ("-ltnp", "", 9090),
    };
    match error.kind() {
        ErrorKind::AddrInUse => Some(format!(
            "another program already uses port {port}{known}; `ss {ss} 'sport = :{port}'` \
             shows which. Stop it, or choose another port with {option}, e.g. {option} {}",
            SocketAddr::new(addr.ip(), other)
        )),
        ErrorKind::PermissionDenied if port < 1024 => Some(format!(
            "ports below 1024 need a privilege. Grant it to the binary once with \
             `sudo setcap cap_net_bind_service=+ep \"$(command -v duet)\"`, or under systemd \
             set AmbientCapabilities=CAP_NET_BIND_SERVICE (see docs/duet.service), or use a \
             port from 1024 up, e.g. {option} {}",
            SocketAddr::new(addr.ip(), 8443)
        )),
        ErrorKind::AddrNotAvailable => Some(format!(
            "{} is not an address of this machine; use one that `ip addr` lists, or \
             0.0.0.0 for all of them",
            addr.ip()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn urls_for_each_kind_of_listen_address() {
        let lan: Vec<IpAddr> = ["192.168.1.20", "127.0.0.1", "fe80::1", "2001:db8::5"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(
            urls(addr("0.0.0.0:9090"), Scheme::Http, &lan),
            ["http://localhost:9090/"]
        );
        assert_eq!(
            urls(addr("0.0.0.0:9090"), Scheme::HttpsSelfSigned, &lan),
            ["https://localhost:9090/", "https://192.168.1.20:9090/"]
        );
        assert_eq!(
            urls(addr("[::]:443"), Scheme::HttpsSelfSigned, &lan),
            [
                "https://localhost:443/",
                "https://192.168.1.20:443/",
                "https://[2001:db8::5]:443/"
            ]
        );
        assert_eq!(
            urls(addr("127.0.0.1:9090"), Scheme::HttpsSelfSigned, &lan),
            ["https://localhost:9090/"]
        );
        assert_eq!(
            urls(addr("192.168.1.20:9090"), Scheme::HttpsFiles, &lan),
            ["https://192.168.1.20:9090/"]
        );
    }

    #[test]
    fn hints_name_the_flag() {
        let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let hint = bind_hint(addr("0.0.0.0:9090"), "--listen", &in_use).expect("hint");
        assert!(hint.contains("--listen 0.0.0.0:9091"), "{hint}");
        let hint = bind_hint(addr("0.0.0.0:3478"), "--turn-listen", &in_use).expect("hint");
        assert!(hint.contains("--turn-listen 0.0.0.0:3479"), "{hint}");
        assert!(hint.contains("coturn"), "{hint}");
        assert!(hint.contains("ss -lunp"), "{hint}");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let hint = bind_hint(addr("0.0.0.0:443"), "--listen", &denied).expect("hint");
        assert!(hint.contains("cap_net_bind_service"), "{hint}");
        assert!(hint.contains("AmbientCapabilities"), "{hint}");
        assert!(hint.contains("--listen 0.0.0.0:8443"), "{hint}");
        assert!(bind_hint(addr("0.0.0.0:8443"), "--listen", &denied).is_none());
    }
}
