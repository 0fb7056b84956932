//! Which peer addresses a relay may exchange datagrams with. Both the gatekeeper (which
//! refuses permissions to denied peers) and every relay socket (which drops their
//! datagrams) ask the same [`PeerPolicy`], so the two layers cannot disagree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which peer addresses relays may talk to.
#[derive(Debug, Clone, Copy)]
pub struct PeerPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
}

impl PeerPolicy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        // Map ::ffff:a.b.c.d to a.b.c.d so IPv4 rules cannot be bypassed
        // through IPv4-mapped IPv6 (cf. coturn CVE-2020-26262).
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        match ip {
            IpAddr::V4(v4) => {
                if v4.is_broadcast() || v4.octets()[0] == 0 {
                    return false;
                }
                if v4.is_private() || v4.is_link_local() || is_cgnat(v4) {
                    return self.allow_private;
                }
            }
            IpAddr::V6(v6) => {
                if is_ula(v6) || is_v6_link_local(v6) {
                    return self.allow_private;
                }
            }
        }
        true
    }
}

fn is_cgnat(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 100 && (o[1] & 0xc0) == 64
}

fn is_ula(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xfe00) == 0xfc00
}

fn is_v6_link_local(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_policy() {
        let deny = PeerPolicy {
            allow_loopback: false,
            allow_private: false,
        };
        let lan = PeerPolicy {
            allow_loopback: false,
            allow_private: true,
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for s in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "fd00::1",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:10.0.0.1",
        ] {
            assert!(!deny.allows(ip(s)), "{s} must be denied by default");
        }
        for s in [
            "8.8.8.8",
            "2001:4860:4860::8888",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(deny.allows(ip(s)), "{s} is public");
        }
        assert!(lan.allows(ip("192.168.1.1")) && lan.allows(ip("fd00::1")));
        assert!(!lan.allows(ip("127.0.0.1")) && !lan.allows(ip("224.0.0.1")));
    }
}
