//! duet: self-hosted one-to-one video calls over WebRTC, in one binary.
//!
//! Module map:
//! - [`config`]: command-line options (clap, with env fallbacks).
//! - [`protocol`]: wire messages, parsing, validation, error codes.
//! - [`session`]: one WebSocket connection: the driver (socket, timers, keepalive, close),
//!   [`session::call`] (the call rules as plain functions), carrying them out for a
//!   logged-in user, the rate limit.
//! - [`registry`]: who is online and how to reach them ([`registry::memory`], or
//!   [`registry::redis`] for several nodes; what both hand to sessions is in
//!   [`registry::mailbox`]).
//! - [`ice`]: the STUN/TURN servers handed to clients, and TURN credentials: the scheme
//!   ([`ice::TurnAuth`], read from the flags in one place, also what the embedded server
//!   checks with) and the REST credentials minted from it.
//! - [`turn`]: the embedded TURN server (`--turn-server`): config and start in `mod.rs`,
//!   `auth`, `policy` (allowed peers), `gate` (refusals before the crate sees a request),
//!   `relay` (guarded relay sockets, bandwidth cap), `tcp` (TURN over TCP), and `filter`
//!   (the one `Conn` wrapper the gate and the relay guard plug into).
//! - [`tls`]: HTTPS/WSS: certificate files or a stored self-signed certificate.
//! - [`http`]: routes: web client, WebSocket, health, metrics.
//! - [`metrics`]: Prometheus counters.
//! - [`presence`]: the presence policy (who-is-online updates on or off).
//!
//! [`run`] is the whole server: it accepts connections until `shutdown` resolves, then
//! closes every WebSocket with 1001 and returns.

pub mod config;
pub mod http;
pub mod ice;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod registry;
pub mod session;
pub mod tls;
pub mod turn;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

pub use config::Config;

use crate::http::AppState;
use crate::presence::Presence;
use crate::registry::Registry;
use crate::registry::memory::MemoryRegistry;
use crate::registry::redis::{ClusterOptions, RedisRegistry};
use crate::session::Context;

/// Builds the registry the configuration asks for: Redis-backed with `--redis-url`,
/// in-memory otherwise.
pub async fn registry_for(config: &Config) -> anyhow::Result<Registry> {
    let presence = Presence::new(config.presence_limit);
    let Some(url) = &config.redis_url else {
        return Ok(Registry::Memory(MemoryRegistry::new(presence)));
    };
    let options = ClusterOptions {
        url: url.clone(),
        lease: config.redis_lease,
        prefix: config.redis_prefix.clone(),
        node_id: config.node_id.clone(),
        presence,
    };
    Ok(Registry::Redis(RedisRegistry::start(options).await?))
}

/// How long a client gets to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a connection may take to send a request's headers (also the idle limit of a
/// keep-alive connection between requests).
const HTTP_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves duet on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    config.ice.validate()?;
    // Loaded before anything listens so a bad certificate path fails startup; `load`
    // logs the certificate's path and SHA-256 fingerprint for users to compare.
    let tls = config.tls.load()?;
    let turn_shutdown = CancellationToken::new();
    let (ice, turn) =
        turn::start_embedded(&config.ice, &config.turn, turn_shutdown.clone()).await?;
    let registry = registry_for(&config).await?;
    let grace = config.shutdown_grace;
    let cancel = CancellationToken::new();
    let ctx = Arc::new(Context {
        config,
        registry: registry.clone(),
        metrics: Default::default(),
        ice,
        shutdown: cancel.clone(),
    });
    let state = AppState {
        ctx,
        sessions: TaskTracker::new(),
        next_id: Arc::new(AtomicU64::new(1)),
    };
    let sessions = state.sessions.clone();
    let app = http::router(state);
    let connections = TaskTracker::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // Without a timer hyper never times out a request that does not arrive, so idle or
    // trickling TCP connections (which do not count towards --max-connections until they
    // become WebSockets) could pile up without limit.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());

    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(addr = %listener.local_addr()?, scheme, "duet listening");
    let acceptor = tls.map(|tls| tls.acceptor);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Signaling messages are small and latency-bound: never wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        let service = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            req
        });
        let builder = builder.clone();
        let cancel = cancel.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let stream = match acceptor {
                // hyper's header timeout starts with the first byte; a connection that
                // never sends one is dropped here.
                None => {
                    match tokio::time::timeout(HTTP_HEADER_TIMEOUT, stream.peek(&mut [0])).await {
                        Ok(Ok(1)) => Either::Left(stream),
                        _ => {
                            debug!(%addr, "no request within {HTTP_HEADER_TIMEOUT:?}; closing");
                            return;
                        }
                    }
                }
                // The handshake runs in this task, not in the accept loop, and has a deadline:
                // a client that stalls it (or a browser that rejects the certificate and hangs
                // up) costs one task for a while, never the other users' connections.
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let result = tokio::select! {
                        result = handshake => result,
                        _ = cancel.cancelled() => return,
                    };
                    match result {
                        // Boxed so that plain connections do not carry the size of a
                        // TLS session (about a kilobyte) in every upgraded socket.
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
            let service = TowerToHyperService::new(service);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%addr, error = %e, "http connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }

    info!("shutting down: closing connections");
    drop(listener);
    cancel.cancel();
    sessions.close();
    connections.close();
    turn_shutdown.cancel();
    let drained = tokio::time::timeout(grace, async {
        sessions.wait().await;
        connections.wait().await;
        if let Some(turn) = turn {
            turn.stopped().await;
        }
    })
    .await;
    if drained.is_err() {
        warn!("connections still open after {grace:?}; exiting anyway");
    }
    registry.shutdown().await;
    info!("duet stopped");
    Ok(())
}

/// Listen backlog requested; the kernel caps it at `net.core.somaxconn`. Large, because
/// after a restart every client reconnects at once.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds the listening socket, with a backlog that lets `net.core.somaxconn` decide
/// (`TcpListener::bind` fixes it at 1024).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Restart without waiting for TIME_WAIT connections of the previous process.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
