//! One WebSocket connection: login, call state, relaying, limits and keepalive.
//!
//! [`run`] drives a [`Session`] from three inputs (frames from the client, events from the
//! registry, timers) and writes what the session queued in `out`. The session never touches
//! the socket itself, and the socket type is generic, so the logic runs the same over a
//! real WebSocket or a pair of channels.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::value::RawValue;
use std::pin::Pin;
use tokio::time::{Instant, sleep_until, timeout};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::ice::IceConfig;
use crate::metrics::Metrics;
use crate::protocol::{self, ErrorCode, LeaveReason, Name, NameError, Request, SignalKind, Target};
use crate::registry::{ClaimError, Event, Inbox, Mailbox, Registry, SendError};

/// What every session shares.
pub struct Context {
    pub config: Config,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub ice: IceConfig,
    /// Cancelled when the server shuts down: every session closes with 1001.
    pub shutdown: CancellationToken,
}

/// WebSocket close codes the server uses (RFC 6455 section 7.4.1).
mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Events taken from the inbox in one go before the socket is flushed: batches writes under
/// load without letting one busy sender starve the client's own frames for long.
const INBOX_BATCH: usize = 256;

/// How long closing may spend writing the close frame, and then waiting for the client's
/// reply.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_millis(500);
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Capacity of the outgoing frame list kept between writes; more is given back.
const OUT_KEEP: usize = 16;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientClosed,
    SocketError,
    Shutdown,
    SlowConsumer,
    WriteTimeout,
    PongTimeout,
    RateLimited,
    TooBig,
}

impl End {
    /// The close frame to attempt, if any.
    fn close_frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            End::Shutdown => (close_code::GOING_AWAY, "server shutting down"),
            End::SlowConsumer => (close_code::TRY_AGAIN_LATER, "too slow to receive messages"),
            End::PongTimeout => (close_code::POLICY, "no pong received"),
            End::RateLimited => (close_code::POLICY, "rate limit exceeded"),
            End::TooBig => (close_code::TOO_BIG, "message too big"),
            End::ClientClosed | End::SocketError | End::WriteTimeout => return None,
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })
    }
}

/// Who is in a call with whom, from this side.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
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
    fn peer(&self) -> Option<&Name> {
        match self {
            Call::Idle => None,
            Call::Calling { peer, .. } | Call::Ringing { peer } | Call::Connected { peer } => {
                Some(peer)
            }
        }
    }
}

/// The logged-in identity of a session.
struct Me {
    name: Name,
    /// `name` encoded once as a JSON string, spliced into every frame we send to peers.
    json: String,
    mailbox: Mailbox,
}

/// Token bucket: `rate` tokens per second, at most `burst` stored.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Limited messages since the last allowed one; too many closes the connection.
    excess: u32,
}

impl RateLimit {
    fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: now,
            excess: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.excess = 0;
            true
        } else {
            self.excess += 1;
            false
        }
    }
}

struct Session {
    ctx: Arc<Context>,
    /// Connection number, for logs.
    id: u64,
    me: Option<Me>,
    /// Receiving end of our mailbox, once logged in.
    inbox: Option<Inbox>,
    call: Call,
    rate: RateLimit,
    /// Frames to write to the client once the current input is handled.
    out: Vec<Message>,
    /// Set when the session must end after `out` is written.
    end: Option<End>,
    /// Cancelled by a sender that found our mailbox full, and (being a child of
    /// `ctx.shutdown`) when the server shuts down: one token, one waiter per session.
    kick: CancellationToken,
}

/// Serves one upgraded WebSocket until it closes, the client misbehaves, or the server
/// shuts down. Cleans up after itself: the name is released, a call peer told, and the
/// connection uncounted from `connections_open`.
///
/// Not an `async fn`: the socket goes straight into the one future that uses it, instead of
/// being stored once as an argument and again in an inner future (an idle connection's
/// memory is mostly this future).
pub fn run<S, E>(
    socket: S,
    ctx: Arc<Context>,
    id: u64,
    addr: SocketAddr,
    permit: crate::metrics::ConnectionPermit,
) -> impl Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin + Send,
    E: StdError + Send + Sync + 'static,
{
    info!(id, %addr, "connected");
    let session = Session {
        rate: RateLimit::new(ctx.config.rate_limit, ctx.config.rate_burst, Instant::now()),
        id,
        me: None,
        inbox: None,
        call: Call::Idle,
        out: Vec::new(),
        end: None,
        kick: ctx.shutdown.child_token(),
        ctx,
    };
    session.run(socket, permit)
}

impl Session {
    async fn run<S, E>(mut self, mut socket: S, _permit: crate::metrics::ConnectionPermit)
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
        E: StdError + Send + Sync + 'static,
    {
        let end = self.serve(&mut socket).await;
        drop(socket);
        Box::pin(self.finish(end)).await;
        // `_permit` drops here, after the cleanup: the connection is uncounted last.
    }

    async fn serve<S, E>(&mut self, socket: &mut S) -> End
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
        E: StdError + Send + Sync + 'static,
    {
        let ping_interval = self.ctx.config.ping_interval;
        let pong_timeout = self.ctx.config.pong_timeout;
        let mut next_ping = Instant::now() + ping_interval;
        // When we pinged and have heard nothing since; cleared by any frame from the client.
        let mut unanswered_ping: Option<Instant> = None;
        // One timer for the session, moved only when the next deadline changes (not per
        // message): registering a timer per frame is measurable on the relay path.
        let timer = sleep_until(next_ping);
        tokio::pin!(timer);
        let kick = self.kick.clone();
        // One waiter for the session's lifetime rather than one per loop turn: creating
        // and dropping it locks the token's waiter list each time.
        let kicked = kick.cancelled();
        tokio::pin!(kicked);

        let end = loop {
            let mut wake = next_ping;
            if let Some(pinged) = unanswered_ping {
                wake = wake.min(pinged + pong_timeout);
            }
            if let Call::Calling { deadline, .. } = self.call {
                wake = wake.min(deadline);
            }
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                _ = &mut kicked => break self.kicked(),
                event = recv(&mut self.inbox) => {
                    Box::pin(self.on_events(event)).await;
                }
                frame = socket.next() => {
                    unanswered_ping = None;
                    let now = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => Box::pin(self.on_text(&text, now)).await,
                        Some(Ok(Message::Binary(_))) => {
                            if self.rate_ok(now) {
                                self.error(
                                    ErrorCode::BinaryNotSupported,
                                    "Binary frames are not supported; send JSON text frames.",
                                    None,
                                    None,
                                );
                            }
                        }
                        // Pings cost a reply: they count against the rate limit too.
                        Some(Ok(Message::Ping(_))) => {
                            self.rate_ok(now);
                        }
                        Some(Ok(Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => break End::ClientClosed,
                        Some(Err(e)) => {
                            if is_too_big(&e) {
                                break End::TooBig;
                            }
                            debug!(id = self.id, error = %e, "websocket read failed");
                            break End::SocketError;
                        }
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if unanswered_ping.is_some_and(|pinged| now >= pinged + pong_timeout) {
                        break End::PongTimeout;
                    }
                    if now >= next_ping {
                        self.out.push(Message::Ping(Default::default()));
                        unanswered_ping.get_or_insert(now);
                        next_ping = now + ping_interval;
                    }
                    Box::pin(self.check_ring_timeout(now)).await;
                }
            }
            if !self.out.is_empty()
                && let Err(end) = Box::pin(self.flush(socket, kicked.as_mut())).await
            {
                break end;
            }
            if let Some(end) = self.end {
                break end;
            }
        };

        // Boxed: this rare path would otherwise add its timers and I/O state to every idle
        // connection's future.
        Box::pin(self.close(socket, end)).await;
        end
    }

    /// Completes the WebSocket closing handshake, best effort: the client may be gone or
    /// not reading.
    async fn close<S, E>(&mut self, socket: &mut S, end: End)
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    {
        let Some(frame) = end.close_frame() else {
            if end == End::ClientClosed {
                // tungstenite queued the reply to the client's close; send it, or the
                // client sees an abnormal closure (1006) instead of its own code.
                let _ = timeout(CLOSE_WRITE_TIMEOUT, socket.flush()).await;
            }
            return;
        };
        self.out.clear();
        self.out.push(Message::Close(Some(frame)));
        if timeout(CLOSE_WRITE_TIMEOUT, self.flush_plain(socket))
            .await
            .is_err()
        {
            return;
        }
        // Read (and drop) until the client answers the close. Closing a socket with unread
        // input makes the kernel send a reset, and the client would lose the frames sent
        // just before, our close frame included.
        let _ = timeout(CLOSE_DRAIN_TIMEOUT, async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Why `kick` was cancelled.
    fn kicked(&self) -> End {
        if self.ctx.shutdown.is_cancelled() {
            End::Shutdown
        } else {
            End::SlowConsumer
        }
    }

    /// Writes `out` to the socket, giving up when the client is kicked or too slow.
    async fn flush<S, E>(
        &mut self,
        socket: &mut S,
        kicked: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Result<(), End>
    where
        S: Sink<Message, Error = E> + Unpin,
    {
        let write_timeout = self.ctx.config.write_timeout;
        tokio::select! {
            biased;
            _ = kicked => Err(self.kicked()),
            r = timeout(write_timeout, self.flush_plain(socket)) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(())) => Err(End::SocketError),
                Err(_) => Err(End::WriteTimeout),
            },
        }
    }

    async fn flush_plain<S, E>(&mut self, socket: &mut S) -> Result<(), ()>
    where
        S: Sink<Message, Error = E> + Unpin,
    {
        for message in self.out.drain(..) {
            socket.feed(message).await.map_err(|_| ())?;
        }
        // A burst (a batch of 256 relayed events) must not leave its capacity behind on
        // an idle connection.
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
        socket.flush().await.map_err(|_| ())
    }

    /// Ends the session: the peer learns we left, the name is freed.
    async fn finish(&mut self, end: End) {
        let metrics = &self.ctx.metrics;
        match end {
            End::SlowConsumer => {
                metrics.slow_consumers.fetch_add(1, Relaxed);
            }
            End::PongTimeout => {
                metrics.pong_timeouts.fetch_add(1, Relaxed);
            }
            End::RateLimited => {
                metrics.rate_limit_closes.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        let Some(me) = self.me.take() else {
            info!(id = self.id, ?end, "disconnected before logging in");
            return;
        };
        // Released before the peer is told, so that a peer reacting to the `leave` already
        // finds the name free (with Redis, release is a round trip of its own).
        self.ctx.registry.release(&me.name, &me.mailbox).await;
        if let Some(peer) = self.call.peer().cloned() {
            self.set_call(Call::Idle);
            let frame = protocol::leave_frame(&me.json, LeaveReason::Disconnected);
            let event = Event::Signal {
                from: me.name.clone(),
                kind: SignalKind::Leave,
                reason: Some(LeaveReason::Disconnected),
                frame: frame.into(),
            };
            let _ = self.ctx.registry.send(&peer, event).await;
        }
        self.ctx.registry.announce(&me.name, false).await;
        info!(id = self.id, name = %me.name, ?end, "logged out");
    }

    fn rate_ok(&mut self, now: Instant) -> bool {
        if self.rate.allow(now) {
            return true;
        }
        if self.rate.excess > self.rate.burst as u32 {
            self.end = Some(End::RateLimited);
        } else {
            self.error(
                ErrorCode::RateLimited,
                "Too many messages; slow down or you will be disconnected.",
                None,
                None,
            );
        }
        false
    }

    fn push(&mut self, frame: String) {
        self.out.push(Message::Text(frame.into()));
    }

    fn error(&mut self, code: ErrorCode, message: &str, request: Option<&str>, name: Option<&str>) {
        self.ctx.metrics.error(code);
        self.push(protocol::error_frame(code, message, request, name));
    }

    /// Changes call state, keeping the in-call gauge true.
    fn set_call(&mut self, call: Call) {
        let was = matches!(self.call, Call::Connected { .. });
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
        if let Some(me) = &self.me
            && self.call.peer() != call.peer()
        {
            self.ctx.registry.set_peer(&me.name, call.peer());
        }
        self.call = call;
    }

    async fn on_text(&mut self, text: &str, now: Instant) {
        if !self.rate_ok(now) {
            return;
        }
        match protocol::parse(text) {
            Err(e) => self.error(e.code, &e.message, e.request.as_deref(), None),
            Ok(Request::Login { name }) => self.login(name).await,
            Ok(request) if self.me.is_none() => {
                let kind = match request {
                    Request::Relay { kind, .. } => kind,
                    _ => SignalKind::Leave,
                };
                self.error(
                    ErrorCode::NotLoggedIn,
                    "Log in first: send {\"type\":\"login\",\"name\":...}.",
                    Some(kind.as_str()),
                    None,
                );
            }
            Ok(Request::Relay { kind, to, payload }) => self.relay(kind, to, payload).await,
            Ok(Request::Leave { to, reason }) => self.leave(to, reason).await,
        }
    }

    async fn login(&mut self, name: Result<Name, NameError>) {
        if let Some(me) = &self.me {
            let message = format!(
                "You are already logged in as \"{}\"; a connection has one name. \
                 Open another connection to use another name.",
                me.name
            );
            self.error(ErrorCode::AlreadyLoggedIn, &message, Some("login"), None);
            return;
        }
        let name = match name {
            Ok(name) => name,
            Err(e) => {
                self.ctx.metrics.error(ErrorCode::InvalidName);
                self.push(protocol::login_failed_frame(
                    ErrorCode::InvalidName,
                    &e.to_string(),
                ));
                return;
            }
        };
        let config = &self.ctx.config;
        let (mailbox, inbox) = Mailbox::new(config.queue_capacity, self.kick.clone());
        match self.ctx.registry.claim(&name, &mailbox).await {
            Ok(()) => {}
            Err(ClaimError::Taken) => {
                self.ctx.metrics.error(ErrorCode::NameTaken);
                let message = format!("The name \"{name}\" is already in use; choose another.");
                self.push(protocol::login_failed_frame(ErrorCode::NameTaken, &message));
                return;
            }
            Err(ClaimError::Unavailable(reason)) => {
                warn!(id = self.id, %name, %reason, "login refused: registry unavailable");
                self.ctx.metrics.error(ErrorCode::Unavailable);
                self.push(protocol::login_failed_frame(
                    ErrorCode::Unavailable,
                    "The server cannot check names right now; try again in a few seconds.",
                ));
                return;
            }
        }
        let roster = self.ctx.registry.roster(&name).await;
        let ice = self.ctx.ice.servers_for(&name);
        self.push(protocol::login_ok_frame(
            &name,
            &ice,
            &roster.users,
            roster.truncated,
        ));
        self.ctx.registry.announce(&name, true).await;
        self.ctx.metrics.logins_total.fetch_add(1, Relaxed);
        info!(id = self.id, %name, "logged in");
        self.me = Some(Me {
            json: protocol::json_string(name.as_str()),
            name,
            mailbox,
        });
        self.inbox = Some(inbox);
    }

    /// The error for a message to `to`, who is not our call peer.
    async fn not_paired(&mut self, kind: SignalKind, to: &Name) {
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
                warn!(id = self.id, %to, %reason, "relay failed: registry unavailable");
                self.error(
                    ErrorCode::Unavailable,
                    "The server cannot deliver messages right now; try again in a few seconds.",
                    Some(kind.as_str()),
                    Some(to.as_str()),
                );
            }
        }
    }

    async fn relay(&mut self, kind: SignalKind, to: Target, payload: &RawValue) {
        let Target::Valid(to) = to else {
            self.not_online(kind, to.as_str());
            return;
        };
        let Some(me) = &self.me else { return };
        let mut new_call = false;
        match kind {
            SignalKind::Offer => {
                if to == me.name {
                    self.error(
                        ErrorCode::CannotCallSelf,
                        "You cannot call yourself.",
                        Some("offer"),
                        Some(to.as_str()),
                    );
                    return;
                }
                match self.call.peer() {
                    // A new offer within the pair: renegotiation.
                    Some(peer) if *peer == to => {}
                    Some(peer) => {
                        let message = format!(
                            "You are in a call with \"{peer}\"; hang up (send leave) before \
                             calling someone else."
                        );
                        self.error(
                            ErrorCode::AlreadyInCall,
                            &message,
                            Some("offer"),
                            Some(to.as_str()),
                        );
                        return;
                    }
                    None => new_call = true,
                }
            }
            _ => {
                if self.call.peer() != Some(&to) {
                    self.not_paired(kind, &to).await;
                    return;
                }
            }
        }

        let Some(me) = &self.me else { return };
        let me_name = me.name.clone();
        let event = Event::Signal {
            from: me.name.clone(),
            kind,
            reason: None,
            frame: protocol::relay_frame(kind, payload, &me.json).into(),
        };
        if new_call {
            // Paired before sending, so our candidates that follow the offer are accepted.
            let deadline = Instant::now() + self.ctx.config.ring_timeout;
            self.set_call(Call::Calling {
                peer: to.clone(),
                deadline,
            });
        }
        match self.ctx.registry.send(&to, event).await {
            Ok(()) => {
                if new_call {
                    info!(id = self.id, from = %me_name, %to, "calling");
                }
                // Answering settles the call from either state: `Ringing` (we were called)
                // or `Calling` (glare: both offered, and we answer the peer's offer).
                if kind == SignalKind::Answer
                    && matches!(self.call, Call::Ringing { .. } | Call::Calling { .. })
                {
                    info!(id = self.id, name = %me_name, peer = %to, "call answered");
                    self.set_call(Call::Connected { peer: to });
                }
            }
            Err(e) => {
                if new_call {
                    self.set_call(Call::Idle);
                }
                self.send_failed(kind, &to, e);
            }
        }
    }

    async fn leave(&mut self, to: Option<Target>, reason: LeaveReason) {
        let peer = self.call.peer().cloned();
        let target = match (to, peer.clone()) {
            (Some(Target::Valid(name)), _) => name,
            (Some(Target::Invalid(raw)), _) => {
                self.not_online(SignalKind::Leave, &raw);
                return;
            }
            (None, Some(peer)) => peer,
            (None, None) => {
                self.error(
                    ErrorCode::NotInCall,
                    "You are not in a call.",
                    Some("leave"),
                    None,
                );
                return;
            }
        };
        if peer.as_ref() != Some(&target) {
            self.not_paired(SignalKind::Leave, &target).await;
            return;
        }
        self.set_call(Call::Idle);
        let Some(me) = &self.me else { return };
        info!(id = self.id, name = %me.name, peer = %target, reason = reason.as_str(), "left call");
        let event = Event::Signal {
            from: me.name.clone(),
            kind: SignalKind::Leave,
            reason: Some(reason),
            frame: protocol::leave_frame(&me.json, reason).into(),
        };
        if let Err(e) = self.ctx.registry.send(&target, event).await {
            self.send_failed(SignalKind::Leave, &target, e);
        }
    }

    async fn check_ring_timeout(&mut self, now: Instant) {
        let Call::Calling { peer, deadline } = &self.call else {
            return;
        };
        if now < *deadline {
            return;
        }
        let peer = peer.clone();
        self.set_call(Call::Idle);
        let Some(me) = &self.me else { return };
        info!(id = self.id, name = %me.name, %peer, "no answer");
        let event = Event::Signal {
            from: me.name.clone(),
            kind: SignalKind::Leave,
            reason: Some(LeaveReason::NoAnswer),
            frame: protocol::leave_frame(&me.json, LeaveReason::NoAnswer).into(),
        };
        // If the peer is gone its own leave has reached or will reach us; either way the
        // attempt is over for our client.
        let _ = self.ctx.registry.send(&peer, event).await;
        self.push(protocol::leave_frame(
            &protocol::json_string(peer.as_str()),
            LeaveReason::NoAnswer,
        ));
    }

    /// Handles `first` and whatever else is already queued, up to a batch, so their frames
    /// go out in one write.
    async fn on_events(&mut self, first: Option<Box<Event>>) {
        self.on_event(first).await;
        for _ in 1..INBOX_BATCH {
            match self.inbox.as_mut().map(|rx| rx.try_recv()) {
                Some(Ok(event)) => self.on_event(Some(event)).await,
                _ => break,
            }
        }
    }

    /// Sends `code` back to `to` (the sender of something we refused).
    async fn bounce(&mut self, to: &Name, code: ErrorCode, request: SignalKind) {
        let Some(me) = &self.me else { return };
        let event = Event::Bounce {
            from: me.name.clone(),
            code,
            request,
        };
        let _ = self.ctx.registry.send(to, event).await;
    }

    async fn on_event(&mut self, event: Option<Box<Event>>) {
        let Some(event) = event else { return };
        match *event {
            Event::Notice(frame) => self.out.push(Message::Text(frame)),
            Event::Bounce {
                from,
                code,
                request,
            } => {
                let ended_attempt = request == SignalKind::Offer
                    && matches!(&self.call, Call::Calling { peer, .. } if *peer == from);
                if ended_attempt && code != ErrorCode::NotInCall {
                    self.set_call(Call::Idle);
                }
                let message = match code {
                    ErrorCode::Busy => format!("\"{from}\" is in another call."),
                    ErrorCode::NotInCall => format!("\"{from}\" is not in a call with you."),
                    ErrorCode::NotOnline => format!("\"{from}\" is not online."),
                    _ => format!("\"{from}\" could not take the message."),
                };
                self.error(code, &message, Some(request.as_str()), Some(from.as_str()));
            }
            Event::Signal {
                from,
                kind,
                reason,
                frame,
            } => {
                let from_peer = self.call.peer() == Some(&from);
                match kind {
                    SignalKind::Offer if self.call == Call::Idle => {
                        // Tell the caller it rings here, so its page can say so (and
                        // knows the offer arrived) before anyone answers.
                        if let Some(me) = &self.me {
                            let ringing = protocol::ringing_frame(&me.json);
                            let _ = self
                                .ctx
                                .registry
                                .send(&from, Event::Notice(ringing.into()))
                                .await;
                        }
                        self.set_call(Call::Ringing { peer: from });
                    }
                    SignalKind::Offer if !from_peer => {
                        self.bounce(&from, ErrorCode::Busy, kind).await;
                        return;
                    }
                    SignalKind::Answer if from_peer => {
                        if matches!(self.call, Call::Calling { .. }) {
                            info!(id = self.id, peer = %from, "call answered");
                        }
                        self.set_call(Call::Connected { peer: from });
                    }
                    SignalKind::Leave if from_peer => {
                        debug!(id = self.id, peer = %from, ?reason, "peer left");
                        self.set_call(Call::Idle);
                    }
                    // A hang-up of a call that is already over here: nothing to tell.
                    SignalKind::Leave => return,
                    _ if !from_peer => {
                        self.bounce(&from, ErrorCode::NotInCall, kind).await;
                        return;
                    }
                    _ => {}
                }
                self.ctx.metrics.relayed(kind);
                self.out.push(Message::Text(frame));
            }
        }
    }
}

/// Waits for the next event, or forever before login.
async fn recv(inbox: &mut Option<Inbox>) -> Option<Box<Event>> {
    match inbox {
        Some(rx) => rx.recv_async().await.ok(),
        None => std::future::pending().await,
    }
}

/// Whether a read error means the client sent a frame over the size limit.
fn is_too_big(e: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_refills() {
        let start = Instant::now();
        let mut rl = RateLimit::new(10.0, 2, start);
        assert!(rl.allow(start));
        assert!(rl.allow(start));
        assert!(!rl.allow(start));
        assert_eq!(rl.excess, 1);
        assert!(rl.allow(start + Duration::from_millis(150)));
        assert_eq!(rl.excess, 0);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let start = Instant::now();
        let mut rl = RateLimit::new(0.0, 1, start);
        assert!((0..10_000).all(|_| rl.allow(start)));
    }

    // The session over two channels instead of a socket, on paused time: timeouts of
    // tens of seconds run instantly and exactly.

    use std::pin::Pin as StdPin;
    use std::task::{Context as TaskContext, Poll};

    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use crate::registry::memory::MemoryRegistry;

    /// A WebSocket stand-in: frames the test sends arrive at the session; frames the
    /// session writes come out at the test.
    struct Pipe {
        incoming: mpsc::UnboundedReceiver<Message>,
        outgoing: mpsc::UnboundedSender<Message>,
    }

    impl Stream for Pipe {
        type Item = Result<Message, std::io::Error>;
        fn poll_next(
            mut self: StdPin<&mut Self>,
            cx: &mut TaskContext<'_>,
        ) -> Poll<Option<Self::Item>> {
            self.incoming.poll_recv(cx).map(|m| m.map(Ok))
        }
    }

    impl Sink<Message> for Pipe {
        type Error = std::io::Error;
        fn poll_ready(
            self: StdPin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: StdPin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.outgoing
                .send(item)
                .map_err(|_| std::io::Error::other("test dropped its end"))
        }
        fn poll_flush(
            self: StdPin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: StdPin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The test's end of one connection.
    struct Peer {
        to_session: mpsc::UnboundedSender<Message>,
        from_session: mpsc::UnboundedReceiver<Message>,
    }

    impl Peer {
        fn send(&self, v: Value) {
            let _ = self.to_session.send(Message::Text(v.to_string().into()));
        }

        /// The next frame the session wrote (pings included), or `None` once it ended.
        async fn frame(&mut self) -> Option<Message> {
            self.from_session.recv().await
        }

        /// The next JSON message, skipping pings.
        async fn json(&mut self) -> Value {
            loop {
                match self.frame().await {
                    Some(Message::Text(t)) => return serde_json::from_str(&t).expect("json"),
                    Some(Message::Ping(_)) => continue,
                    other => panic!("expected a JSON message, got {other:?}"),
                }
            }
        }
    }

    fn context() -> Arc<Context> {
        let mut config = Config::default_for("127.0.0.1:0".parse().expect("addr"));
        config.rate_limit = 0.0;
        let presence = crate::presence::Presence::new(config.presence_limit);
        Arc::new(Context {
            config,
            registry: Registry::Memory(MemoryRegistry::new(presence)),
            metrics: Default::default(),
            ice: Default::default(),
            shutdown: CancellationToken::new(),
        })
    }

    fn connect(ctx: &Arc<Context>, id: u64) -> Peer {
        let (to_session, incoming) = mpsc::unbounded_channel();
        let (outgoing, from_session) = mpsc::unbounded_channel();
        let pipe = Pipe { incoming, outgoing };
        let addr = "127.0.0.1:1".parse().expect("addr");
        let permit = ctx.metrics.open_connection(usize::MAX).expect("no limit");
        tokio::spawn(run(pipe, ctx.clone(), id, addr, permit));
        Peer {
            to_session,
            from_session,
        }
    }

    async fn logged_in(ctx: &Arc<Context>, id: u64, name: &str) -> Peer {
        let mut peer = connect(ctx, id);
        peer.send(json!({"type": "login", "name": name}));
        assert_eq!(peer.json().await["success"], true);
        peer
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_rings_for_exactly_the_ring_timeout() {
        let ctx = context();
        let mut a = logged_in(&ctx, 1, "a").await;
        let mut b = logged_in(&ctx, 2, "b").await;
        let _ = a.json().await; // presence: b came online
        let start = Instant::now();
        a.send(json!({"type": "offer", "name": "b", "offer": {"sdp": "x"}}));
        assert_eq!(b.json().await["type"], "offer");
        assert_eq!(a.json().await["type"], "ringing");
        // Both keep answering pings, so only the ring timer can end the attempt.
        let leave = loop {
            match a.frame().await {
                Some(Message::Ping(_)) => a
                    .to_session
                    .send(Message::Pong(Default::default()))
                    .expect("pong"),
                Some(Message::Text(t)) => break serde_json::from_str::<Value>(&t).expect("json"),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(leave["type"], "leave");
        assert_eq!(leave["reason"], "no-answer");
        assert_eq!(start.elapsed(), ctx.config.ring_timeout);
        let leave = b.json().await;
        assert_eq!(leave["reason"], "no-answer");
        assert_eq!(leave["name"], "a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_after_ping_interval_plus_pong_timeout() {
        let ctx = context();
        let start = Instant::now();
        let mut a = logged_in(&ctx, 1, "quiet").await;
        // The first ping comes after the interval; with no answer the session ends.
        assert!(matches!(a.frame().await, Some(Message::Ping(_))));
        assert_eq!(start.elapsed(), ctx.config.ping_interval);
        let close = a.frame().await;
        let Some(Message::Close(Some(frame))) = close else {
            panic!("expected a close frame, got {close:?}");
        };
        assert_eq!(frame.code, close_code::POLICY);
        assert_eq!(
            start.elapsed(),
            ctx.config.ping_interval + ctx.config.pong_timeout
        );
        assert!(a.frame().await.is_none(), "the session ended");
        let name = Name::parse("quiet").expect("name");
        assert!(!ctx.registry.is_online(&name).await, "its name was freed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_pings_stays() {
        let ctx = context();
        let mut a = logged_in(&ctx, 1, "awake").await;
        for _ in 0..10 {
            assert!(matches!(a.frame().await, Some(Message::Ping(_))));
            a.to_session
                .send(Message::Pong(Default::default()))
                .expect("pong");
        }
        let name = Name::parse("awake").expect("name");
        assert!(ctx.registry.is_online(&name).await);
    }
}
