//! Who is online and how to reach them.
//!
//! Sessions never talk to each other directly: they hand [`Event`]s to the registry, which
//! delivers them to the named user's [`Mailbox`], wherever that user is connected. The
//! in-memory registry (the default) serves one node; the Redis-backed one routes between
//! nodes. Session logic is the same for both.
//!
//! The types both sides use ([`Event`], [`Mailbox`], the errors, [`Roster`]) live in the
//! leaf module [`mailbox`]; the backends import that, never this module.

pub mod mailbox;
pub mod memory;
pub mod redis;

pub use mailbox::{ClaimError, DeliverError, Event, Inbox, Mailbox, Roster, SendError, SessionId};

/// What a [`Registry::take_over`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOver {
    /// The name is this session's now.
    TookOver,
    /// Nothing holds the name for a resume: a normal login.
    NotHeld,
    /// Held for a resume, with another token (an earlier one).
    Stale,
}

use crate::presence::Presence;
use crate::protocol::Name;

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

    /// Claims `name`, held for a resume with the token id `id`, for the session that
    /// holds it here (a name a restarted node holds from its table).
    pub async fn claim_held(
        &self,
        name: &Name,
        mailbox: &Mailbox,
        id: &[u8; 16],
    ) -> Result<(), ClaimError> {
        match self {
            Registry::Memory(r) => r.claim(name, mailbox),
            Registry::Redis(r) => r.claim_with(name, mailbox, Some(id)).await,
        }
    }

    /// `name` (claimed here) is resumable with the token id `id`: in a cluster, any node
    /// can then take it over with that token ([`Registry::take_over`]), and no plain
    /// login takes the name until the resume window after its node stopped holding it.
    pub async fn set_resumable(&self, name: &Name, id: &[u8; 16]) {
        match self {
            Registry::Memory(_) => {}
            Registry::Redis(r) => r.set_resumable(name, id).await,
        }
    }

    /// A resume of `name` that found nothing held on this node: in a cluster, takes the
    /// name over from wherever it is held (or from a dead node) when `old` is its latest
    /// token id, `new` becoming the latest. The node that held it drops its session.
    pub async fn take_over(
        &self,
        name: &Name,
        old: &[u8; 16],
        new: &[u8; 16],
        mailbox: &Mailbox,
    ) -> Result<TakeOver, ClaimError> {
        match self {
            Registry::Memory(_) => Ok(TakeOver::NotHeld),
            Registry::Redis(r) => r.take_over(name, old, new, mailbox).await,
        }
    }

    /// Frees `name` if it is still held by `mailbox`'s connection. `keep_resume`: the
    /// server is shutting down, and in a cluster the name stays held for a resume on
    /// another node.
    pub async fn release(&self, name: &Name, mailbox: &Mailbox, keep_resume: bool) {
        match self {
            Registry::Memory(r) => r.release(name, mailbox),
            Registry::Redis(r) => r.release(name, mailbox, keep_resume).await,
        }
    }

    /// Hands `name` from `old`'s connection to `new`'s (a session resumed on a new
    /// connection of this node): events sent after this reach `new`. False when `old` no
    /// longer holds the name.
    pub fn replace(&self, name: &Name, old: &Mailbox, new: &Mailbox) -> bool {
        match self {
            Registry::Memory(r) => r.replace(name, old, new),
            Registry::Redis(r) => r.replace(name, old, new),
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
    /// wherever its call state changes; the Redis registry watches a peer on another node, so
    /// that `me` hears `leave` if that node dies.
    pub fn set_peer(&self, me: &Name, peer: Option<&Name>) {
        match self {
            Registry::Memory(_) => {}
            Registry::Redis(r) => r.set_peer(me, peer),
        }
    }

    /// Whether names are shared with other nodes (a resume may find its name held on
    /// another one).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Registry::Redis(_))
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
