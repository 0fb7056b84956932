//! What sessions and registries hand each other: events, mailboxes, their errors and the
//! login roster, with the rules both registries apply to them (presence fan-out, roster
//! truncation, delivery errors as send errors).
//!
//! A leaf: it imports neither the [`Registry`](super::Registry) nor a backend, so both
//! backends and the session depend on it and it depends on none of them.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::protocol::{ErrorCode, LeaveReason, Name, SignalKind, presence_frame};

/// One login of a name: who sent an event, beside the name it was sent under. A call
/// peer is a name and a session, so that someone who gets the name next (another node
/// claimed it after Redis lost its data, issue 15 finding 4) is a stranger to the call
/// rules, not a renegotiation. Random per login; a resume carries the call to a new
/// session through [`Event::Rejoin`]. Never on the client wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(u64);

impl SessionId {
    /// Not known: the event was made by a registry for the name (a node's death, a
    /// delivery failure) or came from a node that does not send session ids. It matches
    /// any session of the name.
    pub const UNKNOWN: SessionId = SessionId(0);

    /// A new session's id.
    pub fn random() -> SessionId {
        SessionId(rand::random::<u64>().max(1))
    }

    pub const fn from_u64(id: u64) -> SessionId {
        SessionId(id)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub const fn is_known(self) -> bool {
        self.0 != 0
    }

    /// Whether an event from session `other` of a name may come from this session of it.
    pub fn admits(self, other: SessionId) -> bool {
        self == other || !self.is_known() || !other.is_known()
    }
}

/// Something delivered to a logged-in user's session.
#[derive(Debug, Clone)]
pub enum Event {
    /// A signaling message from `from`'s session `sid`; `frame` is the exact text to
    /// forward to the client.
    Signal {
        from: Name,
        sid: SessionId,
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
    /// `sid` is the session `from` resumed as: the call's peer from now on.
    Rejoin { from: Name, sid: SessionId },
    /// The name was resumed on another node: this session ends quietly (close 4000), for
    /// the session lives on there. Made by the subscription, never sent by a session.
    Replaced,
    /// Another node holds the name now (it was claimed there while this node could not
    /// vouch for it: Redis lost its data, or this node was cut off): this session ends
    /// with its own close code (4002). Made by the heartbeat, never sent by a session.
    NameLost,
}

/// Bytes one mailbox may hold undelivered: sixteen messages of the largest size (64 KiB),
/// far beyond what a reading client ever has waiting. More means the client is not
/// reading: it is disconnected as a slow consumer (issue 15 finding 5: a client that never
/// read cost its peer's 60 KB candidates times the queue's 1,024 places, ~30 MiB).
pub const MAX_QUEUED_BYTES: usize = 1 << 20;

/// Bytes all mailboxes of the process may hold together. Over it, a delivery to a
/// mailbox that holds a backlog of its own ([`BACKLOG`]) disconnects that slow owner (the
/// largest queues go first); other deliveries are refused to their senders until
/// memory is given back.
pub const QUEUED_BUDGET: usize = 256 << 20;

/// What counts as a backlog when the process is over [`QUEUED_BUDGET`].
const BACKLOG: usize = 64 << 10;

/// Accounting cost of an event besides its frame (the box, the channel slot).
const EVENT_OVERHEAD: usize = 64;

/// Bytes queued in mailboxes, together, against a limit.
#[derive(Debug)]
pub struct QueueBudget {
    queued: AtomicUsize,
    limit: usize,
}

impl QueueBudget {
    pub const fn new(limit: usize) -> QueueBudget {
        QueueBudget {
            queued: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes queued now, in every mailbox of this budget.
    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }
}

/// The process's budget, shared by every mailbox made with [`Mailbox::new`].
static PROCESS_BUDGET: QueueBudget = QueueBudget::new(QUEUED_BUDGET);

/// A mailbox's accounting: its own bytes, and the budget they also count against.
#[derive(Debug)]
struct Queued {
    bytes: AtomicUsize,
    budget: &'static QueueBudget,
}

impl Queued {
    fn release(&self, cost: usize) {
        self.bytes.fetch_sub(cost, Relaxed);
        self.budget.queued.fetch_sub(cost, Relaxed);
    }
}

impl Drop for Queued {
    /// What was never taken out goes back to the budget with the mailbox.
    fn drop(&mut self) {
        self.budget.queued.fetch_sub(*self.bytes.get_mut(), Relaxed);
    }
}

impl Event {
    /// What this event counts against the byte limits.
    pub fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                Event::Signal { frame, .. } | Event::Notice(frame) => frame.len(),
                Event::Bounce { .. } | Event::Rejoin { .. } | Event::Replaced | Event::NameLost => {
                    0
                }
            }
    }
}

/// The receiving end of a mailbox.
///
/// A flume channel of boxed events: an idle user's mailbox is then about 200 bytes, where
/// a tokio mpsc channel (cache-padded, with a first block of 32 slots allocated up front)
/// costs about 800 (measured with `duet-bench idle`; see docs/benchmarks.md). Taking an
/// event out gives its bytes back to the limits.
#[derive(Debug)]
pub struct Inbox {
    rx: flume::Receiver<Box<Event>>,
    queued: Arc<Queued>,
}

impl Inbox {
    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Result<Box<Event>, flume::TryRecvError> {
        let event = self.rx.try_recv()?;
        self.queued.release(event.cost());
        Ok(event)
    }

    /// Waits for the next event; an error when every sender is gone.
    pub async fn recv_async(&self) -> Result<Box<Event>, flume::RecvError> {
        let event = self.rx.recv_async().await?;
        self.queued.release(event.cost());
        Ok(event)
    }

    /// Bytes waiting in this inbox.
    pub fn queued_bytes(&self) -> usize {
        self.queued.bytes.load(Relaxed)
    }
}

/// The sending side of a session's bounded inbox, plus the means to disconnect a session
/// that does not drain it.
#[derive(Clone, Debug)]
pub struct Mailbox {
    tx: flume::Sender<Box<Event>>,
    /// Cancelled to disconnect the owner when it falls behind.
    kick: CancellationToken,
    queued: Arc<Queued>,
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
    /// A mailbox holding at most `capacity` undelivered events and [`MAX_QUEUED_BYTES`],
    /// counted against the process's [`QUEUED_BUDGET`], and its receiving end.
    pub fn new(capacity: usize, kick: CancellationToken) -> (Mailbox, Inbox) {
        Mailbox::with_budget(capacity, kick, &PROCESS_BUDGET)
    }

    /// [`Mailbox::new`], counted against `budget`.
    pub fn with_budget(
        capacity: usize,
        kick: CancellationToken,
        budget: &'static QueueBudget,
    ) -> (Mailbox, Inbox) {
        let (tx, rx) = flume::bounded(capacity.max(1));
        let queued = Arc::new(Queued {
            bytes: AtomicUsize::new(0),
            budget,
        });
        (
            Mailbox {
                tx,
                kick,
                queued: queued.clone(),
            },
            Inbox { rx, queued },
        )
    }

    /// Queues `event` without waiting. A full queue (in places or in bytes) means the
    /// owner's client is not reading fast enough: the owner is disconnected (slow
    /// consumer) rather than allowed to grow. Over the process's budget, a delivery is
    /// refused, and a backed-up owner disconnected.
    pub fn deliver(&self, event: Event) -> Result<(), DeliverError> {
        let cost = event.cost();
        let Queued { bytes, budget } = &*self.queued;
        let mine = bytes.fetch_add(cost, Relaxed) + cost;
        let total = budget.queued.fetch_add(cost, Relaxed) + cost;
        let refuse = |kick: bool| {
            self.queued.release(cost);
            if kick {
                self.kick.cancel();
            }
            Err(DeliverError::Full)
        };
        if mine > MAX_QUEUED_BYTES {
            return refuse(true);
        }
        if total > budget.limit {
            if mine > BACKLOG {
                tracing::warn!(
                    queued = total,
                    "queued messages over the memory budget: disconnecting a slow receiver"
                );
            }
            return refuse(mine > BACKLOG);
        }
        match self.tx.try_send(Box::new(event)) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => refuse(true),
            Err(flume::TrySendError::Disconnected(_)) => {
                self.queued.release(cost);
                Err(DeliverError::Gone)
            }
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

    fn big_signal(frame: &Utf8Bytes) -> Event {
        Event::Signal {
            from: n("alice"),
            sid: SessionId::UNKNOWN,
            kind: SignalKind::Candidate,
            reason: None,
            frame: frame.clone(),
        }
    }

    /// A client that does not read: its mailbox takes up to MAX_QUEUED_BYTES, then the
    /// next delivery disconnects it; taking events out gives the bytes back.
    #[test]
    fn a_mailbox_holds_a_bounded_number_of_bytes() {
        static BUDGET: QueueBudget = QueueBudget::new(QUEUED_BUDGET);
        let frame = Utf8Bytes::from("x".repeat(60_000));
        let kick = CancellationToken::new();
        let (mailbox, inbox) = Mailbox::with_budget(1024, kick.clone(), &BUDGET);
        let fits = MAX_QUEUED_BYTES / (60_000 + EVENT_OVERHEAD);
        for _ in 0..fits {
            assert_eq!(mailbox.deliver(big_signal(&frame)), Ok(()));
        }
        assert!(!kick.is_cancelled());
        assert_eq!(mailbox.deliver(big_signal(&frame)), Err(DeliverError::Full));
        assert!(kick.is_cancelled(), "the slow owner is disconnected");
        assert_eq!(BUDGET.queued(), fits * (60_000 + EVENT_OVERHEAD));
        while inbox.try_recv().is_ok() {}
        assert_eq!((inbox.queued_bytes(), BUDGET.queued()), (0, 0));
        // What is left in a dropped mailbox goes back to the budget too.
        assert_eq!(mailbox.deliver(big_signal(&frame)), Ok(()));
        drop((mailbox, inbox));
        assert_eq!(BUDGET.queued(), 0);
    }

    /// Over the process's budget, the backed-up owners are disconnected and other
    /// deliveries refused, while the budget holds.
    #[test]
    fn the_process_budget_drops_the_largest_queues() {
        static BUDGET: QueueBudget = QueueBudget::new(2 * MAX_QUEUED_BYTES);
        let frame = Utf8Bytes::from("x".repeat(60_000));
        let mut slow = Vec::new();
        // Two clients that never read fill the budget.
        for _ in 0..2 {
            let kick = CancellationToken::new();
            let (mailbox, inbox) = Mailbox::with_budget(1024, kick.clone(), &BUDGET);
            while mailbox.queued.bytes.load(Relaxed) + 60_000 + EVENT_OVERHEAD <= MAX_QUEUED_BYTES {
                assert_eq!(mailbox.deliver(big_signal(&frame)), Ok(()));
            }
            slow.push((mailbox, inbox, kick));
        }
        // A third fills up to its backlog, then is refused without being disconnected.
        let kick = CancellationToken::new();
        let (fresh, _fresh_inbox) = Mailbox::with_budget(1024, kick.clone(), &BUDGET);
        let mut refused = 0;
        for _ in 0..4 {
            if fresh.deliver(big_signal(&frame)).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0, "deliveries over the budget are refused");
        assert!(!kick.is_cancelled(), "a short queue is not disconnected");
        assert!(BUDGET.queued() <= 2 * MAX_QUEUED_BYTES);
        // A backed-up owner receiving more is disconnected.
        let (mailbox, _inbox, kick) = &slow[0];
        assert_eq!(mailbox.deliver(big_signal(&frame)), Err(DeliverError::Full));
        assert!(kick.is_cancelled());
    }

    #[test]
    fn delivery_errors_map_to_send_errors() {
        assert_eq!(SendError::from(DeliverError::Gone), SendError::NotOnline);
        assert_eq!(SendError::from(DeliverError::Full), SendError::Full);
    }
}
