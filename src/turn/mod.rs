//! Embedded TURN server (RFC 5766) built on the webrtc-rs `turn` crate.
//!
//! The `turn` crate provides the protocol engine: allocations, permissions,
//! channels and long-term auth via an `AuthHandler` hook. It has no TCP
//! listener, no allocation quota, no bandwidth limit and no peer address
//! filter, and its `Server` keeps a nonce for every unauthenticated request, so
//! this module adds them around it without patching the crate, and drives the
//! crate's per-datagram handler from its own read loops. One file per addition:
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
//! * **Listeners** (`listener.rs`) – one read loop per listener in place of the
//!   crate's `Server`: gatekeeper first, then the crate's `Request` handler.
//! * **Gatekeeper** (`gate.rs`) – authenticates every request itself (RFC 8489
//!   §9.2.4: 401 with REALM and NONCE for any credential failure) with stateless
//!   nonces (`nonce.rs`), so only requests with a valid MESSAGE-INTEGRITY reach
//!   the crate and an unauthenticated request costs no stored state. It answers
//!   CreatePermission / ChannelBind requests naming a denied peer with 403,
//!   out-of-range channel numbers with 400 and Allocate requests over the
//!   per-user quota with 486, and rate-limits unauthenticated requests per
//!   source address (`limit.rs`).
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
mod limit;
mod listener;
pub mod live;
mod nonce;
mod policy;
mod relay;
mod tcp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ::turn::allocation::allocation_manager::{Manager, ManagerConfig};
use ::turn::auth::AuthHandler;
use ::turn::relay::RelayAddressGenerator;
use ::turn::relay::relay_range::RelayAddressGeneratorRanges;
use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc_util::Conn;
use webrtc_util::vnet::net::Net;

use crate::ice;
/// The embedded server checks the credentials `ice.rs` hands out, so its auth setting is
/// the ICE config's type (also re-exported here, where [`TurnConfig::auth`] uses it).
pub use crate::ice::TurnAuth;
pub use policy::PeerPolicy;
pub use tcp::{TcpIntake, TcpMux, pad_for_stream, read_frame};

use auth::LongTermAuth;
use gate::{Gatekeeper, Quotas};
use listener::Listener;
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
    /// Run the embedded TURN server (UDP; TCP, and TLS with HTTPS, on --listen's port; TCP also on
    /// --turn-listen-tcp). It checks the same credentials duet hands out
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

    /// Also offer IPv6 relayed addresses, from this local IPv6 address: clients ask for one
    /// with REQUESTED-ADDRESS-FAMILY (RFC 6156; browsers do not, coturn's `turnutils_uclient
    /// -x` does) and then relay to IPv6 peers. Clients still reach the server over IPv4.
    #[arg(
        long = "turn-relay-ip6",
        env = "DUET_TURN_RELAY_IP6",
        value_name = "IPV6"
    )]
    pub relay_ip6: Option<Ipv6Addr>,

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

    /// Maximum simultaneous allocations per user (0 = unlimited). A browser handed
    /// UDP, TCP and TLS servers allocates on each, twice per server before BUNDLE
    /// settles: 6 for one call, 8 leaves room for a renegotiation.
    #[arg(
        long = "turn-user-quota",
        env = "DUET_TURN_USER_QUOTA",
        default_value_t = 8,
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

    /// Maximum simultaneous allocations (each holds one relay port) from one client
    /// IP address, whatever the user names (0 = unlimited). Keeps a few throw-away
    /// logins from holding every relay port; a NAT shared by many callers needs more.
    #[arg(
        long = "turn-address-quota",
        env = "DUET_TURN_ADDRESS_QUOTA",
        default_value_t = 64
    )]
    pub address_quota: usize,

    /// UDP sockets on --turn-listen's address (SO_REUSEPORT), each read by a task of its
    /// own, so that receiving spreads over cores and one socket's buffer does not overflow
    /// under load; the kernel keeps each client on one socket. 0 = one per CPU core (at
    /// most 8).
    #[arg(
        long = "turn-udp-sockets",
        env = "DUET_TURN_UDP_SOCKETS",
        default_value_t = 0,
        value_name = "COUNT"
    )]
    pub udp_sockets: usize,

    /// Receive and send buffer size of every TURN UDP socket (listen and relay), in bytes
    /// (0 = the system default, about 208 KiB on Linux). The kernel caps it at
    /// net.core.rmem_max / wmem_max unless those are raised; duet logs what it got.
    #[arg(
        long = "turn-udp-buffer",
        env = "DUET_TURN_UDP_BUFFER",
        default_value_t = 4 << 20,
        value_name = "BYTES"
    )]
    pub udp_buffer: usize,

    /// Which REST credentials (`--turn-secret`) the embedded server accepts. `session`:
    /// only those handed to a session of this server that is still connected (or held for
    /// a resume); when it ends they stop working and their allocations close, so a name
    /// logged in once cannot keep relaying, or hold the name's quota, afterwards.
    /// `expiry`: any credential made with the secret, until it expires (--turn-ttl), e.g.
    /// when other applications or nodes mint credentials for this server.
    #[arg(
        long = "turn-credentials",
        env = "DUET_TURN_CREDENTIALS",
        value_enum,
        default_value_t = CredentialScope::Session
    )]
    pub credentials: CredentialScope,

    /// Credentials check; not a flag because it comes from the ICE config.
    #[arg(skip)]
    pub auth: TurnAuth,
}

/// How long a REST credential works on the embedded server (`--turn-credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialScope {
    /// While the session it was handed to lives.
    Session,
    /// Until its expiry.
    Expiry,
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
            relay_ip6: None,
            relay_ports: PortRange {
                min: 49152,
                max: 65535,
            },
            realm: "duet".into(),
            user_quota: 8,
            address_quota: 64,
            udp_sockets: 1,
            udp_buffer: 0,
            max_bytes_per_sec: 0,
            allow_loopback: false,
            allow_private: false,
            credentials: CredentialScope::Expiry,
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

/// A UDP socket on `addr`, with SO_REUSEPORT when others will share the port, and
/// `buffer` bytes of receive and send buffer (0: the system's default).
fn bind_udp(addr: SocketAddr, reuse_port: bool, buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    relay::set_buffers(&socket, buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A running embedded TURN server.
pub struct TurnHandle {
    /// Bound UDP listener address (useful when configured with port 0).
    pub udp_addr: SocketAddr,
    /// Bound TCP listener address, if TCP is enabled.
    pub tcp_addr: Option<SocketAddr>,
    /// Address advertised in XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
    /// Where the HTTP(S) port hands over its connections that speak TURN.
    pub tcp_intake: TcpIntake,
    /// Every listener's allocation table.
    managers: Arc<[Arc<Manager>]>,
    /// The usernames of live sessions, with `--turn-credentials session` and REST
    /// credentials: what the sessions hold and the credential check asks.
    pub live: Option<live::LiveCredentials>,
    /// The listeners' loops, which end (closing their allocations) on shutdown.
    loops: TaskTracker,
}

impl TurnHandle {
    /// Number of live allocations (all listeners).
    pub async fn allocation_count(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for m in self.managers.iter() {
            n += m.get_allocations_info(None).await.len();
        }
        Ok(n)
    }

    /// Waits until the server has shut down after the token was cancelled.
    pub async fn stopped(self) {
        self.loops.wait().await;
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

    let policy = config.policy();
    let net = Arc::new(Net::new(None));
    let manager = || -> anyhow::Result<Arc<Manager>> {
        let ranges = RelayAddressGeneratorRanges {
            relay_address: relay_ip,
            min_port: config.relay_ports.min,
            max_port: config.relay_ports.max,
            // Many retries: with a narrow range random picks collide often.
            max_retries: 64,
            address: relay_bind.clone(),
            net: net.clone(),
        };
        // IPv6 relays bind on the address they advertise (brackets: the crate joins
        // address and port with a colon).
        let ranges6 = config.relay_ip6.map(|ip6| RelayAddressGeneratorRanges {
            relay_address: IpAddr::V6(ip6),
            min_port: config.relay_ports.min,
            max_port: config.relay_ports.max,
            max_retries: 64,
            address: format!("[{ip6}]"),
            net: net.clone(),
        });
        let generator = GuardedGenerator::new(
            ranges,
            ranges6,
            policy,
            config.max_bytes_per_sec,
            config.udp_buffer,
        );
        generator
            .validate()
            .context("TURN relay address generator")?;
        Ok(Arc::new(Manager::new(ManagerConfig {
            relay_addr_generator: Box::new(generator),
            alloc_close_notify: None,
        })))
    };

    let sockets = match config.udp_sockets {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n,
    };
    let cannot = |e| crate::startup::cannot_listen(config.listen_udp, "--turn-listen", &e);
    let first = bind_udp(config.listen_udp, sockets > 1, config.udp_buffer).map_err(cannot)?;
    // The others on the port the first got (which may have been 0).
    let udp_addr = first.local_addr()?;
    let buffer = socket2::SockRef::from(&first)
        .recv_buffer_size()
        .unwrap_or(0);
    let mut conns: Vec<Arc<dyn Conn + Send + Sync>> = vec![Arc::new(first)];
    for _ in 1..sockets {
        conns.push(Arc::new(
            bind_udp(udp_addr, true, config.udp_buffer).map_err(cannot)?,
        ));
    }
    // Linux reports twice the size asked for (the kernel's bookkeeping share).
    if config.udp_buffer > 0 && buffer < config.udp_buffer {
        tracing::warn!(
            asked = config.udp_buffer,
            got = buffer / 2,
            "TURN UDP buffer capped by the kernel: raise net.core.rmem_max and wmem_max"
        );
    }

    // The TCP path always exists: besides --turn-listen-tcp, the HTTP(S) port hands it
    // the connections that speak TURN (`server::demux`).
    let mut tcp_addr = None;
    let mut tcp_listener = None;
    if let Some(addr) = config.listen_tcp {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| crate::startup::cannot_listen(addr, "--turn-listen-tcp", &e))?;
        tcp_addr = Some(listener.local_addr()?);
        tcp_listener = Some(listener);
    }
    let (mux, tcp_intake) = TcpMux::new(tcp_addr.unwrap_or(udp_addr), shutdown.child_token());
    conns.push(mux);
    if let Some(listener) = tcp_listener {
        tokio::spawn(tcp::accept(listener, tcp_intake.clone()));
    }

    let managers: Arc<[Arc<Manager>]> = conns
        .iter()
        .map(|_| manager())
        .collect::<anyhow::Result<Vec<_>>>()?
        .into();
    let live = (config.credentials == CredentialScope::Session
        && matches!(config.auth, TurnAuth::Secret(_)))
    .then(live::LiveCredentials::default);
    if let Some(live) = &live {
        live.set_managers(Arc::clone(&managers));
    }
    let auth = Arc::new(LongTermAuth::new(config.auth.clone(), live.clone()));
    let gate = Arc::new(
        Gatekeeper::new(
            policy,
            Quotas {
                per_user: config.user_quota,
                per_address: config.address_quota,
            },
            Arc::clone(&managers),
            Arc::clone(&auth),
            config.realm.clone(),
        )
        .with_ipv6_relays(config.relay_ip6.is_some()),
    );
    let loops = TaskTracker::new();
    for (conn, manager) in conns.into_iter().zip(managers.iter()) {
        let listener = Listener {
            conn,
            manager: Arc::clone(manager),
            gate: Arc::clone(&gate),
            auth: Arc::clone(&auth) as Arc<dyn AuthHandler + Send + Sync>,
            realm: config.realm.clone(),
        };
        loops.spawn(listener.run(shutdown.clone()));
    }
    loops.close();
    tracing::info!(%udp_addr, udp_sockets = sockets, ?tcp_addr, %relay_ip, "TURN server listening");
    Ok(TurnHandle {
        udp_addr,
        tcp_addr,
        relay_ip,
        tcp_intake,
        managers,
        live,
        loops,
    })
}

/// duet's own listening port (`--listen`), which also serves TURN over TCP, and over TLS
/// when HTTPS is on (`server::demux`).
#[derive(Debug, Clone, Copy)]
pub struct HttpPort {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Starts the embedded TURN server when `--turn-server` asks for it and
/// returns the ICE configuration clients should get with it.
///
/// The server checks the same REST credentials duet hands out. Without
/// `--turn-secret` (or static credentials) a random secret is made up in
/// memory: duet both issues and verifies the credentials, so nobody else
/// needs to know it. Without `--turn` URLs the server's own addresses are
/// advertised, see [`advertised_urls`].
pub async fn start_embedded(
    ice: &ice::IceConfig,
    config: &TurnConfig,
    http: HttpPort,
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
        ice.turn = advertised_urls(&handle, http);
    }
    Ok((ice, Some(handle)))
}

/// The TURN URLs of the embedded server, in the order a browser should try them: UDP
/// (the cheapest path), TCP (`--turn-listen-tcp`'s port, else duet's own port), then TLS
/// on duet's HTTPS port (443 in production: what a network that lets out only HTTPS
/// passes). duet's own port is left out when it listens on loopback only (behind a
/// reverse proxy, where the relay address cannot reach it).
pub fn advertised_urls(handle: &TurnHandle, http: HttpPort) -> Vec<String> {
    let ip = match handle.relay_ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let mut urls = vec![format!(
        "turn:{ip}:{}?transport=udp",
        handle.udp_addr.port()
    )];
    let own_port = !http.addr.ip().is_loopback() || handle.relay_ip.is_loopback();
    let port = http.addr.port();
    match handle.tcp_addr {
        Some(tcp) => urls.push(format!("turn:{ip}:{}?transport=tcp", tcp.port())),
        None if own_port && !http.tls => urls.push(format!("turn:{ip}:{port}?transport=tcp")),
        None => {}
    }
    if own_port && http.tls {
        urls.push(format!("turns:{ip}:{port}?transport=tcp"));
    }
    urls
}

#[cfg(test)]
mod tests;

/// Entry points for the fuzz targets in `fuzz/`; built only with `--cfg fuzzing`, which
/// `cargo fuzz` sets.
#[cfg(fuzzing)]
pub mod fuzzing {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::auth::LongTermAuth;
    use super::gate::{Gatekeeper, Quotas, Verdict};
    use super::policy::PeerPolicy;
    use crate::ice::TurnAuth;

    /// A gatekeeper with a REST secret and no allocations, as the listeners use it.
    pub struct Gate(Gatekeeper);

    impl Gate {
        pub fn new() -> Gate {
            let auth = Arc::new(LongTermAuth::new(TurnAuth::Secret(b"fuzz".to_vec()), None));
            let quotas = Quotas {
                per_user: 4,
                per_address: 64,
            };
            let policy = PeerPolicy {
                allow_loopback: false,
                allow_private: false,
            };
            Gate(Gatekeeper::new(
                policy,
                quotas,
                Arc::from([]),
                auth,
                "duet".into(),
            ))
        }

        /// Runs one datagram through the checks; returns the reply it would send, if any.
        pub async fn check(&self, datagram: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
            match self.0.check(datagram, src).await {
                Verdict::Answer(reply) => Some(reply),
                Verdict::Pass { .. } | Verdict::Drop => None,
            }
        }
    }

    impl Default for Gate {
        fn default() -> Gate {
            Gate::new()
        }
    }
}
