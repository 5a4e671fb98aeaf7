//! Where the database URLs come from: the environment, or AWS Secrets Manager.
//!
//! With `USE_AWS_SECRETS` on (the default in production), the secret `AWS_SECRET_NAME` is read
//! once at start-up with the AWS SDK's default credential chain: a JSON object with
//! `DATABASE_URL` and, optionally, `DIRECT_URL`. In production a secret that cannot be read stops
//! start-up; in development the environment (and then the SQLite default) serves instead, with a
//! warning. No message ever carries a URL.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::config::SharedHttpClient;
use aws_sdk_secretsmanager::error::SdkError;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use serde_json::{Map, Value};

use crate::config::{
    checked_admin_token, checked_database_url, AppEnv, AwsSecretSettings, ConfigError,
    CredentialsKeys, Secret, Settings,
};

/// The embedded database `cargo run` serves on when nothing is configured.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tolstoy.db?mode=rwc";

/// The two connections the server uses: pooled for queries, direct for migrations; and the
/// admin token when the AWS secret holds one.
#[derive(Clone, Debug)]
pub struct DatabaseUrls {
    /// `DATABASE_URL`: the pooled connection (through PgBouncer on Neon) used for queries.
    pub pooled: Secret,
    /// `DIRECT_URL`: straight to the database, used for migrations.
    pub direct: Secret,
    /// The secret's `ADMIN_TOKEN`, which wins over the environment's; `None` from the
    /// environment (`Settings` holds that one).
    pub admin_token: Option<Secret>,
    /// The secret's `CREDENTIALS_KEYS` or `CREDENTIALS_KEY`, which win over the environment's.
    pub credentials_keys: Option<CredentialsKeys>,
}

impl DatabaseUrls {
    pub fn is_sqlite(&self) -> bool {
        self.pooled.expose().starts_with("sqlite:")
    }
}

/// Why the secret could not serve; names the secret and the key, never a value.
#[derive(Debug, thiserror::Error)]
#[error("AWS Secrets Manager secret `{secret}`: {reason}")]
pub struct SecretError {
    pub secret: String,
    pub reason: String,
}

/// Why the database URLs could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UrlsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Resolves the URLs for `settings`: from the secret when configured, else the environment.
pub async fn database_urls(settings: &Settings) -> Result<DatabaseUrls, UrlsError> {
    let Some(aws) = &settings.aws_secrets else {
        return Ok(urls_from_environment(settings)?);
    };
    match read_secret(aws).await {
        Ok(urls) => {
            if settings.database_url.is_some() {
                tracing::warn!("DATABASE_URL from the environment is ignored: the secret wins");
            }
            tracing::info!(secret = %aws.secret_name, "database URLs read from AWS Secrets Manager");
            Ok(urls)
        }
        Err(err) if settings.app_env == AppEnv::Development => {
            tracing::warn!(error = %err, "falling back to the environment (development only)");
            Ok(urls_from_environment(settings)?)
        }
        Err(err) => Err(err.into()),
    }
}

/// `DATABASE_URL` and `DIRECT_URL` from the environment. In production there is no default: a
/// missing URL stops start-up.
pub fn urls_from_environment(settings: &Settings) -> Result<DatabaseUrls, ConfigError> {
    let pooled = match (&settings.database_url, settings.app_env) {
        (Some(url), _) => url.clone(),
        (None, AppEnv::Development) => Secret::new(DEFAULT_DATABASE_URL),
        (None, AppEnv::Production) => {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "is required when APP_ENV=production (or read it from AWS Secrets Manager \
                 with USE_AWS_SECRETS=true)",
            ))
        }
    };
    let direct = settings
        .direct_url
        .clone()
        .unwrap_or_else(|| pooled.clone());
    Ok(DatabaseUrls {
        pooled,
        direct,
        admin_token: None,
        credentials_keys: None,
    })
}

/// The HTTP client the AWS SDK sends with: rustls with ring, the one TLS stack of the binary
/// (the SDK's default would add aws-lc and a second hyper).
pub fn aws_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Reads and checks the secret, within `aws.timeout` in all (credentials, retries, backoff).
async fn read_secret(aws: &AwsSecretSettings) -> Result<DatabaseUrls, SecretError> {
    let fail = |reason: String| SecretError {
        secret: aws.secret_name.clone(),
        reason,
    };
    let text = tokio::time::timeout(aws.timeout, fetch_secret_string(aws))
        .await
        .map_err(|_| fail(format!("no answer within {} s", aws.timeout.as_secs())))?
        .map_err(fail)?;
    parse_secret(&text).map_err(fail)
}

async fn fetch_secret_string(aws: &AwsSecretSettings) -> Result<String, String> {
    let retries = RetryConfig::standard()
        .with_max_attempts(4)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(2));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(aws.timeout)
        .build();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(aws_http_client())
        .retry_config(retries)
        .timeout_config(timeouts)
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let output = client
        .get_secret_value()
        .secret_id(&aws.secret_name)
        .send()
        .await
        .map_err(|err| match &err {
            SdkError::ServiceError(service) if service.err().is_resource_not_found_exception() => {
                "does not exist (or this identity may not read it)".to_owned()
            }
            _ => format!("cannot be read: {}", causes(&err)),
        })?;
    output
        .secret_string()
        .map(str::to_owned)
        .ok_or_else(|| "holds no SecretString (a binary secret is not supported)".to_owned())
}

/// `err` and its sources, one after another; the SDK's own Debug dump says the same at length.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// The secret's JSON: `DATABASE_URL` required, `DIRECT_URL` optional (defaults to the former),
/// `ADMIN_TOKEN`, `CREDENTIALS_KEYS` and `CREDENTIALS_KEY` optional.
fn parse_secret(text: &str) -> Result<DatabaseUrls, String> {
    // serde_json's message names a line and column, never the text itself.
    let object: Map<String, Value> = serde_json::from_str(text).map_err(|err| {
        format!(
            "is not a JSON object with DATABASE_URL (malformed at line {}, column {})",
            err.line(),
            err.column()
        )
    })?;
    let url = |key: &'static str| -> Result<Option<Secret>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(url)) => checked_database_url(key, url.clone())
                .map(Some)
                .map_err(|err| format!("key {key} {}", err.message)),
            Some(_) => Err(format!("key {key} must be a string")),
        }
    };
    let pooled = url("DATABASE_URL")?.ok_or("has no key DATABASE_URL")?;
    let direct = url("DIRECT_URL")?.unwrap_or_else(|| pooled.clone());
    let admin_token = match object.get("ADMIN_TOKEN") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(
            checked_admin_token(token.trim())
                .map_err(|err| format!("key ADMIN_TOKEN {}", err.message))?,
        ),
        Some(_) => return Err("key ADMIN_TOKEN must be a string".to_owned()),
    };
    let text = |key: &str| match object.get(key) {
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
        _ => None,
    };
    for key in ["CREDENTIALS_KEYS", "CREDENTIALS_KEY"] {
        if object
            .get(key)
            .is_some_and(|value| !value.is_string() && !value.is_null())
        {
            return Err(format!("key {key} must be a string"));
        }
    }
    let credentials_keys = CredentialsKeys::from_lookup(text)
        .map_err(|err| format!("key {} {}", err.variable, err.message))?;
    Ok(DatabaseUrls {
        pooled,
        direct,
        admin_token,
        credentials_keys,
    })
}
