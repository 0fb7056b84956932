//! Stateless nonces (RFC 8489 §9.2): a NONCE the server can check without having stored
//! it. The `turn` crate keeps every nonce it hands out in a map for an hour, and it hands
//! one out for every request without MESSAGE-INTEGRITY, which anyone can send from a
//! spoofed address: +72 MiB after 670k packets (issue 15 finding 2). Like coturn's
//! default, a nonce here is instead `<issue time><HMAC(process key, issue time, client
//! address)>`: verified on use by recomputing the HMAC, so a challenge costs no memory.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a nonce stays valid, the crate's `NONCE_LIFETIME` (and RFC 5766 §4's
/// example): a client's refreshes reuse it, and an expired one costs it one 438 round.
pub(super) const NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// Nonces are issued per bucket of this length, so one client's challenges in a row
/// carry the same nonce (and a test can see that nothing new was made for it).
const BUCKET_SECS: u64 = 60;
/// Bytes of the HMAC kept: 128 bits are far beyond guessing within a nonce's life.
const TAG_LEN: usize = 16;

/// The per-process key nonces are signed with; a restart invalidates all nonces, which
/// clients survive with one 438 Stale Nonce round (RFC 8489 §9.2.4).
pub(super) struct NonceKey {
    key: [u8; 32],
}

impl NonceKey {
    pub(super) fn random() -> Self {
        NonceKey {
            key: rand::random(),
        }
    }

    /// The nonce for a client at `src` at time `now`: 16 hex digits of the bucket's
    /// start (Unix seconds), then the hex HMAC tag. Hex keeps it inside RFC 8489 §14.10's
    /// quoted-text characters and under its 128 characters.
    pub(super) fn issue(&self, src: SocketAddr, now: SystemTime) -> String {
        let t = unix_secs(now) / BUCKET_SECS * BUCKET_SECS;
        let tag = self.mac(t, src).finalize().into_bytes();
        let mut s = format!("{t:016x}");
        for b in &tag[..TAG_LEN] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Whether `nonce` was issued by this process to `src` less than [`NONCE_LIFETIME`]
    /// ago. Never panics on hostile input: anything malformed is simply not valid.
    pub(super) fn is_valid(&self, nonce: &str, src: SocketAddr, now: SystemTime) -> bool {
        let (Some(t), Some(tag)) = (nonce.get(..16), nonce.get(16..)) else {
            return false;
        };
        let Ok(t) = u64::from_str_radix(t, 16) else {
            return false;
        };
        let Some(tag) = decode_hex(tag) else {
            return false;
        };
        let now = unix_secs(now);
        // A nonce from the future (clock stepped back) is refused like an old one.
        if tag.len() != TAG_LEN || t > now || now - t >= NONCE_LIFETIME.as_secs() {
            return false;
        }
        // Constant-time comparison: the tag must not leak byte by byte.
        self.mac(t, src).verify_truncated_left(&tag).is_ok()
    }

    fn mac(&self, t: u64, src: SocketAddr) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&t.to_be_bytes());
        match src.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&src.port().to_be_bytes());
        mac
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_verify_only_for_their_client_and_lifetime() {
        let key = NonceKey::random();
        let a: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let b: SocketAddr = "192.0.2.1:5001".parse().expect("addr");
        let now = SystemTime::now();
        let n = key.issue(a, now);
        assert!(n.len() < 128 && n.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(key.is_valid(&n, a, now));
        assert!(key.is_valid(&n, a, now + Duration::from_secs(3000)));
        assert!(!key.is_valid(&n, a, now + NONCE_LIFETIME + Duration::from_secs(60)));
        assert!(!key.is_valid(&n, b, now), "bound to the client address");
        assert!(
            !NonceKey::random().is_valid(&n, a, now),
            "bound to the process"
        );
        for bad in ["", "zz", &n[..20], &format!("{n}0"), "ffffffffffffffff00"] {
            assert!(!key.is_valid(bad, a, now), "{bad:?}");
        }
        let mut flipped = n.clone().into_bytes();
        flipped[20] = if flipped[20] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(!key.is_valid(&flipped, a, now));
    }
}
