//! The wire protocol against one real duet server on a loopback port.

mod cases;
mod common;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use common::*;

macro_rules! on_one_node {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            let mut cluster = Cluster::single(|c| c.ring_timeout = cases::RING_TIMEOUT).await;
            cases::$case(&cluster).await;
            cluster.shutdown().await;
        }
    )*};
}

cases::all_cases!(on_one_node);

#[tokio::test]
async fn http_routes() {
    let server = Server::start(|_| {}).await;
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("ok"));
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(
        body.to_lowercase().contains("<html") || body.contains("<!doctype"),
        "{body}"
    );
    let (status, _) = server.get("/no-such-file").await;
    assert_eq!(status, 404);

    // The seed's URL (path /) and /ws both speak the protocol.
    let mut a = Client::connect(&server.url("/ws")).await;
    assert_eq!(a.login("metrics-a").await["success"], true);
    a.send_text("nope").await;
    a.recv_type("error").await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("duet_connections_open 1"), "{body}");
    assert!(body.contains("duet_users_online 1"), "{body}");
    assert!(
        body.contains("duet_errors_total{code=\"invalid-json\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("duet_messages_relayed_total{type=\"offer\"} 0"),
        "{body}"
    );
}

#[tokio::test]
async fn calls_and_relays_are_counted() {
    let cluster = Cluster::single(|_| {}).await;
    let mut a = cluster.user(0, "m-alice").await;
    let mut b = cluster.user(1, "m-bob").await;
    connect_call(&mut a, "m-alice", &mut b, "m-bob").await;
    let (_, body) = cluster.nodes[0].get("/metrics").await;
    assert!(body.contains("duet_calls_in_progress 1"), "{body}");
    assert!(
        body.contains("duet_messages_relayed_total{type=\"answer\"} 1"),
        "{body}"
    );
    a.send(json!({"type": "leave"})).await;
    b.recv_type("leave").await;
    let (_, body) = cluster.nodes[0].get("/metrics").await;
    assert!(body.contains("duet_calls_in_progress 0"), "{body}");
}

#[tokio::test]
async fn unanswered_call_rings_out() {
    let cluster = Cluster::single(|c| c.ring_timeout = Duration::from_millis(300)).await;
    let mut a = cluster.user(0, "r-alice").await;
    let mut b = cluster.user(1, "r-bob").await;
    a.send(json!({"type": "offer", "name": "r-bob", "offer": offer_payload()}))
        .await;
    b.recv_type("offer").await;
    let la = a.recv_type("leave").await;
    assert_eq!(la["reason"], "no-answer");
    assert_eq!(la["name"], "r-bob");
    let lb = b.recv_type("leave").await;
    assert_eq!(lb["reason"], "no-answer");
    assert_eq!(lb["name"], "r-alice");
    // Both free: bob can now call alice.
    b.send(json!({"type": "offer", "name": "r-alice", "offer": offer_payload()}))
        .await;
    assert_eq!(a.recv_type("offer").await["name"], "r-bob");
}

#[tokio::test]
async fn answered_call_does_not_ring_out() {
    let cluster = Cluster::single(|c| c.ring_timeout = Duration::from_millis(200)).await;
    let mut a = cluster.user(0, "r2-alice").await;
    let mut b = cluster.user(1, "r2-bob").await;
    connect_call(&mut a, "r2-alice", &mut b, "r2-bob").await;
    a.silent_for(Duration::from_millis(500)).await;
    b.silent_for(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn vanished_client_is_detected_by_ping() {
    let cluster = Cluster::single(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_timeout = Duration::from_millis(200);
    })
    .await;
    let mut a = cluster.user(0, "p-alice").await;
    let mut b = cluster.user(1, "p-bob").await;
    connect_call(&mut a, "p-alice", &mut b, "p-bob").await;
    // bob's client stops reading, so it never answers pings (tungstenite answers pings
    // only while being read), like a laptop whose lid was closed.
    let _frozen = b;
    let leave = a.recv_type("leave").await;
    assert_eq!(leave["name"], "p-bob");
    assert_eq!(leave["reason"], "disconnected");
    let mut again = cluster.client(2).await;
    assert_eq!(again.login("p-bob").await["success"], true);
    let (_, body) = cluster.nodes[0].get("/metrics").await;
    assert!(body.contains("duet_pong_timeouts_total 1"), "{body}");
    // A client that keeps reading (and so answers pings) is not dropped.
    a.silent_for(Duration::from_millis(600)).await;
}

#[tokio::test]
async fn slow_consumer_is_dropped_and_sender_told() {
    let cluster = Cluster::single(|c| {
        c.queue_capacity = 4;
        c.write_timeout = Duration::from_secs(30);
    })
    .await;
    let mut a = cluster.user(0, "s-alice").await;
    let mut b = cluster.user(1, "s-bob").await;
    connect_call(&mut a, "s-alice", &mut b, "s-bob").await;
    let _not_reading = b;
    let big = "x".repeat(60_000);
    let mut told = None;
    for i in 0..2000 {
        a.send(
            json!({"type": "candidate", "name": "s-bob", "candidate": {"candidate": big, "i": i}}),
        )
        .await;
        // Look for the error without blocking the sender.
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(1), a.next_json()).await
            && v["type"] == "error"
        {
            told = Some(v);
            break;
        }
    }
    let e = match told {
        Some(e) => e,
        None => a.recv_type("error").await,
    };
    assert_eq!(e["code"], "delivery-failed", "{e}");
    assert_eq!(e["name"], "s-bob");
    // bob was disconnected: alice hears he left, and the drop was counted. Candidates
    // alice sent before reading the first error may each have been refused too.
    let leave = loop {
        let v = a.recv().await;
        if v["type"] == "leave" {
            break v;
        }
        // Presence comes up to 200 ms late (in batches): bob's login may arrive here.
        assert!(
            v["type"] == "presence" || v["code"] == "delivery-failed" || v["code"] == "not-online",
            "{v}"
        );
    };
    assert_eq!(leave["reason"], "disconnected");
    let (_, body) = cluster.nodes[0].get("/metrics").await;
    assert!(
        body.contains("duet_slow_consumers_dropped_total 1"),
        "{body}"
    );
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let cluster = Cluster::single(|c| c.max_message_size = 16 * 1024).await;
    let mut a = cluster.user(0, "big-alice").await;
    let mut b = cluster.user(1, "big-bob").await;
    a.send(json!({"type": "offer", "name": "big-bob", "offer": {"sdp": "x".repeat(20 * 1024)}}))
        .await;
    assert_eq!(a.closed().await, Some(1009));
    b.silent_for(Duration::from_millis(200)).await;
    // The server is unaffected; the name was freed.
    let mut c2 = cluster.user(2, "big-alice").await;
    c2.send(json!({"type": "offer", "name": "big-bob", "offer": {"sdp": "x".repeat(10 * 1024)}}))
        .await;
    assert_eq!(b.recv_type("offer").await["name"], "big-alice");
}

#[tokio::test]
async fn rate_limit_warns_then_disconnects() {
    let cluster = Cluster::single(|c| {
        c.rate_limit = 5.0;
        c.rate_burst = 5;
    })
    .await;
    // The login took one of the 5 tokens: of 8 messages, 4 pass and 4 are refused.
    let mut a = cluster.user(0, "flood").await;
    for _ in 0..8 {
        a.send_text("{\"type\":\"leave\"}").await;
    }
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(a.recv_type("error").await["code"].clone());
    }
    let limited = codes.iter().filter(|c| **c == "rate-limited").count();
    assert_eq!(limited, 4, "{codes:?}");
    // Keeping it up closes the connection with 1008: a flood far past the limit still
    // gets a proper close (not a reset that would lose the errors sent before it).
    for _ in 0..1000 {
        if a.ws
            .send(Message::text("{\"type\":\"leave\"}"))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(a.closed().await, Some(1008));
}

#[tokio::test]
async fn connection_limit() {
    let cluster = Cluster::single(|c| c.max_connections = 2).await;
    let _a = cluster.client(0).await;
    let _b = cluster.client(0).await;
    let third = tokio_tungstenite::connect_async(cluster.nodes[0].url("/")).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    drop(_a);
    // The slot frees once the first connection is gone.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if tokio_tungstenite::connect_async(cluster.nodes[0].url("/"))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
    }
    assert!(ok);
}

#[tokio::test]
async fn graceful_shutdown_closes_with_1001() {
    let mut server = Server::start(|_| {}).await;
    let mut a = Client::connect(&server.url("/")).await;
    assert_eq!(a.login("going").await["success"], true);
    let mut b = Client::connect(&server.url("/ws")).await;
    let started = std::time::Instant::now();
    let (result, code_a, code_b) = tokio::join!(server.shutdown(), a.closed(), b.closed());
    result.expect("run returned an error");
    assert_eq!(code_a, Some(1001));
    assert_eq!(code_b, Some(1001));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn no_greeting_on_connect() {
    let server = Server::start(|_| {}).await;
    let mut a = Client::connect(&server.url("/")).await;
    a.silent_for(Duration::from_millis(200)).await;
    let _ = json!(null);
}

#[tokio::test]
async fn the_server_answers_a_client_close() {
    let server = Server::start(|_| {}).await;
    let mut a = Client::connect(&server.url("/")).await;
    assert_eq!(a.login("closer").await["success"], true);
    a.ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    }))
    .await
    .expect("send close");
    // The reply echoes the client's code (RFC 6455 5.5.1), rather than the connection
    // just dropping (1006).
    assert_eq!(a.closed().await, Some(1000));
}

#[tokio::test]
async fn presence_turns_off_above_the_limit_and_says_so() {
    let cluster = Cluster::single(|c| c.presence_limit = 2).await;
    let mut a = cluster.client(0).await;
    let reply = a.login("p1").await;
    assert_eq!(reply["usersTruncated"], false, "{reply}");
    let mut b = cluster.client(0).await;
    let reply = b.login("p2").await;
    assert_eq!(reply["users"], json!(["p1"]));
    assert_eq!(
        reply["usersTruncated"], false,
        "two online, limit two: {reply}"
    );
    assert_eq!(a.recv_type("presence").await["name"], "p2");
    // A third user: presence is off from now on, and the newcomer is told so.
    let mut c = cluster.client(0).await;
    let reply = c.login("p3").await;
    assert_eq!(reply["usersTruncated"], true, "{reply}");
    assert_eq!(reply["users"].as_array().map(Vec::len), Some(2));
    let got = tokio::time::timeout(Duration::from_millis(300), a.next_json()).await;
    assert!(got.is_err(), "no presence above the limit, got {got:?}");
}

#[tokio::test]
async fn allowed_origins_restrict_browsers_only() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server =
        Server::start(|c| c.allowed_origins = vec!["https://call.example.org".into()]).await;
    let with_origin = |origin: &str| {
        let mut request = server.url("/ws").into_client_request().expect("request");
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
        request
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(
        tokio_tungstenite::connect_async(with_origin("https://call.example.org"))
            .await
            .is_ok()
    );
    // No Origin: not a browser, allowed (the seed's Node clients send none).
    let mut a = Client::connect(&server.url("/")).await;
    assert_eq!(a.login("originless").await["success"], true);
}

/// A WebSocket opened by hand on a raw TCP socket: the handshake with `key`, and the
/// status line of the server's answer.
async fn raw_upgrade(addr: std::net::SocketAddr, key: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n == 1, "closed during the handshake: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.lines().next().unwrap_or_default().to_string();
    (stream, status)
}

/// A client frame (masked, as RFC 6455 requires) with the given first byte and payload.
fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The close code of the server's next frame, which must be a close frame.
async fn close_code_read(stream: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt as _;
    let mut header = [0u8; 2];
    tokio::time::timeout(WAIT, stream.read_exact(&mut header))
        .await
        .expect("a close frame in time")
        .expect("read");
    assert_eq!(header[0], 0x88, "a final close frame, got {header:?}");
    let mut payload = vec![0u8; usize::from(header[1] & 0x7f)];
    stream.read_exact(&mut payload).await.expect("payload");
    assert!(payload.len() >= 2, "a close frame with a code");
    u16::from_be_bytes([payload[0], payload[1]])
}

/// RFC 6455 4.2.1: a `Sec-WebSocket-Key` that is not 16 bytes in base64 gets 400, not an
/// upgrade; a good one still upgrades.
#[tokio::test]
async fn a_malformed_websocket_key_is_refused() {
    let server = Server::start(|_| {}).await;
    for key in [
        "not base64!",
        "c2hvcnQ=",
        "dGhpcyBpcyBtb3JlIHRoYW4gMTYgYnl0ZXM=",
    ] {
        let (_, status) = raw_upgrade(server.addr, key).await;
        assert!(status.contains(" 400 "), "{key}: {status}");
    }
    let (_, status) = raw_upgrade(server.addr, "dGhlIHNhbXBsZSBub25jZQ==").await;
    assert!(status.contains(" 101 "), "{status}");
}

/// A frame that breaks the protocol is answered with close code 1002 and a text message
/// that is not UTF-8 with 1007 (RFC 6455 7.4.1), not a dropped connection; the server
/// goes on serving others.
#[tokio::test]
async fn broken_frames_get_their_close_codes() {
    use tokio::io::AsyncWriteExt as _;
    let server = Server::start(|_| {}).await;
    let cases: [(&str, Vec<u8>, u16); 3] = [
        // FIN + a reserved bit + text.
        ("reserved bit", masked_frame(0xC1, b"{}"), 1002),
        // FIN + opcode 3 (reserved data frame type).
        ("unknown opcode", masked_frame(0x83, b"x"), 1002),
        // FIN + text, invalid UTF-8.
        (
            "invalid UTF-8",
            masked_frame(0x81, &[0x7b, 0xff, 0xfe, 0x7d]),
            1007,
        ),
    ];
    for (what, frame, code) in cases {
        let (mut stream, status) = raw_upgrade(server.addr, "dGhlIHNhbXBsZSBub25jZQ==").await;
        assert!(status.contains(" 101 "), "{status}");
        stream.write_all(&frame).await.expect("write");
        assert_eq!(close_code_read(&mut stream).await, code, "{what}");
    }
    let mut a = Client::connect(&server.url("/ws")).await;
    assert_eq!(a.login("after-broken-frames").await["success"], true);
}

/// One call attempt from `caller` to `callee_name` that is hung up before it is answered:
/// the callee rings and hears the hang-up.
async fn ring_and_hang_up(caller: &mut Client, callee: &mut Client, callee_name: &str) {
    caller
        .send(json!({"type": "offer", "name": callee_name, "offer": offer_payload()}))
        .await;
    callee.recv_type("offer").await;
    caller
        .send(json!({"type": "leave", "name": callee_name}))
        .await;
    callee.recv_type("leave").await;
}

/// Ring-bombing (issue 15 finding 6): a connection may start 10 calls at once, then one
/// every 6 s; the next is refused to the caller with `rate-limited` and does not ring.
/// Renegotiation within a call is not counted.
#[tokio::test]
async fn a_caller_cannot_start_calls_without_end() {
    let server = Server::start(|c| c.rate_limit = 1000.0).await;
    let mut alice = Client::connect(&server.url("/ws")).await;
    let mut bob = Client::connect(&server.url("/ws")).await;
    alice.login("bomb-alice").await;
    bob.login("bomb-bob").await;
    for _ in 0..10 {
        ring_and_hang_up(&mut alice, &mut bob, "bomb-bob").await;
    }
    alice
        .send(json!({"type": "offer", "name": "bomb-bob", "offer": offer_payload()}))
        .await;
    let refused = alice.recv_type("error").await;
    assert_eq!(refused["code"], "rate-limited", "{refused}");
    assert_eq!(refused["request"], "offer", "{refused}");
    assert_eq!(refused["name"], "bomb-bob", "{refused}");
    bob.silent_for(Duration::from_millis(300)).await;
}

/// A target rings for at most 20 new calls at once from all callers together, then one
/// every 3 s; the next caller gets `rate-limited` naming the target, and its attempt is over
/// (it may call someone else at once).
#[tokio::test]
async fn a_target_is_not_rung_without_end() {
    let server = Server::start(|c| c.rate_limit = 1000.0).await;
    let mut bob = Client::connect(&server.url("/ws")).await;
    bob.login("target-bob").await;
    let mut callers = Vec::new();
    for i in 0..3 {
        let mut caller = Client::connect(&server.url("/ws")).await;
        caller.login(&format!("target-caller-{i}")).await;
        callers.push(caller);
    }
    for round in 0..20 {
        ring_and_hang_up(&mut callers[round % 3], &mut bob, "target-bob").await;
    }
    let last = &mut callers[2];
    last.send(json!({"type": "offer", "name": "target-bob", "offer": offer_payload()}))
        .await;
    let refused = last.recv_type("error").await;
    assert_eq!(refused["code"], "rate-limited", "{refused}");
    assert_eq!(refused["name"], "target-bob", "{refused}");
    bob.silent_for(Duration::from_millis(300)).await;
    // The refused attempt is over on the caller's side: it can call someone else.
    let (first, rest) = callers.split_at_mut(1);
    ring_and_hang_up(&mut rest[1], &mut first[0], "target-caller-0").await;
}

/// Logins per client address (issue 15 finding 7): 60 at once, then two a second; the
/// next login gets `rate-limited` (and may be retried), while another address is not
/// affected.
#[tokio::test]
async fn logins_are_limited_per_address() {
    use futures_util::StreamExt as _;
    let server = Server::start(|c| c.rate_limit = 1000.0).await;
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    // Until the first refusal: 60, plus what refilled meanwhile (two a second).
    let refused = loop {
        let mut c = Client::connect(&server.url("/ws")).await;
        let reply = c.login(&format!("many-{}", clients.len())).await;
        if reply["success"] != true {
            break reply;
        }
        clients.push(c);
        assert!(clients.len() < 300, "no login refused");
    };
    assert_eq!(refused["code"], "rate-limited", "{refused}");
    let refilled = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        (60..=60 + refilled).contains(&clients.len()),
        "{} logins before the refusal, {refilled} refilled",
        clients.len()
    );

    // From 127.0.0.2, another source, the same server takes a login at once.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let stream = socket.connect(server.addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(server.url("/ws"), stream)
        .await
        .expect("upgrade");
    ws.send(Message::text(r#"{"type":"login","name":"other-address"}"#))
        .await
        .expect("send");
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("reply in time");
    assert!(
        matches!(reply, Some(Ok(Message::Text(ref t))) if t.contains("\"success\":true")),
        "{reply:?}"
    );
}

/// Issue 15 finding 5: a callee that never reads costs its peer's large candidates only up
/// to the mailbox's byte limit (1 MiB) plus what the sockets buffer, not the queue's 1,024
/// places of 60 KB (~60 MiB) before it is disconnected: the sender hears of it early.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped_before_it_costs_megabytes() {
    let server = Server::start(|_| {}).await;
    let mut alice = Client::connect(&server.url("/ws")).await;
    let mut bob = Client::connect(&server.url("/ws")).await;
    alice.login("big-alice").await;
    bob.login("big-bob").await;
    connect_call(&mut alice, "big-alice", &mut bob, "big-bob").await;
    // bob reads nothing from now on.
    let padding = "x".repeat(60_000);
    let candidate = json!({"type": "candidate", "name": "big-bob",
        "candidate": {"candidate": padding, "sdpMid": "0", "sdpMLineIndex": 0}});
    let mut sent = 0;
    let refused = 'sending: loop {
        assert!(
            sent < 1500,
            "still relaying after {sent} candidates of 60 KB"
        );
        alice.send(candidate.clone()).await;
        sent += 1;
        // Whatever came back meanwhile, without waiting.
        while let Some(next) = futures_util::FutureExt::now_or_never(alice.next_json()) {
            let v = next.expect("alice stays connected");
            if v["type"] == "error" || v["type"] == "leave" {
                break 'sending v;
            }
        }
    };
    eprintln!("the non-reading callee was dropped after {sent} candidates of 60 KB: {refused}");
    assert!(
        sent < 600,
        "{sent} candidates of 60 KB queued for a client that never reads"
    );
    drop(bob);
}
