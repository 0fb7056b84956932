//! Bringing a call back where the server no longer knows it: after a restart (the
//! resumed session was held from the table of names, without its call) or on another
//! node. The clients know their call and name it at login (`call`); when both sides name
//! each other, the call is back.
//!
//! The side that resumes first enters the call it names and sends its peer an
//! [`Event::Rejoin`]. The peer accepts it when it is in that call too, or when it is
//! itself held from the table (it has not come back to say, and the call is then
//! pending it for its window), and answers with `resumed` (it is connected) or
//! `reconnecting` (it is held); otherwise it answers with `leave` and the call is over.

use tracing::info;

use super::Session;
use super::call::Call;
use super::user::User;
use crate::logging::shown;
use crate::protocol::{self, LeaveReason, Name};
use crate::registry::{Event, SessionId};

impl Session {
    /// Settles the call of a session that resumed one held from the table: `claim` is the
    /// call its client names.
    pub(super) async fn settle_call(&mut self, user: &mut User, claim: Option<Name>) {
        let claim = claim.filter(|c| *c != user.name);
        match (user.call.peer().cloned(), claim) {
            // The peer came back first and named us: the call is already back.
            (Some(peer), Some(claim)) if peer == claim => {
                info!(id = self.id, name = %shown(&user.name), peer = %shown(&peer), "call restored");
                self.push(protocol::resumed_frame(&protocol::json_string(
                    peer.as_str(),
                )));
                let frame = protocol::resumed_frame(&user.json);
                let _ = self
                    .ctx
                    .registry
                    .send(&peer, Event::Notice(frame.into()))
                    .await;
            }
            // The peer named us, our client does not name the peer: it hung up.
            (Some(peer), _) => {
                self.set_call(user, Call::Idle);
                let _ = self
                    .ctx
                    .registry
                    .send(&peer, user.leave_event(LeaveReason::Hangup))
                    .await;
            }
            (None, Some(claim)) => {
                // The peer's session is learnt from its first message.
                self.set_call(user, Call::connected(&claim, SessionId::UNKNOWN));
                let rejoin = Event::Rejoin {
                    from: user.name.clone(),
                    sid: user.sid,
                };
                if self.ctx.registry.send(&claim, rejoin).await.is_err() {
                    self.set_call(user, Call::Idle);
                    self.push(protocol::leave_frame(
                        &protocol::json_string(claim.as_str()),
                        LeaveReason::Disconnected,
                    ));
                }
            }
            (None, None) => {}
        }
    }

    /// `from` resumed as session `sid`, naming us as its call peer. Only a resume (a
    /// token for the name) sends this, so the call follows the name to its new session.
    pub(super) async fn on_rejoin(&mut self, user: &mut User, from: Name, sid: SessionId) {
        let accepted = match user.call.peer() {
            Some(peer) => *peer == from,
            None => self.restored,
        };
        let answer = if !accepted {
            user.leave_event(LeaveReason::Disconnected)
        } else {
            let rejoined = Call::connected(&from, sid);
            if user.call != rejoined {
                self.set_call(user, rejoined);
            }
            info!(id = self.id, name = %shown(&user.name), peer = %shown(&from), held = self.held, "call restored by the peer");
            // A held session's client hears it when it resumes naming the call (or not at
            // all, when it does not: the call is then over).
            let frame = if self.held {
                protocol::reconnecting_frame(&user.json)
            } else {
                self.push(protocol::resumed_frame(&protocol::json_string(
                    from.as_str(),
                )));
                protocol::resumed_frame(&user.json)
            };
            Event::Notice(frame.into())
        };
        let _ = self.ctx.registry.send(&from, answer).await;
    }
}
