//! Protocol cases that hold for any deployment: each takes a [`Cluster`] and spreads its
//! users over the nodes (user `i` on node `i % nodes`). `tests/protocol.rs` runs them on one
//! node; the cluster tests run them across nodes.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// Calls `$run!` with the name of every case, so that each deployment runs all of them
/// and a new case cannot be forgotten in one of the lists.
macro_rules! all_cases {
    ($run:ident) => {
        $run!(
            seed_flow,
            bad_input_gets_errors,
            nothing_relayed_before_login,
            offline_targets_get_errors,
            busy_and_renegotiation,
            strangers_cannot_interfere,
            close_during_call,
            decline_cancel_and_leave_without_name,
            second_login_refused,
            glare_settles_into_a_call,
            login_race,
            candidates_in_order,
            in_flight_frames_do_not_reach_the_next_holder,
            presence,
            presence_bursts_come_in_batches,
            look_alike_names_are_one_name,
        );
    };
}
pub(crate) use all_cases;

/// The ring timeout the cases run with: short, so that a call wrongly left ringing shows
/// up as an unexpected `leave` within a case.
pub const RING_TIMEOUT: Duration = Duration::from_secs(1);

/// The seed tutorial's whole flow, message for message.
pub async fn seed_flow(c: &Cluster) {
    let mut a = c.user(0, "alice").await;
    let mut b = c.user(1, "bob").await;

    a.send(json!({"type": "offer", "name": "bob", "offer": offer_payload()}))
        .await;
    let offer = b.recv_type("offer").await;
    assert_eq!(offer["offer"], offer_payload(), "offer relayed exactly");
    assert_eq!(offer["name"], "alice");
    // Extension: the caller learns that it rings.
    let ringing = loop {
        let v = a.recv().await;
        if v["type"] != "presence" {
            break v;
        }
    };
    assert_eq!(ringing["type"], "ringing", "{ringing}");
    assert_eq!(ringing["name"], "bob");

    // The callee's browser may send candidates before its answer.
    b.send(json!({"type": "candidate", "name": "alice", "candidate": candidate_payload(1)}))
        .await;
    assert_eq!(
        a.recv_type("candidate").await["candidate"],
        candidate_payload(1)
    );

    b.send(json!({"type": "answer", "name": "alice", "answer": answer_payload()}))
        .await;
    let answer = a.recv_type("answer").await;
    assert_eq!(answer["answer"], answer_payload());
    assert_eq!(answer["name"], "bob");

    a.send(json!({"type": "candidate", "name": "bob", "candidate": candidate_payload(2)}))
        .await;
    let cand = b.recv_type("candidate").await;
    assert_eq!(cand["candidate"], candidate_payload(2));
    assert_eq!(cand["name"], "alice");

    a.send(json!({"type": "leave", "name": "bob"})).await;
    let leave = b.recv_type("leave").await;
    assert_eq!(leave["name"], "alice");
    assert_eq!(leave["reason"], "hangup");

    // A name is free again once its connection is gone.
    a.close().await;
    let mut again = c.client(2).await;
    let mut reply = again.login("alice").await;
    for _ in 0..50 {
        if reply["success"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = again.login("alice").await;
    }
    assert_eq!(reply["success"], true, "{reply}");
}

pub async fn bad_input_gets_errors(c: &Cluster) {
    let mut a = c.client(0).await;
    let cases: &[(&str, &str)] = &[
        ("hello", "invalid-json"),
        ("[1,2,3]", "not-an-object"),
        ("\"text\"", "not-an-object"),
        ("{}", "invalid-message"),
        ("{\"type\":42}", "invalid-message"),
        ("{\"type\":\"dance\"}", "unknown-type"),
    ];
    for (text, code) in cases {
        a.send_text(text).await;
        let e = a.recv_type("error").await;
        assert_eq!(e["code"], *code, "for {text}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    a.send_text("{\"type\":\"dance\"}").await;
    assert_eq!(
        a.recv_type("error").await["message"],
        "Command not found: dance"
    );

    // Binary frames are refused with an error, and the connection stays usable.
    a.ws.send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    assert_eq!(a.recv_type("error").await["code"], "binary-not-supported");

    // Bad names: a failed login with a reason.
    for name in [
        json!(""),
        json!("   "),
        json!("x".repeat(65)),
        json!("a\u{0}b"),
        json!(7),
        json!(null),
    ] {
        a.send(json!({"type": "login", "name": name})).await;
        let reply = a.recv_type("login").await;
        assert_eq!(reply["success"], false, "{name}");
        assert_eq!(reply["code"], "invalid-name", "{name}");
    }

    let mut a = c.user(0, "  ünïcødé 名前 🎥 ").await;
    let b_name = "bob-bad-input";
    let mut b = c.user(1, b_name).await;
    for (msg, code) in [
        (
            json!({"type": "offer", "offer": offer_payload()}),
            "invalid-message",
        ),
        (json!({"type": "offer", "name": b_name}), "invalid-message"),
        (
            json!({"type": "offer", "name": b_name, "offer": "sdp"}),
            "invalid-message",
        ),
        (
            json!({"type": "offer", "name": 5, "offer": offer_payload()}),
            "invalid-message",
        ),
        (
            json!({"type": "candidate", "name": b_name}),
            "invalid-message",
        ),
        (
            json!({"type": "answer", "name": b_name, "answer": [1]}),
            "invalid-message",
        ),
    ] {
        a.send(msg.clone()).await;
        let e = a.recv_type("error").await;
        assert_eq!(e["code"], code, "for {msg}: {e}");
    }
    // The trimmed name is the one others see.
    a.send(json!({"type": "offer", "name": b_name, "offer": offer_payload()}))
        .await;
    assert_eq!(b.recv_type("offer").await["name"], "ünïcødé 名前 🎥");
}

pub async fn nothing_relayed_before_login(c: &Cluster) {
    let mut b = c.user(1, "bob-nl").await;
    let mut anon = c.client(0).await;
    for kind in ["offer", "answer", "candidate", "leave"] {
        anon.send(json!({"type": kind, "name": "bob-nl", kind: {"x": 1}}))
            .await;
        let e = anon.recv_type("error").await;
        assert_eq!(e["code"], "not-logged-in", "{kind}: {e}");
        assert_eq!(e["request"], kind);
    }
    b.silent_for(Duration::from_millis(300)).await;
}

/// The seed crashed on both of these.
pub async fn offline_targets_get_errors(c: &Cluster) {
    // Anyone sends leave to a name that is not online.
    let mut a = c.user(0, "alice-off").await;
    a.send(json!({"type": "leave", "name": "nobody"})).await;
    let e = a.recv_type("error").await;
    assert_eq!(e["code"], "not-online");
    assert_eq!(e["name"], "nobody");

    for kind in ["offer", "answer", "candidate"] {
        a.send(json!({"type": kind, "name": "nobody", kind: {"x": 1}}))
            .await;
        let e = a.recv_type("error").await;
        assert_eq!(e["code"], "not-online", "{kind}: {e}");
    }

    // The caller hangs up after the callee closed the tab without answering.
    let b = {
        let mut b = c.user(1, "bob-off").await;
        a.send(json!({"type": "offer", "name": "bob-off", "offer": offer_payload()}))
            .await;
        b.recv_type("offer").await;
        b
    };
    b.close().await;
    let leave = a.recv_type("leave").await;
    assert_eq!(leave["name"], "bob-off");
    assert_eq!(leave["reason"], "disconnected");
    a.send(json!({"type": "leave", "name": "bob-off"})).await;
    assert_eq!(a.recv_type("error").await["code"], "not-online");

    // The server is still up and serving.
    let mut x = c.user(2, "still-up").await;
    x.send(json!({"type": "offer", "name": "alice-off", "offer": offer_payload()}))
        .await;
    assert_eq!(a.recv_type("offer").await["name"], "still-up");
}

pub async fn busy_and_renegotiation(c: &Cluster) {
    let mut a = c.user(0, "alice-busy").await;
    let mut b = c.user(1, "bob-busy").await;
    let mut x = c.user(2, "carol-busy").await;
    connect_call(&mut a, "alice-busy", &mut b, "bob-busy").await;

    x.send(json!({"type": "offer", "name": "bob-busy", "offer": offer_payload()}))
        .await;
    let e = x.recv_type("error").await;
    assert_eq!(e["code"], "busy", "{e}");
    assert_eq!(e["name"], "bob-busy");
    b.silent_for(Duration::from_millis(200)).await;

    // Renegotiation in both directions is relayed.
    a.send(json!({"type": "offer", "name": "bob-busy", "offer": {"type": "offer", "sdp": "v=0 again"}})).await;
    assert_eq!(b.recv_type("offer").await["offer"]["sdp"], "v=0 again");
    b.send(json!({"type": "offer", "name": "alice-busy", "offer": {"type": "offer", "sdp": "v=0 back"}})).await;
    assert_eq!(a.recv_type("offer").await["offer"]["sdp"], "v=0 back");

    // Calling someone else while in a call is refused.
    a.send(json!({"type": "offer", "name": "carol-busy", "offer": offer_payload()}))
        .await;
    assert_eq!(a.recv_type("error").await["code"], "already-in-call");

    // Calling yourself.
    x.send(json!({"type": "offer", "name": "carol-busy", "offer": offer_payload()}))
        .await;
    assert_eq!(x.recv_type("error").await["code"], "cannot-call-self");

    // After a hang-up both are free: carol can call bob.
    b.send(json!({"type": "leave", "name": "alice-busy"})).await;
    assert_eq!(a.recv_type("leave").await["name"], "bob-busy");
    x.send(json!({"type": "offer", "name": "bob-busy", "offer": offer_payload()}))
        .await;
    assert_eq!(b.recv_type("offer").await["name"], "carol-busy");
}

/// Strangers cannot inject candidates into a call or hang it up.
pub async fn strangers_cannot_interfere(c: &Cluster) {
    let mut a = c.user(0, "alice-s").await;
    let mut b = c.user(1, "bob-s").await;
    let mut x = c.user(2, "mallory-s").await;
    connect_call(&mut a, "alice-s", &mut b, "bob-s").await;
    for kind in ["candidate", "answer", "leave"] {
        x.send(json!({"type": kind, "name": "bob-s", kind: {"x": 1}}))
            .await;
        let e = x.recv_type("error").await;
        assert_eq!(e["code"], "not-in-call", "{kind}: {e}");
    }
    b.silent_for(Duration::from_millis(200)).await;
    // The call still works.
    a.send(json!({"type": "candidate", "name": "bob-s", "candidate": candidate_payload(9)}))
        .await;
    assert_eq!(
        b.recv_type("candidate").await["candidate"],
        candidate_payload(9)
    );
}

pub async fn close_during_call(c: &Cluster) {
    let mut a = c.user(0, "alice-c").await;
    let mut b = c.user(1, "bob-c").await;
    connect_call(&mut a, "alice-c", &mut b, "bob-c").await;
    drop(a); // no close handshake: the TCP connection just goes away
    let leave = b.recv_type("leave").await;
    assert_eq!(leave["name"], "alice-c");
    assert_eq!(leave["reason"], "disconnected");
    // bob is free again, and alice's name is too.
    let mut a2 = c.user(2, "alice-c").await;
    a2.send(json!({"type": "offer", "name": "bob-c", "offer": offer_payload()}))
        .await;
    assert_eq!(b.recv_type("offer").await["name"], "alice-c");
}

pub async fn decline_cancel_and_leave_without_name(c: &Cluster) {
    let mut a = c.user(0, "alice-d").await;
    let mut b = c.user(1, "bob-d").await;
    a.send(json!({"type": "offer", "name": "bob-d", "offer": offer_payload()}))
        .await;
    b.recv_type("offer").await;
    b.send(json!({"type": "leave", "name": "alice-d", "reason": "declined"}))
        .await;
    let leave = a.recv_type("leave").await;
    assert_eq!(leave["reason"], "declined");
    assert_eq!(leave["name"], "bob-d");

    a.send(json!({"type": "offer", "name": "bob-d", "offer": offer_payload()}))
        .await;
    b.recv_type("offer").await;
    a.send(json!({"type": "leave", "reason": "cancelled"}))
        .await;
    let leave = b.recv_type("leave").await;
    assert_eq!(leave["reason"], "cancelled");
    assert_eq!(leave["name"], "alice-d");

    a.send(json!({"type": "leave"})).await;
    assert_eq!(a.recv_type("error").await["code"], "not-in-call");
}

/// Glare: both call each other at once; one answers the other's offer. The call is then
/// established on both sides and does not ring out.
pub async fn glare_settles_into_a_call(c: &Cluster) {
    let mut a = c.user(0, "alice-g").await;
    let mut b = c.user(1, "bob-g").await;
    // bob-g's offer is in first (it rings at alice-g's), then alice-g's crosses it.
    b.send(json!({"type": "offer", "name": "alice-g", "offer": offer_payload()}))
        .await;
    assert_eq!(a.recv_type("offer").await["name"], "bob-g");
    a.send(json!({"type": "offer", "name": "bob-g", "offer": offer_payload()}))
        .await;
    assert_eq!(b.recv_type("offer").await["name"], "alice-g");
    // The later name (bob-g) answers alice-g's offer and drops its own.
    b.send(json!({"type": "answer", "name": "alice-g", "answer": answer_payload()}))
        .await;
    assert_eq!(a.recv_type("answer").await["name"], "bob-g");
    // Longer than the ring timeout the cluster runs with: nothing ends the call.
    a.silent_for(Duration::from_millis(1500)).await;
    b.silent_for(Duration::from_millis(10)).await;
    a.send(json!({"type": "leave"})).await;
    assert_eq!(b.recv_type("leave").await["reason"], "hangup");
}

pub async fn second_login_refused(c: &Cluster) {
    let mut a = c.user(0, "first-name").await;
    a.send(json!({"type": "login", "name": "second-name"}))
        .await;
    let e = a.recv_type("error").await;
    assert_eq!(e["code"], "already-logged-in");
    // The first name is still held by this connection; the second is free.
    let mut other = c.client(1).await;
    assert_eq!(other.login("first-name").await["code"], "name-taken");
    assert_eq!(other.login("second-name").await["success"], true);
    // And the first connection still works under its first name.
    other
        .send(json!({"type": "offer", "name": "first-name", "offer": offer_payload()}))
        .await;
    assert_eq!(a.recv_type("offer").await["name"], "second-name");
}

/// Many connections race for one name: exactly one wins.
pub async fn login_race(c: &Cluster) {
    let mut clients = Vec::new();
    for i in 0..50 {
        clients.push(c.client(i).await);
    }
    let replies = futures_util::future::join_all(clients.iter_mut().map(|c| async move {
        c.send(json!({"type": "login", "name": "racer"})).await;
        c.recv_type("login").await
    }))
    .await;
    let winners = replies.iter().filter(|r| r["success"] == true).count();
    assert_eq!(winners, 1, "{replies:?}");
    for r in replies.iter().filter(|r| r["success"] == false) {
        assert_eq!(r["code"], "name-taken");
    }
}

/// 5,000 candidates arrive in order, none lost.
pub async fn candidates_in_order(c: &Cluster) {
    let mut a = c.user(0, "alice-o").await;
    let mut b = c.user(1, "bob-o").await;
    connect_call(&mut a, "alice-o", &mut b, "bob-o").await;
    const N: usize = 5000;
    let sender = async {
        for i in 0..N {
            a.send(
                json!({"type": "candidate", "name": "bob-o", "candidate": candidate_payload(i)}),
            )
            .await;
        }
    };
    let receiver = async {
        for i in 0..N {
            let v = b.recv_type("candidate").await;
            assert_eq!(v["candidate"], candidate_payload(i), "message {i}");
        }
    };
    tokio::join!(sender, receiver);
}

/// Issue 15 finding 10: candidates in flight to a user whose connection drops must not
/// reach whoever takes the name next (they are for the old call): the new holder is in
/// no call with the sender, so the call rules bounce them to their sender.
pub async fn in_flight_frames_do_not_reach_the_next_holder(c: &Cluster) {
    let mut a = c.user(0, "alice-f").await;
    let mut b = c.user(1, "bob-f").await;
    connect_call(&mut a, "alice-f", &mut b, "bob-f").await;
    const N: usize = 1500;
    let (dropping, dropped) = tokio::sync::oneshot::channel();
    let sender = async {
        let mut dropping = Some(dropping);
        for i in 0..N {
            a.send(
                json!({"type": "candidate", "name": "bob-f", "candidate": candidate_payload(i)}),
            )
            .await;
            if i == 100
                && let Some(tx) = dropping.take()
            {
                let _ = tx.send(());
            }
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        a
    };
    let taker = async {
        let _ = dropped.await;
        drop(b); // no close handshake, while candidates keep coming
        // Take the name as soon as it is free, while candidates are still in flight.
        loop {
            let mut b2 = c.client(2).await;
            let reply = b2.login("bob-f").await;
            if reply["success"] == true {
                return b2;
            }
            assert_eq!(reply["code"], "name-taken", "{reply}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (mut a, mut b2) = tokio::join!(sender, taker);
    // Nothing of the old call reaches the new holder.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(next) = tokio::time::timeout_at(deadline, b2.next_json()).await {
        let v = next.expect("open");
        assert!(
            v["type"] == "presence",
            "the new holder got a frame of the old call: {v}"
        );
    }
    // The sender heard the call end, and candidates that found no call were refused to
    // it (before or after the leave).
    let (mut refused, mut by_new_holder, mut left) = (0, 0, false);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(next) = tokio::time::timeout_at(deadline, a.next_json()).await {
        let v = next.expect("open");
        match v["type"].as_str() {
            Some("leave") => {
                assert_eq!(v["name"], "bob-f");
                left = true;
            }
            Some("error") => {
                refused += 1;
                if v["code"] == "not-in-call" {
                    by_new_holder += 1;
                }
                assert!(
                    ["not-in-call", "not-online", "delivery-failed"]
                        .contains(&v["code"].as_str().unwrap_or_default()),
                    "{v}"
                )
            }
            _ => assert_eq!(v["type"], "presence", "{v}"),
        }
    }
    assert!(left, "no leave for the dropped peer");
    eprintln!(
        "in-flight case: {refused} of {N} candidates refused to the sender, \
         {by_new_holder} of them by the new holder"
    );
}

pub async fn presence(c: &Cluster) {
    let mut a = c.user(0, "alice-p").await;
    let mut b = c.client(1).await;
    let reply = b.login("bob-p").await;
    assert!(
        reply["users"]
            .as_array()
            .is_some_and(|u| u.contains(&json!("alice-p"))),
        "{reply}"
    );
    assert!(reply["iceServers"].is_array());
    loop {
        let p = a.recv_type("presence").await;
        if p["name"] == "bob-p" {
            assert_eq!(p["online"], true);
            break;
        }
    }
    b.close().await;
    loop {
        let p = a.recv_type("presence").await;
        if p["name"] == "bob-p" {
            assert_eq!(p["online"], false);
            break;
        }
    }
}

/// Users in a burst that reaches a client, and the frames it took, read until every one of
/// `names` has been reported `online` (as `presence` or `presence-batch`).
async fn presence_burst(client: &mut Client, names: &[String], online: bool) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let (mut batches, mut singles) = (0, 0);
    while seen.len() < names.len() {
        let v = client.recv().await;
        match v["type"].as_str() {
            Some("presence-batch") => {
                batches += 1;
                let (this, other) = if online {
                    ("online", "offline")
                } else {
                    ("offline", "online")
                };
                for name in v[this].as_array().expect("a list of names") {
                    let name = name.as_str().expect("a name").to_string();
                    assert!(names.contains(&name), "unexpected {name} in {v}");
                    assert!(seen.insert(name), "reported twice: {v}");
                }
                assert_eq!(v[other], json!([]), "{v}");
            }
            Some("presence") => {
                singles += 1;
                assert_eq!(v["online"], online, "{v}");
                let name = v["name"].as_str().expect("a name").to_string();
                assert!(names.contains(&name), "unexpected {v}");
                assert!(seen.insert(name), "reported twice: {v}");
            }
            _ => panic!("expected presence, got {v}"),
        }
    }
    (batches, singles)
}

/// A burst of logins (and then of logouts) reaches a client that asked for
/// `presence-batch` as a few frames carrying every name once; a client that did not ask
/// gets one `presence` per user, as before.
pub async fn presence_bursts_come_in_batches(c: &Cluster) {
    const N: usize = 60;
    let mut batched = c.client(0).await;
    batched
        .send(json!({"type": "login", "name": "watch-b", "presenceBatch": true}))
        .await;
    assert_eq!(batched.recv_type("login").await["success"], true);
    let mut plain = c.user(1, "watch-p").await;
    let names: Vec<String> = (0..N).map(|i| format!("burst{i}")).collect();
    let users =
        futures_util::future::join_all(names.iter().enumerate().map(|(i, name)| c.user(i, name)))
            .await;
    // The batched observer hears the plain one come too (the plain one found it in `users`).
    let mut with_plain = names.clone();
    with_plain.push("watch-p".to_string());
    let (b_batches, b_singles) = presence_burst(&mut batched, &with_plain, true).await;
    let (p_batches, p_singles) = presence_burst(&mut plain, &names, true).await;
    assert_eq!(p_batches, 0, "a client that did not ask got presence-batch");
    assert_eq!(p_singles, N);
    assert!(
        b_batches + b_singles < N / 2,
        "{N} logins came in {b_batches} batches and {b_singles} single frames"
    );
    futures_util::future::join_all(users.into_iter().map(Client::close)).await;
    let (l_batches, l_singles) = presence_burst(&mut batched, &names, false).await;
    let (_, p_left) = presence_burst(&mut plain, &names, false).await;
    assert_eq!(p_left, N);
    assert!(
        l_batches + l_singles < N / 2,
        "{N} logouts came in {l_batches} batches and {l_singles} single frames"
    );
    eprintln!(
        "presence burst of {N}: logins in {b_batches} batch and {b_singles} single frames, \
         logouts in {l_batches} batch and {l_singles} single frames"
    );
}

/// While `bob` is online, names that differ only in case or in look-alike letters are
/// taken, on any node, with a message that says why; names are shown as typed, and a
/// look-alike spelling of an online name reaches that user.
pub async fn look_alike_names_are_one_name(c: &Cluster) {
    let mut bob = c.user(0, "bob").await;
    let mut watcher = c.user(1, "watcher-l").await;
    // Cyrillic о, Greek ο, fullwidth b o b.
    let look_alikes = [
        "Bob",
        "BOB",
        "b\u{043E}b",
        "b\u{03BF}b",
        "\u{FF42}\u{FF4F}\u{FF42}",
    ];
    for (i, name) in look_alikes.iter().enumerate() {
        let mut other = c.client(i + 2).await;
        let reply = other.login(name).await;
        assert_eq!(reply["code"], "name-taken", "{name}: {reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("looks like") && message.contains(name),
            "{name}: {message}"
        );
    }
    // A call to a look-alike spelling reaches bob, who sees the caller's name as typed.
    watcher
        .send(json!({"type": "offer", "name": "BOB", "offer": offer_payload()}))
        .await;
    let offer = bob.recv_type("offer").await;
    assert_eq!(offer["name"], "watcher-l");
    bob.send(json!({"type": "leave", "name": "watcher-l", "reason": "declined"}))
        .await;
    assert_eq!(watcher.recv_type("leave").await["reason"], "declined");
    // Different names are still different.
    let mut bobby = c.client(3).await;
    assert_eq!(bobby.login("bobby").await["success"], true);
    // Once bob is gone, the name is free in any spelling, and shown as that spelling.
    bob.close().await;
    let mut shouting = c.client(2).await;
    let mut reply = shouting.login("BOB").await;
    for _ in 0..50 {
        if reply["success"] == true {
            break;
        }
        // bob's release may still be on its way to the registry.
        assert_eq!(reply["code"], "name-taken", "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = shouting.login("BOB").await;
    }
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["name"], "BOB");
    let mut late = c.client(4).await;
    let reply = late.login("late-l").await;
    let users = reply["users"].as_array().cloned().unwrap_or_default();
    assert!(users.contains(&json!("BOB")), "{reply}");
    assert!(!users.contains(&json!("bob")), "{reply}");
    // Look-alike spellings racing on every node: exactly one wins.
    let spellings = ["racer-l", "Racer-L", "RACER-L", "r\u{0430}cer-l", "racer-1"];
    let mut racers = Vec::new();
    for i in 0..spellings.len() * 4 {
        racers.push(c.client(i).await);
    }
    let replies = futures_util::future::join_all(
        racers
            .iter_mut()
            .enumerate()
            .map(|(i, racer)| async move { racer.login(spellings[i % spellings.len()]).await }),
    )
    .await;
    let winners = replies.iter().filter(|r| r["success"] == true).count();
    assert_eq!(winners, 1, "{replies:?}");
}
