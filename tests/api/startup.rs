//! The `tolstoy` binary itself: configuration errors, the database-behind guard, and serving
//! on a real socket with nothing configured.

use std::process::Stdio;
use std::time::Duration;

use tolstoy::config::{AppEnv, Settings};
use tolstoy::secrets::urls_from_environment;

use crate::helpers::process::{free_port, http, temp_dir, tolstoy, wait_until_up, Server};
use crate::helpers::{Backend, TestDb};

#[test]
fn serve_with_nothing_configured_uses_the_sqlite_file_in_the_working_directory() {
    let dir = temp_dir();
    let port = free_port();
    let _server = Server(
        tolstoy(&dir)
            .env("PORT", port.to_string())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_until_up(port);
    let (status, body) =
        http(port, "POST", "/organizations", Some(r#"{"name":"Acme"}"#)).expect("POST");
    assert!(status.contains("201"), "{status} {body}");
    assert!(
        dir.join("tolstoy.db").exists(),
        "the default database is ./tolstoy.db"
    );
    let (status, _) = http(port, "GET", "/docs", None).expect("GET /docs");
    assert!(status.contains("200"), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_configuration_stops_start_up_naming_the_variable() {
    let dir = temp_dir();
    for (variable, value) in [
        ("PORT", "eighty"),
        ("APP_ENV", "staging"),
        ("DATABASE_URL", "mysql://u:hunter2@h/db"),
        ("LOG_FORMAT", "xml"),
        ("RUST_LOG", "=["),
        ("DB_MAX_CONNECTIONS", "0"),
        ("DB_ACQUIRE_TIMEOUT_SECS", "soon"),
        ("DB_STATEMENT_CACHE", "maybe"),
        ("SHUTDOWN_TIMEOUT_SECS", "-1"),
        ("USE_AWS_SECRETS", "yes please"),
        ("DB_SCHEMA", "Tolstoy; DROP SCHEMA public"),
        ("DB_SCHEMA", "pg_catalog"),
    ] {
        let output = tolstoy(&dir).env(variable, value).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {stderr}"
        );
        assert!(stderr.contains(variable), "{variable} named in: {stderr}");
        assert!(!stderr.contains("hunter2"), "no secret in: {stderr}");
    }
    let output = tolstoy(&dir)
        .env("APP_ENV", "production")
        .env("USE_AWS_SECRETS", "false")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn settings_default_to_sqlite_in_development_and_redact_urls() {
    let settings = Settings::from_lookup(|_| None).expect("defaults");
    assert_eq!(settings.app_env, AppEnv::Development);
    assert_eq!(settings.port, 3000);
    assert_eq!(settings.max_body_bytes, 1_048_576);
    assert_eq!(settings.shutdown_timeout, Duration::from_secs(20));
    assert_eq!(settings.pool.max_connections, 10);
    assert_eq!(settings.pool.min_connections, 0);
    assert_eq!(settings.pool.acquire_timeout, Duration::from_secs(5));
    assert_eq!(settings.pool.statement_timeout, Duration::from_secs(15));
    assert!(settings.pool.statement_cache);
    assert!(
        !settings.pool.test_before_acquire,
        "no ping round trip per statement"
    );
    assert!(
        settings.aws_secrets.is_none(),
        "no Secrets Manager in development"
    );
    let urls = urls_from_environment(&settings).expect("urls");
    assert_eq!(urls.pooled.expose(), "sqlite://tolstoy.db?mode=rwc");
    assert_eq!(urls.direct.expose(), urls.pooled.expose());

    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some("postgres://app:hunter2@pooler/db".into()),
        "DIRECT_URL" => Some("postgres://owner:hunter3@db/db".into()),
        _ => None,
    })
    .expect("settings");
    let urls = urls_from_environment(&settings).expect("urls");
    assert_eq!(urls.direct.expose(), "postgres://owner:hunter3@db/db");
    let printed = format!("{settings:?} {urls:?} {}", urls.pooled);
    assert!(!printed.contains("hunter"), "{printed}");
}

#[test]
fn production_reads_the_default_secret_unless_told_otherwise() {
    let production = |extra: &'static [(&'static str, &'static str)]| {
        Settings::from_lookup(move |name| {
            std::iter::once(("APP_ENV", "production"))
                .chain(extra.iter().copied())
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_owned())
        })
        .expect("settings")
    };
    let aws = production(&[])
        .aws_secrets
        .expect("on by default in production");
    assert_eq!(aws.secret_name, "tolstoy-db-secret");
    assert_eq!(aws.timeout, Duration::from_secs(10));
    let named = production(&[("AWS_SECRET_NAME", "prod/tolstoy")]);
    assert_eq!(named.aws_secrets.expect("on").secret_name, "prod/tolstoy");
    assert!(production(&[("USE_AWS_SECRETS", "false")])
        .aws_secrets
        .is_none());
}

#[test]
fn roles_prints_the_least_privilege_sql_and_refuses_odd_names() {
    let dir = temp_dir();
    let output = tolstoy(&dir)
        .args([
            "roles",
            "--database",
            "tolstoy",
            "--statement-timeout-secs",
            "7",
        ])
        .output()
        .expect("run");
    assert!(output.status.success());
    let sql = String::from_utf8_lossy(&output.stdout);
    for expected in [
        r#"CREATE ROLE "tolstoy_owner" LOGIN NOSUPERUSER"#,
        r#"CREATE ROLE "tolstoy_app" LOGIN NOSUPERUSER"#,
        r#"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "public" TO "tolstoy_app""#,
        r#"ALTER ROLE "tolstoy_app" IN DATABASE "tolstoy" SET search_path = "public""#,
        r#"ALTER DEFAULT PRIVILEGES FOR ROLE "tolstoy_owner""#,
        r#"ALTER ROLE "tolstoy_app" SET statement_timeout = 7000"#,
    ] {
        assert!(sql.contains(expected), "{expected} in:\n{sql}");
    }
    let refused = tolstoy(&dir)
        .args(["roles", "--database", "tolstoy\"; DROP DATABASE x; --"])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("the database must be a plain PostgreSQL name"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn serve_refuses_a_postgres_database_that_is_behind_and_migrates_with_the_flag() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let dir = temp_dir();
    let output = tolstoy(&dir)
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pending migration") && stderr.contains("tolstoy migrate up"),
        "{stderr}"
    );

    let status = tolstoy(&dir)
        .env("DATABASE_URL", &db.url)
        .args(["migrate", "status"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&status.stdout)
        .contains("pending m20261121_000001_create_organizations"));
    let up = tolstoy(&dir)
        .env("DIRECT_URL", &db.url)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .args(["migrate", "up"])
        .output()
        .expect("run");
    assert!(
        up.status.success(),
        "migrate uses DIRECT_URL: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    let port = free_port();
    let _server = Server(
        tolstoy(&dir)
            .env("DATABASE_URL", &db.url)
            .env("PORT", port.to_string())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_until_up(port);
    let (status, _) = http(port, "GET", "/ready", None).expect("ready");
    assert!(status.contains("200"), "{status}");
    drop(_server);
    db.destroy().await;
    let _ = std::fs::remove_dir_all(dir);
}
