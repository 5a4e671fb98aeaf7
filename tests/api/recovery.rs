//! The executor as real processes: a worker killed with `kill -9` mid-step loses nothing, and
//! two worker processes on one queue work each run exactly once.

use std::collections::HashSet;
use std::fs::File;
use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};

use crate::helpers::process::{free_port, temp_dir, tolstoy, wait_until_up, Server};
use crate::helpers::target::Target;
use crate::helpers::{wait_for, Caller, TestApp};
use crate::on_both_backends;
use crate::runs;

/// Starts `tolstoy <command>` on the app's database with `env`; its log goes to `log_name`.
pub(crate) fn spawn(app: &TestApp, command: &str, env: &[(&str, &str)], log_name: &str) -> Server {
    let dir = temp_dir();
    let log = File::create(dir.join(log_name)).expect("log");
    let mut process = tolstoy(&dir);
    process
        .arg(command)
        .env("OUTBOUND_ALLOW_PRIVATE", "true")
        .env("RUST_LOG", "info");
    for (name, value) in &app.server_env {
        process.env(name, value);
    }
    for (name, value) in env {
        process.env(name, value);
    }
    Server(
        process
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn tolstoy"),
    )
}

/// A flow of one step calling `GET {endpoint}` on `target`, with `path` inputs and up to three
/// attempts.
async fn flow(
    app: &TestApp,
    caller: &Caller,
    target: &Target,
    endpoint: &str,
    path: Value,
) -> String {
    flow_with_attempts(app, caller, target, endpoint, path, 3).await
}

/// [`flow`] with at most `attempts` attempts.
async fn flow_with_attempts(
    app: &TestApp,
    caller: &Caller,
    target: &Target,
    endpoint: &str,
    path: Value,
    attempts: u32,
) -> String {
    let tool_id = runs::tool(app, caller, &target.url).await;
    let action_id = runs::action(app, caller, &tool_id, "GET", endpoint).await;
    let step = json!({
        "id": "call", "type": "action", "actionId": action_id,
        "inputs": {"path": path}, "retry": {"maxAttempts": attempts, "initialDelayMs": 10}
    });
    runs::flow(app, caller, json!([step])).await
}

/// Starts a run of `flow_id` with no inputs; returns its id.
async fn start(app: &TestApp, caller: &Caller, flow_id: &str) -> String {
    let run = runs::start(app, caller, flow_id, json!({})).await;
    run["id"].as_str().expect("run id").to_owned()
}

on_both_backends! {
    /// `kill -9` of the worker mid-step: after a restart the run completes from the step that
    /// was in flight, on attempt 2, and the lost attempt is logged as such.
    async fn a_run_survives_kill_9_of_its_worker(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = flow(&app, &caller, &target, "/slow/{key}?ms=1500", json!({"key": "crash"})).await;
        let env = [("WORKERS", "1"), ("RUN_LEASE_SECS", "2")];
        let port = free_port().to_string();
        let mut first = spawn(&app, "serve", &[env[0], env[1], ("PORT", &port)], "first.log");
        wait_until_up(port.parse().expect("port"));
        let run_id = start(&app, &caller, &flow_id).await;
        wait_for("the step to start", Duration::from_secs(20), || !target.received_at("/slow/crash").is_empty()).await;
        first.0.kill().expect("kill -9");
        first.0.wait().expect("reap");

        let _second = spawn(&app, "worker", &env, "second.log");
        // This process works no runs: the stream follows the other process's work through the
        // database, live, to the run's end.
        let stream = tokio::time::timeout(
            Duration::from_secs(30),
            app.get_as(&caller, &format!("/runs/{run_id}/events")),
        )
        .await
        .expect("the run was not recovered within 30 s");
        let statuses: Vec<&str> = stream.text.lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .filter_map(|data| serde_json::from_str::<Value>(data).ok())
            .map(|event| match event["status"].as_str() {
                Some("running") => "running",
                Some("failed") => "failed",
                Some("completed") => "completed",
                _ => "other",
            })
            .collect();
        assert_eq!(statuses, ["running", "failed", "running", "completed", "completed"], "{}", stream.text);
        let run = app.get_as(&caller, &format!("/runs/{run_id}")).await.body;
        assert_eq!(run["status"], "completed", "{run}");
        let logs = app.get_as(&caller, &format!("/execution-logs?executionId={run_id}")).await.body;
        let mut seen: Vec<(i64, String, String)> = logs.as_array().expect("logs").iter()
            .map(|l| (
                l["attempt"].as_i64().unwrap_or_default(),
                l["status"].as_str().unwrap_or_default().to_owned(),
                l["error"]["kind"].as_str().unwrap_or_default().to_owned(),
            ))
            .collect();
        seen.sort();
        assert_eq!(seen, vec![
            (1, "failed".to_owned(), "worker_lost".to_owned()),
            (2, "completed".to_owned(), String::new()),
        ]);
        assert_eq!(target.received_at("/slow/crash").len(), 2);
    }
}

on_both_backends! {
    /// `kill -9` mid-step of a step's last attempt: after a restart the run fails with kind
    /// `worker_lost`, and the lost attempt has exactly one execution log.
    async fn a_lost_last_attempt_fails_the_run_with_one_log(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = flow_with_attempts(&app, &caller, &target, "/slow/{key}?ms=3000", json!({"key": "last"}), 1).await;
        let env = [("WORKERS", "1"), ("RUN_LEASE_SECS", "2")];
        let mut first = spawn(&app, "worker", &env, "first.log");
        let run_id = start(&app, &caller, &flow_id).await;
        wait_for("the step to start", Duration::from_secs(20), || !target.received_at("/slow/last").is_empty()).await;
        first.0.kill().expect("kill -9");
        first.0.wait().expect("reap");
        let _second = spawn(&app, "worker", &env, "second.log");
        let begun = Instant::now();
        let run = loop {
            let run = app.get_as(&caller, &format!("/runs/{run_id}")).await.body;
            if !run["finishedAt"].is_null() {
                break run;
            }
            assert!(begun.elapsed() < Duration::from_secs(30), "the run was not recovered: {run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["error"]["kind"], "worker_lost", "{run}");
        let logs = app.get_as(&caller, &format!("/execution-logs?executionId={run_id}")).await.body;
        let logs = logs.as_array().expect("logs");
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert_eq!(logs[0]["status"], "failed");
        assert_eq!(logs[0]["error"]["kind"], "worker_lost");
        assert_eq!(target.received_at("/slow/last").len(), 1);
    }

    /// SIGTERM while a step is in flight and the shutdown timeout too short for it: the
    /// process exits within the timeout and gives the run back, so another worker completes it
    /// without waiting out the 30 s lease.
    async fn a_stopped_worker_gives_back_the_run_it_could_not_finish(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = flow(&app, &caller, &target, "/slow/{key}?ms=4000", json!({"key": "stop"})).await;
        let env = [("WORKERS", "1"), ("RUN_LEASE_SECS", "30"), ("SHUTDOWN_TIMEOUT_SECS", "1")];
        let mut first = spawn(&app, "worker", &env, "first.log");
        let run_id = start(&app, &caller, &flow_id).await;
        wait_for("the step to start", Duration::from_secs(20), || !target.received_at("/slow/stop").is_empty()).await;
        let stopped = Instant::now();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &first.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = first.0.wait().expect("wait");
        assert!(status.success(), "{status:?}");
        assert!(stopped.elapsed() < Duration::from_secs(5), "took {:?}", stopped.elapsed());
        let run = app.get_as(&caller, &format!("/runs/{run_id}")).await.body;
        assert_eq!(run["status"], "running", "{run}");
        let _second = spawn(&app, "worker", &env, "second.log");
        let begun = Instant::now();
        loop {
            let run = app.get_as(&caller, &format!("/runs/{run_id}")).await.body;
            if !run["finishedAt"].is_null() {
                assert_eq!(run["status"], "completed", "{run}");
                break;
            }
            assert!(begun.elapsed() < Duration::from_secs(20), "the run was left leased: {run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(target.received_at("/slow/stop").len(), 2);
    }
}

/// Two `tolstoy worker` processes on one PostgreSQL queue (through PgBouncer in the production
/// run) work 500 runs: each is called once and completes once, none is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_work_each_of_500_runs_exactly_once() {
    crate::helpers::run_on(crate::helpers::Backend::Postgres, |app| async move {
        const RUNS: usize = 500;
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = flow(
            &app,
            &caller,
            &target,
            "/echo/{run}",
            json!({"run": "{{ run.id }}"}),
        )
        .await;
        let env = [("WORKERS", "4"), ("RUN_LEASE_SECS", "5")];
        let _workers = [
            spawn(&app, "worker", &env, "worker-1.log"),
            spawn(&app, "worker", &env, "worker-2.log"),
        ];
        let mut started = HashSet::new();
        for _ in 0..RUNS {
            started.insert(start(&app, &caller, &flow_id).await);
        }
        assert_eq!(started.len(), RUNS);
        let completed = || async {
            entity::run::Entity::find()
                .filter(entity::run::Column::Status.eq("completed"))
                .count(&app.db)
                .await
                .expect("count runs")
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while completed().await < RUNS as u64 {
            assert!(
                Instant::now() < deadline,
                "only {} of {RUNS} runs completed",
                completed().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let calls: Vec<String> = target
            .received_at("/echo/")
            .into_iter()
            .map(|r| r.path.trim_start_matches("/echo/").to_owned())
            .collect();
        assert_eq!(calls.len(), RUNS, "a run was called more than once");
        assert_eq!(calls.into_iter().collect::<HashSet<_>>(), started);
        let logs = entity::execution_log::Entity::find()
            .filter(entity::execution_log::Column::Status.eq("completed"))
            .filter(entity::execution_log::Column::Attempt.eq(1))
            .count(&app.db)
            .await
            .expect("count logs");
        assert_eq!(logs, RUNS as u64);
        let all_logs = entity::execution_log::Entity::find()
            .count(&app.db)
            .await
            .expect("count");
        assert_eq!(all_logs, RUNS as u64);
    })
    .await;
}
