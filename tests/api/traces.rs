//! W3C trace context: a request's `traceparent` is continued in its log lines and, with a new
//! span id per call, in the calls the executor makes for the runs it starts.

use std::fs::File;

use serde_json::{json, Value};

use crate::helpers::process::{free_port, http_with, temp_dir, tolstoy, wait_until_up, Server};
use crate::helpers::target::Target;
use crate::on_both_backends;
use crate::runs::{finished, flow_of_calls, tool, workers};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The `(trace id, span id)` of a `traceparent` value, checked to be well-formed.
fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    assert_eq!(fields[1].len(), 32, "{traceparent}");
    assert_eq!(fields[2].len(), 16, "{traceparent}");
    assert_ne!(fields[2], "0000000000000000");
    (fields[1].to_owned(), fields[2].to_owned())
}

on_both_backends! {
    /// A run started with a `traceparent`: both of its calls carry the same trace id, each
    /// under a span of its own (not the caller's); a run started without one starts a trace of
    /// its own, which its calls carry.
    async fn a_runs_calls_continue_the_trace_of_the_request_that_started_it(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let tool_id = tool(&app, &caller, &target.url).await;
        let calls = [("a", "/echo/a"), ("b", "/echo/b")];
        let flow_id = flow_of_calls(&app, &caller, &tool_id, &calls, json!({})).await;
        let path = format!("/flows/{flow_id}/runs");
        let mut headers = caller.headers().to_vec();
        headers.push(("traceparent", TRACEPARENT));
        let started = app.send(poem::http::Method::POST, &path, Some(&json!({"inputs": {}})), &headers).await;
        assert_eq!(started.status, 202, "{}", started.text);
        assert_eq!(finished(&app, &caller, &started.body).await["status"], "completed");

        let mut spans = Vec::new();
        for id in ["a", "b"] {
            let received = target.received_at(&format!("/echo/{id}"));
            assert_eq!(received.len(), 1);
            let header = received[0].headers["traceparent"].as_str().expect("a traceparent").to_owned();
            let (trace_id, span_id) = parts(&header);
            assert_eq!(trace_id, TRACE_ID, "the caller's trace");
            assert_ne!(span_id, "00f067aa0ba902b7", "a span of its own, under the request's");
            spans.push(span_id);
        }
        assert_ne!(spans[0], spans[1], "each call is its own span");

        let untraced = app.post_as(&caller, &path, &json!({"inputs": {}})).await;
        assert_eq!(untraced.status, 202, "{}", untraced.text);
        finished(&app, &caller, &untraced.body).await;
        let calls = target.received_at("/echo/a");
        assert_eq!(calls.len(), 2);
        let (first, _) = parts(calls[1].headers["traceparent"].as_str().expect("a traceparent"));
        let (second, _) = parts(target.received_at("/echo/b")[1].headers["traceparent"].as_str().expect("a traceparent"));
        assert_ne!(first, TRACE_ID, "a new trace");
        assert_eq!(first, second, "one trace for the run");
    }
}

/// The real binary with JSON logs at `debug`: every line of a request that came with a
/// `traceparent` carries its trace id; a request without one gets a trace id of its own.
#[test]
fn every_log_line_of_a_request_carries_its_trace_id() {
    let dir = temp_dir();
    let port = free_port();
    let log = File::create(dir.join("server.log")).expect("log");
    let server = Server(
        tolstoy(&dir)
            .env("PORT", port.to_string())
            .env("WORKERS", "0")
            .env("RUST_LOG", "debug")
            .env("LOG_FORMAT", "json")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("serve"),
    );
    wait_until_up(port);
    let (status, _, _) = http_with(
        port,
        "GET",
        "/organizations",
        None,
        &[
            ("traceparent", TRACEPARENT),
            ("X-Request-Id", "traced-request"),
        ],
    )
    .expect("traced request");
    assert!(status.contains("200"), "{status}");
    let (status, _, _) = http_with(
        port,
        "GET",
        "/organizations",
        None,
        &[("X-Request-Id", "untraced-request")],
    )
    .expect("untraced request");
    assert!(status.contains("200"), "{status}");
    drop(server);

    let text = std::fs::read_to_string(dir.join("server.log")).expect("read log");
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    // A line written while a request is served carries its ids at the top level.
    let of = |request_id: &str| -> Vec<(&Value, &Value)> {
        lines
            .iter()
            .filter(|line| line["request_id"] == request_id)
            .map(|line| (line, line))
            .collect()
    };
    let traced = of("traced-request");
    assert!(!traced.is_empty(), "the request's own lines: {text}");
    for (line, request) in &traced {
        assert_eq!(request["trace_id"], TRACE_ID, "{line}");
    }
    assert!(
        traced
            .iter()
            .any(|(line, _)| line["message"] == "request finished"),
        "{text}"
    );
    let untraced = of("untraced-request");
    assert!(!untraced.is_empty(), "{text}");
    let own = untraced[0].1["trace_id"]
        .as_str()
        .expect("a trace id of its own");
    assert_eq!(own.len(), 32);
    assert_ne!(own, TRACE_ID);
}

/// The spans of every OTLP/JSON export `target` received.
fn exported_spans(target: &Target) -> Vec<Value> {
    target
        .received_at("/v1/traces")
        .iter()
        .flat_map(|export| {
            export.body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|resource| {
            resource["scopeSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

on_both_backends! {
    /// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the real binary exports the request's server span
    /// (a child of the caller's `traceparent`, named by the route template) and the client span
    /// of the step's call, whose id is the very one the called target received in its
    /// `traceparent`, and whose parent is the request's span, which the run stored.
    async fn spans_go_out_over_otlp_with_the_ids_the_calls_carried(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let tool_id = tool(&app, &caller, &target.url).await;
        let flow_id = flow_of_calls(&app, &caller, &tool_id, &[("a", "/echo/a")], json!({})).await;
        let port = free_port();
        let _server = crate::recovery::spawn(&app, "serve", &[
            ("PORT", &port.to_string()),
            ("WORKERS", "1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &target.url),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ], "otlp.log");
        wait_until_up(port);
        let (status, _, body) = http_with(port, "POST", &format!("/flows/{flow_id}/runs"), Some(r#"{"inputs":{}}"#), &[
            ("X-Org-ID", &caller.org_id), ("X-User-ID", &caller.user_id), ("traceparent", TRACEPARENT),
        ]).expect("start a run");
        assert!(status.contains("202"), "{status} {body}");

        crate::helpers::wait_for("the step's call", std::time::Duration::from_secs(20), || {
            !target.received_at("/echo/a").is_empty()
        }).await;
        let sent = target.received_at("/echo/a")[0].headers["traceparent"].as_str().expect("traceparent").to_owned();
        let (trace_id, call_span) = parts(&sent);
        assert_eq!(trace_id, TRACE_ID);
        crate::helpers::wait_for("the exported call span", std::time::Duration::from_secs(20), || {
            exported_spans(&target).iter().any(|span| span["spanId"] == call_span.as_str())
        }).await;

        let spans = exported_spans(&target);
        let request = spans.iter().find(|span| span["name"] == "POST /flows/{id}/runs").expect("the request's span");
        assert_eq!(request["traceId"], TRACE_ID);
        assert_eq!(request["parentSpanId"], "00f067aa0ba902b7", "a child of the caller's span");
        assert_eq!(request["kind"], 2, "a server span");
        let call = spans.iter().find(|span| span["spanId"] == call_span.as_str()).expect("the call's span");
        assert_eq!(call["traceId"], TRACE_ID);
        assert_eq!(call["parentSpanId"], request["spanId"], "a child of the request's span");
        assert_eq!(call["kind"], 3, "a client span");
        assert_eq!(call["name"], "GET step a");
        assert!(spans.iter().all(|span| !span["name"].as_str().unwrap_or_default().contains(&flow_id)),
            "names carry route templates, not the ids of the path");
    }
}
