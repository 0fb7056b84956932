//! duet: self-hosted one-to-one video calls over WebRTC, in one binary.
//!
//! Module map:
//! - [`config`]: command-line options (clap, with env fallbacks).
//! - [`auth`]: who may sign in: the household password (`password`), the session cookie
//!   (`cookie`), application tokens (`jwt`), an OpenID provider (`oidc`), the `/auth/*`
//!   routes; the WebSocket upgrade asks it.
//! - [`protocol`]: wire messages, parsing, validation, error codes.
//! - [`names`]: the key names are told apart by (case, normalization, confusables).
//! - [`session`]: one WebSocket connection: the driver (socket, timers, keepalive, close),
//!   [`session::call`] (the call rules as plain functions), carrying them out for a
//!   logged-in user, the rate limit and the limits on calls, and resume:
//!   [`session::resume`] (tokens, and the seats a resuming login takes a session over
//!   by), `held` (a dropped resumable session holding its name for `--resume-window`),
//!   [`session::store`] (the key and the resumable names kept in the data directory for
//!   a restart) and `rejoin` (a call brought back by both clients naming it).
//! - [`registry`]: who is online and how to reach them ([`registry::memory`], or
//!   [`registry::redis`] for several nodes; what both hand to sessions is in
//!   [`registry::mailbox`]).
//! - [`ice`]: the STUN/TURN servers handed to clients, and TURN credentials: the scheme
//!   ([`ice::TurnAuth`], read from the flags in one place, also what the embedded server
//!   checks with) and the REST credentials minted from it.
//! - [`turn`]: the embedded TURN server (`--turn-server`): config and start in `mod.rs`,
//!   `auth`, `policy` (allowed peers), `gate` (refusals before the crate sees a request),
//!   `relay` (guarded relay sockets, bandwidth cap), `tcp` (TURN over TCP and TLS, from
//!   its own port or duet's), `limit` (answers to unauthenticated requests),
//!   [`turn::live`] (credentials that end with their session), and
//!   `filter` (the one `Conn` wrapper the gate and the relay guard plug into).
//! - [`source_limit`]: budgets per client address in constant memory (unauthenticated
//!   TURN requests, logins).
//! - [`tls`]: HTTPS/WSS: certificate files or a stored self-signed certificate.
//! - [`acme`]: automatic certificates (`--acme-domain`) through TLS-ALPN-01 (or HTTP-01).
//! - [`tls_reload`]: the certificate in use, reloaded on SIGHUP and when its files change.
//! - [`server`]: the accept loop and one TCP connection's life (first-byte and TLS
//!   handshake deadlines, HTTP serving, graceful shutdown); [`server::demux`] tells TURN
//!   clients from HTTP ones on the same port and hands them to the TURN server.
//! - [`redirect`]: plain HTTP on the HTTPS port (or `--http-redirect-listen`) answered
//!   with a redirect to https.
//! - [`http`]: routes: web client, WebSocket, health, metrics.
//! - [`metrics`]: Prometheus counters, and the connection permit that counts open
//!   WebSockets against `--max-connections`.
//! - [`startup`]: what duet says when it starts: URLs to open, the plain-HTTP warning,
//!   hints for a listen address that cannot be bound.
//! - [`logging`]: the log subscriber (text or JSON, colour only on a terminal) and the
//!   `--log-names` switch for names and addresses in log lines.
//! - [`presence`]: the presence policy (who-is-online updates on or off).
//!
//! [`run`] is the whole server: it accepts connections until `shutdown` resolves, then
//! closes every WebSocket with 1001 and returns.

pub mod acme;
pub mod auth;
pub mod config;
pub mod http;
pub mod ice;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod presence;
pub mod protocol;
pub mod redirect;
pub mod registry;
pub mod server;
pub mod session;
pub mod source_limit;
pub mod startup;
pub mod tls;
pub mod tls_reload;
pub mod turn;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

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
        resume_window: config.resume_window,
    };
    Ok(Registry::Redis(RedisRegistry::start(options).await?))
}

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
    if tls.is_none() && config.tls.http_redirect_listen.is_some() {
        anyhow::bail!(
            "--http-redirect-listen redirects to HTTPS, which is off: add --tls-self-signed \
             or --tls-cert/--tls-key, or leave --http-redirect-listen out"
        );
    }
    let turn_shutdown = CancellationToken::new();
    let http_port = turn::HttpPort {
        addr: listener.local_addr()?,
        tls: tls.is_some(),
    };
    let (ice, turn) =
        turn::start_embedded(&config.ice, &config.turn, http_port, turn_shutdown.clone()).await?;
    let registry = registry_for(&config).await?;
    let grace = config.shutdown_grace;
    let self_signed = config.tls.tls_self_signed;
    let acme_domains = config.tls.acme_domains.clone();
    let redirect_listen = config.tls.http_redirect_listen;
    let cancel = CancellationToken::new();
    let secret = config.resume_secret.as_deref();
    // Kept in the data directory, so tokens and held names outlive the process; with
    // resume off there is nothing to keep.
    let (resume, restored) = if config.resume_window.is_zero() {
        (session::resume::Resume::new(secret), Vec::new())
    } else {
        let port = listener.local_addr()?.port();
        session::resume::Resume::open(secret, &config.tls.data_dir(), port)
    };
    let auth = Arc::new(auth::Auth::load(&config.auth, tls.is_some())?);
    let ctx = Arc::new(Context {
        config,
        registry: registry.clone(),
        metrics: Default::default(),
        ice,
        shutdown: cancel.clone(),
        resume,
        logins: session::login_limiter(),
        turn_live: turn.as_ref().and_then(|t| t.live.clone()),
        auth,
    });
    let state = AppState {
        ctx: ctx.clone(),
        sessions: TaskTracker::new(),
        next_id: Arc::new(AtomicU64::new(1)),
    };
    let sessions = state.sessions.clone();
    // Held before the first connection is accepted: no stranger can take one first.
    if !restored.is_empty() {
        info!(
            names = restored.len(),
            window = ?ctx.config.resume_window,
            "holding the names the last run left resumable"
        );
    }
    for row in restored {
        let id = state
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(held) = session::restore(ctx.clone(), id, row).await {
            sessions.spawn(held.hold());
        }
    }
    {
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = ctx.resume.keep_saved() => {}
                () = cancel.cancelled() => {}
            }
        });
    }
    let scheme = match (&tls, self_signed) {
        (None, _) => startup::Scheme::Http,
        (Some(_), true) => startup::Scheme::HttpsSelfSigned,
        (Some(_), false) if !acme_domains.is_empty() => startup::Scheme::HttpsAcme,
        (Some(_), false) => startup::Scheme::HttpsFiles,
    };
    let local = listener.local_addr()?;
    startup::announce(local, scheme);
    state
        .ctx
        .auth
        .warn_if_open(local, !state.ctx.ice.turn.is_empty());
    for domain in &acme_domains {
        match local.port() {
            443 => info!("open https://{domain}/ (certificate from ACME)"),
            port => info!("open https://{domain}:{port}/ (certificate from ACME)"),
        }
    }
    let connections = TaskTracker::new();
    let http01 = tls
        .as_ref()
        .and_then(|tls| tls.acme.as_ref())
        .filter(|acme| acme.challenge == tls::AcmeChallenge::Http01)
        .map(|acme| acme.resolver.clone());
    if let Some(redirect_addr) = redirect_listen {
        let redirect_listener = bind(redirect_addr)
            .map_err(|e| startup::cannot_listen(redirect_addr, "--http-redirect-listen", &e))?;
        info!(addr = %redirect_addr, "redirecting plain HTTP to https");
        connections.spawn(redirect::serve(
            redirect_listener,
            local.port(),
            http01,
            connections.clone(),
            cancel.clone(),
        ));
    }
    let (mut acceptor, reloader, acme) = match tls {
        Some(tls) => (Some(tls.acceptor), tls.reloader, tls.acme),
        None => (None, None, None),
    };
    if turn.is_some() {
        // TURN clients that say so in the handshake (RFC 7443) get their ALPN accepted.
        acceptor = acceptor.map(|a| tls::with_alpn(&a, server::demux::TURN_ALPN));
    }
    connections.spawn(tls_reload::watch(reloader, cancel.clone()));
    if let Some(acme) = acme {
        connections.spawn(acme.drive(cancel.clone()));
    }
    server::serve(
        listener,
        http::router(state),
        acceptor,
        turn.as_ref().map(|t| t.tcp_intake.clone()),
        &connections,
        &cancel,
        shutdown,
    )
    .await?;

    // `serve` has stopped accepting; now tell every connection, then wait with a
    // deadline. The registry shuts down last: closing sessions still release their
    // names in it.
    info!("shutting down: closing connections");
    // Before the sessions end and give up their seats: the restarted server holds them.
    ctx.resume.freeze().await;
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
