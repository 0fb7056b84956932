//! Session resume: the signed tokens a resumable login gets, and the seats: the resumable
//! sessions of this node (connected or held after a drop), each waiting for a login with
//! its token to take it over.
//!
//! A token is `base64url(version | expiry | id | name) "." base64url(HMAC-SHA256)`, keyed
//! with `--resume-secret` (or a random key per process). The id is random per login and
//! only the session that got it accepts it, so a token is good for the one login that
//! received it, until that login is resumed (which hands out a new one) or its name freed.
//! The expiry bounds a leaked token; the signature makes a token useless to forge.
//!
//! Takeover is a hand-off between two sessions, arbitrated by the seats' lock: the
//! resuming login removes the seat and sends its new mailbox through the seat's channel
//! in one critical section, so the owner that finds its seat gone knows a [`Takeover`] is
//! already waiting for it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Message;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::oneshot;

use super::call::Call;
use super::store::{Row, Store};
use crate::protocol::Name;
use crate::registry::{Mailbox, SessionId};

/// How long a token is good for after the login that got it. A connection logged in for
/// longer than this can still drop, but its name is then only held, not resumable.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Frames kept for a held session: enough for a renegotiation's offer and its candidates,
/// small enough that a thousand held sessions cost little.
pub const HELD_FRAMES: usize = 64;
pub const HELD_BYTES: usize = 256 * 1024;

const VERSION: u8 = 1;
const ID_LEN: usize = 16;
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was not accepted; the client is told `invalid-token` with this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was not issued by this server (or the server's key changed)")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is for another name")]
    OtherName,
    #[error("the token is from an earlier login of this name")]
    Stale,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claims {
    expires: u64,
    id: [u8; ID_LEN],
    name: String,
}

/// The key tokens are signed with.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl TokenKey {
    /// `secret`'s bytes, or a random key (tokens then die with the process).
    pub fn new(secret: Option<&str>) -> TokenKey {
        match secret {
            Some(secret) => TokenKey(secret.as_bytes().to_vec()),
            None => TokenKey(rand::random::<[u8; 32]>().to_vec()),
        }
    }

    pub fn from_bytes(key: Vec<u8>) -> TokenKey {
        TokenKey(key)
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(payload);
        mac
    }

    fn sign(&self, claims: &Claims) -> String {
        let mut payload = Vec::with_capacity(1 + 8 + ID_LEN + claims.name.len());
        payload.push(VERSION);
        payload.extend_from_slice(&claims.expires.to_be_bytes());
        payload.extend_from_slice(&claims.id);
        payload.extend_from_slice(claims.name.as_bytes());
        let tag = self.mac(&payload).finalize().into_bytes();
        format!("{}.{}", BASE64URL.encode(&payload), BASE64URL.encode(tag))
    }

    fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = BASE64URL
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let tag = BASE64URL.decode(tag).map_err(|_| TokenError::Malformed)?;
        if tag.len() != MAC_LEN || payload.len() <= 1 + 8 + ID_LEN || payload[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        // Constant time: a timing difference must not reveal how much of a tag is right.
        self.mac(&payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let mut expires = [0; 8];
        expires.copy_from_slice(&payload[1..9]);
        let expires = u64::from_be_bytes(expires);
        let mut id = [0; ID_LEN];
        id.copy_from_slice(&payload[9..9 + ID_LEN]);
        let name = std::str::from_utf8(&payload[9 + ID_LEN..])
            .map_err(|_| TokenError::Malformed)?
            .to_owned();
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Claims { expires, id, name })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A resuming login's request to the owner of a seat.
pub struct Takeover {
    /// The new connection's mailbox, to put in the registry in place of the old one.
    pub mailbox: Mailbox,
    pub reply: oneshot::Sender<Handover>,
}

/// What the old session hands the new one: its call and the frames it kept.
pub struct Handover {
    pub call: Call,
    /// The session's id, kept by the connection that takes it over: its peer knows it.
    pub sid: SessionId,
    /// The TURN credentials the session holds: the call's connection may still use them.
    pub turn: Vec<crate::turn::live::LiveCredential>,
    /// In the order they were to be written; only text frames.
    pub frames: Vec<Message>,
    /// The session was held from the table after a restart: the server does not know
    /// its call (unless its peer came back naming it), so the client's `call` decides.
    pub restored: bool,
}

/// A session's own end of its seat.
pub struct Seat {
    pub id: [u8; ID_LEN],
    pub takeover: oneshot::Receiver<Takeover>,
}

struct Entry {
    id: [u8; ID_LEN],
    /// The token's expiry, kept for the table of names.
    expires: u64,
    /// Set once the connection dropped: plain logins are told the name is reserved.
    held: bool,
    takeover: oneshot::Sender<Takeover>,
}

/// What a login with a token found.
pub enum Take {
    /// No resumable session has the name: a normal login, whatever the token says.
    NotHeld,
    /// A resumable session has the name and the token is not its own.
    Refused(TokenError),
    /// The owner was asked to hand over; its answer comes here.
    Taking(oneshot::Receiver<Handover>),
}

/// The resume key and the seats of this node.
pub struct Resume {
    key: TokenKey,
    seats: Mutex<HashMap<Name, Entry>>,
    /// Where the key and the seats are kept for a restart; none in unit tests.
    store: Option<Store>,
}

impl Resume {
    /// Resume without a data directory: tokens and seats die with the process.
    pub fn new(secret: Option<&str>) -> Resume {
        Resume {
            key: TokenKey::new(secret),
            seats: Mutex::default(),
            store: None,
        }
    }

    /// Resume kept in `dir` (see [`store`](super::store)), and the names the last process
    /// left resumable, to hold with [`Resume::restore`].
    /// `port`: the listening port, which names the table of names.
    pub fn open(secret: Option<&str>, dir: &std::path::Path, port: u16) -> (Resume, Vec<Row>) {
        let (store, key, rows) = Store::open(dir, port, secret, unix_now());
        let resume = Resume {
            key: TokenKey::from_bytes(key),
            seats: Mutex::default(),
            store: Some(store),
        };
        (resume, rows)
    }

    fn changed(&self) {
        if let Some(store) = &self.store {
            store.changed();
        }
    }

    fn rows(&self) -> Vec<Row> {
        self.seats()
            .iter()
            .map(|(name, e)| Row {
                name: name.clone(),
                id: e.id,
                expires: e.expires,
            })
            .collect()
    }

    /// Writes the seats to the data directory after each change, until [`Resume::freeze`].
    pub async fn keep_saved(&self) {
        let Some(store) = &self.store else {
            return;
        };
        while store.next_write().await {
            store.write(self.rows(), false).await;
        }
    }

    /// Writes the seats one last time as the server shuts down: the sessions that end
    /// next give their seats up, but the restarted server must hold their names.
    pub async fn freeze(&self) {
        if let Some(store) = &self.store {
            store.write(self.rows(), true).await;
        }
    }

    /// A seat for a name the last process left resumable, already held: taken only with
    /// the token whose id is in `row`.
    pub fn restore(&self, row: &Row) -> Seat {
        let (tx, rx) = oneshot::channel();
        self.seats().insert(
            row.name.clone(),
            Entry {
                id: row.id,
                expires: row.expires,
                held: true,
                takeover: tx,
            },
        );
        Seat {
            id: row.id,
            takeover: rx,
        }
    }

    fn seats(&self) -> MutexGuard<'_, HashMap<Name, Entry>> {
        // Every critical section is one map operation: a poisoned map is still whole.
        self.seats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A seat for `name`, just logged in (or resumed) here, and the token that takes it.
    pub fn seat(&self, name: &Name) -> (String, Seat) {
        self.seat_with(name, rand::random())
    }

    /// [`Resume::seat`] with the token id `id` (one already recorded in the cluster).
    pub fn seat_with(&self, name: &Name, id: [u8; ID_LEN]) -> (String, Seat) {
        let claims = Claims {
            expires: unix_now() + TOKEN_LIFETIME.as_secs(),
            id,
            name: name.as_str().to_owned(),
        };
        if let Some(store) = &self.store {
            store.key_used();
        }
        let (tx, rx) = oneshot::channel();
        self.seats().insert(
            name.clone(),
            Entry {
                id,
                expires: claims.expires,
                held: false,
                takeover: tx,
            },
        );
        self.changed();
        (self.key.sign(&claims), Seat { id, takeover: rx })
    }

    /// The seat's connection dropped; its name is now held.
    pub fn hold(&self, name: &Name, seat: &Seat) {
        if let Some(entry) = self.seats().get_mut(name)
            && entry.id == seat.id
        {
            entry.held = true;
        }
    }

    /// Whether `name` is held for a dropped connection to come back.
    pub fn is_held(&self, name: &Name) -> bool {
        self.seats().get(name).is_some_and(|e| e.held)
    }

    /// Gives the seat up. False when a resuming login took it first: its [`Takeover`] is
    /// then waiting in `seat.takeover`.
    pub fn leave(&self, name: &Name, seat: &Seat) -> bool {
        let mut seats = self.seats();
        match seats.get(name) {
            Some(entry) if entry.id == seat.id => {
                seats.remove(name);
                drop(seats);
                self.changed();
                true
            }
            _ => false,
        }
    }

    /// The id in `token` if it is a good token for `name` (signed by us, not expired); for
    /// a resume that finds nothing held here, to try elsewhere in the cluster.
    pub fn verify(&self, name: &Name, token: &str) -> Result<[u8; ID_LEN], TokenError> {
        let claims = self.key.verify(token, unix_now())?;
        if claims.name != name.as_str() {
            return Err(TokenError::OtherName);
        }
        Ok(claims.id)
    }

    /// A login for `name` with `token`; `mailbox` is the new connection's.
    pub fn take(&self, name: &Name, token: &str, mailbox: &Mailbox) -> Take {
        let mut seats = self.seats();
        let Some(entry) = seats.get(name) else {
            return Take::NotHeld;
        };
        let claims = match self.key.verify(token, unix_now()) {
            Ok(claims) => claims,
            Err(e) => return Take::Refused(e),
        };
        if claims.name != name.as_str() {
            return Take::Refused(TokenError::OtherName);
        }
        if claims.id != entry.id {
            return Take::Refused(TokenError::Stale);
        }
        let Some(entry) = seats.remove(name) else {
            return Take::NotHeld;
        };
        let (reply, answer) = oneshot::channel();
        let takeover = Takeover {
            mailbox: mailbox.clone(),
            reply,
        };
        // Sent under the lock: an owner that finds its seat gone finds this waiting.
        match entry.takeover.send(takeover) {
            Ok(()) => Take::Taking(answer),
            // The owner is gone without leaving its seat (it cannot be: it leaves on every
            // path); the name is then not held by anyone here.
            Err(_) => Take::NotHeld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(name: &str, expires: u64) -> Claims {
        Claims {
            expires,
            id: [7; ID_LEN],
            name: name.to_owned(),
        }
    }

    #[test]
    fn a_token_verifies_with_its_key_only() {
        let key = TokenKey::new(Some("secret"));
        let token = key.sign(&claims("alice", 1000));
        assert_eq!(key.verify(&token, 999), Ok(claims("alice", 1000)));
        assert_eq!(key.verify(&token, 1000), Err(TokenError::Expired));
        let other = TokenKey::new(Some("other"));
        assert_eq!(other.verify(&token, 0), Err(TokenError::BadSignature));
        // The same key from the same secret: tokens outlive a restart.
        assert_eq!(
            TokenKey::new(Some("secret")).verify(&token, 0),
            Ok(claims("alice", 1000))
        );
    }

    #[test]
    fn a_tampered_or_garbled_token_is_refused() {
        let key = TokenKey::new(None);
        let token = key.sign(&claims("alice", u64::MAX));
        let (_, tag) = token.split_once('.').expect("two parts");
        // The same tag over another name.
        let forged_payload = {
            let mut p = vec![VERSION];
            p.extend_from_slice(&u64::MAX.to_be_bytes());
            p.extend_from_slice(&[7; ID_LEN]);
            p.extend_from_slice(b"mallory");
            BASE64URL.encode(p)
        };
        assert_eq!(
            key.verify(&format!("{forged_payload}.{tag}"), 0),
            Err(TokenError::BadSignature)
        );
        for garbage in ["", ".", "abc", "a.b", "!!!.???", &format!("{tag}.{tag}")] {
            assert_eq!(
                key.verify(garbage, 0),
                Err(TokenError::Malformed),
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_seat_is_taken_only_with_its_own_token() {
        let resume = Resume::new(None);
        let alice = Name::parse("alice").expect("name");
        let bob = Name::parse("bob").expect("name");
        let (mailbox, _inbox) = Mailbox::new(1, Default::default());
        // Nothing held: any token is a normal login.
        assert!(matches!(
            resume.take(&alice, "junk", &mailbox),
            Take::NotHeld
        ));
        let (old_token, old_seat) = resume.seat(&alice);
        assert!(resume.leave(&alice, &old_seat));
        let (token, mut seat) = resume.seat(&alice);
        let (bob_token, _bob_seat) = resume.seat(&bob);
        resume.hold(&alice, &seat);
        assert!(resume.is_held(&alice) && !resume.is_held(&bob));
        for (bad, why) in [
            ("junk", TokenError::Malformed),
            (bob_token.as_str(), TokenError::OtherName),
            (old_token.as_str(), TokenError::Stale),
        ] {
            match resume.take(&alice, bad, &mailbox) {
                Take::Refused(e) => assert_eq!(e, why),
                _ => panic!("{why:?} accepted"),
            }
        }
        assert!(resume.is_held(&alice), "refusals leave the name held");
        assert!(matches!(
            resume.take(&alice, &token, &mailbox),
            Take::Taking(_)
        ));
        // The owner finds its seat gone and the takeover waiting.
        assert!(!resume.leave(&alice, &seat));
        assert!(seat.takeover.try_recv().is_ok());
        assert!(!resume.is_held(&alice));
    }
}
