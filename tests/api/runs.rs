//! Runs: flows started over HTTP, worked by in-process workers against a local target server,
//! every step attempt logged; conditions, templates, retries, timeouts, cancel, idempotency,
//! the outbound-address guard and the event stream.

use std::time::{Duration, Instant};

use poem::http::Method;
use serde_json::{json, Value};

use crate::helpers::target::{Target, SESSION_SECRET};
use crate::helpers::{wait_for, Caller, TestApp, Workers};
use crate::on_both_backends;

/// Workers for the tests: quick polling is the default; private addresses allowed, so the
/// loopback target can be called.
const WORKERS: &[(&str, &str)] = &[("WORKERS", "2"), ("OUTBOUND_ALLOW_PRIVATE", "true")];

/// A tenant with a tool whose base URL is `base_url`.
pub(crate) async fn tool(app: &TestApp, caller: &Caller, base_url: &str) -> String {
    let reply = app
        .post_as(caller, "/tools", &json!({"name": format!("target {}", uuid::Uuid::now_v7()), "baseUrl": base_url, "authType": "none"}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_str().expect("tool id").to_owned()
}

/// An action of `tool_id`.
pub(crate) async fn action(
    app: &TestApp,
    caller: &Caller,
    tool_id: &str,
    method: &str,
    endpoint: &str,
) -> String {
    let reply = app
        .post_as(
            caller,
            "/actions",
            &json!({"toolId": tool_id, "method": method, "endpoint": endpoint}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_str().expect("action id").to_owned()
}

/// A flow of one `GET` step per `(step id, endpoint)` on `tool_id`, each step given `extra` keys.
pub(crate) async fn flow_of_calls(
    app: &TestApp,
    caller: &Caller,
    tool_id: &str,
    calls: &[(&str, &str)],
    extra: Value,
) -> String {
    let mut steps = Vec::new();
    for (id, endpoint) in calls {
        let action_id = action(app, caller, tool_id, "GET", endpoint).await;
        let mut step = json!({"id": id, "type": "action", "actionId": action_id});
        if let (Some(step), Some(extra)) = (step.as_object_mut(), extra.as_object()) {
            step.extend(extra.clone());
        }
        steps.push(step);
    }
    flow(app, caller, Value::Array(steps)).await
}

/// A flow with `steps`.
pub(crate) async fn flow(app: &TestApp, caller: &Caller, steps: Value) -> String {
    let reply = app
        .post_as(caller, "/flows", &json!({"name": "test", "steps": steps}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_str().expect("flow id").to_owned()
}

/// A one-step flow calling `method endpoint` on `target`, the step given `extra` keys.
async fn one_step_flow(
    app: &TestApp,
    caller: &Caller,
    target: &Target,
    method: &str,
    endpoint: &str,
    extra: Value,
) -> String {
    let tool_id = tool(app, caller, &target.url).await;
    let action_id = action(app, caller, &tool_id, method, endpoint).await;
    let mut step = json!({"id": "call", "type": "action", "actionId": action_id});
    if let (Some(step), Value::Object(extra)) = (step.as_object_mut(), extra) {
        step.extend(extra);
    }
    flow(app, caller, json!([step])).await
}

/// Starts a run of `flow_id` with `inputs`; returns the run.
pub(crate) async fn start(app: &TestApp, caller: &Caller, flow_id: &str, inputs: Value) -> Value {
    let reply = app
        .post_as(
            caller,
            &format!("/flows/{flow_id}/runs"),
            &json!({"inputs": inputs}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["id"].as_str().expect("run id");
    assert_eq!(
        reply.header("location"),
        Some(format!("/runs/{id}").as_str())
    );
    assert_eq!(reply.body["status"], "queued");
    reply.body
}

/// Polls the run until it has finished (or 30 s pass); returns it.
pub(crate) async fn finished(app: &TestApp, caller: &Caller, run: &Value) -> Value {
    let path = format!("/runs/{}", run["id"].as_str().expect("run id"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = app.get_as(caller, &path).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if !reply.body["finishedAt"].is_null() {
            return reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run's execution logs, oldest first.
pub(crate) async fn logs(app: &TestApp, caller: &Caller, run: &Value) -> Vec<Value> {
    let id = run["id"].as_str().expect("run id");
    let reply = app
        .get_as(caller, &format!("/execution-logs?executionId={id}"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut rows = reply.body.as_array().expect("logs").clone();
    rows.reverse();
    rows
}

pub(crate) async fn workers(app: &TestApp, env: &[(&str, &str)]) -> (TestApp, Workers) {
    let mut all = WORKERS.to_vec();
    all.extend_from_slice(env);
    app.with_workers(&all)
}

on_both_backends! {
    /// Step 2 reads step 1's answer; templates keep types, fill path placeholders and query.
    async fn a_two_step_flow_passes_data_from_step_to_step(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let tool_id = tool(&app, &caller, &target.url).await;
        let create = action(&app, &caller, &tool_id, "post", "/echo/users").await;
        let read = action(&app, &caller, &tool_id, "GET", "/echo/users/{name}").await;
        let flow_id = flow(&app, &caller, json!([
            {"id": "create", "type": "action", "actionId": create,
             "inputs": {"body": {"name": "{{ inputs.name }}", "age": "{{ inputs.age + 1 }}"},
                        "headers": {"X-Trace": "run {{ run.id }}"}}},
            {"id": "read", "type": "action", "actionId": read,
             "inputs": {"path": {"name": "{{ steps.create.output.body.body.name }}"},
                        "query": {"status": "{{ steps.create.status }}"}}}
        ])).await;
        let run = start(&app, &caller, &flow_id, json!({"name": "Ann Lee/2", "age": 41})).await;
        let run = finished(&app, &caller, &run).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["outputs"]["create"]["status"], 200);
        assert_eq!(run["outputs"]["create"]["body"]["body"], json!({"name": "Ann Lee/2", "age": 42}));
        assert_eq!(run["outputs"]["read"]["body"]["path"], "/echo/users/Ann%20Lee%2F2");
        assert_eq!(run["outputs"]["read"]["body"]["query"], json!({"status": "completed"}));
        let received = target.received_at("/echo/users");
        assert_eq!(received.len(), 2);
        assert_eq!(received[0].method, "POST");
        assert_eq!(received[0].headers["x-trace"], format!("run {}", run["id"].as_str().unwrap_or_default()));

        let logs = logs(&app, &caller, &run).await;
        assert_eq!(logs.len(), 2, "{logs:?}");
        for (log, step) in logs.iter().zip(["create", "read"]) {
            assert_eq!(log["stepId"], step);
            assert_eq!(log["status"], "completed");
            assert_eq!(log["attempt"], 1);
            assert_eq!(log["runId"], run["id"]);
            assert_eq!(log["executionId"], run["id"]);
            assert_eq!(log["userId"], caller.user_id.as_str());
            assert!(log["durationMs"].as_i64().is_some_and(|ms| ms >= 0));
        }
        assert_eq!(logs[0]["inputs"]["body"], json!({"name": "Ann Lee/2", "age": 42}));
    }

    /// A false `executeIf` skips the step without calling it.
    async fn a_false_condition_skips_the_step(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/echo/skipped",
            json!({"executeIf": "inputs.go == true"})).await;
        let run = start(&app, &caller, &flow_id, json!({"go": false})).await;
        let run = finished(&app, &caller, &run).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["outputs"], json!({}));
        let logs = logs(&app, &caller, &run).await;
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0]["status"], "skipped");
        assert!(target.received_at("/echo/skipped").is_empty());
    }

    /// 503 twice, then 200: completed on attempt 3, with three logs.
    async fn a_step_is_retried_until_it_succeeds(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/flaky/a?fail=2&status=503",
            json!({"retry": {"maxAttempts": 3, "initialDelayMs": 10}})).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        let run = finished(&app, &caller, &run).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["outputs"]["call"]["body"], json!({"calls": 3}));
        let logs = logs(&app, &caller, &run).await;
        let seen: Vec<(Value, Value)> = logs.iter().map(|l| (l["attempt"].clone(), l["status"].clone())).collect();
        assert_eq!(seen, vec![
            (json!(1), json!("failed")), (json!(2), json!("failed")), (json!(3), json!("completed")),
        ]);
        assert_eq!(logs[0]["error"]["kind"], "http_status");
        assert_eq!(logs[0]["outputs"]["status"], 503);
        assert_eq!(target.received_at("/flaky/a").len(), 3);
    }

    /// A 400 fails the step and the run at once, with no retry.
    async fn a_client_error_fails_without_retry(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "POST", "/status/400",
            json!({"retry": {"maxAttempts": 5, "initialDelayMs": 10}})).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        let run = finished(&app, &caller, &run).await;
        assert_eq!(run["status"], "failed");
        assert_eq!(run["error"]["stepId"], "call");
        assert_eq!(run["error"]["kind"], "http_status");
        assert_eq!(logs(&app, &caller, &run).await.len(), 1);
        assert_eq!(target.received_at("/status/400").len(), 1);
    }

    /// `continueOnError`: a failed step does not fail the run, and later steps see its status.
    async fn continue_on_error_goes_on_past_a_failed_step(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let tool_id = tool(&app, &caller, &target.url).await;
        let broken = action(&app, &caller, &tool_id, "GET", "/status/404").await;
        let after = action(&app, &caller, &tool_id, "GET", "/echo/after").await;
        let flow_id = flow(&app, &caller, json!([
            {"id": "broken", "type": "action", "actionId": broken, "continueOnError": true},
            {"id": "after", "type": "action", "actionId": after,
             "executeIf": "steps.broken.status == 'failed'"}
        ])).await;
        let run = finished(&app, &caller, &start(&app, &caller, &flow_id, json!({})).await).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["outputs"]["after"]["status"], 200);
        assert!(run["outputs"].get("broken").is_none());
    }

    /// A step slower than its `timeoutMs` fails with kind `timeout`.
    async fn a_slow_step_times_out(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/slow/t?ms=5000",
            json!({"timeoutMs": 200, "retry": {"maxAttempts": 1}})).await;
        let begun = Instant::now();
        let run = finished(&app, &caller, &start(&app, &caller, &flow_id, json!({})).await).await;
        assert_eq!(run["status"], "failed");
        assert_eq!(run["error"]["kind"], "timeout");
        assert!(begun.elapsed() < Duration::from_secs(4), "the timeout was not applied");
    }

    /// Cancelling a running run abandons its in-flight call; a finished run cannot be
    /// cancelled.
    async fn a_running_run_can_be_cancelled(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/slow/c?ms=20000",
            json!({"timeoutMs": 60000})).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        wait_for("the step to start", Duration::from_secs(10), || !target.received_at("/slow/c").is_empty()).await;
        let id = run["id"].as_str().expect("id");
        let begun = Instant::now();
        let reply = app.post_as(&caller, &format!("/runs/{id}/cancel"), &json!({})).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        let run = finished(&app, &caller, &run).await;
        assert!(begun.elapsed() < Duration::from_secs(5), "the call was not abandoned");
        assert_eq!(run["status"], "cancelled");
        let logs = logs(&app, &caller, &run).await;
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0]["status"], "cancelled");
        app.post_as(&caller, &format!("/runs/{id}/cancel"), &json!({})).await.assert_problem(409);
    }

    /// A queued run is cancelled at once, without a worker.
    async fn a_queued_run_is_cancelled_at_once(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/echo/never", json!({})).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        let id = run["id"].as_str().expect("id");
        let reply = app.post_as(&caller, &format!("/runs/{id}/cancel"), &json!({})).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        assert_eq!(reply.body["status"], "cancelled");
        let (app, workers) = workers(&app, &[]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        workers.stop().await;
        assert!(target.received_at("/echo/never").is_empty());
        assert_eq!(app.get_as(&caller, &format!("/runs/{id}")).await.body["status"], "cancelled");
    }

    /// The same Idempotency-Key and body answer the same run; another body is a conflict.
    async fn an_idempotency_key_makes_a_start_safe_to_repeat(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/echo/once", json!({})).await;
        let path = format!("/flows/{flow_id}/runs");
        let headers = [caller.headers()[0], caller.headers()[1], ("Idempotency-Key", "order-42")];
        let body = json!({"inputs": {"n": 1}});
        let first = app.send(Method::POST, &path, Some(&body), &headers).await;
        assert_eq!(first.status, 202, "{}", first.text);
        let again = app.send(Method::POST, &path, Some(&body), &headers).await;
        assert_eq!(again.status, 202);
        assert_eq!(again.body["id"], first.body["id"]);
        let other = app.send(Method::POST, &path, Some(&json!({"inputs": {"n": 2}})), &headers).await;
        other.assert_problem(409);
        let bad = [caller.headers()[0], caller.headers()[1], ("Idempotency-Key", "has space")];
        let fields = app.send(Method::POST, &path, Some(&body), &bad).await.assert_problem(400);
        assert_eq!(fields, vec!["Idempotency-Key"]);
        let runs = app.get_as(&caller, "/runs").await;
        assert_eq!(runs.body.as_array().map(Vec::len), Some(1));
    }

    /// Starts racing with one Idempotency-Key make one run, and every answer names it.
    async fn racing_starts_with_one_idempotency_key_make_one_run(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/echo/race", json!({})).await;
        let path = format!("/flows/{flow_id}/runs");
        let app = std::sync::Arc::new(app);
        for round in 0..8 {
            let key = format!("race-{round}");
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
            let mut starts = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (app, caller, path, key, barrier) = (app.clone(), caller.clone(), path.clone(), key.clone(), barrier.clone());
                starts.spawn(async move {
                    let headers = [caller.headers()[0], caller.headers()[1], ("Idempotency-Key", key.as_str())];
                    barrier.wait().await;
                    app.send(Method::POST, &path, Some(&json!({"inputs": {}})), &headers).await
                });
            }
            let answers = starts.join_all().await;
            let ids: std::collections::HashSet<String> = answers.iter()
                .map(|reply| {
                    assert_eq!(reply.status, 202, "{}", reply.text);
                    reply.body["id"].as_str().expect("id").to_owned()
                })
                .collect();
            assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        }
        let runs = app.get_as(&caller, "/runs").await;
        assert_eq!(runs.body.as_array().map(Vec::len), Some(8));
    }

    /// Steps the executor cannot run are refused before anything is queued, naming the step.
    async fn an_unrunnable_flow_is_refused_naming_the_step(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let stranger = app.new_tenant("Globex").await;
        let foreign_tool = tool(&app, &stranger, &target.url).await;
        let foreign = action(&app, &stranger, &foreign_tool, "GET", "/echo/x").await;
        let own_tool = tool(&app, &caller, &target.url).await;
        let own = action(&app, &caller, &own_tool, "GET", "/echo/{id}").await;
        let cases = [
            (json!([{"id": "a", "type": "action", "actionId": foreign}]), "steps[0].actionId"),
            (json!([{"id": "a", "type": "delay"}]), "steps[0].type"),
            (json!([{"id": "a", "type": "action", "actionId": own, "inputs": {"path": {"id": 1}}},
                    {"id": "b", "type": "action", "actionId": own, "executeIf": "1 +"}]), "steps[1].executeIf"),
            (json!([{"id": "a", "type": "action", "actionId": own}]), "steps[0].inputs.path"),
            (json!([{"id": "a", "type": "action", "actionId": own, "inputs": {"path": {"id": 1}},
                     "retry": {"maxAttempts": 0}}]), "steps[0].retry.maxAttempts"),
        ];
        for (steps, field) in cases {
            let flow_id = flow(&app, &caller, steps).await;
            let reply = app.post_as(&caller, &format!("/flows/{flow_id}/runs"), &json!({})).await;
            assert_eq!(reply.assert_problem(422), vec![field], "{}", reply.text);
        }
        let runs = app.get_as(&caller, "/runs").await;
        assert_eq!(runs.body, json!([]));
        // Another organization's run is not there.
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/echo/mine", json!({})).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        let id = run["id"].as_str().expect("id");
        app.get_as(&stranger, &format!("/runs/{id}")).await.assert_problem(404);
        app.post_as(&stranger, &format!("/runs/{id}/cancel"), &json!({})).await.assert_problem(404);
        app.get_as(&stranger, &format!("/runs/{id}/events")).await.assert_problem(404);
        app.post_as(&stranger, &format!("/flows/{flow_id}/runs"), &json!({})).await.assert_problem(404);
        assert_eq!(app.get_as(&stranger, "/runs").await.body, json!([]));
    }

    /// With OUTBOUND_ALLOW_PRIVATE=false, loopback, link-local and names resolving to them are
    /// refused with `blocked_address`, and nothing reaches the target.
    async fn private_addresses_are_refused_when_not_allowed(app) {
        let target = Target::start().await;
        let (app, _workers) = app.with_workers(&[("WORKERS", "2"), ("OUTBOUND_ALLOW_PRIVATE", "false")]);
        let caller = app.new_tenant("Acme").await;
        let port = target.port;
        for base in [
            format!("http://127.0.0.1:{port}"),
            format!("http://[::1]:{port}"),
            format!("http://[::ffff:127.0.0.1]:{port}"),
            format!("http://localhost:{port}"),
            "http://169.254.169.254".to_owned(),
            "http://10.0.0.1".to_owned(),
        ] {
            let tool_id = tool(&app, &caller, &base).await;
            let action_id = action(&app, &caller, &tool_id, "GET", "/echo/blocked").await;
            let flow_id = flow(&app, &caller, json!([
                {"id": "call", "type": "action", "actionId": action_id, "timeoutMs": 2000}
            ])).await;
            let run = finished(&app, &caller, &start(&app, &caller, &flow_id, json!({})).await).await;
            assert_eq!(run["status"], "failed", "{base}: {run}");
            assert_eq!(run["error"]["kind"], "blocked_address", "{base}: {run}");
        }
        // The decimal form of 127.0.0.1 is not even a base URL.
        let reply = app.post_as(&caller, "/tools",
            &json!({"name": "decimal", "authType": "none", "baseUrl": format!("http://2130706433:{port}")})).await;
        assert!(matches!(reply.status, 400 | 422), "{}", reply.text);
        assert!(target.received().is_empty(), "{:?}", target.received());
    }

    /// The event stream replays a finished run's transitions with ids, ends after the run's
    /// end, and resumes after `Last-Event-ID`.
    async fn the_event_stream_follows_a_run(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/slow/e?ms=300", json!({})).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        let id = run["id"].as_str().expect("id");
        // Opened while the run is under way: it follows it to the end.
        let live = app.get_as(&caller, &format!("/runs/{id}/events")).await;
        assert_eq!(live.status, 200, "{}", live.text);
        assert!(live.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")));
        let events = parse_events(&live.text);
        let seen: Vec<(&str, &str, &str)> = events.iter()
            .map(|(id, kind, data)| (id.as_str(), kind.as_str(), data["status"].as_str().unwrap_or_default()))
            .collect();
        assert_eq!(seen, vec![("1", "step", "running"), ("2", "step", "completed"), ("3", "run", "completed")]);
        let mut headers = caller.headers().to_vec();
        headers.push(("Last-Event-ID", "2"));
        let resumed = app.send(Method::GET, &format!("/runs/{id}/events"), None, &headers).await;
        let events = parse_events(&resumed.text);
        assert_eq!(events.len(), 1, "{}", resumed.text);
        assert_eq!(events[0].0, "3");
    }
}

on_both_backends! {
    /// A run of many quick steps that lasts longer than its lease keeps the lease: every write
    /// renews it and the lease keeper renews it between writes, so no rescuer takes the run
    /// over while it is worked, and each step is called exactly once.
    async fn a_run_longer_than_its_lease_is_worked_once(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[("RUN_LEASE_SECS", "3")]).await;
        let caller = app.new_tenant("Acme").await;
        let tool_id = tool(&app, &caller, &target.url).await;
        let action_id = action(&app, &caller, &tool_id, "GET", "/slow/{key}?ms=900").await;
        let steps: Vec<Value> = (0..8)
            .map(|i| json!({"id": format!("s{i}"), "type": "action", "actionId": action_id,
                "inputs": {"path": {"key": format!("lease-{i}")}}}))
            .collect();
        let flow_id = flow(&app, &caller, Value::Array(steps)).await;
        let run = finished(&app, &caller, &start(&app, &caller, &flow_id, json!({})).await).await;
        assert_eq!(run["status"], "completed", "{run}");
        let mut called: Vec<String> = target.received_at("/slow/lease-").into_iter().map(|r| r.path).collect();
        called.sort();
        let expected: Vec<String> = (0..8).map(|i| format!("/slow/lease-{i}")).collect();
        assert_eq!(called, expected, "a step was called more than once");
        let logs = logs(&app, &caller, &run).await;
        assert_eq!(logs.len(), 8, "{logs:?}");
        assert!(logs.iter().all(|l| l["attempt"] == 1 && l["status"] == "completed"), "{logs:?}");
    }

    /// An answer holding U+0000, which PostgreSQL's `jsonb` cannot store, is kept with U+FFFD
    /// in its place, on both backends alike; the run completes.
    async fn a_nul_in_an_answer_is_stored_as_the_replacement_character(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/nul", json!({})).await;
        let run = finished(&app, &caller, &start(&app, &caller, &flow_id, json!({})).await).await;
        assert_eq!(run["status"], "completed", "{run}");
        let body = &run["outputs"]["call"]["body"];
        assert_eq!(body["text"], "a\u{FFFD}b", "{run}");
        assert_eq!(body["k\u{FFFD}"], 1, "{run}");
        let logs = logs(&app, &caller, &run).await;
        assert_eq!(logs[0]["outputs"]["body"]["text"], "a\u{FFFD}b", "{logs:?}");
    }

    /// Header values that may be secrets (authorization, keys, tokens, cookies) are sent, but
    /// the execution log shows them as `[redacted]`, in the resolved inputs and in the answer.
    async fn secret_headers_are_sent_but_not_logged(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "POST", "/cookie", json!({
            "inputs": {"headers": {"Authorization": "Bearer {{ inputs.token }}", "X-Trace": "t-1"}}
        })).await;
        let token = "tok-5ecret-do-not-log";
        let run = finished(&app, &caller, &start(&app, &caller, &flow_id, json!({"token": token})).await).await;
        assert_eq!(run["status"], "completed", "{run}");
        let sent = target.received_at("/cookie");
        assert_eq!(sent[0].headers["authorization"], format!("Bearer {token}"));
        let logs = app.get_as(&caller, &format!("/execution-logs?executionId={}", run["id"].as_str().expect("id"))).await;
        assert!(!logs.text.contains(token), "{}", logs.text);
        assert!(!logs.text.contains(SESSION_SECRET), "{}", logs.text);
        let log = &logs.body[0];
        assert_eq!(log["inputs"]["headers"]["Authorization"], "[redacted]", "{log}");
        assert_eq!(log["inputs"]["headers"]["X-Trace"], "t-1", "{log}");
        assert_eq!(log["outputs"]["headers"]["set-cookie"], "[redacted]", "{log}");
    }

    /// A cancel that arrives while a worker in another process is in a call that then fails:
    /// the run is not left waiting out the retry's delay but is cancelled at once.
    async fn a_cancel_during_a_failing_call_does_not_wait_for_the_retry(app) {
        let target = Target::start().await;
        // The workers' process is another one as far as the API is concerned: `app` does not
        // share its in-process signals, so only the database tells the worker of the cancel.
        let (_, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/slow/c?ms=1500&status=503",
            json!({"retry": {"maxAttempts": 3, "initialDelayMs": 30000}})).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        let id = run["id"].as_str().expect("id");
        wait_for("the step to start", Duration::from_secs(10), || !target.received_at("/slow/c").is_empty()).await;
        let reply = app.post_as(&caller, &format!("/runs/{id}/cancel"), &json!({})).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        let begun = Instant::now();
        let run = finished(&app, &caller, &run).await;
        assert_eq!(run["status"], "cancelled", "{run}");
        assert!(begun.elapsed() < Duration::from_secs(10), "the cancel waited for the retry: {:?}", begun.elapsed());
        assert_eq!(target.received_at("/slow/c").len(), 1);
    }

    /// A flow (or user) with runs, even only queued ones, is not deleted without `cascade`;
    /// with it, its runs go too.
    async fn a_flow_with_runs_is_deleted_only_with_cascade(app) {
        let target = Target::start().await;
        let caller = app.new_tenant("Acme").await;
        let flow_id = one_step_flow(&app, &caller, &target, "GET", "/echo/queued", json!({})).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        let id = run["id"].as_str().expect("id");
        let refused = app.delete_as(&caller, &format!("/flows/{flow_id}")).await;
        refused.assert_problem(409);
        assert!(refused.text.contains("1 runs"), "{}", refused.text);
        let user_path = format!("/users/{}", caller.user_id);
        let extra = app.post_as(&caller, "/users", &json!({"email": "second-owner@example.com", "role": "owner"})).await;
        assert_eq!(extra.status, 201, "{}", extra.text);
        let refused = app.delete_as(&caller, &user_path).await;
        refused.assert_problem(409);
        assert!(refused.text.contains("1 runs"), "{}", refused.text);
        assert_eq!(app.get_as(&caller, &format!("/runs/{id}")).await.status, 200);
        let deleted = app.delete_as(&caller, &format!("/flows/{flow_id}?cascade=true")).await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
        app.get_as(&caller, &format!("/runs/{id}")).await.assert_problem(404);
    }
}

/// `(id, event, data)` of each event in an SSE body.
fn parse_events(text: &str) -> Vec<(String, String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                    .map(str::to_owned)
            };
            let data = field("data")?;
            Some((
                field("id").unwrap_or_default(),
                field("event").unwrap_or_default(),
                serde_json::from_str(&data).unwrap_or(Value::Null),
            ))
        })
        .collect()
}
