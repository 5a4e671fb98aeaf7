//! The `tolstoy` binary itself: configuration errors, the database-behind guard, and serving
//! on a real socket with nothing configured.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tolstoy::config::{AppEnv, Settings};
use tolstoy::secrets::urls_from_environment;

use crate::helpers::{Backend, TestDb};

fn tolstoy(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tolstoy"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tolstoy_test_{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A plain HTTP/1.1 exchange over a real socket; returns the status line and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/health", None).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not come up on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
