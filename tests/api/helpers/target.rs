//! A local HTTP server for steps to call: it records every request and answers as its path
//! says.
//!
//! - `/echo/...`: 200 with `{"method", "path", "query", "headers", "body"}` of the request;
//! - `/flaky/{key}?fail=N&status=S&retryAfter=R`: the first N calls for `key` answer S (with
//!   `Retry-After: R` when given), later ones 200 `{"calls": n}`;
//! - `/status/{code}`: that status, with `{"status": code}`;
//! - `/slow/{key}?ms=M&status=S`: S (default 200) after M milliseconds;
//! - `/huge?bytes=B`: 200 with a text body of B bytes;
//! - `/nul`: 200 with JSON holding `\u0000` in a key and in a value;
//! - `/cookie`: 200 with a `set-cookie` header holding a session secret.
//! - `/oauth/token?expiresIn=S`: an OAuth 2 token endpoint for [`OAUTH_CLIENT_ID`] and
//!   [`OAUTH_CLIENT_SECRET`] (client-credentials grant, HTTP Basic); answers after 200 ms with
//!   a new token `tok-N`, valid for `expiresIn` seconds (default 3600) or until
//!   [`Target::revoke_tokens`];
//! - `/oauth/api`: 200 with the bearer token it got when that token is valid, else 401.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Body, Endpoint, Request, Response, Server};
use serde_json::{json, Map, Value};

/// The OAuth 2 client `/oauth/token` knows.
pub const OAUTH_CLIENT_ID: &str = "tolstoy-client";
pub const OAUTH_CLIENT_SECRET: &str = "oauth-client-5ecret-xyz";

/// The session secret `/cookie` sets.
pub const SESSION_SECRET: &str = "sess-5ecret-do-not-log";

/// One request the target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Map<String, Value>,
    pub headers: Map<String, Value>,
    pub body: Value,
}

/// A running target server.
#[derive(Clone)]
pub struct Target {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    tokens: Arc<Mutex<Tokens>>,
}

/// The tokens `/oauth/token` issued: `tok-1` … `tok-{issued}`, the first `revoked` no longer
/// valid.
#[derive(Default)]
struct Tokens {
    issued: u64,
    revoked: u64,
    /// When each token was issued and until when it is valid, by its number - 1.
    lifetimes: Vec<(std::time::Instant, std::time::Instant)>,
}

impl Target {
    /// When the `n`th token (from 1) was issued.
    pub fn token_issued_at(&self, n: u64) -> std::time::Instant {
        self.tokens.lock().expect("tokens").lifetimes[n as usize - 1].0
    }

    /// Makes every token issued so far invalid: `/oauth/api` answers 401 to them.
    pub fn revoke_tokens(&self) {
        let mut tokens = self.tokens.lock().expect("tokens");
        tokens.revoked = tokens.issued;
    }

    /// Starts a target on a free loopback port; it runs until the test ends.
    pub async fn start() -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind the target");
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .expect("target port");
        let received = Arc::new(Mutex::new(Vec::new()));
        let tokens = Arc::new(Mutex::new(Tokens::default()));
        let endpoint = Answer {
            tokens: tokens.clone(),
            received: received.clone(),
            calls: Arc::new(Mutex::new(HashMap::new())),
        };
        tokio::spawn(Server::new_with_acceptor(acceptor).run(endpoint));
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            received,
            tokens,
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("target log").clone()
    }

    /// The requests received whose path starts with `prefix`.
    pub fn received_at(&self, prefix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

struct Answer {
    tokens: Arc<Mutex<Tokens>>,
    received: Arc<Mutex<Vec<Received>>>,
    calls: Arc<Mutex<HashMap<String, u64>>>,
}

impl Endpoint for Answer {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let path = request.uri().path().to_owned();
        let query: Map<String, Value> = request
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let headers: Map<String, Value> = request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    Value::String(v.to_str().unwrap_or_default().to_owned()),
                )
            })
            .collect();
        let bytes = request.take_body().into_vec().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let seen = Received {
            method: request.method().as_str().to_owned(),
            path: path.clone(),
            query: query.clone(),
            headers,
            body,
        };
        self.received.lock().expect("target log").push(seen.clone());
        let number = |key: &str| {
            query
                .get(key)
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<u64>().ok())
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        Ok(match segments.as_slice() {
            ["echo", ..] => json_answer(
                StatusCode::OK,
                json!({
                    "method": seen.method,
                    "path": seen.path,
                    "query": seen.query,
                    "headers": seen.headers,
                    "body": seen.body,
                }),
            ),
            ["flaky", key] => {
                let calls = {
                    let mut calls = self.calls.lock().expect("target calls");
                    let count = calls.entry((*key).to_owned()).or_insert(0);
                    *count += 1;
                    *count
                };
                if calls <= number("fail").unwrap_or(0) {
                    let status = number("status").unwrap_or(503) as u16;
                    let mut answer = json_answer(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                        json!({"calls": calls}),
                    );
                    if let Some(seconds) = number("retryAfter") {
                        answer.headers_mut().insert(
                            "retry-after",
                            seconds.to_string().parse().expect("header value"),
                        );
                    }
                    answer
                } else {
                    json_answer(StatusCode::OK, json!({"calls": calls}))
                }
            }
            ["status", code] => {
                let status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
                let status = status.unwrap_or(StatusCode::BAD_REQUEST);
                json_answer(status, json!({"status": status.as_u16()}))
            }
            ["slow", ..] => {
                tokio::time::sleep(Duration::from_millis(number("ms").unwrap_or(1000))).await;
                let status = number("status").and_then(|s| StatusCode::from_u16(s as u16).ok());
                json_answer(status.unwrap_or(StatusCode::OK), json!({"slept": true}))
            }
            ["oauth", "token"] => {
                use base64::Engine;
                let expected = base64::engine::general_purpose::STANDARD
                    .encode(format!("{OAUTH_CLIENT_ID}:{OAUTH_CLIENT_SECRET}"));
                let authorized = seen.headers.get("authorization").and_then(Value::as_str)
                    == Some(format!("Basic {expected}").as_str());
                let grant = seen
                    .body
                    .as_str()
                    .unwrap_or_default()
                    .contains("grant_type=client_credentials");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if !authorized || !grant {
                    json_answer(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}))
                } else {
                    let issued = {
                        let mut tokens = self.tokens.lock().expect("tokens");
                        tokens.issued += 1;
                        let now = std::time::Instant::now();
                        let lifetime = Duration::from_secs(number("expiresIn").unwrap_or(3600));
                        tokens.lifetimes.push((now, now + lifetime));
                        tokens.issued
                    };
                    json_answer(
                        StatusCode::OK,
                        json!({
                            "access_token": format!("tok-{issued}"),
                            "token_type": "Bearer",
                            "expires_in": number("expiresIn").unwrap_or(3600),
                        }),
                    )
                }
            }
            ["oauth", "api"] => {
                let token = seen
                    .headers
                    .get("authorization")
                    .and_then(Value::as_str)
                    .and_then(|v| v.strip_prefix("Bearer tok-"))
                    .and_then(|n| n.parse::<u64>().ok());
                let valid = {
                    let tokens = self.tokens.lock().expect("tokens");
                    token.is_some_and(|n| {
                        n > tokens.revoked
                            && n <= tokens.issued
                            && std::time::Instant::now() < tokens.lifetimes[n as usize - 1].1
                    })
                };
                match token.filter(|_| valid) {
                    Some(n) => json_answer(StatusCode::OK, json!({"token": format!("tok-{n}")})),
                    None => {
                        json_answer(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}))
                    }
                }
            }
            ["nul"] => json_answer(StatusCode::OK, json!({"text": "a\u{0}b", "k\u{0}": 1})),
            ["cookie"] => {
                let mut answer = json_answer(StatusCode::OK, json!({"signedIn": true}));
                answer.headers_mut().insert(
                    "set-cookie",
                    format!("sid={SESSION_SECRET}; HttpOnly")
                        .parse()
                        .expect("header value"),
                );
                answer
            }
            ["huge"] => {
                let size = number("bytes").unwrap_or(2 << 20) as usize;
                Response::builder()
                    .content_type("text/plain")
                    .body(Body::from(vec![b'x'; size]))
            }
            _ => json_answer(StatusCode::NOT_FOUND, json!({"error": "no such target"})),
        })
    }
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}
