//! Embedded TURN server (RFC 5766) built on the webrtc-rs `turn` crate.
//!
//! The `turn` crate provides the protocol engine: allocations, permissions,
//! channels, nonces and long-term auth via an [`AuthHandler`] hook. It has no
//! TCP listener, no allocation quota, no bandwidth limit and no peer address
//! filter, so this module adds them around it without patching the crate:
//!
//! * **Auth** – [`RestAuth`] recomputes the TURN REST password from the
//!   username (`<expiry>:<name>`, see `ice.rs`) and refuses expired ones.
//! * **Peer filter** – [`Gatekeeper`] wraps each listener and answers
//!   CreatePermission / ChannelBind requests naming a denied peer with
//!   403 Forbidden before the crate sees them. As defence in depth every relay
//!   socket is wrapped in [`GuardedRelay`], which drops datagrams to or from
//!   denied addresses (this also covers Send indications). Loopback and
//!   private/link-local ranges are denied unless explicitly allowed: an open
//!   relay into 127.0.0.1 or the LAN lets any holder of a credential reach
//!   internal services (the classic TURN SSRF).
//! * **Quota** – [`Gatekeeper`] answers Allocate requests with 486 when the
//!   user (the name part of the username) already holds `user_quota`
//!   allocations, counted from the server's own allocation table.
//! * **Bandwidth** – [`GuardedRelay`] has a per-allocation token bucket and
//!   drops datagrams over the rate, as coturn's `max-bps` does.
//! * **TCP** – [`TcpMux`] presents all TCP clients as one packet connection,
//!   framing STUN and ChannelData messages off the byte stream
//!   (RFC 5766 §2.1, padding per §11.5). Relaying itself is always UDP, which
//!   is what browsers use (`turn:host:3478?transport=tcp`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use ::turn::auth::{AuthHandler, generate_auth_key};
use ::turn::relay::RelayAddressGenerator;
use ::turn::relay::relay_range::RelayAddressGeneratorRanges;
use ::turn::server::Server;
use ::turn::server::config::{ConnConfig, ServerConfig};
use anyhow::Context as _;
use async_trait::async_trait;
use stun::attributes::{ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, ErrorCode, ErrorCodeAttribute};
use stun::fingerprint::FINGERPRINT;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, Message, MessageType, Setter,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;
use webrtc_util::vnet::net::Net;

use crate::ice;

/// Largest datagram the crate's read loop accepts (`INBOUND_MTU` upstream);
/// longer TCP frames could only be truncated, so they are skipped.
const MAX_FRAME: usize = 1500;
/// Unauthenticated requests per second and listener; every legitimate
/// allocation needs one, so this is far above what calls need.
const UNAUTHENTICATED_PER_SEC: u64 = 200;
/// TCP clients at once; each costs two tasks and a file descriptor.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// A TURN client refreshes its allocation and ICE sends consent checks every
/// few seconds, so a TCP connection silent this long is dead or hostile.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How the embedded server authenticates clients.
#[derive(Clone, Default)]
pub enum TurnAuth {
    /// No way to authenticate: [`start`] refuses to run an open relay.
    #[default]
    None,
    /// TURN REST shared secret (same as `--turn-secret`).
    Secret(Vec<u8>),
    /// One fixed username/password (same as `--turn-username/--turn-password`).
    Static { username: String, password: String },
}

impl std::fmt::Debug for TurnAuth {
    // Never print secrets into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnAuth::None => f.write_str("None"),
            TurnAuth::Secret(_) => f.write_str("Secret(..)"),
            TurnAuth::Static { username, .. } => {
                write!(f, "Static {{ username: {username:?}, .. }}")
            }
        }
    }
}

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
/// parser and fill [`TurnConfig::auth`] from the ICE config's secret.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Embedded TURN server")]
pub struct TurnConfig {
    /// Run the embedded TURN server. It checks the same credentials duet hands out
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
        default_value = "0.0.0.0:3478"
    )]
    pub listen_udp: SocketAddr,

    /// Also accept TURN over TCP on this address (e.g. 0.0.0.0:3478).
    #[arg(long = "turn-listen-tcp", env = "DUET_TURN_LISTEN_TCP")]
    pub listen_tcp: Option<SocketAddr>,

    /// Public IP advertised as the relayed address. Required when listening on
    /// a wildcard address: the server cannot know its public address behind NAT.
    #[arg(long = "turn-external-ip", env = "DUET_TURN_EXTERNAL_IP")]
    pub external_ip: Option<IpAddr>,

    /// UDP ports used for relay sockets (open them in the firewall).
    #[arg(
        long = "turn-relay-ports",
        env = "DUET_TURN_RELAY_PORTS",
        default_value = "49152-65535"
    )]
    pub relay_ports: PortRange,

    /// Realm used in STUN long-term authentication.
    #[arg(long = "turn-realm", env = "DUET_TURN_REALM", default_value = "duet")]
    pub realm: String,

    /// Maximum simultaneous allocations per user (0 = unlimited). A call needs
    /// one per peer and transport, so a handful is plenty.
    #[arg(
        long = "turn-user-quota",
        env = "DUET_TURN_USER_QUOTA",
        default_value_t = 4
    )]
    pub user_quota: usize,

    /// Per-allocation relay bandwidth cap in bytes per second, both
    /// directions together (0 = unlimited). 250000 B/s = 2 Mbit/s fits HD video.
    #[arg(long = "turn-max-bps", env = "DUET_TURN_MAX_BPS", default_value_t = 0)]
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
    /// A config for tests: loopback listener on an ephemeral port.
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

    let server_cell: Arc<OnceLock<Weak<Server>>> = Arc::new(OnceLock::new());
    let policy = config.policy();
    let net = Arc::new(Net::new(None));
    let generator = |net: Arc<Net>| -> Box<dyn RelayAddressGenerator + Send + Sync> {
        Box::new(GuardedGenerator {
            inner: RelayAddressGeneratorRanges {
                relay_address: relay_ip,
                min_port: config.relay_ports.min,
                max_port: config.relay_ports.max,
                // Many retries: with a narrow range random picks collide often.
                max_retries: 64,
                address: relay_bind.clone(),
                net,
            },
            policy,
            max_bytes_per_sec: config.max_bytes_per_sec,
        })
    };
    let gate = |inner: Arc<dyn Conn + Send + Sync>| -> Arc<dyn Conn + Send + Sync> {
        Arc::new(Gatekeeper {
            inner,
            policy,
            user_quota: config.user_quota,
            server: Arc::clone(&server_cell),
            unauthenticated: Mutex::new(TokenBucket::new(UNAUTHENTICATED_PER_SEC)),
        })
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

    let auth: Arc<dyn AuthHandler + Send + Sync> = Arc::new(RestAuth {
        auth: config.auth.clone(),
    });
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
    let auth = match (&ice.turn_secret, &ice.turn_username, &ice.turn_password) {
        (Some(secret), _, _) => TurnAuth::Secret(secret.as_bytes().to_vec()),
        (None, Some(username), Some(password)) => TurnAuth::Static {
            username: username.clone(),
            password: password.clone(),
        },
        _ => {
            let secret: String = rand::random::<[u8; 32]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            ice.turn_secret = Some(secret.clone());
            TurnAuth::Secret(secret.into_bytes())
        }
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

// ---------------------------------------------------------------- auth

/// Long-term auth hook: returns the HMAC key for a username, or an error
/// (which the crate turns into a 401) for unknown or expired ones.
struct RestAuth {
    auth: TurnAuth,
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src: SocketAddr,
    ) -> Result<Vec<u8>, ::turn::Error> {
        let password = match &self.auth {
            TurnAuth::Secret(secret) => ice::password_for(secret, username, SystemTime::now())
                .map_err(|e| {
                    tracing::debug!(%src, username, "TURN auth refused: {e}");
                    ::turn::Error::Other(e.to_string())
                })?,
            TurnAuth::Static {
                username: u,
                password,
            } if u == username => password.clone(),
            _ => return Err(::turn::Error::Other("unknown user".into())),
        };
        Ok(generate_auth_key(username, realm, &password))
    }
}

// ---------------------------------------------------------------- peer policy

/// Which peer addresses relays may talk to.
#[derive(Debug, Clone, Copy)]
pub struct PeerPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
}

impl PeerPolicy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        // Map ::ffff:a.b.c.d to a.b.c.d so IPv4 rules cannot be bypassed
        // through IPv4-mapped IPv6 (cf. coturn CVE-2020-26262).
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        match ip {
            IpAddr::V4(v4) => {
                if v4.is_broadcast() || v4.octets()[0] == 0 {
                    return false;
                }
                if v4.is_private() || v4.is_link_local() || is_cgnat(v4) {
                    return self.allow_private;
                }
            }
            IpAddr::V6(v6) => {
                if is_ula(v6) || is_v6_link_local(v6) {
                    return self.allow_private;
                }
            }
        }
        true
    }
}

fn is_cgnat(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 100 && (o[1] & 0xc0) == 64
}

fn is_ula(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xfe00) == 0xfc00
}

fn is_v6_link_local(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

// ---------------------------------------------------------------- gatekeeper

/// Wraps a listener connection and answers requests the crate would accept
/// but duet must refuse, before the crate's read loop sees them.
struct Gatekeeper {
    inner: Arc<dyn Conn + Send + Sync>,
    policy: PeerPolicy,
    user_quota: usize,
    server: Arc<OnceLock<Weak<Server>>>,
    /// Requests without USERNAME (the first leg of every authentication).
    /// The crate stores a nonce for each 401 it sends and only forgets it
    /// when a client comes back with it, so a flood of spoofed unauthenticated
    /// Allocates would grow that map without bound; this caps the growth rate.
    unauthenticated: Mutex<TokenBucket>,
}

enum Verdict {
    Pass,
    Refuse(Vec<u8>),
}

impl Gatekeeper {
    async fn inspect(&self, datagram: &[u8], src: SocketAddr) -> Verdict {
        // ChannelData and garbage go straight to the crate, which validates them.
        if !stun::message::is_message(datagram) {
            return Verdict::Pass;
        }
        let mut m = Message::new();
        if m.unmarshal_binary(datagram).is_err() || m.typ.class != CLASS_REQUEST {
            return Verdict::Pass;
        }
        let has_username = m.attributes.0.iter().any(|a| a.typ == ATTR_USERNAME);
        if !has_username && m.typ.method != METHOD_BINDING && !lock(&self.unauthenticated).take(1) {
            return Verdict::Refuse(Vec::new());
        }
        if m.typ.method == METHOD_CREATE_PERMISSION || m.typ.method == METHOD_CHANNEL_BIND {
            for attr in m
                .attributes
                .0
                .iter()
                .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
            {
                let allowed = decode_xor_addr(&attr.value, &m.transaction_id.0)
                    .is_some_and(|peer| self.policy.allows(peer.ip()));
                if !allowed {
                    tracing::info!(%src, "TURN: refused permission to a denied peer address");
                    return refuse(&m, CODE_FORBIDDEN, "Forbidden IP");
                }
            }
        } else if m.typ.method == METHOD_ALLOCATE && self.user_quota > 0 {
            // The first Allocate carries no USERNAME (it gets the 401 with the
            // nonce); only count once the client identifies itself.
            let Some(user) = m.attributes.0.iter().find(|a| a.typ == ATTR_USERNAME) else {
                return Verdict::Pass;
            };
            let user = String::from_utf8_lossy(&user.value);
            let name = ice::username_name(&user);
            let Some(server) = self.server.get().and_then(Weak::upgrade) else {
                return Verdict::Pass;
            };
            match server.get_allocations_info(None).await {
                Ok(infos) => {
                    let held = infos
                        .values()
                        // A retransmitted Allocate for an existing allocation
                        // must get the crate's normal answer, not 486.
                        .filter(|i| {
                            i.five_tuple.src_addr != src && ice::username_name(&i.username) == name
                        })
                        .count();
                    if held >= self.user_quota {
                        tracing::info!(%src, name, held, "TURN: allocation quota reached");
                        return refuse(&m, CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached");
                    }
                }
                Err(e) => tracing::warn!("TURN: cannot count allocations: {e}"),
            }
        }
        Verdict::Pass
    }
}

/// Unsigned error response: the client's request may not even have been
/// authenticated yet, and RFC 5389 lets 4xx answers go without integrity.
fn refuse(req: &Message, code: ErrorCode, reason: &str) -> Verdict {
    let mut msg = Message::new();
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(req.transaction_id),
        Box::new(MessageType::new(req.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        }),
        Box::new(FINGERPRINT),
    ];
    match msg.build(&setters) {
        Ok(()) => Verdict::Refuse(msg.raw),
        // Cannot happen for these fixed attributes; refuse silently anyway.
        Err(_) => Verdict::Refuse(Vec::new()),
    }
}

/// Decodes an XOR-PEER-ADDRESS value (RFC 5389 §15.2) without trusting it.
fn decode_xor_addr(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    const COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();
    let family = *v.get(1)?;
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ 0x2112;
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&COOKIE);
    key[4..].copy_from_slice(txid);
    let ip = match family {
        0x01 => {
            let raw: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            IpAddr::from(std::array::from_fn::<u8, 4, _>(|i| raw[i] ^ key[i]))
        }
        0x02 => {
            let raw: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            IpAddr::from(std::array::from_fn::<u8, 16, _>(|i| raw[i] ^ key[i]))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[async_trait]
impl Conn for Gatekeeper {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            match self.inspect(&buf[..n], src).await {
                Verdict::Pass => return Ok((n, src)),
                Verdict::Refuse(resp) => {
                    if !resp.is_empty() {
                        // Best effort, like any UDP answer.
                        let _ = self.inner.send_to(&resp, src).await;
                    }
                }
            }
        }
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.inner.send_to(buf, target).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

// ---------------------------------------------------------------- relay sockets

/// Wraps the crate's port-range generator so every relay socket it hands out
/// is a [`GuardedRelay`].
struct GuardedGenerator {
    inner: RelayAddressGeneratorRanges,
    policy: PeerPolicy,
    max_bytes_per_sec: u64,
}

#[async_trait]
impl RelayAddressGenerator for GuardedGenerator {
    fn validate(&self) -> Result<(), ::turn::Error> {
        self.inner.validate()
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), ::turn::Error> {
        let (conn, addr) = self.inner.allocate_conn(use_ipv4, requested_port).await?;
        let bucket = (self.max_bytes_per_sec > 0)
            .then(|| Mutex::new(TokenBucket::new(self.max_bytes_per_sec)));
        Ok((
            Arc::new(GuardedRelay {
                inner: conn,
                policy: self.policy,
                bucket,
            }),
            addr,
        ))
    }
}

/// A relay socket that drops traffic to/from denied peers and over the rate.
struct GuardedRelay {
    inner: Arc<dyn Conn + Send + Sync>,
    policy: PeerPolicy,
    bucket: Option<Mutex<TokenBucket>>,
}

impl GuardedRelay {
    fn admit(&self, len: usize) -> bool {
        match &self.bucket {
            // A poisoned lock only means another packet panicked mid-update;
            // the bucket state is still usable.
            Some(b) => b.lock().unwrap_or_else(|p| p.into_inner()).take(len as u64),
            None => true,
        }
    }
}

#[async_trait]
impl Conn for GuardedRelay {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        // Never surface a dropped packet as an error: the crate tears the
        // allocation down on any relay read error.
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            if self.policy.allows(src.ip()) && self.admit(n) {
                return Ok((n, src));
            }
        }
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.policy.allows(target.ip()) {
            return Err(webrtc_util::Error::Other(format!(
                "relay to {target} denied"
            )));
        }
        if !self.admit(buf.len()) {
            // Over the cap: drop like a congested link would.
            return Ok(buf.len());
        }
        self.inner.send_to(buf, target).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Classic token bucket holding up to one second of traffic.
struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u64) -> Self {
        TokenBucket {
            rate,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self, n: u64) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate as f64;
        self.tokens = (self.tokens + refill).min(self.rate as f64);
        self.last = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

// ---------------------------------------------------------------- TCP

/// All TURN-over-TCP clients presented to the crate as one packet
/// connection: `recv_from` yields whole STUN/ChannelData frames tagged with
/// the client's address, `send_to` writes to that client's stream.
pub struct TcpMux {
    local: SocketAddr,
    inbound: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    peers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    cancel: CancellationToken,
}

impl TcpMux {
    fn spawn(listener: TcpListener, cancel: CancellationToken) -> anyhow::Result<Arc<Self>> {
        let local = listener.local_addr()?;
        let (in_tx, in_rx) = mpsc::channel(1024);
        let peers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>> = Arc::default();
        let mux = Arc::new(TcpMux {
            local,
            inbound: tokio::sync::Mutex::new(in_rx),
            peers: peers.clone(),
            cancel: cancel.clone(),
        });
        let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(v) => v,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!("TURN TCP accept: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%addr, "TURN TCP: too many connections");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (out_tx, out_rx) = mpsc::channel(256);
                lock(&peers).insert(addr, out_tx);
                tokio::spawn(serve_tcp(
                    stream,
                    addr,
                    in_tx.clone(),
                    out_rx,
                    peers.clone(),
                    cancel.clone(),
                    permit,
                ));
            }
        });
        Ok(mux)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve_tcp(
    stream: TcpStream,
    addr: SocketAddr,
    inbound: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    peers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    cancel: CancellationToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (mut rd, mut wr) = stream.into_split();
    let reader = async {
        let mut frame = Vec::with_capacity(MAX_FRAME);
        loop {
            match tokio::time::timeout(TCP_IDLE_TIMEOUT, read_frame(&mut rd, &mut frame)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) | Err(_) => return,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, "TURN TCP read: {e}");
                    return;
                }
            }
            if frame.len() > MAX_FRAME {
                continue;
            }
            if inbound.send((frame.clone(), addr)).await.is_err() {
                return;
            }
        }
    };
    let writer = async {
        while let Some(mut frame) = outbound.recv().await {
            pad_for_stream(&mut frame);
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        _ = cancel.cancelled() => {}
    }
    // The allocation of this 5-tuple is left to expire (lifetime <= 10 min):
    // the crate has no API to delete a single allocation by 5-tuple.
    lock(&peers).remove(&addr);
}

/// Reads one STUN or ChannelData message off a TCP stream into `frame`.
/// Returns `Ok(false)` on clean EOF between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    frame: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut hdr = [0u8; 4];
    match r.read_exact(&mut hdr).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    // The top two bits tell STUN (00) from ChannelData (01, channels
    // 0x4000-0x7FFF); anything else means we lost framing.
    let (body, keep) = match hdr[0] >> 6 {
        0 => (16 + len, 20 + len),
        1 => (len.div_ceil(4) * 4, 4 + len),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not STUN or ChannelData",
            ));
        }
    };
    frame.clear();
    frame.extend_from_slice(&hdr);
    frame.resize(4 + body, 0);
    r.read_exact(&mut frame[4..]).await?;
    // Drop ChannelData padding; the crate expects the exact length.
    frame.truncate(keep);
    Ok(true)
}

/// Over TCP, ChannelData must be padded to a multiple of four bytes
/// (RFC 5766 §11.5); over UDP the crate sends it unpadded.
pub fn pad_for_stream(frame: &mut Vec<u8>) {
    if frame.first().is_some_and(|b| b >> 6 == 1) {
        frame.resize(frame.len().div_ceil(4) * 4, 0);
    }
}

#[async_trait]
impl Conn for TcpMux {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("TcpMux cannot connect".into()))
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut rx = self.inbound.lock().await;
        loop {
            let Some((frame, addr)) = rx.recv().await else {
                return Err(webrtc_util::Error::Other("TURN TCP listener closed".into()));
            };
            if let Some(dst) = buf.get_mut(..frame.len()) {
                dst.copy_from_slice(&frame);
                return Ok((frame.len(), addr));
            }
        }
    }
    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other(
            "TcpMux needs a destination".into(),
        ))
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let tx = lock(&self.peers).get(&target).cloned();
        let Some(tx) = tx else {
            return Err(webrtc_util::Error::Other(format!(
                "no TCP connection from {target}"
            )));
        };
        // try_send: a client that does not read must not stall the server's
        // single read loop; its media is dropped like on a full UDP buffer.
        let _ = tx.try_send(buf.to_vec());
        Ok(buf.len())
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        self.cancel.cancel();
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests;
