//! The `tolstoy` binary itself: configuration errors, the database-behind guard, and serving
//! on a real socket with nothing configured.

use std::process::Stdio;

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
