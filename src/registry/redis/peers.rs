//! The call peers this node watches for its users, as the sessions tell them
//! (`Registry::set_peer`): one per local user in a call with someone on another node.
//!
//! A node that dies without warning cannot send its users' `leave`. So each heartbeat
//! looks up the user keys of the watched peers: once a peer's key is gone (its node
//! stopped refreshing it) or held by another node than the one the peer's connection was
//! seen on (the name went to a new connection), the local user is told `leave` (reason
//! `disconnected`), as if the peer had hung up. The node is pinned by the first of:
//!
//! - the owner node a send from the local user to the peer was published to;
//! - the origin node of an event from the peer to the local user;
//! - the heartbeat's own lookup, for a callee that has not sent anything yet. It runs
//!   within a quarter lease of being told, while a key refreshed every quarter lease
//!   still has three quarters to live: the name is still the one that just signalled.
//!
//! A peer on this node is not watched: its session tells the local user itself.
//!
//! A resumable peer (its resume key is there) whose name is gone is reconnecting, not
//! gone: the local user is told `reconnecting` once, and the watch waits for the name to
//! come back on any node (the resumed session's `rejoin` confirms the call) or for the
//! resume key to expire with the window (then `leave`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::{self, LeaveReason, Name, SignalKind};
use crate::registry::mailbox::{Event, SessionId};

/// One local user's remote call peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub peer: Name,
    /// The node the peer's connection is on, once seen.
    pub node: Option<Arc<str>>,
    /// The local user was told the peer is reconnecting (its node stopped holding it).
    pub reconnecting: bool,
}

/// What a heartbeat's lookup of a watched peer means for the local user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    /// The peer's node is gone and the name is held for it to resume.
    Reconnecting,
    /// The peer is gone: tell the local user `leave`.
    Left,
}

/// The watched peers, by local user.
#[derive(Default)]
pub struct Peers {
    by_user: HashMap<Name, Watch>,
}

impl Peers {
    /// `me`'s call peer is now `peer` (`None`: no call). `local`: the peer is on this
    /// node, so it is not watched.
    pub fn set(&mut self, me: &Name, peer: Option<&Name>, local: bool) {
        match peer {
            Some(peer) if !local => {
                // The same peer again (ringing, then connected): keep what was seen.
                if self.by_user.get(me).is_some_and(|w| w.peer == *peer) {
                    return;
                }
                let watch = Watch {
                    peer: peer.clone(),
                    node: None,
                    reconnecting: false,
                };
                self.by_user.insert(me.clone(), watch);
            }
            _ => {
                self.by_user.remove(me);
            }
        }
    }

    /// `me` logged out (or lost its name): nothing to watch for it.
    pub fn forget(&mut self, me: &Name) {
        self.by_user.remove(me);
    }

    /// `peer`'s connection was seen on `node` by traffic with `me`. Pins the node if it is
    /// `me`'s peer and its node was not known; a known node stays, so that a name that
    /// moved to another connection shows as a mismatch at the next heartbeat.
    pub fn seen(&mut self, me: &Name, peer: &Name, node: &str) {
        if let Some(watch) = self.by_user.get_mut(me)
            && watch.peer == *peer
            && watch.node.is_none()
        {
            watch.node = Some(node.into());
        }
    }

    /// `peer` resumed on `node` and rejoined `me`'s call: watch it there.
    pub fn moved(&mut self, me: &Name, peer: &Name, node: &str) {
        if let Some(watch) = self.by_user.get_mut(me)
            && watch.peer == *peer
        {
            watch.node = Some(node.into());
            watch.reconnecting = false;
        }
    }

    /// The watches, for the heartbeat to look up.
    pub fn snapshot(&self) -> Vec<(Name, Watch)> {
        self.by_user
            .iter()
            .map(|(me, watch)| (me.clone(), watch.clone()))
            .collect()
    }

    /// Applies a heartbeat's lookup of `peer`'s user key (`owner`: the node holding it,
    /// if any; `resumable`: its resume key is there) to `me`'s watch. On
    /// [`Verdict::Left`] the watch is dropped. `trust_absence` is false for a lease after
    /// this node reconnected (see `LinkState::since`).
    pub fn found(
        &mut self,
        me: &Name,
        peer: &Name,
        owner: Option<&str>,
        resumable: bool,
        trust_absence: bool,
    ) -> Verdict {
        let Some(watch) = self.by_user.get_mut(me) else {
            return Verdict::Unchanged;
        };
        // Told about another peer (or none) since the lookup was sent.
        if watch.peer != *peer {
            return Verdict::Unchanged;
        }
        let verdict = match (owner, &watch.node) {
            (None, _) if resumable => {
                // Whichever node it resumes on is the one to watch next.
                watch.node = None;
                if std::mem::replace(&mut watch.reconnecting, true) {
                    Verdict::Unchanged
                } else {
                    Verdict::Reconnecting
                }
            }
            (None, _) if trust_absence => Verdict::Left,
            (None, _) => Verdict::Unchanged,
            // Resumed elsewhere: its `rejoin` says so (and re-pins the watch).
            (Some(owner), Some(node)) if **node != *owner && resumable => {
                watch.node = Some(owner.into());
                Verdict::Unchanged
            }
            (Some(owner), Some(node)) if **node != *owner => Verdict::Left,
            (Some(_), Some(_)) => Verdict::Unchanged,
            (Some(owner), None) => {
                watch.node = Some(owner.into());
                Verdict::Unchanged
            }
        };
        if verdict == Verdict::Left {
            self.by_user.remove(me);
        }
        verdict
    }

    #[cfg(test)]
    pub fn get(&self, me: &Name) -> Option<&Watch> {
        self.by_user.get(me)
    }
}

/// The `leave` a local user gets when `peer`'s node died.
pub fn peer_left(peer: &Name) -> Event {
    let frame = protocol::leave_frame(
        &protocol::json_string(peer.as_str()),
        LeaveReason::Disconnected,
    );
    Event::Signal {
        from: peer.clone(),
        sid: SessionId::UNKNOWN,
        kind: SignalKind::Leave,
        reason: Some(LeaveReason::Disconnected),
        frame: frame.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).expect("valid name")
    }

    #[test]
    fn one_peer_per_user_exactly_as_told() {
        let mut peers = Peers::default();
        let (me, bob, carol) = (n("me"), n("bob"), n("carol"));
        peers.set(&me, Some(&bob), false);
        peers.seen(&me, &bob, "n1");
        // Ringing, then connected: the same peer, its node is kept.
        peers.set(&me, Some(&bob), false);
        assert_eq!(peers.get(&me).and_then(|w| w.node.as_deref()), Some("n1"));
        // A call with someone else: bob is no longer watched, even if his node dies.
        peers.set(&me, Some(&carol), false);
        assert_ne!(peers.found(&me, &bob, None, false, true), Verdict::Left);
        assert_eq!(peers.get(&me).map(|w| &w.peer), Some(&carol));
        // Traffic with someone who is not the peer pins nothing.
        peers.seen(&me, &bob, "n1");
        assert_eq!(peers.get(&me).and_then(|w| w.node.clone()), None);
        // A peer on this node is not watched; nor is anyone once the call is over.
        peers.set(&me, Some(&bob), true);
        assert_eq!(peers.get(&me), None);
        peers.set(&me, Some(&carol), false);
        peers.set(&me, None, false);
        assert_eq!(peers.get(&me), None);
        assert!(peers.snapshot().is_empty());
    }

    #[test]
    fn the_peer_is_gone_when_its_key_is_gone_or_moved() {
        let (me, bob) = (n("me"), n("bob"));
        let watching = |node: Option<&str>| {
            let mut peers = Peers::default();
            peers.set(&me, Some(&bob), false);
            if let Some(node) = node {
                peers.seen(&me, &bob, node);
            }
            peers
        };
        // Still there: nothing to say.
        let left = |mut peers: Peers, owner: Option<&str>, trust: bool| {
            peers.found(&me, &bob, owner, false, trust) == Verdict::Left
        };
        assert!(!left(watching(Some("n1")), Some("n1"), true));
        // Gone; but not believed just after this node reconnected (Redis restarted).
        assert!(left(watching(Some("n1")), None, true));
        assert!(!left(watching(Some("n1")), None, false));
        // The name moved to another node: a new connection, the peer is gone.
        assert!(left(watching(Some("n1")), Some("n2"), false));
        // Not seen yet: the lookup pins the node, a later move is noticed.
        let mut peers = watching(None);
        assert_ne!(
            peers.found(&me, &bob, Some("n2"), false, true),
            Verdict::Left
        );
        assert_eq!(peers.get(&me).and_then(|w| w.node.as_deref()), Some("n2"));
        assert_eq!(
            peers.found(&me, &bob, Some("n3"), false, true),
            Verdict::Left
        );
        // Told once: the watch is dropped.
        assert_ne!(peers.found(&me, &bob, None, false, true), Verdict::Left);

        // A resumable peer whose node died is reconnecting (said once), and resuming on
        // another node is no departure; once its resume key is gone too, it left.
        let mut peers = watching(Some("n1"));
        assert_eq!(
            peers.found(&me, &bob, None, true, true),
            Verdict::Reconnecting
        );
        assert_eq!(peers.found(&me, &bob, None, true, true), Verdict::Unchanged);
        assert_eq!(
            peers.found(&me, &bob, Some("n2"), true, true),
            Verdict::Unchanged
        );
        assert_eq!(peers.get(&me).and_then(|w| w.node.as_deref()), Some("n2"));
        peers.moved(&me, &bob, "n3");
        assert_eq!(
            peers.found(&me, &bob, Some("n3"), true, true),
            Verdict::Unchanged
        );
        assert_eq!(
            peers.found(&me, &bob, None, true, true),
            Verdict::Reconnecting
        );
        assert_eq!(peers.found(&me, &bob, None, false, true), Verdict::Left);
    }
}
