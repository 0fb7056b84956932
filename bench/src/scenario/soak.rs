//! `soak`: a long mixed load, to see what time does to the server. At once, for the whole
//! duration:
//! - relay pairs in a call, each caller sending numbered candidates at a fixed rate: every
//!   message is accounted for as delivered (in order, once) or refused with an error to its
//!   sender; anything else is `unaccounted`, which fails the run;
//! - call cycles (connect, login, offer, answer, candidates, leave, close), as `calls`;
//! - login churn (connect, login, close);
//! - slow readers: a callee that never reads while its caller sends, until the server
//!   disconnects it; then a new one.
//!
//! Every `--sample` seconds the server's RSS and open descriptors are read from `/proc`;
//! the report gives the first, last and largest values, the RSS slope (least squares,
//! MB per hour) and the series as a note.

use super::{ErrorLog, histogram, percentiles};
use crate::cli::SoakArgs;
use crate::report::Report;
use crate::target::Dialer;
use crate::{Ctx, pairs, payload, procstat, wire};
use anyhow::{Result, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

/// How long the relay pairs may take, after the last send, to account for everything.
const DRAIN: Duration = Duration::from_secs(5);

/// Counters shared by every worker.
#[derive(Default)]
struct Counters {
    relay_sent: AtomicU64,
    relay_delivered: AtomicU64,
    relay_refused: AtomicU64,
    /// Delivered twice, or before a message sent earlier.
    relay_out_of_order: AtomicU64,
    calls: AtomicU64,
    logins: AtomicU64,
    slow_kicked: AtomicU64,
    slow_sent: AtomicU64,
    slow_refused: AtomicU64,
}

pub async fn run(ctx: &Ctx, args: &SoakArgs) -> Result<Report> {
    let duration = args.duration()?;
    let sample = args.sample()?;
    if args.pairs == 0 || args.pairs > 2_000 {
        bail!("--pairs must be 1..=2000");
    }
    if args.rate == 0 || args.rate > 40 {
        bail!("--rate must be 1..=40 messages per second per caller (duet allows 50)");
    }
    let mut report = Report::new("soak", ctx);
    report.case_param("pairs", args.pairs as u64);
    report.case_param("rate", args.rate);
    report.case_param("callers", args.callers as u64);
    report.case_param("churn", args.churn as u64);
    report.case_param("slow", args.slow as u64);
    report.param("duration_s", duration.as_secs_f64());

    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(Mutex::new(ErrorLog::default()));
    let start = Instant::now();
    let end = start + duration;

    let relay = pairs::setup(
        &ctx.dialer,
        &ctx.peer_dialer,
        &format!("s{}r", ctx.run_id),
        args.pairs,
        64,
        Duration::from_secs(60),
    )
    .await?;
    let mut tasks = Vec::new();
    for pair in relay {
        tasks.push(tokio::spawn(relay_pair(
            pair,
            args.rate,
            start,
            end,
            counters.clone(),
            latency.clone(),
            errors.clone(),
        )));
    }
    for w in 0..args.callers {
        let (ctx, counters, errors) = (ctx.clone(), counters.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < end {
                let a = format!("s{}c{w}n{i}a", ctx.run_id);
                let b = format!("s{}c{w}n{i}b", ctx.run_id);
                i += 1;
                match super::calls::cycle_once(&ctx.dialer, &ctx.peer_dialer, &a, &b).await {
                    Ok(()) => counters.calls.fetch_add(1, Relaxed),
                    Err(e) => {
                        push(&errors, format!("call cycle: {e:#}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        0
                    }
                };
            }
        }));
    }
    for w in 0..args.churn {
        let (ctx, counters, errors) = (ctx.clone(), counters.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < end {
                let name = format!("s{}l{w}n{i}", ctx.run_id);
                i += 1;
                match churn_once(&ctx.dialer, &name).await {
                    Ok(()) => counters.logins.fetch_add(1, Relaxed),
                    Err(e) => {
                        push(&errors, format!("login churn: {e:#}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        0
                    }
                };
                // A person signing in now and then, not a flood.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for w in 0..args.slow {
        let (ctx, counters, errors) = (ctx.clone(), counters.clone(), errors.clone());
        let rate = args.rate;
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < end {
                let prefix = format!("s{}w{w}n{i}", ctx.run_id);
                i += 1;
                if let Err(e) = slow_once(&ctx, &prefix, rate, end, &counters).await {
                    push(&errors, format!("slow reader: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }

    // The sampler runs in this task while the workers load the server.
    let mut series = Vec::new();
    let mut tick = tokio::time::interval(sample);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < end {
        tick.tick().await;
        if let Some(s) = server_sample(&ctx.server_pids) {
            series.push((start.elapsed().as_secs_f64(), s.0, s.1));
        }
    }
    for t in tasks {
        let _ = tokio::time::timeout(DRAIN + Duration::from_secs(15), t).await;
    }
    if let Some(s) = server_sample(&ctx.server_pids) {
        series.push((start.elapsed().as_secs_f64(), s.0, s.1));
    }

    let c = &counters;
    let sent = c.relay_sent.load(Relaxed);
    let delivered = c.relay_delivered.load(Relaxed);
    let refused = c.relay_refused.load(Relaxed);
    let unaccounted = sent.saturating_sub(delivered + refused);
    report.metric("relay_sent", sent as f64, "msgs");
    report.metric("relay_delivered", delivered as f64, "msgs");
    report.metric("relay_refused", refused as f64, "msgs");
    report.metric("relay_unaccounted", unaccounted as f64, "msgs");
    let out_of_order = c.relay_out_of_order.load(Relaxed);
    report.metric("relay_out_of_order", out_of_order as f64, "msgs");
    report.metric("call_cycles", c.calls.load(Relaxed) as f64, "calls");
    report.metric("logins", c.logins.load(Relaxed) as f64, "logins");
    report.metric("slow_kicked", c.slow_kicked.load(Relaxed) as f64, "");
    report.metric("slow_sent", c.slow_sent.load(Relaxed) as f64, "msgs");
    report.metric("slow_refused", c.slow_refused.load(Relaxed) as f64, "msgs");
    if let Ok(h) = latency.lock() {
        percentiles(&mut report, "relay_latency", &h, 1e6, "ms");
    }
    rss_report(&mut report, &series);
    if let Ok(e) = errors.lock() {
        e.report(&mut report, "errors");
    }
    if unaccounted > 0 || out_of_order > 0 {
        report.fail(format!(
            "{unaccounted} relayed messages neither delivered nor refused, {out_of_order} out of order"
        ));
    }
    if sent == 0 {
        report.fail("no message was relayed");
    }
    Ok(report)
}

fn push(errors: &Mutex<ErrorLog>, text: String) {
    if let Ok(mut e) = errors.lock() {
        e.push(text);
    }
}

/// One relay pair for the whole run: `a` sends numbered probes to `b` at `rate`; `b`
/// checks they arrive once and in order; `a` counts the errors it gets back.
async fn relay_pair(
    pair: pairs::Pair,
    rate: u64,
    start: Instant,
    end: Instant,
    c: Arc<Counters>,
    latency: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<Mutex<ErrorLog>>,
) {
    let template = wire::ProbeTemplate::new(&pair.b_name);
    let (mut a_tx, mut a_rx) = pair.a.split();
    let mut b = pair.b;
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = {
        let (sent, c, sending) = (sent.clone(), c.clone(), sending.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut seq = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                let t = start.elapsed().as_nanos() as u64;
                if a_tx
                    .send(Message::text(template.build(seq, t)))
                    .await
                    .is_err()
                {
                    break;
                }
                seq += 1;
                sent.store(seq, Relaxed);
                c.relay_sent.fetch_add(1, Relaxed);
            }
            sending.store(false, Relaxed);
        }
    };
    let a_reader = {
        let (refused, c, errors) = (refused.clone(), c.clone(), errors.clone());
        async move {
            let stop = end + DRAIN;
            while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(stop, a_rx.next()).await {
                let Message::Text(text) = frame else { continue };
                if let Some(m) = wire::Incoming::parse(&text)
                    && m.kind == "error"
                {
                    refused.fetch_add(1, Relaxed);
                    c.relay_refused.fetch_add(1, Relaxed);
                    push(&errors, format!("relay refused: {}", m.describe()));
                }
            }
        }
    };
    let b_reader = async {
        let mut next = 0u64;
        let mut delivered = 0u64;
        let stop = end + DRAIN;
        loop {
            // Done once everything sent is accounted for, after the sender stopped.
            if !sending.load(Relaxed) && delivered + refused.load(Relaxed) >= sent.load(Relaxed) {
                break;
            }
            let Ok(Some(text)) = wire::next_text(&mut b, stop).await else {
                break;
            };
            if !wire::looks_like_candidate(&text) {
                continue;
            }
            let Some(probe) = probe_of(&text) else {
                continue;
            };
            let (Some(seq), Some(t)) = (probe.seq, probe.t) else {
                continue;
            };
            delivered += 1;
            c.relay_delivered.fetch_add(1, Relaxed);
            if seq != next {
                c.relay_out_of_order.fetch_add(1, Relaxed);
            }
            next = seq + 1;
            let now = start.elapsed().as_nanos() as u64;
            if let Ok(mut h) = latency.lock() {
                h.saturating_record(now.saturating_sub(t));
            }
        }
    };
    tokio::join!(sender, a_reader, b_reader);
}

fn probe_of(text: &str) -> Option<wire::Probe> {
    #[derive(serde::Deserialize)]
    struct Candidate {
        candidate: wire::Probe,
    }
    serde_json::from_str::<Candidate>(text)
        .ok()
        .map(|c| c.candidate)
}

/// Connect, log in, close.
async fn churn_once(dialer: &Dialer, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = dialer.connect().await?;
    wire::login_as(&mut ws, name, deadline).await?;
    wire::close(&mut ws, deadline).await
}

/// A callee that never reads, called by a caller that keeps sending large candidates at
/// `rate`, until the server disconnects the callee (the caller gets `leave` or an error).
async fn slow_once(ctx: &Ctx, prefix: &str, rate: u64, end: Instant, c: &Counters) -> Result<()> {
    let mut pair = pairs::setup(
        &ctx.dialer,
        &ctx.peer_dialer,
        prefix,
        1,
        1,
        Duration::from_secs(10),
    )
    .await?
    .pop()
    .ok_or_else(|| anyhow::anyhow!("no pair"))?;
    // About 8 KB per candidate: the server's queue for the callee fills in seconds.
    let big = serde_json::json!({
        "candidate": payload::candidate(0)["candidate"].as_str().unwrap_or_default().repeat(80),
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    });
    let text = wire::candidate(&pair.b_name, &big);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let kicked = loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end {
                    break false;
                }
                if pair.a.send(Message::text(text.clone())).await.is_err() {
                    break true;
                }
                c.slow_sent.fetch_add(1, Relaxed);
            }
            frame = pair.a.next() => match frame {
                Some(Ok(Message::Text(t))) => match wire::Incoming::parse(&t) {
                    Some(m) if m.kind == "error" => {
                        c.slow_refused.fetch_add(1, Relaxed);
                    }
                    Some(m) if m.kind == "leave" => break true,
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => break true,
            },
        }
    };
    if kicked {
        c.slow_kicked.fetch_add(1, Relaxed);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let _ = wire::close(&mut pair.a, deadline).await;
    drop(pair.b);
    Ok(())
}

/// Server RSS (bytes, summed over the PIDs) and open descriptors.
fn server_sample(pids: &[u32]) -> Option<(u64, u64)> {
    if pids.is_empty() {
        return None;
    }
    let mut rss = 0;
    let mut fds = 0;
    for &pid in pids {
        rss += procstat::process_rss(pid).ok()?;
        fds += std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    }
    Some((rss, fds))
}

/// First, last and largest RSS and descriptor counts, the RSS slope, and the series.
fn rss_report(report: &mut Report, series: &[(f64, u64, u64)]) {
    let (Some(first), Some(last)) = (series.first(), series.last()) else {
        report.note("no server figures: pass --server-pid");
        return;
    };
    let mb = |b: u64| b as f64 / 1e6;
    report.metric("rss_first", mb(first.1), "MB");
    report.metric("rss_last", mb(last.1), "MB");
    let max_rss = series.iter().map(|s| s.1).max().unwrap_or(0);
    report.metric("rss_max", mb(max_rss), "MB");
    report.metric("rss_slope", slope(series) * 3600.0 / 1e6, "MB/h");
    report.metric("fds_first", first.2 as f64, "");
    report.metric("fds_last", last.2 as f64, "");
    let max_fds = series.iter().map(|s| s.2).max().unwrap_or(0);
    report.metric("fds_max", max_fds as f64, "");
    let points: Vec<String> = series
        .iter()
        .map(|(t, rss, fds)| format!("{t:.0}s:{:.1}MB:{fds}", mb(*rss)))
        .collect();
    report.note(format!("series (time:rss:fds): {}", points.join(" ")));
}

/// Least-squares slope of RSS (bytes) over time (seconds).
fn slope(series: &[(f64, u64, u64)]) -> f64 {
    let n = series.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = series.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_r = series.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, r, _) in series {
        num += (t - mean_t) * (*r as f64 - mean_r);
        den += (t - mean_t) * (t - mean_t);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let series: Vec<_> = (0..10)
            .map(|i| (i as f64, 1000 + 50 * i as u64, 3))
            .collect();
        assert!((slope(&series) - 50.0).abs() < 1e-9);
        assert_eq!(slope(&series[..1]), 0.0);
    }

    #[test]
    fn probes_parse_from_relayed_candidates() {
        let template = wire::ProbeTemplate::new("bob");
        let frame = template.build(7, 99);
        let probe = probe_of(&frame).expect("a probe");
        assert_eq!((probe.seq, probe.t), (Some(7), Some(99)));
    }
}
