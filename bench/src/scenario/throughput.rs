//! `throughput`: closed-loop relay. P pairs in a call; A starts W candidate messages
//! towards B, and every connection answers each candidate it receives with one to its
//! peer, so W messages stay in flight per pair. Counts relayed messages and bytes
//! received in the measured window.

use super::ErrorLog;
use crate::cli::ThroughputArgs;
use crate::procstat::Snapshot;
use crate::report::Report;
use crate::target::Ws;
use crate::wire::{self, Incoming, ProbeTemplate};
use crate::{Ctx, MAX_CONNECTIONS, pairs};
use anyhow::{Result, bail};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Most frames handled before the replies are flushed.
const BATCH: usize = 64;

#[derive(Default)]
struct Counters {
    msgs: AtomicU64,
    bytes: AtomicU64,
}

pub async fn run(ctx: &Ctx, args: &ThroughputArgs) -> Result<Report> {
    let (p, w) = (args.pairs, args.window);
    if p == 0 || 2 * p > MAX_CONNECTIONS {
        bail!("--pairs must be 1..={}", MAX_CONNECTIONS / 2);
    }
    if w == 0 || w > 10_000 {
        bail!("--window must be 1..=10000");
    }
    let (warmup, duration) = (args.warmup()?, args.duration()?);
    let mut report = Report::new("throughput", ctx);
    report.case_param("pairs", p as u64);
    report.case_param("window", w as u64);
    report.param("duration_s", duration.as_secs_f64());
    report.param("warmup_s", warmup.as_secs_f64());

    let pairs = pairs::setup(
        &ctx.dialer,
        &ctx.peer_dialer,
        &format!("t{}", ctx.run_id),
        p,
        64,
        Duration::from_secs(60),
    )
    .await?;
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut pumps = Vec::with_capacity(2 * p);
    let mut msg_len = 0;
    for pair in pairs {
        let to_b: Utf8Bytes = ProbeTemplate::new(&pair.b_name).fixed().into();
        let to_a: Utf8Bytes = ProbeTemplate::new(&pair.a_name).fixed().into();
        msg_len = to_b.len();
        pumps.push(tokio::spawn(pump(pair.a, to_b, w, end, counters.clone())));
        pumps.push(tokio::spawn(pump(pair.b, to_a, 0, end, counters.clone())));
    }
    report.param("message_bytes", msg_len as u64);

    tokio::time::sleep_until(measure_from).await;
    let (m0, b0) = (counters.msgs.load(Relaxed), counters.bytes.load(Relaxed));
    let s0 = Snapshot::take(&ctx.server_pids);
    tokio::time::sleep_until(end).await;
    let s1 = Snapshot::take(&ctx.server_pids);
    let (m1, b1) = (counters.msgs.load(Relaxed), counters.bytes.load(Relaxed));

    let mut errors = ErrorLog::default();
    for h in pumps {
        match tokio::time::timeout(Duration::from_secs(5), h).await {
            Ok(Ok(Ok(log))) => errors.merge(log),
            Ok(Ok(Err(e))) => errors.push(format!("{e:#}")),
            Ok(Err(e)) => errors.push(format!("task: {e}")),
            Err(_) => errors.push("a connection did not stop in time".into()),
        }
    }

    let usage = s0.until(&s1);
    let wall = usage.wall.as_secs_f64().max(1e-9);
    let msgs = (m1 - m0) as f64;
    report.metric("msgs_per_s", msgs / wall, "msg/s");
    report.metric("bytes_per_s", (b1 - b0) as f64 / wall, "B/s");
    report.metric("msgs", msgs, "messages");
    errors.report(&mut report, "errors");
    report.usage(&usage, msgs, "server_cpu_us_per_msg", 1e6, "us");
    if usage.client_cpu / wall > 0.9 {
        report.note("client-bound: the client used >90% of a core; the server may do more");
    }
    if msgs == 0.0 {
        report.fail("no message was relayed in the measured window");
    }
    if errors.count > 0 {
        report.fail(format!("{} errors (see notes)", errors.count));
    }
    Ok(report)
}

/// Answers every relayed candidate with `reply` (after first sending `initial` of them),
/// batching replies per read burst, until `end`.
async fn pump(
    mut ws: Ws,
    reply: Utf8Bytes,
    initial: usize,
    end: Instant,
    c: Arc<Counters>,
) -> Result<ErrorLog> {
    let mut errors = ErrorLog::default();
    for _ in 0..initial {
        wire::feed(&mut ws, reply.clone()).await?;
    }
    ws.flush().await?;
    let stop = tokio::time::sleep_until(end);
    tokio::pin!(stop);
    'run: loop {
        let mut frame = tokio::select! {
            biased;
            _ = &mut stop => break 'run,
            frame = ws.next() => frame,
        };
        let mut handled = 0;
        loop {
            match frame {
                None => {
                    errors.push("server closed a connection".into());
                    break 'run;
                }
                Some(Err(e)) => {
                    errors.push(format!("reading: {e}"));
                    break 'run;
                }
                Some(Ok(Message::Text(text))) if wire::looks_like_candidate(&text) => {
                    c.msgs.fetch_add(1, Relaxed);
                    c.bytes.fetch_add(text.len() as u64, Relaxed);
                    wire::feed(&mut ws, reply.clone()).await?;
                }
                Some(Ok(Message::Text(text))) => match Incoming::parse(&text) {
                    Some(m) if m.kind == "candidate" => {
                        c.msgs.fetch_add(1, Relaxed);
                        c.bytes.fetch_add(text.len() as u64, Relaxed);
                        wire::feed(&mut ws, reply.clone()).await?;
                    }
                    Some(m) if m.kind == "error" => errors.push(m.describe()),
                    _ => {}
                },
                Some(Ok(_)) => {}
            }
            handled += 1;
            if handled == BATCH {
                break;
            }
            match ws.next().now_or_never() {
                Some(next) => frame = next,
                None => break,
            }
        }
        ws.flush().await?;
    }
    Ok(errors)
}
