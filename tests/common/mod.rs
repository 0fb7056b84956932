//! Test harness: real duet servers on loopback ports, real WebSocket clients.
//!
//! A [`Cluster`] is one or more duet nodes; `cluster.client(i)` connects to node
//! `i % nodes`, so the same protocol cases run on one node and spread over several.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use duet::Config;

/// How long a test waits for a message it expects.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The data directory made for this server, removed when it is dropped.
    data: Option<TempDir>,
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("duet-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make a data directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Server {
    /// Starts a server on 127.0.0.1:0 with the defaults changed by `tweak`.
    /// The rate limit is off unless the test turns it on.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut config = Config::default_for(addr);
        config.rate_limit = 0.0;
        // Resume keeps its key and held names in the data directory: one per server, so
        // that tests do not hold each other's names (or write to the user's home).
        let data = TempDir::new("data");
        config.tls.data_dir = Some(data.0.clone());
        tweak(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(duet::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
            data: Some(data),
        }
    }

    /// Asks the server to shut down gracefully and waits for `run` to return.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// Waits until `/healthz` answers 200 (with Redis: until Redis is connected).
    pub async fn wait_healthy(&self) {
        wait_healthy(self.addr).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A plain HTTP GET; returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }
}

/// Waits until the server at `addr` answers `/healthz` with 200; panics after [`WAIT`].
pub async fn wait_healthy(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            let request =
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            if stream.write_all(request.as_bytes()).await.is_ok()
                && tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
                    .await
                    .is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} not healthy within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("http timeout")
        .expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One or more nodes serving the same users.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub async fn single(tweak: impl FnOnce(&mut Config)) -> Cluster {
        Cluster {
            nodes: vec![Server::start(tweak).await],
        }
    }

    /// `n` nodes coordinated through the Redis at `url`, each with the defaults changed by
    /// `tweak`; returns once every node reports Redis connected.
    pub async fn redis(n: usize, url: &str, tweak: impl Fn(&mut Config)) -> Cluster {
        let mut nodes = Vec::new();
        for i in 0..n {
            let node = Server::start(|c| {
                c.redis_url = Some(url.to_string());
                c.node_id = Some(format!("node{i}"));
                tweak(c);
            })
            .await;
            nodes.push(node);
        }
        for node in &nodes {
            node.wait_healthy().await;
        }
        Cluster { nodes }
    }

    /// A client of node `i % nodes`.
    pub async fn client(&self, i: usize) -> Client {
        Client::connect(&self.nodes[i % self.nodes.len()].url("/")).await
    }

    /// A logged-in client of node `i % nodes`.
    pub async fn user(&self, i: usize, name: &str) -> Client {
        let mut c = self.client(i).await;
        let reply = c.login(name).await;
        assert_eq!(reply["success"], true, "login {name}: {reply}");
        c
    }

    pub async fn shutdown(&mut self) {
        for node in &mut self.nodes {
            let _ = node.shutdown().await;
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
}

/// What a client observed instead of a JSON message.
#[derive(Debug)]
pub enum Closed {
    Frame(Option<CloseFrame>),
    Eof,
    Error(String),
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        Client { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).await.expect("send");
    }

    /// The next JSON message; panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.next_json()).await {
            Ok(Ok(v)) => v,
            Ok(Err(closed)) => panic!("connection closed while waiting: {closed:?}"),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next message of type `kind`, skipping presence and ringing notices.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
            assert!(
                v["type"] == "presence" || v["type"] == "ringing",
                "expected {kind}, got {v}"
            );
        }
    }

    pub async fn next_json(&mut self) -> Result<Value, Closed> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(&t).expect("server sent invalid JSON"));
                }
                Some(Ok(Message::Close(frame))) => return Err(Closed::Frame(frame)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Closed::Error(e.to_string())),
                None => return Err(Closed::Eof),
            }
        }
    }

    /// Waits for the connection to close and returns the close code, if any.
    pub async fn closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.next_json()).await {
                Ok(Ok(_)) => continue,
                Ok(Err(Closed::Frame(frame))) => return frame.map(|f| u16::from(f.code)),
                Ok(Err(_)) => return None,
                Err(_) => panic!("connection not closed within {WAIT:?}"),
            }
        }
    }

    /// Asserts nothing but presence arrives for `d`.
    pub async fn silent_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.next_json()).await {
                Err(_) => return,
                Ok(Ok(v)) if v["type"] == "presence" => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    pub async fn login(&mut self, name: &str) -> Value {
        self.send(json!({"type": "login", "name": name})).await;
        self.recv_type("login").await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server's close arrives so the close is complete on both sides.
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// A browser-like SDP offer payload.
pub fn offer_payload() -> Value {
    json!({"type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"})
}

pub fn answer_payload() -> Value {
    json!({"type": "answer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"})
}

pub fn candidate_payload(i: usize) -> Value {
    json!({"candidate": format!("candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host", 40000 + i), "sdpMid": "0", "sdpMLineIndex": 0})
}

/// `caller` offers `callee`, who answers: the two are in a call.
pub async fn connect_call(
    caller: &mut Client,
    caller_name: &str,
    callee: &mut Client,
    callee_name: &str,
) {
    caller
        .send(json!({"type": "offer", "name": callee_name, "offer": offer_payload()}))
        .await;
    let offer = callee.recv_type("offer").await;
    assert_eq!(offer["name"], caller_name);
    callee
        .send(json!({"type": "answer", "name": caller_name, "answer": answer_payload()}))
        .await;
    let answer = caller.recv_type("answer").await;
    assert_eq!(answer["answer"], answer_payload());
}
