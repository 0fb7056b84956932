//! Sign-in against a real duet server on a loopback port: the household password
//! (`--password-file` with a hash printed by the real `duet hash-password`), the session
//! cookie, and WebSocket upgrades refused with 401 without it.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use common::*;

const PASSWORD: &str = "correct horse battery staple";

/// A response: status, headers (lower-case names), body.
struct Reply {
    status: u16,
    head: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{cookie}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    // argon2 is slow in a debug build on a busy machine: a long wait, not a measurement.
    tokio::time::timeout(WAIT * 6, stream.read_to_string(&mut response))
        .await
        .expect("http timeout")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

async fn sign_in(addr: SocketAddr, password: &str) -> Reply {
    let body = serde_json::json!({ "password": password }).to_string();
    request(addr, "POST", "/auth/password", None, &body).await
}

/// The status of a WebSocket upgrade to `/ws` with `cookie`, and the client when it worked.
async fn upgrade(addr: SocketAddr, cookie: Option<&str>) -> Result<Client, u16> {
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    if let Some(cookie) = cookie {
        req.headers_mut().insert(
            "cookie",
            HeaderValue::from_str(cookie).expect("cookie value"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("upgrade failed without a status: {e}"),
    }
}

/// The real binary's `duet hash-password`, fed the password on standard input.
fn hash_with_the_binary(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duet"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run duet hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let output = child.wait_with_output().expect("hash-password output");
    assert!(output.status.success());
    let line = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(line.lines().count(), 1, "{line}");
    line
}

async fn password_server() -> (Server, std::path::PathBuf) {
    let file = std::env::temp_dir().join(format!(
        "duet-password-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&file, hash_with_the_binary(PASSWORD)).expect("write password file");
    let path = file.clone();
    let server = Server::start(move |c| c.auth.password_file = Some(path)).await;
    server.wait_healthy().await;
    (server, file)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

#[tokio::test]
async fn the_password_signs_in_and_nothing_else_does() {
    let (mut server, file) = password_server().await;
    let addr = server.addr;

    // Without a session: no WebSocket, so no name, no user list, no TURN credentials.
    assert_eq!(upgrade(addr, None).await.err(), Some(401));
    let status = request(addr, "GET", "/auth/status", None, "").await;
    assert_eq!(status.body["password"], true);
    assert_eq!(status.body["signedIn"], false);

    // Wrong password: 401, no cookie.
    let wrong = sign_in(addr, "correct horse battery stapl").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["code"], "wrong-password");
    assert!(wrong.header("set-cookie").is_none());

    // Right password: the cookie, HttpOnly and SameSite (not Secure: plain HTTP).
    let right = sign_in(addr, PASSWORD).await;
    assert_eq!(right.status, 200, "{}", right.head);
    let set_cookie = right
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("name=value")
        .to_string();

    let status = request(addr, "GET", "/auth/status", Some(&cookie), "").await;
    assert_eq!(status.body["signedIn"], true);

    // With it, the WebSocket works and logs in as usual.
    let mut alice = upgrade(addr, Some(&cookie))
        .await
        .expect("signed-in upgrade");
    assert_eq!(alice.login("alice").await["success"], true);

    // A cookie with a changed expiry, or made up, is refused.
    let (payload, tag) = cookie.rsplit_once('.').expect("tag");
    let forged = format!("{}9.{tag}", payload);
    assert_eq!(upgrade(addr, Some(&forged)).await.err(), Some(401));
    assert_eq!(
        upgrade(addr, Some("duet_session=v1.99999999999.AAAA"))
            .await
            .err(),
        Some(401)
    );

    // Sign-out clears the cookie.
    let out = request(addr, "POST", "/auth/logout", Some(&cookie), "").await;
    assert_eq!(out.status, 204);
    assert!(
        out.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );

    alice.close().await;
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn password_attempts_are_throttled_per_address() {
    let (mut server, file) = password_server().await;
    // A burst of 5 attempts, then one per 10 s: within 8 wrong ones, 429 comes.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let reply = sign_in(server.addr, "guess").await;
        statuses.push(reply.status);
        if reply.status == 429 {
            assert_eq!(reply.body["code"], "rate-limited");
            assert_eq!(reply.header("retry-after"), Some("10"));
            break;
        }
        assert_eq!(reply.status, 401);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses.len() >= 6,
        "the first 5 attempts are not throttled: {statuses:?}"
    );
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn a_bad_password_file_fails_startup() {
    let file = std::env::temp_dir().join(format!("duet-bad-password-{}", std::process::id()));
    std::fs::write(&file, "hunter2\n").expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut config = Config::default_for(listener.local_addr().expect("addr"));
    config.auth.password_file = Some(file.clone());
    let error = duet::run(config, listener, std::future::pending())
        .await
        .expect_err("refused");
    assert!(
        format!("{error:#}").contains("duet hash-password"),
        "{error:#}"
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn without_a_password_the_server_stays_open() {
    let mut server = Server::start(|_| {}).await;
    let mut bob = upgrade(server.addr, None).await.expect("open upgrade");
    assert_eq!(bob.login("bob").await["success"], true);
    let reply = sign_in(server.addr, "anything").await;
    assert_eq!(reply.status, 404);
    bob.close().await;
    server.shutdown().await.expect("shutdown");
}

// ---- tokens from an application

const SECRET: &str = "an application secret of 32 bytes or more";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret).expect("key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &key,
    )
    .expect("sign")
}

/// The upgrade with `?token=`: the client, or the status and the 401's body.
async fn with_token(addr: SocketAddr, token: &str) -> Result<Client, (u16, String)> {
    let url = format!("ws://{addr}/ws?token={token}");
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("upgrade failed without a status: {e}"),
    }
}

async fn refused(addr: SocketAddr, token: &str, why: &str) {
    match with_token(addr, token).await {
        Ok(_) => panic!("a token that should be refused ({why}) was accepted"),
        Err((status, body)) => {
            assert_eq!(status, 401, "{why}: {body}");
            assert!(body.contains(why), "expected {why:?} in {body:?}");
        }
    }
}

#[tokio::test]
async fn a_token_logs_in_at_once_as_its_user() {
    let mut server = Server::start(|c| c.auth.jwt_secret = Some(SECRET.into())).await;
    let addr = server.addr;
    assert_eq!(upgrade(addr, None).await.err(), Some(401));

    let token = hs256(
        &serde_json::json!({"sub": "u-1", "name": "Alice", "exp": now() + 600}),
        SECRET.as_bytes(),
    );
    let mut alice = with_token(addr, &token).await.expect("accepted");
    // Logged in without a login message, under the token's name.
    let reply = alice.recv_type("login").await;
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["name"], "Alice");
    assert!(reply["iceServers"].is_array());
    // A login message (any name) gets the same reply.
    alice
        .send(serde_json::json!({"type": "login", "name": "mallory"}))
        .await;
    let again = alice.recv_type("login").await;
    assert_eq!(again["success"], true);
    assert_eq!(again["name"], "Alice");

    // No name: `sub` is the name. A look-alike of Alice's name is taken.
    let token = hs256(
        &serde_json::json!({"sub": "bob", "exp": now() + 600}),
        SECRET.as_bytes(),
    );
    let mut bob = with_token(addr, &token).await.expect("accepted");
    assert_eq!(bob.recv_type("login").await["name"], "bob");
    let token = hs256(
        &serde_json::json!({"sub": "u-3", "name": "ALICE", "exp": now() + 600}),
        SECRET.as_bytes(),
    );
    let mut shouting = with_token(addr, &token).await.expect("accepted");
    assert_eq!(shouting.recv_type("login").await["code"], "name-taken");

    // Within the leeway, an exp just past is still fine.
    let token = hs256(
        &serde_json::json!({"sub": "carol", "exp": now() - 30}),
        SECRET.as_bytes(),
    );
    assert!(with_token(addr, &token).await.is_ok(), "60 s leeway");

    alice.close().await;
    bob.close().await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_tokens_get_401_with_the_reason() {
    let mut server = Server::start(|c| c.auth.jwt_secret = Some(SECRET.into())).await;
    let addr = server.addr;
    let t = now();
    let secret = SECRET.as_bytes();
    refused(
        addr,
        &hs256(&serde_json::json!({"sub": "a", "exp": t - 120}), secret),
        "expired",
    )
    .await;
    refused(
        addr,
        &hs256(
            &serde_json::json!({"sub": "a", "exp": t + 600, "nbf": t + 600}),
            secret,
        ),
        "not valid yet",
    )
    .await;
    refused(
        addr,
        &hs256(
            &serde_json::json!({"sub": "a", "exp": t + 600}),
            b"another secret of thirty-two bytes!!",
        ),
        "signature",
    )
    .await;
    refused(
        addr,
        &hs256(&serde_json::json!({"sub": "a"}), secret),
        "no exp claim",
    )
    .await;
    refused(
        addr,
        &hs256(&serde_json::json!({"name": "a", "exp": t + 600}), secret),
        "missing field `sub`",
    )
    .await;
    // Claims of the wrong JSON type.
    refused(
        addr,
        &hs256(
            &serde_json::json!({"sub": "a", "exp": (t + 600).to_string()}),
            secret,
        ),
        "exp claim",
    )
    .await;
    refused(
        addr,
        &hs256(&serde_json::json!({"sub": 7, "exp": t + 600}), secret),
        "wrong JSON type",
    )
    .await;
    refused(
        addr,
        &hs256(
            &serde_json::json!({"sub": "a", "name": ["a"], "exp": t + 600}),
            secret,
        ),
        "wrong JSON type",
    )
    .await;
    // `alg: none`, unsigned.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::json!({"sub": "a", "exp": t + 600}).to_string())
    );
    refused(addr, &none, "not a usable JWT").await;
    refused(addr, "garbage", "not a usable JWT").await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_public_key_accepts_its_algorithm_only() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
    let public = std::env::temp_dir().join(format!("duet-jwt-{}.pem", std::process::id()));
    std::fs::write(&public, pair.public_key_pem()).expect("write key");
    let path = public.clone();
    let mut server = Server::start(move |c| c.auth.jwt_public_key = Some(path)).await;
    let addr = server.addr;
    let claims = serde_json::json!({"sub": "dana", "exp": now() + 600});
    let signing =
        jsonwebtoken::EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("key");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &signing,
    )
    .expect("sign");
    let mut dana = with_token(addr, &token).await.expect("EdDSA accepted");
    assert_eq!(dana.recv_type("login").await["name"], "dana");
    // HS/RS confusion: HS256 "signed" with the public key's PEM as the secret.
    let confused = hs256(&claims, pair.public_key_pem().as_bytes());
    refused(addr, &confused, "HS256 is not accepted").await;
    dana.close().await;
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_file(public);
}

/// A token's TURN credentials expire with the token (the REST username is
/// `<expiry>:<name>`), not `--turn-ttl` (24 h) later.
#[tokio::test]
async fn turn_credentials_end_with_the_token() {
    let mut server = Server::start(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.ice.turn = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        c.ice.turn_secret = Some("turn secret".into());
    })
    .await;
    let exp = now() + 600;
    let token = hs256(
        &serde_json::json!({"sub": "erin", "exp": exp}),
        SECRET.as_bytes(),
    );
    let mut erin = with_token(server.addr, &token).await.expect("accepted");
    let reply = erin.recv_type("login").await;
    let turn = reply["iceServers"]
        .as_array()
        .and_then(|servers| servers.iter().find(|s| s["username"].is_string()))
        .unwrap_or_else(|| panic!("no TURN server in {reply}"));
    let username = turn["username"].as_str().unwrap_or_default();
    let expiry: i64 = username
        .split_once(':')
        .and_then(|(e, _)| e.parse().ok())
        .unwrap_or_else(|| panic!("not a REST username: {username}"));
    assert!(
        expiry <= exp,
        "TURN expiry {expiry} after the token's {exp}"
    );
    assert!(
        expiry >= exp - 60,
        "TURN expiry {expiry} far before the token's {exp}"
    );
    erin.close().await;
    server.shutdown().await.expect("shutdown");
}
