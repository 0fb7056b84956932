//! Embedded TURN server (RFC 5766) built on the webrtc-rs `turn` crate.
//!
//! The `turn` crate provides the protocol engine: allocations, permissions,
//! channels, nonces and long-term auth via an `AuthHandler` hook. It has no
//! TCP listener, no allocation quota, no bandwidth limit and no peer address
//! filter, so this module adds them around it without patching the crate.
//! One file per addition:
//!
//! * **Auth** (`auth.rs`) – checks the credentials duet hands out: the
//!   [`TurnAuth`](crate::ice::TurnAuth) that `ice.rs` builds from the flags
//!   recomputes the TURN REST password from the username (`<expiry>:<name>`)
//!   and refuses expired ones.
//! * **Peer policy** (`policy.rs`) – [`PeerPolicy`]: which peer addresses a
//!   relay may talk to. Loopback and private/link-local ranges are denied
//!   unless explicitly allowed: an open relay into 127.0.0.1 or the LAN lets
//!   any holder of a credential reach internal services (the classic TURN
//!   SSRF).
//! * **Gatekeeper** (`gate.rs`) – wraps each listener and answers
//!   CreatePermission / ChannelBind requests naming a denied peer with
//!   403 Forbidden, and Allocate requests over the per-user quota with 486,
//!   before the crate sees them. It also rate-limits unauthenticated requests.
//! * **Relay sockets** (`relay.rs`) – as defence in depth every relay socket
//!   drops datagrams to or from denied addresses (this also covers Send
//!   indications), and a per-allocation token bucket drops datagrams over the
//!   rate, as coturn's `max-bps` does.
//! * **TCP** (`tcp.rs`) – [`TcpMux`] presents all TCP clients as one packet
//!   connection, framing STUN and ChannelData messages off the byte stream
//!   (RFC 5766 §2.1, padding per §11.5). Relaying itself is always UDP, which
//!   is what browsers use (`turn:host:3478?transport=tcp`).
//!
//! The gatekeeper and the relay guard change only what passes through a
//! connection, so both are a `Filter` inside one `Conn` wrapper (`filter.rs`)
//! that forwards everything else.

mod auth;
mod filter;
mod gate;
mod policy;
mod relay;
mod tcp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::turn::auth::AuthHandler;
use ::turn::relay::RelayAddressGenerator;
use ::turn::relay::relay_range::RelayAddressGeneratorRanges;
use ::turn::server::Server;
use ::turn::server::config::{ConnConfig, ServerConfig};
use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;
use webrtc_util::vnet::net::Net;

use crate::ice;
/// The embedded server checks the credentials `ice.rs` hands out, so its auth setting is
/// the ICE config's type (also re-exported here, where [`TurnConfig::auth`] uses it).
pub use crate::ice::TurnAuth;
pub use policy::PeerPolicy;
pub use tcp::{TcpMux, pad_for_stream, read_frame};

use auth::LongTermAuth;
use filter::Filtered;
use gate::Gatekeeper;
use relay::GuardedGenerator;

/// Inclusive UDP port range for relay sockets, parsed from `MIN-MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or("expected MIN-MAX, e.g. 49152-65535")?;
        let min: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
        let max: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
        if min == 0 || max < min {
            return Err(format!("invalid range {min}-{max}"));
        }
        Ok(PortRange { min, max })
    }
}

/// Embedded TURN server configuration. Flatten it into the main `clap`
/// parser; [`start_embedded`] fills [`TurnConfig::auth`] from the ICE config.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "ICE and TURN")]
pub struct TurnConfig {
    /// Run the embedded TURN server (UDP, and TCP with --turn-listen-tcp). It checks the same credentials duet hands out
    /// (`--turn-secret`, or a random in-memory secret when none is given).
    #[arg(
        long = "turn-server",
        alias = "turn-embedded",
        env = "DUET_TURN_SERVER"
    )]
    pub enabled: bool,

    /// UDP address the embedded TURN server listens on.
    #[arg(
        long = "turn-listen",
        env = "DUET_TURN_LISTEN",
        default_value = "0.0.0.0:3478",
        value_name = "ADDR:PORT"
    )]
    pub listen_udp: SocketAddr,

    /// Also accept TURN over TCP on this address (e.g. 0.0.0.0:3478).
    #[arg(
        long = "turn-listen-tcp",
        env = "DUET_TURN_LISTEN_TCP",
        value_name = "ADDR:PORT"
    )]
    pub listen_tcp: Option<SocketAddr>,

    /// Public IP advertised as the relayed address. Required when listening on
    /// a wildcard address: the server cannot know its public address behind NAT.
    #[arg(
        long = "turn-external-ip",
        env = "DUET_TURN_EXTERNAL_IP",
        value_name = "IP"
    )]
    pub external_ip: Option<IpAddr>,

    /// UDP ports used for relay sockets (open them in the firewall).
    #[arg(
        long = "turn-relay-ports",
        env = "DUET_TURN_RELAY_PORTS",
        default_value = "49152-65535",
        value_name = "FIRST-LAST"
    )]
    pub relay_ports: PortRange,

    /// Realm used in STUN long-term authentication.
    #[arg(
        long = "turn-realm",
        env = "DUET_TURN_REALM",
        default_value = "duet",
        value_name = "REALM"
    )]
    pub realm: String,

    /// Maximum simultaneous allocations per user (0 = unlimited). A call needs
    /// one per peer and transport, so a handful is plenty.
    #[arg(
        long = "turn-user-quota",
        env = "DUET_TURN_USER_QUOTA",
        default_value_t = 4,
        value_name = "COUNT"
    )]
    pub user_quota: usize,

    /// Per-allocation relay bandwidth cap in bytes per second, both
    /// directions together (0 = unlimited). 250000 B/s = 2 Mbit/s fits HD video.
    #[arg(
        long = "turn-max-bps",
        env = "DUET_TURN_MAX_BPS",
        default_value_t = 0,
        value_name = "BYTES_PER_SEC"
    )]
    pub max_bytes_per_sec: u64,

    /// Allow relaying to loopback peers (127.0.0.0/8, ::1). Tests only.
    #[arg(long = "turn-allow-loopback", env = "DUET_TURN_ALLOW_LOOPBACK")]
    pub allow_loopback: bool,

    /// Allow relaying to private, CGNAT and link-local peers (10/8, 172.16/12,
    /// 192.168/16, 100.64/10, 169.254/16, fc00::/7, fe80::/10). For LANs.
    #[arg(long = "turn-allow-private", env = "DUET_TURN_ALLOW_PRIVATE")]
    pub allow_private: bool,

    /// Credentials check; not a flag because it comes from the ICE config.
    #[arg(skip)]
    pub auth: TurnAuth,
}

impl TurnConfig {
    /// A config for tests: loopback listener on an ephemeral port. Public (not
    /// `#[cfg(test)]`) because `examples/relay_bench.rs` starts its server with it, and
    /// examples only see the library as built without `cfg(test)`.
    pub fn local(auth: TurnAuth) -> Self {
        TurnConfig {
            enabled: true,
            listen_udp: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            listen_tcp: None,
            external_ip: None,
            relay_ports: PortRange {
                min: 49152,
                max: 65535,
            },
            realm: "duet".into(),
            user_quota: 4,
            max_bytes_per_sec: 0,
            allow_loopback: false,
            allow_private: false,
            auth,
        }
    }

    fn policy(&self) -> PeerPolicy {
        PeerPolicy {
            allow_loopback: self.allow_loopback,
            allow_private: self.allow_private,
        }
    }
}

/// A running embedded TURN server.
pub struct TurnHandle {
    /// Bound UDP listener address (useful when configured with port 0).
    pub udp_addr: SocketAddr,
    /// Bound TCP listener address, if TCP is enabled.
    pub tcp_addr: Option<SocketAddr>,
    /// Address advertised in XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
    server: Arc<Server>,
    stopped: tokio::task::JoinHandle<()>,
}

impl TurnHandle {
    /// Number of live allocations (all listeners).
    pub async fn allocation_count(&self) -> anyhow::Result<usize> {
        Ok(self.server.get_allocations_info(None).await?.len())
    }

    /// Waits until the server has shut down after the token was cancelled.
    pub async fn stopped(self) {
        let _ = self.stopped.await;
    }
}

/// Starts the TURN server; it runs until `shutdown` is cancelled.
pub async fn start(config: TurnConfig, shutdown: CancellationToken) -> anyhow::Result<TurnHandle> {
    if matches!(config.auth, TurnAuth::None) {
        anyhow::bail!(
            "the embedded TURN server needs --turn-secret or --turn-username/--turn-password"
        );
    }
    let relay_ip = match (config.external_ip, config.listen_udp.ip()) {
        (Some(ip), _) => ip,
        (None, ip) if !ip.is_unspecified() => ip,
        _ => {
            anyhow::bail!("--turn-external-ip is required when --turn-listen is a wildcard address")
        }
    };
    anyhow::ensure!(
        relay_ip.is_ipv4(),
        "only IPv4 relays are supported (turn crate relay generator)"
    );
    // Relay sockets bind on the listener's interface; with a wildcard listener
    // they bind 0.0.0.0 and the kernel routes replies, as coturn does.
    let relay_bind = config.listen_udp.ip().to_string();

    let server_cell = Arc::new(OnceLock::new());
    let policy = config.policy();
    let net = Arc::new(Net::new(None));
    let generator = |net: Arc<Net>| -> Box<dyn RelayAddressGenerator + Send + Sync> {
        let ranges = RelayAddressGeneratorRanges {
            relay_address: relay_ip,
            min_port: config.relay_ports.min,
            max_port: config.relay_ports.max,
            // Many retries: with a narrow range random picks collide often.
            max_retries: 64,
            address: relay_bind.clone(),
            net,
        };
        Box::new(GuardedGenerator::new(
            ranges,
            policy,
            config.max_bytes_per_sec,
        ))
    };
    let gate = |inner: Arc<dyn Conn + Send + Sync>| -> Arc<dyn Conn + Send + Sync> {
        let gatekeeper = Gatekeeper::new(policy, config.user_quota, Arc::clone(&server_cell));
        Arc::new(Filtered::new(inner, gatekeeper))
    };

    let udp = UdpSocket::bind(config.listen_udp)
        .await
        .with_context(|| format!("binding TURN UDP {}", config.listen_udp))?;
    let udp_addr = udp.local_addr()?;
    let mut conn_configs = vec![ConnConfig {
        conn: gate(Arc::new(udp)),
        relay_addr_generator: generator(net.clone()),
    }];

    let mut tcp_addr = None;
    if let Some(addr) = config.listen_tcp {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding TURN TCP {addr}"))?;
        tcp_addr = Some(listener.local_addr()?);
        let mux = TcpMux::spawn(listener, shutdown.child_token())?;
        conn_configs.push(ConnConfig {
            conn: gate(mux),
            relay_addr_generator: generator(net.clone()),
        });
    }

    let auth: Arc<dyn AuthHandler + Send + Sync> = Arc::new(LongTermAuth::new(config.auth.clone()));
    let server = Arc::new(
        Server::new(ServerConfig {
            conn_configs,
            realm: config.realm.clone(),
            auth_handler: auth,
            channel_bind_timeout: Duration::ZERO, // crate default: 10 minutes
            alloc_close_notify: None,
        })
        .await
        .context("starting TURN server")?,
    );
    // The gatekeepers only hold a weak reference, so dropping the handle
    // cannot be kept from freeing the server by a cycle.
    let _ = server_cell.set(Arc::downgrade(&server));

    let stopped = tokio::spawn({
        let server = Arc::clone(&server);
        async move {
            shutdown.cancelled().await;
            if let Err(e) = server.close().await {
                tracing::warn!("TURN server close: {e}");
            }
        }
    });
    tracing::info!(%udp_addr, ?tcp_addr, %relay_ip, "TURN server listening");
    Ok(TurnHandle {
        udp_addr,
        tcp_addr,
        relay_ip,
        server,
        stopped,
    })
}

/// Starts the embedded TURN server when `--turn-server` asks for it and
/// returns the ICE configuration clients should get with it.
///
/// The server checks the same REST credentials duet hands out. Without
/// `--turn-secret` (or static credentials) a random secret is made up in
/// memory: duet both issues and verifies the credentials, so nobody else
/// needs to know it. Without `--turn` URLs the server's own address is
/// advertised (`turn:<relay ip>:<port>?transport=udp`, plus tcp when enabled).
pub async fn start_embedded(
    ice: &ice::IceConfig,
    config: &TurnConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<(ice::IceConfig, Option<TurnHandle>)> {
    let mut ice = ice.clone();
    if !config.enabled {
        return Ok((ice, None));
    }
    let auth = match ice.turn_auth() {
        TurnAuth::None => {
            let secret: String = rand::random::<[u8; 32]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            // Into the returned ICE config too, so the logins mint with it.
            ice.turn_secret = Some(secret.clone());
            TurnAuth::Secret(secret.into_bytes())
        }
        configured => configured,
    };
    let handle = start(
        TurnConfig {
            auth,
            ..config.clone()
        },
        shutdown,
    )
    .await?;
    if ice.turn.is_empty() {
        let ip = handle.relay_ip;
        ice.turn.push(format!(
            "turn:{ip}:{}?transport=udp",
            handle.udp_addr.port()
        ));
        if let Some(tcp) = handle.tcp_addr {
            ice.turn
                .push(format!("turn:{ip}:{}?transport=tcp", tcp.port()));
        }
    }
    Ok((ice, Some(handle)))
}

#[cfg(test)]
mod tests;
