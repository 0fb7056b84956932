//! Who is online and how to reach them.
//!
//! Sessions never talk to each other directly: they hand [`Event`]s to the registry, which
//! delivers them to the named user's [`Mailbox`], wherever that user is connected. The
//! in-memory registry (the default) serves one node; the Redis-backed one routes between
//! nodes. Session logic is the same for both.

pub mod memory;
pub mod redis;

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::presence::Presence;
use crate::protocol::{ErrorCode, LeaveReason, Name, SignalKind};

/// Something delivered to a logged-in user's session.
#[derive(Debug, Clone)]
pub enum Event {
    /// A signaling message from `from`; `frame` is the exact text to forward to the client.
    Signal {
        from: Name,
        kind: SignalKind,
        /// Set for `Leave`, so the receiver knows why without parsing `frame`.
        reason: Option<LeaveReason>,
        frame: Utf8Bytes,
    },
    /// A message this user sent to `from` was refused on `from`'s side (for example
    /// `busy`): the sender is told, nothing is dropped silently.
    Bounce {
        from: Name,
        code: ErrorCode,
        request: SignalKind,
    },
    /// A frame for the client only (presence updates); no call state involved.
    Notice(Utf8Bytes),
}

/// The receiving end of a mailbox.
///
/// A flume channel of boxed events: an idle user's mailbox is then about 200 bytes, where
/// a tokio mpsc channel (cache-padded, with a first block of 32 slots allocated up front)
/// costs about 800 (measured with `duet-bench idle`; see docs/benchmarks.md).
pub type Inbox = flume::Receiver<Box<Event>>;

/// The sending side of a session's bounded inbox, plus the means to disconnect a session
/// that does not drain it.
#[derive(Clone, Debug)]
pub struct Mailbox {
    tx: flume::Sender<Box<Event>>,
    /// Cancelled to disconnect the owner when it falls behind.
    kick: CancellationToken,
}

/// Why a [`Mailbox::deliver`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    #[error("the user is not online")]
    Gone,
    #[error("the user's queue is full; the user is being disconnected")]
    Full,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` undelivered events, and its receiving end.
    pub fn new(capacity: usize, kick: CancellationToken) -> (Mailbox, Inbox) {
        let (tx, rx) = flume::bounded(capacity.max(1));
        (Mailbox { tx, kick }, rx)
    }

    /// Queues `event` without waiting. A full queue means the owner's client is not reading
    /// fast enough: the owner is disconnected (slow consumer) rather than allowed to grow.
    pub fn deliver(&self, event: Event) -> Result<(), DeliverError> {
        match self.tx.try_send(Box::new(event)) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => {
                self.kick.cancel();
                Err(DeliverError::Full)
            }
            Err(flume::TrySendError::Disconnected(_)) => Err(DeliverError::Gone),
        }
    }

    pub fn same_channel(&self, other: &Mailbox) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// Why a name could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the name is already in use")]
    Taken,
    #[error("the registry is unavailable: {0}")]
    Unavailable(String),
}

/// Why an event could not be sent to a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the user is not online")]
    NotOnline,
    #[error("the user's queue is full")]
    Full,
    #[error("the registry is unavailable: {0}")]
    Unavailable(String),
}

/// The presence snapshot given at login.
#[derive(Debug, Default)]
pub struct Roster {
    pub users: Vec<Name>,
    pub truncated: bool,
}

/// The registry in use. An enum rather than a trait object: two implementations, known at
/// compile time, and async methods without boxing.
#[derive(Clone)]
pub enum Registry {
    Memory(memory::MemoryRegistry),
    Redis(redis::RedisRegistry),
}

impl Registry {
    /// Claims `name` for the connection owning `mailbox`. Exactly one of several racing
    /// claims for one name wins.
    pub async fn claim(&self, name: &Name, mailbox: &Mailbox) -> Result<(), ClaimError> {
        match self {
            Registry::Memory(r) => r.claim(name, mailbox),
            Registry::Redis(r) => r.claim(name, mailbox).await,
        }
    }

    /// Frees `name` if it is still held by `mailbox`'s connection.
    pub async fn release(&self, name: &Name, mailbox: &Mailbox) {
        match self {
            Registry::Memory(r) => r.release(name, mailbox),
            Registry::Redis(r) => r.release(name, mailbox).await,
        }
    }

    /// Delivers `event` to `to`. Events from one sender to one receiver arrive in the order
    /// they were sent.
    pub async fn send(&self, to: &Name, event: Event) -> Result<(), SendError> {
        match self {
            Registry::Memory(r) => r.send(to, event),
            Registry::Redis(r) => r.send(to, event).await,
        }
    }

    /// Whether `name` is online; used to choose between `not-online` and `not-in-call`.
    pub async fn is_online(&self, name: &Name) -> bool {
        match self {
            Registry::Memory(r) => r.is_online(name),
            Registry::Redis(r) => r.is_online(name).await,
        }
    }

    /// The online users other than `except`, as many as the presence policy lists;
    /// `truncated` says the list is not the whole picture and no updates will follow
    /// (presence is off, or more users are online than the limit).
    pub async fn roster(&self, except: &Name) -> Roster {
        let presence = self.presence();
        let mut roster = match (self, presence.limit()) {
            (_, 0) => Roster::default(),
            (Registry::Memory(r), limit) => r.roster(except, limit),
            (Registry::Redis(r), limit) => r.roster(except, limit).await,
        };
        roster.truncated |= !presence.is_on(self.online_count());
        roster
    }

    /// Tells every online user but `name` that `name` came or went, while the presence
    /// policy says presence is on.
    pub async fn announce(&self, name: &Name, online: bool) {
        if !self.presence().is_on(self.online_count()) {
            return;
        }
        match self {
            Registry::Memory(r) => r.announce(name, online),
            Registry::Redis(r) => r.announce(name, online).await,
        }
    }

    /// Tells the registry who `me`'s call peer is (`None`: no call). The session calls it
    /// wherever its call state changes; the Redis registry watches the peer's node.
    pub fn set_peer(&self, me: &Name, peer: Option<&Name>) {
        match self {
            Registry::Memory(_) => {}
            Registry::Redis(r) => r.set_peer(me, peer),
        }
    }

    /// The presence policy this registry applies.
    pub fn presence(&self) -> Presence {
        match self {
            Registry::Memory(r) => r.presence(),
            Registry::Redis(r) => r.presence(),
        }
    }

    /// Users logged in (on this node for the memory registry; cluster-wide for Redis).
    pub fn online_count(&self) -> usize {
        match self {
            Registry::Memory(r) => r.online_count(),
            Registry::Redis(r) => r.online_count(),
        }
    }

    /// A one-line state for `/healthz` and `/metrics`; `None` when there is nothing to say.
    pub fn backend_state(&self) -> Option<(&'static str, bool)> {
        match self {
            Registry::Memory(_) => None,
            Registry::Redis(r) => Some(("redis", r.connected())),
        }
    }

    /// Releases everything this node holds (graceful shutdown).
    pub async fn shutdown(&self) {
        match self {
            Registry::Memory(_) => {}
            Registry::Redis(r) => r.shutdown().await,
        }
    }
}
