//! One step attempt: its conditions, its templates, the action's call, and what came of it.

use std::time::Duration;

use entity::{action, tool};
use sea_orm::{ColumnTrait, DbErr, QueryFilter};
use serde_json::{json, Map, Value};

use super::auth::Auth;
use super::expressions::{Expression, Scope};
use super::outbound::{self, CallError, OutboundRequest, OutboundResponse, RequestBody};
use super::plan::Step;
use crate::credentials::{Credentials, Keyring, Sealed};
use crate::db::Pool;
use crate::service::tenant_scope::TenantScoped;

/// The most of a step's output an execution log keeps; the run itself keeps all of it.
pub const LOG_OUTPUT_CAP_BYTES: usize = 64 * 1024;

/// Why a step attempt failed, as its execution log and the run's error say.
#[derive(Debug, Clone)]
pub struct Failure {
    /// One of API.md's error kinds (`http_status`, `timeout`, …).
    pub kind: &'static str,
    pub message: String,
    /// The answer, when there was one.
    pub output: Option<Value>,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// How long the target asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure that another attempt would not mend (a bad template, a missing action).
    pub fn permanent(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            output: None,
            retryable: false,
            retry_after: None,
        }
    }

    /// A non-2xx answer: 408, 429 and 5xx may succeed on another attempt (after the
    /// `Retry-After` the answer asked for), others not.
    pub fn refused(message: String, response: &OutboundResponse, output: Option<Value>) -> Self {
        let retryable = matches!(response.status, 408 | 429 | 500..=599);
        Self {
            kind: "http_status",
            message,
            output,
            retryable,
            retry_after: response.retry_after.filter(|_| retryable),
        }
    }

    /// `{"message", "kind"}`, as an execution log's `error`.
    pub fn to_json(&self) -> Value {
        json!({"message": self.message, "kind": self.kind})
    }
}

impl From<CallError> for Failure {
    /// A call that brought no answer: timeouts and connection errors may succeed on another
    /// attempt.
    fn from(err: CallError) -> Self {
        Self {
            kind: err.kind(),
            message: err.message(),
            output: None,
            retryable: err.is_retryable(),
            retry_after: None,
        }
    }
}

// One per attempt, moved straight into its match: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
/// What a step comes to before any call is made. Not `Debug`: the request's headers may carry
/// credentials.
pub enum Prepared {
    /// A condition is false.
    Skipped,
    /// The step cannot be called (no retry).
    Failed(Failure),
    /// The call to make, the tool's credentials to put on it, and the resolved inputs its
    /// execution log shows (without the credentials).
    Call {
        request: OutboundRequest,
        auth: Option<Auth>,
        inputs: Value,
    },
}

/// Evaluates the step's conditions, reads its action and tool, opens the tool's credentials,
/// resolves its inputs and builds the call. A tool without credentials is called without them
/// (its steps may authenticate through `inputs.headers`, as before credentials existed). Only
/// a database error is an `Err`.
pub async fn prepare(
    db: &Pool,
    keyring: &Keyring,
    org_id: uuid::Uuid,
    step: &Step,
    scope: &Scope,
) -> Result<Prepared, DbErr> {
    if let Some(condition) = &step.execute_if {
        match condition.condition(scope) {
            Ok(true) => {}
            Ok(false) => return Ok(Prepared::Skipped),
            Err(err) => return Ok(failed("expression", format!("executeIf: {err}"))),
        }
    }
    let Some(action) = action::Entity::find_in_org(org_id)
        .filter(action::Column::Id.eq(step.action_id))
        .one(db)
        .await?
    else {
        return Ok(failed(
            "invalid_input",
            "the step's action no longer exists",
        ));
    };
    if let Some(Value::String(source)) = &action.execute_if {
        match Expression::compile(source).and_then(|condition| condition.condition(scope)) {
            Ok(true) => {}
            Ok(false) => return Ok(Prepared::Skipped),
            Err(err) => {
                return Ok(failed(
                    "expression",
                    format!("the action's executeIf: {err}"),
                ))
            }
        }
    }
    let Some(tool) = tool::Entity::find_in_org(org_id)
        .filter(tool::Column::Id.eq(action.tool_id))
        .one(db)
        .await?
    else {
        return Ok(failed(
            "invalid_input",
            "the action's tool no longer exists",
        ));
    };
    let auth = match Sealed::of_tool(&tool) {
        Some(sealed) => {
            match Credentials::open(keyring, org_id, tool.id, &tool.auth_type, &sealed) {
                Ok(credentials) => Some(Auth::new(credentials, tool.id, &sealed.bytes)),
                Err(unreadable) => {
                    return Ok(failed("credentials_unreadable", unreadable.to_string()))
                }
            }
        }
        None => None,
    };
    let inputs = match step.inputs.render(scope) {
        Ok(inputs) => inputs,
        Err(err) => return Ok(failed("expression", format!("inputs.{err}"))),
    };
    Ok(match request_of(&action, &tool, &inputs, step.timeout) {
        Ok(request) => Prepared::Call {
            request,
            auth,
            inputs: inputs_for_log(inputs),
        },
        Err(message) => failed("invalid_input", message),
    })
}

fn failed(kind: &'static str, message: impl Into<String>) -> Prepared {
    Prepared::Failed(Failure::permanent(kind, message))
}

/// The action's call with the resolved `inputs`.
fn request_of(
    action: &action::Model,
    tool: &tool::Model,
    inputs: &Value,
    timeout: Duration,
) -> Result<OutboundRequest, String> {
    let empty = Map::new();
    let object = |key: &str| match inputs.get(key) {
        None | Some(Value::Null) => Ok(&empty),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(format!("inputs.{key} must be an object")),
    };
    let url = outbound::action_url(
        &tool.base_url,
        &action.endpoint,
        object("path")?,
        object("query")?,
    )?;
    let headers = object("headers")?
        .iter()
        .map(|(name, value)| match value {
            Value::String(text) => Ok((name.clone(), text.clone())),
            Value::Number(_) | Value::Bool(_) => Ok((name.clone(), value.to_string())),
            _ => Err(format!("inputs.headers.{name} must be a string")),
        })
        .collect::<Result<_, _>>()?;
    Ok(OutboundRequest {
        method: action.method.clone(),
        url,
        headers,
        body: inputs
            .get("body")
            .filter(|body| !body.is_null())
            .cloned()
            .map(RequestBody::Json),
        timeout,
    })
}

/// The step's output for a 2xx answer, or why the attempt failed.
pub fn outcome(result: Result<OutboundResponse, CallError>) -> Result<Value, Failure> {
    let response = match result {
        Ok(response) => response,
        Err(err) => return Err(Failure::from(err)),
    };
    let status = response.status;
    let output = json!({
        "status": status,
        "headers": response.headers,
        "body": response.body,
    });
    if (200..300).contains(&status) {
        return Ok(output);
    }
    Err(Failure::refused(
        format!("the action answered {status}"),
        &response,
        Some(output),
    ))
}

/// What an execution log shows in place of a header value that may be a secret.
pub const REDACTED: &str = "[redacted]";

/// Whether a header of this name may carry a secret (a credential, a session): its value is
/// left out of execution logs. Names are compared in lower case.
fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "cookie",
        "token",
        "secret",
        "password",
        "key",
        "session",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// `headers` (a JSON object of header name → value) with the values of sensitive headers
/// replaced by [`REDACTED`]; anything else is kept as it is.
fn redact_headers(headers: &mut Value) {
    if let Value::Object(headers) = headers {
        for (name, value) in headers.iter_mut() {
            if is_sensitive_header(name) {
                *value = Value::String(REDACTED.to_owned());
            }
        }
    }
}

/// The resolved inputs as the execution log shows them: sensitive header values redacted.
fn inputs_for_log(mut inputs: Value) -> Value {
    if let Some(headers) = inputs.get_mut("headers") {
        redact_headers(headers);
    }
    inputs
}

/// `output` as an execution log keeps it: sensitive response headers (`set-cookie`, …)
/// redacted, and whole up to [`LOG_OUTPUT_CAP_BYTES`] of JSON, else its status and headers with
/// the body cut to text of that size and `"truncated": true`.
pub fn for_log(output: &Value) -> Value {
    let mut output = output.clone();
    if let Some(headers) = output.get_mut("headers") {
        redact_headers(headers);
    }
    let text = output.to_string();
    if text.len() <= LOG_OUTPUT_CAP_BYTES {
        return output;
    }
    let body = output.get("body").map(Value::to_string).unwrap_or_default();
    let mut end = LOG_OUTPUT_CAP_BYTES.min(body.len());
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    json!({
        "status": output.get("status"),
        "headers": output.get("headers"),
        "body": &body[..end],
        "truncated": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<u64>) -> Result<OutboundResponse, CallError> {
        Ok(OutboundResponse {
            status,
            headers: Map::new(),
            body: json!({"ok": status < 300}),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    #[test]
    fn a_2xx_answer_is_the_output() {
        let output = outcome(answer(201, None)).expect("2xx completes");
        assert_eq!(output["status"], json!(201));
        assert_eq!(output["body"], json!({"ok": true}));
    }

    #[test]
    fn transient_statuses_are_retried_and_others_are_not() {
        for status in [408, 429, 500, 503] {
            assert!(outcome(answer(status, None)).expect_err("fails").retryable);
        }
        for status in [301, 400, 404, 422] {
            let failure = outcome(answer(status, Some(3))).expect_err("fails");
            assert!(!failure.retryable, "{status}");
            assert_eq!(failure.retry_after, None);
            assert_eq!(failure.kind, "http_status");
        }
        let failure = outcome(answer(429, Some(3))).expect_err("fails");
        assert_eq!(failure.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_large_output_is_cut_in_the_log() {
        let output =
            json!({"status": 200, "headers": {}, "body": "é".repeat(LOG_OUTPUT_CAP_BYTES)});
        let logged = for_log(&output);
        assert_eq!(logged["truncated"], json!(true));
        assert!(logged.to_string().len() < LOG_OUTPUT_CAP_BYTES + 1024);
        let small = json!({"status": 200, "headers": {}, "body": "ok"});
        assert_eq!(for_log(&small), small);
    }

    #[test]
    fn secrets_in_headers_are_left_out_of_the_log() {
        let output =
            json!({"status": 200, "headers": {"set-cookie": "sid=1", "etag": "x"}, "body": {}});
        let logged = for_log(&output);
        assert_eq!(logged["headers"]["set-cookie"], json!(REDACTED));
        assert_eq!(logged["headers"]["etag"], json!("x"));
        let inputs = inputs_for_log(json!({
            "headers": {"Authorization": "Bearer s3cret", "X-Api-Key": "k", "Accept": "text/plain"},
            "body": {"Authorization": "kept: the body is the flow's data"},
        }));
        assert_eq!(inputs["headers"]["Authorization"], json!(REDACTED));
        assert_eq!(inputs["headers"]["X-Api-Key"], json!(REDACTED));
        assert_eq!(inputs["headers"]["Accept"], json!("text/plain"));
        assert_eq!(
            inputs["body"]["Authorization"],
            json!("kept: the body is the flow's data")
        );
    }
}
