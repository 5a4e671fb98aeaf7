//! Tool credentials: what each `authType` takes, checked as the API receives it, sealed at rest
//! with [`Keyring`], opened only by the executor for the call it makes.
//!
//! No type here prints a secret: `Debug` shows the kind of credentials only, and every secret
//! string is wiped from memory when dropped.

mod keyring;

use std::fmt;

use serde_json::{json, Map, Value};
use uuid::Uuid;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub use keyring::{development_key_path, Keyring, NoSealingKey, Sealed, Unreadable};

use crate::error::FieldError;

/// The column the sealed credentials live in; part of what a seal is bound to.
const FIELD: &str = "credentials";
/// The header an `apiKey` goes in when the credentials name neither a header nor a query
/// parameter.
pub const DEFAULT_API_KEY_HEADER: &str = "X-API-Key";
const MAX_SECRET_CHARS: usize = 4096;
const MAX_NAME_CHARS: usize = 256;

/// A tool's credentials, by its `authType`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub enum Credentials {
    /// `{"value", "header"}` or `{"value", "query"}`.
    ApiKey { value: String, place: ApiKeyPlace },
    /// `{"token"}`: `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// `{"username", "password"}`: `Authorization: Basic …`.
    Basic { username: String, password: String },
    /// `{"tokenUrl", "clientId", "clientSecret", "scope"}`: the client-credentials grant.
    OAuth2(OAuth2Client),
}

/// Where an API key is sent.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub enum ApiKeyPlace {
    Header(String),
    Query(String),
}

/// An OAuth 2 client of the client-credentials grant.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct OAuth2Client {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, [redacted])", self.auth_type())
    }
}

impl Credentials {
    /// The `authType` these credentials are for.
    pub fn auth_type(&self) -> &'static str {
        match self {
            Credentials::ApiKey { .. } => "apiKey",
            Credentials::Bearer { .. } => "bearer",
            Credentials::Basic { .. } => "basic",
            Credentials::OAuth2(_) => "oauth2",
        }
    }

    /// Reads the `credentials` object of a tool whose `authType` is `auth_type`; each failure
    /// names its field (`credentials.value`).
    pub fn read(auth_type: &str, object: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut fields = CredentialFields {
            object,
            auth_type,
            errors: Vec::new(),
        };
        let known: &[&str] = match auth_type {
            "apiKey" => &["value", "header", "query"],
            "bearer" => &["token"],
            "basic" => &["username", "password"],
            "oauth2" => &["tokenUrl", "clientId", "clientSecret", "scope"],
            _ => {
                return Err(vec![FieldError::new(
                    FIELD,
                    format!("authType {auth_type} takes no credentials"),
                )])
            }
        };
        for name in object.keys().filter(|name| !known.contains(&name.as_str())) {
            fields.fail(name, format!("is not a field of {auth_type} credentials"));
        }
        let credentials = match auth_type {
            "apiKey" => {
                let value = fields.secret("value");
                let header = fields.optional("header", MAX_NAME_CHARS, is_header_name);
                let query = fields.optional("query", MAX_NAME_CHARS, |_| true);
                let place = match (header, query) {
                    (Some(_), Some(_)) => {
                        fields.fail("query", "give header or query, not both".to_owned());
                        None
                    }
                    (_, Some(query)) => Some(ApiKeyPlace::Query(query)),
                    (header, None) => Some(ApiKeyPlace::Header(
                        header.unwrap_or_else(|| DEFAULT_API_KEY_HEADER.to_owned()),
                    )),
                };
                value
                    .zip(place)
                    .map(|(value, place)| Credentials::ApiKey { value, place })
            }
            "bearer" => fields
                .secret("token")
                .map(|token| Credentials::Bearer { token }),
            "basic" => {
                let username = fields.required("username", MAX_NAME_CHARS, |name| {
                    !name.contains(':') && is_header_text(name)
                });
                let password = fields.secret("password");
                username
                    .zip(password)
                    .map(|(username, password)| Credentials::Basic { username, password })
            }
            _ => {
                let token_url = fields.required("tokenUrl", 2048, is_http_url);
                let client_id = fields.required("clientId", 1024, is_header_text);
                let client_secret = fields.secret("clientSecret");
                let scope = fields.optional("scope", 1024, is_header_text);
                match (token_url, client_id, client_secret) {
                    (Some(token_url), Some(client_id), Some(client_secret)) => {
                        Some(Credentials::OAuth2(OAuth2Client {
                            token_url,
                            client_id,
                            client_secret,
                            scope,
                        }))
                    }
                    _ => None,
                }
            }
        };
        match credentials {
            Some(credentials) if fields.errors.is_empty() => Ok(credentials),
            _ => Err(fields.errors),
        }
    }

    /// The object [`Credentials::read`] reads: how the credentials are sealed.
    fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        let mut value = match self {
            Credentials::ApiKey { value, place } => match place {
                ApiKeyPlace::Header(name) => json!({"value": value, "header": name}),
                ApiKeyPlace::Query(name) => json!({"value": value, "query": name}),
            },
            Credentials::Bearer { token } => json!({"token": token}),
            Credentials::Basic { username, password } => {
                json!({"username": username, "password": password})
            }
            Credentials::OAuth2(client) => json!({
                "tokenUrl": client.token_url,
                "clientId": client.client_id,
                "clientSecret": client.client_secret,
                "scope": client.scope,
            }),
        };
        // Sized first, so that no reallocation leaves a copy of the secrets behind.
        let mut bytes = Zeroizing::new(Vec::with_capacity(serialized_len(&value)));
        serde_json::to_writer(&mut *bytes, &value).unwrap_or_default();
        wipe(&mut value);
        bytes
    }

    /// Seals these credentials for tool `tool_id` of organization `org_id`.
    pub fn seal(
        &self,
        keyring: &Keyring,
        org_id: Uuid,
        tool_id: Uuid,
    ) -> Result<Sealed, NoSealingKey> {
        keyring.seal(org_id, tool_id, FIELD, &self.to_plaintext())
    }

    /// Opens a tool's sealed credentials; `auth_type` is the tool's.
    pub fn open(
        keyring: &Keyring,
        org_id: Uuid,
        tool_id: Uuid,
        auth_type: &str,
        sealed: &Sealed,
    ) -> Result<Self, Unreadable> {
        let plaintext = keyring.open(org_id, tool_id, FIELD, sealed)?;
        let mut value: Value = serde_json::from_slice(&plaintext).map_err(|_| Unreadable)?;
        let read = match &value {
            Value::Object(object) => Self::read(auth_type, object).map_err(|_| Unreadable),
            _ => Err(Unreadable),
        };
        wipe(&mut value);
        read
    }

    /// Re-seals under the keyring's first key what another of its keys sealed; `None` when it
    /// is sealed under the first key already.
    pub fn reseal(
        keyring: &Keyring,
        org_id: Uuid,
        tool_id: Uuid,
        sealed: &Sealed,
    ) -> Result<Option<Sealed>, Unreadable> {
        if keyring.sealing_key_id() == Some(sealed.key_id.as_str()) {
            return Ok(None);
        }
        let plaintext = keyring.open(org_id, tool_id, FIELD, sealed)?;
        keyring
            .seal(org_id, tool_id, FIELD, &plaintext)
            .map(Some)
            .map_err(|_| Unreadable)
    }
}

/// How many bytes `value` takes as JSON, counted without keeping them.
fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_or(0, |()| counter.0)
}

/// Overwrites every string in `value` before it is dropped.
fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

/// Reads the members of one credentials object, collecting failures.
struct CredentialFields<'a> {
    object: &'a Map<String, Value>,
    auth_type: &'a str,
    errors: Vec<FieldError>,
}

impl CredentialFields<'_> {
    fn fail(&mut self, name: &str, message: String) {
        self.errors
            .push(FieldError::new(format!("{FIELD}.{name}"), message));
    }

    fn optional(&mut self, name: &str, max: usize, valid: impl Fn(&str) -> bool) -> Option<String> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.is_empty() => {
                self.fail(name, "must not be empty".to_owned());
                None
            }
            Some(Value::String(text)) if text.chars().count() > max => {
                self.fail(name, format!("must be at most {max} characters"));
                None
            }
            Some(Value::String(text)) if !valid(text) => {
                let message = match name {
                    "tokenUrl" => "must be an absolute http or https URL",
                    "header" => "must be a valid HTTP header name (and not one the client sets)",
                    "username" => "must be printable text without ':'",
                    _ => "must be printable text (no control characters)",
                };
                self.fail(name, message.to_owned());
                None
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                self.fail(name, "must be a string".to_owned());
                None
            }
        }
    }

    fn required(&mut self, name: &str, max: usize, valid: impl Fn(&str) -> bool) -> Option<String> {
        if matches!(self.object.get(name), None | Some(Value::Null)) {
            let auth_type = self.auth_type.to_owned();
            self.fail(name, format!("is required for authType {auth_type}"));
            return None;
        }
        self.optional(name, max, valid)
    }

    /// A secret: text that can go in a header, at most 4096 characters.
    fn secret(&mut self, name: &str) -> Option<String> {
        self.required(name, MAX_SECRET_CHARS, is_header_text)
    }
}

/// Visible ASCII, space and tab, or any non-ASCII character: what a header value may hold.
fn is_header_text(text: &str) -> bool {
    text.chars().all(|c| c == '\t' || !c.is_control())
        && text.bytes().all(|b| b >= 0x20 || b == b'\t')
}

fn is_header_name(name: &str) -> bool {
    reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok_and(|header| {
        !["host", "content-length", "transfer-encoding", "connection"].contains(&header.as_str())
    })
}

fn is_http_url(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(auth_type: &str, value: Value) -> Result<Credentials, Vec<String>> {
        let Value::Object(object) = value else {
            panic!("object")
        };
        Credentials::read(auth_type, &object).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect()
        })
    }

    #[test]
    fn each_auth_type_takes_its_own_fields() {
        let key = read("apiKey", json!({"value": "k"})).expect("apiKey");
        assert!(
            matches!(&key, Credentials::ApiKey { place: ApiKeyPlace::Header(h), .. } if h == "X-API-Key")
        );
        assert!(read("apiKey", json!({"value": "k", "query": "api_key"})).is_ok());
        assert!(read("bearer", json!({"token": "t"})).is_ok());
        assert!(read("basic", json!({"username": "u", "password": "p"})).is_ok());
        assert!(read(
            "oauth2",
            json!({"tokenUrl": "https://a.example/token", "clientId": "c", "clientSecret": "s"})
        )
        .is_ok());
        assert_eq!(
            read("bearer", json!({"value": "k"})).expect_err("err"),
            [
                "credentials.value: is not a field of bearer credentials",
                "credentials.token: is required for authType bearer",
            ]
        );
        assert_eq!(
            read("none", json!({})).expect_err("err"),
            ["credentials: authType none takes no credentials"]
        );
        assert_eq!(
            read("apiKey", json!({"value": "k", "header": "X", "query": "q"})).expect_err("err"),
            ["credentials.query: give header or query, not both"]
        );
        assert_eq!(
            read("basic", json!({"username": "a:b", "password": 1})).expect_err("err"),
            [
                "credentials.username: must be printable text without ':'",
                "credentials.password: must be a string",
            ]
        );
        assert_eq!(
            read(
                "oauth2",
                json!({"tokenUrl": "ftp://x", "clientId": "c", "clientSecret": "s\n"})
            )
            .expect_err("err"),
            [
                "credentials.tokenUrl: must be an absolute http or https URL",
                "credentials.clientSecret: must be printable text (no control characters)",
            ]
        );
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let token = read("bearer", json!({"token": "very-secret-token"})).expect("bearer");
        assert_eq!(format!("{token:?}"), "Credentials(bearer, [redacted])");
    }

    #[test]
    fn sealed_credentials_open_as_they_were() {
        let ring = Keyring::parse(
            "CREDENTIALS_KEY",
            &crate::config::Secret::new("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        )
        .expect("key");
        let (org, tool) = (Uuid::now_v7(), Uuid::now_v7());
        let creds = read("oauth2", json!({"tokenUrl": "https://a.example/t", "clientId": "c", "clientSecret": "s", "scope": "x y"})).expect("oauth2");
        let sealed = creds.seal(&ring, org, tool).expect("seal");
        assert!(!sealed
            .bytes
            .windows(b"clientSecret".len())
            .any(|w| w == b"clientSecret"));
        assert_eq!(
            Credentials::open(&ring, org, tool, "oauth2", &sealed).expect("open"),
            creds
        );
        assert_eq!(
            Credentials::open(&ring, org, tool, "bearer", &sealed),
            Err(Unreadable)
        );
    }
}
