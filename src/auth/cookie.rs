//! The session cookie: `duet_session=v1.<expiry>.<mac>` (a household-password session) or
//! `duet_session=v2.<expiry>.<who>.<mac>` (an OpenID Connect session: `<who>` is
//! `{"sub":..,"name":..}` in URL-safe base64), where `<expiry>` is a Unix time and `<mac>`
//! is HMAC-SHA256 over everything before it, in URL-safe base64. Stateless, so it works
//! on every node that has the same key, and nothing is stored per session.
//! `HttpOnly` (page scripts cannot read it), `SameSite=Lax` (other sites' requests do
//! not carry it), `Secure` when duet speaks HTTPS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{Identity, Refusal};

/// The cookie's name.
pub const NAME: &str = "duet_session";

/// How long a sign-in lasts. A household signs in once a month per device.
pub const LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The key that signs and checks session cookies.
pub struct CookieKey([u8; 32]);

impl CookieKey {
    /// A key derived from `material` (the password's PHC line and/or the OpenID client
    /// secret: secret, and the same on every node).
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

    /// `payload.<mac>`: `payload` signed (`payload` holds no secret, only proof).
    pub fn sign(&self, payload: &str) -> String {
        let tag = URL_SAFE_NO_PAD.encode(self.mac(payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The payload of a value [`CookieKey::sign`] made with this key; `None` for anything
    /// else.
    pub fn open<'a>(&self, value: &'a str) -> Option<&'a str> {
        let (payload, tag) = value.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant-time comparison.
        self.mac(payload).verify_slice(&tag).ok()?;
        Some(payload)
    }

    /// A new password session's cookie value, valid for [`LIFETIME`] from `now`.
    pub fn issue(&self, now: SystemTime) -> String {
        self.sign(&format!("v1.{}", unix(now + LIFETIME)))
    }

    /// A new session's cookie value for `sub`, logged in as `name`, valid for `lifetime`.
    pub fn issue_identity(
        &self,
        now: SystemTime,
        lifetime: Duration,
        sub: &str,
        name: &str,
    ) -> String {
        let who = serde_json::json!({"sub": sub, "name": name}).to_string();
        let who = URL_SAFE_NO_PAD.encode(who);
        self.sign(&format!("v2.{}.{who}", unix(now + lifetime)))
    }

    /// Whether `value` is a cookie this key issued that has not expired, and whom it
    /// names (`None`: a password session, whose user picks a name).
    pub fn check(&self, value: Option<&str>) -> Result<Option<Identity>, Refusal> {
        self.check_at(value, SystemTime::now())
    }

    fn check_at(&self, value: Option<&str>, now: SystemTime) -> Result<Option<Identity>, Refusal> {
        let value = value.ok_or(Refusal::NoSession)?;
        let payload = self.open(value).ok_or(Refusal::BadSignature)?;
        let mut parts = payload.split('.');
        let (version, expiry) = (parts.next(), parts.next());
        let expiry: u64 = expiry
            .and_then(|e| e.parse().ok())
            .ok_or(Refusal::BadSignature)?;
        let identity = match (version, parts.next(), parts.next()) {
            (Some("v1"), None, _) => None,
            (Some("v2"), Some(who), None) => {
                Some(who_of(who, expiry).ok_or(Refusal::BadSignature)?)
            }
            _ => return Err(Refusal::BadSignature),
        };
        if expiry <= unix(now) {
            return Err(Refusal::Expired);
        }
        Ok(identity)
    }
}

/// The identity in a v2 cookie's `<who>` (signed by us, so only its shape can be wrong).
fn who_of(who: &str, expiry: u64) -> Option<Identity> {
    #[derive(serde::Deserialize)]
    struct Who {
        sub: String,
        name: String,
    }
    let who: Who = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(who).ok()?).ok()?;
    Some(Identity {
        sub: who.sub,
        name: who.name,
        expires: expiry,
    })
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The value of the session cookie among a request's `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    named_cookie(headers, NAME)
}

/// The value of the cookie `name` among a request's `Cookie` headers.
pub fn named_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(value: &str, secure: bool) -> String {
    set_cookie_for(value, secure, LIFETIME)
}

/// The `Set-Cookie` value that starts a session lasting `lifetime`.
pub fn set_cookie_for(value: &str, secure: bool, lifetime: Duration) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{NAME}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        lifetime.as_secs()
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
        assert_eq!(key.check_at(Some(&cookie), now), Ok(None));
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
    fn identity_cookies_name_their_user() {
        let key = CookieKey::derive("client secret");
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let cookie = key.issue_identity(now, hour, "sub-1", "Zoë.");
        let identity = key
            .check_at(Some(&cookie), now)
            .expect("valid")
            .expect("names someone");
        assert_eq!(
            (identity.sub.as_str(), identity.name.as_str()),
            ("sub-1", "Zoë.")
        );
        assert_eq!(identity.expires, unix(now + hour));
        assert_eq!(
            key.check_at(Some(&cookie), now + hour),
            Err(Refusal::Expired)
        );
        // Another identity's payload under this signature.
        let (payload, tag) = cookie.rsplit_once('.').expect("tag");
        let (head, _) = payload.rsplit_once('.').expect("who");
        let other = URL_SAFE_NO_PAD.encode(r#"{"sub":"sub-2","name":"mallory"}"#);
        let forged = format!("{head}.{other}.{tag}");
        assert_eq!(key.check_at(Some(&forged), now), Err(Refusal::BadSignature));
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
