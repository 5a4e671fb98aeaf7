//! The tracing subscriber (pretty lines for people, JSON lines in production), the metrics
//! registry ([`metrics`]) and W3C trace context ([`trace_context`]).

pub mod metrics;
pub mod otlp;
pub mod trace_context;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, LogFormat};

/// Installs the global subscriber. Fails on a filter that does not parse (naming `RUST_LOG`).
pub fn init(filter: &str, format: LogFormat) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|err| ConfigError::new("RUST_LOG", format!("is not a valid filter: {err}")))?;
    // Colours only for a person at a terminal: escape codes in a file or a log collector are
    // noise, and cost a tenth of the request log's CPU.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests build many apps in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
