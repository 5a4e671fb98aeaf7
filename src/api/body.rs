//! `JsonBody<T>`: a strictly checked JSON request body.
//!
//! poem-openapi's `Json<T>` stops at the first bad field and drops nothing it does not know
//! loudly enough for this API. `JsonBody<T>` reads the body itself (bounded by
//! `MAX_BODY_BYTES`), then lets `T` read its fields one by one through [`Fields`], which collects
//! every failure, so a 400 lists all failing fields at once. Unknown and server-owned fields are
//! errors, never silently dropped. `T` itself is the documented schema (a poem-openapi `Object`).

use std::collections::BTreeMap;

use poem::error::ReadBodyError;
use poem::{Request, RequestBody, Result};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};
use crate::state::AppState;

/// Fields that the server owns: a body that sets one is refused.
const SERVER_OWNED_FIELDS: &[&str] =
    &["id", "orgId", "userId", "createdAt", "updatedAt", "version"];

/// A JSON object field of a request body: documented as `type: object` with any members.
pub type JsonObject = BTreeMap<String, Value>;

/// A request body type: its schema documents the wire format, `read` checks it.
pub trait ReadBody: Type {
    /// The validated input it yields to the service layer.
    type Value: Send;

    /// Reads every field from `fields`; failures are collected there, not returned.
    fn read(fields: &mut Fields) -> Self::Value;
}

/// A JSON request body checked field by field; see the module documentation.
pub struct JsonBody<T: ReadBody>(pub T::Value);

/// The body's fields, consumed one by one, with every failure collected.
pub struct Fields {
    values: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    fn new(values: Map<String, Value>) -> Self {
        Self {
            values,
            errors: Vec::new(),
        }
    }

    /// Takes a present, non-null field through `rule`.
    fn take<T>(
        &mut self,
        name: &'static str,
        rule: impl FnOnce(Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.values.remove(name) {
            None | Some(Value::Null) => None,
            Some(value) if holds_nul(&value) => {
                self.errors.push(FieldError::new(name, NUL_MESSAGE));
                None
            }
            Some(value) => match rule(value) {
                Ok(value) => Some(value),
                Err(message) => {
                    self.errors.push(FieldError::new(name, message));
                    None
                }
            },
        }
    }

    /// A field that must be present and not null.
    ///
    /// On failure the error is recorded and a placeholder returned: [`Fields::finish`] then
    /// refuses the whole body, so the placeholder is never used.
    pub fn required<T: Default>(
        &mut self,
        name: &'static str,
        rule: impl FnOnce(Value) -> Result<T, String>,
    ) -> T {
        let present = matches!(self.values.get(name), Some(v) if !v.is_null());
        if !present {
            self.values.remove(name);
            self.errors.push(FieldError::new(name, "is required"));
            return T::default();
        }
        self.take(name, rule).unwrap_or_default()
    }

    /// A field that may be absent or null (both mean "none").
    pub fn optional<T>(
        &mut self,
        name: &'static str,
        rule: impl FnOnce(Value) -> Result<T, String>,
    ) -> Option<T> {
        self.take(name, rule)
    }

    /// On an update, a required field: absent leaves it unchanged, null is refused.
    pub fn patch<T>(
        &mut self,
        name: &'static str,
        rule: impl FnOnce(Value) -> Result<T, String>,
    ) -> Option<T> {
        if matches!(self.values.get(name), Some(Value::Null)) {
            self.values.remove(name);
            self.errors.push(FieldError::new(name, "must not be null"));
            return None;
        }
        self.take(name, rule)
    }

    /// On an update, an optional field: absent leaves it unchanged (`None`), null clears it
    /// (`Some(None)`).
    pub fn patch_nullable<T>(
        &mut self,
        name: &'static str,
        rule: impl FnOnce(Value) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match self.values.get(name) {
            None => None,
            Some(Value::Null) => {
                self.values.remove(name);
                Some(None)
            }
            Some(_) => self.take(name, rule).map(Some),
        }
    }

    /// A required field that is an object of its own, read by `T`; its failures are named
    /// `name.field` (`owner.email`).
    pub fn required_object<T: ReadBody>(&mut self, name: &'static str) -> Option<T::Value> {
        match self.values.remove(name) {
            Some(Value::Object(values)) => {
                let mut inner = Fields::new(values);
                let value = T::read(&mut inner);
                for error in inner.unread_and_failed() {
                    let field = format!("{name}.{}", error.field);
                    self.errors.push(FieldError::new(field, error.message));
                }
                Some(value)
            }
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(name, "is required"));
                None
            }
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be an object"));
                None
            }
        }
    }

    /// Refuses whatever was not read (unknown or server-owned fields) together with every
    /// failure recorded so far.
    fn finish(self) -> Result<(), ApiError> {
        let errors = self.unread_and_failed();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(errors))
        }
    }

    /// Every failure recorded, and a failure for each field that was not read.
    fn unread_and_failed(mut self) -> Vec<FieldError> {
        for name in self.values.keys() {
            let message = if SERVER_OWNED_FIELDS.contains(&name.as_str()) {
                "is set by the server and cannot be written"
            } else {
                "is not a field of this resource"
            };
            self.errors.push(FieldError::new(name.clone(), message));
        }
        self.errors
    }
}

/// PostgreSQL stores neither a NUL in text nor `\u0000` in `jsonb`; the server refuses it on
/// every backend alike, before anything is written.
const NUL_MESSAGE: &str = "must not contain the character U+0000 (NUL), at any depth";

// White space as `str::trim` removes it (Rust's `char::is_whitespace`), spelled out because
// `\s` means different things in Rust, Python and JavaScript.
const WHITE_SPACE: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The document's statement of a top-level text field of `min` (0 or 1) to `max` characters:
/// no U+0000 anywhere, and the length counted after trimming, as [`super::rules::text`] counts
/// it (JSON Schema's `maxLength` would count the white space around it too).
pub fn text_pattern(min: u64, max: u64) -> String {
    let edge = format!("[^\\u0000{WHITE_SPACE}]");
    let inner = format!("[^\\u0000]{{0,{}}}", max.saturating_sub(2));
    let trimmed = if max >= 2 {
        format!("{edge}(?:{inner}{edge})?")
    } else {
        edge
    };
    let trimmed = if min == 0 {
        format!("(?:{trimmed})?")
    } else {
        trimmed
    };
    format!("^[{WHITE_SPACE}]*{trimmed}[{WHITE_SPACE}]*$")
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(members) => members
            .iter()
            .any(|(key, member)| key.contains('\0') || holds_nul(member)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_json_object(
    request: &Request,
    body: &mut RequestBody,
) -> Result<Map<String, Value>, ApiError> {
    if !request.content_type().is_some_and(is_json_content_type) {
        return Err(ApiError::invalid(
            "Content-Type",
            "must be application/json",
        ));
    }
    let limit = request
        .data::<AppState>()
        .map_or(crate::config::DEFAULT_MAX_BODY_BYTES, |state| {
            state.max_body_bytes
        });
    let bytes = body
        .take()
        .map_err(|err| ApiError::internal(&err))?
        .into_bytes_limit(limit)
        .await
        .map_err(|err| match err {
            ReadBodyError::PayloadTooLarge => ApiError::payload_too_large(limit),
            other => {
                ApiError::malformed_body(format!("the request body could not be read: {other}"))
            }
        })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(values)) => Ok(values),
        Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        Err(err) => Err(ApiError::malformed_body(format!(
            "the request body is not valid JSON: {err}"
        ))),
    }
}

impl<'a, T: ReadBody> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> Result<Self> {
        let values = read_json_object(request, body).await?;
        Ok(Self(read_fields::<T>(values)?))
    }
}

fn read_fields<T: ReadBody>(values: Map<String, Value>) -> Result<T::Value, ApiError> {
    let mut fields = Fields::new(values);
    let value = T::read(&mut fields);
    fields.finish()?;
    Ok(value)
}

/// Checks `body` against `T`'s rules as if it were a request body: for commands that take the
/// same input as an endpoint (`tolstoy signup`).
pub fn read_body<T: ReadBody>(body: Value) -> Result<T::Value, ApiError> {
    match body {
        Value::Object(values) => read_fields::<T>(values),
        _ => Err(ApiError::invalid("body", "must be a JSON object")),
    }
}
