//! `calls`: complete call setups as a browser pair does them, C at a time: both connect
//! and log in, A sends an offer with a realistic SDP, B answers, each side trickles its
//! ICE candidates, then A hangs up (`leave`), A closes, B closes.
//!
//! Setup latency runs from A's connect to both sides having all candidates; a setup counts
//! when the whole cycle (through both closes) finished in the measured window.
//!
//! B closes only after A's close handshake finished: the seed's server crashes when a
//! caller's socket closes after its callee's is gone (`users[otherName]` is undefined),
//! and that crash is the seed's bug, not a load to measure.

use super::{ErrorLog, histogram, percentiles};
use crate::cli::CallsArgs;
use crate::procstat::Snapshot;
use crate::report::Report;
use crate::target::{Dialer, Ws};
use crate::wire;
use crate::{Ctx, MAX_CONNECTIONS, payload};
use anyhow::{Context as _, Result, bail};
use futures_util::SinkExt as _;
use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Longest one call cycle may take before it counts as failed.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every cycle sends, built once.
struct Payloads {
    offer_sdp: String,
    answer_sdp: String,
    candidates: Vec<serde_json::Value>,
}

#[derive(Default)]
struct Stats {
    setup: Option<Histogram<u64>>,
    cycle: Option<Histogram<u64>>,
    completed: u64,
    errors: ErrorLog,
}

pub async fn run(ctx: &Ctx, args: &CallsArgs) -> Result<Report> {
    let c = args.concurrency;
    if c == 0 || 2 * c > MAX_CONNECTIONS {
        bail!("--concurrency must be 1..={}", MAX_CONNECTIONS / 2);
    }
    if args.candidates > 1000 {
        bail!("--candidates must be at most 1000");
    }
    if args.sdp_bytes > 60_000 {
        bail!("--sdp-bytes must be at most 60000 (servers limit message size)");
    }
    let (warmup, duration) = (args.warmup()?, args.duration()?);
    let mut report = Report::new("calls", ctx);
    report.case_param("concurrency", c as u64);
    report.case_param("candidates", args.candidates as u64);
    report.case_param("sdp_bytes", args.sdp_bytes as u64);
    report.param("duration_s", duration.as_secs_f64());
    report.param("warmup_s", warmup.as_secs_f64());

    let payloads = Arc::new(Payloads {
        offer_sdp: payload::sdp("offer", args.sdp_bytes),
        answer_sdp: payload::sdp("answer", args.sdp_bytes),
        candidates: (0..args.candidates).map(payload::candidate).collect(),
    });
    let stats = Arc::new(Mutex::new(Stats {
        setup: Some(histogram()),
        cycle: Some(histogram()),
        ..Stats::default()
    }));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let workers: Vec<_> = (0..c)
        .map(|w| {
            let prefix = format!("c{}w{w}n", ctx.run_id);
            tokio::spawn(worker(
                ctx.dialer.clone(),
                ctx.peer_dialer.clone(),
                prefix,
                payloads.clone(),
                measure_from,
                end,
                stats.clone(),
            ))
        })
        .collect();

    tokio::time::sleep_until(measure_from).await;
    let s0 = Snapshot::take(&ctx.server_pids);
    tokio::time::sleep_until(end).await;
    let s1 = Snapshot::take(&ctx.server_pids);
    for w in workers {
        let _ = tokio::time::timeout(CYCLE_TIMEOUT + Duration::from_secs(2), w).await;
    }

    let stats = match stats.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => bail!("a worker panicked"),
    };
    let usage = s0.until(&s1);
    let wall = usage.wall.as_secs_f64().max(1e-9);
    let done = stats.completed as f64;
    report.metric("setups_per_s", done / wall, "/s");
    report.metric("setups", done, "calls");
    stats.errors.report(&mut report, "errors");
    if let Some(h) = &stats.setup {
        percentiles(&mut report, "setup", h, 1e6, "ms");
    }
    if let Some(h) = &stats.cycle {
        percentiles(&mut report, "cycle", h, 1e6, "ms");
    }
    let per_call = 2 * args.candidates + 3;
    report.param("relayed_per_call", per_call as u64);
    report.usage(&usage, done, "server_cpu_ms_per_setup", 1e3, "ms");
    if usage.client_cpu / wall > 0.9 {
        report.note("client-bound: the client used >90% of a core; the server may do more");
    }
    if done == 0.0 {
        report.fail("no call setup completed in the measured window");
    }
    if stats.errors.count > 0 {
        report.fail(format!("{} failed cycles (see notes)", stats.errors.count));
    }
    Ok(report)
}

async fn worker(
    dialer: Dialer,
    peer_dialer: Dialer,
    prefix: String,
    p: Arc<Payloads>,
    measure_from: Instant,
    end: Instant,
    stats: Arc<Mutex<Stats>>,
) {
    let mut i = 0u64;
    while Instant::now() < end {
        let t0 = Instant::now();
        let a = format!("{prefix}{i}a");
        let b = format!("{prefix}{i}b");
        i += 1;
        let result =
            tokio::time::timeout(CYCLE_TIMEOUT, cycle(&dialer, &peer_dialer, &a, &b, &p)).await;
        let done = Instant::now();
        let failed = !matches!(result, Ok(Ok(_)));
        if let Ok(mut s) = stats.lock() {
            match result {
                Ok(Ok(setup)) => {
                    if done >= measure_from && done <= end {
                        s.completed += 1;
                        if let Some(h) = s.setup.as_mut() {
                            h.saturating_record(setup.as_nanos() as u64);
                        }
                        if let Some(h) = s.cycle.as_mut() {
                            h.saturating_record((done - t0).as_nanos() as u64);
                        }
                    }
                }
                Ok(Err(e)) => s.errors.push(format!("{e:#}")),
                Err(_) => s
                    .errors
                    .push(format!("a call cycle took longer than {CYCLE_TIMEOUT:?}")),
            }
        }
        if failed {
            // Do not hammer a failing server.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One call, connect to close; returns the setup time (connect to all candidates in).
/// The caller connects through `dialer`, the callee through `peer_dialer`.
async fn cycle(
    dialer: &Dialer,
    peer_dialer: &Dialer,
    a_name: &str,
    b_name: &str,
    p: &Payloads,
) -> Result<Duration> {
    let t0 = Instant::now();
    let deadline = t0 + CYCLE_TIMEOUT;
    let connect_login = |dialer: &Dialer, name: &str| {
        let (dialer, name) = (dialer.clone(), name.to_owned());
        async move {
            let mut ws = dialer.connect().await?;
            let seen = wire::login_as(&mut ws, &name, deadline).await?;
            anyhow::Ok((ws, seen))
        }
    };
    let ((mut a, mut seen_a), (mut b, mut seen_b)) = tokio::try_join!(
        connect_login(dialer, a_name),
        connect_login(peer_dialer, b_name)
    )?;
    let n = p.candidates.len();
    wire::send(&mut a, wire::offer(b_name, &p.offer_sdp)).await?;
    let callee = async {
        wire::expect(&mut b, "offer", deadline, &mut seen_b).await?;
        wire::send(&mut b, wire::answer(a_name, &p.answer_sdp)).await?;
        send_candidates(&mut b, a_name, &p.candidates).await?;
        wire::expect_candidates(&mut b, n, deadline, &mut seen_b).await
    };
    let caller = async {
        wire::expect(&mut a, "answer", deadline, &mut seen_a).await?;
        send_candidates(&mut a, b_name, &p.candidates).await?;
        wire::expect_candidates(&mut a, n, deadline, &mut seen_a).await
    };
    tokio::try_join!(caller, callee).context("signaling")?;
    let setup = t0.elapsed();

    wire::send(&mut a, wire::leave(b_name)).await?;
    if seen_b.leaves == 0 {
        wire::expect(&mut b, "leave", deadline, &mut seen_b)
            .await
            .context("callee waiting for the hang-up")?;
    }
    wire::close(&mut a, deadline)
        .await
        .context("closing the caller")?;
    drop(a);
    wire::close(&mut b, deadline)
        .await
        .context("closing the callee")?;
    Ok(setup)
}

/// One complete call cycle with the default payloads (10 candidates, 3 KB SDP), within
/// the cycle timeout: what the soak's callers run.
pub(crate) async fn cycle_once(
    dialer: &Dialer,
    peer_dialer: &Dialer,
    a_name: &str,
    b_name: &str,
) -> Result<()> {
    let p = Payloads {
        offer_sdp: payload::sdp("offer", 3000),
        answer_sdp: payload::sdp("answer", 3000),
        candidates: (0..10).map(payload::candidate).collect(),
    };
    match tokio::time::timeout(
        CYCLE_TIMEOUT,
        cycle(dialer, peer_dialer, a_name, b_name, &p),
    )
    .await
    {
        Ok(result) => result.map(|_| ()),
        Err(_) => bail!("a call cycle took longer than {CYCLE_TIMEOUT:?}"),
    }
}

async fn send_candidates(ws: &mut Ws, to: &str, candidates: &[serde_json::Value]) -> Result<()> {
    for c in candidates {
        ws.feed(Message::text(wire::candidate(to, c))).await?;
    }
    ws.flush().await?;
    Ok(())
}
