use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = duet::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DUET_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    // One thread: tokio's current-thread scheduler, which skips the work-stealing
    // machinery entirely (measured on one core: 167k relayed messages/s against 138k for
    // the multi-thread scheduler with one worker; docs/benchmarks.md).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if config.threads == 0 {
        cores
    } else {
        config.threads
    };
    let mut runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let listener = duet::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        duet::run(config, listener, duet::shutdown_signal()).await
    })
}
