//! duet-bench entry point: parse the command line, raise the descriptor limit, build the
//! client runtime and run one scenario. Everything else lives in the library.

use anyhow::Context as _;
use clap::Parser;
use duet_bench::cli::{Cli, Command, Common, Placement};
use duet_bench::{Ctx, compare, procstat, scenario, target};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("duet-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Compare(args) => {
            print!("{}", compare::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Summary(args) => {
            print!("{}", compare::summary(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::WaitReady(args) => {
            let target = target::Target::parse(&args.url)?;
            runtime(1)?.block_on(target::wait_ready(&target, args.timeout()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Idle { common, args } => scenario_main(common, |ctx| async move {
            scenario::idle::run(&ctx, &args).await
        }),
        Command::Throughput { common, args } => scenario_main(common, |ctx| async move {
            scenario::throughput::run(&ctx, &args).await
        }),
        Command::Latency { common, args } => scenario_main(common, |ctx| async move {
            scenario::latency::run(&ctx, &args).await
        }),
        Command::Calls { common, args } => scenario_main(common, |ctx| async move {
            scenario::calls::run(&ctx, &args).await
        }),
        Command::Soak { common, args } => scenario_main(common, |ctx| async move {
            scenario::soak::run(&ctx, &args).await
        }),
    }
}

/// Runs one scenario on a fresh runtime and prints its report; a report that says the run
/// failed (errors, nothing measured) makes the exit code non-zero.
fn scenario_main<F, Fut>(common: Common, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = anyhow::Result<duet_bench::report::Report>>,
{
    let target = target::Target::parse(&common.url)?;
    let placement = common.placement()?;
    let dialer = target::Dialer::new(target, common.source_addrs)?;
    let peer_dialer = match (placement, &common.peer_url) {
        (Some(Placement::Cross), Some(url)) => {
            target::Dialer::new(target::Target::parse(url)?, common.source_addrs)?
        }
        _ => dialer.clone(),
    };
    let limit = procstat::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    let ctx = Ctx {
        dialer,
        peer_dialer,
        placement,
        server_pids: common.server_pid.clone(),
        label: common.label.clone(),
        run_id: procstat::run_id(),
    };
    let mut report = runtime(common.threads.into())?.block_on(f(ctx))?;
    if let Some(p) = placement {
        // Last in the case name: `throughput pairs=50 window=8 placement=cross`.
        report.case_param("placement", p.as_str());
        if let Some(url) = &common.peer_url {
            report.param("peer_url", url.as_str());
        }
    }
    if common.server_pid.len() > 1 {
        report.param("server_pids", common.server_pid.clone());
    }
    report.param("client_threads", common.threads);
    report.param("source_addrs", common.source_addrs);
    report.param("nofile_limit", limit);
    report.print();
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("building the tokio runtime")
}
