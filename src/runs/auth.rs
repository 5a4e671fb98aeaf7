//! A tool's credentials put on a step's call, and kept out of what the run stores.
//!
//! `apiKey` goes in its header or query parameter, `bearer` and `basic` in `Authorization`
//! (replacing a header of the same name from the step's inputs), `oauth2` as a bearer token of
//! the client-credentials grant. Tokens are cached per tool until shortly before they expire
//! and fetched by one call at a time per tool (the others wait for its answer); a call that is
//! answered 401 gets one more try with a token fetched anew. The token endpoint is called
//! through the same outbound client, so the outbound-address rule holds for it too.
//!
//! Whatever was injected (the key, the token, the password, the encoded `Authorization`
//! value) is replaced by `[redacted]` in the step's output and error before anything is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

use super::outbound::{OutboundClient, OutboundRequest, RequestBody};
use super::step::{self, Failure, REDACTED};
use crate::credentials::{ApiKeyPlace, Credentials, OAuth2Client};

/// Most a token is refreshed before its `expires_in` runs out.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// How long a token whose endpoint gave no `expires_in` is used: an API that answers 403
/// rather than 401 to an expired token would otherwise fail every call until a restart.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// Cached tokens kept at most; beyond, the cache starts again empty.
const MAX_CACHED_TOOLS: usize = 10_000;
/// Secrets shorter than this are only redacted where they make up a whole string: replacing
/// every occurrence of `ab` would garble an answer and protect little.
const MIN_SUBSTRING_REDACTION: usize = 4;

/// A tool's opened credentials, ready for its calls.
pub struct Auth {
    credentials: Credentials,
    /// The tool, and a digest of its sealed credentials: new credentials get a new token.
    token_key: TokenKey,
}

impl Auth {
    /// `credentials` of tool `tool_id`, which were sealed as `sealed`.
    pub fn new(credentials: Credentials, tool_id: Uuid, sealed: &[u8]) -> Self {
        Self {
            credentials,
            token_key: (tool_id, Sha256::digest(sealed).into()),
        }
    }
}

/// A tool and the digest of its sealed credentials.
type TokenKey = (Uuid, [u8; 32]);

/// One tool's token, locked while it is fetched.
type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// OAuth 2 access tokens by tool; see the module documentation.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, TokenSlot>>,
}

struct Token {
    access: Zeroizing<String>,
    fresh_until: Instant,
}

impl TokenCache {
    fn slot(&self, key: TokenKey) -> TokenSlot {
        let mut slots = super::lock(&self.slots);
        if slots.len() >= MAX_CACHED_TOOLS && !slots.contains_key(&key) {
            slots.clear();
        }
        slots.entry(key).or_default().clone()
    }

    /// A fresh token for the tool: the cached one unless it is about to expire or is `stale`
    /// (the one a call was just refused with), else one fetched now, by this caller alone.
    async fn token(
        &self,
        client: &OutboundClient,
        auth: &Auth,
        oauth: &OAuth2Client,
        stale: Option<&str>,
        timeout: Duration,
    ) -> Result<Zeroizing<String>, Failure> {
        let slot = self.slot(auth.token_key);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref() {
            let fresh = Instant::now() < token.fresh_until;
            if fresh && stale != Some(token.access.as_str()) {
                return Ok(token.access.clone());
            }
        }
        let token = fetch_token(client, oauth, timeout).await?;
        let access = token.access.clone();
        *cached = Some(token);
        Ok(access)
    }
}

/// Asks `oauth.token_url` for a token (client-credentials grant, client authenticated with
/// HTTP Basic as RFC 6749 §2.3.1 says).
async fn fetch_token(
    client: &OutboundClient,
    oauth: &OAuth2Client,
    timeout: Duration,
) -> Result<Token, Failure> {
    let url = url::Url::parse(&oauth.token_url)
        .map_err(|_| Failure::permanent("invalid_input", "the tool's tokenUrl is not a URL"))?;
    let basic = Zeroizing::new(format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            form_encode(&oauth.client_id),
            form_encode(&oauth.client_secret)
        ))
    ));
    let mut form = vec![("grant_type".to_owned(), "client_credentials".to_owned())];
    if let Some(scope) = &oauth.scope {
        form.push(("scope".to_owned(), scope.clone()));
    }
    let request = OutboundRequest {
        method: "POST".to_owned(),
        url,
        headers: vec![
            ("authorization".to_owned(), basic.to_string()),
            ("accept".to_owned(), "application/json".to_owned()),
        ],
        body: Some(RequestBody::Form(form)),
        timeout,
    };
    let asked = Instant::now();
    let response = client.send(request).await.map_err(|err| {
        let mut failure = Failure::from(err);
        failure.message = format!("the token endpoint: {}", failure.message);
        failure
    })?;
    if !(200..300).contains(&response.status) {
        let message = format!("the token endpoint answered {}", response.status);
        return Err(Failure::refused(message, &response, None));
    }
    let Some(access) = response.body.get("access_token").and_then(Value::as_str) else {
        return Err(Failure::permanent(
            "http_status",
            "the token endpoint's answer holds no access_token",
        ));
    };
    let lifetime = match response.body.get("expires_in") {
        Some(Value::Number(seconds)) => seconds.as_f64(),
        Some(Value::String(seconds)) => seconds.trim().parse().ok(),
        _ => None,
    }
    .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
    .map(|seconds| Duration::from_secs_f64(seconds.min(1e9)))
    .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok(Token {
        access: Zeroizing::new(access.to_owned()),
        fresh_until: asked + lifetime - (lifetime / 10).min(REFRESH_MARGIN),
    })
}

/// Makes the call of a step with the tool's credentials on it, and returns its outcome with
/// every injected secret redacted. The request's timeout bounds it all: a token fetch (or the
/// wait for another step's), the call, and the one retry after a 401.
pub async fn call(
    client: &OutboundClient,
    tokens: &TokenCache,
    request: OutboundRequest,
    auth: Option<&Auth>,
) -> Result<Value, Failure> {
    let Some(auth) = auth else {
        return step::outcome(client.send(request).await);
    };
    let deadline = tokio::time::Instant::now() + request.timeout;
    tokio::time::timeout_at(deadline, call_with(client, tokens, request, auth, deadline))
        .await
        .unwrap_or_else(|_| step::outcome(Err(super::outbound::CallError::Timeout)))
}

async fn call_with(
    client: &OutboundClient,
    tokens: &TokenCache,
    request: OutboundRequest,
    auth: &Auth,
    deadline: tokio::time::Instant,
) -> Result<Value, Failure> {
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut secrets: Vec<Zeroizing<String>> = Vec::new();
    let outcome = match &auth.credentials {
        Credentials::OAuth2(oauth) => {
            secrets.push(Zeroizing::new(oauth.client_secret.clone()));
            // The token a first try was refused (401) with: the second try is the last.
            let mut refused: Option<Zeroizing<String>> = None;
            loop {
                let stale = refused.as_ref().map(|token| token.as_str());
                let token = match tokens.token(client, auth, oauth, stale, left()).await {
                    Ok(token) => token,
                    Err(failure) => break Err(failure),
                };
                secrets.push(token.clone());
                let mut attempt = request.clone();
                attempt.timeout = left();
                put_header(
                    &mut attempt,
                    "authorization",
                    format!("Bearer {}", token.as_str()),
                );
                let answer = client.send(attempt).await;
                let again = refused.is_none() && matches!(&answer, Ok(r) if r.status == 401);
                if !again {
                    break step::outcome(answer);
                }
                refused = Some(token);
            }
        }
        credentials => {
            let mut request = request;
            inject(&mut request, credentials, &mut secrets);
            step::outcome(client.send(request).await)
        }
    };
    let secrets: Vec<&str> = secrets.iter().map(|s| s.as_str()).collect();
    match outcome {
        Ok(mut output) => {
            redact(&mut output, &secrets);
            Ok(output)
        }
        Err(mut failure) => {
            failure.message = redact_text(&failure.message, &secrets);
            if let Some(output) = failure.output.as_mut() {
                redact(output, &secrets);
            }
            Err(failure)
        }
    }
}

/// Puts the static credentials on `request`, noting in `secrets` what must not be stored.
fn inject(
    request: &mut OutboundRequest,
    credentials: &Credentials,
    secrets: &mut Vec<Zeroizing<String>>,
) {
    match credentials {
        Credentials::ApiKey { value, place } => {
            secrets.push(Zeroizing::new(value.clone()));
            match place {
                ApiKeyPlace::Header(name) => put_header(request, name, value.clone()),
                ApiKeyPlace::Query(name) => {
                    let encoded = Zeroizing::new(form_encode(value));
                    let name = form_encode(name);
                    // The step's other pairs stay exactly as written; only one of this name goes.
                    let mut query: Vec<String> = request
                        .url
                        .query()
                        .unwrap_or_default()
                        .split('&')
                        .filter(|pair| {
                            let key = pair.split('=').next().unwrap_or_default();
                            !pair.is_empty() && key != name
                        })
                        .map(str::to_owned)
                        .collect();
                    query.push(format!("{name}={}", encoded.as_str()));
                    let joined = Zeroizing::new(query.join("&"));
                    request.url.set_query(Some(&joined));
                    query.iter_mut().for_each(|pair| pair.zeroize());
                    secrets.push(encoded);
                }
            }
        }
        Credentials::Bearer { token } => {
            secrets.push(Zeroizing::new(token.clone()));
            put_header(request, "authorization", format!("Bearer {token}"));
        }
        Credentials::Basic { username, password } => {
            let encoded = Zeroizing::new(STANDARD.encode(format!("{username}:{password}")));
            secrets.push(Zeroizing::new(password.clone()));
            secrets.push(encoded.clone());
            put_header(
                request,
                "authorization",
                format!("Basic {}", encoded.as_str()),
            );
        }
        Credentials::OAuth2(_) => {}
    }
}

/// `text` as `application/x-www-form-urlencoded` writes it.
fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Sets header `name`, removing any of that name (in any case) the step's inputs gave.
fn put_header(request: &mut OutboundRequest, name: &str, value: String) {
    request
        .headers
        .retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
    request.headers.push((name.to_owned(), value));
}

/// Replaces every secret in the strings of `value` (keys included) with `[redacted]`.
fn redact(value: &mut Value, secrets: &[&str]) {
    match value {
        Value::String(text) => *text = redact_text(text, secrets),
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, secrets)),
        Value::Object(map) => {
            let leaked: Vec<String> = map
                .keys()
                .filter(|key| redact_text(key, secrets) != **key)
                .cloned()
                .collect();
            for key in leaked {
                if let Some(inner) = map.remove(&key) {
                    map.insert(redact_text(&key, secrets), inner);
                }
            }
            map.values_mut().for_each(|inner| redact(inner, secrets));
        }
        _ => {}
    }
}

fn redact_text(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        if secret.len() >= MIN_SUBSTRING_REDACTION {
            if text.contains(secret) {
                text = text.replace(secret, REDACTED);
            }
        } else if text == *secret {
            text = REDACTED.to_owned();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn injected_secrets_are_redacted_wherever_they_are_echoed() {
        let mut output = json!({"body": {"seen": "Bearer s3cret-token", "s3cret-token": 1, "short": "ab"}, "n": 5});
        redact(&mut output, &["s3cret-token", "ab"]);
        assert_eq!(
            output,
            json!({"body": {"seen": "Bearer [redacted]", "[redacted]": 1, "short": "[redacted]"}, "n": 5})
        );
        assert_eq!(redact_text("abc", &["ab"]), "abc");
    }
}
