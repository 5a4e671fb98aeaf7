//! OTLP export of spans, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; nothing is exported, and nothing costs more than
//! one check per span, otherwise.
//!
//! The spans are the server's own, with the ids of [`TraceContext`]: a request's server span
//! (the id its log lines, its runs and its calls carry on), and the client span of each call a
//! run's step makes (the id of the `traceparent` that call sends). They are handed finished to
//! the OpenTelemetry SDK's batch processor, which exports them from a tokio task over OTLP/HTTP
//! (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `http/json`), so a trace in
//! the collector has exactly the ids that the logs, the runs table and the called services saw.
//! The exporter reads the standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`,
//! `…_COMPRESSION`), and the resource `OTEL_SERVICE_NAME` (default `tolstoy`) and
//! `OTEL_RESOURCE_ATTRIBUTES`. A full queue drops spans rather than slowing requests.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithHttpConfig};
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::trace_context::TraceContext;

/// The variables that turn export on; the first set wins, as the OpenTelemetry specification
/// says for the traces signal.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

static PROCESSOR: OnceLock<BatchSpanProcessor<Tokio>> = OnceLock::new();

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct OtlpError {
    pub variable: &'static str,
    pub message: String,
}

/// Starts exporting when an endpoint variable is set (inside the tokio runtime); says which
/// endpoint, or `None` when export is off. Once per process.
pub fn start_from_env(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, OtlpError> {
    let Some((variable, endpoint)) = ENDPOINT_VARIABLES.iter().find_map(|variable| {
        lookup(variable)
            .filter(|value| !value.trim().is_empty())
            .map(|value| (*variable, value))
    }) else {
        return Ok(None);
    };
    // The exporter's errors may quote the URL, which may carry credentials.
    let refused = |message: String| OtlpError {
        variable,
        message: message.replace(endpoint.trim(), "(the endpoint)"),
    };
    let tls = crate::runs::outbound::tls_config().map_err(refused)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|err| refused(err.to_string()))?;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .build()
        .map_err(|err| refused(err.to_string()))?;
    let mut processor = BatchSpanProcessor::builder(exporter, Tokio).build();
    processor.set_resource(
        &Resource::builder()
            .with_service_name(lookup("OTEL_SERVICE_NAME").unwrap_or_else(|| "tolstoy".into()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let _ = PROCESSOR.set(processor);
    Ok(Some(endpoint))
}

/// Whether spans are exported: callers skip building attributes otherwise.
pub fn enabled() -> bool {
    PROCESSOR.get().is_some()
}

/// A finished span of ours.
pub struct Finished {
    /// Its trace and its own span id.
    pub context: TraceContext,
    /// The span it is a child of, and whether that one is another process's.
    pub parent: Option<(u64, bool)>,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Hands `span` to the exporter; nothing when export is off.
pub fn record(span: Finished) {
    let Some(processor) = PROCESSOR.get() else {
        return;
    };
    let flags = if span.context.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let (parent, remote) = span.parent.unwrap_or((0, false));
    processor.on_end(SpanData {
        span_context: SpanContext::new(
            TraceId::from(span.context.trace_id),
            SpanId::from(span.context.span_id),
            flags,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: remote,
        span_kind: span.kind,
        name: span.name,
        start_time: span.start,
        end_time: span.end,
        attributes: span.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: span.error.map_or(Status::Unset, Status::error),
        instrumentation_scope: InstrumentationScope::builder("tolstoy")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    });
}

/// Exports what is queued (at shutdown), waiting up to the exporter's timeout.
pub async fn flush() {
    if PROCESSOR.get().is_none() {
        return;
    }
    // The processor's flush blocks until its task has exported; not on a runtime thread.
    let flushed = tokio::task::spawn_blocking(|| PROCESSOR.get().map(|p| p.force_flush())).await;
    if let Ok(Some(Err(err))) = flushed {
        tracing::warn!(error = %err, "exporting the last spans failed");
    }
}
