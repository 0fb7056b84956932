//! The ICE servers each client is given at login (`iceServers` in the login reply, so the
//! page never hard-codes STUN or TURN addresses), and TURN REST credentials.
//!
//! TURN credentials follow the "TURN REST API" scheme
//! (draft-uberti-behave-turn-rest, coturn's `use-auth-secret` /
//! `static-auth-secret`): the server and duet share a secret, and duet mints
//! short-lived credentials without talking to the TURN server:
//!
//! ```text
//! username   = "<unix expiry seconds>:<name>"
//! credential = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! The TURN server recomputes the HMAC from the username it receives and
//! refuses usernames whose expiry is in the past, so a leaked credential is
//! only useful until it expires. This works with coturn, eturnal, pion and
//! duet's embedded server (see `turn/auth.rs`) alike.
//!
//! Which scheme is in use (a REST secret, one static account, or none) is a
//! [`TurnAuth`], read from the flags in one place ([`IceConfig::turn_auth`]):
//! the login reply mints from it and the embedded server checks against it,
//! so the two cannot disagree about which flag wins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha1::Sha1;

use crate::protocol::Name;

type HmacSha1 = Hmac<Sha1>;

/// Command-line / environment configuration of the ICE servers duet
/// advertises to clients. Flatten it into the main `clap` parser.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "ICE and TURN")]
pub struct IceConfig {
    /// STUN server URL handed to clients, e.g. `stun:stun.example.org:3478`
    /// (repeatable; comma-separated in the environment).
    #[arg(
        long = "stun",
        value_name = "URL",
        env = "DUET_STUN",
        value_delimiter = ','
    )]
    pub stun: Vec<String>,

    /// TURN server URL handed to clients, e.g.
    /// `turn:turn.example.org:3478?transport=udp` (repeatable; comma-separated in the
    /// environment). Requires
    /// `--turn-secret` or `--turn-username`/`--turn-password`.
    #[arg(
        long = "turn",
        value_name = "URL",
        env = "DUET_TURN",
        value_delimiter = ','
    )]
    pub turn: Vec<String>,

    /// Shared secret for TURN REST credentials (coturn `static-auth-secret`).
    /// Also used by the embedded TURN server to check credentials.
    #[arg(
        long,
        env = "DUET_TURN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub turn_secret: Option<String>,

    /// Static TURN username (instead of `--turn-secret`).
    #[arg(
        long,
        env = "DUET_TURN_USERNAME",
        requires = "turn_password",
        value_name = "NAME"
    )]
    pub turn_username: Option<String>,

    /// Static TURN password (instead of `--turn-secret`).
    #[arg(
        long,
        env = "DUET_TURN_PASSWORD",
        hide_env_values = true,
        requires = "turn_username",
        value_name = "PASSWORD"
    )]
    pub turn_password: Option<String>,

    /// Lifetime of minted TURN credentials. It must outlast a call: TURN
    /// refreshes reuse the credential, and servers refuse expired ones.
    #[arg(
        long,
        env = "DUET_TURN_TTL",
        default_value = "24h",
        value_parser = humantime::parse_duration,
        value_name = "DURATION"
    )]
    pub turn_ttl: Duration,
}

/// The TURN username/password pair one client gets at login, in the shape WebRTC's
/// `RTCIceServer` wants (short-lived with a REST secret). What it is derived from is a
/// [`TurnAuth`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TurnCredentials {
    pub username: String,
    pub credential: String,
}

/// How TURN clients authenticate: the server-side choice that both the login reply
/// (which mints [`TurnCredentials`] from it) and the embedded TURN server (which checks
/// them against it) use. Built from the flags by [`IceConfig::turn_auth`].
#[derive(Clone, Default)]
pub enum TurnAuth {
    /// No credentials configured: no TURN entry for clients, and the embedded server
    /// refuses to run an open relay.
    #[default]
    None,
    /// TURN REST shared secret (`--turn-secret`).
    Secret(Vec<u8>),
    /// One fixed account for everybody (`--turn-username`/`--turn-password`).
    Static { username: String, password: String },
}

impl std::fmt::Debug for TurnAuth {
    // Never print secrets into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnAuth::None => f.write_str("None"),
            TurnAuth::Secret(_) => f.write_str("Secret(..)"),
            TurnAuth::Static { username, .. } => {
                write!(f, "Static {{ username: {username:?}, .. }}")
            }
        }
    }
}

impl TurnAuth {
    /// The credentials a client logging in as `name` gets, valid for `ttl` after `now`
    /// when minted from a secret; `None` when there are none to give.
    pub fn credentials_for(
        &self,
        name: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Option<TurnCredentials> {
        match self {
            TurnAuth::Secret(secret) => Some(rest_credentials(secret, name, ttl, now)),
            TurnAuth::Static { username, password } => Some(TurnCredentials {
                username: username.clone(),
                credential: password.clone(),
            }),
            TurnAuth::None => None,
        }
    }

    /// The password a TURN server must expect with `username` at `now`, or why that
    /// username is refused (malformed, expired, or not the static account).
    pub fn expected_password(
        &self,
        username: &str,
        now: SystemTime,
    ) -> Result<String, CredentialError> {
        match self {
            TurnAuth::Secret(secret) => password_for(secret, username, now),
            TurnAuth::Static {
                username: account,
                password,
            } if account == username => Ok(password.clone()),
            TurnAuth::Static { .. } | TurnAuth::None => Err(CredentialError::UnknownUser),
        }
    }
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Why a REST username/password pair was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("username is not of the form <expiry>:<name>")]
    Malformed,
    #[error("credential expired")]
    Expired,
    #[error("credential does not match")]
    Mismatch,
    /// Not the static account (or no credentials are configured at all).
    #[error("unknown user")]
    UnknownUser,
}

/// Mints TURN REST credentials for `name`, valid for `ttl` after `now`.
///
/// `now` is a parameter so tests (and callers with a mocked clock) get
/// deterministic output.
pub fn rest_credentials(
    secret: &[u8],
    name: &str,
    ttl: Duration,
    now: SystemTime,
) -> TurnCredentials {
    // A clock before 1970 is a broken host; treating it as the epoch still
    // yields a well-formed (already expired) credential instead of a panic.
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expiry = now_secs.saturating_add(ttl.as_secs());
    let username = format!("{expiry}:{name}");
    let credential = rest_password(secret, &username);
    TurnCredentials {
        username,
        credential,
    }
}

/// The password that belongs to a REST `username`, regardless of expiry.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    BASE64.encode(mac(secret, username).finalize().into_bytes())
}

/// Parses the expiry of a REST username (`<expiry>:<name>`, or the bare
/// `<expiry>` form coturn also accepts).
pub fn username_expiry(username: &str) -> Result<SystemTime, CredentialError> {
    let stamp = username
        .split_once(':')
        .map_or(username, |(stamp, _)| stamp);
    let secs: u64 = stamp.parse().map_err(|_| CredentialError::Malformed)?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .ok_or(CredentialError::Malformed)
}

/// The name part of a REST username: what quotas are keyed on, so that a
/// client minting several credentials is still one user.
pub fn username_name(username: &str) -> &str {
    username.split_once(':').map_or(username, |(_, name)| name)
}

/// Expected password for `username` if it is well formed and not expired.
///
/// This is what a TURN server's auth hook needs: STUN long-term auth never
/// sends the password, so the server derives the key from it instead.
pub fn password_for(
    secret: &[u8],
    username: &str,
    now: SystemTime,
) -> Result<String, CredentialError> {
    if username_expiry(username)? <= now {
        return Err(CredentialError::Expired);
    }
    Ok(rest_password(secret, username))
}

/// Checks a username/password pair presented in clear (e.g. over HTTP).
/// The comparison is constant-time (HMAC `verify_slice`).
pub fn verify(
    secret: &[u8],
    username: &str,
    password: &str,
    now: SystemTime,
) -> Result<(), CredentialError> {
    if username_expiry(username)? <= now {
        return Err(CredentialError::Expired);
    }
    let tag = BASE64
        .decode(password.as_bytes())
        .map_err(|_| CredentialError::Mismatch)?;
    mac(secret, username)
        .verify_slice(&tag)
        .map_err(|_| CredentialError::Mismatch)
}

fn mac(secret: &[u8], username: &str) -> HmacSha1 {
    // HMAC accepts keys of any length (long keys are hashed first), so this
    // constructor cannot fail for SHA-1; the fallback is unreachable.
    let mut mac = <HmacSha1 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    mac
}

impl IceConfig {
    /// The TURN credential scheme the flags choose: the secret when given, else the
    /// static account when both halves are given, else none. The combinations this
    /// resolves silently are refused earlier: both schemes at once and an empty secret
    /// by [`validate`](Self::validate), half an account by clap (`requires`).
    pub fn turn_auth(&self) -> TurnAuth {
        match (&self.turn_secret, &self.turn_username, &self.turn_password) {
            (Some(secret), _, _) => TurnAuth::Secret(secret.as_bytes().to_vec()),
            (None, Some(username), Some(password)) => TurnAuth::Static {
                username: username.clone(),
                password: password.clone(),
            },
            _ => TurnAuth::None,
        }
    }

    /// Rejects inconsistent flags at startup rather than handing browsers a
    /// configuration they silently ignore.
    pub fn validate(&self) -> anyhow::Result<()> {
        for url in &self.stun {
            anyhow::ensure!(
                url.starts_with("stun:") || url.starts_with("stuns:"),
                "--stun {url:?}: expected a stun: or stuns: URL"
            );
        }
        for url in &self.turn {
            anyhow::ensure!(
                url.starts_with("turn:") || url.starts_with("turns:"),
                "--turn {url:?}: expected a turn: or turns: URL"
            );
        }
        let static_creds = self.turn_username.is_some() || self.turn_password.is_some();
        anyhow::ensure!(
            !(self.turn_secret.is_some() && static_creds),
            "use either --turn-secret or --turn-username/--turn-password, not both"
        );
        anyhow::ensure!(
            self.turn.is_empty() || self.turn_secret.is_some() || static_creds,
            "--turn needs --turn-secret or --turn-username/--turn-password"
        );
        anyhow::ensure!(
            self.turn_secret.as_ref().is_none_or(|s| !s.is_empty()),
            "--turn-secret must not be empty"
        );
        anyhow::ensure!(
            self.turn_ttl >= Duration::from_secs(60),
            "--turn-ttl must be at least 60s"
        );
        Ok(())
    }

    /// The `iceServers` value of the login reply for `name`, ready for
    /// `new RTCPeerConnection({iceServers})`. Minted per login, so TURN
    /// credentials expire `--turn-ttl` after the user logged in.
    pub fn servers_for(&self, name: &Name) -> Value {
        self.servers_until(name, None)
    }

    /// [`servers_for`](Self::servers_for), with TURN credentials that expire by `until`
    /// (Unix seconds) if that is sooner than `--turn-ttl`: a signed-in session's end.
    pub fn servers_until(&self, name: &Name, until: Option<u64>) -> Value {
        let now = SystemTime::now();
        let ttl = match until {
            Some(until) => {
                let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                self.turn_ttl
                    .min(Duration::from_secs(until.saturating_sub(now_secs)))
            }
            None => self.turn_ttl,
        };
        // Serializing plain strings cannot fail; an empty list (no TURN)
        // is still a working configuration on one LAN.
        serde_json::to_value(self.ice_servers_with(name.as_str(), now, ttl))
            .unwrap_or_else(|_| Value::Array(Vec::new()))
    }

    /// Builds the `iceServers` list for one client. `name` ends up in the
    /// TURN username (and so in TURN server logs, and the embedded server's
    /// per-user quota is keyed on it).
    pub fn ice_servers(&self, name: &str, now: SystemTime) -> Vec<IceServer> {
        self.ice_servers_with(name, now, self.turn_ttl)
    }

    /// [`ice_servers`](Self::ice_servers) with TURN credentials valid for `ttl`.
    fn ice_servers_with(&self, name: &str, now: SystemTime, ttl: Duration) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun.is_empty() {
            servers.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn.is_empty() {
            // validate() refuses TURN URLs without credentials; without them a TURN URL
            // only makes browsers fail ICE gathering, so it is left out.
            if let Some(TurnCredentials {
                username,
                credential,
            }) = self.turn_auth().credentials_for(name, ttl, now)
            {
                servers.push(IceServer {
                    urls: self.turn.clone(),
                    username: Some(username),
                    credential: Some(credential),
                });
            }
        }
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    // Vectors computed independently with:
    //   python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"duet-test-secret",b"1700000000:alice",hashlib.sha1).digest()).decode())'
    //   echo -n 1700000000:alice | openssl dgst -sha1 -hmac duet-test-secret -binary | base64
    #[test]
    fn known_vectors() {
        let c = rest_credentials(
            b"duet-test-secret",
            "alice",
            Duration::from_secs(3600),
            at(1_700_000_000 - 3600),
        );
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, "KOI1Plb6nax0uJncccwc70aIs8k=");
        assert_eq!(
            rest_password(b"north", "1433895918:user1"),
            "T/xuopTxCOFLg7M+W0UpFUN8f6k="
        );
    }

    #[test]
    fn verify_and_expiry() {
        let secret = b"s3cret";
        let now = at(1_000_000);
        let c = rest_credentials(secret, "bob", Duration::from_secs(600), now);
        assert_eq!(verify(secret, &c.username, &c.credential, now), Ok(()));
        assert_eq!(
            verify(secret, &c.username, &c.credential, at(1_000_599)),
            Ok(())
        );
        // Expiry is exclusive: at the stamped second the credential is dead.
        assert_eq!(
            verify(secret, &c.username, &c.credential, at(1_000_600)),
            Err(CredentialError::Expired)
        );
        assert_eq!(
            verify(b"other", &c.username, &c.credential, now),
            Err(CredentialError::Mismatch)
        );
        assert_eq!(
            verify(secret, &c.username, "not base64!", now),
            Err(CredentialError::Mismatch)
        );
        assert_eq!(
            verify(secret, "abc:bob", &c.credential, now),
            Err(CredentialError::Malformed)
        );
        assert_eq!(verify(secret, "", "", now), Err(CredentialError::Malformed));
        assert_eq!(
            password_for(secret, &c.username, now).as_deref(),
            Ok(c.credential.as_str())
        );
        assert_eq!(
            password_for(secret, &c.username, at(2_000_000)),
            Err(CredentialError::Expired)
        );
        // A tampered name must not verify with the original password.
        let forged = c.username.replace("bob", "eve");
        assert_eq!(
            verify(secret, &forged, &c.credential, now),
            Err(CredentialError::Mismatch)
        );
    }

    #[test]
    fn name_may_contain_colons() {
        assert_eq!(username_name("123:room:peer"), "room:peer");
        assert_eq!(username_expiry("123:room:peer"), Ok(at(123)));
        assert_eq!(username_expiry("123"), Ok(at(123)));
        assert_eq!(
            username_expiry("99999999999999999999:x"),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn ice_servers_json() {
        let cfg = IceConfig {
            stun: vec!["stun:stun.example.org:3478".into()],
            turn: vec![
                "turn:turn.example.org:3478?transport=udp".into(),
                "turn:turn.example.org:3478?transport=tcp".into(),
            ],
            turn_secret: Some("duet-test-secret".into()),
            turn_ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        cfg.validate().expect("valid config");
        let json = serde_json::to_value(cfg.ice_servers("alice", at(1_700_000_000 - 3600)))
            .expect("serialize");
        assert_eq!(
            json,
            serde_json::json!([
                {"urls": ["stun:stun.example.org:3478"]},
                {"urls": ["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp"],
                 "username": "1700000000:alice", "credential": "KOI1Plb6nax0uJncccwc70aIs8k="}
            ])
        );
    }

    #[test]
    fn static_credentials_and_validation() {
        let mut cfg = IceConfig {
            turn: vec!["turns:t.example.org:443?transport=tcp".into()],
            turn_username: Some("u".into()),
            turn_password: Some("p".into()),
            turn_ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        cfg.validate().expect("valid");
        let servers = cfg.ice_servers("x", at(0));
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].username.as_deref(), Some("u"));
        assert_eq!(servers[0].credential.as_deref(), Some("p"));

        cfg.turn_secret = Some("s".into());
        assert!(cfg.validate().is_err(), "secret and static creds together");
        cfg.turn_secret = None;
        cfg.turn_username = None;
        cfg.turn_password = None;
        assert!(cfg.validate().is_err(), "turn without credentials");
        cfg.turn = vec!["http://nope".into()];
        cfg.turn_secret = Some("s".into());
        assert!(cfg.validate().is_err(), "bad scheme");
        assert!(
            IceConfig {
                turn_ttl: Duration::from_secs(3600),
                ..Default::default()
            }
            .ice_servers("x", at(0))
            .is_empty()
        );
    }

    #[test]
    fn one_turn_auth_for_the_login_reply_and_the_server() {
        let ttl = Duration::from_secs(3600);
        let mut cfg = IceConfig {
            turn_ttl: ttl,
            ..Default::default()
        };
        let none = cfg.turn_auth();
        assert!(matches!(none, TurnAuth::None));
        assert_eq!(none.credentials_for("x", ttl, at(0)), None);
        assert_eq!(
            none.expected_password("x", at(0)),
            Err(CredentialError::UnknownUser)
        );

        cfg.turn_username = Some("u".into());
        cfg.turn_password = Some("p".into());
        let account = cfg.turn_auth();
        assert_eq!(
            account.credentials_for("x", ttl, at(0)),
            Some(TurnCredentials {
                username: "u".into(),
                credential: "p".into(),
            })
        );
        assert_eq!(account.expected_password("u", at(0)).as_deref(), Ok("p"));
        assert_eq!(
            account.expected_password("x", at(0)),
            Err(CredentialError::UnknownUser)
        );
        assert_eq!(format!("{account:?}"), r#"Static { username: "u", .. }"#);

        // What the login mints is what the server expects, until it expires.
        cfg.turn_username = None;
        cfg.turn_password = None;
        cfg.turn_secret = Some("s".into());
        let rest = cfg.turn_auth();
        let minted = rest.credentials_for("x", ttl, at(1000)).expect("minted");
        assert_eq!(
            rest.expected_password(&minted.username, at(1000)),
            Ok(minted.credential)
        );
        assert_eq!(
            rest.expected_password(&minted.username, at(1000 + 3600)),
            Err(CredentialError::Expired)
        );
        assert_eq!(format!("{rest:?}"), "Secret(..)");
    }

    #[test]
    fn clap_parses_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            ice: IceConfig,
        }
        let cli = Cli::try_parse_from([
            "duet",
            "--stun",
            "stun:a:3478",
            "--stun",
            "stun:b:3478",
            "--turn",
            "turn:t:3478",
            "--turn-secret",
            "k",
            "--turn-ttl",
            "2h",
        ])
        .expect("parse");
        assert_eq!(cli.ice.stun.len(), 2);
        assert_eq!(cli.ice.turn_ttl, Duration::from_secs(7200));
        cli.ice.validate().expect("valid");
    }
}
