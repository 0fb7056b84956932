use anyhow::Context as _;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("hash-password") {
        return duet::auth::password::hash_password_command();
    }
    let config = duet::Config::parse();
    duet::logging::init(config.log_format);
    duet::logging::set_log_names(config.log_names);
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
            .map_err(|e| duet::startup::cannot_listen(config.listen, "--listen", &e))?;
        duet::run(config, listener, duet::shutdown_signal()).await
    })
}
