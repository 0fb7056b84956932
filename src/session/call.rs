//! The call rules: one user's call state and what each input does to it, as plain
//! functions (data in, decision out). No socket, registry, clock or runtime: the session
//! driver feeds inputs, carries out the decisions (sends, errors, state changes) and owns
//! the timer. The whole table of rules is this file; the tests below run glare, busy,
//! renegotiation and strangers without a server.
//!
//! | input | state | decision |
//! |---|---|---|
//! | we send `offer` to X | idle | enter `Calling X`, send (back to idle if it fails) |
//! | we send `offer` to X | in a call with X | send (renegotiation; glare while ringing) |
//! | we send `offer` to X | in a call with Y | refuse `already-in-call` |
//! | we send `offer` to ourselves | any | refuse `cannot-call-self` |
//! | we send `answer`/`candidate` to X | in a call with X | send; an answer connects |
//! | we send `answer`/`candidate` to X | otherwise | refuse (`not-in-call` or `not-online`) |
//! | we send `leave` to X (or to no one: our peer) | in a call with X | idle, send |
//! | we get `offer` from X | idle | `Ringing X` (for the ring timeout and a grace), deliver, tell X it rings |
//! | we get `offer` from X | in a call with X | deliver (renegotiation, or glare) |
//! | we get `offer` from X | in a call with Y | bounce `busy` to X |
//! | we get `answer` from X | `Calling X` or `Connected X` | `Connected X`, deliver |
//! | we get `answer` from X | `Ringing X`, and we offered X since (glare) | `Connected X`, deliver |
//! | we get `answer` from X | `Ringing X`, we did not offer | bounce `not-in-call` (it answers an offer of ours that is over) |
//! | we get `candidate` from X | in a call with X | deliver |
//! | we get `leave` from X | in a call with X | idle, deliver |
//! | we get `leave` from X | otherwise | drop (that call is already over here) |
//! | we get `leave` from another session of X's name | in a call with X | idle, deliver |
//! | we get anything else from another session of X's name | in a call with X | idle, our client gets `leave` from X (`disconnected`); bounce `busy` (an offer) or `not-in-call` to it |
//! | we get anything else from X | otherwise | bounce `not-in-call` to X |
//! | X refused our `offer` (not `not-in-call`) | `Calling X` | idle |
//! | X answers anything of ours with `not-in-call` (or a renegotiation with `busy`) | in a call with X | idle, our client gets `leave` from X |
//! | the ring deadline passes | `Calling X` or `Ringing X` | idle, tell X and us `no-answer` |
//!
//! A peer is a name and a session ([`SessionId`]): the state keeps the session of the
//! peer once it has been heard from, and "X" in the table above means that session of X.
//! A message under the peer's name from another session means the name has a new holder
//! (the peer logged in again, or someone else claimed the name, for example on another
//! node after Redis lost its data): the session we were in a call with is gone or cut
//! off, so the call ends here, and the newcomer takes nothing of it over (its offer is
//! busy, its answer and candidates are refused). Ending is all a newcomer can do to the
//! call, and it could already: a refusal from the peer's name counts as the peer's (it
//! answers a message we sent to the name, wherever it went), and so does a message whose
//! session is unknown (made by a registry for the name). Staying in the call instead
//! would leave us in it alone for good: the call-rules fuzz target found a caller
//! connected by a stale answer from the peer's old session, whose new session's `leave`
//! was then dropped. A resume brings the call to the peer's new session with
//! [`Event::Rejoin`](crate::registry::Event::Rejoin) (see `rejoin`), which comes before
//! anything else from that session.
//!
//! Without call ids in the protocol, messages that cross can leave the two sides out of
//! step (the call-rules fuzz target found one: a caller's `no-answer` crossing the
//! callee's own offer back left the caller ringing alone). The last two rows bring them
//! back in step: a callee does not ring for ever, and a call the peer says does not exist
//! ends here too.

use std::time::Duration;

use tokio::time::Instant;

/// How much longer than the ring timeout an incoming call rings. The caller's own timer
/// (which started first) normally ends the attempt; the callee's only ends a ring whose
/// caller is no longer calling, so it must not win the race.
pub const RING_GRACE: Duration = Duration::from_secs(5);

use crate::protocol::{ErrorCode, Name, SignalKind};
use crate::registry::SessionId;

/// Who is in a call with whom, from this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Idle,
    /// We sent an offer; it rings until answered or until `deadline`.
    Calling {
        peer: Name,
        /// The peer's session, once heard from (its `ringing`, answer or candidates).
        sid: SessionId,
        deadline: Instant,
    },
    /// We received an offer and have not answered yet; rings until `deadline` (the ring
    /// timeout plus [`RING_GRACE`]).
    Ringing {
        peer: Name,
        /// The session that offered.
        sid: SessionId,
        deadline: Instant,
        /// We sent an offer of our own since (glare: ours crossed theirs), so an answer
        /// from the peer may answer it.
        offered: bool,
    },
    /// Answered.
    Connected {
        peer: Name,
        sid: SessionId,
    },
}

impl Call {
    /// The other side of the call, in any state but idle.
    pub fn peer(&self) -> Option<&Name> {
        match self {
            Call::Idle => None,
            Call::Calling { peer, .. }
            | Call::Ringing { peer, .. }
            | Call::Connected { peer, .. } => Some(peer),
        }
    }

    /// When an unanswered call gives up.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Call::Calling { deadline, .. } | Call::Ringing { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// The peer's session (unknown while idle or not yet heard from).
    pub fn sid(&self) -> SessionId {
        match self {
            Call::Idle => SessionId::UNKNOWN,
            Call::Calling { sid, .. } | Call::Ringing { sid, .. } | Call::Connected { sid, .. } => {
                *sid
            }
        }
    }

    /// Answered, with `peer`'s session `sid`.
    pub fn connected(peer: &Name, sid: SessionId) -> Call {
        Call::Connected {
            peer: peer.clone(),
            sid,
        }
    }

    fn is_with(&self, name: &Name) -> bool {
        self.peer() == Some(name)
    }

    /// Whether a message from `name`'s session `sid` comes from our peer.
    fn is_from(&self, name: &Name, sid: SessionId) -> bool {
        self.is_with(name) && self.sid().admits(sid)
    }

    /// This state with the peer's session learnt as `sid`, if it was not known yet.
    fn learning(&self, new: SessionId) -> Option<Call> {
        let mut call = self.clone();
        match &mut call {
            Call::Calling { sid, .. } | Call::Ringing { sid, .. } | Call::Connected { sid, .. }
                if !sid.is_known() && new.is_known() =>
            {
                *sid = new;
                Some(call)
            }
            _ => None,
        }
    }
}

/// Why a message from our client is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    CannotCallSelf,
    /// An offer to someone while in a call with `peer`.
    AlreadyInCall {
        peer: Name,
    },
    /// A message within a call to someone who is not our peer (the driver asks the
    /// registry whether they are online, to say `not-in-call` or `not-online`).
    NotPaired,
    /// `leave` with no name while not in a call.
    NotInCall,
}

/// How to send a message of our client's: the states to enter around the send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// Entered before sending: a new call is paired first, so that our candidates that
    /// follow the offer are accepted.
    pub before: Option<Call>,
    /// Entered once the message is delivered.
    pub sent: Option<Call>,
    /// Entered if it cannot be delivered.
    pub failed: Option<Call>,
}

impl Send {
    const PLAIN: Send = Send {
        before: None,
        sent: None,
        failed: None,
    };
}

/// Our client sends an `offer`, `answer` or `candidate` to `to`.
pub fn outgoing(
    call: &Call,
    me: &Name,
    kind: SignalKind,
    to: &Name,
    now: Instant,
    ring_timeout: Duration,
) -> Result<Send, Refusal> {
    match (kind, call.peer()) {
        (SignalKind::Offer, _) if to == me => Err(Refusal::CannotCallSelf),
        // A new offer within the pair: renegotiation, or glare while it rings here.
        (SignalKind::Offer, Some(peer)) if peer == to => Ok(match call {
            Call::Ringing {
                peer,
                sid,
                deadline,
                offered: false,
            } => Send {
                before: Some(Call::Ringing {
                    peer: peer.clone(),
                    sid: *sid,
                    deadline: *deadline,
                    offered: true,
                }),
                ..Send::PLAIN
            },
            _ => Send::PLAIN,
        }),
        (SignalKind::Offer, Some(peer)) => Err(Refusal::AlreadyInCall { peer: peer.clone() }),
        (SignalKind::Offer, None) => Ok(Send {
            before: Some(Call::Calling {
                peer: to.clone(),
                sid: SessionId::UNKNOWN,
                deadline: now + ring_timeout,
            }),
            sent: None,
            failed: Some(Call::Idle),
        }),
        (_, Some(peer)) if peer == to => Ok(Send {
            // Answering settles the call from either state: `Ringing` (we were called) or
            // `Calling` (glare: both offered, and we answer the peer's offer).
            sent: (kind == SignalKind::Answer
                && matches!(call, Call::Ringing { .. } | Call::Calling { .. }))
            .then(|| Call::connected(to, call.sid())),
            ..Send::PLAIN
        }),
        _ => Err(Refusal::NotPaired),
    }
}

/// Our client hangs up: the user to tell (`to`, or our peer when no name was given).
/// The state after is always idle.
pub fn leave<'a>(call: &'a Call, to: Option<&'a Name>) -> Result<&'a Name, Refusal> {
    match (to, call.peer()) {
        (Some(to), Some(peer)) if to == peer => Ok(to),
        (Some(_), _) => Err(Refusal::NotPaired),
        (None, Some(peer)) => Ok(peer),
        (None, None) => Err(Refusal::NotInCall),
    }
}

/// What to do with a signaling message that arrived for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Forward it to our client, after entering `next` if given. `ring_back`: tell the
    /// sender it rings here.
    Deliver { next: Option<Call>, ring_back: bool },
    /// Refuse it: the sender is told `code`.
    Bounce(ErrorCode),
    /// Neither forward nor refuse (a hang-up of a call that is already over here).
    Drop,
    /// The message comes from another session of our peer's name: our call is over
    /// (idle; our client is told `leave` from the peer, `disconnected`), and the message
    /// is refused to its sender with this code.
    PeerReplaced(ErrorCode),
}

/// A signaling message of `kind` from `from`'s session `sid` arrived at `now`.
pub fn incoming(
    call: &Call,
    kind: SignalKind,
    from: &Name,
    sid: SessionId,
    now: Instant,
    ring_timeout: Duration,
) -> Incoming {
    let deliver = |next: Option<Call>| Incoming::Deliver {
        next,
        ring_back: false,
    };
    let from_peer = call.is_from(from, sid);
    let replaced = call.is_with(from) && !from_peer;
    match kind {
        SignalKind::Offer if *call == Call::Idle => Incoming::Deliver {
            next: Some(Call::Ringing {
                peer: from.clone(),
                sid,
                deadline: now + ring_timeout + RING_GRACE,
                offered: false,
            }),
            ring_back: true,
        },
        SignalKind::Leave if replaced => deliver(Some(Call::Idle)),
        SignalKind::Offer if replaced => Incoming::PeerReplaced(ErrorCode::Busy),
        _ if replaced => Incoming::PeerReplaced(ErrorCode::NotInCall),
        SignalKind::Offer if !from_peer => Incoming::Bounce(ErrorCode::Busy),
        // Ringing, and we have not offered in this call: the answer is to an earlier offer
        // of ours whose attempt ended (timed out or hung up) while the answer was on its way.
        SignalKind::Answer if matches!(call, Call::Ringing { offered: false, .. }) => {
            Incoming::Bounce(ErrorCode::NotInCall)
        }
        SignalKind::Answer if from_peer => {
            deliver(Some(Call::connected(from, known(sid, call.sid()))))
        }
        SignalKind::Leave if from_peer => deliver(Some(Call::Idle)),
        SignalKind::Leave => Incoming::Drop,
        _ if !from_peer => Incoming::Bounce(ErrorCode::NotInCall),
        _ => deliver(call.learning(sid)),
    }
}

/// `new` if known, else `old`.
fn known(new: SessionId, old: SessionId) -> SessionId {
    if new.is_known() { new } else { old }
}

/// What a refusal from the peer does to our call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounced {
    Unchanged,
    /// Our offer was refused: the attempt is over (the error tells our client why).
    AttemptOver,
    /// The peer has no call with us: ours ends too, as if they had hung up. Messages
    /// between two users stay in order, so a `leave` of theirs would have arrived before
    /// this refusal; none did, so the two sides were out of step.
    CallOver,
}

/// `from` refused our `request` with `code`. A refused offer ends our attempt to call
/// them; `not-in-call` or `busy` from the peer of an answered or ringing call ends it.
pub fn bounced(call: &Call, from: &Name, request: SignalKind, code: ErrorCode) -> Bounced {
    if !call.is_with(from) {
        return Bounced::Unchanged;
    }
    let calling = matches!(call, Call::Calling { .. });
    match code {
        ErrorCode::Busy if calling => Bounced::AttemptOver,
        ErrorCode::NotInCall | ErrorCode::Busy => Bounced::CallOver,
        _ if calling && request == SignalKind::Offer => Bounced::AttemptOver,
        _ => Bounced::Unchanged,
    }
}

/// The ring deadline check at `now`: the peer to tell `no-answer`, if the unanswered call
/// is over. The state after is idle.
pub fn ring_timed_out(call: &Call, now: Instant) -> Option<&Name> {
    match call {
        Call::Calling { peer, deadline, .. } | Call::Ringing { peer, deadline, .. }
            if now >= *deadline =>
        {
            Some(peer)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: Duration = Duration::from_secs(30);

    /// One instant for the whole test, so deadlines compare equal.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    /// The state of a callee that got `from`'s offer at `t0`.
    fn ringing(from: &str) -> Call {
        Call::Ringing {
            peer: n(from),
            sid: sid(from),
            deadline: t0() + RING + RING_GRACE,
            offered: false,
        }
    }

    fn inc(call: &Call, kind: SignalKind, from: &Name) -> Incoming {
        incoming(call, kind, from, sid(from.as_str()), t0(), RING)
    }

    /// The session of the user called `name` in these tests.
    fn sid(name: &str) -> SessionId {
        SessionId::from_u64(name.bytes().map(u64::from).sum::<u64>() + 1)
    }

    fn n(s: &str) -> Name {
        Name::parse(s).expect("name")
    }

    /// One side of a call as the server sees it: a name and its state.
    struct Side {
        name: Name,
        call: Call,
    }

    impl Side {
        fn new(name: &str) -> Side {
            Side {
                name: n(name),
                call: Call::Idle,
            }
        }

        /// Our client sends `kind` to `other`; `delivered` says whether it reaches them.
        /// Applies the decision and returns it.
        fn send(
            &mut self,
            kind: SignalKind,
            other: &mut Side,
            now: Instant,
        ) -> Result<(), Refusal> {
            let plan = outgoing(&self.call, &self.name, kind, &other.name, now, RING)?;
            if let Some(call) = plan.before {
                self.call = call;
            }
            match other.receive(kind, &self.name) {
                Incoming::Deliver { .. } | Incoming::Drop => {
                    if let Some(call) = plan.sent {
                        self.call = call;
                    }
                }
                Incoming::Bounce(code) | Incoming::PeerReplaced(code) => {
                    if bounced(&self.call, &other.name, kind, code) != Bounced::Unchanged {
                        self.call = Call::Idle;
                    }
                }
            }
            Ok(())
        }

        fn receive(&mut self, kind: SignalKind, from: &Name) -> Incoming {
            let decision = inc(&self.call, kind, from);
            match &decision {
                Incoming::Deliver {
                    next: Some(call), ..
                } => self.call = call.clone(),
                Incoming::PeerReplaced(_) => self.call = Call::Idle,
                _ => {}
            }
            decision
        }

        fn connected_to(&self, other: &Side) -> bool {
            self.call == Call::connected(&other.name, sid(other.name.as_str()))
        }
    }

    #[test]
    fn a_call_rings_then_connects() {
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = t0();
        a.send(SignalKind::Offer, &mut b, now).expect("offer");
        assert_eq!(a.call.peer(), Some(&b.name));
        assert_eq!(a.call.deadline(), Some(now + RING));
        assert_eq!(b.call, ringing("a"));
        a.send(SignalKind::Candidate, &mut b, now)
            .expect("candidate while ringing");
        b.send(SignalKind::Answer, &mut a, now).expect("answer");
        assert!(a.connected_to(&b) && b.connected_to(&a));
    }

    #[test]
    fn the_offer_asks_the_caller_to_be_told_it_rings() {
        let decision = inc(&Call::Idle, SignalKind::Offer, &n("a"));
        assert_eq!(
            decision,
            Incoming::Deliver {
                next: Some(ringing("a")),
                ring_back: true
            }
        );
    }

    #[test]
    fn glare_settles_into_a_call_whichever_side_answers() {
        for a_answers in [true, false] {
            let (mut a, mut b) = (Side::new("a"), Side::new("b"));
            let now = t0();
            // Both offer before either offer arrives: each side is `Calling` the other,
            // then receives the other's offer, which is delivered (from the peer, whose
            // session each side learns from it).
            let plan_a = outgoing(&a.call, &a.name, SignalKind::Offer, &b.name, now, RING);
            let plan_b = outgoing(&b.call, &b.name, SignalKind::Offer, &a.name, now, RING);
            a.call = plan_a.expect("a offers").before.expect("calling");
            b.call = plan_b.expect("b offers").before.expect("calling");
            let names = [a.name.clone(), b.name.clone()];
            for (me, other) in [(&mut a, &names[1]), (&mut b, &names[0])] {
                let decision = me.receive(SignalKind::Offer, other);
                assert!(
                    matches!(
                        &decision,
                        Incoming::Deliver {
                            next: Some(Call::Calling { sid: s, .. }),
                            ring_back: false
                        } if *s == sid(other.as_str())
                    ),
                    "{decision:?}"
                );
            }
            let (answerer, caller) = if a_answers {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            answerer
                .send(SignalKind::Answer, caller, now)
                .expect("answer");
            assert!(answerer.connected_to(caller) && caller.connected_to(answerer));
        }
    }

    /// Issue 15 finding 4: someone else logged in under the peer's name (another node
    /// claimed it after Redis lost its data) takes nothing of the call over: its offer is
    /// busy, its answer and candidates are refused. The call ends here (the session we
    /// were in a call with is gone or cut off), as it would on the refusal from the name
    /// that our next message to the peer gets; a `leave` from it ends the call too.
    #[test]
    fn another_session_under_the_peers_name_ends_the_call_and_takes_nothing_over() {
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = t0();
        a.send(SignalKind::Offer, &mut b, now).expect("offer");
        b.send(SignalKind::Answer, &mut a, now).expect("answer");
        assert!(a.connected_to(&b));
        let impostor = SessionId::from_u64(999);
        for kind in [SignalKind::Offer, SignalKind::Answer, SignalKind::Candidate] {
            let code = if kind == SignalKind::Offer {
                ErrorCode::Busy
            } else {
                ErrorCode::NotInCall
            };
            assert_eq!(
                incoming(&a.call, kind, &b.name, impostor, now, RING),
                Incoming::PeerReplaced(code),
                "{kind:?}"
            );
        }
        assert_eq!(
            incoming(&a.call, SignalKind::Leave, &b.name, impostor, now, RING),
            Incoming::Deliver {
                next: Some(Call::Idle),
                ring_back: false
            }
        );
        // While ringing, too: the newcomer's answer does not connect.
        assert_eq!(
            incoming(
                &ringing("b"),
                SignalKind::Answer,
                &n("b"),
                impostor,
                now,
                RING
            ),
            Incoming::PeerReplaced(ErrorCode::NotInCall)
        );
        // The real peer's messages, and a registry's (session unknown), are the call's.
        assert!(matches!(
            inc(&a.call, SignalKind::Candidate, &b.name),
            Incoming::Deliver { next: None, .. }
        ));
        assert!(matches!(
            incoming(
                &a.call,
                SignalKind::Leave,
                &b.name,
                SessionId::UNKNOWN,
                now,
                RING
            ),
            Incoming::Deliver {
                next: Some(Call::Idle),
                ..
            }
        ));
        assert_eq!(
            bounced(
                &a.call,
                &b.name,
                SignalKind::Candidate,
                ErrorCode::NotInCall
            ),
            Bounced::CallOver
        );
        // Someone else's offer is plain busy and leaves the call alone.
        assert_eq!(
            incoming(&a.call, SignalKind::Offer, &n("c"), impostor, now, RING),
            Incoming::Bounce(ErrorCode::Busy)
        );
    }

    /// Found by the call-rules fuzz target: a's answer to b's first offer arrives after
    /// b's attempt timed out and b called a again, and teaches b the session a had then;
    /// a logs in again and its new session, rung by b's second offer, times out. Its
    /// `leave` must end b's call, or b stays connected to a session that is gone.
    #[test]
    fn a_stale_answer_from_the_peers_old_session_does_not_leave_us_connected_alone() {
        let (a_old, a_new) = (SessionId::from_u64(1), SessionId::from_u64(4));
        let now = t0();
        let calling = outgoing(&Call::Idle, &n("b"), SignalKind::Offer, &n("a"), now, RING)
            .expect("b calls a again")
            .before
            .expect("calling");
        let Incoming::Deliver {
            next: Some(connected),
            ..
        } = incoming(&calling, SignalKind::Answer, &n("a"), a_old, now, RING)
        else {
            panic!("the stale answer connects: nothing tells it from a fresh one")
        };
        assert_eq!(connected, Call::connected(&n("a"), a_old));
        assert_eq!(
            incoming(&connected, SignalKind::Leave, &n("a"), a_new, now, RING),
            Incoming::Deliver {
                next: Some(Call::Idle),
                ring_back: false
            }
        );
        assert_eq!(
            incoming(&connected, SignalKind::Offer, &n("a"), a_new, now, RING),
            Incoming::PeerReplaced(ErrorCode::Busy)
        );
    }

    #[test]
    fn a_caller_learns_the_callees_session_from_its_first_message() {
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = t0();
        a.send(SignalKind::Offer, &mut b, now).expect("offer");
        assert_eq!(a.call.sid(), SessionId::UNKNOWN);
        let Incoming::Deliver {
            next: Some(next), ..
        } = inc(&a.call, SignalKind::Candidate, &b.name)
        else {
            panic!("the callee's candidate is delivered and teaches its session")
        };
        assert_eq!(next.sid(), sid("b"));
        a.call = next;
        assert_eq!(
            incoming(
                &a.call,
                SignalKind::Answer,
                &b.name,
                SessionId::from_u64(999),
                now,
                RING
            ),
            Incoming::PeerReplaced(ErrorCode::NotInCall)
        );
    }

    #[test]
    fn a_second_caller_gets_busy_and_the_call_goes_on() {
        let (mut a, mut b, mut c) = (Side::new("a"), Side::new("b"), Side::new("c"));
        let now = t0();
        a.send(SignalKind::Offer, &mut b, now).expect("offer");
        b.send(SignalKind::Answer, &mut a, now).expect("answer");
        assert_eq!(
            inc(&b.call, SignalKind::Offer, &c.name),
            Incoming::Bounce(ErrorCode::Busy)
        );
        c.send(SignalKind::Offer, &mut b, now)
            .expect("sent, then bounced");
        assert_eq!(c.call, Call::Idle, "busy ends c's attempt");
        assert!(a.connected_to(&b) && b.connected_to(&a));
        // Ringing is busy too.
        assert_eq!(
            inc(&ringing("a"), SignalKind::Offer, &c.name),
            Incoming::Bounce(ErrorCode::Busy)
        );
    }

    #[test]
    fn renegotiation_within_a_call_keeps_it() {
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = t0();
        a.send(SignalKind::Offer, &mut b, now).expect("offer");
        b.send(SignalKind::Answer, &mut a, now).expect("answer");
        for a_offers in [true, false] {
            let (x, y) = if a_offers {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let plan = outgoing(&x.call, &x.name, SignalKind::Offer, &y.name, now, RING);
            assert_eq!(plan, Ok(Send::PLAIN), "no state change, no new ring");
            x.send(SignalKind::Offer, y, now).expect("offer");
            y.send(SignalKind::Answer, x, now).expect("answer");
            assert!(x.connected_to(y) && y.connected_to(x));
        }
    }

    #[test]
    fn an_offer_to_a_third_user_during_a_call_is_refused() {
        let call = Call::connected(&n("b"), sid("b"));
        let plan = outgoing(&call, &n("a"), SignalKind::Offer, &n("c"), t0(), RING);
        assert_eq!(plan, Err(Refusal::AlreadyInCall { peer: n("b") }));
    }

    #[test]
    fn calling_yourself_is_refused_in_any_state() {
        for call in [Call::Idle, Call::connected(&n("b"), sid("b"))] {
            let plan = outgoing(&call, &n("a"), SignalKind::Offer, &n("a"), t0(), RING);
            assert_eq!(plan, Err(Refusal::CannotCallSelf));
        }
    }

    #[test]
    fn an_answer_from_a_stranger_is_bounced() {
        for call in [
            Call::Idle,
            Call::Calling {
                peer: n("b"),
                sid: SessionId::UNKNOWN,
                deadline: t0(),
            },
            Call::connected(&n("b"), sid("b")),
        ] {
            assert_eq!(
                inc(&call, SignalKind::Answer, &n("mallory")),
                Incoming::Bounce(ErrorCode::NotInCall)
            );
            assert_eq!(
                inc(&call, SignalKind::Candidate, &n("mallory")),
                Incoming::Bounce(ErrorCode::NotInCall)
            );
        }
        // And our own answer or candidate to a stranger is not sent.
        let call = Call::connected(&n("b"), sid("b"));
        for kind in [SignalKind::Answer, SignalKind::Candidate] {
            let plan = outgoing(&call, &n("a"), kind, &n("c"), t0(), RING);
            assert_eq!(plan, Err(Refusal::NotPaired));
        }
    }

    #[test]
    fn candidates_before_the_answer_flow_both_ways() {
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = t0();
        a.send(SignalKind::Offer, &mut b, now).expect("offer");
        // The callee's candidates may overtake its answer; the caller's follow its offer.
        b.send(SignalKind::Candidate, &mut a, now)
            .expect("callee candidate");
        a.send(SignalKind::Candidate, &mut b, now)
            .expect("caller candidate");
        assert!(matches!(a.call, Call::Calling { .. }));
        assert!(matches!(b.call, Call::Ringing { .. }));
        // Before any offer, a candidate has no call to belong to.
        let plan = outgoing(
            &Call::Idle,
            &n("a"),
            SignalKind::Candidate,
            &n("b"),
            now,
            RING,
        );
        assert_eq!(plan, Err(Refusal::NotPaired));
    }

    #[test]
    fn leave_while_ringing_ends_both_sides() {
        for caller_leaves in [true, false] {
            let (mut a, mut b) = (Side::new("a"), Side::new("b"));
            let now = t0();
            a.send(SignalKind::Offer, &mut b, now).expect("offer");
            let (x, y) = if caller_leaves {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            assert_eq!(leave(&x.call, None), Ok(&y.name));
            assert_eq!(leave(&x.call, Some(&y.name)), Ok(&y.name));
            x.call = Call::Idle;
            assert_eq!(
                y.receive(SignalKind::Leave, &x.name),
                Incoming::Deliver {
                    next: Some(Call::Idle),
                    ring_back: false
                }
            );
            assert_eq!(y.call, Call::Idle);
            // A second hang-up from the same side is dropped, not bounced.
            assert_eq!(y.receive(SignalKind::Leave, &x.name), Incoming::Drop);
        }
    }

    #[test]
    fn leave_names_the_peer_or_is_refused() {
        assert_eq!(leave(&Call::Idle, None), Err(Refusal::NotInCall));
        assert_eq!(leave(&Call::Idle, Some(&n("b"))), Err(Refusal::NotPaired));
        let call = Call::connected(&n("b"), sid("b"));
        assert_eq!(leave(&call, Some(&n("c"))), Err(Refusal::NotPaired));
    }

    #[test]
    fn a_ring_ends_exactly_at_its_deadline() {
        let start = t0();
        let call = Call::Calling {
            peer: n("b"),
            sid: SessionId::UNKNOWN,
            deadline: start + RING,
        };
        let just_before = start + RING - Duration::from_millis(1);
        assert_eq!(ring_timed_out(&call, just_before), None);
        assert_eq!(ring_timed_out(&call, start + RING), Some(&n("b")));
        // The callee rings a grace longer, so the caller's own timeout ends it first.
        let callee = ringing("a");
        assert_eq!(callee.deadline(), Some(start + RING + RING_GRACE));
        assert_eq!(ring_timed_out(&callee, start + RING), None);
        assert_eq!(
            ring_timed_out(&callee, start + RING + RING_GRACE),
            Some(&n("a"))
        );
        // An answered call never times out.
        let connected = Call::connected(&n("b"), sid("b"));
        assert_eq!(connected.deadline(), None);
        assert_eq!(ring_timed_out(&connected, start + RING * 10), None);
    }

    #[test]
    fn a_refused_offer_ends_the_attempt() {
        let calling = Call::Calling {
            peer: n("b"),
            sid: SessionId::UNKNOWN,
            deadline: t0(),
        };
        for code in [
            ErrorCode::Busy,
            ErrorCode::NotOnline,
            ErrorCode::DeliveryFailed,
        ] {
            let after = bounced(&calling, &n("b"), SignalKind::Offer, code);
            assert_eq!(after, Bounced::AttemptOver);
        }
        // A bounce from someone else, or of a candidate, leaves the state alone.
        let from_c = bounced(&calling, &n("c"), SignalKind::Offer, ErrorCode::Busy);
        assert_eq!(from_c, Bounced::Unchanged);
        let candidate = bounced(
            &calling,
            &n("b"),
            SignalKind::Candidate,
            ErrorCode::DeliveryFailed,
        );
        assert_eq!(candidate, Bounced::Unchanged);
        let connected = Call::connected(&n("b"), sid("b"));
        let failed = bounced(
            &connected,
            &n("b"),
            SignalKind::Candidate,
            ErrorCode::DeliveryFailed,
        );
        assert_eq!(failed, Bounced::Unchanged);
        // A renegotiation refused as busy: the peer is in another call, not in ours.
        let renegotiation = bounced(&connected, &n("b"), SignalKind::Offer, ErrorCode::Busy);
        assert_eq!(renegotiation, Bounced::CallOver);
    }

    #[test]
    fn not_in_call_from_the_peer_ends_our_side_too() {
        // Found by the call-rules fuzz target: a's `no-answer` crosses b's offer back.
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = t0();
        let plan = outgoing(&a.call, &a.name, SignalKind::Offer, &b.name, now, RING);
        a.call = plan.expect("a offers").before.expect("calling");
        // a's ring times out before its offer arrives; a's leave is in flight.
        assert_eq!(ring_timed_out(&a.call, now + RING), Some(&b.name));
        a.call = Call::Idle;
        // b, still idle, calls a; a's old offer then reaches b (glare), b's offer rings a.
        let plan = outgoing(&b.call, &b.name, SignalKind::Offer, &a.name, now, RING);
        b.call = plan.expect("b offers").before.expect("calling");
        assert!(matches!(
            b.receive(SignalKind::Offer, &a.name),
            Incoming::Deliver { .. }
        ));
        assert!(matches!(
            a.receive(SignalKind::Offer, &b.name),
            Incoming::Deliver { .. }
        ));
        // a's leave ends b's attempt; a rings alone.
        b.receive(SignalKind::Leave, &a.name);
        assert_eq!(b.call, Call::Idle);
        assert!(matches!(a.call, Call::Ringing { .. }));
        // a answers: b has no call with a and says so; that ends a's side too.
        a.send(SignalKind::Answer, &mut b, now).expect("answer");
        assert_eq!(a.call, Call::Idle);
        for call in [ringing("b"), Call::connected(&n("b"), sid("b"))] {
            let after = bounced(&call, &n("b"), SignalKind::Candidate, ErrorCode::NotInCall);
            assert_eq!(after, Bounced::CallOver);
        }
        // Had a not answered, its ring would have ended a grace after the ring timeout.
        assert!(ring_timed_out(&ringing("b"), now + RING + RING_GRACE).is_some());
    }

    #[test]
    fn glare_with_our_offer_after_theirs_arrived_connects() {
        // b's offer rings at a; a's own offer crosses it; b answers a's offer.
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = t0();
        b.send(SignalKind::Offer, &mut a, now).expect("b offers");
        a.send(SignalKind::Offer, &mut b, now)
            .expect("a offers back");
        assert!(matches!(a.call, Call::Ringing { offered: true, .. }));
        b.send(SignalKind::Answer, &mut a, now)
            .expect("b answers a's offer");
        assert!(a.connected_to(&b) && b.connected_to(&a));
    }

    #[test]
    fn an_answer_while_ringing_is_stale() {
        // b rings with a's offer and has not offered: an answer from a answers an earlier
        // offer of b's, whose attempt is over.
        assert_eq!(
            inc(&ringing("a"), SignalKind::Answer, &n("a")),
            Incoming::Bounce(ErrorCode::NotInCall)
        );
    }
}
