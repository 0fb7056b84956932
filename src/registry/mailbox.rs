//! What sessions and registries hand each other: events, mailboxes, their errors and the
//! login roster, with the rules both registries apply to them (presence fan-out, roster
//! truncation, delivery errors as send errors).
//!
//! A leaf: it imports neither the [`Registry`](super::Registry) nor a backend, so both
//! backends and the session depend on it and it depends on none of them.

use std::collections::HashSet;

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::protocol::{ErrorCode, LeaveReason, Name, SignalKind, presence_frame};

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
    /// `from` resumed where the server no longer knew its call (after a restart, or on
    /// another node) and names the receiver as its call peer: the receiver confirms the
    /// call (`resumed`/`reconnecting` back) or ends it (`leave`).
    Rejoin { from: Name },
    /// The name was resumed on another node: this session ends quietly (close 4000), for
    /// the session lives on there. Made by the subscription, never sent by a session.
    Replaced,
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

    /// Disconnects the owner (its session ends as for a slow consumer); for a registry
    /// that can no longer vouch for the owner's name.
    pub fn kick(&self) {
        self.kick.cancel();
    }

    pub fn same_channel(&self, other: &Mailbox) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// Delivers "`name` came (or went)" to every one of `users` but `name` itself.
pub fn fan_out_presence<'a>(
    users: impl IntoIterator<Item = (&'a Name, &'a Mailbox)>,
    name: &Name,
    online: bool,
) {
    let frame = Utf8Bytes::from(presence_frame(name, online));
    for (other, mailbox) in users {
        if other != name {
            // A full mailbox kicks its slow owner; presence is best-effort by nature.
            let _ = mailbox.deliver(Event::Notice(frame.clone()));
        }
    }
}

/// Why a name could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the name is already in use")]
    Taken,
    /// Held for its owner to resume (on any node of the cluster).
    #[error("the name is held for its connection to resume")]
    Reserved,
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

/// A mailbox that refused an event: the receiver logged out meanwhile, or is too slow.
impl From<DeliverError> for SendError {
    fn from(e: DeliverError) -> SendError {
        match e {
            DeliverError::Gone => SendError::NotOnline,
            DeliverError::Full => SendError::Full,
        }
    }
}

/// The presence snapshot given at login.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Roster {
    pub users: Vec<Name>,
    pub truncated: bool,
}

impl Roster {
    /// The roster of `names` as the user `except` sees it: without `except` and without
    /// repeats (Redis samples each node's set on its own), at most `limit` names, and
    /// `truncated` when there were more.
    pub fn collect(names: impl IntoIterator<Item = Name>, except: &Name, limit: usize) -> Roster {
        let mut roster = Roster::default();
        let mut seen = HashSet::new();
        for name in names {
            if name == *except || seen.contains(&name) {
                continue;
            }
            if roster.users.len() == limit {
                roster.truncated = true;
                break;
            }
            seen.insert(name.clone());
            roster.users.push(name);
        }
        roster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).expect("valid name")
    }

    #[test]
    fn roster_skips_the_asker_and_repeats_and_stops_at_the_limit() {
        let names = ["a", "me", "b", "a", "c"].map(n);
        let roster = Roster::collect(names.clone(), &n("me"), 2);
        assert_eq!(roster.users, [n("a"), n("b")]);
        assert!(roster.truncated);
        let roster = Roster::collect(names, &n("me"), 3);
        assert_eq!(roster.users, [n("a"), n("b"), n("c")]);
        assert!(!roster.truncated);
    }

    #[test]
    fn presence_goes_to_everyone_but_its_subject() {
        let (alice, alice_inbox) = Mailbox::new(4, CancellationToken::new());
        let (bob, bob_inbox) = Mailbox::new(4, CancellationToken::new());
        let users = [(n("alice"), alice), (n("bob"), bob)];
        fan_out_presence(users.iter().map(|(n, m)| (n, m)), &n("alice"), true);
        assert!(alice_inbox.try_recv().is_err());
        assert!(matches!(
            bob_inbox.try_recv().map(|e| *e),
            Ok(Event::Notice(f)) if f.as_str() == presence_frame(&n("alice"), true)
        ));
    }

    #[test]
    fn delivery_errors_map_to_send_errors() {
        assert_eq!(SendError::from(DeliverError::Gone), SendError::NotOnline);
        assert_eq!(SendError::from(DeliverError::Full), SendError::Full);
    }
}
