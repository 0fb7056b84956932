//! duet-bench: a load tool for duet and for any server that speaks the seed tutorial's
//! signaling protocol (the seed's Node server is the baseline it is compared against).
//!
//! Module map:
//! - [`cli`]: the command line (`--help` is the manual).
//! - [`target`]: which server to load (loopback only) and how client sockets are opened.
//! - [`wire`]: the JSON messages sent, the little read back, and read/expect helpers.
//! - [`payload`]: realistic SDP and ICE candidate payloads.
//! - [`pacer`]: a microsecond timer (timerfd) for the open-loop pacer.
//! - [`pairs`]: logged-in pairs in a call (offer, answer), the fixture of the relay scenarios.
//! - [`procstat`]: CPU time and RSS of this process and of the server, from `/proc`.
//! - [`report`]: the human table and the one-line `RESULT {json}` every run prints.
//! - [`compare`]: RESULT lines of several servers into one markdown table with ratios.
//! - [`scenario`]: `idle`, `throughput`, `latency`, `calls`, `soak`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod compare;
pub mod pacer;
pub mod pairs;
pub mod payload;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod target;
pub mod wire;

use std::time::Duration;

/// Longest `--duration`, `--warmup`, `--hold` or `--drain` accepted: every run is bounded.
pub const MAX_PHASE: Duration = Duration::from_secs(600);

/// Most connections one run opens at once (the container allows 20,000 descriptors per
/// process; a few are needed for anything else).
pub const MAX_CONNECTIONS: usize = 19_900;

/// Everything a scenario needs besides its own arguments.
#[derive(Clone)]
pub struct Ctx {
    /// Opens client connections to the server under test (the caller of every pair).
    pub dialer: target::Dialer,
    /// Opens the callee's connection of every pair: `--peer-url` with `--placement cross`,
    /// else the same server as `dialer`.
    pub peer_dialer: target::Dialer,
    /// `None` for a plain single-server run; else where pairs were placed.
    pub placement: Option<cli::Placement>,
    /// The server's PIDs, if given (several for a cluster: nodes and Redis): their CPU time
    /// (summed) and RSS are read from `/proc`.
    pub server_pids: Vec<u32>,
    /// Name of the server under test in reports (`duet`, `seed`, ...).
    pub label: String,
    /// Makes login names unique per run, so runs against a long-lived server do not collide.
    pub run_id: String,
}
