//! `idle`: N connections log in and then sit idle. Measures how long logging everyone in
//! takes and what each idle logged-in connection costs the server in resident memory
//! (VmRSS after minus before, divided by N).

use super::{ErrorLog, histogram, percentiles};
use crate::cli::IdleArgs;
use crate::procstat::{self, Snapshot};
use crate::report::Report;
use crate::target::Ws;
use crate::{Ctx, MAX_CONNECTIONS, wire};
use anyhow::{Result, bail};
use futures_util::{StreamExt as _, stream};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub async fn run(ctx: &Ctx, args: &IdleArgs) -> Result<Report> {
    let n = args.connections;
    if n == 0 || n > MAX_CONNECTIONS {
        bail!("--connections must be 1..={MAX_CONNECTIONS}");
    }
    let limit = procstat::raise_nofile_limit()?;
    if n as u64 + 64 > limit {
        bail!(
            "--connections {n} needs more descriptors than RLIMIT_NOFILE {limit} allows; raise the hard limit (ulimit -Hn)"
        );
    }
    let hold = args.hold()?;
    let timeout = args.timeout()?;
    let mut report = Report::new("idle", ctx);
    report.case_param("connections", n as u64);
    report.param("concurrency", args.concurrency as u64);
    report.param("hold_s", hold.as_secs_f64());

    let rss_before = server_rss(&ctx.server_pids)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let s0 = Snapshot::take(&ctx.server_pids);
    let start = Instant::now();
    let deadline = start + timeout;
    let prefix = format!("i{}n", ctx.run_id);

    let mut logins = stream::iter(0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            // With --placement cross, every second connection goes to --peer-url.
            let dialer = if i % 2 == 0 {
                &ctx.dialer
            } else {
                &ctx.peer_dialer
            };
            async move {
                let t = Instant::now();
                let mut ws = tokio::time::timeout_at(deadline, dialer.connect())
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out connecting"))??;
                let seen = wire::login_as(&mut ws, &name, deadline).await?;
                anyhow::Ok((ws, t.elapsed(), seen.not_json))
            }
        })
        .buffer_unordered(args.concurrency.max(1));

    let mut holders = Vec::with_capacity(n);
    let mut hist = histogram();
    let mut errors = ErrorLog::default();
    let mut not_json = 0;
    while let Some(result) = logins.next().await {
        match result {
            Ok((ws, took, nj)) => {
                hist.saturating_record(took.as_nanos() as u64);
                not_json += nj;
                holders.push(tokio::spawn(hold_idle(ws, stop_rx.clone())));
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    drop(logins);
    let login_time = start.elapsed();
    let s1 = Snapshot::take(&ctx.server_pids);

    tokio::time::sleep(hold).await;
    let rss_after = server_rss(&ctx.server_pids)?;
    let _ = stop_tx.send(true);
    let mut dropped = 0u64;
    for h in holders {
        if let Ok(Ok(false)) = tokio::time::timeout(Duration::from_secs(5), h).await {
            dropped += 1;
        }
    }

    let ok_count = hist.len();
    report.metric("logged_in", ok_count as f64, "connections");
    errors.report(&mut report, "failed");
    report.metric("login_all_s", login_time.as_secs_f64(), "s");
    report.metric(
        "logins_per_s",
        ok_count as f64 / login_time.as_secs_f64().max(1e-9),
        "/s",
    );
    percentiles(&mut report, "connect_login", &hist, 1e6, "ms");
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        report.metric("server_rss_before_mib", before as f64 / 1048576.0, "MiB");
        report.metric("server_rss_after_mib", after as f64 / 1048576.0, "MiB");
        if ok_count > 0 {
            let per = (after as f64 - before as f64) / ok_count as f64;
            report.metric("rss_per_conn_bytes", per, "bytes");
        }
    }
    report.metric("dropped_while_idle", dropped as f64, "connections");
    report.metric("non_json_frames", not_json as f64, "frames");
    report.usage(
        &s0.until(&s1),
        ok_count as f64,
        "server_cpu_us_per_login",
        1e6,
        "us",
    );
    if errors.count > 0 {
        report.fail(format!(
            "{} of {n} connections failed to log in",
            errors.count
        ));
    }
    if dropped > 0 {
        report.fail(format!(
            "the server closed {dropped} idle connections during --hold"
        ));
    }
    Ok(report)
}

/// Keeps a connection open and read (so pings are answered) until told to stop;
/// `false` if the server closed it first.
async fn hold_idle(mut ws: Ws, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            _ = stop.changed() => return true,
            frame = ws.next() => match frame {
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => {
                    // Still wait for the stop, so the count of live sockets stays honest.
                    let _ = stop.changed().await;
                    return false;
                }
            }
        }
    }
}

/// VmRSS of all server processes together; `None` without server PIDs.
fn server_rss(pids: &[u32]) -> Result<Option<u64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let mut sum = 0;
    for &p in pids {
        sum += procstat::process_rss(p)?;
    }
    Ok(Some(sum))
}
