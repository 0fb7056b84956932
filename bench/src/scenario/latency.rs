//! `latency`: open-loop relay at a fixed total rate. Messages are scheduled evenly over
//! all 2*P senders (both sides of every pair) and each carries its *scheduled* send time;
//! latency is receive time minus scheduled time, so a stalled server (or a late client)
//! shows up in the figures instead of silently slowing the load (no coordinated omission).
//!
//! The pacer sleeps on a timerfd ([`crate::pacer`]) between sends, because tokio's timer
//! has millisecond granularity, and only yields (spins) when the next send is less than
//! 15 us away. How late the client itself sent is reported as `send_lag_*`: it is part
//! of the measured latency, so it must stay small against the figures.

use super::{ErrorLog, histogram, percentiles};
use crate::cli::LatencyArgs;
use crate::pacer::Timer;
use crate::procstat::Snapshot;
use crate::report::Report;
use crate::target::Ws;
use crate::wire::{Incoming, ProbeTemplate};
use crate::{Ctx, MAX_CONNECTIONS, pairs};
use anyhow::{Result, bail};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Below this gap to the next send the pacer yields instead of arming its timer.
const SPIN_NS: u64 = 15_000;

/// Most messages one run may schedule.
const MAX_MESSAGES: u64 = 200_000_000;

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    not_json: AtomicU64,
}

pub async fn run(ctx: &Ctx, args: &LatencyArgs) -> Result<Report> {
    let p = args.pairs;
    if p == 0 || 2 * p > MAX_CONNECTIONS {
        bail!("--pairs must be 1..={}", MAX_CONNECTIONS / 2);
    }
    let rate = args.rate;
    let (warmup, duration, drain) = (args.warmup()?, args.duration()?, args.drain()?);
    let warm_total = (rate as f64 * warmup.as_secs_f64()) as u64;
    let total = warm_total + (rate as f64 * duration.as_secs_f64()) as u64;
    if rate == 0 || total == 0 || total > MAX_MESSAGES {
        bail!("--rate times --duration must schedule 1..={MAX_MESSAGES} messages");
    }
    let mut report = Report::new("latency", ctx);
    report.case_param("rate", rate);
    report.case_param("pairs", p as u64);
    report.param("duration_s", duration.as_secs_f64());
    report.param("warmup_s", warmup.as_secs_f64());
    report.param("drain_s", drain.as_secs_f64());

    let pairs = pairs::setup(
        &ctx.dialer,
        &ctx.peer_dialer,
        &format!("l{}", ctx.run_id),
        p,
        64,
        Duration::from_secs(60),
    )
    .await?;
    let counters = Arc::new(Counters::default());
    let errors = Arc::new(Mutex::new(ErrorLog::default()));
    let start = Instant::now();
    // Latencies of messages scheduled before this (ns since start) are not recorded.
    let record_from = (warm_total as u128 * 1_000_000_000 / rate as u128) as u64;
    let mut senders = Vec::with_capacity(2 * p);
    let mut readers = Vec::with_capacity(2 * p);
    for pair in pairs {
        for (ws, to) in [(pair.a, pair.b_name), (pair.b, pair.a_name)] {
            let (sink, stream) = ws.split();
            let hist = Arc::new(Mutex::new(histogram()));
            let task = tokio::spawn(read(
                stream,
                start,
                record_from,
                hist.clone(),
                counters.clone(),
                errors.clone(),
            ));
            readers.push((task, hist));
            senders.push((sink, ProbeTemplate::new(&to)));
        }
    }

    // The pacer: message k is due at k/rate seconds, from sender k mod 2P.
    let sched = |k: u64| (k as u128 * 1_000_000_000 / rate as u128) as u64;
    let n_senders = senders.len() as u64;
    let mut lag = histogram();
    let mut send_errors = ErrorLog::default();
    let mut s0 = Snapshot::take(&ctx.server_pids);
    let mut recv0 = 0;
    let mut k = 0u64;
    let timer = Timer::new()?;
    'pace: while k < total {
        let now = start.elapsed().as_nanos() as u64;
        while k < total && sched(k) <= now {
            if k == warm_total {
                s0 = Snapshot::take(&ctx.server_pids);
                recv0 = counters.received.load(Relaxed);
            }
            let (sink, tmpl) = &mut senders[(k % n_senders) as usize];
            let text = tmpl.build(k / n_senders, sched(k));
            if let Err(e) = sink.send(Message::text(text)).await {
                send_errors.push(format!("sending: {e}"));
                break 'pace;
            }
            if k >= warm_total {
                lag.saturating_record((start.elapsed().as_nanos() as u64).saturating_sub(sched(k)));
            }
            k += 1;
        }
        if k >= total {
            break;
        }
        let next = sched(k);
        let now = start.elapsed().as_nanos() as u64;
        if next > now + SPIN_NS {
            timer.sleep(Duration::from_nanos(next - now)).await?;
        } else {
            tokio::task::yield_now().await;
        }
    }
    let s1 = Snapshot::take(&ctx.server_pids);
    let recv1 = counters.received.load(Relaxed);
    let sent = k;
    let sent_window = sent.saturating_sub(warm_total);

    let drain_until = tokio::time::Instant::now() + drain;
    while counters.received.load(Relaxed) < sent && tokio::time::Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = counters.received.load(Relaxed);
    let mut lat = histogram();
    for (task, hist) in readers {
        task.abort();
        if let Ok(h) = hist.lock() {
            let _ = lat.add(&*h);
        }
    }
    drop(senders);

    let usage = s0.until(&s1);
    let wall = usage.wall.as_secs_f64().max(1e-9);
    report.metric("sent", sent as f64, "messages");
    report.metric("received", received as f64, "messages");
    report.metric("lost", sent.saturating_sub(received) as f64, "messages");
    report.metric("achieved_rate", sent_window as f64 / wall, "msg/s");
    report.metric("received_rate", (recv1 - recv0) as f64 / wall, "msg/s");
    percentiles(&mut report, "latency", &lat, 1e3, "us");
    report.metric(
        "send_lag_p99",
        lag.value_at_quantile(0.99) as f64 / 1e3,
        "us",
    );
    report.metric("send_lag_max", lag.max() as f64 / 1e3, "us");
    report.metric(
        "non_json_frames",
        counters.not_json.load(Relaxed) as f64,
        "frames",
    );
    let mut errors = match Arc::try_unwrap(errors) {
        Ok(m) => m.into_inner().unwrap_or_default(),
        Err(shared) => shared
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default(),
    };
    errors.merge(send_errors);
    errors.report(&mut report, "errors");
    report.usage(
        &usage,
        sent_window as f64,
        "server_cpu_us_per_msg",
        1e6,
        "us",
    );
    if lag.value_at_quantile(0.99) > 200_000 {
        report.note("the client sent late (send_lag_p99 > 200us): latencies include the client's own lateness");
    }
    if received == 0 {
        report.fail("no message was relayed");
    }
    if errors.count > 0 {
        report.fail(format!("{} errors (see notes)", errors.count));
    }
    Ok(report)
}

/// Records the latency of every probe received on one connection.
async fn read(
    mut stream: SplitStream<Ws>,
    start: Instant,
    record_from: u64,
    hist: Arc<Mutex<Histogram<u64>>>,
    c: Arc<Counters>,
    errors: Arc<Mutex<ErrorLog>>,
) {
    while let Some(frame) = stream.next().await {
        let Ok(Message::Text(text)) = frame else {
            if frame.is_err() {
                break;
            }
            continue;
        };
        let now = start.elapsed().as_nanos() as u64;
        match Incoming::parse(&text) {
            Some(m) if m.kind == "candidate" => {
                let Some(t) = m.candidate.and_then(|p| p.t) else {
                    continue;
                };
                c.received.fetch_add(1, Relaxed);
                if t >= record_from
                    && let Ok(mut h) = hist.lock()
                {
                    h.saturating_record(now.saturating_sub(t).max(1));
                }
            }
            Some(m) if m.kind == "error" => {
                if let Ok(mut e) = errors.lock() {
                    e.push(m.describe());
                }
            }
            Some(_) => {}
            None => {
                c.not_json.fetch_add(1, Relaxed);
            }
        }
    }
}
