//! The call rules: one user's call state and what each input does to it, as plain
//! functions (data in, decision out). No socket, registry, clock or runtime: the session
//! driver feeds inputs, carries out the decisions (sends, errors, state changes) and owns
//! the timer. The whole table of rules is this file; the tests below run glare, busy,
//! renegotiation and strangers without a server.
//!
//! | input | state | decision |
//! |---|---|---|
//! | we send `offer` to X | idle | enter `Calling X`, send (back to idle if it fails) |
//! | we send `offer` to X | in a call with X | send (renegotiation) |
//! | we send `offer` to X | in a call with Y | refuse `already-in-call` |
//! | we send `offer` to ourselves | any | refuse `cannot-call-self` |
//! | we send `answer`/`candidate` to X | in a call with X | send; an answer connects |
//! | we send `answer`/`candidate` to X | otherwise | refuse (`not-in-call` or `not-online`) |
//! | we send `leave` to X (or to no one: our peer) | in a call with X | idle, send |
//! | we get `offer` from X | idle | `Ringing X`, deliver, tell X it rings |
//! | we get `offer` from X | in a call with X | deliver (renegotiation, or glare) |
//! | we get `offer` from X | in a call with Y | bounce `busy` to X |
//! | we get `answer` from X | in a call with X | `Connected X`, deliver |
//! | we get `candidate` from X | in a call with X | deliver |
//! | we get `leave` from X | in a call with X | idle, deliver |
//! | we get `leave` from X | otherwise | drop (that call is already over here) |
//! | we get anything else from X | otherwise | bounce `not-in-call` to X |
//! | X refused our `offer` (not `not-in-call`) | `Calling X` | idle |
//! | the ring deadline passes | `Calling X` | idle, tell X and us `no-answer` |

use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::{ErrorCode, Name, SignalKind};

/// Who is in a call with whom, from this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Idle,
    /// We sent an offer; it rings until answered or until `deadline`.
    Calling {
        peer: Name,
        deadline: Instant,
    },
    /// We received an offer and have not answered yet.
    Ringing {
        peer: Name,
    },
    /// Answered.
    Connected {
        peer: Name,
    },
}

impl Call {
    /// The other side of the call, in any state but idle.
    pub fn peer(&self) -> Option<&Name> {
        match self {
            Call::Idle => None,
            Call::Calling { peer, .. } | Call::Ringing { peer } | Call::Connected { peer } => {
                Some(peer)
            }
        }
    }

    /// When an unanswered outgoing call gives up.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Call::Calling { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    fn is_with(&self, name: &Name) -> bool {
        self.peer() == Some(name)
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
        // A new offer within the pair: renegotiation.
        (SignalKind::Offer, Some(peer)) if peer == to => Ok(Send::PLAIN),
        (SignalKind::Offer, Some(peer)) => Err(Refusal::AlreadyInCall { peer: peer.clone() }),
        (SignalKind::Offer, None) => Ok(Send {
            before: Some(Call::Calling {
                peer: to.clone(),
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
            .then(|| Call::Connected { peer: to.clone() }),
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
}

/// A signaling message of `kind` from `from` arrived.
pub fn incoming(call: &Call, kind: SignalKind, from: &Name) -> Incoming {
    let deliver = |next: Option<Call>| Incoming::Deliver {
        next,
        ring_back: false,
    };
    let from_peer = call.is_with(from);
    match kind {
        SignalKind::Offer if *call == Call::Idle => Incoming::Deliver {
            next: Some(Call::Ringing { peer: from.clone() }),
            ring_back: true,
        },
        SignalKind::Offer if !from_peer => Incoming::Bounce(ErrorCode::Busy),
        SignalKind::Answer if from_peer => deliver(Some(Call::Connected { peer: from.clone() })),
        SignalKind::Leave if from_peer => deliver(Some(Call::Idle)),
        SignalKind::Leave => Incoming::Drop,
        _ if !from_peer => Incoming::Bounce(ErrorCode::NotInCall),
        _ => deliver(None),
    }
}

/// `from` refused our `request` with `code`: the state to enter, if it changes. A refused
/// offer ends our attempt to call them, except `not-in-call` (a renegotiation offer that
/// crossed their hang-up: their `leave` ends the call).
pub fn bounced(call: &Call, from: &Name, request: SignalKind, code: ErrorCode) -> Option<Call> {
    let ends_attempt = request == SignalKind::Offer
        && code != ErrorCode::NotInCall
        && matches!(call, Call::Calling { peer, .. } if peer == from);
    ends_attempt.then_some(Call::Idle)
}

/// The ring deadline check at `now`: the callee to tell `no-answer`, if our attempt is
/// over. The state after is idle.
pub fn ring_timed_out(call: &Call, now: Instant) -> Option<&Name> {
    match call {
        Call::Calling { peer, deadline } if now >= *deadline => Some(peer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: Duration = Duration::from_secs(30);

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
                Incoming::Bounce(code) => {
                    if let Some(call) = bounced(&self.call, &other.name, kind, code) {
                        self.call = call;
                    }
                }
            }
            Ok(())
        }

        fn receive(&mut self, kind: SignalKind, from: &Name) -> Incoming {
            let decision = incoming(&self.call, kind, from);
            if let Incoming::Deliver {
                next: Some(call), ..
            } = &decision
            {
                self.call = call.clone();
            }
            decision
        }

        fn connected_to(&self, other: &Side) -> bool {
            self.call
                == Call::Connected {
                    peer: other.name.clone(),
                }
        }
    }

    #[test]
    fn a_call_rings_then_connects() {
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = Instant::now();
        a.send(SignalKind::Offer, &mut b, now).expect("offer");
        assert_eq!(a.call.peer(), Some(&b.name));
        assert_eq!(a.call.deadline(), Some(now + RING));
        assert_eq!(
            b.call,
            Call::Ringing {
                peer: a.name.clone()
            }
        );
        a.send(SignalKind::Candidate, &mut b, now)
            .expect("candidate while ringing");
        b.send(SignalKind::Answer, &mut a, now).expect("answer");
        assert!(a.connected_to(&b) && b.connected_to(&a));
    }

    #[test]
    fn the_offer_asks_the_caller_to_be_told_it_rings() {
        let decision = incoming(&Call::Idle, SignalKind::Offer, &n("a"));
        assert_eq!(
            decision,
            Incoming::Deliver {
                next: Some(Call::Ringing { peer: n("a") }),
                ring_back: true
            }
        );
    }

    #[test]
    fn glare_settles_into_a_call_whichever_side_answers() {
        for a_answers in [true, false] {
            let (mut a, mut b) = (Side::new("a"), Side::new("b"));
            let now = Instant::now();
            // Both offer before either offer arrives: each side is `Calling` the other,
            // then receives the other's offer, which is delivered (from the peer).
            let plan_a = outgoing(&a.call, &a.name, SignalKind::Offer, &b.name, now, RING);
            let plan_b = outgoing(&b.call, &b.name, SignalKind::Offer, &a.name, now, RING);
            a.call = plan_a.expect("a offers").before.expect("calling");
            b.call = plan_b.expect("b offers").before.expect("calling");
            assert!(matches!(
                a.receive(SignalKind::Offer, &b.name),
                Incoming::Deliver {
                    next: None,
                    ring_back: false
                }
            ));
            assert!(matches!(
                b.receive(SignalKind::Offer, &a.name),
                Incoming::Deliver {
                    next: None,
                    ring_back: false
                }
            ));
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

    #[test]
    fn a_second_caller_gets_busy_and_the_call_goes_on() {
        let (mut a, mut b, mut c) = (Side::new("a"), Side::new("b"), Side::new("c"));
        let now = Instant::now();
        a.send(SignalKind::Offer, &mut b, now).expect("offer");
        b.send(SignalKind::Answer, &mut a, now).expect("answer");
        assert_eq!(
            incoming(&b.call, SignalKind::Offer, &c.name),
            Incoming::Bounce(ErrorCode::Busy)
        );
        c.send(SignalKind::Offer, &mut b, now)
            .expect("sent, then bounced");
        assert_eq!(c.call, Call::Idle, "busy ends c's attempt");
        assert!(a.connected_to(&b) && b.connected_to(&a));
        // Ringing is busy too.
        let ringing = Call::Ringing {
            peer: a.name.clone(),
        };
        assert_eq!(
            incoming(&ringing, SignalKind::Offer, &c.name),
            Incoming::Bounce(ErrorCode::Busy)
        );
    }

    #[test]
    fn renegotiation_within_a_call_keeps_it() {
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = Instant::now();
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
        let call = Call::Connected { peer: n("b") };
        let plan = outgoing(
            &call,
            &n("a"),
            SignalKind::Offer,
            &n("c"),
            Instant::now(),
            RING,
        );
        assert_eq!(plan, Err(Refusal::AlreadyInCall { peer: n("b") }));
    }

    #[test]
    fn calling_yourself_is_refused_in_any_state() {
        for call in [Call::Idle, Call::Connected { peer: n("b") }] {
            let plan = outgoing(
                &call,
                &n("a"),
                SignalKind::Offer,
                &n("a"),
                Instant::now(),
                RING,
            );
            assert_eq!(plan, Err(Refusal::CannotCallSelf));
        }
    }

    #[test]
    fn an_answer_from_a_stranger_is_bounced() {
        for call in [
            Call::Idle,
            Call::Calling {
                peer: n("b"),
                deadline: Instant::now(),
            },
            Call::Connected { peer: n("b") },
        ] {
            assert_eq!(
                incoming(&call, SignalKind::Answer, &n("mallory")),
                Incoming::Bounce(ErrorCode::NotInCall)
            );
            assert_eq!(
                incoming(&call, SignalKind::Candidate, &n("mallory")),
                Incoming::Bounce(ErrorCode::NotInCall)
            );
        }
        // And our own answer or candidate to a stranger is not sent.
        let call = Call::Connected { peer: n("b") };
        for kind in [SignalKind::Answer, SignalKind::Candidate] {
            let plan = outgoing(&call, &n("a"), kind, &n("c"), Instant::now(), RING);
            assert_eq!(plan, Err(Refusal::NotPaired));
        }
    }

    #[test]
    fn candidates_before_the_answer_flow_both_ways() {
        let (mut a, mut b) = (Side::new("a"), Side::new("b"));
        let now = Instant::now();
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
            let now = Instant::now();
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
        let call = Call::Connected { peer: n("b") };
        assert_eq!(leave(&call, Some(&n("c"))), Err(Refusal::NotPaired));
    }

    #[test]
    fn a_ring_ends_exactly_at_its_deadline() {
        let start = Instant::now();
        let call = Call::Calling {
            peer: n("b"),
            deadline: start + RING,
        };
        assert_eq!(
            ring_timed_out(&call, start + RING - Duration::from_millis(1)),
            None
        );
        assert_eq!(ring_timed_out(&call, start + RING), Some(&n("b")));
        // Only an outgoing call times out.
        for call in [
            Call::Ringing { peer: n("b") },
            Call::Connected { peer: n("b") },
        ] {
            assert_eq!(ring_timed_out(&call, start + RING * 10), None);
        }
    }

    #[test]
    fn a_refused_offer_ends_the_attempt_but_not_in_call_does_not() {
        let calling = Call::Calling {
            peer: n("b"),
            deadline: Instant::now(),
        };
        for code in [
            ErrorCode::Busy,
            ErrorCode::NotOnline,
            ErrorCode::DeliveryFailed,
        ] {
            assert_eq!(
                bounced(&calling, &n("b"), SignalKind::Offer, code),
                Some(Call::Idle)
            );
        }
        assert_eq!(
            bounced(&calling, &n("b"), SignalKind::Offer, ErrorCode::NotInCall),
            None
        );
        // A bounce from someone else, or of a candidate, leaves the state alone.
        assert_eq!(
            bounced(&calling, &n("c"), SignalKind::Offer, ErrorCode::Busy),
            None
        );
        assert_eq!(
            bounced(
                &calling,
                &n("b"),
                SignalKind::Candidate,
                ErrorCode::DeliveryFailed
            ),
            None
        );
        let connected = Call::Connected { peer: n("b") };
        assert_eq!(
            bounced(&connected, &n("b"), SignalKind::Offer, ErrorCode::Busy),
            None
        );
    }
}
