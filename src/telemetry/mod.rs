//! The tracing subscriber (pretty lines for people, JSON lines in production), the metrics
//! registry ([`metrics`]) and W3C trace context ([`trace_context`]).

pub mod metrics;
pub mod otlp;
pub mod trace_context;

use std::io::IsTerminal;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
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
        LogFormat::Pretty => builder
            .event_format(RequestIds {
                inner: tracing_subscriber::fmt::format(),
                json: false,
            })
            .try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(RequestIds {
                inner: tracing_subscriber::fmt::format().json().flatten_event(true),
                json: true,
            })
            .try_init(),
    };
    Ok(())
}

/// An event format that adds `request_id` and `trace_id` to every line written while a request
/// is served (read from the request's task-local, [`middleware::current_log_ids`]): at the top
/// level of a JSON line, at the end of a pretty one. Lines outside a request are `inner`'s.
struct RequestIds<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for RequestIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((request_id, trace_id)) = crate::middleware::current_log_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if self.json {
            // The request id is a caller's visible ASCII, which may hold quotes: JSON-escaped.
            let request_id = serde_json::to_string(&request_id).map_err(|_| std::fmt::Error)?;
            let fields = format!("\"request_id\":{request_id},\"trace_id\":\"{trace_id}\",");
            match line.strip_prefix('{') {
                Some(rest) => write!(writer, "{{{fields}{rest}"),
                None => writer.write_str(&line),
            }
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            writeln!(writer, "{body} request_id={request_id} trace_id={trace_id}")
        }
    }
}
