//! Request-scoped plumbing: the request id, its tracing span, and panic capture.

use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ApiError;

/// The header that carries the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A caller's request id is kept when it is 1 to 128 visible ASCII characters; anything else
/// could forge or break log lines.
fn is_sane_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Gives every request an id (the caller's sane one, or a new UUID), runs it inside a tracing
/// span that carries the id, logs its outcome, and returns the id as `X-Request-Id`.
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
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            path = %req.uri().path(),
        );
        let started = Instant::now();
        let outcome = REQUEST_ID
            .scope(id.clone(), self.inner.call(req).instrument(span.clone()))
            .await;
        let mut response = match outcome {
            Ok(output) => output.into_response(),
            Err(err) => {
                REQUEST_ID.sync_scope(id.clone(), || ApiError::from_poem(err).into_response())
            }
        };
        span.in_scope(|| {
            tracing::info!(
                status = response.status().as_u16(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request finished"
            );
        });
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        Ok(response)
    }
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

/// The methods each documented path answers, for the `Allow` header of a 405 (RFC 9110 asks
/// for it).
#[derive(Clone, Debug)]
pub struct AllowedMethods {
    /// Path templates split into segments (`None` for a `{parameter}`), with their methods.
    routes: Vec<(Vec<Option<String>>, HeaderValue)>,
}

impl AllowedMethods {
    /// Reads the paths of an OpenAPI document; `extra` adds routes it does not list.
    pub fn from_document(document: &serde_json::Value, extra: &[(&str, &str)]) -> Self {
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
                let template = path
                    .trim_matches('/')
                    .split('/')
                    .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                    .collect();
                Some((template, HeaderValue::from_str(&methods).ok()?))
            })
            .collect();
        Self { routes }
    }

    fn for_path(&self, path: &str) -> Option<&HeaderValue> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        self.routes
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(expected, actual)| expected.as_deref().is_none_or(|e| e == *actual))
            })
            .map(|(_, methods)| methods)
    }
}

impl<E: Endpoint> Middleware<E> for AllowedMethods {
    type Output = AllowOn405<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AllowOn405 {
            inner,
            allowed: self.clone(),
        }
    }
}

/// The endpoint [`AllowedMethods`] wraps.
pub struct AllowOn405<E> {
    inner: E,
    allowed: AllowedMethods,
}

impl<E: Endpoint> Endpoint for AllowOn405<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Response> {
        let path = request.uri().path().to_owned();
        let mut response = self.inner.call(request).await?.into_response();
        if response.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
            if let Some(methods) = self.allowed.for_path(&path) {
                response
                    .headers_mut()
                    .insert(poem::http::header::ALLOW, methods.clone());
            }
        }
        Ok(response)
    }
}
