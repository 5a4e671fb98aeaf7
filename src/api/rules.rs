//! Field rules for [`super::body::Fields`]: each turns a JSON value into a checked value or a
//! message for the client.

use serde_json::Value;

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string, trimmed of surrounding white space, of `min` to `max` characters (Unicode scalar
/// values, not bytes).
pub fn text(min: usize, max: usize) -> impl FnOnce(Value) -> Result<String, String> {
    move |value| {
        let Value::String(raw) = value else {
            return Err(format!("must be a string, not {}", json_type(&value)));
        };
        let trimmed = raw.trim();
        let length = trimmed.chars().count();
        if length < min {
            Err(if min == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must be at least {min} characters")
            })
        } else if length > max {
            Err(format!("must be at most {max} characters"))
        } else {
            Ok(trimmed.to_owned())
        }
    }
}
