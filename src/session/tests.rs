//! The session over two channels instead of a socket, on paused time: timeouts of tens
//! of seconds run instantly and exactly.

use super::*;

use std::pin::Pin as StdPin;
use std::task::{Context as TaskContext, Poll};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::protocol::Name;
use crate::registry::memory::MemoryRegistry;
use std::sync::atomic::Ordering::Relaxed;

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
    context_with(|c| c.rate_limit = 0.0)
}

fn context_with(configure: impl FnOnce(&mut Config)) -> Arc<Context> {
    let mut config = Config::default_for("127.0.0.1:0".parse().expect("addr"));
    configure(&mut config);
    let presence = crate::presence::Presence::new(config.presence_limit);
    Arc::new(Context {
        config,
        registry: Registry::Memory(MemoryRegistry::new(presence)),
        metrics: Default::default(),
        ice: Default::default(),
        shutdown: CancellationToken::new(),
        resume: Resume::new(None),
        logins: super::login_limiter(),
        turn_live: None,
        auth: Arc::new(crate::auth::Auth::open()),
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

/// A resumable login; returns the connection and its token.
async fn resumable(ctx: &Arc<Context>, id: u64, name: &str) -> (Peer, String) {
    let mut peer = connect(ctx, id);
    peer.send(json!({"type": "login", "name": name, "resume": true}));
    let reply = peer.json().await;
    assert_eq!(reply["success"], true, "{reply}");
    let token = reply["resumeToken"].as_str().expect("token").to_owned();
    (peer, token)
}

/// `a` calls `b`, who answers.
async fn call(a: &mut Peer, a_name: &str, b: &mut Peer, b_name: &str) {
    a.send(json!({"type": "offer", "name": b_name, "offer": {"sdp": "x"}}));
    assert_eq!(awake_json(b).await["type"], "offer");
    assert_eq!(awake_json(a).await["type"], "ringing");
    b.send(json!({"type": "answer", "name": a_name, "answer": {"sdp": "y"}}));
    assert_eq!(awake_json(a).await["type"], "answer");
}

/// The next JSON message that is not presence, answering pings meanwhile.
async fn awake_json(peer: &mut Peer) -> Value {
    loop {
        match peer.frame().await {
            Some(Message::Ping(_)) => {
                let _ = peer.to_session.send(Message::Pong(Default::default()));
            }
            Some(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] != "presence" {
                    return v;
                }
            }
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_name_is_freed_exactly_when_the_window_ends() {
    let ctx = context_with(|c| {
        c.rate_limit = 0.0;
        c.resume_window = Duration::from_secs(30);
    });
    let (mut a, _token) = resumable(&ctx, 1, "a").await;
    let mut b = logged_in(&ctx, 2, "b").await;
    call(&mut a, "a", &mut b, "b").await;
    let dropped = Instant::now();
    drop(a); // the stream ends without a close frame: an abnormal drop
    assert_eq!(awake_json(&mut b).await["type"], "reconnecting");
    let name = Name::parse("a").expect("name");
    assert!(ctx.registry.is_online(&name).await, "held");
    let leave = awake_json(&mut b).await;
    assert_eq!(leave["type"], "leave");
    assert_eq!(leave["reason"], "disconnected");
    assert_eq!(dropped.elapsed(), ctx.config.resume_window);
    assert!(!ctx.registry.is_online(&name).await, "freed");
    assert_eq!(ctx.metrics.sessions_in_call.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_resume_at_the_end_of_the_window_keeps_the_call() {
    let ctx = context_with(|c| {
        c.rate_limit = 0.0;
        c.resume_window = Duration::from_secs(30);
        // The test's clients stay silent for minutes below.
        c.ping_interval = Duration::from_secs(3600);
    });
    let (mut a, token) = resumable(&ctx, 1, "a").await;
    let mut b = logged_in(&ctx, 2, "b").await;
    call(&mut a, "a", &mut b, "b").await;
    drop(a);
    assert_eq!(awake_json(&mut b).await["type"], "reconnecting");
    tokio::time::sleep(ctx.config.resume_window - Duration::from_millis(1)).await;
    let mut a2 = connect(&ctx, 3);
    a2.send(json!({"type": "login", "name": "a", "resumeToken": token}));
    let reply = a2.json().await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(awake_json(&mut b).await["type"], "resumed");
    // Long after the window, nothing ends the call; both still count as in a call.
    tokio::time::sleep(ctx.config.resume_window * 2).await;
    assert_eq!(ctx.metrics.sessions_in_call.load(Relaxed), 2);
    a2.send(json!({"type": "leave"}));
    let leave = awake_json(&mut b).await;
    assert_eq!(leave["type"], "leave");
    assert_eq!(leave["reason"], "hangup");
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

#[tokio::test(start_paused = true)]
async fn a_pong_flood_is_rate_limited_and_closed() {
    let ctx = context_with(|c| {
        c.rate_limit = 10.0;
        c.rate_burst = 5;
    });
    let mut a = logged_in(&ctx, 1, "ponger").await;
    for _ in 0..50 {
        let _ = a.to_session.send(Message::Pong(Default::default()));
    }
    let close = loop {
        match a.frame().await {
            Some(Message::Close(frame)) => break frame,
            Some(_) => continue,
            None => panic!("the session ended without a close frame"),
        }
    };
    let frame = close.expect("a close frame with a code");
    assert_eq!(frame.code, close_code::POLICY);
    assert_eq!(frame.reason.as_str(), "rate limit exceeded");
}

/// An offer that lands in a mailbox whose session is ending (here: kicked as a slow
/// consumer before it read the offer) is answered with `not-online` to its sender, not
/// dropped silently.
#[tokio::test(start_paused = true)]
async fn an_offer_unread_when_the_session_ends_is_bounced_to_its_sender() {
    let ctx = context_with(|c| {
        c.rate_limit = 0.0;
        c.queue_capacity = 2;
    });
    let mut a = logged_in(&ctx, 1, "caller").await;
    let _b = logged_in(&ctx, 2, "callee").await;
    let _ = a.json().await; // presence: callee came online
    let (caller, callee) = (
        Name::parse("caller").expect("name"),
        Name::parse("callee").expect("name"),
    );
    // Without yielding, so the callee's session reads none of it: the offer, a notice
    // that fills the mailbox, and one more, which kicks the callee.
    let offer = Event::Signal {
        from: caller.clone(),
        sid: crate::registry::SessionId::random(),
        kind: protocol::SignalKind::Offer,
        reason: None,
        frame: "{\"type\":\"offer\",\"offer\":{},\"name\":\"caller\"}".into(),
    };
    assert!(ctx.registry.send(&callee, offer).await.is_ok());
    let notice = || Event::Notice("{\"type\":\"presence\"}".into());
    assert!(ctx.registry.send(&callee, notice()).await.is_ok());
    assert!(
        ctx.registry.send(&callee, notice()).await.is_err(),
        "full: kicked"
    );
    let error = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = a.json().await;
            if m["type"] == "error" {
                return m;
            }
        }
    })
    .await
    .expect("the caller is told");
    assert_eq!(error["code"], "not-online");
    assert_eq!(error["request"], "offer");
    assert_eq!(error["name"], "callee");
}
