//! One port for HTTP(S), WebSockets and TURN (`server::demux`), against a real duet with
//! the embedded TURN server: plain HTTP, a WebSocket login, TURN over TCP, over TLS (with
//! and without ALPN), trickling clients that send one byte at a time, silent ones, and
//! coturn's `turnutils_uclient` relaying through the HTTPS port.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Server, WAIT};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter, METHOD_ALLOCATE, Message,
    MessageType, Setter,
};
use stun::textattrs::{Nonce, Realm, TextAttribute, Username};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use turn::proto::PROTO_UDP;
use turn::proto::reqtrans::RequestedTransport;

const SECRET: &str = "demux-secret";

fn creds(name: &str) -> duet::ice::TurnCredentials {
    duet::ice::rest_credentials(
        SECRET.as_bytes(),
        name,
        Duration::from_secs(600),
        SystemTime::now(),
    )
}

/// duet with the embedded TURN server (UDP on an ephemeral loopback port, relaying to
/// loopback allowed), optionally with HTTPS from a self-signed certificate in `tls`.
async fn server(tls: Option<&Path>) -> Server {
    let tls = tls.map(Path::to_path_buf);
    Server::start(move |c| {
        c.ice.turn_secret = Some(SECRET.into());
        c.turn.enabled = true;
        // The test mints its own credentials with the secret.
        c.turn.credentials = duet::turn::CredentialScope::Expiry;
        c.turn.listen_udp = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        c.turn.allow_loopback = true;
        if let Some(dir) = tls {
            c.tls.tls_self_signed = true;
            c.tls.data_dir = Some(dir);
        }
    })
    .await
}

/// One STUN message as written to a stream, read back whole (`turn::read_frame`).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, m: &Message) -> Message {
    s.write_all(&m.raw).await.expect("write");
    let mut frame = Vec::new();
    let got = tokio::time::timeout(WAIT, duet::turn::read_frame(s, &mut frame))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(got, "connection closed instead of an answer");
    let mut reply = Message::new();
    reply.unmarshal_binary(&frame).expect("a STUN answer");
    assert_eq!(reply.transaction_id, m.transaction_id);
    reply
}

fn allocate_request(auth: Option<(&duet::ice::TurnCredentials, &str, &str)>) -> Message {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(stun::agent::TransactionId::new()),
        Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        Box::new(RequestedTransport {
            protocol: PROTO_UDP,
        }),
    ];
    if let Some((c, realm, nonce)) = auth {
        setters.push(Box::new(Username::new(ATTR_USERNAME, c.username.clone())));
        setters.push(Box::new(Realm::new(ATTR_REALM, realm.into())));
        setters.push(Box::new(Nonce::new(ATTR_NONCE, nonce.into())));
        setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
            c.username.clone(),
            realm.into(),
            c.credential.clone(),
        )));
    }
    setters.push(Box::new(FINGERPRINT));
    let mut m = Message::new();
    m.build(&setters).expect("build");
    m
}

/// A TURN Allocate over `s` as a client does it: bare first, 401 with REALM and NONCE,
/// then signed; the signed one must succeed.
async fn allocate_over<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, name: &str) {
    let challenge = exchange(s, &allocate_request(None)).await;
    assert_eq!(challenge.typ.class, CLASS_ERROR_RESPONSE);
    let mut code = ErrorCodeAttribute::default();
    code.get_from(&challenge).expect("ERROR-CODE");
    assert_eq!(code.code.0, 401);
    let text = |attr| {
        TextAttribute::get_from_as(&challenge, attr)
            .expect("REALM and NONCE in the 401")
            .text
    };
    let (realm, nonce) = (text(ATTR_REALM), text(ATTR_NONCE));
    let c = creds(name);
    let reply = exchange(s, &allocate_request(Some((&c, &realm, &nonce)))).await;
    assert_eq!(
        reply.typ.class, CLASS_SUCCESS_RESPONSE,
        "signed Allocate refused: {reply}"
    );
}

/// A stream that writes one byte at a time with a pause after each: a slow client.
async fn trickle<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    for b in bytes {
        s.write_all(&[*b]).await.expect("write");
        s.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the other end to close `s` (EOF or reset), bounded by `limit`; returns
/// what was read before.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut got))
        .await
        .expect("the server closed the connection");
    got
}

/// The `iceServers` TURN URLs a login on `ws` gets.
async fn login_urls<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, name: &str) -> Vec<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(WsMessage::text(
        json!({"type": "login", "name": name}).to_string(),
    ))
    .await
    .expect("send");
    let reply = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("reply in time")
        {
            Some(Ok(WsMessage::Text(t))) => break serde_json::from_str::<Value>(&t).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    };
    assert_eq!(reply["success"], true, "{reply}");
    reply["iceServers"]
        .as_array()
        .expect("iceServers")
        .iter()
        .flat_map(|s| s["urls"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u.as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn plain_port_serves_http_websocket_and_turn() {
    let mut server = server(None).await;
    let port = server.addr.port();

    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200, "{body}");

    let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/ws"))
        .await
        .expect("WebSocket");
    let urls = login_urls(&mut ws, "wendy").await;
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(urls[0].ends_with("?transport=udp"), "UDP first: {urls:?}");
    assert_eq!(urls[1], format!("turn:127.0.0.1:{port}?transport=tcp"));

    // TURN over TCP on duet's own port, while the WebSocket stays open.
    let mut turn = TcpStream::connect(server.addr).await.expect("connect");
    allocate_over(&mut turn, "tess").await;

    // A client sending one byte at a time is still told apart, both ways.
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    let bare = allocate_request(None);
    trickle(&mut slow, &bare.raw).await;
    let mut frame = Vec::new();
    assert!(
        tokio::time::timeout(WAIT, duet::turn::read_frame(&mut slow, &mut frame))
            .await
            .expect("answer in time")
            .expect("read")
    );
    let mut challenge = Message::new();
    challenge.unmarshal_binary(&frame).expect("STUN");
    assert_eq!(challenge.transaction_id, bare.transaction_id);
    let mut slow_http = TcpStream::connect(server.addr).await.expect("connect");
    trickle(
        &mut slow_http,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let response = closed_within(&mut slow_http, WAIT).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    // A silent client is closed by the first-byte deadline (10 s), nothing sent to it.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(30))
            .await
            .is_empty()
    );
    // ... as is one that stops halfway through a STUN header.
    let mut half = TcpStream::connect(server.addr).await.expect("connect");
    half.write_all(&bare.raw[..5]).await.expect("write");
    assert!(
        closed_within(&mut half, Duration::from_secs(30))
            .await
            .is_empty()
    );

    // The TURN client is still served after all that.
    let refresh = exchange(&mut turn, &allocate_request(None)).await;
    assert_eq!(refresh.typ.class, CLASS_ERROR_RESPONSE);
    drop(ws);
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

async fn wait_for_file(path: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !path.is_file() {
        assert!(tokio::time::Instant::now() < deadline, "no {path:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS client trusting exactly `cert`, offering `alpn`.
fn connector(cert: &Path, alpn: &[&[u8]]) -> TlsConnector {
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
async fn https_port_serves_https_wss_and_turn_over_tls() {
    let data = TempDir::new("demux-tls");
    let mut server = server(Some(&data.0)).await;
    let cert = data.0.join("self-signed-cert.pem");
    wait_for_file(&cert).await;
    let port = server.addr.port();
    let name = || ServerName::try_from("localhost").expect("name");
    let tls = |alpn: &[&[u8]]| connector(&cert, alpn);

    // HTTPS as a browser does it: offered h2 and http/1.1, it gets h2 (stun.turn, listed
    // first by the server, is not offered); and a GET over http/1.1.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let https = tls(&[b"h2", b"http/1.1"])
        .connect(name(), tcp)
        .await
        .expect("TLS");
    assert_eq!(https.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(https);
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut https = tls(&[b"http/1.1"]).connect(name(), tcp).await.expect("TLS");
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let response = closed_within(&mut https, WAIT).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    // wss://, whose login hands out UDP, then TLS on this port (TCP needs no entry of
    // its own: there is no --turn-listen-tcp, and TLS covers TCP-only networks).
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let stream = tls(&[b"http/1.1"]).connect(name(), tcp).await.expect("TLS");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), stream)
        .await
        .expect("WebSocket over TLS");
    let urls = login_urls(&mut ws, "tina").await;
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(urls[0].starts_with("turn:") && urls[0].ends_with("?transport=udp"));
    assert_eq!(urls[1], format!("turns:127.0.0.1:{port}?transport=tcp"));

    // TURN over TLS: without ALPN (browsers), with RFC 7443's, and with coturn's pair.
    for (i, alpn) in [&[][..], &[&b"stun.turn"[..]], &[b"http/1.1", b"stun.turn"]]
        .into_iter()
        .enumerate()
    {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let mut turns = tls(alpn).connect(name(), tcp).await.expect("TLS");
        allocate_over(&mut turns, &format!("tls{i}")).await;
    }

    // One byte at a time after the handshake (no ALPN): still TURN.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut slow = tls(&[]).connect(name(), tcp).await.expect("TLS");
    let bare = allocate_request(None);
    trickle(&mut slow, &bare.raw).await;
    let mut frame = Vec::new();
    assert!(
        tokio::time::timeout(WAIT, duet::turn::read_frame(&mut slow, &mut frame))
            .await
            .expect("answer in time")
            .expect("read")
    );

    // Plain TURN over TCP on the HTTPS port too (`turn:host:443?transport=tcp`).
    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    allocate_over(&mut plain, "plain").await;
    // Plain HTTP there is still redirected to https.
    let mut http = TcpStream::connect(server.addr).await.expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let response = closed_within(&mut http, WAIT).await;
    assert!(response.starts_with(b"HTTP/1.1 301"));

    // Silent after the handshake, without ALPN: closed by the idle limit.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut silent = tls(&[]).connect(name(), tcp).await.expect("TLS");
    assert!(
        closed_within(&mut silent, Duration::from_secs(30))
            .await
            .is_empty()
    );

    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}

/// coturn's test client, relaying between two of its own allocations made through
/// duet's HTTPS port, over TLS (`-S`) and over plain TCP: `Total lost packets 0`.
#[tokio::test]
async fn turnutils_uclient_relays_through_the_https_port() {
    assert!(
        Command::new("turnutils_uclient").arg("-h").output().is_ok(),
        "turnutils_uclient is missing: apt-get install coturn (scripts/test does)"
    );
    let data = TempDir::new("demux-uclient");
    let mut server = server(Some(&data.0)).await;
    wait_for_file(&data.0.join("self-signed-cert.pem")).await;
    let c = creds("uclient");
    for tls in [true, false] {
        let mut cmd = tokio::process::Command::new("turnutils_uclient");
        cmd.arg("-t");
        if tls {
            cmd.arg("-S");
        }
        cmd.args(["-y", "-n", "50", "-m", "2", "-l", "200"])
            .args(["-u", &c.username, "-w", &c.credential])
            .args(["-p", &server.addr.port().to_string(), "127.0.0.1"]);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("turnutils_uclient finished in time")
            .expect("run turnutils_uclient");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("Total lost packets 0 (0.000000%)"),
            "tls={tls}:\n{text}"
        );
        assert!(
            text.contains("tot_send_msgs=200, tot_recv_msgs=200"),
            "tls={tls}: 2 client pairs (4 allocations) x 50 messages relayed back:\n{text}"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}
