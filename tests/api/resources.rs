//! The field rules of each tenant resource, as API.md states them.

use serde_json::{json, Value};

use crate::helpers::{ids, Caller, TestApp};
use crate::on_both_backends;

async fn tool(app: &TestApp, caller: &Caller, name: &str) -> String {
    app.create_as(
        caller,
        "/tools",
        &json!({ "name": name, "baseUrl": "https://api.example.com", "authType": "apiKey" }),
    )
    .await
}

async fn flow(app: &TestApp, caller: &Caller) -> String {
    app.create_as(
        caller,
        "/flows",
        &json!({ "name": "F", "steps": [{ "id": "a", "type": "t" }] }),
    )
    .await
}

/// The fields a 400 names, sorted.
async fn failing_fields(app: &TestApp, caller: &Caller, path: &str, body: Value) -> Vec<String> {
    let mut fields = app.post_as(caller, path, &body).await.assert_problem(400);
    fields.sort();
    fields
}

on_both_backends! {
    async fn users_email_is_checked_and_unique_regardless_of_letter_case(app) {
        let caller = app.new_tenant("acme").await;
        let created = app.post_as(&caller, "/users", &json!({ "email": "  Ada@Example.COM ", "name": "Ada" })).await;
        assert_eq!(created.status, 201, "{}", created.text);
        assert_eq!(created.body["email"], "Ada@Example.COM", "trimmed, case kept");
        let location = created.header("location").expect("location").to_owned();
        assert_eq!(app.get_as(&caller, &location).await.body, created.body);
        app.post_as(&caller, "/users", &json!({ "email": "ada@example.com" })).await.assert_problem(409);
        for address in ["not-an-address", "a@[127.0.0.1]", "a@-x.com", "a b@example.com", "a@example..com"] {
            assert_eq!(failing_fields(&app, &caller, "/users", json!({ "email": address })).await, ["email"], "{address}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(failing_fields(&app, &caller, "/users", json!({ "email": long, "name": "n".repeat(201) })).await, ["email", "name"]);
        assert_eq!(failing_fields(&app, &caller, "/users", json!({ "name": "x", "orgId": caller.org_id })).await, ["email", "orgId"]);
        let other = app.new_tenant("globex").await;
        assert_eq!(app.post_as(&other, "/users", &json!({ "email": "ADA@example.com" })).await.status, 201, "unique per organization only");
    }

    async fn users_put_can_clear_the_name_and_refuses_a_duplicate_email(app) {
        let caller = app.new_tenant("acme").await;
        let id = app.create_as(&caller, "/users", &json!({ "email": "b@example.com", "name": "Bea" })).await;
        let cleared = app.put_as(&caller, &format!("/users/{id}"), &json!({ "name": null })).await;
        assert_eq!(cleared.status, 200);
        assert_eq!(cleared.body["name"], Value::Null);
        let taken = app.put_as(&caller, &format!("/users/{id}"), &json!({ "email": "OWNER@acme.example" })).await;
        taken.assert_problem(409);
        assert_eq!(app.get_as(&caller, &format!("/users/{id}")).await.body["email"], "b@example.com");
        app.put_as(&caller, &format!("/users/{id}"), &json!({ "email": null })).await.assert_problem(400);
    }

    async fn tools_check_url_and_auth_type_and_names_are_unique(app) {
        let caller = app.new_tenant("acme").await;
        for url in ["http://localhost:8080/api", "https://10.0.0.1", "https://api.example.com/v1?x=1", "http://[::1]:8080",
                    "http://[2001:db8::1]/api", "http://[::ffff:192.0.2.1]/", "https://bücher.example/api", "https://例子.测试",
                    "http://API.Example.com:8080/Path%20x"] {
            let reply = app.post_as(&caller, "/tools", &json!({ "name": url, "baseUrl": url, "authType": "none" })).await;
            assert_eq!(reply.status, 201, "{url}: {}", reply.text);
            assert_eq!(reply.body["baseUrl"], url, "kept exactly as sent");
        }
        let too_long = format!("https://example.com/{}", "a".repeat(2049 - 20));
        for url in ["ftp://example.com", "/relative", "example.com", "http://", "https://user:secret@example.com",
                    "https://user@example.com", "https://example.com:65536", "http://1.2.3", "http://0x7f.0.0.1", "https://a b.com",
                    "https://example.com/a b", "https://example.com/\ttab", "HTTP://example.com", "http:example.com", "http:/example.com",
                    "http://[::1", "http://[zz::1]/", "http://[::1]x/", "https://exa mple.com", "javascript:alert(1)", "file:///etc/passwd",
                    "https://xn--.example", "http://250.250.250.250*", "https://a.com!/x", "https://a.1b", "https://example.com/ü", too_long.as_str()] {
            let fields = failing_fields(&app, &caller, "/tools", json!({ "name": "X", "baseUrl": url, "authType": "none" })).await;
            assert_eq!(fields, ["baseUrl"], "{url}");
        }
        assert_eq!(failing_fields(&app, &caller, "/tools", json!({ "name": "X", "baseUrl": "https://x.io", "authType": "Bearer" })).await, ["authType"]);
        assert_eq!(failing_fields(&app, &caller, "/tools", json!({})).await, ["authType", "baseUrl", "name"]);
        tool(&app, &caller, "Slack").await;
        app.post_as(&caller, "/tools", &json!({ "name": " Slack ", "baseUrl": "https://x.io", "authType": "basic" })).await.assert_problem(409);
    }

    async fn tools_with_actions_need_cascade_to_be_deleted(app) {
        let caller = app.new_tenant("acme").await;
        let tool_id = tool(&app, &caller, "Slack").await;
        let action = app.create_as(&caller, "/actions", &json!({ "toolId": tool_id, "method": "GET", "endpoint": "/a" })).await;
        let refused = app.delete_as(&caller, &format!("/tools/{tool_id}")).await;
        refused.assert_problem(409);
        assert!(refused.body["detail"].as_str().unwrap_or_default().contains("1 actions"));
        assert_eq!(app.delete_as(&caller, &format!("/tools/{tool_id}?cascade=true")).await.status, 204);
        app.get_as(&caller, &format!("/actions/{action}")).await.assert_problem(404);
        app.get_as(&caller, &format!("/tools/{tool_id}")).await.assert_problem(404);
    }

    async fn actions_store_method_upper_case_and_check_endpoint_schema_and_condition(app) {
        let caller = app.new_tenant("acme").await;
        let tool_id = tool(&app, &caller, "Slack").await;
        let reply = app.post_as(&caller, "/actions", &json!({ "toolId": tool_id.to_uppercase(), "method": "patch", "endpoint": "/v1/items" })).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.body["method"], "PATCH");
        assert_eq!(reply.body["schema"], json!({}), "schema defaults to {{}}");
        assert_eq!(reply.body["toolId"], tool_id.as_str());
        for condition in [json!("inputs.enabled == true"), json!({ "all": [{ "var": "x" }] })] {
            let reply = app.post_as(&caller, "/actions", &json!({ "toolId": tool_id, "method": "GET", "endpoint": "/", "executeIf": condition })).await;
            assert_eq!(reply.body["executeIf"], condition);
        }
        let fields = failing_fields(&app, &caller, "/actions", json!({ "toolId": "nope", "method": "FETCH", "endpoint": "v1", "schema": [], "executeIf": 3 })).await;
        assert_eq!(fields, ["endpoint", "executeIf", "method", "schema", "toolId"]);
        let huge = json!({ "blob": "x".repeat(64 * 1024) });
        assert_eq!(failing_fields(&app, &caller, "/actions", json!({ "toolId": tool_id, "method": "GET", "endpoint": "/", "schema": huge })).await, ["schema"]);
        let missing_tool = app.post_as(&caller, "/actions", &json!({ "toolId": uuid::Uuid::now_v7(), "method": "GET", "endpoint": "/" })).await;
        assert_eq!(missing_tool.assert_problem(422), ["toolId"]);
    }

    async fn actions_can_be_listed_by_tool(app) {
        let caller = app.new_tenant("acme").await;
        let slack = tool(&app, &caller, "Slack").await;
        let github = tool(&app, &caller, "GitHub").await;
        let mut on_slack = Vec::new();
        for n in 0..3 {
            on_slack.push(app.create_as(&caller, "/actions", &json!({ "toolId": slack, "method": "GET", "endpoint": format!("/{n}") })).await);
            app.create_as(&caller, "/actions", &json!({ "toolId": github, "method": "GET", "endpoint": format!("/{n}") })).await;
        }
        on_slack.reverse();
        let pages = app.walk_as(&caller, &format!("/actions?toolId={slack}&limit=2")).await;
        assert_eq!(pages.concat(), on_slack, "filtered walk keeps the filter in Link");
        assert_eq!(ids(&app.get_as(&caller, "/actions").await.body).len(), 6);
        app.get_as(&caller, "/actions?toolId=bogus").await.assert_problem(400);
    }

    async fn flows_check_steps_and_start_at_version_1(app) {
        let caller = app.new_tenant("acme").await;
        let reply = app.post_as(&caller, "/flows", &json!({ "steps": [{ "id": "a", "type": "http", "retries": 3 }] })).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.body["version"], 1);
        assert_eq!(reply.body["steps"], json!([{ "id": "a", "type": "http", "retries": 3 }]));
        for steps in [
            json!({}),
            json!([1]),
            json!([{ "type": "t" }]),
            json!([{ "id": "", "type": "t" }]),
            json!([{ "id": "a" }]),
            json!([{ "id": "a", "type": "t" }, { "id": "a", "type": "u" }]),
            Value::Array((0..1001).map(|n| json!({ "id": n.to_string(), "type": "t" })).collect()),
        ] {
            assert_eq!(failing_fields(&app, &caller, "/flows", json!({ "steps": steps })).await, ["steps"]);
        }
        assert_eq!(failing_fields(&app, &caller, "/flows", json!({ "steps": [], "version": 3 })).await, ["version"], "version is server-owned on create");
    }

    async fn flow_versions_count_changes_and_a_stale_version_is_409(app) {
        let caller = app.new_tenant("acme").await;
        let id = flow(&app, &caller).await;
        let path = format!("/flows/{id}");
        let renamed = app.put_as(&caller, &path, &json!({ "name": "G" })).await;
        assert_eq!(renamed.body["version"], 2);
        let same = app.put_as(&caller, &path, &json!({ "name": "G", "steps": [{ "id": "a", "type": "t" }] })).await;
        assert_eq!(same.body, renamed.body, "no change, no new version");
        let stepped = app.put_as(&caller, &path, &json!({ "steps": [{ "id": "b", "type": "t" }], "version": 2 })).await;
        assert_eq!(stepped.status, 200, "{}", stepped.text);
        assert_eq!(stepped.body["version"], 3);
        let stale = app.put_as(&caller, &path, &json!({ "name": "Lost", "version": 2 })).await;
        stale.assert_problem(409);
        assert_eq!(app.get_as(&caller, &path).await.body, stepped.body, "a stale update writes nothing");
    }

    async fn execution_logs_take_their_user_from_the_headers_and_filter(app) {
        let caller = app.new_tenant("acme").await;
        let flow_a = flow(&app, &caller).await;
        let flow_b = flow(&app, &caller).await;
        let log = app.post_as(&caller, "/execution-logs", &json!({
            "flowId": flow_a, "executionId": "run-1", "stepId": "a", "status": "running", "inputs": { "x": 1 }
        })).await;
        assert_eq!(log.status, 201, "{}", log.text);
        assert_eq!(log.body["userId"], caller.user_id.as_str());
        app.create_as(&caller, "/execution-logs", &json!({ "flowId": flow_b, "executionId": "run-2", "stepId": "a", "status": "failed", "inputs": {}, "error": "boom" })).await;
        let log_id = log.body["id"].as_str().unwrap_or_default();
        for (query, expected) in [
            (format!("flowId={flow_a}"), 1),
            (format!("flowId={flow_b}&status=failed"), 1),
            (format!("flowId={flow_a}&status=failed"), 0),
            ("executionId=run-1".to_owned(), 1),
            (format!("userId={}", caller.user_id), 2),
            ("status=running".to_owned(), 1),
        ] {
            assert_eq!(ids(&app.get_as(&caller, &format!("/execution-logs?{query}")).await.body).len(), expected, "{query}");
        }
        app.get_as(&caller, "/execution-logs?status=done").await.assert_problem(400);
        let fields = failing_fields(&app, &caller, "/execution-logs", json!({ "flowId": flow_a, "status": "Running", "inputs": [], "userId": caller.user_id })).await;
        assert_eq!(fields, ["inputs", "status", "stepId", "userId"]);
        let updated = app.put_as(&caller, &format!("/execution-logs/{log_id}"), &json!({ "status": "completed", "outputs": { "ok": true } })).await;
        assert_eq!(updated.body["status"], "completed");
        assert_eq!(updated.body["outputs"], json!({ "ok": true }));
    }

    async fn json_fields_come_back_exactly_as_sent(app) {
        let caller = app.new_tenant("acme").await;
        let flow_id = flow(&app, &caller).await;
        let inputs = json!({
            "unicode": "日本語 — ü ß 🎉", "escaped": "line\nbreak \"quoted\"",
            "big": 123456789012345678901234567890u128, "negative": -9223372036854775808i64,
            "decimal": 0.1, "nested": { "a": [1, [2, [3, { "b": null }]]], "empty": {} }
        });
        let text = r#"{"flowId":"FLOW","stepId":"s","status":"completed","inputs":{"exact":1.50,"tiny":-0.000001,"huge":98765432109876543210}}"#
            .replace("FLOW", &flow_id);
        let raw = app.send_raw(poem::http::Method::POST, "/execution-logs", Some("application/json"), text, &caller.headers()).await;
        assert_eq!(raw.status, 201, "{}", raw.text);
        let stored = app.get_as(&caller, &format!("/execution-logs/{}", raw.body["id"].as_str().unwrap_or_default())).await;
        for digits in [r#""exact":1.50"#, r#""tiny":-0.000001"#, r#""huge":98765432109876543210"#] {
            assert!(stored.text.contains(digits), "{digits} kept as written: {}", stored.text);
        }
        let created = app.post_as(&caller, "/execution-logs", &json!({ "flowId": flow_id, "stepId": "s", "status": "completed", "inputs": inputs, "outputs": [1, "two", { "3": [] }], "error": "text" })).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let fetched = app.get_as(&caller, &format!("/execution-logs/{}", created.body["id"].as_str().unwrap_or_default())).await;
        assert_eq!(fetched.body["inputs"], inputs);
        assert!(fetched.text.contains("123456789012345678901234567890"), "large integer kept digit for digit: {}", fetched.text);
        assert_eq!(fetched.body["outputs"], json!([1, "two", { "3": [] }]));
        assert_eq!(fetched.body["error"], "text");
    }

    async fn a_nul_character_is_refused_in_text_and_at_any_depth_of_json_and_nothing_is_written(app) {
        let caller = app.new_tenant("acme").await;
        assert_eq!(failing_fields(&app, &caller, "/tools", json!({ "name": "Sl\u{0}ck", "baseUrl": "https://x.io", "authType": "none" })).await, ["name"]);
        let flow_body = json!({ "name": "F", "steps": [{ "id": "a", "type": "t", "with": { "text": "a\u{0}b" } }] });
        assert_eq!(failing_fields(&app, &caller, "/flows", flow_body).await, ["steps"]);
        let flow_id = flow(&app, &caller).await;
        let log = json!({ "flowId": flow_id, "stepId": "s", "status": "failed", "inputs": { "k\u{0}": 1 }, "error": ["\u{0}"] });
        assert_eq!(failing_fields(&app, &caller, "/execution-logs", log).await, ["error", "inputs"]);
        for path in ["/tools", "/execution-logs"] {
            assert_eq!(app.get_as(&caller, path).await.body, json!([]), "{path}: nothing written");
        }
    }
}
