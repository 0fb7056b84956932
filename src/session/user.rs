//! What a session does with its client's messages and its inbox's events: login, relaying,
//! hang-up, the ring timeout. The decisions come from [`call`](super::call); this file
//! carries them out (registry sends, frames and errors for the client, state changes).
//!
//! Handlers that need a name take the [`User`]: they cannot run before login.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::ws::Message;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Session;
use super::call::{self, Bounced, Call, Incoming, Refusal};
use super::resume::{Handover, Take, TokenError};
use crate::logging::shown;
use crate::protocol::{
    self, ErrorCode, LeaveReason, Name, NameError, Request, ResumeReply, SignalKind, Target,
};
use crate::registry::{ClaimError, Event, Inbox, Mailbox, SendError, SessionId, TakeOver};

/// Events taken from the inbox in one go before the socket is flushed: batches writes under
/// load without letting one busy sender starve the client's own frames for long.
const INBOX_BATCH: usize = 256;
/// ... and at most about this many bytes of them.
const INBOX_BATCH_BYTES: usize = 256 << 10;

/// A logged-in session's identity and call.
pub(super) struct User {
    pub(super) name: Name,
    /// `name` encoded once as a JSON string, spliced into every frame we send to peers.
    pub(super) json: String,
    pub(super) mailbox: Mailbox,
    /// The receiving end of `mailbox`.
    pub(super) inbox: Inbox,
    /// This login's session id, on every event we send (see [`SessionId`]).
    pub(super) sid: SessionId,
    pub(super) call: Call,
}

impl User {
    /// The `leave` frame that tells a peer we hung up for `reason`.
    pub(super) fn leave_event(&self, reason: LeaveReason) -> Event {
        Event::Signal {
            from: self.name.clone(),
            sid: self.sid,
            kind: SignalKind::Leave,
            reason: Some(reason),
            frame: protocol::leave_frame(&self.json, reason).into(),
        }
    }
}

impl Session {
    pub(super) async fn on_text(&mut self, text: &str, now: Instant) {
        if !self.rate_ok(now) {
            return;
        }
        let request = match protocol::parse(text) {
            Ok(request) => request,
            Err(e) => {
                self.error(e.code, &e.message, e.request.as_deref(), None);
                return;
            }
        };
        if let Request::Login { presence_batch, .. } = request {
            self.presence_batch = presence_batch;
        }
        let Some(mut user) = self.user.take() else {
            match request {
                // A token's connection has its name: a login retries it.
                Request::Login { .. } if self.identity.is_some() => self.login_identity().await,
                Request::Login {
                    name,
                    token,
                    resume,
                    call,
                    ..
                } => self.login(name, token.as_deref(), resume, call).await,
                Request::Relay { kind, .. } => self.not_logged_in(kind),
                Request::Leave { .. } => self.not_logged_in(SignalKind::Leave),
            }
            return;
        };
        match request {
            // A token's connection logged in at once; its login gets the same reply.
            Request::Login { .. } if self.identity.is_some() => {
                self.login_reply(&user.name, ResumeReply::default()).await;
            }
            Request::Login { .. } => {
                let message = format!(
                    "You are already logged in as \"{}\"; a connection has one name. \
                     Open another connection to use another name.",
                    user.name
                );
                self.error(ErrorCode::AlreadyLoggedIn, &message, Some("login"), None);
            }
            Request::Relay { kind, to, payload } => {
                self.relay(&mut user, kind, to, payload).await;
            }
            Request::Leave { to, reason } => self.leave(&mut user, to, reason).await,
        }
        self.user = Some(user);
    }

    fn not_logged_in(&mut self, kind: SignalKind) {
        self.error(
            ErrorCode::NotLoggedIn,
            "Log in first: send {\"type\":\"login\",\"name\":...}.",
            Some(kind.as_str()),
            None,
        );
    }

    /// Logs in under the name a token gave (see [`Session::identity`]).
    pub(super) async fn login_identity(&mut self) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        info!(id = self.id, sub = %shown(&identity.sub), "signed in by token");
        self.login(Name::parse(&identity.name), None, false, None)
            .await;
    }

    async fn login(
        &mut self,
        name: Result<Name, NameError>,
        token: Option<&str>,
        resume: bool,
        call: Option<Name>,
    ) {
        let name = match name {
            Ok(name) => name,
            Err(e) => {
                self.login_failed(ErrorCode::InvalidName, &e.to_string());
                return;
            }
        };
        if self.ctx.config.limits_on() && !self.ctx.logins.allow(self.ip) {
            info!(id = self.id, addr = %shown(self.ip), "login refused: too many logins from this address");
            self.login_failed(
                ErrorCode::RateLimited,
                "Too many sign-ins from your network in a short time; try again in a few seconds.",
            );
            return;
        }
        let window = self.ctx.config.resume_window;
        // With resume off, a token and `resume` are ignored: today's login, exactly.
        let resumable = !window.is_zero() && (resume || token.is_some());
        let (mailbox, inbox) = Mailbox::new(self.ctx.config.queue_capacity, self.kick.clone());
        if let Some(token) = token.filter(|_| resumable) {
            self.ctx.metrics.resume_attempts.fetch_add(1, Relaxed);
            let refused = match self.ctx.resume.take(&name, token, &mailbox) {
                Take::NotHeld => None,
                Take::Refused(why) => Some(why),
                Take::Taking(answer) => {
                    // An owner that cannot hand over (its name was no longer its own)
                    // drops the answer: then this is a normal login.
                    if let Ok(handover) = answer.await {
                        self.resumed(name, mailbox, inbox, handover, call).await;
                        return;
                    }
                    None
                }
            };
            // Not held here: in a cluster, perhaps on another node (or one that died).
            let refused = match refused {
                Some(why) => Some(why),
                None => match self.resume_elsewhere(&name, token, &mailbox).await {
                    Ok(Some(id)) => {
                        let handover = Handover {
                            call: Call::Idle,
                            sid: SessionId::random(),
                            turn: Vec::new(),
                            frames: Vec::new(),
                            restored: true,
                        };
                        self.resumed_with(name, mailbox, inbox, handover, call, Some(id))
                            .await;
                        return;
                    }
                    Ok(None) => None,
                    Err(why) => Some(why),
                },
            };
            if let Some(why) = refused {
                self.resume_refused(&name, why);
                return;
            }
        }
        match self.ctx.registry.claim(&name, &mailbox).await {
            Ok(()) => {}
            // Held on another node for a token this one is not (one that takes nothing
            // over there): refused as a held name here refuses it.
            Err(ClaimError::Reserved) if resumable && token.is_some() => {
                let why = token
                    .and_then(|t| self.ctx.resume.verify(&name, t).err())
                    .unwrap_or(TokenError::Stale);
                self.resume_refused(&name, why);
                return;
            }
            Err(e @ (ClaimError::Taken | ClaimError::Reserved)) => {
                let message = if e == ClaimError::Reserved || self.ctx.resume.is_held(&name) {
                    format!(
                        "The name \"{name}\" is reserved for up to {} for its connection to \
                         reconnect; choose another or try again later.",
                        humantime::format_duration(window)
                    )
                } else {
                    format!(
                        "The name \"{name}\" is taken: it is, or looks like, another online \
                         user's name (names that differ only in case or in look-alike letters \
                         count as one); choose another."
                    )
                };
                self.login_failed(ErrorCode::NameTaken, &message);
                return;
            }
            Err(ClaimError::Unavailable(reason)) => {
                warn!(id = self.id, name = %shown(&name), %reason, "login refused: registry unavailable");
                self.login_failed(
                    ErrorCode::Unavailable,
                    "The server cannot check names right now; try again in a few seconds.",
                );
                return;
            }
        }
        // A token that found nothing held: a normal login, and the client is told so.
        let resumed = (resumable && token.is_some()).then_some(false);
        let token = match resumable {
            true => Some(self.take_seat(&name, None).await),
            false => None,
        };
        let reply = ResumeReply {
            token: token.as_deref(),
            resumed,
        };
        self.login_reply(&name, reply).await;
        self.ctx.registry.announce(&name, true).await;
        info!(id = self.id, name = %shown(&name), "logged in");
        self.user = Some(User {
            json: protocol::json_string(name.as_str()),
            name,
            mailbox,
            inbox,
            sid: SessionId::random(),
            call: Call::Idle,
        });
    }

    fn resume_refused(&mut self, name: &Name, why: TokenError) {
        self.ctx.metrics.resumes_refused.fetch_add(1, Relaxed);
        info!(id = self.id, name = %shown(name), %why, "resume refused");
        let message = format!(
            "The resume token cannot take back \"{name}\": {why}. The name stays reserved \
             for its own connection to reconnect for up to {}; log in without a token \
             under another name, or try again later.",
            humantime::format_duration(self.ctx.config.resume_window)
        );
        self.login_failed(ErrorCode::InvalidToken, &message);
    }

    /// Takes a seat for `name` (now ours) and returns its token. `id`: the token id the
    /// cluster already has for it (a resume taken over from another node); otherwise a
    /// new one, recorded in the cluster.
    async fn take_seat(&mut self, name: &Name, id: Option<[u8; 16]>) -> String {
        let (token, seat) = match id {
            Some(id) => self.ctx.resume.seat_with(name, id),
            None => self.ctx.resume.seat(name),
        };
        if id.is_none() {
            self.ctx.registry.set_resumable(name, &seat.id).await;
        }
        self.seat = Some(seat);
        token
    }

    /// A resume that found nothing held here: takes the name over from the node that
    /// holds it (or held it, and died). `Ok(Some(id))`: taken, with `id` as the new
    /// token's; `Ok(None)`: held nowhere, a normal login; `Err`: held for another token.
    async fn resume_elsewhere(
        &mut self,
        name: &Name,
        token: &str,
        mailbox: &Mailbox,
    ) -> Result<Option<[u8; 16]>, TokenError> {
        if !self.ctx.registry.is_cluster() {
            return Ok(None);
        }
        // A token that is not good for this name anyway is a normal login, as on one node.
        let Ok(old) = self.ctx.resume.verify(name, token) else {
            return Ok(None);
        };
        let new: [u8; 16] = rand::random();
        match self.ctx.registry.take_over(name, &old, &new, mailbox).await {
            Ok(TakeOver::TookOver) => Ok(Some(new)),
            Ok(TakeOver::Stale) => Err(TokenError::Stale),
            Ok(TakeOver::NotHeld) => Ok(None),
            // The normal claim that follows says what is wrong.
            Err(_) => Ok(None),
        }
    }

    async fn login_reply(&mut self, name: &Name, resume: ResumeReply<'_>) {
        let roster = self.ctx.registry.roster(name).await;
        // A token's TURN credentials end with the token.
        let until = self.identity.as_ref().map(|identity| identity.expires);
        let ice = self.ctx.ice.servers_until(name, until);
        self.hold_turn_credentials(&ice);
        self.push(protocol::login_ok_frame(
            name,
            &ice,
            &roster.users,
            roster.truncated,
            resume,
        ));
        self.ctx.metrics.logins_total.fetch_add(1, Relaxed);
    }

    /// Holds the TURN username in `ice` (the login reply's servers) for as long as this
    /// session lives, when the embedded server accepts only live sessions' credentials.
    fn hold_turn_credentials(&mut self, ice: &serde_json::Value) {
        let Some(live) = &self.ctx.turn_live else {
            return;
        };
        let usernames = ice
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|server| server.get("username")?.as_str());
        for username in usernames {
            if self.turn.iter().any(|held| held.username() == username) {
                continue;
            }
            while self.turn.len() >= super::TURN_CREDENTIALS_KEPT {
                self.turn.remove(0);
            }
            self.turn.push(live.hold(username));
        }
    }

    /// A login that took back a held (or still connected) session of `name`: the reply,
    /// then the frames the old session kept, in order; the call peer hears we are back.
    /// `call` is the call the client names, which decides when the server did not know
    /// the call (the session was held from the table after a restart).
    async fn resumed(
        &mut self,
        name: Name,
        mailbox: Mailbox,
        inbox: Inbox,
        handover: Handover,
        call: Option<Name>,
    ) {
        self.resumed_with(name, mailbox, inbox, handover, call, None)
            .await;
    }

    /// [`Session::resumed`], with the new token's id when the cluster already has it.
    async fn resumed_with(
        &mut self,
        name: Name,
        mailbox: Mailbox,
        inbox: Inbox,
        handover: Handover,
        call: Option<Name>,
        id: Option<[u8; 16]>,
    ) {
        self.ctx.metrics.resumes.fetch_add(1, Relaxed);
        // The credentials the call's connection uses go on working; the reply's are added.
        let mut turn = handover.turn;
        turn.append(&mut self.turn);
        self.turn = turn;
        let token = self.take_seat(&name, id).await;
        let reply = ResumeReply {
            token: Some(&token),
            resumed: Some(true),
        };
        self.login_reply(&name, reply).await;
        self.out.extend(handover.frames);
        let mut user = User {
            json: protocol::json_string(name.as_str()),
            name,
            mailbox,
            inbox,
            sid: handover.sid,
            call: handover.call,
        };
        if handover.restored {
            self.settle_call(&mut user, call).await;
        } else if let Some(peer) = user.call.peer() {
            let frame = protocol::resumed_frame(&user.json);
            let _ = self
                .ctx
                .registry
                .send(peer, Event::Notice(frame.into()))
                .await;
        }
        info!(id = self.id, name = %shown(&user.name), "resumed");
        self.user = Some(user);
    }

    fn login_failed(&mut self, code: ErrorCode, message: &str) {
        self.ctx.metrics.error(code);
        info!(id = self.id, code = code.as_str(), "login refused");
        self.push(protocol::login_failed_frame(code, message));
    }

    /// Changes call state: the one place it changes, so the in-call gauge and the
    /// registry's record of our peer stay true.
    pub(super) fn set_call(&self, user: &mut User, call: Call) {
        let was = matches!(user.call, Call::Connected { .. });
        let is = matches!(call, Call::Connected { .. });
        match (was, is) {
            (false, true) => {
                self.ctx.metrics.sessions_in_call.fetch_add(1, Relaxed);
            }
            (true, false) => {
                self.ctx.metrics.sessions_in_call.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
        if user.call.peer() != call.peer() {
            self.ctx.registry.set_peer(&user.name, call.peer());
        }
        user.call = call;
    }

    async fn relay(&mut self, user: &mut User, kind: SignalKind, to: Target, payload: &RawValue) {
        let Target::Valid(to) = to else {
            self.not_online(kind, to.as_str());
            return;
        };
        let now = Instant::now();
        let ring_timeout = self.ctx.config.ring_timeout;
        let plan = match call::outgoing(&user.call, &user.name, kind, &to, now, ring_timeout) {
            Ok(plan) => plan,
            Err(refusal) => {
                self.refused(kind, &to, refusal).await;
                return;
            }
        };
        let new_call = plan.before.is_some();
        if new_call && !self.calls.may_start(now) {
            info!(id = self.id, to = %shown(&to), "call refused: too many calls started");
            self.error(
                ErrorCode::RateLimited,
                "You started too many calls in a short time; wait a few seconds.",
                Some(kind.as_str()),
                Some(to.as_str()),
            );
            return;
        }
        if let Some(next) = plan.before {
            self.set_call(user, next);
        }
        let event = Event::Signal {
            from: user.name.clone(),
            sid: user.sid,
            kind,
            reason: None,
            frame: protocol::relay_frame(kind, payload, &user.json).into(),
        };
        match self.ctx.registry.send(&to, event).await {
            Ok(()) => {
                if new_call {
                    info!(id = self.id, from = %shown(&user.name), to = %shown(&to), "calling");
                }
                if let Some(next) = plan.sent {
                    info!(id = self.id, name = %shown(&user.name), peer = %shown(&to), "call answered");
                    self.set_call(user, next);
                }
            }
            Err(e) => {
                if let Some(next) = plan.failed {
                    self.set_call(user, next);
                }
                self.send_failed(kind, &to, e);
            }
        }
    }

    async fn leave(&mut self, user: &mut User, to: Option<Target>, reason: LeaveReason) {
        let to = match to {
            Some(Target::Valid(name)) => Some(name),
            Some(Target::Invalid(raw)) => {
                self.not_online(SignalKind::Leave, &raw);
                return;
            }
            None => None,
        };
        let target = match call::leave(&user.call, to.as_ref()) {
            Ok(target) => target.clone(),
            Err(refusal) => {
                // Only `not-in-call` comes without a name, and it names no one.
                let named = to.as_ref().unwrap_or(&user.name);
                self.refused(SignalKind::Leave, named, refusal).await;
                return;
            }
        };
        self.set_call(user, Call::Idle);
        info!(id = self.id, name = %shown(&user.name), peer = %shown(&target), reason = reason.as_str(), "left call");
        if let Err(e) = self
            .ctx
            .registry
            .send(&target, user.leave_event(reason))
            .await
        {
            self.send_failed(SignalKind::Leave, &target, e);
        }
    }

    /// Ends an unanswered call whose ring deadline passed: an outgoing one after the ring
    /// timeout, an incoming one a grace later (its caller should have ended it).
    pub(super) async fn check_ring_timeout(&mut self, now: Instant) {
        let Some(mut user) = self.user.take() else {
            return;
        };
        if let Some(peer) = call::ring_timed_out(&user.call, now).cloned() {
            self.set_call(&mut user, Call::Idle);
            info!(id = self.id, name = %shown(&user.name), peer = %shown(&peer), "no answer");
            // If the peer is gone its own leave has reached or will reach us; either way
            // the attempt is over for our client.
            let event = user.leave_event(LeaveReason::NoAnswer);
            let _ = self.ctx.registry.send(&peer, event).await;
            self.push(protocol::leave_frame(
                &protocol::json_string(peer.as_str()),
                LeaveReason::NoAnswer,
            ));
        }
        self.user = Some(user);
    }

    /// Handles `first` and whatever else is already queued, up to a batch, so their frames
    /// go out in one write.
    pub(super) async fn on_events(&mut self, first: Option<Box<Event>>) {
        let (Some(first), Some(mut user)) = (first, self.user.take()) else {
            return;
        };
        let mut taken = first.cost();
        self.on_event(&mut user, *first).await;
        for _ in 1..INBOX_BATCH {
            // Bounded in bytes too: what waits for a slow socket's write should stay in
            // the mailbox, where the byte limits see it.
            if taken >= INBOX_BATCH_BYTES {
                break;
            }
            match user.inbox.try_recv() {
                Ok(event) => {
                    taken += event.cost();
                    self.on_event(&mut user, *event).await;
                }
                Err(_) => break,
            }
        }
        self.user = Some(user);
    }

    pub(super) async fn on_event(&mut self, user: &mut User, event: Event) {
        match event {
            Event::Notice(frame) => self.notice(frame),
            Event::Rejoin { from, sid } => self.on_rejoin(user, from, sid).await,
            Event::Replaced => self.end = Some(super::End::Replaced),
            Event::NameLost => self.end = Some(super::End::NameLost),
            Event::Bounce {
                from,
                code,
                request,
            } => {
                let after = call::bounced(&user.call, &from, request, code);
                if after != Bounced::Unchanged {
                    self.set_call(user, Call::Idle);
                }
                let message = match code {
                    ErrorCode::Busy => format!("\"{from}\" is in another call."),
                    ErrorCode::NotInCall => format!("\"{from}\" is not in a call with you."),
                    ErrorCode::NotOnline => format!("\"{from}\" is not online."),
                    ErrorCode::RateLimited => format!(
                        "\"{from}\" was called too often in a short time; try again in a minute."
                    ),
                    // A held session whose buffer for the reconnect is full, or one resumed on
                    // another node, where what it kept cannot follow.
                    ErrorCode::DeliveryFailed => format!(
                        "\"{from}\" was reconnecting and this message could not be kept for \
                         them; it was not delivered."
                    ),
                    _ => format!("\"{from}\" could not take the message."),
                };
                self.error(code, &message, Some(request.as_str()), Some(from.as_str()));
                if after == Bounced::CallOver {
                    // Clients end a call on `leave`; `not-in-call` alone is harmless to them.
                    info!(id = self.id, name = %shown(&user.name), peer = %shown(&from), "call ended: the peer has no call with us");
                    self.push(protocol::leave_frame(
                        &protocol::json_string(from.as_str()),
                        LeaveReason::Hangup,
                    ));
                }
            }
            Event::Signal {
                from,
                sid,
                kind,
                reason,
                frame,
            } => match call::incoming(
                &user.call,
                kind,
                &from,
                sid,
                Instant::now(),
                self.ctx.config.ring_timeout,
            ) {
                Incoming::Deliver { ring_back, .. }
                    if ring_back && !self.calls.may_ring(Instant::now()) =>
                {
                    // A new call, one too many for us in a short time: it does not ring.
                    info!(id = self.id, from = %shown(&from), "call refused: rung too often");
                    let bounce = Event::Bounce {
                        from: user.name.clone(),
                        code: ErrorCode::RateLimited,
                        request: kind,
                    };
                    let _ = self.ctx.registry.send(&from, bounce).await;
                }
                Incoming::Deliver { next, ring_back } => {
                    if ring_back {
                        // Tell the caller it rings here, so its page can say so (and knows
                        // the offer arrived) before anyone answers.
                        let ringing = protocol::ringing_frame(&user.json);
                        let _ = self
                            .ctx
                            .registry
                            .send(&from, Event::Notice(ringing.into()))
                            .await;
                    }
                    match kind {
                        SignalKind::Answer if matches!(user.call, Call::Calling { .. }) => {
                            info!(id = self.id, peer = %shown(&from), "call answered");
                        }
                        SignalKind::Leave => {
                            debug!(id = self.id, peer = %shown(&from), ?reason, "peer left")
                        }
                        _ => {}
                    }
                    if let Some(next) = next {
                        self.set_call(user, next);
                    }
                    self.ctx.metrics.relayed(kind);
                    self.out.push(Message::Text(frame));
                }
                Incoming::Bounce(code) => {
                    let bounce = Event::Bounce {
                        from: user.name.clone(),
                        code,
                        request: kind,
                    };
                    let _ = self.ctx.registry.send(&from, bounce).await;
                }
                Incoming::PeerReplaced(code) => {
                    info!(id = self.id, name = %shown(&user.name), peer = %shown(&from), "call ended: the peer's name has a new session");
                    self.set_call(user, Call::Idle);
                    self.push(protocol::leave_frame(
                        &protocol::json_string(from.as_str()),
                        LeaveReason::Disconnected,
                    ));
                    let bounce = Event::Bounce {
                        from: user.name.clone(),
                        code,
                        request: kind,
                    };
                    let _ = self.ctx.registry.send(&from, bounce).await;
                }
                Incoming::Drop => {}
            },
        }
    }

    /// Tells our client why its message to `to` was not sent.
    async fn refused(&mut self, kind: SignalKind, to: &Name, refusal: Refusal) {
        match refusal {
            Refusal::CannotCallSelf => self.error(
                ErrorCode::CannotCallSelf,
                "You cannot call yourself.",
                Some("offer"),
                Some(to.as_str()),
            ),
            Refusal::AlreadyInCall { peer } => {
                let message = format!(
                    "You are in a call with \"{peer}\"; hang up (send leave) before calling \
                     someone else."
                );
                self.error(
                    ErrorCode::AlreadyInCall,
                    &message,
                    Some("offer"),
                    Some(to.as_str()),
                );
            }
            Refusal::NotInCall => self.error(
                ErrorCode::NotInCall,
                "You are not in a call.",
                Some(kind.as_str()),
                None,
            ),
            Refusal::NotPaired => {
                if self.ctx.registry.is_online(to).await {
                    let message = format!("You are not in a call with \"{to}\".");
                    self.error(
                        ErrorCode::NotInCall,
                        &message,
                        Some(kind.as_str()),
                        Some(to.as_str()),
                    );
                } else {
                    self.not_online(kind, to.as_str());
                }
            }
        }
    }

    fn not_online(&mut self, kind: SignalKind, to: &str) {
        let message = format!("\"{to}\" is not online.");
        self.error(
            ErrorCode::NotOnline,
            &message,
            Some(kind.as_str()),
            Some(to),
        );
    }

    /// Reports a failed `registry.send` to the client.
    fn send_failed(&mut self, kind: SignalKind, to: &Name, e: SendError) {
        match e {
            SendError::NotOnline => self.not_online(kind, to.as_str()),
            SendError::Full => {
                let message = format!(
                    "\"{to}\" could not take the message (their connection is too slow) and is \
                     being disconnected."
                );
                self.error(
                    ErrorCode::DeliveryFailed,
                    &message,
                    Some(kind.as_str()),
                    Some(to.as_str()),
                );
            }
            SendError::Unavailable(reason) => {
                warn!(id = self.id, to = %shown(&to), %reason, "relay failed: registry unavailable");
                self.error(
                    ErrorCode::Unavailable,
                    "The server cannot deliver messages right now; try again in a few seconds.",
                    Some(kind.as_str()),
                    Some(to.as_str()),
                );
            }
        }
    }
}
