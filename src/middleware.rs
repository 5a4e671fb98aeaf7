//! Request-scoped plumbing: the request id and trace context (the ids of its log lines), panic capture,
//! and the route table that labels the request metrics.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use poem::http::{HeaderValue, Method};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use uuid::Uuid;

use crate::error::ApiError;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otlp;
use crate::telemetry::trace_context::{TraceContext, TRACEPARENT};

/// The header that carries the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the task serving a request knows about it.
struct RequestContext {
    id: String,
    /// The request's own span: a child of the caller's `traceparent`, or a new trace.
    trace: TraceContext,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// The id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST.try_with(|request| request.id.clone()).ok()
}

/// The request id and trace id (32 hex digits) of the request being served on this task, if
/// any: what its log lines carry.
pub fn current_log_ids() -> Option<(String, String)> {
    REQUEST
        .try_with(|request| (request.id.clone(), request.trace.trace_id_hex()))
        .ok()
}

/// The trace context of the request being served on this task, if any: what a run it starts
/// carries on.
pub fn current_trace() -> Option<TraceContext> {
    REQUEST.try_with(|request| request.trace).ok()
}

/// A caller's request id is kept when it is 1 to 128 visible ASCII characters; anything else
/// could forge or break log lines.
fn is_sane_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Gives every request an id (the caller's sane one, or a new UUID) and a span of the caller's
/// trace (`traceparent`, or a new trace), serves it with both in a task-local that its log lines
/// read,
/// logs its outcome, and returns the id as `X-Request-Id`.
pub struct RequestId;

impl<E: Endpoint> Middleware<E> for RequestId {
    type Output = RequestIdEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestIdEndpoint { inner }
    }
}

pub struct RequestIdEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for RequestIdEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|value| is_sane_request_id(value))
            .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
        let caller = req
            .headers()
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .and_then(TraceContext::parse);
        let trace = caller.map_or_else(TraceContext::new_root, |caller| caller.child());
        // No tracing span per request: the log formatter (`telemetry`) adds the request's ids to
        // every line written in its task, from the task-local below, for a tenth of the
        // throughput a span and its formatted fields cost.
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let started = Instant::now();
        let context = || RequestContext {
            id: id.clone(),
            trace,
        };
        let outcome = REQUEST.scope(context(), self.inner.call(req)).await;
        let mut response = REQUEST.sync_scope(context(), || {
            let response = match outcome {
                Ok(output) => output.into_response(),
                Err(err) => ApiError::from_poem(err).into_response(),
            };
            tracing::info!(
                %method,
                path,
                status = response.status().as_u16(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request finished"
            );
            response
        });
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        if otlp::enabled() {
            response.extensions_mut().insert(ServedSpan {
                trace,
                caller: caller.map(|caller| caller.span_id),
            });
        }
        Ok(response)
    }
}

/// The span a request was served in, for [`Routes`] to export once it knows the route.
#[derive(Clone, Copy)]
struct ServedSpan {
    trace: TraceContext,
    /// The caller's span (`traceparent`), the parent of ours.
    caller: Option<u64>,
}

/// A panic in a handler becomes a 500 problem, and the cause goes to the log.
pub fn panic_response(panic: Box<dyn std::any::Any + Send>) -> Response {
    let cause = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    ApiError::internal(&format!("handler panicked: {cause}")).into_response()
}

/// The documented routes: for the `Allow` header of a 405 (RFC 9110 asks for it) and for the
/// route label of the request metrics.
#[derive(Clone, Debug)]
pub struct Routes {
    routes: Arc<[Route]>,
    metrics: Metrics,
}

#[derive(Debug)]
struct Route {
    /// The template split into segments (`None` for a `{parameter}`).
    segments: Vec<Option<String>>,
    /// The template as the document writes it (`/tools/{id}`): a metrics label. Made once per
    /// application, so leaked rather than counted.
    template: &'static str,
    /// The methods it answers, for `Allow`.
    methods: HeaderValue,
}

/// The route label of a path no route has.
const UNMATCHED: &str = "unmatched";

impl Routes {
    /// Reads the paths of an OpenAPI document; `extra` adds routes it does not list.
    pub fn from_document(
        document: &serde_json::Value,
        extra: &[(&str, &str)],
        metrics: Metrics,
    ) -> Self {
        let documented =
            document["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(path, operations)| {
                    let methods: Vec<String> = operations
                        .as_object()
                        .into_iter()
                        .flat_map(|operations| operations.keys())
                        .map(|method| method.to_ascii_uppercase())
                        .collect();
                    (path.clone(), methods.join(", "))
                });
        let extra = extra
            .iter()
            .map(|(path, methods)| ((*path).to_owned(), (*methods).to_owned()));
        let routes = documented
            .chain(extra)
            .filter_map(|(path, methods)| {
                let segments = path
                    .trim_matches('/')
                    .split('/')
                    .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                    .collect();
                Some(Route {
                    segments,
                    methods: HeaderValue::from_str(&methods).ok()?,
                    template: Box::leak(path.into_boxed_str()),
                })
            })
            .collect();
        Self { routes, metrics }
    }

    fn find(&self, path: &str) -> Option<&Route> {
        let path = path.trim_matches('/');
        self.routes.iter().find(|route| {
            let mut actual = path.split('/');
            route
                .segments
                .iter()
                .all(|expected| match (expected, actual.next()) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(expected), Some(actual)) => expected == actual,
                })
                && actual.next().is_none()
        })
    }
}

impl<E: Endpoint> Middleware<E> for Routes {
    type Output = RoutesEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RoutesEndpoint {
            inner,
            routes: self.clone(),
        }
    }
}

/// The endpoint [`Routes`] wraps: counts each request under its route template and adds
/// `Allow` to a 405.
pub struct RoutesEndpoint<E> {
    inner: E,
    routes: Routes,
}

impl<E: Endpoint> Endpoint for RoutesEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Response> {
        let started = Instant::now();
        let route = self.routes.find(request.uri().path());
        let method = method_label(request.method());
        let mut response = self.inner.call(request).await?.into_response();
        if response.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
            if let Some(route) = route {
                response
                    .headers_mut()
                    .insert(poem::http::header::ALLOW, route.methods.clone());
            }
        }
        let template = route.map_or(UNMATCHED, |route| route.template);
        let status = response.status().as_u16();
        self.routes
            .metrics
            .request(method, template, status, started.elapsed());
        if let Some(served) = response.extensions().get::<ServedSpan>() {
            export_server_span(
                served,
                method,
                route.map(|route| route.template),
                status,
                started,
            );
        }
        Ok(response)
    }
}

/// The server span of a request: `GET /tools/{id}` (the route template, never the raw path),
/// failed when the answer is a 5xx.
fn export_server_span(
    served: &ServedSpan,
    method: &'static str,
    route: Option<&'static str>,
    status: u16,
    started: Instant,
) {
    let took = started.elapsed();
    let end = SystemTime::now();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.response.status_code", i64::from(status)),
    ];
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", route));
    }
    otlp::record(otlp::Finished {
        context: served.trace,
        parent: served.caller.map(|span| (span, true)),
        name: route.map_or(Cow::Borrowed(method), |route| {
            Cow::Owned(format!("{method} {route}"))
        }),
        kind: SpanKind::Server,
        start: end.checked_sub(took).unwrap_or(end),
        end,
        attributes,
        error: (status >= 500).then(|| format!("answered {status}")),
    });
}

/// A method as a metrics label; methods no route has share one.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
