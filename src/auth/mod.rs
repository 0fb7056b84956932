//! Who may use this server. Without a sign-in option duet is open, as it always was: anyone
//! who reaches the port picks a free name. With `--password-file` (a household password)
//! the page asks for the password first, [`routes`] checks it and sets a session cookie
//! ([`cookie`]), and a WebSocket upgrade without a valid session gets 401, so nobody
//! without the password gets a name, the user list or TURN credentials.
//!
//! - [`password`]: the argon2 hash in `--password-file`, `duet hash-password`.
//! - [`cookie`]: the signed, expiring session cookie.
//! - [`routes`]: `/auth/status`, `/auth/password`, `/auth/logout`.

pub mod cookie;
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
}

/// Why an upgrade or request has no session; logged, and said in the 401's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
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
        let cookies = password
            .as_ref()
            .map(|p| cookie::CookieKey::derive(p.phc()));
        Ok(Auth {
            password,
            cookies,
            secure,
            attempts: SourceLimiter::new(ATTEMPTS_PER_SECOND, ATTEMPTS_BURST),
        })
    }

    /// No sign-in option: anyone may connect (the default).
    pub fn open() -> Auth {
        Auth {
            password: None,
            cookies: None,
            secure: false,
            attempts: SourceLimiter::new(ATTEMPTS_PER_SECOND, ATTEMPTS_BURST),
        }
    }

    /// Whether anyone may open a WebSocket without signing in.
    pub fn is_open(&self) -> bool {
        self.password.is_none()
    }

    /// Whether a WebSocket upgrade with these headers may go ahead.
    pub fn check_upgrade(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match &self.cookies {
            None => Ok(()),
            Some(key) => key.check(cookie::session_cookie(headers)),
        }
    }

    /// Says so when duet is reachable from the network, hands out TURN credentials and
    /// asks nobody to sign in: anyone who finds the port may relay through it.
    pub fn warn_if_open(&self, listen: SocketAddr, turn_on: bool) {
        if self.is_open() && turn_on && !listen.ip().is_loopback() {
            warn!(
                %listen,
                "no sign-in: anyone who reaches this port gets TURN credentials and can relay \
                 traffic through this server; add --password-file (see docs/auth.md)"
            );
        }
    }
}
