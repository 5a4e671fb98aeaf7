//! Settings read once from the environment (and `.env`), validated before anything starts.
//!
//! A bad value stops start-up with a message that names the variable and never prints a secret.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::identity::rate_limit::{TrustedProxies, DEFAULT_AUTH_FAILURES_PER_MINUTE};

/// The largest request body accepted when `MAX_BODY_BYTES` is not set (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_048_576;

/// The secret read when `USE_AWS_SECRETS` is on and `AWS_SECRET_NAME` is not set.
pub const DEFAULT_AWS_SECRET_NAME: &str = "tolstoy-db-secret";

/// Whether the server runs for a developer or in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// How log lines are written: `pretty` for people, `json` for log collectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A value that must never reach a log line or an error body: `Debug` and `Display` redact it,
/// and its memory is wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself, for the one place that needs it (opening a connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A configuration value that cannot be used; the message names the variable, never its value.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

/// Everything the server needs to start, checked once.
#[derive(Clone, Debug)]
pub struct Settings {
    pub app_env: AppEnv,
    /// `DATABASE_URL` as given; `None` means "use the default for this environment".
    pub database_url: Option<Secret>,
    /// `DIRECT_URL` as given; `None` means "the same as `DATABASE_URL`".
    pub direct_url: Option<Secret>,
    pub host: IpAddr,
    pub port: u16,
    pub max_body_bytes: usize,
    pub log_filter: String,
    pub log_format: LogFormat,
    /// `AUTO_MIGRATE`: apply pending migrations on PostgreSQL before serving.
    pub auto_migrate: bool,
    /// `SHUTDOWN_TIMEOUT_SECS`: how long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    pub pool: PoolSettings,
    pub aws_secrets: Option<AwsSecretSettings>,
    pub identity: IdentitySettings,
    pub runs: RunSettings,
    pub retention: RetentionSettings,
    /// `CREDENTIALS_KEYS` (ids and keys, the first seals) or `CREDENTIALS_KEY` (one key): the
    /// variable it came from and its text, checked already. The AWS secret's wins.
    pub credentials_keys: Option<CredentialsKeys>,
}

/// The text of the credentials keys and the variable (or secret key) it came from.
#[derive(Clone, Debug)]
pub struct CredentialsKeys {
    pub variable: &'static str,
    pub text: Secret,
}

impl CredentialsKeys {
    /// `CREDENTIALS_KEYS` when given, else `CREDENTIALS_KEY`, checked by parsing them.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let found = ["CREDENTIALS_KEYS", "CREDENTIALS_KEY"]
            .into_iter()
            .find_map(|variable| get(variable).map(|text| (variable, text)));
        let Some((variable, text)) = found else {
            return Ok(None);
        };
        let keys = Self {
            variable,
            text: Secret::new(text),
        };
        keys.keyring()?;
        Ok(Some(keys))
    }

    /// The keyring these keys make.
    pub fn keyring(&self) -> Result<crate::credentials::Keyring, ConfigError> {
        crate::credentials::Keyring::parse(self.variable, &self.text)
    }
}

/// How this process works runs (see API.md, Runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSettings {
    /// `WORKERS`: runs this process works at once; 0 for an API-only process.
    pub workers: usize,
    /// `RUN_LEASE_SECS`: how long a claim holds a run without renewal; a dead worker's runs are
    /// taken up again after it.
    pub lease: Duration,
    /// `RUN_TIMEOUT_SECS`: a run that has not finished this long after it started is failed.
    pub run_timeout: Duration,
    /// `RUN_MAX_RESPONSE_BYTES`: the largest answer a step accepts.
    pub max_response_bytes: usize,
    /// `OUTBOUND_ALLOW_PRIVATE`: steps may call loopback and private addresses.
    pub allow_private: bool,
}

/// How long execution logs and finished runs are kept (see API.md, Retention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    /// `RETENTION_DAYS`: kept this many days unless the organization sets its own; 0: for ever.
    pub days: u32,
    /// `RETENTION_INTERVAL_SECS`: the pause between two prunes of a running process.
    pub interval: Duration,
}

/// The longest retention an organization or `RETENTION_DAYS` may set: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// How tenant callers prove who they are (`AUTH_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// `X-Org-ID` + `X-User-ID` name the caller (development, or behind a trusted gateway); an
    /// API key is accepted too, and then wins.
    Headers,
    /// Every tenant call carries `Authorization: Bearer <key>`.
    Keys,
}

/// The shortest admin token accepted.
pub const ADMIN_TOKEN_MIN_CHARS: usize = 32;

/// Identity and its limits.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// `AUTH_MODE`: `headers` (the default outside production) or `keys`.
    pub mode: AuthMode,
    /// `ADMIN_TOKEN`: the platform operator's bearer token, at least 32 characters; the AWS
    /// secret's `ADMIN_TOKEN` key wins when there is one. Unset: no platform powers.
    pub admin_token: Option<Secret>,
    /// `SIGNUP=open`: `POST /signup` needs no credentials (default `closed`: the admin token).
    pub signup_open: bool,
    /// `AUTH_FAILURES_PER_MINUTE`: failed authentications allowed per client address.
    pub auth_failures_per_minute: NonZeroU32,
    /// `RATE_LIMIT_PER_ORG`: requests per second per organization; unset = no limit.
    pub rate_limit_per_org: Option<NonZeroU32>,
    /// `TRUSTED_PROXIES`: reverse proxies whose `X-Forwarded-For` names the client; none by
    /// default.
    pub trusted_proxies: TrustedProxies,
    /// `METRICS_TOKEN`: the bearer token `/metrics` asks for; unset: it is open.
    pub metrics_token: Option<Secret>,
}

/// How the pooled connection behaves; the defaults suit a small Neon compute (0.25 CU, about
/// 100 server connections shared by everything that connects to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// `DB_MAX_CONNECTIONS`: the most connections this process holds.
    pub max_connections: u32,
    /// `DB_MIN_CONNECTIONS`: connections kept open when idle; 0 lets Neon scale to zero.
    pub min_connections: u32,
    /// `DB_ACQUIRE_TIMEOUT_SECS`: how long a request waits for a connection before it is
    /// answered 503; also bounds opening a new connection.
    pub acquire_timeout: Duration,
    /// `DB_IDLE_TIMEOUT_SECS`: an idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_SECS`: how long the server waits for one statement before it
    /// answers 503 (the `tolstoy roles` SQL sets the same limit on the database side).
    pub statement_timeout: Duration,
    /// `DB_STATEMENT_CACHE`: cache prepared statements per connection (the default). Turn it
    /// off behind a transaction-mode pooler without prepared-statement support (PgBouncer
    /// before 1.21); see `db::Pool`.
    pub statement_cache: bool,
    /// `DB_TEST_BEFORE_ACQUIRE`: check each connection with a round trip as it leaves the
    /// pool (off by default: it doubles the round trips of a request; a connection that died
    /// while idle fails its statement instead, is dropped, and that request gets a 503).
    pub test_before_acquire: bool,
    /// `DB_SCHEMA`: the PostgreSQL schema that holds the tables (default `public`). Migrations
    /// create it and put everything there; the server finds the tables through its role's
    /// `search_path` and refuses to start when that leads elsewhere. SQLite ignores it.
    pub schema: String,
}

/// The schema of `DB_SCHEMA` unset.
pub const DEFAULT_DB_SCHEMA: &str = "public";

/// `schema` if it may be `DB_SCHEMA`: a plain PostgreSQL name, not one PostgreSQL reserves.
pub fn checked_schema(schema: &str) -> Result<&str, ConfigError> {
    let refused = |message: &str| Err(ConfigError::new("DB_SCHEMA", message));
    if crate::database_roles::plain_name("DB_SCHEMA", schema).is_err() {
        return refused(
            "must be a plain PostgreSQL name: lower-case letters, digits and _, not starting \
             with a digit, at most 63 bytes",
        );
    }
    if schema.starts_with("pg_") || schema == "information_schema" {
        return refused("names a schema that PostgreSQL reserves for itself");
    }
    Ok(schema)
}

/// Where the database URLs come from when AWS Secrets Manager is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsSecretSettings {
    /// `AWS_SECRET_NAME`: the secret's name or ARN.
    pub secret_name: String,
    /// `AWS_SECRETS_TIMEOUT_SECS`: the overall limit for reading it, retries included.
    pub timeout: Duration,
}

impl Settings {
    /// Reads the process environment (after `.env` has been loaded into it).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can supply their own environment.
    /// An empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let app_env = match get("APP_ENV").as_deref().map(str::trim) {
            None | Some("development") => AppEnv::Development,
            Some("production") => AppEnv::Production,
            Some(_) => {
                return Err(ConfigError::new(
                    "APP_ENV",
                    "must be `development` or `production`",
                ))
            }
        };
        let database_url = get("DATABASE_URL")
            .map(|url| checked_database_url("DATABASE_URL", url))
            .transpose()?;
        let direct_url = get("DIRECT_URL")
            .map(|url| checked_database_url("DIRECT_URL", url))
            .transpose()?;
        let host = match get("HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(host) if host.trim() == "localhost" => IpAddr::from([127, 0, 0, 1]),
            Some(host) => host
                .trim()
                .parse()
                .map_err(|_| ConfigError::new("HOST", "must be an IP address such as 0.0.0.0"))?,
        };
        let port = parse_number(&get, "PORT", 3000u16, "must be a port number (0 to 65535)")?;
        let max_body_bytes = parse_number(
            &get,
            "MAX_BODY_BYTES",
            DEFAULT_MAX_BODY_BYTES,
            "must be a positive number of bytes",
        )?;
        if max_body_bytes == 0 {
            return Err(ConfigError::new(
                "MAX_BODY_BYTES",
                "must be a positive number of bytes",
            ));
        }
        let log_filter = get("RUST_LOG").unwrap_or_else(|| "info".to_owned());
        let log_format = match get("LOG_FORMAT").as_deref().map(str::trim) {
            None if app_env == AppEnv::Production => LogFormat::Json,
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(ConfigError::new("LOG_FORMAT", "must be `pretty` or `json`")),
        };
        let auto_migrate = parse_bool(&get, "AUTO_MIGRATE", false)?;
        let shutdown_timeout = parse_seconds(&get, "SHUTDOWN_TIMEOUT_SECS", 20)?;
        let pool = PoolSettings {
            max_connections: parse_positive(&get, "DB_MAX_CONNECTIONS", 10)?,
            min_connections: parse_number(
                &get,
                "DB_MIN_CONNECTIONS",
                0,
                "must be a whole number of connections",
            )?,
            acquire_timeout: parse_seconds(&get, "DB_ACQUIRE_TIMEOUT_SECS", 5)?,
            idle_timeout: parse_seconds(&get, "DB_IDLE_TIMEOUT_SECS", 300)?,
            statement_timeout: parse_seconds(&get, "DB_STATEMENT_TIMEOUT_SECS", 15)?,
            statement_cache: parse_bool(&get, "DB_STATEMENT_CACHE", true)?,
            test_before_acquire: parse_bool(&get, "DB_TEST_BEFORE_ACQUIRE", false)?,
            schema: match get("DB_SCHEMA") {
                None => DEFAULT_DB_SCHEMA.to_owned(),
                Some(schema) => checked_schema(schema.trim())?.to_owned(),
            },
        };
        if pool.min_connections > pool.max_connections {
            return Err(ConfigError::new(
                "DB_MIN_CONNECTIONS",
                "must not exceed DB_MAX_CONNECTIONS",
            ));
        }
        let use_aws_secrets = parse_bool(&get, "USE_AWS_SECRETS", app_env == AppEnv::Production)?;
        let aws_secrets = if use_aws_secrets {
            Some(AwsSecretSettings {
                secret_name: get("AWS_SECRET_NAME").map_or_else(
                    || DEFAULT_AWS_SECRET_NAME.to_owned(),
                    |name| name.trim().to_owned(),
                ),
                timeout: parse_seconds(&get, "AWS_SECRETS_TIMEOUT_SECS", 10)?,
            })
        } else {
            None
        };

        let identity = IdentitySettings {
            mode: match get("AUTH_MODE").as_deref().map(str::trim) {
                None if app_env == AppEnv::Production => AuthMode::Keys,
                None | Some("headers") => AuthMode::Headers,
                Some("keys") => AuthMode::Keys,
                Some(_) => {
                    return Err(ConfigError::new("AUTH_MODE", "must be `headers` or `keys`"))
                }
            },
            admin_token: get("ADMIN_TOKEN")
                .map(|token| checked_admin_token(token.trim()))
                .transpose()?,
            signup_open: match get("SIGNUP").as_deref().map(str::trim) {
                None | Some("closed") => false,
                Some("open") => true,
                Some(_) => return Err(ConfigError::new("SIGNUP", "must be `open` or `closed`")),
            },
            // parse_positive refuses 0, so the fallback is never taken.
            auth_failures_per_minute: NonZeroU32::new(parse_positive(
                &get,
                "AUTH_FAILURES_PER_MINUTE",
                DEFAULT_AUTH_FAILURES_PER_MINUTE.get(),
            )?)
            .unwrap_or(DEFAULT_AUTH_FAILURES_PER_MINUTE),
            rate_limit_per_org: get("RATE_LIMIT_PER_ORG")
                .map(|_| parse_positive(&get, "RATE_LIMIT_PER_ORG", 1))
                .transpose()?
                .and_then(NonZeroU32::new),
            trusted_proxies: TrustedProxies::parse(&get("TRUSTED_PROXIES").unwrap_or_default())
                .map_err(|message| ConfigError::new("TRUSTED_PROXIES", message))?,
            metrics_token: get("METRICS_TOKEN").map(|token| Secret::new(token.trim())),
        };

        let runs = RunSettings {
            workers: parse_number(&get, "WORKERS", 4, "must be a whole number of workers")?,
            lease: parse_seconds(&get, "RUN_LEASE_SECS", 30)?,
            run_timeout: parse_seconds(&get, "RUN_TIMEOUT_SECS", 3600)?,
            max_response_bytes: parse_positive(&get, "RUN_MAX_RESPONSE_BYTES", 1_048_576)? as usize,
            allow_private: parse_bool(
                &get,
                "OUTBOUND_ALLOW_PRIVATE",
                app_env == AppEnv::Development,
            )?,
        };

        let retention = RetentionSettings {
            days: parse_number(&get, "RETENTION_DAYS", 30, RETENTION_DAYS_MESSAGE)?,
            interval: parse_seconds(&get, "RETENTION_INTERVAL_SECS", 3600)?,
        };
        if retention.days > MAX_RETENTION_DAYS {
            return Err(ConfigError::new("RETENTION_DAYS", RETENTION_DAYS_MESSAGE));
        }

        Ok(Self {
            app_env,
            database_url,
            direct_url,
            host,
            port,
            max_body_bytes,
            log_filter,
            log_format,
            auto_migrate,
            shutdown_timeout,
            pool,
            aws_secrets,
            identity,
            runs,
            retention,
            credentials_keys: CredentialsKeys::from_lookup(get)?,
        })
    }
}

const RETENTION_DAYS_MESSAGE: &str =
    "must be a whole number of days from 0 (keep for ever) to 3650";

fn parse_number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
    message: &str,
) -> Result<T, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(variable, message)),
    }
}

fn parse_bool(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(variable).as_deref().map(str::trim) {
        None => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(ConfigError::new(variable, "must be `true` or `false`")),
    }
}

fn parse_positive(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u32,
) -> Result<u32, ConfigError> {
    const MESSAGE: &str = "must be a positive whole number";
    match parse_number(get, variable, default, MESSAGE)? {
        0 => Err(ConfigError::new(variable, MESSAGE)),
        value => Ok(value),
    }
}

fn parse_seconds(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    const MESSAGE: &str = "must be a positive whole number of seconds";
    match parse_number(get, variable, default, MESSAGE)? {
        0 => Err(ConfigError::new(variable, MESSAGE)),
        seconds => Ok(Duration::from_secs(seconds)),
    }
}

/// An admin token long enough to resist guessing; the message never shows it.
pub fn checked_admin_token(token: &str) -> Result<Secret, ConfigError> {
    if token.chars().count() < ADMIN_TOKEN_MIN_CHARS {
        return Err(ConfigError::new(
            "ADMIN_TOKEN",
            format!("must be at least {ADMIN_TOKEN_MIN_CHARS} characters"),
        ));
    }
    Ok(Secret::new(token))
}

/// Accepts the URL schemes the server can serve on, without ever echoing the URL.
pub fn checked_database_url(variable: &'static str, url: String) -> Result<Secret, ConfigError> {
    let url = url.trim();
    let supported = ["postgres://", "postgresql://", "sqlite:"];
    if supported.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(Secret::new(url))
    } else {
        Err(ConfigError::new(
            variable,
            "must be a postgres://, postgresql:// or sqlite: URL",
        ))
    }
}
