//! The session cookie: `duet_session=v1.<expiry>.<mac>`, where `<expiry>` is a Unix time
//! and `<mac>` is HMAC-SHA256 over `v1.<expiry>` in URL-safe base64. Stateless, so it
//! works on every node that has the same key, and nothing is stored per session.
//! `HttpOnly` (page scripts cannot read it), `SameSite=Lax` (other sites' requests do
//! not carry it), `Secure` when duet speaks HTTPS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::Refusal;

/// The cookie's name.
pub const NAME: &str = "duet_session";

/// How long a sign-in lasts. A household signs in once a month per device.
pub const LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The key that signs and checks session cookies.
pub struct CookieKey([u8; 32]);

impl CookieKey {
    /// A key derived from `material` (the password's PHC line: secret, and the same on
    /// every node).
    pub fn derive(material: &str) -> CookieKey {
        let mut hash = Sha256::new();
        hash.update(b"duet session cookie v1\n");
        hash.update(material.as_bytes());
        CookieKey(hash.finalize().into())
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(payload.as_bytes());
        mac
    }

    /// A new session's cookie value, valid for [`LIFETIME`] from `now`.
    pub fn issue(&self, now: SystemTime) -> String {
        let expiry = unix(now + LIFETIME);
        let payload = format!("v1.{expiry}");
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// Whether `value` is a cookie this key issued that has not expired.
    pub fn check(&self, value: Option<&str>) -> Result<(), Refusal> {
        self.check_at(value, SystemTime::now())
    }

    fn check_at(&self, value: Option<&str>, now: SystemTime) -> Result<(), Refusal> {
        let value = value.ok_or(Refusal::NoSession)?;
        let (payload, tag) = value.rsplit_once('.').ok_or(Refusal::BadSignature)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Refusal::BadSignature)?;
        // Constant-time comparison.
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| Refusal::BadSignature)?;
        let expiry: u64 = payload
            .strip_prefix("v1.")
            .and_then(|e| e.parse().ok())
            .ok_or(Refusal::BadSignature)?;
        if expiry <= unix(now) {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The value of the session cookie among a request's `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{NAME}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that ends one (sign-out).
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_cookies_check_until_they_expire() {
        let key = CookieKey::derive("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA");
        let now = SystemTime::now();
        let cookie = key.issue(now);
        assert_eq!(key.check_at(Some(&cookie), now), Ok(()));
        assert_eq!(
            key.check_at(Some(&cookie), now + LIFETIME),
            Err(Refusal::Expired)
        );
        assert_eq!(key.check_at(None, now), Err(Refusal::NoSession));
        // Another password's key, a changed expiry, garbage.
        let other = CookieKey::derive("another hash");
        assert_eq!(
            other.check_at(Some(&cookie), now),
            Err(Refusal::BadSignature)
        );
        let (_, tag) = cookie.rsplit_once('.').expect("tag");
        let forged = format!("v1.{}.{tag}", unix(now + LIFETIME * 10));
        assert_eq!(key.check_at(Some(&forged), now), Err(Refusal::BadSignature));
        for junk in ["", "v1", "v1.1.", "..", "v1.x.!!"] {
            assert_eq!(key.check_at(Some(junk), now), Err(Refusal::BadSignature));
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "a=1; duet_session=v1.2.x".parse().expect("value"),
        );
        assert_eq!(session_cookie(&headers), Some("v1.2.x"));
        assert!(set_cookie("v", true).contains("HttpOnly; SameSite=Lax; Secure"));
        assert!(!set_cookie("v", false).contains("Secure"));
    }
}
