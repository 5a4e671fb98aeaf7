//! One step attempt: its conditions, its templates, the action's call, and what came of it.

use std::time::Duration;

use entity::{action, tool};
use sea_orm::{ColumnTrait, DbErr, QueryFilter};
use serde_json::{json, Map, Value};

use super::expressions::{Expression, Scope};
use super::outbound::{self, CallError, OutboundRequest, OutboundResponse};
use super::plan::Step;
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

    /// `{"message", "kind"}`, as an execution log's `error`.
    pub fn to_json(&self) -> Value {
        json!({"message": self.message, "kind": self.kind})
    }
}

/// What a step comes to before any call is made. Not `Debug`: the request's headers may carry
/// credentials.
pub enum Prepared {
    /// A condition is false.
    Skipped,
    /// The step cannot be called (no retry).
    Failed(Failure),
    /// The call to make, and the resolved inputs its execution log shows.
    Call {
        request: OutboundRequest,
        inputs: Value,
    },
}

/// Evaluates the step's conditions, reads its action and tool, resolves its inputs and builds
/// the call. Only a database error is an `Err`.
pub async fn prepare(
    db: &Pool,
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
    let inputs = match step.inputs.render(scope) {
        Ok(inputs) => inputs,
        Err(err) => return Ok(failed("expression", format!("inputs.{err}"))),
    };
    Ok(match request_of(&action, &tool, &inputs, step.timeout) {
        Ok(request) => Prepared::Call { request, inputs },
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
        body: inputs.get("body").filter(|body| !body.is_null()).cloned(),
        timeout,
    })
}

/// The step's output for a 2xx answer, or why the attempt failed.
pub fn outcome(result: Result<OutboundResponse, CallError>) -> Result<Value, Failure> {
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            return Err(Failure {
                kind: err.kind(),
                message: err.message(),
                output: None,
                retryable: err.is_retryable(),
                retry_after: None,
            })
        }
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
    let retryable = matches!(status, 408 | 429 | 500..=599);
    Err(Failure {
        kind: "http_status",
        message: format!("the action answered {status}"),
        output: Some(output),
        retryable,
        retry_after: response.retry_after.filter(|_| retryable),
    })
}

/// `output` as an execution log keeps it: whole up to [`LOG_OUTPUT_CAP_BYTES`] of JSON, else
/// its status and headers with the body cut to text of that size and `"truncated": true`.
pub fn for_log(output: &Value) -> Value {
    let text = output.to_string();
    if text.len() <= LOG_OUTPUT_CAP_BYTES {
        return output.clone();
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
}
