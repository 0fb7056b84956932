//! Session resume against one real duet server on a loopback port: held names, the
//! `reconnecting`/`resumed` notices, buffered frames, and the token checks.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use common::*;

/// A resumable login of `name` on a new connection; returns the client and its token.
async fn resumable(server: &Server, name: &str) -> (Client, String) {
    let mut c = Client::connect(&server.url("/")).await;
    c.send(json!({"type": "login", "name": name, "resume": true}))
        .await;
    let reply = c.recv_type("login").await;
    assert_eq!(reply["success"], true, "{reply}");
    assert!(reply.get("resumed").is_none(), "no token sent: {reply}");
    let token = reply["resumeToken"].as_str().expect("a token").to_owned();
    (c, token)
}

/// A login of `name` with `token` on a new connection; returns the client and the reply.
async fn resume_with(server: &Server, name: &str, token: &str) -> (Client, Value) {
    let mut c = Client::connect(&server.url("/")).await;
    c.send(json!({"type": "login", "name": name, "resumeToken": token}))
        .await;
    let reply = c.recv_type("login").await;
    (c, reply)
}

/// The next message that is not presence.
async fn next(c: &mut Client) -> Value {
    loop {
        let v = c.recv().await;
        if v["type"] != "presence" {
            return v;
        }
    }
}

async fn server(window: Duration) -> Server {
    Server::start(|c| c.resume_window = window).await
}

#[tokio::test]
async fn resume_within_the_window_restores_the_call() {
    let server = server(Duration::from_secs(30)).await;
    let (mut a, token) = resumable(&server, "alice").await;
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    drop(a); // no close handshake: the TCP connection just goes away
    let notice = next(&mut b).await;
    assert_eq!(notice, json!({"type": "reconnecting", "name": "alice"}));
    // The call goes on: bob's candidate is accepted (kept for alice), not refused.
    b.send(json!({"type": "candidate", "name": "alice", "candidate": candidate_payload(1)}))
        .await;
    let (mut a2, reply) = resume_with(&server, "alice", &token).await;
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["resumed"], true, "{reply}");
    let new_token = reply["resumeToken"].as_str().expect("a new token");
    assert_ne!(new_token, token, "every login gets its own token");
    assert_eq!(reply["users"], json!(["bob"]));
    let kept = next(&mut a2).await;
    assert_eq!(kept["type"], "candidate", "{kept}");
    assert_eq!(kept["candidate"], candidate_payload(1));
    assert_eq!(
        next(&mut b).await,
        json!({"type": "resumed", "name": "alice"})
    );
    // The call state came back on both sides: a hang-up reaches the peer.
    a2.send(json!({"type": "leave"})).await;
    let leave = next(&mut b).await;
    assert_eq!(leave["type"], "leave", "{leave}");
    assert_eq!(leave["name"], "alice");
    assert_eq!(leave["reason"], "hangup");
    // The old token was for the old login only.
    a2.close().await;
    let (_, reply) = resume_with(&server, "alice", &token).await;
    assert_eq!(reply["success"], true, "name free again: a normal login");
    assert_eq!(reply["resumed"], false, "{reply}");
}

#[tokio::test]
async fn after_the_window_the_peer_gets_leave_and_the_name_is_free() {
    let window = Duration::from_millis(400);
    let server = server(window).await;
    let (mut a, token) = resumable(&server, "alice").await;
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    drop(a);
    assert_eq!(next(&mut b).await["type"], "reconnecting");
    let dropped = Instant::now();
    let leave = next(&mut b).await;
    assert_eq!(leave["type"], "leave", "{leave}");
    assert_eq!(leave["name"], "alice");
    assert_eq!(leave["reason"], "disconnected");
    assert!(dropped.elapsed() >= window - Duration::from_millis(50));
    let offline = b.recv_type("presence").await;
    assert_eq!(
        offline,
        json!({"type": "presence", "name": "alice", "online": false})
    );
    // The token found nothing held: a normal login, without the old call.
    let (mut a2, reply) = resume_with(&server, "alice", &token).await;
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["resumed"], false, "{reply}");
    a2.send(json!({"type": "leave"})).await;
    assert_eq!(a2.recv_type("error").await["code"], "not-in-call");
}

#[tokio::test]
async fn frames_kept_while_held_are_replayed_in_order() {
    let server = server(Duration::from_secs(30)).await;
    let (mut a, token) = resumable(&server, "alice").await;
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    drop(a);
    assert_eq!(next(&mut b).await["type"], "reconnecting");
    // A renegotiation while alice is away: an offer and its candidates.
    b.send(json!({"type": "offer", "name": "alice", "offer": {"type": "offer", "sdp": "again"}}))
        .await;
    for i in 0..20 {
        b.send(json!({"type": "candidate", "name": "alice", "candidate": candidate_payload(i)}))
            .await;
    }
    // Let them all reach the held session first.
    b.silent_for(Duration::from_millis(200)).await;
    let (mut a2, reply) = resume_with(&server, "alice", &token).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    let offer = next(&mut a2).await;
    assert_eq!(offer["type"], "offer", "{offer}");
    assert_eq!(offer["offer"]["sdp"], "again");
    for i in 0..20 {
        let v = next(&mut a2).await;
        assert_eq!(v["candidate"], candidate_payload(i), "message {i}: {v}");
    }
    // After the replay, live messages follow.
    b.send(json!({"type": "candidate", "name": "alice", "candidate": candidate_payload(99)}))
        .await;
    assert_eq!(next(&mut a2).await["candidate"], candidate_payload(99));
}

#[tokio::test]
async fn a_full_buffer_is_reported_to_the_sender() {
    let server = server(Duration::from_secs(30)).await;
    let (mut a, token) = resumable(&server, "alice").await;
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    drop(a);
    assert_eq!(next(&mut b).await["type"], "reconnecting");
    const SENT: usize = 70;
    const KEPT: usize = 64;
    for i in 0..SENT {
        b.send(json!({"type": "candidate", "name": "alice", "candidate": candidate_payload(i)}))
            .await;
    }
    for _ in KEPT..SENT {
        let e = next(&mut b).await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "delivery-failed", "{e}");
        assert_eq!(e["name"], "alice");
        assert_eq!(e["request"], "candidate");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("reconnecting")),
            "{e}"
        );
    }
    b.silent_for(Duration::from_millis(100)).await;
    let (mut a2, reply) = resume_with(&server, "alice", &token).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    for i in 0..KEPT {
        let v = next(&mut a2).await;
        assert_eq!(v["candidate"], candidate_payload(i), "message {i}: {v}");
    }
    // The refused ones are not delivered late; the call is still on.
    assert_eq!(next(&mut b).await["type"], "resumed");
    a2.silent_for(Duration::from_millis(100)).await;
    a2.send(json!({"type": "leave"})).await;
    assert_eq!(next(&mut b).await["type"], "leave");
}

#[tokio::test]
async fn wrong_tokens_are_refused_and_the_name_stays_held() {
    let server = server(Duration::from_secs(30)).await;
    let (a, token) = resumable(&server, "alice").await;
    let (_carol, carol_token) = resumable(&server, "carol").await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A plain login: reserved, and the message says for how long at most.
    let mut plain = Client::connect(&server.url("/")).await;
    let reply = plain.login("alice").await;
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["code"], "name-taken");
    let message = reply["message"].as_str().expect("message");
    assert!(
        message.contains("reserved") && message.contains("30s"),
        "{message}"
    );
    // Another name's token, a forged one, one that is not even a string.
    let forged = format!("{}x", &token[..token.len() - 1]);
    for bad in [json!(carol_token), json!(forged), json!("junk"), json!(42)] {
        let mut c = Client::connect(&server.url("/")).await;
        c.send(json!({"type": "login", "name": "alice", "resumeToken": bad}))
            .await;
        let reply = c.recv_type("login").await;
        assert_eq!(reply["success"], false, "{bad}: {reply}");
        assert_eq!(reply["code"], "invalid-token", "{bad}: {reply}");
    }
    // Still held for its owner.
    let (_a2, reply) = resume_with(&server, "alice", &token).await;
    assert_eq!(reply["resumed"], true, "{reply}");
}

#[tokio::test]
async fn resume_window_zero_behaves_as_today() {
    let server = server(Duration::ZERO).await;
    let mut a = Client::connect(&server.url("/")).await;
    a.send(json!({"type": "login", "name": "alice", "resume": true}))
        .await;
    let reply = a.recv_type("login").await;
    assert_eq!(reply["success"], true);
    assert!(reply.get("resumeToken").is_none(), "{reply}");
    assert!(reply.get("resumed").is_none(), "{reply}");
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    drop(a);
    let leave = next(&mut b).await;
    assert_eq!(leave["type"], "leave", "{leave}");
    assert_eq!(leave["reason"], "disconnected");
    // A token is ignored, and the name is free.
    let (_, reply) = resume_with(&server, "alice", "whatever").await;
    assert_eq!(reply["success"], true, "{reply}");
    assert!(reply.get("resumed").is_none(), "{reply}");
}

#[tokio::test]
async fn a_deliberate_close_is_not_held() {
    let server = server(Duration::from_secs(30)).await;
    let (mut a, _token) = resumable(&server, "alice").await;
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    a.ws.close(Some(CloseFrame {
        code: 1000.into(),
        reason: "signed out".into(),
    }))
    .await
    .expect("close");
    let leave = next(&mut b).await;
    assert_eq!(leave["type"], "leave", "{leave}");
    assert_eq!(leave["reason"], "disconnected");
    let mut again = Client::connect(&server.url("/")).await;
    assert_eq!(again.login("alice").await["success"], true);
}

#[tokio::test]
async fn a_going_away_close_is_held() {
    // What a browser sends when its tab is closed or reloaded.
    let server = server(Duration::from_secs(30)).await;
    let (mut a, token) = resumable(&server, "alice").await;
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    a.ws.close(Some(CloseFrame {
        code: 1001.into(),
        reason: "".into(),
    }))
    .await
    .expect("close");
    assert_eq!(next(&mut b).await["type"], "reconnecting");
    let (_a2, reply) = resume_with(&server, "alice", &token).await;
    assert_eq!(reply["resumed"], true, "{reply}");
}

#[tokio::test]
async fn a_token_takes_over_a_connection_the_server_thinks_alive() {
    // The client moved networks: its old connection is dead but not yet noticed.
    let server = server(Duration::from_secs(30)).await;
    let (mut a, token) = resumable(&server, "alice").await;
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    let (mut a2, reply) = resume_with(&server, "alice", &token).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(a.closed().await, Some(4000));
    assert_eq!(next(&mut b).await["type"], "resumed");
    b.send(json!({"type": "candidate", "name": "alice", "candidate": candidate_payload(5)}))
        .await;
    assert_eq!(next(&mut a2).await["candidate"], candidate_payload(5));
}

#[tokio::test]
async fn a_seed_client_is_not_held() {
    let server = server(Duration::from_secs(30)).await;
    let mut a = Client::connect(&server.url("/")).await;
    let reply = a.login("alice").await;
    assert!(reply.get("resumeToken").is_none(), "{reply}");
    let mut b = Client::connect(&server.url("/")).await;
    assert_eq!(b.login("bob").await["success"], true);
    connect_call(&mut a, "alice", &mut b, "bob").await;
    drop(a);
    let leave = next(&mut b).await;
    assert_eq!(leave["type"], "leave", "{leave}");
    assert_eq!(leave["reason"], "disconnected");
    let mut again = Client::connect(&server.url("/")).await;
    assert_eq!(again.login("alice").await["success"], true);
}
