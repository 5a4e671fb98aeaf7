//! Field rules for [`super::body::Fields`]: each turns a JSON value into a checked value or a
//! message for the client.

use std::collections::HashSet;
use std::sync::LazyLock;

use poem_openapi::registry::Registry;
use poem_openapi::types::{ParseFromJSON, ToJSON, Type};
use poem_openapi::Enum;
use regex::Regex;
use serde_json::Value;
use url::{Host, Url};
use uuid::Uuid;
use validator::ValidateEmail;

use crate::config::MAX_RETENTION_DAYS;
use crate::identity::Role;
use crate::service::email_domains;

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

/// A value of the enumeration `E` (a poem-openapi `Enum`, whose variants are the one list of
/// allowed values), trimmed, and case-sensitive as the contract says.
pub fn one_of<E: ParseFromJSON + ToJSON>(value: Value) -> Result<String, String> {
    let text = text(1, 64)(value)?;
    E::parse_from_json(Some(Value::String(text.clone())))
        .map(|_| text)
        .map_err(|_| format!("must be one of: {}", enum_values::<E>().join(", ")))
}

/// The allowed values of `E`, from its own schema.
fn enum_values<E: Type>() -> Vec<String> {
    let mut registry = Registry::new();
    E::register(&mut registry);
    registry
        .schemas
        .get(E::name().as_ref())
        .map(|schema| {
            schema
                .enum_items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The wire text of a value of an enumeration.
pub fn enum_text<E: ToJSON>(value: &E) -> Option<String> {
    value.to_json().and_then(|v| v.as_str().map(str::to_owned))
}

/// An HTTP method of `E`, accepted in any letter case and stored upper case.
pub fn upper_case_one_of<E: ParseFromJSON + ToJSON>(value: Value) -> Result<String, String> {
    let Value::String(raw) = value else {
        return Err(format!("must be a string, not {}", json_type(&value)));
    };
    one_of::<E>(Value::String(raw.trim().to_uppercase()))
}

// The patterns below are also written, letter for letter, on the request fields of the OpenAPI
// document (a `#[oai(validator(pattern))]` needs a literal); a test compares the two. They are
// written so that JSON Schema, Python and Rust read them alike: ASCII classes only, no `\s`.

/// An email address: a local part of 1 to 64 of the characters RFC 5322 allows unquoted, `@`,
/// and a domain of dot-separated labels of letters, digits and inner hyphens (no IP literals,
/// no internationalized domain: send its `xn--` form).
pub const EMAIL_PATTERN: &str = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";

/// An absolute `http` or `https` URL in its ASCII form: a host that is an IPv4 address, a
/// bracketed IPv6 address or a DNS name whose last label starts with a letter (so `localhost`
/// works), an optional port, then printable ASCII. No user name or password: credentials do not
/// belong in a base URL. [`http_url`] accepts internationalised host names too, which JSON
/// Schema cannot describe portably; this pattern is their ASCII (`xn--`) form.
pub const HTTP_URL_PATTERN: &str = r"^https?://(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}|\[(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}|(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}|(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}|:(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:)|(?:[0-9A-Fa-f]{1,4}:){6}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}|::(?:[0-9A-Fa-f]{1,4}:){0,5}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})\]|(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*)(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(?:[/?#][!-~]*)?$";

static EMAIL: LazyLock<Regex> = LazyLock::new(|| Regex::new(EMAIL_PATTERN).expect("valid"));

/// A valid email address of at most 254 characters, as [`EMAIL_PATTERN`] says.
pub fn email(value: Value) -> Result<String, String> {
    let address = text(1, 254)(value)?;
    if EMAIL.is_match(&address) && address.validate_email() {
        Ok(address)
    } else {
        Err("must be a valid email address".to_owned())
    }
}

/// An absolute `http` or `https` URL of at most 2048 characters, as the WHATWG URL standard
/// parses it (the `url` crate): bracketed IPv6 and internationalised host names included. Kept
/// exactly as sent (trimmed), not normalised.
///
/// Refused beyond what the parser refuses: another scheme, a URL without `//` and a host, white
/// space or control characters anywhere (the parser would quietly drop or encode them), other
/// than ASCII after the host, a user name or password, a host name that is no DNS name, and an
/// IPv4 address not written as four decimal numbers (`http://1.2.3` is 1.2.0.3 to the parser,
/// and to no reader).
pub fn http_url(value: Value) -> Result<String, String> {
    let raw = text(1, 2048)(value)?;
    let refused = || "must be an absolute http or https URL".to_owned();
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be an absolute http or https URL without spaces".to_owned());
    }
    let Some(rest) = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
    else {
        return Err(refused());
    };
    let url = Url::parse(&raw).map_err(|_| refused())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".to_owned());
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if !rest[authority_end..].is_ascii() {
        return Err("must be ASCII after the host: percent-encode other characters".to_owned());
    }
    let written_host = rest[..authority_end].split(':').next().unwrap_or_default();
    match url.host() {
        Some(Host::Ipv4(address)) if written_host != address.to_string() => Err(refused()),
        Some(Host::Domain(name)) if !DNS_NAME.is_match(name) => Err(refused()),
        Some(_) => Ok(raw),
        None => Err(refused()),
    }
}

/// A DNS name in its ASCII form (what an internationalised name becomes): labels of letters,
/// digits and hyphens, the last starting with a letter. The URL standard also takes `*`, `!`
/// and the like in a host name, which no DNS name holds.
static DNS_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*\.?$").expect("valid"));

/// A role (`owner`, `admin`, `editor`, `viewer`), case-sensitive.
pub fn role(value: Value) -> Result<Role, String> {
    let name = one_of::<RoleName>(value)?;
    Role::parse(&name).ok_or_else(|| "must be one of: owner, admin, editor, viewer".to_owned())
}

/// What a user or an API key may do, on the wire; see [`Role`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum, serde::Serialize)]
#[oai(rename = "Role", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// Also gives and takes `owner`, and deletes the organization.
    Owner,
    /// Also manages users (up to `admin`), every API key, and the organization.
    Admin,
    /// Creates, changes and deletes tools, actions, flows and execution logs.
    Editor,
    /// Reads everything of the organization.
    Viewer,
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::Owner => RoleName::Owner,
            Role::Admin => RoleName::Admin,
            Role::Editor => RoleName::Editor,
            Role::Viewer => RoleName::Viewer,
        }
    }
}

/// A path on a tool: 1 to 2048 characters, starting with `/`.
pub fn endpoint(value: Value) -> Result<String, String> {
    let path = text(1, 2048)(value)?;
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err("must start with /".to_owned())
    }
}

/// A UUID naming another row.
pub fn uuid(value: Value) -> Result<Uuid, String> {
    match value {
        Value::String(text) => {
            Uuid::try_parse(text.trim()).map_err(|_| "must be a UUID".to_owned())
        }
        other => Err(format!("must be a UUID string, not {}", json_type(&other))),
    }
}

/// A JSON object of at most `max_bytes` once serialised.
pub fn json_object(max_bytes: usize) -> impl FnOnce(Value) -> Result<Value, String> {
    move |value| {
        if !value.is_object() {
            return Err(format!("must be a JSON object, not {}", json_type(&value)));
        }
        if value.to_string().len() > max_bytes {
            return Err(format!("must be at most {} KiB", max_bytes / 1024));
        }
        Ok(value)
    }
}

/// Any JSON value, kept exactly as sent.
pub fn any_json(value: Value) -> Result<Value, String> {
    Ok(value)
}

/// A string or a JSON object, kept exactly as sent.
pub fn string_or_object(value: Value) -> Result<Value, String> {
    if value.is_string() || value.is_object() {
        Ok(value)
    } else {
        Err(format!(
            "must be a string or a JSON object, not {}",
            json_type(&value)
        ))
    }
}

/// A flow's steps: an array of at most 1000 objects, each with a non-empty string `id`, unique
/// within the flow, and a non-empty string `type`; other keys are kept as given.
pub fn steps(value: Value) -> Result<Value, String> {
    let Value::Array(steps) = &value else {
        return Err(format!("must be an array, not {}", json_type(&value)));
    };
    if steps.len() > 1000 {
        return Err("must have at most 1000 steps".to_owned());
    }
    let mut ids = HashSet::new();
    for (index, step) in steps.iter().enumerate() {
        let non_empty = |key: &str| {
            step.get(key)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        };
        if !step.is_object() {
            return Err(format!("step {index} must be an object"));
        }
        if !non_empty("id") {
            return Err(format!("step {index} must have a non-empty string id"));
        }
        if !non_empty("type") {
            return Err(format!("step {index} must have a non-empty string type"));
        }
        if !ids.insert(step["id"].as_str()) {
            return Err(format!("step {index} repeats the id of an earlier step"));
        }
    }
    Ok(value)
}

/// A flow version: a positive integer.
pub fn version(value: Value) -> Result<i32, String> {
    value
        .as_i64()
        .and_then(|v| i32::try_from(v).ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| "must be a positive integer".to_owned())
}

/// An organization's `retentionDays`: 0 (keep for ever) to [`MAX_RETENTION_DAYS`].
pub fn retention_days(value: Value) -> Result<i32, String> {
    value
        .as_i64()
        .filter(|days| (0..=i64::from(MAX_RETENTION_DAYS)).contains(days))
        .and_then(|days| i32::try_from(days).ok())
        .ok_or_else(|| format!("must be an integer from 0 (keep for ever) to {MAX_RETENTION_DAYS}"))
}

/// An organization's `allowedEmailDomains`: at most 50 lower-case ASCII domain names
/// (`*.acme.com` for subdomains).
pub fn email_domains(value: Value) -> Result<Vec<String>, String> {
    let Value::Array(entries) = value else {
        return Err("must be an array of domain names".to_owned());
    };
    if entries.len() > email_domains::MAX_ENTRIES {
        return Err(format!(
            "must hold at most {} domain names",
            email_domains::MAX_ENTRIES
        ));
    }
    entries
        .iter()
        .map(|entry| match entry {
            Value::String(entry) => email_domains::checked_entry(entry),
            _ => Err("must hold domain names as strings".to_owned()),
        })
        .collect()
}

/// A tool's `credentials`: an object of at most 16 KiB; its members are checked against the
/// tool's `authType` by the service. No message repeats a value.
pub fn credentials_object(value: Value) -> Result<serde_json::Map<String, Value>, String> {
    match value {
        Value::Object(object) if value_size(&object) <= 16 * 1024 => Ok(object),
        Value::Object(_) => Err("must be at most 16 KiB".to_owned()),
        _ => Err("must be an object".to_owned()),
    }
}

fn value_size(object: &serde_json::Map<String, Value>) -> usize {
    serde_json::to_vec(object).map_or(usize::MAX, |bytes| bytes.len())
}
