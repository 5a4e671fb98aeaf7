//! Tool credentials: checked per `authType`, never returned, sealed at rest, put on the
//! executor's calls (each `authType`, OAuth 2 tokens fetched once and refreshed), redacted from
//! what a run stores, refused when tampered with, and re-sealed under a new key.

use std::time::{Duration, Instant};

use entity::tool;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::{json, Value};

use crate::helpers::process::{free_port, http_with, temp_dir, wait_until_up};
use crate::helpers::target::{Target, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET};
use crate::helpers::{wait_for, Caller, TestApp, TEST_CREDENTIALS_KEY};
use crate::on_both_backends;
use crate::recovery::spawn;
use crate::runs::{action, finished, flow, logs, start, workers};

const API_KEY: &str = "ak-5ecret+value/1=";
const BEARER: &str = "bearer-5ecret-value-2";
const PASSWORD: &str = "basic-5ecret-value-3";

/// Creates a tool of `auth_type` with `credentials` on `base_url`; returns its body.
async fn tool_with(
    app: &TestApp,
    caller: &Caller,
    base_url: &str,
    auth_type: &str,
    credentials: Value,
) -> Value {
    let reply = app
        .post_as(
            caller,
            "/tools",
            &json!({
                "name": format!("{auth_type} {}", uuid::Uuid::now_v7()),
                "baseUrl": base_url, "authType": auth_type, "credentials": credentials,
            }),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body
}

/// A one-step flow calling `GET endpoint` through `tool`.
async fn call_flow(app: &TestApp, caller: &Caller, tool: &Value, endpoint: &str) -> String {
    let tool_id = tool["id"].as_str().expect("tool id");
    let action_id = action(app, caller, tool_id, "GET", endpoint).await;
    flow(
        app,
        caller,
        json!([{"id": "call", "type": "action", "actionId": action_id,
        "retry": {"maxAttempts": 1}}]),
    )
    .await
}

async fn run_once(app: &TestApp, caller: &Caller, flow_id: &str) -> Value {
    finished(app, caller, &start(app, caller, flow_id, json!({})).await).await
}

/// Every secret of these tests, raw and in the forms it is sent in (query-encoded, Basic).
fn secret_forms() -> Vec<String> {
    use base64::Engine;
    let basic = |user: &str, password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };
    vec![
        API_KEY.to_owned(),
        url::form_urlencoded::byte_serialize(API_KEY.as_bytes()).collect(),
        BEARER.to_owned(),
        PASSWORD.to_owned(),
        basic("ann", PASSWORD),
        basic("u", PASSWORD),
        OAUTH_CLIENT_SECRET.to_owned(),
        basic(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET),
    ]
}

fn secrets_absent(text: &str) {
    for secret in secret_forms() {
        assert!(!text.contains(&secret), "{secret} leaked: {text}");
    }
}

/// No tool row holds a secret in plain text (its sealed bytes scanned, not their Debug form).
async fn rows_hold_no_secret(app: &TestApp) {
    for row in tool::Entity::find().all(&app.db).await.expect("tools") {
        let bytes = row.credentials_sealed.clone().unwrap_or_default();
        for secret in secret_forms() {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {}",
                row.id
            );
        }
        secrets_absent(&format!(
            "{} {} {}",
            row.name,
            row.base_url,
            row.credentials_key_id.unwrap_or_default()
        ));
    }
}

on_both_backends! {
    /// Credentials are checked against the tool's `authType` (400 naming the field), never
    /// returned, `hasCredentials` says whether there are some; `null` removes them, and so
    /// does a new `authType` without new ones.
    async fn credentials_are_checked_write_only_and_removable(app) {
        let caller = app.new_tenant("Acme").await;
        let created = tool_with(&app, &caller, "https://api.example.com", "bearer", json!({"token": BEARER})).await;
        assert_eq!(created["hasCredentials"], true, "{created}");
        assert!(created.get("credentials").is_none(), "{created}");
        let id = created["id"].as_str().expect("id");
        let path = format!("/tools/{id}");
        let bad = app.post_as(&caller, "/tools", &json!({"name": "x", "baseUrl": "https://a.example",
            "authType": "basic", "credentials": {"username": "u", "token": BEARER}})).await;
        assert_eq!(bad.status, 400, "{}", bad.text);
        let fields: Vec<&str> = bad.body["errors"].as_array().expect("errors").iter()
            .map(|e| e["field"].as_str().expect("field")).collect();
        assert_eq!(fields, ["credentials.token", "credentials.password"], "{}", bad.text);
        let none = app.post_as(&caller, "/tools", &json!({"name": "y", "baseUrl": "https://a.example",
            "authType": "none", "credentials": {"token": "t"}})).await;
        assert_eq!(none.status, 400, "{}", none.text);
        assert_eq!(none.body["errors"][0]["field"], "credentials", "{}", none.text);
        // A PUT without authType is checked against the stored one.
        let wrong = app.put_as(&caller, &path, &json!({"credentials": {"value": "k"}})).await;
        assert_eq!(wrong.status, 400, "{}", wrong.text);
        assert_eq!(wrong.body["errors"][0]["field"], "credentials.value", "{}", wrong.text);
        let read = app.get_as(&caller, &path).await;
        let listed = app.get_as(&caller, "/tools").await;
        for reply in [&read, &listed, &bad, &none, &wrong] {
            secrets_absent(&reply.text);
        }
        assert_eq!(read.body["hasCredentials"], true);
        let renamed = app.put_as(&caller, &path, &json!({"name": "renamed"})).await;
        assert_eq!(renamed.body["hasCredentials"], true, "{}", renamed.text);
        let removed = app.put_as(&caller, &path, &json!({"credentials": null})).await;
        assert_eq!(removed.body["hasCredentials"], false, "{}", removed.text);
        let again = app.put_as(&caller, &path, &json!({"credentials": {"token": BEARER}})).await;
        assert_eq!(again.body["hasCredentials"], true, "{}", again.text);
        let same_origin = app.put_as(&caller, &path, &json!({"baseUrl": "https://api.example.com/v2"})).await;
        assert_eq!(same_origin.body["hasCredentials"], true, "{}", same_origin.text);
        let moved = app.put_as(&caller, &path, &json!({"baseUrl": "https://collector.example.net"})).await;
        assert_eq!(moved.status, 200, "{}", moved.text);
        assert_eq!(moved.body["hasCredentials"], false, "another origin drops them: {}", moved.text);
        let back = app.put_as(&caller, &path, &json!({"baseUrl": "https://api.example.com", "credentials": {"token": BEARER}})).await;
        assert_eq!(back.body["hasCredentials"], true, "new ones may come with the move: {}", back.text);
        let switched = app.put_as(&caller, &path, &json!({"authType": "apiKey"})).await;
        assert_eq!(switched.status, 200, "{}", switched.text);
        assert_eq!(switched.body["hasCredentials"], false, "{}", switched.text);
        let row = tool::Entity::find_by_id(uuid::Uuid::parse_str(id).expect("uuid")).one(&app.db).await.expect("row").expect("tool");
        assert!(row.credentials_sealed.is_none() && row.credentials_key_id.is_none());
    }

    /// Each static `authType` arrives at the target as configured, and what the target echoes
    /// back is redacted in the run and its logs.
    async fn each_auth_type_is_put_on_the_call_and_kept_out_of_the_run(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let cases = [
            ("apiKey", json!({"value": API_KEY, "header": "X-Key"})),
            ("apiKey", json!({"value": API_KEY, "query": "api_key"})),
            ("apiKey", json!({"value": API_KEY})),
            ("bearer", json!({"token": BEARER})),
            ("basic", json!({"username": "ann", "password": PASSWORD})),
        ];
        for (n, (auth_type, credentials)) in cases.into_iter().enumerate() {
            let tool = tool_with(&app, &caller, &target.url, auth_type, credentials).await;
            let flow_id = call_flow(&app, &caller, &tool, &format!("/echo/{n}?q=1")).await;
            let run = run_once(&app, &caller, &flow_id).await;
            assert_eq!(run["status"], "completed", "{run}");
            let sent = target.received_at(&format!("/echo/{n}"));
            assert_eq!(sent.len(), 1);
            let sent = &sent[0];
            match n {
                0 => assert_eq!(sent.headers["x-key"], API_KEY),
                1 => {
                    assert_eq!(sent.query["api_key"], API_KEY);
                    assert_eq!(sent.query["q"], "1");
                }
                2 => assert_eq!(sent.headers["x-api-key"], API_KEY),
                3 => assert_eq!(sent.headers["authorization"], format!("Bearer {BEARER}")),
                _ => {
                    use base64::Engine;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("ann:{PASSWORD}"));
                    assert_eq!(sent.headers["authorization"], format!("Basic {encoded}"));
                }
            }
            let run_text = run.to_string();
            secrets_absent(&run_text);
            assert!(run_text.contains("[redacted]"), "the echo is redacted, not dropped: {run_text}");
            let logs = logs(&app, &caller, &run).await;
            secrets_absent(&Value::from(logs).to_string());
        }
        let events = app.get_as(&caller, "/runs").await;
        secrets_absent(&events.text);
    }

    /// OAuth 2: 20 steps at once cause one token request; a token the API refuses (401) is
    /// fetched anew once and the call retried; an expiring token is refreshed shortly before it runs out.
    async fn oauth2_tokens_are_fetched_once_refreshed_and_renewed_after_a_401(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[("WORKERS", "20")]).await;
        let caller = app.new_tenant("Acme").await;
        let client = |expires_in: u64| json!({
            "tokenUrl": format!("{}/oauth/token?expiresIn={expires_in}", target.url),
            "clientId": OAUTH_CLIENT_ID, "clientSecret": OAUTH_CLIENT_SECRET, "scope": "read write",
        });
        let tool = tool_with(&app, &caller, &target.url, "oauth2", client(3600)).await;
        let flow_id = call_flow(&app, &caller, &tool, "/oauth/api").await;
        let mut runs = Vec::new();
        for _ in 0..20 {
            runs.push(start(&app, &caller, &flow_id, json!({})).await);
        }
        for run in &runs {
            let run = finished(&app, &caller, run).await;
            assert_eq!(run["status"], "completed", "{run}");
            secrets_absent(&run.to_string());
            assert!(!run.to_string().contains("tok-1"), "the access token is redacted: {run}");
        }
        let token_requests = target.received_at("/oauth/token");
        assert_eq!(token_requests.len(), 1, "one token request for 20 steps");
        assert!(token_requests[0].body.as_str().unwrap_or_default().contains("scope=read+write"));
        assert_eq!(target.received_at("/oauth/api").len(), 20);

        target.revoke_tokens();
        let run = run_once(&app, &caller, &flow_id).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(target.received_at("/oauth/token").len(), 2, "a 401 fetched a new token");
        let calls = target.received_at("/oauth/api");
        assert_eq!(calls.len(), 22, "the refused call and its one retry");
        assert_eq!(calls[20].headers["authorization"], "Bearer tok-1");
        assert_eq!(calls[21].headers["authorization"], "Bearer tok-2");
        assert_eq!(logs(&app, &caller, &run).await.len(), 1, "the retry is within the attempt");

        // A 10 s token is refreshed a second before it runs out: a call at 9.3 s gets a new one
        // (and no 401), though the old one would still be accepted.
        let short = tool_with(&app, &caller, &target.url, "oauth2", client(10)).await;
        let short_flow = call_flow(&app, &caller, &short, "/oauth/api").await;
        assert_eq!(run_once(&app, &caller, &short_flow).await["status"], "completed");
        assert_eq!(run_once(&app, &caller, &short_flow).await["status"], "completed");
        assert_eq!(target.received_at("/oauth/token").len(), 3, "still fresh: cached");
        let issued = target.token_issued_at(3);
        tokio::time::sleep_until((issued + Duration::from_millis(9300)).into()).await;
        let before = target.received_at("/oauth/api").len();
        assert_eq!(run_once(&app, &caller, &short_flow).await["status"], "completed");
        assert_eq!(target.received_at("/oauth/token").len(), 4, "about to expire: fetched anew");
        assert_eq!(target.received_at("/oauth/api").len(), before + 1, "no call was refused");
    }

    /// A flipped byte, or a ciphertext copied onto another tool or into another organization,
    /// does not open: the step fails with `credentials_unreadable` and nothing is sent.
    async fn tampered_or_moved_credentials_fail_the_step_and_send_nothing(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let acme = app.new_tenant("Acme").await;
        let other = app.new_tenant("Other").await;
        let flipped = tool_with(&app, &acme, &target.url, "bearer", json!({"token": BEARER})).await;
        let source = tool_with(&app, &acme, &target.url, "bearer", json!({"token": BEARER})).await;
        let copied = tool_with(&app, &acme, &target.url, "bearer", json!({"token": "mine"})).await;
        let foreign = tool_with(&app, &other, &target.url, "bearer", json!({"token": "theirs"})).await;
        let row = |tool: &Value| uuid::Uuid::parse_str(tool["id"].as_str().expect("id")).expect("uuid");
        let stored = tool::Entity::find_by_id(row(&source)).one(&app.db).await.expect("read").expect("row");
        let sealed = stored.credentials_sealed.clone().expect("sealed");
        rows_hold_no_secret(&app).await;
        let mut bytes = tool::Entity::find_by_id(row(&flipped)).one(&app.db).await.expect("read").expect("row")
            .credentials_sealed.expect("sealed");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let write = |id, bytes: Vec<u8>| tool::ActiveModel {
            id: Set(id), credentials_sealed: Set(Some(bytes)), ..Default::default()
        };
        write(row(&flipped), bytes).update(&app.db).await.expect("flip");
        write(row(&copied), sealed.clone()).update(&app.db).await.expect("copy");
        write(row(&foreign), sealed).update(&app.db).await.expect("copy across");
        for (caller, tool, n) in [(&acme, &flipped, 0), (&acme, &copied, 1), (&other, &foreign, 2)] {
            let flow_id = call_flow(&app, caller, tool, &format!("/echo/t{n}")).await;
            let run = run_once(&app, caller, &flow_id).await;
            assert_eq!(run["status"], "failed", "{run}");
            assert_eq!(run["error"]["kind"], "credentials_unreadable", "{run}");
        }
        assert!(target.received_at("/echo/t").is_empty(), "nothing was sent");
        let flow_id = call_flow(&app, &acme, &source, "/echo/ok").await;
        assert_eq!(run_once(&app, &acme, &flow_id).await["status"], "completed", "the original still opens");
    }

    /// A `tolstoy serve` at `RUST_LOG=trace` takes every kind of credentials over HTTP, puts them
    /// on its workers' calls and writes none of them into its log; nor does the database (its
    /// file, on SQLite) hold them in plain text, nor any response or execution log.
    async fn no_secret_reaches_the_log_at_trace_or_the_database(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let port = free_port();
        let port_text = port.to_string();
        let log = temp_dir().join("trace.log");
        let _server = spawn(&app, "serve", &[("WORKERS", "2"), ("PORT", &port_text),
            ("RUST_LOG", "trace"), ("LOG_FORMAT", "json")], log.to_str().expect("path"));
        wait_until_up(port);
        let bodies = [
            ("apiKey", json!({"value": API_KEY, "query": "k"})),
            ("bearer", json!({"token": BEARER})),
            ("basic", json!({"username": "u", "password": PASSWORD})),
            ("oauth2", json!({"tokenUrl": format!("{}/oauth/token", target.url),
                "clientId": OAUTH_CLIENT_ID, "clientSecret": OAUTH_CLIENT_SECRET})),
        ];
        let mut runs = Vec::new();
        for (n, (auth_type, credentials)) in bodies.into_iter().enumerate() {
            let body = json!({"name": format!("t{n}"), "baseUrl": target.url, "authType": auth_type,
                "credentials": credentials}).to_string();
            let (status, _, reply) = http_with(port, "POST", "/tools", Some(&body), &caller.headers()).expect("POST /tools");
            assert!(status.contains(" 201 "), "{status} {reply}");
            secrets_absent(&reply);
            let tool: Value = serde_json::from_str(&reply).expect("tool");
            let endpoint = if n == 3 { "/oauth/api".to_owned() } else { format!("/echo/s{n}") };
            let flow_id = call_flow(&app, &caller, &tool, &endpoint).await;
            runs.push(start(&app, &caller, &flow_id, json!({})).await);
        }
        for run in &runs {
            let run = finished(&app, &caller, run).await;
            assert_eq!(run["status"], "completed", "{run}");
        }
        assert_eq!(target.received_at("/oauth/token").len(), 1);
        assert_eq!(target.received_at("/echo/s1")[0].headers["authorization"], format!("Bearer {BEARER}"));
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("\"level\":\"TRACE\""), "the log is at trace");
        assert!(text.contains("/tools"), "the log saw the requests");
        secrets_absent(&text);
        assert!(!text.contains("tok-1"), "the access token is not logged");
        rows_hold_no_secret(&app).await;
        let database_url = app.server_env.iter().find(|(name, _)| *name == "DATABASE_URL").expect("url").1.clone();
        if let Some(file) = database_url.strip_prefix("sqlite://").map(|rest| rest.split('?').next().unwrap_or_default()) {
            let main = std::fs::read(file).expect("the SQLite file");
            assert!(main.len() > 4096, "the database file is read");
            for (path, bytes) in [(file.to_owned(), main), (format!("{file}-wal"), std::fs::read(format!("{file}-wal")).unwrap_or_default())] {
                for secret in [API_KEY, BEARER, PASSWORD, OAUTH_CLIENT_SECRET] {
                    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in {path}");
                }
            }
        }
        let logs = app.get_as(&caller, "/execution-logs").await;
        secrets_absent(&logs.text);
        let listed = app.get_as(&caller, "/runs").await;
        secrets_absent(&listed.text);
    }

    /// Credentials sealed under key A are re-sealed under B by `tolstoy rotate-credentials-key`
    /// while a worker keeps running them; then A is dropped and everything still opens.
    async fn rotation_reseals_under_the_new_key_while_runs_go_on(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let new_key = "bmV3IGtleSBvZiB0aGUgdG9sc3RveSB0ZXN0IHN1aXQ=";
        let both = format!("b:{new_key},{TEST_CREDENTIALS_KEY}");
        let mut flows = Vec::new();
        for n in 0..5 {
            let tool = tool_with(&app, &caller, &target.url, "bearer", json!({"token": format!("{BEARER}-{n}")})).await;
            flows.push(call_flow(&app, &caller, &tool, &format!("/slow/r{n}?ms=1000")).await);
        }
        let worker = spawn(&app, "worker", &[("WORKERS", "5"), ("CREDENTIALS_KEYS", &both)], "both.log");
        let mut runs = Vec::new();
        for flow_id in &flows {
            runs.push(start(&app, &caller, flow_id, json!({})).await);
        }
        // The rotation runs while the calls, which opened credentials sealed under A, are in flight.
        wait_for("the calls to start", Duration::from_secs(20), || target.received_at("/slow/r").len() == 5).await;
        let dir = temp_dir();
        let mut rotate = crate::helpers::process::tolstoy(&dir);
        rotate.arg("rotate-credentials-key").arg("--batch").arg("2");
        for (name, value) in &app.server_env {
            rotate.env(name, value);
        }
        let rotated = rotate.env("CREDENTIALS_KEYS", &both).output().expect("rotate");
        assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
        let said = String::from_utf8_lossy(&rotated.stdout);
        assert!(said.contains("re-sealed 5 tool(s) under key b") && said.contains("0 still under another key"), "{said}");
        for run in &runs {
            assert_eq!(finished(&app, &caller, run).await["status"], "completed");
        }
        drop(worker);
        let rows = tool::Entity::find().all(&app.db).await.expect("tools");
        assert!(rows.iter().filter(|t| t.credentials_key_id.is_some()).all(|t| t.credentials_key_id.as_deref() == Some("b")));
        let _only_new = spawn(&app, "worker", &[("WORKERS", "2"), ("CREDENTIALS_KEYS", &format!("b:{new_key}"))], "new.log");
        let begun = Instant::now();
        for (n, flow_id) in flows.iter().enumerate() {
            let run = finished(&app, &caller, &start(&app, &caller, flow_id, json!({})).await).await;
            assert_eq!(run["status"], "completed", "{run}");
            let sent = target.received_at(&format!("/slow/r{n}"));
            assert_eq!(sent.last().expect("sent").headers["authorization"], format!("Bearer {BEARER}-{n}"));
        }
        assert!(begun.elapsed() < Duration::from_secs(60));
    }
}
