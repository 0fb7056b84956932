//! One WebSocket connection: the driver that owns the socket, the timers and the mailbox.
//!
//! [`run`] drives a `Session` from three inputs (frames from the client, events from the
//! registry, timers) and writes what the session queued in `out`. The socket type is
//! generic, so the session runs the same over a real WebSocket or a pair of channels.
//!
//! - [`call`]: the call rules, plain functions from state and input to a decision.
//! - `user`: carrying out those decisions for a logged-in user (login, relay, hang-up,
//!   events from the registry).
//! - `limits`: the per-connection rate limit.
//! - [`resume`]: resume tokens, and the seats a resuming login takes a session over by.
//! - `rejoin`: bringing a call back where the server no longer knows it (after a
//!   restart, or on another node), from both clients naming it.
//! - `held`: a resumable session whose connection dropped, holding its name for the
//!   resume window (or, after a restart, one the last process left resumable).
//! - [`store`]: the resume key and the resumable names, kept in the data directory.
//!
//! This file: keepalive, writing with a deadline, the closing handshake, and cleaning up
//! (name released, call peer told) when the connection ends.

pub mod call;
mod held;
mod limits;
mod rejoin;
pub mod resume;
pub mod store;
mod user;

use crate::turn::live::{LiveCredential, LiveCredentials};
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::pin::Pin;
use tokio::time::{Instant, sleep_until, timeout};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::{debug, info};

use self::call::Call;
use self::held::{Held, taken_over};
use self::limits::{CallLimits, RateLimit, Verdict};
use self::resume::{Resume, Seat};
use self::user::User;
use crate::config::Config;
use crate::ice::IceConfig;
use crate::logging::shown;
use crate::metrics::{ConnectionPermit, Metrics};
use crate::presence::Batch;
use crate::protocol::{self, ErrorCode, LeaveReason};
use crate::registry::{Event, Registry};
use crate::source_limit::SourceLimiter;

/// What every session shares.
pub struct Context {
    pub config: Config,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub ice: IceConfig,
    /// Cancelled when the server shuts down: every session closes with 1001.
    pub shutdown: CancellationToken,
    /// The resume key and this node's resumable sessions.
    pub resume: Resume,
    /// Logins per client address ([`login_limiter`]).
    pub logins: SourceLimiter,
    /// The embedded TURN server's live usernames (`--turn-credentials session`), which
    /// sessions hold for the credentials they hand out.
    pub turn_live: Option<LiveCredentials>,
    /// Who may open a WebSocket (`--password-file`; open by default).
    pub auth: Arc<crate::auth::Auth>,
}

/// The per-address login budget for [`Context::logins`].
pub fn login_limiter() -> SourceLimiter {
    SourceLimiter::new(limits::LOGINS_PER_SECOND, limits::LOGINS_BURST)
}

/// WebSocket close codes the server uses (RFC 6455 section 7.4.1).
mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The session was resumed on another connection (application range, RFC 6455 7.4.2).
    pub const REPLACED: u16 = 4000;
    /// Another node claimed the name while this one could not vouch for it.
    pub const NAME_LOST: u16 = 4002;
}

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
    /// The client broke the WebSocket protocol (RFC 6455: reserved bits, unmasked or
    /// fragmented control frames, unknown opcodes...).
    ProtocolError,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A login with this session's resume token took it over on another connection.
    Replaced,
    /// Never connected in this process: held from the table of names after a restart.
    Restarted,
    /// Another node holds the name now (see [`Event::NameLost`]).
    NameLost,
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
            End::ProtocolError => (close_code::PROTOCOL_ERROR, "websocket protocol error"),
            End::InvalidUtf8 => (close_code::INVALID_DATA, "text message is not UTF-8"),
            End::Replaced => (close_code::REPLACED, "resumed on another connection"),
            End::NameLost => (close_code::NAME_LOST, "name taken by another node"),
            End::ClientClosed | End::SocketError | End::WriteTimeout | End::Restarted => {
                return None;
            }
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })
    }
}

struct Session {
    ctx: Arc<Context>,
    /// Connection number, for logs.
    id: u64,
    /// Set by a successful login.
    user: Option<User>,
    rate: RateLimit,
    /// How many calls this connection may start and be rung for.
    calls: CallLimits,
    /// The client's address, whose login budget a login spends.
    ip: IpAddr,
    /// Frames to write to the client once the current input is handled.
    out: Vec<Message>,
    /// Set when the session must end after `out` is written.
    end: Option<End>,
    /// Cancelled by a sender that found our mailbox full, and (being a child of
    /// `ctx.shutdown`) when the server shuts down: one token, one waiter per session.
    kick: CancellationToken,
    /// Set by a resumable login: where a resuming login's takeover arrives.
    seat: Option<Seat>,
    /// The client closed with 1000 or no code: a deliberate goodbye, not a drop.
    goodbye: bool,
    /// Held from the table of names after a restart: its call is unknown, and a peer
    /// that comes back naming it may restore it.
    restored: bool,
    /// The connection is gone and the name held (frames wait in `out`).
    held: bool,
    /// Who a token on the upgrade said this is: logged in at once under that name, which
    /// is the only name this connection may have.
    identity: Option<crate::auth::jwt::Identity>,
    /// Presence changes gathered for the client, written when due (boxed and made only
    /// when a change arrives, so an idle connection pays one pointer and a burst gives its
    /// memory back once written).
    presence: Option<Box<Batch>>,
    /// The client asked at login for `presence-batch` frames.
    presence_batch: bool,
    /// The TURN usernames this session was handed (with `--turn-credentials session`):
    /// the embedded server accepts them while the session lives.
    turn: Vec<LiveCredential>,
}

/// TURN credentials a session keeps holding: the latest few (a resume hands out new
/// ones while the call's connection still uses the earlier).
const TURN_CREDENTIALS_KEPT: usize = 4;

/// Serves one upgraded WebSocket until it closes, the client misbehaves, or the server
/// shuts down. Cleans up after itself: the name is released, a call peer told, and the
/// permit given back.
///
/// Not an `async fn`: the socket goes straight into the one future that uses it, instead of
/// being stored once as an argument and again in an inner future (an idle connection's
/// memory is mostly this future).
pub fn run<S, E>(
    socket: S,
    ctx: Arc<Context>,
    id: u64,
    addr: SocketAddr,
    permit: ConnectionPermit,
) -> impl Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin + Send,
    E: StdError + Send + Sync + 'static,
{
    run_as(socket, ctx, id, addr, permit, None)
}

/// [`run`] for a connection whose upgrade carried a token: logged in at once as
/// `identity`.
pub fn run_as<S, E>(
    socket: S,
    ctx: Arc<Context>,
    id: u64,
    addr: SocketAddr,
    permit: ConnectionPermit,
    identity: Option<crate::auth::jwt::Identity>,
) -> impl Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin + Send,
    E: StdError + Send + Sync + 'static,
{
    info!(id, addr = %shown(addr), "connected");
    let session = Session {
        rate: RateLimit::new(ctx.config.rate_limit, ctx.config.rate_burst, Instant::now()),
        calls: CallLimits::new(ctx.config.limits_on(), Instant::now()),
        ip: addr.ip(),
        id,
        user: None,
        out: Vec::new(),
        end: None,
        kick: ctx.shutdown.child_token(),
        seat: None,
        goodbye: false,
        restored: false,
        held: false,
        identity,
        presence: None,
        presence_batch: false,
        turn: Vec::new(),
        ctx,
    };
    session.run(socket, permit)
}

/// A name the last process left resumable, claimed again; [`Restored::hold`] holds it.
pub struct Restored(Session);

impl Restored {
    /// Holds the name for the resume window as if its connection had just dropped: only
    /// its latest token takes it back.
    pub async fn hold(self) {
        self.0.after(End::Restarted).await;
    }
}

/// Claims `row`'s name, which the last process left resumable; `None` when it is taken
/// (in a cluster, by a login on another node).
pub async fn restore(ctx: Arc<Context>, id: u64, row: store::Row) -> Option<Restored> {
    let kick = ctx.shutdown.child_token();
    let (mailbox, inbox) = crate::registry::Mailbox::new(ctx.config.queue_capacity, kick.clone());
    if let Err(e) = ctx.registry.claim_held(&row.name, &mailbox, &row.id).await {
        info!(id, name = %shown(&row.name), error = ?e, "not holding a name from the last run: it is taken");
        return None;
    }
    let seat = ctx.resume.restore(&row);
    info!(id, name = %shown(&row.name), "holding a name from the last run");
    let session = Session {
        rate: RateLimit::new(ctx.config.rate_limit, ctx.config.rate_burst, Instant::now()),
        calls: CallLimits::new(ctx.config.limits_on(), Instant::now()),
        // Not a connection: no address of its own; a resume takes it over on a new one.
        ip: IpAddr::from([0, 0, 0, 0]),
        id,
        user: Some(User {
            json: protocol::json_string(row.name.as_str()),
            name: row.name,
            mailbox,
            inbox,
            sid: crate::registry::SessionId::random(),
            call: Call::Idle,
        }),
        out: Vec::new(),
        end: None,
        kick,
        seat: Some(seat),
        goodbye: false,
        restored: true,
        held: false,
        identity: None,
        presence: None,
        presence_batch: false,
        turn: Vec::new(),
        ctx,
    };
    Some(Restored(session))
}

impl Session {
    /// Holds `_permit` (this connection's place under `--max-connections`) to the end.
    async fn run<S, E>(mut self, mut socket: S, permit: ConnectionPermit)
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
        E: StdError + Send + Sync + 'static,
    {
        let end = self.serve(&mut socket).await;
        drop(socket);
        if end == End::Replaced {
            // Handed over here, or (with the user still ours) resumed on another node.
            self.replaced_elsewhere();
            return;
        }
        if self.holds(end) {
            // A held name is not a connection: it does not count under --max-connections.
            drop(permit);
            Box::pin(self.after(end)).await;
        } else {
            Box::pin(self.after(end)).await;
            // The permit drops here, after the cleanup: the connection is uncounted last.
            drop(permit);
        }
    }

    /// After the connection ended for `end`: holds the name if it should, then cleans up
    /// unless the session was handed over.
    async fn after(mut self, end: End) {
        let mut tell_peer = true;
        if self.holds(end) {
            match Box::pin(self.hold(end)).await {
                Held::HandedOver => return,
                Held::Over { tell_peer: tell } => tell_peer = tell,
            }
        }
        if let Some(takeover) = self.withdraw()
            && Box::pin(self.hand_over(takeover)).await
        {
            return;
        }
        Box::pin(self.finish(end, tell_peer)).await;
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

        // A token's user is logged in before anything is read.
        if self.identity.is_some() {
            Box::pin(self.login_identity()).await;
            if let Err(end) = Box::pin(self.flush(socket, kicked.as_mut())).await {
                Box::pin(self.close(socket, end)).await;
                return end;
            }
        }
        let end = loop {
            let mut wake = next_ping;
            if let Some(pinged) = unanswered_ping {
                wake = wake.min(pinged + pong_timeout);
            }
            if let Some(deadline) = self.user.as_ref().and_then(|u| u.call.deadline()) {
                wake = wake.min(deadline);
            }
            if let Some(batch) = &self.presence {
                wake = wake.min(batch.due());
            }
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                _ = &mut kicked => break self.kicked(),
                takeover = taken_over(&mut self.seat) => match takeover {
                    // Handed over before the socket is closed: closing a dead connection
                    // (the usual reason to resume) can take its timeouts.
                    Ok(takeover) => {
                        if Box::pin(self.hand_over(takeover)).await {
                            break End::Replaced;
                        }
                    }
                    Err(_) => self.seat = None,
                },
                event = recv(&self.user) => {
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
                        // Pings cost a reply, and unsolicited pongs still cost a wake-up
                        // each (a flood of them kept a core busy): both count against the
                        // rate limit. A client answering our pings sends one per interval.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            self.rate_ok(now);
                        }
                        Some(Ok(Message::Close(frame))) => {
                            self.goodbye = frame.is_none_or(|f| f.code == 1000);
                            break End::ClientClosed;
                        }
                        None => break End::ClientClosed,
                        Some(Err(e)) => {
                            let end = read_error_end(&e);
                            debug!(id = self.id, error = %e, ?end, "websocket read failed");
                            break end;
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
                    if self.presence.as_ref().is_some_and(|b| now >= b.due()) {
                        self.write_presence();
                    }
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

    /// Ends the session: the peer learns we left (unless `tell_peer` is false: it was told
    /// we are reconnecting), the name is freed.
    async fn finish(&mut self, end: End, tell_peer: bool) {
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
            End::NameLost => {
                metrics.names_lost.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        let Some(mut user) = self.user.take() else {
            info!(id = self.id, ?end, "disconnected before logging in");
            return;
        };
        // Released before the peer is told, so that a peer reacting to the `leave` already
        // finds the name free (with Redis, release is a round trip of its own).
        // A server shutting down keeps the name held for a resume on another node.
        self.ctx
            .registry
            .release(&user.name, &user.mailbox, !tell_peer)
            .await;
        self.bounce_unread(&user).await;
        if let Some(peer) = user.call.peer().cloned() {
            self.set_call(&mut user, Call::Idle);
            if tell_peer {
                let event = user.leave_event(LeaveReason::Disconnected);
                let _ = self.ctx.registry.send(&peer, event).await;
            }
        }
        self.ctx.registry.announce(&user.name, false).await;
        info!(id = self.id, name = %shown(&user.name), ?end, "logged out");
    }

    /// Tells the senders of what arrived after our last read (an offer landing as the
    /// connection drops) that it was not delivered, as it would be told had it come a
    /// moment later: nothing is lost silently. The call peer learns from our `leave`
    /// instead, and a `leave` needs no answer. Runs after the name is released, so
    /// nothing more arrives.
    async fn bounce_unread(&self, user: &User) {
        let peer = user.call.peer();
        while let Ok(event) = user.inbox.try_recv() {
            if let Event::Signal { from, kind, .. } = *event
                && kind != protocol::SignalKind::Leave
                && Some(&from) != peer
            {
                let bounce = Event::Bounce {
                    from: user.name.clone(),
                    code: ErrorCode::NotOnline,
                    request: kind,
                };
                let _ = self.ctx.registry.send(&from, bounce).await;
            }
        }
    }

    /// Whether the rate limit lets a message through; tells the client when it does not.
    fn rate_ok(&mut self, now: Instant) -> bool {
        match self.rate.check(now) {
            Verdict::Allowed => return true,
            Verdict::Refused => self.error(
                ErrorCode::RateLimited,
                "Too many messages; slow down or you will be disconnected.",
                None,
                None,
            ),
            Verdict::Exceeded => self.end = Some(End::RateLimited),
        }
        false
    }

    /// A frame for the client: a presence change joins the batch (written when due, or
    /// at once when full); anything else is written with the current input.
    fn notice(&mut self, frame: Utf8Bytes) {
        if protocol::parse_presence_frame(&frame).is_none() {
            self.out.push(Message::Text(frame));
            return;
        }
        let batch = self
            .presence
            .get_or_insert_with(|| Box::new(Batch::new(Instant::now())));
        batch.add(&frame);
        if batch.is_full() {
            self.write_presence();
        }
    }

    /// Queues the gathered presence changes for writing.
    fn write_presence(&mut self) {
        if let Some(batch) = self.presence.take() {
            let frames = batch.frames(self.presence_batch);
            self.out.extend(frames.into_iter().map(Message::Text));
        }
    }

    fn push(&mut self, frame: String) {
        self.out.push(Message::Text(frame.into()));
    }

    fn error(&mut self, code: ErrorCode, message: &str, request: Option<&str>, name: Option<&str>) {
        self.ctx.metrics.error(code);
        info!(id = self.id, code = code.as_str(), request, "refused");
        self.push(protocol::error_frame(code, message, request, name));
    }
}

/// Waits for the next event, or forever before login.
async fn recv(user: &Option<User>) -> Option<Box<Event>> {
    match user {
        Some(user) => user.inbox.recv_async().await.ok(),
        None => std::future::pending().await,
    }
}

/// Why a read error ends the session: a frame over the size limit, a broken frame or
/// invalid text (each answered with its close code), or the connection itself failing.
fn read_error_end(e: &(dyn StdError + 'static)) -> End {
    let mut source = Some(e);
    while let Some(err) = source {
        match err.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => return End::TooBig,
            // The connection ending without a close frame: a network drop, not a broken
            // client (and, for a resumable login, a reason to hold its name).
            Some(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => return End::SocketError,
            Some(tungstenite::Error::Protocol(_)) => return End::ProtocolError,
            Some(tungstenite::Error::Utf8(_)) => return End::InvalidUtf8,
            _ => {}
        }
        source = err.source();
    }
    End::SocketError
}

#[cfg(test)]
mod tests;
