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
    assert_metrics(
        &server,
        &[
            "duet_resume_attempts_total 1",
            "duet_resumes_total 0",
            "duet_resumes_expired_total 1",
        ],
    )
    .await;
}

/// Asserts every one of `lines` is on the server's /metrics page.
async fn assert_metrics(server: &Server, lines: &[&str]) {
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for line in lines {
        assert!(body.lines().any(|l| l == *line), "no `{line}` in\n{body}");
    }
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
    assert_metrics(
        &server,
        &[
            "duet_resume_attempts_total 5",
            "duet_resumes_refused_total 4",
            "duet_resumes_total 1",
            "duet_resumes_expired_total 0",
        ],
    )
    .await;
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

// ---- across a restart: the duet binary as a child process, killed and started again on
// the same port with the same data directory.

/// A duet process; SIGKILLed when dropped.
struct Process {
    addr: std::net::SocketAddr,
    child: std::process::Child,
}

impl Process {
    async fn start(addr: std::net::SocketAddr, data: &std::path::Path, extra: &[&str]) -> Process {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_duet"))
            .args(["--listen", &addr.to_string(), "--rate-limit", "0"])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("DUET_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the duet binary");
        wait_healthy(addr).await;
        Process { addr, child }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// SIGKILL: nothing is written or released on the way out.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits for the graceful shutdown to finish.
    fn stop(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
}

/// Waits until the table of resumable names in `data` lists every one of `names`: it is
/// written shortly after a change.
async fn wait_kept(data: &std::path::Path, port: u16, names: &[&str]) {
    let path = data.join(format!("resume-names-{port}.json"));
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if names.iter().all(|n| text.contains(&format!("\"{n}\""))) {
            return;
        }
        assert!(Instant::now() < deadline, "{names:?} not kept: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn resumable_at(url: &str, name: &str) -> (Client, String) {
    let mut c = Client::connect(url).await;
    c.send(json!({"type": "login", "name": name, "resume": true}))
        .await;
    let reply = c.recv_type("login").await;
    assert_eq!(reply["success"], true, "{reply}");
    (
        c,
        reply["resumeToken"].as_str().expect("a token").to_owned(),
    )
}

async fn resume_at(url: &str, name: &str, token: &str, call: Option<&str>) -> (Client, Value) {
    let mut c = Client::connect(url).await;
    let mut login = json!({"type": "login", "name": name, "resumeToken": token});
    if let Some(call) = call {
        login["call"] = json!(call);
    }
    c.send(login).await;
    let reply = c.recv_type("login").await;
    (c, reply)
}

/// Both sides of a call come back after the server is SIGKILLed and started again:
/// tokens still good (the key is in the data directory), names held against strangers,
/// and the call restored from both naming it, so renegotiation and hang-up work.
#[tokio::test]
async fn after_a_restart_tokens_names_and_the_call_come_back() {
    let data = TempDir::new("restart");
    let addr = free_addr();
    let mut duet = Process::start(addr, &data.0, &[]).await;
    let (mut a, ta) = resumable_at(&duet.url(), "alice").await;
    let (mut b, tb) = resumable_at(&duet.url(), "bob").await;
    connect_call(&mut a, "alice", &mut b, "bob").await;
    wait_kept(&data.0, addr.port(), &["alice", "bob"]).await;
    duet.kill();
    let killed = Instant::now();
    drop((a, b));
    let duet = Process::start(addr, &data.0, &[]).await;
    let restarted = killed.elapsed();

    // A stranger cannot take alice's name while she reconnects.
    let mut stranger = Client::connect(&duet.url()).await;
    let reply = stranger.login("alice").await;
    assert_eq!(reply["code"], "name-taken", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or("")
            .contains("reconnect"),
        "{reply}"
    );
    // Nor with a token that is not alice's latest.
    let (_, reply) = resume_at(&duet.url(), "alice", &tb, None).await;
    assert_eq!(reply["code"], "invalid-token", "{reply}");

    // Alice first: bob is not back yet, so the call waits for him.
    let (mut a, reply) = resume_at(&duet.url(), "alice", &ta, Some("bob")).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(
        next(&mut a).await,
        json!({"type": "reconnecting", "name": "bob"})
    );
    // What she sends him meanwhile is kept for him.
    a.send(json!({"type": "candidate", "name": "bob", "candidate": candidate_payload(1)}))
        .await;
    let (mut b, reply) = resume_at(&duet.url(), "bob", &tb, Some("alice")).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    let mut got = vec![next(&mut b).await, next(&mut b).await];
    got.sort_by_key(|v| v["type"].as_str().map(str::to_owned));
    assert_eq!(got[0]["candidate"], candidate_payload(1), "{got:?}");
    assert_eq!(got[1], json!({"type": "resumed", "name": "alice"}));
    assert_eq!(
        next(&mut a).await,
        json!({"type": "resumed", "name": "bob"})
    );
    eprintln!("SIGKILL to healthy again: {restarted:?}");

    // The call is back on both sides: a renegotiation from bob, then alice hangs up.
    b.send(json!({"type": "offer", "name": "alice", "offer": offer_payload()}))
        .await;
    let offer = next(&mut a).await;
    assert_eq!(offer["type"], "offer", "{offer}");
    a.send(json!({"type": "answer", "name": "bob", "answer": answer_payload()}))
        .await;
    assert_eq!(next(&mut b).await["type"], "answer");
    b.send(json!({"type": "candidate", "name": "alice", "candidate": candidate_payload(2)}))
        .await;
    assert_eq!(next(&mut a).await["candidate"], candidate_payload(2));
    a.send(json!({"type": "leave"})).await;
    let leave = next(&mut b).await;
    assert_eq!(
        (&leave["type"], &leave["reason"]),
        (&json!("leave"), &json!("hangup"))
    );
    // And the old tokens were spent: only the latest is accepted, across restarts too.
    let (_, reply) = resume_at(&duet.url(), "alice", &ta, None).await;
    assert_eq!(reply["code"], "invalid-token", "{reply}");
}

/// A graceful stop keeps the names too; a peer that comes back without naming the call
/// ends it, and one naming a call the other side has not got is told it is over.
#[tokio::test]
async fn after_a_graceful_restart_a_call_not_named_by_both_ends() {
    let data = TempDir::new("restart-term");
    let addr = free_addr();
    let mut duet = Process::start(addr, &data.0, &[]).await;
    let (mut a, ta) = resumable_at(&duet.url(), "alice").await;
    let (mut b, tb) = resumable_at(&duet.url(), "bob").await;
    let (_c, tc) = resumable_at(&duet.url(), "carol").await;
    connect_call(&mut a, "alice", &mut b, "bob").await;
    duet.stop();
    drop((a, b));
    let duet = Process::start(addr, &data.0, &[]).await;
    let mut stranger = Client::connect(&duet.url()).await;
    assert_eq!(stranger.login("bob").await["code"], "name-taken");

    let (mut a, reply) = resume_at(&duet.url(), "alice", &ta, Some("bob")).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(next(&mut a).await["type"], "reconnecting");
    // Bob comes back without the call (his page was reloaded and lost it): it is over.
    let (mut b, reply) = resume_at(&duet.url(), "bob", &tb, None).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    let leave = next(&mut a).await;
    assert_eq!(
        leave,
        json!({"type": "leave", "name": "bob", "reason": "hangup"})
    );
    // Carol names a call with bob, who has none: she hears at once that it is gone.
    let (mut c, reply) = resume_at(&duet.url(), "carol", &tc, Some("bob")).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    let leave = next(&mut c).await;
    assert_eq!(
        leave,
        json!({"type": "leave", "name": "bob", "reason": "disconnected"})
    );
    // Nobody is left in a call: bob's candidate to alice is refused.
    b.send(json!({"type": "candidate", "name": "alice", "candidate": candidate_payload(1)}))
        .await;
    assert_eq!(next(&mut b).await["code"], "not-in-call");
}

/// After a restart, a call pending a peer that never comes back ends when the peer's
/// window passes, and its name is then free.
#[tokio::test]
async fn after_a_restart_a_peer_that_does_not_come_back_ends_the_call() {
    let data = TempDir::new("restart-gone");
    let addr = free_addr();
    let window = ["--resume-window", "1s"];
    let mut duet = Process::start(addr, &data.0, &window).await;
    let (mut a, ta) = resumable_at(&duet.url(), "alice").await;
    let (mut b, _) = resumable_at(&duet.url(), "bob").await;
    connect_call(&mut a, "alice", &mut b, "bob").await;
    wait_kept(&data.0, addr.port(), &["alice", "bob"]).await;
    duet.kill();
    drop((a, b));
    let duet = Process::start(addr, &data.0, &window).await;
    let (mut a, reply) = resume_at(&duet.url(), "alice", &ta, Some("bob")).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(next(&mut a).await["type"], "reconnecting");
    let leave = next(&mut a).await;
    assert_eq!(
        leave,
        json!({"type": "leave", "name": "bob", "reason": "disconnected"})
    );
    let mut stranger = Client::connect(&duet.url()).await;
    assert_eq!(stranger.login("bob").await["success"], true);
}
