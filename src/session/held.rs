//! A resumable session whose connection dropped: its name stays claimed for
//! `--resume-window`, its call goes on, and what arrives for it is kept (bounded) until a
//! login with its token takes it over ([`resume`](super::resume)) or the window ends.
//!
//! The held session is the same [`Session`], without a socket: events are handled by the
//! same code as when connected, and the frames it would have written wait in `out`. Only
//! presence is not kept (the resumed login's roster replaces it), and a signal that does
//! not fit is refused to its sender with `delivery-failed`. A `leave` always fits, so a
//! hang-up is never lost.

use tokio::sync::oneshot::error::RecvError;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use super::resume::{HELD_BYTES, HELD_FRAMES, Handover, Seat, Takeover};
use super::user::User;
use super::{End, Session, recv};
use crate::logging::shown;
use crate::protocol::{self, ErrorCode, SignalKind};
use crate::registry::Event;

use axum::extract::ws::Message;

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// A new connection took the session over: nothing to clean up.
    HandedOver,
    /// The window ran out: clean up as for any disconnect, telling the peer (`leave`)
    /// when `tell_peer`; the server shutting down does not (it was told `reconnecting`,
    /// and the restarted server may see both sides come back).
    Over { tell_peer: bool },
}

impl Session {
    /// Whether a session that ended for `end` holds its name. Only a client that asked to
    /// be resumable, and not when it closed deliberately (close code 1000 or none) or the
    /// server ended it for cause (rate limit, oversized frame).
    pub(super) fn holds(&self, end: End) -> bool {
        let eligible = match end {
            End::ClientClosed => !self.goodbye,
            End::SocketError
            | End::Shutdown
            | End::SlowConsumer
            | End::WriteTimeout
            | End::PongTimeout
            | End::Restarted => true,
            End::RateLimited
            | End::TooBig
            | End::ProtocolError
            | End::InvalidUtf8
            | End::Replaced
            // The name is someone else's now: there is nothing to hold.
            | End::NameLost => false,
        };
        eligible
            && self.seat.is_some()
            && self.user.is_some()
            && !self.ctx.config.resume_window.is_zero()
    }

    /// Holds the name after the connection ended for `end`, until taken over or the
    /// window ends.
    pub(super) async fn hold(&mut self, end: End) -> Held {
        let (Some(user), Some(seat)) = (&self.user, &self.seat) else {
            return Held::Over { tell_peer: true };
        };
        self.ctx.resume.hold(&user.name, seat);
        self.held = true;
        let window = self.ctx.config.resume_window;
        info!(id = self.id, name = %shown(&user.name), ?end, ?window, "connection lost; name held");
        if let Some(peer) = user.call.peer() {
            let frame = protocol::reconnecting_frame(&user.json);
            let _ = self
                .ctx
                .registry
                .send(peer, Event::Notice(frame.into()))
                .await;
        }
        // Pings and a close frame meant for the old socket are no use to the next one.
        self.out.retain(|m| matches!(m, Message::Text(_)));
        if end == End::Shutdown {
            return Held::Over { tell_peer: false };
        }
        let deadline = Instant::now() + window;
        let timer = sleep_until(deadline);
        tokio::pin!(timer);
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let mut wake = deadline;
            if let Some(ring) = self.user.as_ref().and_then(|u| u.call.deadline()) {
                wake = wake.min(ring);
            }
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Held::Over { tell_peer: false },
                takeover = taken_over(&mut self.seat) => match takeover {
                    Ok(takeover) => {
                        if self.hand_over(takeover).await {
                            return Held::HandedOver;
                        }
                        return Held::Over { tell_peer: true };
                    }
                    Err(_) => self.seat = None,
                },
                event = recv(&self.user) => {
                    if let (Some(event), Some(mut user)) = (event, self.user.take()) {
                        self.held_event(&mut user, *event).await;
                        while self.end.is_none() && let Ok(event) = user.inbox.try_recv() {
                            self.held_event(&mut user, *event).await;
                        }
                        self.user = Some(user);
                    }
                    if self.end == Some(End::Replaced) {
                        self.replaced_elsewhere();
                        return Held::HandedOver;
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        self.ctx.metrics.resumes_expired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        info!(id = self.id, name = %shown(&user_name(&self.user)), "resume window over; name freed");
                        return Held::Over { tell_peer: true };
                    }
                    Box::pin(self.check_ring_timeout(now)).await;
                }
            }
        }
    }

    /// Gives up the seat before the session ends. Returns the takeover a resuming login
    /// sent meanwhile, if one did: the session must then hand over instead of ending.
    pub(super) fn withdraw(&mut self) -> Option<Takeover> {
        let mut seat = self.seat.take()?;
        let user = self.user.as_ref()?;
        if self.ctx.resume.leave(&user.name, &seat) {
            return None;
        }
        seat.takeover.try_recv().ok()
    }

    /// Hands the name, the call and the kept frames to the connection that resumed. False
    /// (the session then ends as usual) when the name is no longer ours to give.
    pub(super) async fn hand_over(&mut self, takeover: Takeover) -> bool {
        let Some(mut user) = self.user.take() else {
            return false;
        };
        if !self
            .ctx
            .registry
            .replace(&user.name, &user.mailbox, &takeover.mailbox)
        {
            warn!(id = self.id, name = %shown(&user.name), "cannot hand over: the name is no longer ours");
            self.user = Some(user);
            return false;
        }
        // Nothing new reaches the old mailbox now; what is in it goes with the handover.
        while let Ok(event) = user.inbox.try_recv() {
            self.held_event(&mut user, *event).await;
        }
        let frames = self
            .out
            .drain(..)
            .filter(|m| matches!(m, Message::Text(_)))
            .collect();
        let handover = Handover {
            call: user.call.clone(),
            sid: user.sid,
            turn: std::mem::take(&mut self.turn),
            frames,
            restored: self.restored,
        };
        if takeover.reply.send(handover).is_err() {
            warn!(id = self.id, name = %shown(&user.name), "the resuming connection went away");
        }
        info!(id = self.id, name = %shown(&user.name), "handed over to a resumed connection");
        // `user` drops without `set_call`: the call (and its count in the gauge) now
        // belongs to the new session.
        true
    }

    /// The name was resumed on another node, which took it over in the registry: ends
    /// without a word to the call peer (the call goes on there). Kept frames cannot
    /// follow: their senders are told they were not delivered.
    pub(super) fn replaced_elsewhere(&mut self) {
        let Some(mut user) = self.user.take() else {
            return;
        };
        if let Some(seat) = self.seat.take() {
            self.ctx.resume.leave(&user.name, &seat);
        }
        let kept: Vec<Message> = self.out.drain(..).collect();
        let ctx = self.ctx.clone();
        let me = user.name.clone();
        // The gauge of calls: this side of the call now counts on the other node.
        self.set_call(&mut user, super::call::Call::Idle);
        info!(id = self.id, name = %shown(&me), kept = kept.len(), "resumed on another node; session dropped here");
        tokio::spawn(async move {
            for frame in kept {
                let Message::Text(text) = frame else { continue };
                let Some((kind, from)) = protocol::relayed_kind_and_sender(&text) else {
                    continue;
                };
                let bounce = Event::Bounce {
                    from: me.clone(),
                    code: ErrorCode::DeliveryFailed,
                    request: kind,
                };
                let _ = ctx.registry.send(&from, bounce).await;
            }
        });
    }

    /// One event for a held session: handled as when connected, unless it does not fit.
    async fn held_event(&mut self, user: &mut User, event: Event) {
        let size = match &event {
            Event::Notice(frame) if protocol::is_presence_frame(frame) => return,
            Event::Notice(frame) | Event::Signal { frame, .. } => frame.len(),
            // An error frame for our client.
            Event::Bounce { .. } => 256,
            // A `resumed` notice for our client, which always fits: it restores a call.
            Event::Rejoin { .. } => 0,
            Event::Replaced => {
                self.end = Some(End::Replaced);
                return;
            }
            Event::NameLost => {
                self.end = Some(End::NameLost);
                return;
            }
        };
        let is_leave = matches!(
            event,
            Event::Signal {
                kind: SignalKind::Leave,
                ..
            } | Event::Rejoin { .. }
        );
        let kept: usize = self
            .out
            .iter()
            .map(|m| match m {
                Message::Text(t) => t.len(),
                _ => 0,
            })
            .sum();
        if is_leave || (self.out.len() < HELD_FRAMES && kept + size <= HELD_BYTES) {
            self.on_event(user, event).await;
            return;
        }
        match event {
            Event::Signal { from, kind, .. } => {
                debug!(id = self.id, name = %shown(&user.name), from = %shown(&from), "held buffer full; refused");
                let bounce = Event::Bounce {
                    from: user.name.clone(),
                    code: ErrorCode::DeliveryFailed,
                    request: kind,
                };
                let _ = self.ctx.registry.send(&from, bounce).await;
            }
            // A ringing notice or an error about a message our client sent before it
            // dropped: the client learns the state from the calls that follow.
            other => {
                debug!(id = self.id, name = %shown(&user.name), ?other, "held buffer full; dropped")
            }
        }
    }
}

fn user_name(user: &Option<User>) -> String {
    user.as_ref()
        .map(|u| u.name.to_string())
        .unwrap_or_default()
}

/// Waits for a takeover of our seat, or forever without one.
pub(super) async fn taken_over(seat: &mut Option<Seat>) -> Result<Takeover, RecvError> {
    match seat {
        Some(seat) => (&mut seat.takeover).await,
        None => std::future::pending().await,
    }
}
