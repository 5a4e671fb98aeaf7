//! Database URLs from AWS Secrets Manager, read over HTTP from a local emulator (moto) by the
//! real binary: served on the secret's database; every bad secret stops start-up with a message
//! that names it; no secret value in any log line.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use sea_orm::{ConnectionTrait, Database, Statement};
use uuid::Uuid;

use crate::helpers::process::{
    free_port, http, http_with, temp_dir, tolstoy, wait_until_up, Server,
};
use crate::helpers::{Backend, TestDb};

fn endpoint() -> String {
    std::env::var("TEST_AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_AWS_ENDPOINT_URL is not set, so the Secrets Manager cases cannot run. Run \
             `scripts/test.sh` (it starts `moto_server`), or start `moto_server -p PORT` (PyPI \
             `moto[server]`) and set TEST_AWS_ENDPOINT_URL=http://127.0.0.1:PORT."
        )
    })
}

/// Stores `value` as the secret `name` in the emulator.
async fn put_secret(name: &str, value: &str) {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(tolstoy::secrets::aws_http_client())
        .endpoint_url(endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("the emulator stores the secret");
}

/// The binary in production, reading `secret` from `endpoint` with dummy credentials and every
/// log line at trace level (into `log`).
fn production_tolstoy(dir: &std::path::Path, endpoint: &str, secret: &str, log: &File) -> Command {
    let mut command = tolstoy(dir);
    command
        .env("APP_ENV", "production")
        .env("AWS_SECRET_NAME", secret)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "trace")
        .stdout(log.try_clone().expect("log file"))
        .stderr(log.try_clone().expect("log file"));
    command
}

fn unique_secret_name() -> String {
    format!("tolstoy/test/{}", Uuid::now_v7().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_on_the_database_named_in_the_secret_and_logs_no_secret() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    // Loopback trusts every password; this one only has to be recognisable in the logs.
    let password = format!("pw-{}", Uuid::now_v7().simple());
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_password(Some(&password)).expect("password");
    let secret = unique_secret_name();
    // Production is keys mode: creating an organization takes the admin token, from the secret.
    let admin_token = format!("admin-{}", Uuid::now_v7().simple());
    put_secret(
        &secret,
        &serde_json::json!({ "DATABASE_URL": url.as_str(), "DIRECT_URL": url.as_str(), "ADMIN_TOKEN": admin_token })
            .to_string(),
    )
    .await;

    let dir = temp_dir();
    let log_path = dir.join("server.log");
    let log = File::create(&log_path).expect("log file");
    let port = free_port();
    let server = Server(
        production_tolstoy(&dir, &endpoint(), &secret, &log)
            // Ignored: the secret wins over the environment.
            .env(
                "DATABASE_URL",
                format!("postgres://nobody:{password}@127.0.0.1:1/none"),
            )
            .env("PORT", port.to_string())
            .args(["serve", "--migrate"])
            .spawn()
            .expect("spawn"),
    );
    wait_until_up(port);
    let organization = Some(r#"{"name":"From the secret"}"#);
    let (status, _) = http(port, "POST", "/organizations", organization).expect("POST");
    assert!(
        status.contains("401"),
        "keys mode needs the admin token: {status}"
    );
    let bearer = format!("Bearer {admin_token}");
    let (status, _, body) = http_with(
        port,
        "POST",
        "/organizations",
        organization,
        &[("Authorization", bearer.as_str())],
    )
    .expect("POST");
    assert!(status.contains("201"), "{status} {body}");
    drop(server);

    let stored = Database::connect(&db.url).await.expect("direct");
    let row = stored
        .query_one_raw(Statement::from_string(
            stored.get_database_backend(),
            "SELECT count(*) AS n FROM organizations WHERE name = 'From the secret'",
        ))
        .await
        .expect("query")
        .expect("row");
    assert_eq!(
        row.try_get::<i64>("", "n").expect("n"),
        1,
        "the row is in the secret's database"
    );
    stored.close().await.ok();

    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(
        logs.contains("database URLs read from AWS Secrets Manager"),
        "{logs}"
    );
    assert!(!logs.contains(&password), "a secret value reached the logs");
    assert!(
        !logs.contains(&admin_token),
        "the admin token reached the logs"
    );
    db.destroy().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_secret_stops_start_up_naming_the_secret_and_the_key_never_a_value() {
    let password = format!("pw-{}", Uuid::now_v7().simple());
    let missing_key = unique_secret_name();
    put_secret(
        &missing_key,
        &format!(r#"{{"DIRECT_URL":"postgres://owner:{password}@db/x"}}"#),
    )
    .await;
    let malformed = unique_secret_name();
    put_secret(
        &malformed,
        &format!(r#"{{"DATABASE_URL":"postgres://app:{password}@db/x""#),
    )
    .await;
    let not_a_url = unique_secret_name();
    put_secret(
        &not_a_url,
        &format!(r#"{{"DATABASE_URL":"mysql://app:{password}@db/x"}}"#),
    )
    .await;
    let unreachable = format!("http://127.0.0.1:{}", free_port());

    let cases = [
        (unique_secret_name(), endpoint(), "does not exist"),
        (missing_key, endpoint(), "has no key DATABASE_URL"),
        (
            malformed,
            endpoint(),
            "is not a JSON object with DATABASE_URL (malformed at line 1",
        ),
        (
            not_a_url,
            endpoint(),
            "key DATABASE_URL must be a postgres://",
        ),
        (unique_secret_name(), unreachable, "cannot be read"),
    ];
    let dir = temp_dir();
    for (secret, endpoint, reason) in cases {
        let log_path = dir.join("start.log");
        let log = File::create(&log_path).expect("log file");
        let started = Instant::now();
        let status = production_tolstoy(&dir, &endpoint, &secret, &log)
            .env("AWS_SECRETS_TIMEOUT_SECS", "4")
            .stdin(Stdio::null())
            .status()
            .expect("run");
        let output = std::fs::read_to_string(&log_path).expect("output");
        assert_eq!(status.code(), Some(2), "{reason}: {output}");
        assert!(
            output.contains(&format!("AWS Secrets Manager secret `{secret}`: {reason}")),
            "expected `{reason}` naming {secret} in: {output}"
        );
        assert!(
            !output.contains(&password),
            "a secret value reached the output: {output}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{reason}: start-up gave up only after {:?}",
            started.elapsed()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn in_development_an_unreadable_secret_falls_back_to_the_environment() {
    let dir = temp_dir();
    let log_path = dir.join("server.log");
    let log = File::create(&log_path).expect("log file");
    let port = free_port();
    let server = Server(
        production_tolstoy(&dir, &endpoint(), &unique_secret_name(), &log)
            .env("APP_ENV", "development")
            .env("USE_AWS_SECRETS", "true")
            .env("RUST_LOG", "info")
            .env("PORT", port.to_string())
            .spawn()
            .expect("spawn"),
    );
    wait_until_up(port);
    let (status, _) = http(port, "GET", "/ready", None).expect("ready");
    assert!(status.contains("200"), "{status}");
    drop(server);
    assert!(
        dir.join("tolstoy.db").exists(),
        "served on the SQLite default"
    );
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(
        logs.contains("falling back to the environment (development only)"),
        "{logs}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
