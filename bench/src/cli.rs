//! The command line. `duet-bench --help` and `duet-bench SCENARIO --help` are the manual.

use crate::MAX_PHASE;
use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "duet-bench",
    version,
    about = "Load tool for duet and any seed-compatible WebRTC signaling server (loopback only)",
    long_about = "Load tool for duet and any server speaking the seed tutorial's signaling \
                  protocol. Each scenario prints a human table and one line \
                  `RESULT {json}`. Only loopback targets are accepted; every phase is bounded \
                  in time and count."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// N idle logged-in connections: time to log all in, server RSS per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: IdleArgs,
    },
    /// Closed-loop relay throughput: P pairs, W candidate messages in flight per pair.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ThroughputArgs,
    },
    /// Open-loop relay at a fixed total rate; latency from each message's scheduled send time.
    Latency {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: LatencyArgs,
    },
    /// Full call setups: connect, login, offer, answer, candidates both ways, leave, close.
    Calls {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: CallsArgs,
    },
    /// A long mixed load (relay pairs with every message accounted for, call cycles, login
    /// churn, slow readers): server RSS and descriptors over time.
    Soak {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: SoakArgs,
    },
    /// Wait until the URL's TCP port accepts connections (for scripts starting a server).
    WaitReady(WaitReadyArgs),
    /// Read `RESULT` lines from files and print a markdown table per case with ratios.
    Compare(CompareArgs),
    /// Read `RESULT` lines and print, per scenario, one row per case and label with the
    /// median and the range (min-max) of the key figures over repeated runs.
    Summary(SummaryArgs),
}

/// Options every load scenario shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// WebSocket URL of the server under test. Only loopback is accepted: 127.0.0.0/8,
    /// [::1] or localhost (taken as 127.0.0.1).
    #[arg(long, env = "DUET_BENCH_URL", default_value = "ws://127.0.0.1:9090/")]
    pub url: String,
    /// PID of the server process: its CPU time (utime+stime) and VmRSS are read from /proc.
    /// Without it, server figures are left out. Repeatable (or comma-separated): with several
    /// (cluster nodes, Redis) the server figures are their sum, and each one's share of a
    /// core is reported as `server1_cpu_pct`, `server2_cpu_pct`, ... in the order given.
    #[arg(long, env = "DUET_BENCH_SERVER_PID", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Name of the server under test in the report (e.g. duet, seed).
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Client runtime threads. 1 = tokio's current-thread runtime (the default: leaves the
    /// other core to the server on a 2-core machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Second server for the other member of every pair (`throughput`, `latency`, `calls`),
    /// e.g. another node of a cluster; loopback only. Implies `--placement cross`.
    #[arg(long, env = "DUET_BENCH_PEER_URL")]
    pub peer_url: Option<String>,
    /// Where the two members of every pair connect: `same` = both to `--url`; `cross` =
    /// the caller to `--url`, the callee to `--peer-url`. When given (or with `--peer-url`),
    /// the placement becomes part of the case name (`... placement=cross`); without either
    /// the run and its output are the single-server ones.
    #[arg(long, value_enum)]
    pub placement: Option<Placement>,
    /// Spread client sockets over N source addresses in 127.0.0.0/8 (IPv4 targets), so that
    /// many connections and reconnects never run out of ephemeral ports, and (as many
    /// users would) stay under duet's per-address login limit.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=60000))]
    pub source_addrs: u16,
}

/// Where the members of each pair connect (see `--placement`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Both members on `--url`.
    Same,
    /// Caller on `--url`, callee on `--peer-url`.
    Cross,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Same => "same",
            Placement::Cross => "cross",
        }
    }
}

impl Common {
    /// The placement in effect: `None` for a plain single-server run (nothing in the case
    /// name), else `same` or `cross`. `cross` needs `--peer-url`.
    pub fn placement(&self) -> Result<Option<Placement>> {
        match (self.placement, &self.peer_url) {
            (Some(Placement::Cross), None) => bail!("--placement cross needs --peer-url"),
            (Some(p), _) => Ok(Some(p)),
            (None, Some(_)) => Ok(Some(Placement::Cross)),
            (None, None) => Ok(None),
        }
    }
}

fn secs(s: f64, what: &str) -> Result<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        bail!("{what} must be a non-negative number of seconds");
    }
    let d = Duration::from_secs_f64(s);
    if d > MAX_PHASE {
        bail!(
            "{what} of {s}s is longer than the cap of {}s",
            MAX_PHASE.as_secs()
        );
    }
    Ok(d)
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// Connections to open and log in (at most 19,900: the descriptor limit is 20,000).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,
    /// Connections being opened/logged in at the same time.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Seconds to hold all connections idle before reading the server's RSS.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// Give up if logging everyone in takes longer than this (seconds).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

impl IdleArgs {
    pub fn hold(&self) -> Result<Duration> {
        secs(self.hold, "--hold")
    }
    pub fn timeout(&self) -> Result<Duration> {
        secs(self.timeout, "--timeout")
    }
}

#[derive(Args, Debug, Clone)]
pub struct ThroughputArgs {
    /// Pairs of logged-in connections in a call with each other.
    #[arg(long, short = 'p', default_value_t = 50)]
    pub pairs: usize,
    /// Messages in flight per pair: each received candidate is answered with another.
    #[arg(long, short = 'w', default_value_t = 8)]
    pub window: usize,
    /// Measured seconds (after the warmup).
    #[arg(long, short = 'd', default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

impl ThroughputArgs {
    pub fn duration(&self) -> Result<Duration> {
        secs(self.duration, "--duration")
    }
    pub fn warmup(&self) -> Result<Duration> {
        secs(self.warmup, "--warmup")
    }
}

#[derive(Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Pairs in a call; both sides of every pair send, so 2*P senders share the rate.
    #[arg(long, short = 'p', default_value_t = 50)]
    pub pairs: usize,
    /// Total messages per second over all senders, evenly spaced.
    #[arg(long, short = 'r', default_value_t = 20_000)]
    pub rate: u64,
    /// Measured seconds (after the warmup).
    #[arg(long, short = 'd', default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds at the full rate before latencies are recorded.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds to wait after the last send for messages still on their way; whatever has
    /// not arrived by then counts as lost.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
}

impl LatencyArgs {
    pub fn duration(&self) -> Result<Duration> {
        secs(self.duration, "--duration")
    }
    pub fn warmup(&self) -> Result<Duration> {
        secs(self.warmup, "--warmup")
    }
    pub fn drain(&self) -> Result<Duration> {
        secs(self.drain, "--drain")
    }
}

#[derive(Args, Debug, Clone)]
pub struct CallsArgs {
    /// Call setups in progress at the same time (each uses two connections).
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,
    /// Measured seconds (after the warmup).
    #[arg(long, short = 'd', default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// ICE candidates each side sends.
    #[arg(long, default_value_t = 10)]
    pub candidates: usize,
    /// Approximate size in bytes of the offer's and the answer's SDP.
    #[arg(long, default_value_t = 3000)]
    pub sdp_bytes: usize,
}

impl CallsArgs {
    pub fn duration(&self) -> Result<Duration> {
        secs(self.duration, "--duration")
    }
    pub fn warmup(&self) -> Result<Duration> {
        secs(self.warmup, "--warmup")
    }
}

/// Longest soak accepted (its own cap: longer than the other scenarios' phases).
pub const MAX_SOAK: Duration = Duration::from_secs(4 * 3600);

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Seconds to run (at most 4 hours).
    #[arg(long, short = 'd', default_value_t = 60.0)]
    pub duration: f64,
    /// Seconds between samples of the server's RSS and descriptors.
    #[arg(long, default_value_t = 10.0)]
    pub sample: f64,
    /// Relay pairs in a call, each caller sending numbered candidates.
    #[arg(long, short = 'p', default_value_t = 20)]
    pub pairs: usize,
    /// Messages per second each relay caller sends (duet's default limit is 50).
    #[arg(long, short = 'r', default_value_t = 20)]
    pub rate: u64,
    /// Workers running complete call cycles one after another.
    #[arg(long, default_value_t = 2)]
    pub callers: usize,
    /// Workers logging in and out (one login every 100 ms or so each).
    #[arg(long, default_value_t = 1)]
    pub churn: usize,
    /// Slow readers at a time (a callee that never reads while its caller sends).
    #[arg(long, default_value_t = 1)]
    pub slow: usize,
}

impl SoakArgs {
    pub fn duration(&self) -> Result<Duration> {
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
        let d = Duration::from_secs_f64(self.duration);
        if d > MAX_SOAK {
            bail!("--duration is capped at {}s", MAX_SOAK.as_secs());
        }
        Ok(d)
    }
    pub fn sample(&self) -> Result<Duration> {
        let d = secs(self.sample, "--sample")?;
        if d < Duration::from_millis(100) {
            bail!("--sample must be at least 0.1 s");
        }
        Ok(d)
    }
}

#[derive(Args, Debug, Clone)]
pub struct WaitReadyArgs {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:9090/")]
    pub url: String,
    /// Seconds to keep trying.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

impl WaitReadyArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.clamp(0.0, 120.0))
    }
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Label of the server the others are divided by (ratio = other / baseline).
    #[arg(long, default_value = "seed")]
    pub baseline: String,
    /// Files holding duet-bench output; every line starting with `RESULT ` is read.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct SummaryArgs {
    /// Comma-separated metrics to show instead of each scenario's key figures.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Files holding duet-bench output; every line starting with `RESULT ` is read.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(args: &[&str]) -> Common {
        let mut argv = vec!["duet-bench", "throughput"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Throughput { common, .. } => common,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn placement_defaults_and_checks() {
        assert_eq!(common(&[]).placement().unwrap(), None);
        let peer = ["--peer-url", "ws://127.0.0.1:2/"];
        assert_eq!(common(&peer).placement().unwrap(), Some(Placement::Cross));
        let same = common(&["--peer-url", "ws://127.0.0.1:2/", "--placement", "same"]);
        assert_eq!(same.placement().unwrap(), Some(Placement::Same));
        assert_eq!(
            common(&["--placement", "same"]).placement().unwrap(),
            Some(Placement::Same)
        );
        assert!(common(&["--placement", "cross"]).placement().is_err());
        let pids = common(&["--server-pid", "1,2", "--server-pid", "3"]);
        assert_eq!(pids.server_pid, vec![1, 2, 3]);
    }
}
