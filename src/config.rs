//! Command-line options, each with an environment variable fallback. `duet --help` is the
//! manual: every option states its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::ice::IceConfig;
use crate::logging::LogFormat;
use crate::tls::TlsConfig;
use crate::turn::TurnConfig;

/// The examples at the end of `--help`.
const EXAMPLES: &str = "\
Examples:
  On this machine only (open http://localhost:9090/ in two tabs):
    duet

  On a LAN, for phones on the same Wi-Fi (open the https:// address it logs):
    duet --tls-self-signed

  On a public host, with a certificate from Let's Encrypt and the embedded TURN server:
    duet --listen 0.0.0.0:443 \\
         --acme-domain call.example.org --acme-email me@example.org \\
         --allowed-origin https://call.example.org \\
         --turn-server --turn-external-ip 203.0.113.7

  The same with certificate files (reloaded when they change):
    duet --listen 0.0.0.0:443 \\
         --tls-cert /etc/letsencrypt/live/call.example.org/fullchain.pem \\
         --tls-key /etc/letsencrypt/live/call.example.org/privkey.pem

  With a household password (the page asks for it before the name):
    duet hash-password > /etc/duet/password     # type the password, then Ctrl-D
    duet --password-file /etc/duet/password

Every option can also be set through the environment variable shown with it; options
that repeat take a comma-separated list there (DUET_STUN=stun:a.example,stun:b.example).
The log level is DUET_LOG (default info; e.g. DUET_LOG=debug). More in README.md and docs/.";

/// duet: self-hosted one-to-one video calls. Serves the web client, the signaling
/// WebSocket, health and metrics on one port.
// Fields are in the order their headings appear in `--help`: clap lists headings in the
// order of their first argument.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "duet",
    version,
    about,
    long_about = None,
    after_help = EXAMPLES,
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Config {
    // ---- Basics
    /// Address and port to serve the web client, the WebSocket, /healthz and /metrics on.
    /// The default is plain HTTP to the whole network: add HTTPS (below) or use
    /// 127.0.0.1:9090 to keep it to this machine.
    #[arg(
        long,
        env = "DUET_LISTEN",
        default_value = "0.0.0.0:9090",
        value_name = "ADDR:PORT",
        help_heading = "Basics"
    )]
    pub listen: SocketAddr,

    /// Web origins allowed to open the signaling WebSocket, e.g. https://call.example.org
    /// (repeatable; comma-separated in the environment). Browsers send their page's
    /// origin; other origins get 403. Clients that send no Origin (not browsers) are
    /// always allowed. Default: any origin; set it on a public server so that other
    /// sites' pages cannot use it (and its TURN credentials).
    #[arg(
        long = "allowed-origin",
        env = "DUET_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN",
        help_heading = "Basics"
    )]
    pub allowed_origins: Vec<String>,

    /// Serve the web client from this folder instead of the copy built into the binary
    /// (for developing the client without rebuilding).
    #[arg(
        long,
        env = "DUET_WEB_DIR",
        value_name = "DIR",
        help_heading = "Basics"
    )]
    pub web_dir: Option<PathBuf>,

    /// How log lines are written: `text` for people, `json` (one object per line) for
    /// log shippers. Logs go to stderr, coloured only when it is a terminal and
    /// NO_COLOR is unset.
    #[arg(
        long,
        env = "DUET_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT",
        help_heading = "Basics"
    )]
    pub log_format: LogFormat,

    /// Whether log lines show user names and client addresses; `false` writes
    /// `<hidden>` instead.
    #[arg(
        long,
        env = "DUET_LOG_NAMES",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL",
        help_heading = "Basics"
    )]
    pub log_names: bool,

    /// How long the name of a client that asked to be resumable (`"resume": true` at login)
    /// stays held after its connection drops, with its call and up to 64 messages (256 KiB)
    /// addressed to it, for a login with its resume token to take back (see
    /// docs/protocol.md). 0 turns resume off: every disconnect frees the name at once.
    #[arg(
        long,
        env = "DUET_RESUME_WINDOW",
        default_value = "30s",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help_heading = "Basics"
    )]
    pub resume_window: Duration,

    /// Key that signs resume tokens (any string; long and random). Default: a random key
    /// kept in the data directory (`resume.key`), so tokens outlive a restart. Give every
    /// node of a cluster the same one, or a token is good on its own node only.
    #[arg(
        long,
        env = "DUET_RESUME_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Basics"
    )]
    pub resume_secret: Option<String>,

    /// Who may sign in (`--password-file`; see docs/auth.md).
    #[command(flatten)]
    pub auth: crate::auth::AuthConfig,

    // The three groups below print under their own headings (set in their structs).
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

    // ---- Several nodes
    /// Redis to coordinate several duet nodes through, e.g. redis://127.0.0.1:6379/ (see
    /// docs/cluster.md). Without it this node is on its own and keeps everything in memory.
    #[arg(
        long,
        env = "DUET_REDIS_URL",
        value_name = "URL",
        help_heading = "Several nodes"
    )]
    pub redis_url: Option<String>,

    /// With --redis-url: how long a node's names and liveness outlive its last heartbeat.
    /// A node that dies without warning frees its names, and its users' call peers on
    /// other nodes get `leave`, within this time plus a quarter of it.
    #[arg(
        long,
        env = "DUET_REDIS_LEASE",
        default_value = "10s",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help_heading = "Several nodes"
    )]
    pub redis_lease: Duration,

    /// With --redis-url: prefix of every Redis key and channel, so several duet clusters
    /// can share one Redis.
    #[arg(
        long,
        env = "DUET_REDIS_PREFIX",
        default_value = "duet:",
        value_name = "PREFIX",
        help_heading = "Several nodes"
    )]
    pub redis_prefix: String,

    /// With --redis-url: this node's label in Redis keys (1 to 40 letters, digits, `.`, `_`,
    /// `-`); the host name by default. A random suffix is added on every start, so a
    /// restarted node is never mistaken for its previous life.
    #[arg(
        long,
        env = "DUET_NODE_ID",
        value_name = "NAME",
        help_heading = "Several nodes"
    )]
    pub node_id: Option<String>,

    // ---- Limits
    /// Most WebSocket connections held at once; further upgrades get HTTP 503.
    #[arg(
        long,
        env = "DUET_MAX_CONNECTIONS",
        default_value_t = 50_000,
        value_name = "COUNT",
        help_heading = "Limits"
    )]
    pub max_connections: usize,

    /// Largest accepted WebSocket message, in bytes; larger ones close the connection with
    /// code 1009.
    #[arg(
        long,
        env = "DUET_MAX_MESSAGE_SIZE",
        default_value_t = 64 * 1024,
        value_name = "BYTES",
        help_heading = "Limits"
    )]
    pub max_message_size: usize,

    /// Sustained messages per second allowed per connection (token bucket); 0 turns the
    /// rate limit off, and with it the limits on calls started and rung (docs/protocol.md).
    #[arg(
        long,
        env = "DUET_RATE_LIMIT",
        default_value_t = 50.0,
        value_name = "PER_SECOND",
        help_heading = "Limits"
    )]
    pub rate_limit: f64,

    /// Burst size of the per-connection rate limit. A client that keeps sending after this
    /// many `rate-limited` errors in a row is disconnected (close code 1008).
    #[arg(
        long,
        env = "DUET_RATE_BURST",
        default_value_t = 200,
        value_name = "MESSAGES",
        help_heading = "Limits"
    )]
    pub rate_burst: u32,

    /// Messages queued for one client before it counts as a slow consumer and is
    /// disconnected (close code 1013). Also at most 1 MiB of them per client, and 256 MiB
    /// for all clients together (then the clients with the largest queues go first).
    #[arg(
        long,
        env = "DUET_QUEUE_CAPACITY",
        default_value_t = 1024,
        value_name = "MESSAGES",
        help_heading = "Limits"
    )]
    pub queue_capacity: usize,

    /// Presence (who is online) is sent while at most this many users are online; 0 turns
    /// presence off.
    #[arg(
        long,
        env = "DUET_PRESENCE_LIMIT",
        default_value_t = 1000,
        value_name = "USERS",
        help_heading = "Limits"
    )]
    pub presence_limit: usize,

    // ---- Tuning
    /// How long an unanswered call rings before the server ends it with reason
    /// `no-answer`.
    #[arg(
        long,
        env = "DUET_RING_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help_heading = "Tuning"
    )]
    pub ring_timeout: Duration,

    /// How often the server pings each WebSocket.
    #[arg(
        long,
        env = "DUET_PING_INTERVAL",
        default_value = "20s",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help_heading = "Tuning"
    )]
    pub ping_interval: Duration,

    /// How long after a ping a silent client is considered gone: its name is freed and its
    /// call peer told.
    #[arg(
        long,
        env = "DUET_PONG_TIMEOUT",
        default_value = "20s",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help_heading = "Tuning"
    )]
    pub pong_timeout: Duration,

    /// A write to one client that takes longer than this disconnects it.
    #[arg(
        long,
        env = "DUET_WRITE_TIMEOUT",
        default_value = "10s",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help_heading = "Tuning"
    )]
    pub write_timeout: Duration,

    /// How long to wait for connections to close on shutdown.
    #[arg(
        long,
        env = "DUET_SHUTDOWN_GRACE",
        default_value = "3s",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help_heading = "Tuning"
    )]
    pub shutdown_grace: Duration,

    /// Worker threads; 0 means one per CPU core available to the process. With one
    /// thread (given, or the only core) duet runs tokio's single-threaded scheduler, the
    /// cheapest per message; more threads carry more TLS handshakes and TURN relaying.
    #[arg(
        long,
        env = "DUET_THREADS",
        default_value_t = 0,
        value_name = "COUNT",
        help_heading = "Tuning"
    )]
    pub threads: usize,

    /// Per-connection WebSocket read buffer, in bytes, allocated up front. Small keeps idle
    /// connections cheap; larger reads more pipelined messages per system call.
    #[arg(
        long,
        env = "DUET_WS_READ_BUFFER",
        default_value_t = 512,
        value_name = "BYTES",
        help_heading = "Tuning"
    )]
    pub ws_read_buffer: usize,

    // ---- Help: last, after the options it explains (clap would list them first).
    /// Print a summary of the options.
    #[arg(short = 'h', action = clap::ArgAction::HelpShort, help_heading = "Help")]
    help_short: Option<bool>,

    /// Print this manual.
    #[arg(long = "help", action = clap::ArgAction::HelpLong, help_heading = "Help")]
    help_long: Option<bool>,

    /// Print the version.
    #[arg(short = 'V', long, action = clap::ArgAction::Version, help_heading = "Help")]
    version: Option<bool>,
}

impl Config {
    /// Whether the abuse limits are on: `--rate-limit 0` turns off the message rate limit
    /// and with it the limits on logins per address and on calls started and rung.
    pub fn limits_on(&self) -> bool {
        self.rate_limit > 0.0
    }

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

    /// The documented defaults, as if no option were given and no `DUET_*` variable set,
    /// listening on `listen` (handy in tests: the runner's environment does not leak in).
    pub fn default_for(listen: SocketAddr) -> Config {
        // The same command `parse` builds, with every argument's env fallback removed,
        // so the defaults come from the one place they are written: the attributes above.
        let matches = Config::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(["duet"])
            .and_then(|matches| Config::from_arg_matches(&matches));
        let mut config = matches.expect("no options given: the defaults parse");
        config.listen = listen;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process that [`default_for_ignores_duet_variables`] starts.
    const CHILD: &str = "DUET_CONFIG_TEST_CHILD";

    /// The child's half: `DUET_LISTEN` and friends are in this process's environment, as
    /// they would be in a test runner's.
    fn check_in_child() {
        let listen: SocketAddr = "127.0.0.1:4321".parse().expect("addr");
        // The variables are really there: a normal parse takes them.
        let parsed = Config::try_parse_from(["duet"]).expect("parse");
        assert_eq!(parsed.listen.to_string(), "10.9.8.7:1234");
        assert_eq!(parsed.rate_limit, 7.0);
        let config = Config::default_for(listen);
        assert_eq!(config.listen, listen);
        assert_eq!(config.rate_limit, 50.0);
        assert_eq!(config.max_connections, 50_000);
        assert_eq!(config.ping_interval, Duration::from_secs(20));
        assert_eq!(config.redis_url, None);
        assert_eq!(config.tls.data_dir, None);
    }

    /// `--help` is the manual: grouped, with examples, placeholders that say what they
    /// hold, and the comma rule for list-valued variables.
    #[test]
    fn help_is_grouped_with_examples() {
        let help = Config::command().render_help().to_string();
        let headings = [
            "Basics:",
            "Sign-in:",
            "HTTPS:",
            "ICE and TURN:",
            "Several nodes:",
            "Limits:",
            "Tuning:",
            "Help:",
            "Examples:",
        ];
        let at: Vec<usize> = headings
            .iter()
            .map(|h| help.find(h).unwrap_or_else(|| panic!("no {h} in\n{help}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "order:\n{help}");
        for placeholder in [
            "--listen <ADDR:PORT>",
            "--turn-listen <ADDR:PORT>",
            "--tls-cert <FILE>",
        ] {
            assert!(help.contains(placeholder), "{placeholder} in\n{help}");
        }
        assert!(help.contains("comma-separated"), "{help}");
        assert!(!help.contains("Options:"), "an unnamed heading in\n{help}");
        assert!(!help.contains("seed"), "tutorial jargon in\n{help}");
    }

    #[test]
    fn default_for_ignores_duet_variables() {
        if std::env::var_os(CHILD).is_some() {
            return check_in_child();
        }
        // The variables go into a child process (this test binary, running only this
        // test) rather than into this one with `std::env::set_var`: other tests run in
        // parallel threads here, and setting the environment while another thread reads
        // it is undefined behaviour (hence `unsafe` in edition 2024).
        let exe = std::env::current_exe().expect("test binary");
        let output = std::process::Command::new(exe)
            .args([
                "config::tests::default_for_ignores_duet_variables",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("DUET_LISTEN", "10.9.8.7:1234")
            .env("DUET_RATE_LIMIT", "7")
            .env("DUET_MAX_CONNECTIONS", "3")
            .env("DUET_PING_INTERVAL", "1s")
            .env("DUET_REDIS_URL", "redis://127.0.0.1:1/")
            .env("DUET_DATA_DIR", "/nonexistent")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The child ran the test (a filter that matched nothing would succeed too).
        assert!(stdout.contains("1 passed"), "{stdout}");
    }
}
