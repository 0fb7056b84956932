//! The long-term credential check (RFC 5389 §10.2) the `turn` crate calls for every
//! authenticated request. STUN never sends the password, so the hook returns the key
//! the crate checks the message integrity with; the password it derives from comes
//! from the same [`TurnAuth`] the login reply mints credentials from.

use std::net::SocketAddr;
use std::time::SystemTime;

use ::turn::auth::{AuthHandler, generate_auth_key};

use super::live::LiveCredentials;
use crate::ice::TurnAuth;

/// The crate's `AuthHandler`: the HMAC key for a username, or an error (which the
/// crate turns into a 401) for unknown or expired ones.
pub(super) struct LongTermAuth {
    auth: TurnAuth,
    /// With `--turn-credentials session`: only the usernames of live sessions.
    live: Option<LiveCredentials>,
}

impl LongTermAuth {
    pub(super) fn new(auth: TurnAuth, live: Option<LiveCredentials>) -> Self {
        LongTermAuth { auth, live }
    }
}

impl AuthHandler for LongTermAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src: SocketAddr,
    ) -> Result<Vec<u8>, ::turn::Error> {
        let password = self
            .auth
            .expected_password(username, SystemTime::now())
            .map_err(|e| {
                tracing::debug!(%src, username, "TURN auth refused: {e}");
                ::turn::Error::Other(e.to_string())
            })?;
        if let Some(live) = &self.live
            && !live.is_live(username)
        {
            tracing::debug!(%src, username, "TURN auth refused: no live session holds this username");
            return Err(::turn::Error::Other(
                "the session these credentials were handed to has ended".into(),
            ));
        }
        Ok(generate_auth_key(username, realm, &password))
    }
}
