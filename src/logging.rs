//! Logs: the subscriber set up once by `main` (text or JSON lines on stderr, colour only
//! for a terminal), and [`shown`], the one switch that keeps user names and client
//! addresses out of the logs (`--log-names false`).

use std::fmt;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    // One human-readable line per event.
    Text,
    // One JSON object per line, for log shippers (journald, Loki, Elasticsearch...).
    Json,
}

/// Whether names and addresses are logged. Process-wide like the subscriber itself, so
/// that a log call site needs no handle to the configuration. On by default: the
/// operator of a small server usually wants to know who called whom.
static LOG_NAMES: AtomicBool = AtomicBool::new(true);

/// Sets what [`shown`] does from now on; `main` calls it once, before serving.
pub fn set_log_names(on: bool) {
    LOG_NAMES.store(on, Relaxed);
}

/// A value that identifies a person (a user name, a client address), to be logged as
/// itself, or as `<hidden>` under `--log-names false`.
pub struct Shown<T>(T);

/// Wraps a user name or client address for a log line: `info!(name = %shown(&name))`.
pub fn shown<T: fmt::Display>(value: T) -> Shown<T> {
    Shown(value)
}

impl<T: fmt::Display> fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if LOG_NAMES.load(Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("<hidden>")
        }
    }
}

/// Whether to colour the log: only when a person reads it on a terminal, and never when
/// `NO_COLOR` is set to anything (https://no-color.org). A file, a pipe or journald gets
/// no escape codes.
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: events at `DUET_LOG` (default `info`) to stderr, so that
/// stdout stays free for output a script may want.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("DUET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .init(),
        // Flattened: `{"timestamp":..,"level":"INFO","message":..,"name":..}` is what log
        // shippers index without a nested `fields` object.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
