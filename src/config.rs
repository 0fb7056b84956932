//! Command-line options, each with an environment variable fallback. `duet --help` is the
//! manual: every option states its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::ice::IceConfig;
use crate::tls::TlsConfig;
use crate::turn::TurnConfig;

/// duet: self-hosted one-to-one video calls. Serves the web client, the signaling
/// WebSocket, health and metrics on one port.
#[derive(Parser, Debug, Clone)]
#[command(name = "duet", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket (the seed's port is 9090).
    #[arg(long, env = "DUET_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,

    /// Largest accepted WebSocket message, in bytes; larger ones close the connection with
    /// code 1009.
    #[arg(long, env = "DUET_MAX_MESSAGE_SIZE", default_value_t = 64 * 1024)]
    pub max_message_size: usize,

    /// Sustained messages per second allowed per connection (token bucket); 0 turns the
    /// rate limit off.
    #[arg(long, env = "DUET_RATE_LIMIT", default_value_t = 50.0)]
    pub rate_limit: f64,

    /// Burst size of the per-connection rate limit. A client that keeps sending after this
    /// many `rate-limited` errors in a row is disconnected (close code 1008).
    #[arg(long, env = "DUET_RATE_BURST", default_value_t = 200)]
    pub rate_burst: u32,

    /// Most WebSocket connections held at once; further upgrades get HTTP 503.
    #[arg(long, env = "DUET_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// How often the server pings each WebSocket.
    #[arg(long, env = "DUET_PING_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// How long after a ping a silent client is considered gone: its name is freed and its
    /// call peer told.
    #[arg(long, env = "DUET_PONG_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub pong_timeout: Duration,

    /// Web origins allowed to open the signaling WebSocket, e.g. https://call.example.org
    /// (repeatable). Browsers send their page's origin; other origins get 403. Clients
    /// that send no Origin (not browsers) are always allowed. Default: any origin, as the
    /// seed's server did; set it on a public server so that other sites' pages cannot
    /// use it (and its TURN credentials).
    #[arg(
        long = "allowed-origin",
        env = "DUET_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Worker threads; 0 means one per CPU core available to the process. With one
    /// thread (given, or the only core) duet runs tokio's single-threaded scheduler, the
    /// cheapest per message; more threads carry more TLS handshakes and TURN relaying.
    #[arg(long, env = "DUET_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Per-connection WebSocket read buffer, in bytes, allocated up front. Small keeps idle
    /// connections cheap; larger reads more pipelined messages per system call.
    #[arg(long, env = "DUET_WS_READ_BUFFER", default_value_t = 512)]
    pub ws_read_buffer: usize,

    /// Messages queued for one client before it counts as a slow consumer and is
    /// disconnected (close code 1013).
    #[arg(long, env = "DUET_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// A write to one client that takes longer than this disconnects it.
    #[arg(long, env = "DUET_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// How long an unanswered call rings before the server ends it with reason
    /// `no-answer`.
    #[arg(long, env = "DUET_RING_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ring_timeout: Duration,

    /// Presence (who is online) is sent while at most this many users are online; 0 turns
    /// presence off.
    #[arg(long, env = "DUET_PRESENCE_LIMIT", default_value_t = 1000)]
    pub presence_limit: usize,

    /// Serve the web client from this folder instead of the copy built into the binary
    /// (for developing the client without rebuilding).
    #[arg(long, env = "DUET_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// Redis to coordinate several duet nodes through, e.g. redis://127.0.0.1:6379/ (see
    /// docs/cluster.md). Without it this node is on its own and keeps everything in memory.
    #[arg(long, env = "DUET_REDIS_URL")]
    pub redis_url: Option<String>,

    /// With --redis-url: how long a node's names and liveness outlive its last heartbeat.
    /// A node that dies without warning frees its names, and its users' call peers on
    /// other nodes get `leave`, within this time plus a quarter of it.
    #[arg(long, env = "DUET_REDIS_LEASE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub redis_lease: Duration,

    /// With --redis-url: prefix of every Redis key and channel, so several duet clusters
    /// can share one Redis.
    #[arg(long, env = "DUET_REDIS_PREFIX", default_value = "duet:")]
    pub redis_prefix: String,

    /// With --redis-url: this node's label in Redis keys (1 to 40 letters, digits, `.`, `_`,
    /// `-`); the host name by default. A random suffix is added on every start, so a
    /// restarted node is never mistaken for its previous life.
    #[arg(long, env = "DUET_NODE_ID")]
    pub node_id: Option<String>,

    /// How long to wait for connections to close on shutdown.
    #[arg(long, env = "DUET_SHUTDOWN_GRACE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    // The groups below print under their own headings in `--help`, so they stay last.
    /// HTTPS and WSS on the listen port (`--tls-cert`/`--tls-key` or `--tls-self-signed`).
    #[command(flatten)]
    pub tls: TlsConfig,

    /// STUN/TURN servers handed to clients and their credentials (`--stun`, `--turn`,
    /// `--turn-secret`, ...; see docs/turn.md).
    #[command(flatten)]
    pub ice: IceConfig,

    /// The embedded TURN server (`--turn-server`, `--turn-listen`, ...).
    #[command(flatten)]
    pub turn: TurnConfig,
}

impl Config {
    /// Rejects settings that parse but cannot work, with a message naming the option.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if self.ping_interval.is_zero() {
            bail!("--ping-interval must be longer than 0s");
        }
        if self.pong_timeout.is_zero() {
            bail!("--pong-timeout must be longer than 0s");
        }
        if !self.rate_limit.is_finite() || self.rate_limit < 0.0 {
            bail!("--rate-limit must be a number of messages per second, 0 or more (0 = off)");
        }
        if self.queue_capacity == 0 {
            bail!("--queue-capacity must be at least 1");
        }
        if self.max_message_size < 1024 {
            bail!("--max-message-size must be at least 1024 bytes (an SDP offer is several KB)");
        }
        Ok(())
    }

    /// The defaults, as if no option were given (handy in tests).
    pub fn default_for(listen: SocketAddr) -> Config {
        let mut config = Config::parse_from(["duet"]);
        config.listen = listen;
        config
    }
}
