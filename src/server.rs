//! The listening socket: the accept loop, and one TCP connection's life from accept to
//! close (first byte or TLS handshake, each with a deadline, then HTTP until the client
//! leaves or the server shuts down). A connection that speaks TURN instead goes to the
//! embedded TURN server ([`demux`]).
//!
//! What a request does is [`crate::http`]'s business; a WebSocket that upgrades leaves
//! this module's connection task and becomes a session (see [`crate::session`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use self::demux::{Head, Peer, Prefixed};
use self::idle::{LastRead, Watched};
use crate::redirect;
use crate::turn::TcpIntake;

pub mod demux;
mod idle;

/// How long a client gets to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may take to send a request's headers (also the idle limit of a
/// keep-alive connection between requests).
const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection that has not become a WebSocket may go without sending a byte
/// (a TLS client silent after its handshake, an HTTP/2 client with no requests) before
/// it is closed. The same as plain HTTP/1's limit.
const IDLE_TIMEOUT: Duration = HTTP_HEADER_TIMEOUT;

/// How long closing waits for a request in progress (HTTP/2: for the client to take the
/// GOAWAY) before dropping the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How often the idle deadline is checked.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long the accept loop waits after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every connection task needs; cloned into each (all of it is cheap to clone).
#[derive(Clone)]
struct Shared {
    app: Router,
    http: Builder<TokioExecutor>,
    /// `Some` for HTTPS/WSS.
    tls: Option<TlsAcceptor>,
    /// The embedded TURN server's TCP path, for connections that speak TURN (`None`
    /// without `--turn-server`).
    turn: Option<TcpIntake>,
    /// Cancelled on shutdown: handshakes are abandoned, HTTP connections shut down
    /// gracefully.
    shutdown: CancellationToken,
}

/// [`demux::sniff`] within `limit`; `None` when the client sent too little in time,
/// closed first, or the server is shutting down.
async fn sniff_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
    shutdown: &CancellationToken,
) -> Option<(Peer, Head)> {
    tokio::select! {
        sniffed = tokio::time::timeout(limit, demux::sniff(stream)) => sniffed.ok()?.ok(),
        _ = shutdown.cancelled() => None,
    }
}

/// Gives a connection that speaks TURN to the embedded TURN server.
fn hand_to_turn<S>(turn: Option<&TcpIntake>, stream: S, addr: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    match turn {
        Some(turn) => {
            if turn.serve(stream, addr) {
                debug!(%addr, "TURN client on the HTTP(S) port");
            }
        }
        None => debug!(%addr, "a TURN client, but --turn-server is off; closing"),
    }
}

/// Accepts connections on `listener` until `shutdown` resolves, serving each in a task
/// of `connections`; then drops the listener, so nothing new connects. `cancel` tells
/// the connection tasks to finish; closing and waiting for `connections` is the caller's
/// part of shutting down.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    turn: Option<TcpIntake>,
    connections: &TaskTracker,
    cancel: &CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = Builder::new(TokioExecutor::new());
    // Without a timer hyper never times out a request that does not arrive, so idle or
    // trickling TCP connections (which do not count towards --max-connections until they
    // become WebSockets) could pile up without limit.
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_TIMEOUT);
    http.http2().timer(TokioTimer::new());
    let shared = Shared {
        app,
        http,
        tls,
        turn,
        shutdown: cancel.clone(),
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(stream, addr, shared.clone()));
    }
    drop(listener);
    Ok(())
}

/// Serves one accepted TCP connection until it closes, or until shutdown has let its
/// current requests finish.
async fn serve_connection(stream: TcpStream, addr: SocketAddr, shared: Shared) {
    // Signaling messages are small and latency-bound: never wait for Nagle.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    let Shared {
        app,
        http,
        tls,
        turn,
        shutdown,
    } = shared;
    let stream = match tls {
        None => Either::Left(stream),
        // The handshake runs in this task, not in the accept loop, and has a deadline: a
        // client that stalls it (or a browser that rejects the certificate and hangs up)
        // costs one task for a while, never the other users' connections.
        Some(acceptor) => {
            // `http://` typed for this port: answer with a redirect instead of letting the
            // TLS library reply with an alert the browser shows as a broken page.
            let mut first = [0u8];
            let peeked = tokio::select! {
                peeked = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, stream.peek(&mut first)) => peeked,
                _ = shutdown.cancelled() => return,
            };
            match peeked {
                // Plain TURN over TCP on the HTTPS port (`turn:host:443?transport=tcp`).
                // A ClientHello's 0x16 has STUN's top bits too, so TLS is asked first.
                Ok(Ok(1))
                    if !redirect::is_tls(first[0])
                        && turn.is_some()
                        && demux::classify(&first).is_none() =>
                {
                    let mut stream = stream;
                    if let Some((Peer::Turn, head)) =
                        sniff_within(&mut stream, HTTP_HEADER_TIMEOUT, &shutdown).await
                    {
                        hand_to_turn(turn.as_ref(), Prefixed::new(head, stream), addr);
                    } else {
                        debug!(%addr, "neither TLS nor TURN on the HTTPS port; closing");
                    }
                    return;
                }
                Ok(Ok(1)) if !redirect::is_tls(first[0]) => {
                    return redirect::answer(stream, addr, None, None).await;
                }
                Ok(Ok(1)) => {}
                _ => {
                    debug!(%addr, "no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?}; closing");
                    return;
                }
            }
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let result = tokio::select! {
                result = handshake => result,
                _ = shutdown.cancelled() => return,
            };
            match result {
                // Boxed so that plain connections do not carry the size of a TLS session
                // (about a kilobyte) in every upgraded socket.
                // An ACME server validating TLS-ALPN-01: the handshake was the answer.
                Ok(Ok(tls))
                    if tls.get_ref().1.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN) =>
                {
                    debug!(%addr, "ACME TLS-ALPN-01 validation handshake done");
                    return;
                }
                Ok(Ok(tls)) => Either::Right(Box::new(tls)),
                Ok(Err(e)) => {
                    debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%addr, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    // HTTP or TURN (see `demux`): by ALPN, else by the first bytes, which also bounds a
    // plain connection that never sends one (hyper's header timeout starts with the
    // first byte).
    let mut stream = stream;
    let alpn = match &stream {
        Either::Right(tls) => demux::classify_alpn(tls.get_ref().1.alpn_protocol()),
        Either::Left(_) => None,
    };
    let (peer, head) = match alpn {
        Some(peer) => (peer, Head::default()),
        None => match sniff_within(&mut stream, HTTP_HEADER_TIMEOUT, &shutdown).await {
            Some(decided) => decided,
            None => {
                debug!(%addr, "nothing received within {HTTP_HEADER_TIMEOUT:?}; closing");
                return;
            }
        },
    };
    let stream = Prefixed::new(head, stream);
    if peer == Peer::Turn {
        hand_to_turn(turn.as_ref(), stream, addr);
        return;
    }
    let service = app.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
        req
    });
    let service = TowerToHyperService::new(service);
    let last_read = LastRead::new();
    let stream = Watched::new(stream, last_read.clone());
    let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut check = tokio::time::interval(IDLE_CHECK);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(%addr, error = %e, "http connection ended with an error");
                }
                return;
            }
            _ = check.tick() => {
                if last_read.idle() >= IDLE_TIMEOUT {
                    debug!(%addr, "nothing received for {IDLE_TIMEOUT:?}; closing");
                    break;
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    // Lets a request in progress finish (HTTP/2: GOAWAY), then closes; bounded, because a
    // client that keeps a response waiting must not hold the connection either.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    use crate::Config;

    const WAIT: Duration = Duration::from_secs(5);

    async fn metrics(addr: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
            .await
            .expect("metrics in time")
            .expect("read");
        response
    }

    /// Waits until `/metrics` contains `line`; panics with the last body after [`WAIT`].
    async fn wait_for_metric(addr: std::net::SocketAddr, line: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let body = metrics(addr).await;
            if body.lines().any(|l| l == line) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{line}` within {WAIT:?}:\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A WebSocket upgrade request sent by hand, the socket reset (RST, not FIN) right
    /// after: the server's reply or its upgrade fails, or, if the upgrade wins the race, a
    /// session starts and ends at once.
    async fn upgrade_and_reset(addr: std::net::SocketAddr) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_zero_linger().expect("SO_LINGER 0");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        drop(stream);
    }

    /// Every way a WebSocket connection ends gives its `--max-connections` place back:
    /// refused at the limit, upgrade failed (client gone), session over.
    #[tokio::test]
    async fn connection_permits_come_back_on_every_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config::default_for(addr);
        config.max_connections = 2;
        config.rate_limit = 0.0;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(crate::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let url = format!("ws://{addr}/ws");
        let connect = || tokio_tungstenite::connect_async(url.clone());

        for round in 0..3 {
            // Sessions hold their places; further upgrades are refused and take none.
            let a = connect().await.expect("first connection");
            let b = connect().await.expect("second connection");
            wait_for_metric(addr, "duet_connections_open 2").await;
            for _ in 0..10 {
                match connect().await {
                    Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                        assert_eq!(r.status(), 503, "round {round}");
                    }
                    other => panic!("round {round}: expected 503, got {other:?}"),
                }
            }
            wait_for_metric(addr, "duet_connections_open 2").await;
            // Sessions that end give their places back.
            drop((a, b));
            wait_for_metric(addr, "duet_connections_open 0").await;
            // Upgrades whose client vanishes give theirs back too.
            for _ in 0..20 {
                upgrade_and_reset(addr).await;
            }
            wait_for_metric(addr, "duet_connections_open 0").await;
        }
        wait_for_metric(addr, "duet_connections_refused_total 30").await;
        // The limit still admits exactly two.
        let _a = connect().await.expect("a place after all that");
        let _b = connect().await.expect("and a second");
        wait_for_metric(addr, "duet_connections_open 2").await;

        let _ = stop.send(());
        server.await.expect("join").expect("run");
    }

    /// An HTTP/2 client that sends its preface and SETTINGS and then nothing is closed
    /// after the idle limit, as a silent HTTP/1 one is (it used to stay open for good).
    #[tokio::test]
    async fn an_idle_http2_connection_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config::default_for(addr);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(crate::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Prior-knowledge h2c: the preface, then an empty SETTINGS frame.
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .expect("preface");
        let started = tokio::time::Instant::now();
        let mut sink = Vec::new();
        // The server's SETTINGS, its ack, a GOAWAY, then EOF; bounded well past the limit.
        let read =
            tokio::time::timeout(super::IDLE_TIMEOUT * 3, stream.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "still open after {:?}", started.elapsed());
        assert!(!sink.is_empty(), "the server spoke HTTP/2 first");
        let _ = stop.send(());
        let _ = server.await;
    }
}
