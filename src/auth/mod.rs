//! Who may use this server. Without a sign-in option duet is open, as it always was: anyone
//! who reaches the port picks a free name. With `--password-file` (a household password)
//! the page asks for the password first, [`routes`] checks it and sets a session cookie
//! ([`cookie`]), and a WebSocket upgrade without a valid session gets 401, so nobody
//! without the password gets a name, the user list or TURN credentials.
//!
//! - [`password`]: the argon2 hash in `--password-file`, `duet hash-password`.
//! - [`cookie`]: the signed, expiring session cookie.
//! - [`jwt`]: tokens from an application (`--jwt-secret`, `--jwt-public-key`) on the
//!   WebSocket URL; such a socket is logged in at once as the token's user.
//! - [`oidc`]: sign-in with an OpenID provider (`--oidc-issuer`); its session cookie
//!   names the user, whose socket is logged in at once under the provider's name.
//! - [`routes`]: `/auth/status`, `/auth/password`, `/auth/oidc/login`, `/auth/callback`,
//!   `/auth/logout`.

pub mod cookie;
pub mod jwt;
pub mod oidc;
pub mod password;
pub mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::HeaderMap;
use tracing::warn;

use crate::source_limit::SourceLimiter;

/// Password attempts one client address may make at once ...
const ATTEMPTS_BURST: f64 = 5.0;
/// ... and then per second (one every 10 s): an online guess at a household password
/// takes years, a family member who mistyped waits seconds.
const ATTEMPTS_PER_SECOND: f64 = 0.1;

/// The sign-in options (`--help` heading "Sign-in").
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthConfig {
    /// A household password: FILE holds one argon2 hash in PHC format, as printed by
    /// `duet hash-password` (which reads the password from standard input). The page asks
    /// for the password before the name; WebSocket upgrades without the session cookie it
    /// sets get 401. Default: no password, anyone who reaches the port may sign in.
    #[arg(
        long = "password-file",
        env = "DUET_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Sign-in"
    )]
    pub password_file: Option<PathBuf>,

    /// Accept tokens from an application: HS256 JWTs signed with this secret (its UTF-8
    /// bytes, at least 32). The client opens the WebSocket with `?token=JWT`; `sub` and
    /// `exp` are required, `name` is the name to log in with (default: `sub`).
    #[arg(
        long = "jwt-secret",
        env = "DUET_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Sign-in"
    )]
    pub jwt_secret: Option<String>,

    /// Accept tokens from an application signed with the private half of this PEM public
    /// key: Ed25519 (EdDSA), P-256 (ES256) or RSA (RS256). Same claims as --jwt-secret.
    #[arg(
        long = "jwt-public-key",
        env = "DUET_JWT_PUBLIC_KEY",
        value_name = "FILE",
        help_heading = "Sign-in"
    )]
    pub jwt_public_key: Option<PathBuf>,

    /// Sign in with an OpenID provider (Google, Microsoft Entra, Keycloak, Authentik,
    /// Dex, ...): its issuer URL, e.g. https://accounts.google.com (http:// only on a
    /// loopback address). The page shows "Sign in with <provider>"; the provider's
    /// redirect comes back to <public origin>/auth/callback, which must be registered
    /// with it. Needs --oidc-client-id and a client secret. See docs/auth.md.
    #[arg(
        long = "oidc-issuer",
        env = "DUET_OIDC_ISSUER",
        value_name = "URL",
        help_heading = "Sign-in"
    )]
    pub oidc_issuer: Option<String>,

    /// With --oidc-issuer: the client id the provider gave duet.
    #[arg(
        long = "oidc-client-id",
        env = "DUET_OIDC_CLIENT_ID",
        value_name = "ID",
        help_heading = "Sign-in"
    )]
    pub oidc_client_id: Option<String>,

    /// With --oidc-issuer: the client secret the provider gave duet (or
    /// --oidc-client-secret-file). Session cookies are signed with a key derived from it.
    #[arg(
        long = "oidc-client-secret",
        env = "DUET_OIDC_CLIENT_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        conflicts_with = "oidc_client_secret_file",
        help_heading = "Sign-in"
    )]
    pub oidc_client_secret: Option<String>,

    /// With --oidc-issuer: a file holding the client secret (surrounding white space
    /// ignored), so that it is not on the command line.
    #[arg(
        long = "oidc-client-secret-file",
        env = "DUET_OIDC_CLIENT_SECRET_FILE",
        value_name = "FILE",
        help_heading = "Sign-in"
    )]
    pub oidc_client_secret_file: Option<PathBuf>,

    /// With --oidc-issuer: the ID token claim the user's duet name is read from; when it
    /// is missing, `name`, then `email`.
    #[arg(
        long = "oidc-name-claim",
        env = "DUET_OIDC_NAME_CLAIM",
        default_value = "preferred_username",
        value_name = "CLAIM",
        help_heading = "Sign-in"
    )]
    pub oidc_name_claim: String,

    /// With --oidc-issuer: admit only users whose verified e-mail address is at this
    /// domain, e.g. example.org (repeatable; comma-separated in the environment). Default,
    /// with no --oidc-allowed-user either: everyone the provider signs in.
    #[arg(
        long = "oidc-allowed-domain",
        env = "DUET_OIDC_ALLOWED_DOMAINS",
        value_delimiter = ',',
        value_name = "DOMAIN",
        help_heading = "Sign-in"
    )]
    pub oidc_allowed_domains: Vec<String>,

    /// With --oidc-issuer: admit this user, by verified e-mail address or by the
    /// provider's subject id (repeatable; comma-separated in the environment); adds to
    /// --oidc-allowed-domain.
    #[arg(
        long = "oidc-allowed-user",
        env = "DUET_OIDC_ALLOWED_USERS",
        value_delimiter = ',',
        value_name = "EMAIL|SUB",
        help_heading = "Sign-in"
    )]
    pub oidc_allowed_users: Vec<String>,

    /// With --oidc-issuer: the provider's name on the button ("Sign in with NAME").
    /// Default: the issuer's host name.
    #[arg(
        long = "oidc-provider-name",
        env = "DUET_OIDC_PROVIDER_NAME",
        value_name = "NAME",
        help_heading = "Sign-in"
    )]
    pub oidc_provider_name: Option<String>,

    /// The address users open duet at, e.g. https://call.example.org: the OpenID
    /// redirect URI is built on it (<URL>/auth/callback). Default: the scheme and Host of
    /// each request; set it behind a reverse proxy.
    #[arg(
        long = "public-url",
        env = "DUET_PUBLIC_URL",
        value_name = "URL",
        help_heading = "Sign-in"
    )]
    pub public_url: Option<String>,
}

/// The sign-in state of the server, shared by the routes and the WebSocket upgrade.
pub struct Auth {
    /// `--password-file`, loaded.
    password: Option<password::Password>,
    /// Signs session cookies; derived from the password hash, so every node with the same
    /// file accepts the same cookies and a new password signs everybody out.
    cookies: Option<cookie::CookieKey>,
    /// Mark cookies `Secure`: the server speaks HTTPS.
    secure: bool,
    /// Password attempts per client address.
    attempts: SourceLimiter,
    /// `--jwt-secret` / `--jwt-public-key`.
    jwt: Option<jwt::Jwt>,
    /// `--oidc-issuer` and its options.
    oidc: Option<oidc::Oidc>,
}

/// Who a token or an OpenID session says the user is: such a connection is logged in at
/// once under `name`, the only name it may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity's id: the token's `sub`, or the provider's.
    pub sub: String,
    /// The name to log in with: the token's `name` (else `sub`), or the provider's claim.
    pub name: String,
    /// When the token or session ends, in Unix seconds: TURN credentials handed to this
    /// user expire by then.
    pub expires: u64,
}

/// Why an upgrade or request has no session; logged, and said in the 401's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token is refused: {0}")]
    BadToken(String),
    #[error("no session cookie and no ?token=: sign in first")]
    NoCredentials,
    #[error("no session cookie: sign in on the page first")]
    NoSession,
    #[error("the session cookie has expired: sign in again")]
    Expired,
    #[error(
        "the session cookie is not one this server signed (forged, or from an earlier password)"
    )]
    BadSignature,
}

impl Auth {
    /// Reads the files the options name; a file that cannot be used fails startup.
    pub fn load(config: &AuthConfig, secure: bool) -> anyhow::Result<Auth> {
        let password = match &config.password_file {
            Some(path) => Some(password::Password::load(path)?),
            None => None,
        };
        let oidc = load_oidc(config)?;
        // Secret, and the same on every node with the same options; a new password or
        // client secret signs everybody out.
        let material = match (&password, &oidc) {
            (None, None) => None,
            (Some(p), None) => Some(p.phc().to_string()),
            (None, Some(o)) => Some(format!("oidc\n{}", o.secret())),
            (Some(p), Some(o)) => Some(format!("{}\noidc\n{}", p.phc(), o.secret())),
        };
        Ok(Auth {
            password,
            cookies: material.map(|m| cookie::CookieKey::derive(&m)),
            secure,
            attempts: SourceLimiter::new(ATTEMPTS_PER_SECOND, ATTEMPTS_BURST),
            jwt: jwt::Jwt::load(config.jwt_secret.as_deref(), config.jwt_public_key.as_ref())?,
            oidc,
        })
    }

    /// No sign-in option: anyone may connect (the default).
    pub fn open() -> Auth {
        Auth {
            password: None,
            cookies: None,
            secure: false,
            attempts: SourceLimiter::new(ATTEMPTS_PER_SECOND, ATTEMPTS_BURST),
            jwt: None,
            oidc: None,
        }
    }

    /// Whether anyone may open a WebSocket without signing in.
    pub fn is_open(&self) -> bool {
        self.password.is_none() && self.jwt.is_none() && self.oidc.is_none()
    }

    /// Whether a WebSocket upgrade with these headers and this query may go ahead, and as
    /// whom: a `?token=` or an OpenID session names its user (who is logged in at once); a
    /// password session names nobody (the user picks a name).
    pub fn check_upgrade(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<jwt::Identity>, Refusal> {
        if self.is_open() {
            return Ok(None);
        }
        if let Some(token) = query_token(query) {
            return match &self.jwt {
                Some(jwt) => jwt.verify(&token).map(Some).map_err(Refusal::BadToken),
                None => Err(Refusal::BadToken("this server takes no tokens".into())),
            };
        }
        match &self.cookies {
            Some(key) => key.check(cookie::session_cookie(headers)),
            None => Err(Refusal::NoCredentials),
        }
    }

    /// The valid session cookie a request carries, and whom it names; `None` without
    /// one.
    pub fn session(&self, headers: &HeaderMap) -> Option<Option<Identity>> {
        self.cookies
            .as_ref()
            .and_then(|key| key.check(cookie::session_cookie(headers)).ok())
    }

    /// Says so when duet is reachable from the network, hands out TURN credentials and
    /// asks nobody to sign in: anyone who finds the port may relay through it.
    pub fn warn_if_open(&self, listen: SocketAddr, turn_on: bool) {
        if self.is_open_relay(listen, turn_on) {
            warn!(
                %listen,
                "no sign-in: anyone who reaches this port gets TURN credentials and can relay \
                 traffic through this server; add --password-file or --oidc-issuer (see docs/auth.md)"
            );
        }
    }
}

/// The OpenID relying party the options ask for, the client secret read from its file.
fn load_oidc(config: &AuthConfig) -> anyhow::Result<Option<oidc::Oidc>> {
    use anyhow::Context as _;
    let Some(issuer) = &config.oidc_issuer else {
        return Ok(None);
    };
    let client_secret = match (&config.oidc_client_secret, &config.oidc_client_secret_file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| {
                format!(
                    "--oidc-client-secret-file {}: cannot read it",
                    path.display()
                )
            })?
            .trim()
            .to_string(),
        (None, None) => String::new(),
    };
    let name_claim = match config.oidc_name_claim.trim() {
        "" => "preferred_username".to_string(),
        claim => claim.to_string(),
    };
    oidc::Oidc::new(oidc::OidcOptions {
        issuer: issuer.clone(),
        client_id: config.oidc_client_id.clone().unwrap_or_default(),
        client_secret,
        name_claim,
        allowed_domains: config.oidc_allowed_domains.clone(),
        allowed_users: config.oidc_allowed_users.clone(),
        provider_name: config.oidc_provider_name.clone(),
        public_url: config.public_url.clone(),
    })
    .map(Some)
}

impl Auth {
    /// Whether serving on `listen` with TURN `turn_on` relays for anyone (see
    /// [`Auth::warn_if_open`]).
    pub fn is_open_relay(&self, listen: SocketAddr, turn_on: bool) -> bool {
        self.is_open() && turn_on && !listen.ip().is_loopback()
    }
}

/// The `token` parameter of a query string, percent-decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "token")
        .map(|(_, value)| percent_decode(value))
}

/// `%XX` escapes and `+` (a JWT is base64url and dots, so this is rarely needed).
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(hi, lo)| hi * 16 + lo),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_relays_are_told_apart() {
        let open = Auth::open();
        let public: SocketAddr = "0.0.0.0:443".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:9090".parse().expect("addr");
        assert!(open.is_open_relay(public, true));
        assert!(!open.is_open_relay(public, false));
        assert!(!open.is_open_relay(local, true));
        let config = AuthConfig {
            jwt_secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..AuthConfig::default()
        };
        let closed = Auth::load(&config, false).expect("load");
        assert!(!closed.is_open_relay(public, true));
    }

    #[test]
    fn the_token_is_read_from_the_query() {
        assert_eq!(query_token(Some("a=1&token=x.y.z")), Some("x.y.z".into()));
        assert_eq!(query_token(Some("token=a%2Eb%zz%")), Some("a.b%zz%".into()));
        assert_eq!(query_token(Some("token=%C3%A9")), Some("é".into()));
        assert_eq!(query_token(Some("tokens=1")), None);
        assert_eq!(query_token(None), None);
    }
}
