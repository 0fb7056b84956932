//! Sequences of inputs against the call rules (`duet::session::call`), three users, with
//! messages in flight delivered in any order the fuzzer picks, but in order between any
//! one sender and receiver (as the registry guarantees).
//!
//! Invariants checked after every step:
//! - nothing is relayed outside a call: an `answer`, `candidate` or renegotiation `offer`
//!   is only sent to and delivered from the call peer;
//! - a user is never in a call with themselves;
//! - a message from a session other than the call peer's (the peer's name was logged in
//!   again: in a cluster, by someone else after Redis lost its data) is never delivered
//!   as part of the call (only its `leave`, which ends the call);
//! - once every message has been delivered and every ring has timed out, the two sides
//!   of a call agree: if A is in a call with B, B is in a call with A (no one is left
//!   connected or ringing alone).
#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use arbitrary::Arbitrary;
use duet::protocol::{ErrorCode, Name, SignalKind};
use duet::registry::SessionId;
use duet::session::call::{self, Bounced, Call, Incoming};
use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;

const USERS: usize = 3;
const RING: Duration = Duration::from_secs(30);

#[derive(Debug, Arbitrary)]
enum Step {
    /// User `from` sends `kind` (0..3: offer, answer, candidate) to user `to`.
    Send { from: u8, to: u8, kind: u8 },
    /// User `who` hangs up (named: to `to`; unnamed: to its peer).
    Leave { who: u8, to: Option<u8> },
    /// User `who`'s ring deadline passes.
    RingTimeout { who: u8 },
    /// The oldest message from `from` to `to` arrives.
    Deliver { from: u8, to: u8 },
    /// User `who`'s session ends (its peer is sent `leave`) and a new session logs in
    /// under the name; what is in flight to the name reaches the new session.
    Relogin { who: u8 },
}

/// What travels between two users.
#[derive(Debug, Clone, Copy)]
enum Wire {
    /// From the sender's session.
    Signal(SignalKind, SessionId),
    Bounce {
        code: ErrorCode,
        request: SignalKind,
    },
}

struct World {
    names: Vec<Name>,
    calls: Vec<Call>,
    /// Each user's session now.
    sids: Vec<SessionId>,
    /// In flight from `i` to `j`, in order: `queues[i][j]`.
    queues: Vec<Vec<VecDeque<Wire>>>,
    now: Instant,
}

impl World {
    fn new() -> World {
        World {
            names: (0..USERS)
                .map(|i| Name::parse(&format!("user{i}")).expect("name"))
                .collect(),
            calls: vec![Call::Idle; USERS],
            sids: (1..=USERS as u64).map(SessionId::from_u64).collect(),
            queues: vec![vec![VecDeque::new(); USERS]; USERS],
            now: Instant::now(),
        }
    }

    fn index(&self, name: &Name) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("known user")
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Send { from, to, kind } => {
                let (from, to) = (usize::from(from) % USERS, usize::from(to) % USERS);
                let kind = [SignalKind::Offer, SignalKind::Answer, SignalKind::Candidate]
                    [usize::from(kind) % 3];
                let plan = call::outgoing(
                    &self.calls[from],
                    &self.names[from],
                    kind,
                    &self.names[to],
                    self.now,
                    RING,
                );
                let Ok(plan) = plan else { return };
                // Only a new offer may go to someone who is not the peer.
                if !(kind == SignalKind::Offer && self.calls[from].peer().is_none()) {
                    assert_eq!(
                        self.calls[from].peer(),
                        Some(&self.names[to]),
                        "relayed outside a call"
                    );
                }
                assert_ne!(from, to, "called themselves");
                if let Some(next) = plan.before {
                    self.calls[from] = next;
                }
                // Delivery to an online user's mailbox succeeds; what the receiver does
                // with it comes later.
                if let Some(next) = plan.sent {
                    self.calls[from] = next;
                }
                self.queues[from][to].push_back(Wire::Signal(kind, self.sids[from]));
            }
            Step::Leave { who, to } => {
                let who = usize::from(who) % USERS;
                let named = to.map(|t| self.names[usize::from(t) % USERS].clone());
                let Ok(target) = call::leave(&self.calls[who], named.as_ref()) else {
                    return;
                };
                let target = self.index(target);
                self.calls[who] = Call::Idle;
                self.queues[who][target].push_back(Wire::Signal(SignalKind::Leave, self.sids[who]));
            }
            Step::Relogin { who } => {
                let who = usize::from(who) % USERS;
                if let Some(peer) = self.calls[who].peer() {
                    let peer = self.index(peer);
                    self.queues[who][peer]
                        .push_back(Wire::Signal(SignalKind::Leave, self.sids[who]));
                }
                self.calls[who] = Call::Idle;
                let next = self.sids.iter().map(|s| s.as_u64()).max().unwrap_or(0) + 1;
                self.sids[who] = SessionId::from_u64(next);
            }
            Step::RingTimeout { who } => {
                self.time_out(usize::from(who) % USERS);
            }
            Step::Deliver { from, to } => {
                let (from, to) = (usize::from(from) % USERS, usize::from(to) % USERS);
                if let Some(wire) = self.queues[from][to].pop_front() {
                    self.deliver(from, to, wire);
                }
            }
        }
        self.check();
    }

    fn deliver(&mut self, from: usize, to: usize, wire: Wire) {
        let from_name = self.names[from].clone();
        match wire {
            Wire::Signal(kind, sid) => {
                match call::incoming(&self.calls[to], kind, &from_name, sid, self.now, RING) {
                    Incoming::Deliver { next, .. } => {
                        if kind != SignalKind::Offer || self.calls[to] != Call::Idle {
                            assert_eq!(
                                self.calls[to].peer(),
                                Some(&from_name),
                                "delivered outside a call"
                            );
                            let peer_sid = self.calls[to].sid();
                            assert!(
                                kind == SignalKind::Leave
                                    || !peer_sid.is_known()
                                    || peer_sid == sid,
                                "delivered from another session of the peer's name"
                            );
                        }
                        if let Some(next) = next {
                            self.calls[to] = next;
                        }
                    }
                    Incoming::Bounce(code) => {
                        self.queues[to][from].push_back(Wire::Bounce {
                            code,
                            request: kind,
                        });
                    }
                    Incoming::Drop => {
                        assert_eq!(kind, SignalKind::Leave, "only a leave is dropped")
                    }
                    Incoming::PeerReplaced(code) => {
                        assert!(
                            self.calls[to].peer() == Some(&from_name)
                                && self.calls[to].sid() != sid,
                            "a call ended by a message that was not from a new session of the peer"
                        );
                        self.calls[to] = Call::Idle;
                        self.queues[to][from].push_back(Wire::Bounce {
                            code,
                            request: kind,
                        });
                    }
                }
            }
            Wire::Bounce { code, request } => {
                if call::bounced(&self.calls[to], &from_name, request, code) != Bounced::Unchanged {
                    self.calls[to] = Call::Idle;
                }
            }
        }
    }

    /// `who`'s ring deadline passes: the unanswered call ends, the peer is told.
    fn time_out(&mut self, who: usize) -> bool {
        let Some(deadline) = self.calls[who].deadline() else {
            return false;
        };
        let Some(peer) = call::ring_timed_out(&self.calls[who], deadline) else {
            panic!("a call with a deadline did not time out at it");
        };
        let peer = self.index(peer);
        self.calls[who] = Call::Idle;
        self.queues[who][peer].push_back(Wire::Signal(SignalKind::Leave, self.sids[who]));
        true
    }

    fn check(&self) {
        for (i, call) in self.calls.iter().enumerate() {
            assert_ne!(
                call.peer(),
                Some(&self.names[i]),
                "in a call with themselves"
            );
        }
    }

    fn quiet(&self) -> bool {
        self.queues.iter().flatten().all(VecDeque::is_empty)
    }

    /// Delivers everything still in flight, oldest queue first, until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if self.quiet() {
                return;
            }
            for from in 0..USERS {
                for to in 0..USERS {
                    if let Some(wire) = self.queues[from][to].pop_front() {
                        self.deliver(from, to, wire);
                    }
                }
            }
        }
        panic!("messages kept bouncing without end");
    }

    /// Once everything is delivered, the two sides of every call agree.
    fn check_settled(&self) {
        for (i, call) in self.calls.iter().enumerate() {
            if let Some(peer) = call.peer() {
                let j = self.index(peer);
                assert_eq!(
                    self.calls[j].peer(),
                    Some(&self.names[i]),
                    "{} is {:?} but {} is {:?}",
                    self.names[i],
                    call,
                    self.names[j],
                    self.calls[j]
                );
            }
        }
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let mut world = World::new();
    for step in steps.into_iter().take(256) {
        world.step(step);
    }
    // Deliver everything, let every ring time out, until nothing changes.
    loop {
        world.settle();
        let timed_out = (0..USERS)
            .map(|who| world.time_out(who))
            .fold(false, |a, b| a | b);
        if !timed_out {
            break;
        }
    }
    world.check_settled();
});
