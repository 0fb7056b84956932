//! TURN credentials, the embedded TURN server and HTTPS/WSS, against a real duet on
//! loopback: what a logged-in client gets in `iceServers` must actually open a relay, and a
//! `--tls-self-signed` server must serve `wss://` and `https://` with the certificate it
//! stored.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Server, WAIT};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use turn::client::{Client as TurnClient, ClientConfig};

const SECRET: &str = "integration-secret";

/// The one TURN entry of a login reply's `iceServers`.
fn turn_entry(login: &Value) -> Value {
    let servers = login["iceServers"].as_array().expect("iceServers array");
    let turn: Vec<&Value> = servers
        .iter()
        .filter(|s| {
            s["urls"].as_array().is_some_and(|u| {
                u.iter()
                    .any(|u| u.as_str().is_some_and(|u| u.starts_with("turn:")))
            })
        })
        .collect();
    assert_eq!(turn.len(), 1, "one TURN entry expected in {login}");
    turn[0].clone()
}

async fn login(server: &Server, name: &str) -> Value {
    let (client, reply) = login_held(server, name).await;
    // Kept open past the test's allocations: the embedded server accepts a session's
    // credentials while the session lives (`--turn-credentials session`).
    std::mem::forget(client);
    reply
}

/// A logged-in client, kept, and its login reply.
async fn login_held(server: &Server, name: &str) -> (common::Client, Value) {
    let mut client = common::Client::connect(&server.url("/")).await;
    let reply = client.login(name).await;
    assert_eq!(reply["success"], true, "{reply}");
    (client, reply)
}

/// Allocates a relay on the TURN server at `server` with the given credentials; returns
/// the relayed address, or the error text.
async fn allocate(
    server: SocketAddr,
    username: &str,
    password: &str,
) -> Result<SocketAddr, String> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let client = TurnClient::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.into(),
        password: password.into(),
        realm: "duet".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(sock),
        vnet: None,
    })
    .await
    .expect("turn client");
    client.listen().await.expect("listen");
    let result = match tokio::time::timeout(WAIT, client.allocate()).await {
        Ok(Ok(relay)) => {
            use webrtc_util::Conn as _;
            Ok(relay.local_addr().expect("relay addr"))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    };
    let _ = client.close().await;
    result
}

/// The TURN URL's host:port, e.g. `turn:127.0.0.1:3478?transport=udp` → 127.0.0.1:3478.
fn turn_addr(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("turn:").expect("turn: URL");
    let hostport = rest.split('?').next().expect("host:port");
    hostport.parse().expect("socket address")
}

#[tokio::test]
async fn turn_secret_gives_short_lived_rest_credentials() {
    let ttl = Duration::from_secs(3600);
    let mut server = Server::start(|c| {
        c.ice.stun = vec!["stun:stun.example.org:3478".into()];
        c.ice.turn = vec!["turn:turn.example.org:3478?transport=udp".into()];
        c.ice.turn_secret = Some(SECRET.into());
        c.ice.turn_ttl = ttl;
    })
    .await;
    let before = SystemTime::now();
    let reply = login(&server, "alice").await;
    assert_eq!(
        reply["iceServers"][0],
        json!({"urls": ["stun:stun.example.org:3478"]})
    );
    let turn = turn_entry(&reply);
    assert_eq!(
        turn["urls"],
        json!(["turn:turn.example.org:3478?transport=udp"])
    );
    let username = turn["username"].as_str().expect("username");
    let credential = turn["credential"].as_str().expect("credential");

    let (expiry, name) = username.split_once(':').expect("<expiry>:<name>");
    assert_eq!(name, "alice");
    let expiry: u64 = expiry.parse().expect("unix seconds");
    let now = before.duration_since(UNIX_EPOCH).expect("clock").as_secs();
    assert!(
        (now + ttl.as_secs()..=now + ttl.as_secs() + 5).contains(&expiry),
        "expiry {expiry} is not now ({now}) + ttl"
    );
    // The credential is what coturn computes from the shared secret, and it dies with its
    // expiry.
    assert_eq!(
        credential,
        duet::ice::rest_password(SECRET.as_bytes(), username)
    );
    duet::ice::verify(SECRET.as_bytes(), username, credential, SystemTime::now())
        .expect("credential verifies");
    let after_expiry = UNIX_EPOCH + Duration::from_secs(expiry);
    assert_eq!(
        duet::ice::verify(SECRET.as_bytes(), username, credential, after_expiry),
        Err(duet::ice::CredentialError::Expired)
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn embedded_turn_server_accepts_the_credentials_duet_hands_out() {
    // No --turn-secret: duet makes one up, and no --turn URL: duet advertises its own.
    let mut server = Server::start(|c| {
        c.turn.enabled = true;
        c.turn.listen_udp = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    })
    .await;
    let reply = login(&server, "bob").await;
    let turn = turn_entry(&reply);
    let urls = turn["urls"].as_array().expect("urls");
    // Without --turn-listen-tcp, TURN over TCP is on duet's own port (`server::demux`).
    assert_eq!(urls.len(), 2, "UDP, then TCP on duet's port: {urls:?}");
    assert_eq!(
        urls[1],
        format!("turn:127.0.0.1:{}?transport=tcp", server.addr.port())
    );
    let url = urls[0].as_str().expect("url");
    assert!(
        url.starts_with("turn:127.0.0.1:") && url.ends_with("?transport=udp"),
        "{url}"
    );
    let addr = turn_addr(url);
    let username = turn["username"].as_str().expect("username");
    let credential = turn["credential"].as_str().expect("credential");
    assert!(username.ends_with(":bob"), "{username}");

    let relay = allocate(addr, username, credential)
        .await
        .expect("allocation with the login's credentials");
    assert_eq!(relay.ip(), Ipv4Addr::LOCALHOST);

    // A tampered name or a made-up password is refused.
    let forged = username.replace(":bob", ":mallory");
    assert!(allocate(addr, &forged, credential).await.is_err());
    assert!(
        allocate(addr, username, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .await
            .is_err()
    );

    // Shutdown stops the TURN server too: its port is free again.
    server.shutdown().await.expect("clean shutdown");
    UdpSocket::bind(addr)
        .await
        .expect("TURN port released on shutdown");
}

/// Issue 15 finding 8 (quota squatting): someone logs in as bob while he is offline,
/// takes the name's allocations and logs out. The credentials stay good for --turn-ttl
/// and the allocations count against "bob", so the real bob got 486. Now credentials
/// work while their session lives: logging out refuses them and closes their
/// allocations, and bob gets his own.
#[tokio::test]
async fn turn_credentials_end_with_their_session() {
    let mut server = Server::start(|c| {
        c.turn.enabled = true;
        c.turn.listen_udp = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        c.turn.user_quota = 2;
    })
    .await;
    let (squatter, reply) = login_held(&server, "bob").await;
    let turn = turn_entry(&reply);
    let addr = turn_addr(turn["urls"][0].as_str().expect("url"));
    let (username, credential) = (
        turn["username"].as_str().expect("username").to_owned(),
        turn["credential"].as_str().expect("credential").to_owned(),
    );
    for i in 0..2 {
        allocate(addr, &username, &credential)
            .await
            .unwrap_or_else(|e| panic!("squatter's allocation {i}: {e}"));
    }
    let full = allocate(addr, &username, &credential).await;
    assert!(
        full.as_ref().is_err_and(|e| e.contains("486")),
        "the name's quota is taken: {full:?}"
    );

    squatter.close().await;
    // The session's end is carried out on the server a moment after the close.
    let deadline = tokio::time::Instant::now() + WAIT;
    let refused = loop {
        let attempt = allocate(addr, &username, &credential).await;
        if attempt.is_err() || tokio::time::Instant::now() > deadline {
            break attempt;
        }
    };
    let refused = refused.expect_err("the ended session's credentials are refused");
    assert!(refused.contains("401"), "{refused}");

    // The real bob: his own credentials, and the quota the squatter held is free.
    let (_bob, reply) = login_held(&server, "bob").await;
    let turn = turn_entry(&reply);
    let (username, credential) = (
        turn["username"].as_str().expect("username"),
        turn["credential"].as_str().expect("credential"),
    );
    let mut got = Vec::new();
    while got.len() < 2 && tokio::time::Instant::now() < deadline + WAIT {
        match allocate(addr, username, credential).await {
            Ok(relay) => got.push(relay),
            Err(e) if e.contains("486") => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("bob's allocation: {e}"),
        }
    }
    assert_eq!(got.len(), 2, "bob gets the name's whole quota back");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn embedded_turn_server_refuses_expired_credentials_and_loopback_peers() {
    let mut server = Server::start(|c| {
        c.ice.turn_secret = Some(SECRET.into());
        c.turn.enabled = true;
        c.turn.listen_udp = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        c.turn.listen_tcp = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    })
    .await;
    let reply = login(&server, "carol").await;
    let turn = turn_entry(&reply);
    let urls: Vec<&str> = turn["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(urls.len(), 2, "udp and tcp: {urls:?}");
    assert!(urls[1].ends_with("?transport=tcp"), "{urls:?}");
    let addr = turn_addr(urls[0]);

    // Correctly signed with the shared secret, but expired a minute ago.
    let expired = duet::ice::rest_credentials(
        SECRET.as_bytes(),
        "carol",
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(120),
    );
    let err = allocate(addr, &expired.username, &expired.credential)
        .await
        .expect_err("expired credentials are refused");
    assert!(!err.is_empty());

    // Valid credentials (the login's), but the relay may not reach loopback without
    // --turn-allow-loopback: the permission is refused with 403.
    let fresh = duet::ice::TurnCredentials {
        username: turn["username"].as_str().expect("username").to_owned(),
        credential: turn["credential"].as_str().expect("credential").to_owned(),
    };
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let client = TurnClient::new(ClientConfig {
        stun_serv_addr: addr.to_string(),
        turn_serv_addr: addr.to_string(),
        username: fresh.username,
        password: fresh.credential,
        realm: "duet".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(sock),
        vnet: None,
    })
    .await
    .expect("turn client");
    client.listen().await.expect("listen");
    let relay = client.allocate().await.expect("allocate");
    let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("peer");
    let sent = {
        use webrtc_util::Conn as _;
        tokio::time::timeout(
            WAIT,
            relay.send_to(b"ping", peer.local_addr().expect("addr")),
        )
        .await
        .expect("answer in time")
    };
    let err = sent.expect_err("relay to loopback refused").to_string();
    assert!(err.contains("403"), "{err}");
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing reached the loopback peer"
    );
    let _ = client.close().await;
    server.shutdown().await.expect("clean shutdown");
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("duet-{tag}-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TLS client that trusts exactly the certificate in `cert`.
fn connector(cert: &std::path::Path, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("read certificate") {
        roots.add(c.expect("certificate")).expect("trust");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn self_signed_tls_serves_wss_and_https() {
    let data = TempDir::new("tls");
    let mut server = Server::start(|c| {
        c.tls.tls_self_signed = true;
        c.tls.data_dir = Some(data.0.clone());
    })
    .await;
    // `run` generates the certificate as it starts, in the server's task.
    let cert = data.0.join("self-signed-cert.pem");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cert.is_file() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no certificate in the data dir"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // https GET /healthz, checked against the stored certificate by name.
    let tls = connector(&cert, &[b"http/1.1"]);
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut https = tls.connect(name, tcp).await.expect("TLS handshake");
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, https.read_to_string(&mut response))
        .await
        .expect("in time")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // wss:// by IP address (the certificate covers 127.0.0.1 too), then the protocol.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let ip = ServerName::try_from("127.0.0.1").expect("ip");
    let stream = tls.connect(ip, tcp).await.expect("TLS handshake");
    let url = format!("wss://127.0.0.1:{}/ws", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket over TLS");
    ws.send(Message::text(
        json!({"type": "login", "name": "dora"}).to_string(),
    ))
    .await
    .expect("send");
    let reply = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("reply in time")
        {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    };
    assert_eq!(reply["type"], "login");
    assert_eq!(reply["success"], true, "{reply}");

    // A client that never starts its handshake does not hold up anyone else.
    let _silent = TcpStream::connect(server.addr).await.expect("connect");
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(WAIT, tls.connect(name, tcp))
        .await
        .expect("handshake not blocked by a silent client")
        .expect("handshake");

    // Plain HTTP on the TLS port gets no page, just a closed connection.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP must not be served on the TLS port"
    );

    drop(ws);
    server.shutdown().await.expect("clean shutdown");

    // Restarting with the same data dir reuses the certificate (users accept it once).
    let before = std::fs::read(&cert).expect("read");
    let mut again = Server::start(|c| {
        c.tls.tls_self_signed = true;
        c.tls.data_dir = Some(data.0.clone());
    })
    .await;
    assert_eq!(std::fs::read(&cert).expect("read"), before);
    again.shutdown().await.expect("clean shutdown");
}
