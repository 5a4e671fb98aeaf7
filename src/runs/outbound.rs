//! The executor's one outbound HTTP client: the URL of an action call, the address guard, the
//! timeout and the size cap (API.md, Runs: "The call" and "Outbound safety").

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use rustls_platform_verifier::BuilderVerifierExt;
use serde_json::{Map, Value};
use url::{Host, Url};

/// How long establishing a connection (TCP and TLS) may take, within the request's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the outbound client.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Connect to any address, local and private ones included (`OUTBOUND_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// The largest response body accepted, in bytes (`RUN_MAX_RESPONSE_BYTES`).
    pub max_response_bytes: usize,
}

/// The executor's one HTTP client: connection pooling, no redirects followed, no system proxy,
/// address guard.
#[derive(Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    allow_private: bool,
    max_response_bytes: usize,
}

// No Debug: the headers carry the tool's credentials.
/// One HTTP call to make.
#[derive(Clone)]
pub struct OutboundRequest {
    /// Upper case: `GET POST PUT PATCH DELETE HEAD OPTIONS`.
    pub method: String,
    /// An absolute `http` or `https` URL, as [`action_url`] builds it.
    pub url: Url,
    /// Header names and values, sent in this order; a name may repeat. `host`, `content-length`,
    /// `transfer-encoding` and `connection` are the client's to set and refused.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<RequestBody>,
    /// The whole attempt: connect, answer and body.
    pub timeout: Duration,
}

/// What a call sends as its body.
#[derive(Clone)]
pub enum RequestBody {
    /// JSON, with `content-type: application/json` unless the headers name a content type.
    Json(Value),
    /// `application/x-www-form-urlencoded` pairs (an OAuth 2 token request).
    Form(Vec<(String, String)>),
}

/// The answer to a call, whatever its status.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Header names in lower case; the values of a repeated header joined with `", "`.
    pub headers: Map<String, Value>,
    /// The body parsed as JSON when the content type is JSON (`application/json`, `…/…+json`)
    /// and it parses, else its text (invalid UTF-8 replaced); `null` when empty.
    pub body: Value,
    /// The delay the server asked for in `Retry-After` (delta-seconds or an HTTP-date).
    pub retry_after: Option<Duration>,
}

/// Why a call brought no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No complete answer within the request's timeout.
    Timeout,
    /// The connection could not be made or broke (refused, reset, DNS, TLS, protocol).
    Connection(String),
    /// The target address is not globally routable and private addresses are not allowed.
    BlockedAddress(String),
    /// The body exceeded the configured maximum.
    ResponseTooLarge {
        /// The maximum, in bytes.
        limit: usize,
    },
    /// The request cannot be sent as given (method, scheme, header).
    InvalidRequest(String),
}

impl CallError {
    /// The error kind recorded in a step's error.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout => "timeout",
            CallError::Connection(_) => "connection",
            CallError::BlockedAddress(_) => "blocked_address",
            CallError::ResponseTooLarge { .. } => "response_too_large",
            CallError::InvalidRequest(_) => "invalid_input",
        }
    }

    /// A short description for the step's error; never contains header values or the query.
    pub fn message(&self) -> String {
        match self {
            CallError::Timeout => "no complete answer within the timeout".to_owned(),
            CallError::Connection(message)
            | CallError::BlockedAddress(message)
            | CallError::InvalidRequest(message) => message.clone(),
            CallError::ResponseTooLarge { limit } => {
                format!("the answer is larger than {limit} bytes")
            }
        }
    }

    /// Whether another attempt may succeed: timeouts and connection errors.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Timeout | CallError::Connection(_))
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl StdError for CallError {}

/// rustls with ring and the platform's root certificates, offering HTTP/2 and HTTP/1.1: the TLS
/// of every client the server makes. Fails when no root certificate can be loaded.
pub fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| builder.with_platform_verifier())
    .map_err(|err| format!("TLS: {err}"))?
    .with_no_client_auth();
    // A preconfigured rustls config is used as is, so the protocols must be offered here.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

impl OutboundClient {
    /// Builds the client: rustls with ring and the platform's root certificates. Fails when no
    /// root certificate can be loaded.
    pub fn new(config: OutboundConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config()?)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tolstoy/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private {
            builder = builder.dns_resolver(Arc::new(GlobalOnlyResolver));
        }
        let client = builder
            .build()
            .map_err(|err| format!("outbound client: {}", error_chain(&err)))?;
        Ok(Self {
            client,
            allow_private: config.allow_private,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Makes one attempt of a call. Any status is an answer; redirects are returned, not followed.
    pub async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, CallError> {
        let timeout = request.timeout;
        let prepared = self.prepare(request)?;
        tokio::time::timeout(timeout, self.exchange(prepared))
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    fn prepare(&self, request: OutboundRequest) -> Result<reqwest::RequestBuilder, CallError> {
        let method = match request.method.as_str() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            "HEAD" => Method::HEAD,
            "OPTIONS" => Method::OPTIONS,
            other => {
                return Err(CallError::InvalidRequest(format!(
                    "method {other:?} is not one of GET POST PUT PATCH DELETE HEAD OPTIONS"
                )))
            }
        };
        let url = request.url;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CallError::InvalidRequest(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        // reqwest connects to an IP literal without asking the resolver, so literals are checked here.
        if !self.allow_private {
            let literal = match url.host() {
                Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                Some(Host::Domain(_)) | None => None,
            };
            if let Some(ip) = literal.filter(|ip| !is_global(*ip)) {
                return Err(CallError::BlockedAddress(format!(
                    "{ip} is not a globally routable address"
                )));
            }
        }

        let mut headers = HeaderMap::with_capacity(request.headers.len() + 1);
        for (name, value) in &request.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                CallError::InvalidRequest(format!("header name {name:?} is not valid"))
            })?;
            if ["host", "content-length", "transfer-encoding", "connection"]
                .contains(&header.as_str())
            {
                return Err(CallError::InvalidRequest(format!(
                    "header {header} is set by the client, not by the step"
                )));
            }
            // The value may be a credential: the message names the header only.
            let value = HeaderValue::from_str(value).map_err(|_| {
                CallError::InvalidRequest(format!("the value of header {header} is not valid"))
            })?;
            headers.append(header, value);
        }

        let mut builder = self.client.request(method, url);
        let body = match request.body {
            None => None,
            Some(RequestBody::Json(body)) => Some((
                "application/json",
                serde_json::to_vec(&body)
                    .map_err(|err| CallError::InvalidRequest(format!("body: {err}")))?,
            )),
            Some(RequestBody::Form(pairs)) => Some((
                "application/x-www-form-urlencoded",
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish()
                    .into_bytes(),
            )),
        };
        if let Some((content_type, bytes)) = body {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            }
            builder = builder.body(bytes);
        }
        Ok(builder.headers(headers))
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<OutboundResponse, CallError> {
        let mut response = request.send().await.map_err(call_error)?;
        let limit = self.max_response_bytes;
        // The body's announced length (0 for an answer to HEAD), before anything is read.
        let announced = response.content_length().unwrap_or(0);
        if announced > limit as u64 {
            return Err(CallError::ResponseTooLarge { limit });
        }
        let mut body = Vec::with_capacity(announced as usize);
        while let Some(chunk) = response.chunk().await.map_err(call_error)? {
            if body.len() + chunk.len() > limit {
                return Err(CallError::ResponseTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }

        let headers = response.headers();
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let body = if body.is_empty() {
            Value::Null
        } else if is_json(content_type) {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        } else {
            Value::String(String::from_utf8_lossy(&body).into_owned())
        };
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let mut header_map = Map::new();
        for name in headers.keys() {
            let values: Vec<_> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect();
            header_map.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
        }
        Ok(OutboundResponse {
            status: response.status().as_u16(),
            headers: header_map,
            body,
            retry_after,
        })
    }
}

/// Resolves host names and keeps only globally routable addresses, so that the guard applies to
/// the addresses actually connected to (a rebinding DNS answer cannot slip past it).
struct GlobalOnlyResolver;

impl Resolve for GlobalOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let global: Vec<SocketAddr> = all.filter(|addr| is_global(addr.ip())).collect();
            if global.is_empty() {
                return Err(Box::new(Blocked(host)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(global.into_iter()) as Addrs)
        })
    }
}

/// The resolver's refusal, found again in reqwest's error chain by its type.
#[derive(Debug)]
struct Blocked(String);

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves to no globally routable address", self.0)
    }
}

impl StdError for Blocked {}

fn call_error(err: reqwest::Error) -> CallError {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<Blocked>() {
            return CallError::BlockedAddress(blocked.to_string());
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return CallError::Timeout;
    }
    // Without the URL: its query may carry an API key.
    CallError::Connection(error_chain(&err.without_url()))
}

/// An error and its causes, each once, joined with ": ".
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence
        .split_once('/')
        .is_some_and(|(_, subtype)| subtype == "json" || subtype.ends_with("+json"))
}

/// `Retry-After` as delta-seconds or as an HTTP-date (IMF-fixdate, RFC 850 or asctime); a date in
/// the past is no delay.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let date = DateTime::parse_from_rfc2822(value)
        .map(|date| date.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT").map(|d| d.and_utc())
        })
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y").map(|d| d.and_utc())
        })
        .ok()?;
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(first: u16, second: u16, prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(first, second, 0, 0, 0, 0, 0, 0), prefix)
}

/// IPv4 networks that are not globally routable (IANA special-purpose registry).
const NON_GLOBAL_V4: [Ipv4Net; 15] = [
    v4(0, 0, 0, 0, 8),       // "this network", 0.0.0.0 included
    v4(10, 0, 0, 0, 8),      // private
    v4(100, 64, 0, 0, 10),   // shared address space (CGNAT)
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local, cloud metadata 169.254.169.254 included
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // documentation (TEST-NET-1)
    v4(192, 88, 99, 0, 24),  // deprecated 6to4 relay anycast
    v4(192, 168, 0, 0, 16),  // private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    v4(203, 0, 113, 0, 24),  // documentation (TEST-NET-3)
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, broadcast 255.255.255.255 included
];

/// Global unicast IPv6. Everything outside is refused by this rule alone: loopback `::1`,
/// unspecified `::`, unique-local `fc00::/7`, link-local `fe80::/10`, multicast `ff00::/8`, …
const GLOBAL_UNICAST_V6: Ipv6Net = v6(0x2000, 0, 3);

/// IPv6 networks inside global unicast that are not globally routable.
const NON_GLOBAL_V6: [Ipv6Net; 3] = [
    v6(0x2001, 0, 23),      // IETF protocol assignments: Teredo, benchmarking, ORCHID
    v6(0x2001, 0x0db8, 32), // documentation
    v6(0x3fff, 0, 20),      // documentation
];

/// Whether an address is globally routable (the guard's rule). IPv6 forms that embed an IPv4
/// address (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by
/// that IPv4 address.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => !NON_GLOBAL_V4.iter().any(|net| net.contains(&ip)),
        IpAddr::V6(ip) => match embedded_ipv4(ip) {
            Some(ip) => is_global(IpAddr::V4(ip)),
            None => {
                GLOBAL_UNICAST_V6.contains(&ip)
                    && !NON_GLOBAL_V6.iter().any(|net| net.contains(&ip))
            }
        },
    }
}

fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [.., a, b, c, d] = ip.octets();
    match ip.segments() {
        // IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96 (:: and ::1 fall in 0.0.0.0/8), NAT64.
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(Ipv4Addr::new(a, b, c, d)),
        [0x2002, high, low, ..] => Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))),
        _ => None,
    }
}

/// A piece of an endpoint template.
enum Part<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits an endpoint at its `{name}` placeholders; a brace that opens no placeholder is text.
fn parts(endpoint: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    let mut rest = endpoint;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find(['{', '}']) {
            Some(close) if close > 0 && after.as_bytes()[close] == b'}' => {
                parts.push(Part::Text(&rest[..open]));
                parts.push(Part::Placeholder(&after[..close]));
                rest = &after[close + 1..];
            }
            _ => {
                parts.push(Part::Text(&rest[..=open]));
                rest = after;
            }
        }
    }
    parts.push(Part::Text(rest));
    parts
}

/// Placeholder names in an endpoint (`/users/{id}/x` -> `["id"]`), each once, in order of first
/// appearance; for validating steps before queueing.
pub fn placeholders(endpoint: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for part in parts(endpoint) {
        if let Part::Placeholder(name) = part {
            if !names.iter().any(|known| known == name) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The URL of an action call: the tool's `base_url` and the action's `endpoint` joined as text
/// with exactly one `/` (never resolved as a reference, so `//evil.example/x` stays a path on the
/// tool's host), `{name}` placeholders filled from `path` (strings, numbers, booleans;
/// percent-encoded as a path segment; `.` and `..` refused), then the query: the base URL's,
/// the endpoint's, and the pairs from `query` (scalars as text, arrays as repeated keys). Fails,
/// with a message naming the culprit, on a missing or unusable value or when the result's scheme,
/// host or port differs from the base URL's.
pub fn action_url(
    base_url: &str,
    endpoint: &str,
    path: &Map<String, Value>,
    query: &Map<String, Value>,
) -> Result<Url, String> {
    let base = Url::parse(base_url).map_err(|err| format!("baseUrl {base_url:?}: {err}"))?;
    if base.host().is_none() {
        return Err(format!("baseUrl {base_url:?} has no host"));
    }

    let mut filled = String::with_capacity(endpoint.len());
    for part in parts(endpoint) {
        match part {
            Part::Text(text) => filled.push_str(text),
            Part::Placeholder(name) => {
                let value = match path.get(name) {
                    None | Some(Value::Null) => {
                        return Err(format!("no value for path placeholder {{{name}}}"))
                    }
                    Some(value) => scalar_text(value).ok_or_else(|| {
                        format!("path value {name} must be a string, number or boolean")
                    })?,
                };
                // The URL parser would resolve these as dot segments, even percent-encoded.
                if value == "." || value == ".." {
                    return Err(format!("path value {name} must not be {value:?}"));
                }
                encode_segment(&value, &mut filled);
            }
        }
    }
    // A fragment is never sent; placeholder values cannot add one, they are encoded.
    let filled = filled.split('#').next().unwrap_or("");
    let (endpoint_path, endpoint_query) = filled.split_once('?').unwrap_or((filled, ""));

    let mut text = format!(
        "{}/{}",
        base[..url::Position::AfterPath].trim_end_matches('/'),
        endpoint_path.trim_start_matches('/')
    );
    let queries: Vec<&str> = [base.query().unwrap_or(""), endpoint_query]
        .into_iter()
        .filter(|q| !q.is_empty())
        .collect();
    if !queries.is_empty() {
        text.push('?');
        text.push_str(&queries.join("&"));
    }
    let mut url = Url::parse(&text).map_err(|err| format!("the action's URL: {err}"))?;

    let mut pairs = Vec::new();
    for (key, value) in query {
        let invalid =
            || format!("query value {key} must be a string, number, boolean or an array of them");
        match value {
            Value::Array(items) => {
                for item in items {
                    pairs.push((key, scalar_text(item).ok_or_else(invalid)?));
                }
            }
            value => pairs.push((key, scalar_text(value).ok_or_else(invalid)?)),
        }
    }
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }

    if url.scheme() != base.scheme()
        || url.host() != base.host()
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return Err(format!("the action's URL {url} leaves the tool's origin"));
    }
    Ok(url)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Percent-encodes every byte but the unreserved characters (RFC 3986), so a value stays one
/// path segment.
fn encode_segment(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test server writes: the parts in order, with a pause before each but the first.
    struct Reply {
        parts: Vec<Vec<u8>>,
        pause: Duration,
    }

    fn answer(status: &str, headers: &str, body: &[u8]) -> Reply {
        let mut bytes = format!(
            "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Reply {
            parts: vec![bytes],
            pause: Duration::ZERO,
        }
    }

    struct Server {
        port: u16,
        accepted: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    async fn serve(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let port = listener.local_addr().expect("a bound address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, log, reply) = (accepted.clone(), requests.clone(), Arc::new(reply));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (log, reply) = (log.clone(), reply.clone());
                tokio::spawn(async move {
                    let request = read_request(&mut socket).await;
                    let Reply { parts, pause } = reply(&request);
                    log.lock().expect("the request log").push(request);
                    for (index, part) in parts.iter().enumerate() {
                        if index > 0 {
                            tokio::time::sleep(pause).await;
                        }
                        if socket.write_all(part).await.is_err() {
                            return;
                        }
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        Server {
            port,
            accepted,
            requests,
        }
    }

    async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
        let mut data = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    break;
                }
            }
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => data.extend_from_slice(&buffer[..read]),
            }
        }
        String::from_utf8_lossy(&data).into_owned()
    }

    fn client(allow_private: bool) -> OutboundClient {
        OutboundClient::new(OutboundConfig {
            allow_private,
            max_response_bytes: 1024,
        })
        .expect("a client")
    }

    fn get(url: &str) -> OutboundRequest {
        OutboundRequest {
            method: "GET".to_owned(),
            url: Url::parse(url).expect("a test URL"),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn call_sends_json_and_parses_a_json_answer_exactly() {
        let server = serve(|_| {
            answer(
                "200 OK",
                "content-type: application/json; charset=utf-8\r\nX-Mixed-Case: a\r\nx-twice: 1\r\nx-twice: 2\r\n",
                br#"{"n": 12345678901234567890.5, "ok": true}"#,
            )
        })
        .await;
        let request = OutboundRequest {
            method: "POST".to_owned(),
            url: Url::parse(&format!("http://127.0.0.1:{}/x?q=1", server.port))
                .expect("a test URL"),
            headers: vec![("X-Token".to_owned(), "secret".to_owned())],
            body: Some(RequestBody::Json(json!({"a": 1}))),
            timeout: Duration::from_secs(5),
        };
        let response = client(true).send(request).await.expect("an answer");

        assert_eq!(response.status, 200);
        assert_eq!(response.body["n"].to_string(), "12345678901234567890.5");
        assert_eq!(response.body["ok"], json!(true));
        assert_eq!(response.headers["x-mixed-case"], json!("a"));
        assert_eq!(response.headers["x-twice"], json!("1, 2"));
        assert_eq!(response.retry_after, None);
        let sent = server.requests.lock().expect("the request log")[0].to_ascii_lowercase();
        assert!(sent.starts_with("post /x?q=1 http/1.1\r\n"), "{sent}");
        assert!(
            sent.contains(&format!(
                "user-agent: tolstoy/{}\r\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{sent}"
        );
        assert!(
            sent.contains("content-type: application/json\r\n"),
            "{sent}"
        );
        assert!(sent.contains("x-token: secret\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\n{\"a\":1}"), "{sent}");
    }

    #[tokio::test]
    async fn answer_bodies_are_json_only_when_typed_json_and_valid() {
        let cases: [(&str, &[u8], Value); 6] = [
            (
                "content-type: text/plain\r\n",
                b"{\"a\":1}",
                json!("{\"a\":1}"),
            ),
            ("", b"hello", json!("hello")),
            (
                "content-type: application/problem+json\r\n",
                b"{\"title\":\"x\"}",
                json!({"title": "x"}),
            ),
            (
                "content-type: application/json\r\n",
                b"{not json",
                json!("{not json"),
            ),
            ("content-type: application/json\r\n", b"", Value::Null),
            (
                "content-type: text/plain\r\n",
                b"caf\xc3\xa9 \xff",
                json!("caf\u{e9} \u{fffd}"),
            ),
        ];
        for (headers, body, expected) in cases {
            let (headers, body) = (headers.to_owned(), body.to_vec());
            let server = serve(move |_| answer("200 OK", &headers, &body)).await;
            let response = client(true)
                .send(get(&format!("http://127.0.0.1:{}/", server.port)))
                .await
                .expect("an answer");
            assert_eq!(response.body, expected);
        }
    }

    #[tokio::test]
    async fn local_addresses_are_refused_without_connecting() {
        let server = serve(|_| answer("200 OK", "", b"reached")).await;
        let port = server.port;
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://[::1]:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://2130706433:{port}/"),
            format!("http://0x7f.1:{port}/"),
            format!("http://0177.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            let err = client(false)
                .send(get(&url))
                .await
                .expect_err("the call fails");
            assert!(
                matches!(err, CallError::BlockedAddress(_)),
                "{url}: {err:?}"
            );
            assert_eq!(err.kind(), "blocked_address");
            assert!(!err.is_retryable());
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
        let allowed = client(true)
            .send(get(&format!("http://localhost:{port}/")))
            .await
            .expect("an answer");
        assert_eq!(allowed.body, json!("reached"));
    }

    #[tokio::test]
    async fn the_metadata_address_is_refused_before_any_connect() {
        let started = Instant::now();
        let mut request = get("http://169.254.169.254/latest/meta-data/");
        request.timeout = Duration::from_secs(30);
        let err = client(false)
            .send(request)
            .await
            .expect_err("the call fails");
        assert_eq!(
            err,
            CallError::BlockedAddress(
                "169.254.169.254 is not a globally routable address".to_owned()
            )
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_redirect_is_returned_not_followed() {
        let server = serve(|_| answer("302 Found", "location: /elsewhere\r\n", b"")).await;
        let response = client(true)
            .send(get(&format!("http://127.0.0.1:{}/start", server.port)))
            .await
            .expect("an answer");
        assert_eq!(response.status, 302);
        assert_eq!(response.headers["location"], json!("/elsewhere"));
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_with_or_without_length() {
        let exact = serve(|_| answer("200 OK", "", &[b'a'; 1024])).await;
        let announced = serve(|_| answer("200 OK", "", &[b'a'; 1025])).await;
        let chunked = serve(|_| {
            let chunk = format!("258\r\n{}\r\n", "a".repeat(600)).into_bytes();
            Reply {
                parts: vec![
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                        .to_vec(),
                    chunk.clone(),
                    chunk,
                    b"0\r\n\r\n".to_vec(),
                ],
                pause: Duration::from_millis(20),
            }
        })
        .await;
        let url = |server: &Server| format!("http://127.0.0.1:{}/", server.port);

        let response = client(true)
            .send(get(&url(&exact)))
            .await
            .expect("an answer");
        assert_eq!(response.body.as_str().map(str::len), Some(1024));
        for server in [&announced, &chunked] {
            let err = client(true)
                .send(get(&url(server)))
                .await
                .expect_err("the call fails");
            assert_eq!(err, CallError::ResponseTooLarge { limit: 1024 });
            assert_eq!(err.message(), "the answer is larger than 1024 bytes");
        }
    }

    #[tokio::test]
    async fn the_length_of_an_answer_to_head_is_not_a_body() {
        let server = serve(|_| Reply {
            parts: vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\nconnection: close\r\n\r\n".to_vec(),
            ],
            pause: Duration::ZERO,
        })
        .await;
        let mut request = get(&format!("http://127.0.0.1:{}/", server.port));
        request.method = "HEAD".to_owned();
        let response = client(true).send(request).await.expect("an answer");
        assert_eq!((response.status, response.body), (200, Value::Null));
        assert_eq!(response.headers["content-length"], json!("1000000"));
    }

    #[tokio::test]
    async fn a_slow_body_times_out_the_whole_attempt() {
        let server = serve(|_| Reply {
            parts: vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nab".to_vec(),
                b"cd".to_vec(),
            ],
            pause: Duration::from_secs(10),
        })
        .await;
        let mut request = get(&format!("http://127.0.0.1:{}/", server.port));
        request.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let err = client(true)
            .send(request)
            .await
            .expect_err("the call fails");
        assert_eq!(err, CallError::Timeout);
        assert!(err.is_retryable());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable_and_its_message_leaks_no_secret() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let port = listener.local_addr().expect("a bound address").port();
        drop(listener);
        let mut request = get(&format!("http://127.0.0.1:{port}/x?api_key=querysecret"));
        request
            .headers
            .push(("authorization".to_owned(), "Bearer headersecret".to_owned()));
        let err = client(true)
            .send(request)
            .await
            .expect_err("the call fails");
        let CallError::Connection(message) = &err else {
            panic!("{err:?}")
        };
        assert!(err.is_retryable());
        assert_eq!(err.kind(), "connection");
        assert!(
            !message.contains("secret") && !message.contains("127.0.0.1"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn requests_that_cannot_be_sent_are_invalid_input() {
        let send = |change: fn(&mut OutboundRequest)| async move {
            let mut request = get("http://127.0.0.1:9/");
            change(&mut request);
            client(true)
                .send(request)
                .await
                .expect_err("the call fails")
        };
        let errors = [
            send(|r| r.method = "TRACE".to_owned()).await,
            send(|r| r.method = "get".to_owned()).await,
            send(|r| r.url = Url::parse("ftp://127.0.0.1/").expect("a test URL")).await,
            send(|r| r.headers.push(("bad name".to_owned(), "x".to_owned()))).await,
            send(|r| {
                r.headers
                    .push(("x-key".to_owned(), "secret\nvalue".to_owned()))
            })
            .await,
            send(|r| {
                r.headers
                    .push(("Content-Length".to_owned(), "5".to_owned()))
            })
            .await,
        ];
        for err in errors {
            assert_eq!(err.kind(), "invalid_input", "{err:?}");
            assert!(!err.is_retryable());
            assert!(!err.message().contains("secret"), "{err:?}");
        }
    }

    #[tokio::test]
    async fn retry_after_is_read_from_the_answer() {
        let server = serve(|_| answer("429 Too Many Requests", "retry-after: 7\r\n", b"")).await;
        let response = client(true)
            .send(get(&format!("http://127.0.0.1:{}/", server.port)))
            .await
            .expect("an answer");
        assert_eq!(
            (response.status, response.retry_after),
            (429, Some(Duration::from_secs(7)))
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_all_three_http_date_forms() {
        let now = DateTime::parse_from_rfc3339("1994-11-06T08:49:00Z")
            .expect("an answer")
            .with_timezone(&Utc);
        let later = Some(Duration::from_secs(37));
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            later
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            later
        );
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), later);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-5", "1.5", "soon", "99999999999999999999999"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn only_globally_routable_addresses_pass_the_guard() {
        let cases = [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("2606:4700::1111", true),
            ("2001:4860:4860::8888", true),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::808:808", true),
            ("2002:808:808::1", true),
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("10.1.2.3", false),
            ("100.64.0.1", false),
            ("100.127.255.255", false),
            ("127.0.0.1", false),
            ("127.255.0.9", false),
            ("169.254.169.254", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("192.168.1.1", false),
            ("198.18.0.1", false),
            ("198.51.100.7", false),
            ("203.0.113.9", false),
            ("224.0.0.1", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("::", false),
            ("::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::127.0.0.1", false),
            ("64:ff9b::7f00:1", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("2002:7f00:1::", false),
            ("2002:c0a8:101::1", false),
            ("fc00::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("2001::1", false),
            ("3fff::1", false),
            ("100::1", false),
        ];
        for (text, global) in cases {
            let ip: IpAddr = text.parse().expect("a test address");
            assert_eq!(is_global(ip), global, "{text}");
        }
        // Just outside the private and CGNAT ranges.
        for text in [
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "11.0.0.1",
        ] {
            assert!(is_global(text.parse().expect("a test address")), "{text}");
        }
    }

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().expect("a JSON object").clone()
    }

    fn url_of(base: &str, endpoint: &str, path: Value, query: Value) -> Result<String, String> {
        action_url(base, endpoint, &map(path), &map(query)).map(String::from)
    }

    #[test]
    fn action_urls_join_fill_and_encode() {
        let none = || json!({});
        let cases = [
            (
                "https://api.example",
                "/users",
                none(),
                none(),
                "https://api.example/users",
            ),
            (
                "https://api.example/v1/",
                "/users",
                none(),
                none(),
                "https://api.example/v1/users",
            ),
            (
                "https://api.example/v1",
                "users/{id}",
                json!({"id": 42}),
                none(),
                "https://api.example/v1/users/42",
            ),
            (
                "https://api.example",
                "/users/{id}/x",
                json!({"id": "a/b?c#d%e f"}),
                none(),
                "https://api.example/users/a%2Fb%3Fc%23d%25e%20f/x",
            ),
            (
                "https://api.example",
                "/u/{id}",
                json!({"id": "../admin"}),
                none(),
                "https://api.example/u/..%2Fadmin",
            ),
            (
                "https://api.example",
                "//evil.example/x",
                none(),
                none(),
                "https://api.example/evil.example/x",
            ),
            (
                "https://api.example",
                "/{a}-{b}/{a}",
                json!({"a": true, "b": "é"}),
                none(),
                "https://api.example/true-%C3%A9/true",
            ),
            (
                "https://api.example",
                "/a{b",
                none(),
                none(),
                "https://api.example/a%7Bb",
            ),
            (
                "https://api.example",
                "/search",
                none(),
                json!({"tag": ["a", 1, false], "q": "x y&z"}),
                "https://api.example/search?q=x+y%26z&tag=a&tag=1&tag=false",
            ),
            (
                "https://api.example/v1?key=k",
                "/search?fixed=1#frag",
                none(),
                json!({"q": 2}),
                "https://api.example/v1/search?key=k&fixed=1&q=2",
            ),
            (
                "http://[::1]:8080",
                "/x",
                none(),
                none(),
                "http://[::1]:8080/x",
            ),
        ];
        for (base, endpoint, path, query, expected) in cases {
            assert_eq!(
                url_of(base, endpoint, path, query).as_deref(),
                Ok(expected),
                "{base} {endpoint}"
            );
        }
    }

    #[test]
    fn action_urls_refuse_missing_or_unusable_values() {
        let base = "https://api.example";
        let cases = [
            ("/users/{id}", json!({}), json!({}), "{id}"),
            ("/users/{id}", json!({"id": null}), json!({}), "{id}"),
            ("/users/{id}", json!({"id": {"a": 1}}), json!({}), "id"),
            ("/users/{id}", json!({"id": ".."}), json!({}), "id"),
            ("/users/{id}", json!({"id": "."}), json!({}), "id"),
            ("/search", json!({}), json!({"q": {"a": 1}}), "q"),
            ("/search", json!({}), json!({"q": null}), "q"),
            ("/search", json!({}), json!({"q": [[1]]}), "q"),
        ];
        for (endpoint, path, query, named) in cases {
            let err =
                url_of(base, endpoint, path.clone(), query.clone()).expect_err("a refused URL");
            assert!(err.contains(named), "{endpoint} {path} {query}: {err}");
        }
        assert!(url_of("not a url", "/x", json!({}), json!({})).is_err());
        assert!(url_of("mailto:a@example.com", "/x", json!({}), json!({})).is_err());
    }

    #[test]
    fn placeholders_are_listed_once_in_order() {
        assert_eq!(placeholders("/users/{id}/x"), ["id"]);
        assert_eq!(placeholders("/{org}/{repo}/{org}"), ["org", "repo"]);
        assert_eq!(placeholders("/a{b/{}/{c}}"), ["c"]);
        assert!(placeholders("/plain").is_empty());
    }
}
