//! A flow's steps as the executor runs them: parsed and checked once, before a run is queued,
//! and again (from the run's own copy) by the worker that works it.

use std::time::Duration;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::expressions::{Expression, Template};

/// Attempts of a step when its `retry` does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The most attempts a step may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;
/// The first retry's delay when `retry.initialDelayMs` is not given.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(1000);
/// The longest delay between two attempts, however many came before.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// An attempt's time limit when `timeoutMs` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(30_000);
/// The longest `timeoutMs` a step may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(300_000);

/// Why a step cannot run: `field` names it within the flow (`steps[1].retry.maxAttempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub field: String,
    pub message: String,
}

/// One step the executor can run.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub action_id: Uuid,
    /// `inputs` with its templates compiled: an object with `path`, `query`, `headers`, `body`.
    pub inputs: Template,
    /// The literal keys of `inputs.path`, when `path` is an object (not itself a template).
    pub path_names: Option<Vec<String>>,
    pub execute_if: Option<Expression>,
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub timeout: Duration,
    pub continue_on_error: bool,
}

/// Every step of a flow, in order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    /// Parses a flow's `steps`. The first step that cannot run is the error.
    pub fn parse(steps: &Value) -> Result<Self, StepError> {
        let Some(list) = steps.as_array() else {
            return Err(StepError::new("steps", "must be an array of steps"));
        };
        let steps = list
            .iter()
            .enumerate()
            .map(|(index, step)| Step::parse(index, step))
            .collect::<Result<_, _>>()?;
        Ok(Self { steps })
    }
}

impl StepError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Step {
    fn parse(index: usize, step: &Value) -> Result<Self, StepError> {
        let at = |key: &str| format!("steps[{index}].{key}");
        let Some(step) = step.as_object() else {
            return Err(StepError::new(
                format!("steps[{index}]"),
                "must be an object",
            ));
        };
        let id = step
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| StepError::new(at("id"), "must be a non-empty string"))?
            .to_owned();
        match step.get("type").and_then(Value::as_str) {
            Some("action") => {}
            Some(other) => {
                return Err(StepError::new(
                    at("type"),
                    format!("the executor cannot run steps of type `{other}`; it runs `action`"),
                ))
            }
            None => return Err(StepError::new(at("type"), "must be a string")),
        }
        let action_id = step
            .get("actionId")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| StepError::new(at("actionId"), "must be the id of an action"))?;

        let inputs = match step.get("inputs") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(inputs)) => {
                if let Some(key) = inputs
                    .keys()
                    .find(|key| !["path", "query", "headers", "body"].contains(&key.as_str()))
                {
                    return Err(StepError::new(
                        at(&format!("inputs.{key}")),
                        "unknown key; inputs has `path`, `query`, `headers` and `body`",
                    ));
                }
                Value::Object(inputs.clone())
            }
            Some(_) => return Err(StepError::new(at("inputs"), "must be an object")),
        };
        for key in ["path", "query", "headers"] {
            match inputs.get(key) {
                None | Some(Value::Object(_)) => {}
                Some(Value::String(text)) if text.contains("{{") => {}
                Some(_) => {
                    return Err(StepError::new(
                        at(&format!("inputs.{key}")),
                        "must be an object (or a `{{ expression }}` that gives one)",
                    ))
                }
            }
        }
        let path_names = match inputs.get("path") {
            None => Some(Vec::new()),
            Some(Value::Object(path)) => Some(path.keys().cloned().collect()),
            Some(_) => None,
        };
        let inputs = Template::compile(&inputs).map_err(|err| {
            StepError::new(at(&format!("inputs.{}", err.path)), err.error.to_string())
        })?;

        let execute_if = match step.get("executeIf") {
            None | Some(Value::Null) => None,
            Some(Value::String(source)) => Some(
                Expression::compile(source)
                    .map_err(|err| StepError::new(at("executeIf"), err.to_string()))?,
            ),
            Some(_) => {
                return Err(StepError::new(
                    at("executeIf"),
                    "must be a CEL expression (a string)",
                ))
            }
        };

        let (max_attempts, initial_delay) = match step.get("retry") {
            None | Some(Value::Null) => (DEFAULT_MAX_ATTEMPTS, DEFAULT_INITIAL_DELAY),
            Some(Value::Object(retry)) => {
                let max_attempts = match retry.get("maxAttempts") {
                    None => DEFAULT_MAX_ATTEMPTS,
                    Some(value) => value
                        .as_u64()
                        .filter(|n| (1..=u64::from(MAX_ATTEMPTS_LIMIT)).contains(n))
                        .map(|n| n as u32)
                        .ok_or_else(|| {
                            StepError::new(
                                at("retry.maxAttempts"),
                                format!("must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}"),
                            )
                        })?,
                };
                let initial_delay = match retry.get("initialDelayMs") {
                    None => DEFAULT_INITIAL_DELAY,
                    Some(value) => value
                        .as_u64()
                        .filter(|ms| *ms <= MAX_RETRY_DELAY.as_millis() as u64)
                        .map(Duration::from_millis)
                        .ok_or_else(|| {
                            StepError::new(
                                at("retry.initialDelayMs"),
                                format!(
                                    "must be a whole number of milliseconds from 0 to {}",
                                    MAX_RETRY_DELAY.as_millis()
                                ),
                            )
                        })?,
                };
                (max_attempts, initial_delay)
            }
            Some(_) => return Err(StepError::new(at("retry"), "must be an object")),
        };
        let timeout = match step.get("timeoutMs") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT,
            Some(value) => value
                .as_u64()
                .filter(|ms| (1..=MAX_TIMEOUT.as_millis() as u64).contains(ms))
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    StepError::new(
                        at("timeoutMs"),
                        format!(
                            "must be a whole number of milliseconds from 1 to {}",
                            MAX_TIMEOUT.as_millis()
                        ),
                    )
                })?,
        };
        let continue_on_error = match step.get("continueOnError") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(value)) => *value,
            Some(_) => return Err(StepError::new(at("continueOnError"), "must be a boolean")),
        };
        Ok(Self {
            id,
            action_id,
            inputs,
            path_names,
            execute_if,
            max_attempts,
            initial_delay,
            timeout,
            continue_on_error,
        })
    }

    /// The delay before attempt `attempt + 1` after attempt `attempt` (from 1) failed: doubling
    /// from the initial delay, with jitter (between half and all of it), never beyond
    /// [`MAX_RETRY_DELAY`]; at least what the target asked for with `Retry-After`, up to the cap.
    pub fn retry_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let doubled = self
            .initial_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(MAX_RETRY_DELAY);
        let jittered = doubled.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        retry_after
            .map_or(jittered, |asked| jittered.max(asked))
            .min(MAX_RETRY_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(extra: Value) -> Value {
        let mut step = json!({"id": "a", "type": "action", "actionId": Uuid::nil().to_string()});
        if let (Some(step), Value::Object(extra)) = (step.as_object_mut(), extra) {
            step.extend(extra);
        }
        json!([step])
    }

    fn error_of(steps: Value) -> StepError {
        Plan::parse(&steps).expect_err("the step must be refused")
    }

    #[test]
    fn defaults_apply_when_a_step_says_nothing() {
        let plan = Plan::parse(&step(json!({}))).expect("a minimal step parses");
        let step = &plan.steps[0];
        assert_eq!(step.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(step.timeout, DEFAULT_TIMEOUT);
        assert!(!step.continue_on_error);
        assert_eq!(step.path_names.as_deref(), Some(&[][..]));
    }

    #[test]
    fn an_unknown_type_names_the_step() {
        let steps = json!([{"id": "a", "type": "delay"}]);
        assert_eq!(error_of(steps).field, "steps[0].type");
    }

    #[test]
    fn out_of_range_settings_name_their_key() {
        assert_eq!(
            error_of(step(json!({"retry": {"maxAttempts": 11}}))).field,
            "steps[0].retry.maxAttempts"
        );
        assert_eq!(
            error_of(step(json!({"timeoutMs": 300_001}))).field,
            "steps[0].timeoutMs"
        );
        assert_eq!(
            error_of(step(json!({"inputs": {"cookies": {}}}))).field,
            "steps[0].inputs.cookies"
        );
        assert_eq!(
            error_of(step(json!({"actionId": "nope"}))).field,
            "steps[0].actionId"
        );
    }

    #[test]
    fn retry_delays_double_and_stop_at_the_cap() {
        let plan = Plan::parse(&step(json!({"retry": {"initialDelayMs": 1000}}))).expect("parses");
        let step = &plan.steps[0];
        for (attempt, full) in [(1, 1000), (2, 2000), (3, 4000)] {
            let delay = step.retry_delay(attempt, None).as_millis();
            assert!((full / 2..=full).contains(&delay), "{attempt}: {delay}");
        }
        assert!(step.retry_delay(30, None) <= MAX_RETRY_DELAY);
        assert_eq!(
            step.retry_delay(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            step.retry_delay(1, Some(Duration::from_secs(3600))),
            MAX_RETRY_DELAY
        );
    }
}
