//! `/metrics`: after known requests its counters and histogram counts are exactly what was
//! sent, no label carries an id, `METRICS_TOKEN` is enforced, and the executor's steps and runs
//! are counted.

use serde_json::json;

use crate::helpers::target::Target;
use crate::helpers::{identity, TestApp};
use crate::on_both_backends;
use crate::runs::{finished, flow_of_calls, start, tool, workers};

/// The value of the sample named `name` with exactly `labels` (as written between the braces),
/// or `None` when the scrape has no such sample.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().expect("a number"))
}

async fn scrape(app: &TestApp) -> String {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        reply.header("content-type")
    );
    assert!(reply.text.ends_with("# EOF\n"), "a complete exposition");
    reply.text
}

on_both_backends! {
    /// Three found tools, two unknown ids and one unknown path: counted under the route
    /// template and the status class, never under a raw path.
    async fn requests_are_counted_by_route_template_and_status_class(app) {
        let caller = app.new_tenant("Acme").await;
        let tool_id = app.create_as(&caller, "/tools", &json!({"name": "Stripe", "baseUrl": "https://api.stripe.com", "authType": "none"})).await;
        for _ in 0..3 {
            assert_eq!(app.get_as(&caller, &format!("/tools/{tool_id}")).await.status, 200);
        }
        for _ in 0..2 {
            let unknown = uuid::Uuid::now_v7();
            assert_eq!(app.get_as(&caller, &format!("/tools/{unknown}")).await.status, 404);
        }
        assert_eq!(app.get("/no/such/path").await.status, 404);

        let text = scrape(&app).await;
        let get_tool = r#"method="GET",route="/tools/{id}""#;
        assert_eq!(sample(&text, "tolstoy_http_requests_total", &format!(r#"{get_tool},status="2xx""#)), Some(3.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_http_requests_total", &format!(r#"{get_tool},status="4xx""#)), Some(2.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_http_request_duration_seconds_count", get_tool), Some(5.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_http_requests_total", r#"method="POST",route="/tools",status="2xx""#), Some(1.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_http_requests_total", r#"method="GET",route="unmatched",status="4xx""#), Some(1.0), "{text}");
        // The histogram's buckets hold every observation.
        assert_eq!(sample(&text, "tolstoy_http_request_duration_seconds_bucket", &format!(r#"le="+Inf",{get_tool}"#)), Some(5.0), "{text}");

        // No label value is an id, a name or a path a caller chose.
        let label_values: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| Some(line.split_once('{')?.1.split_once('}')?.0))
            .collect();
        assert!(!label_values.is_empty());
        for labels in label_values {
            assert!(!labels.contains(&tool_id) && !labels.contains("Stripe") && !labels.contains("/no/such"), "{labels}");
            assert!(!labels.contains(&caller.org_id) && !labels.contains(&caller.user_id), "{labels}");
        }
        // The pool and the queue are read at the scrape.
        assert_eq!(sample(&text, "tolstoy_database_up", ""), Some(1.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_queue_depth", ""), Some(0.0), "{text}");
        assert!(sample(&text, "tolstoy_db_pool_max_connections", "").is_some_and(|max| max >= 1.0), "{text}");
    }

    /// With METRICS_TOKEN set, only `Bearer <token>` reads the metrics.
    async fn metrics_token_is_enforced(app) {
        let open = scrape(&app).await;
        assert!(open.contains("tolstoy_db_pool_max_connections"), "{open}");
        let token = "scrape-token-0123456789";
        let app = app.reconfigured(|state| state.identity = identity(&[("METRICS_TOKEN", token)]));
        let without = app.get("/metrics").await;
        assert_eq!(without.status, 401, "{}", without.text);
        without.assert_problem(401);
        assert_eq!(without.header("www-authenticate"), Some("Bearer"));
        for wrong in ["Bearer nope", "Basic c2NyYXBlOnRva2Vu", token] {
            let reply = app.send(poem::http::Method::GET, "/metrics", None, &[("Authorization", wrong)]).await;
            assert_eq!(reply.status, 401, "{wrong}: {}", reply.text);
            assert!(!reply.text.contains("tolstoy_"), "nothing leaks to a wrong token");
        }
        let bearer = format!("Bearer {token}");
        let right = app.send(poem::http::Method::GET, "/metrics", None, &[("Authorization", &bearer)]).await;
        assert_eq!(right.status, 200, "{}", right.text);
        assert!(right.text.contains("tolstoy_http_requests_total"));
    }

    /// Every 429 of the per-organization limit is counted under its route.
    async fn rate_limit_refusals_are_counted(app) {
        let caller = app.new_tenant("Acme").await;
        let app = app.reconfigured(|state| state.identity = identity(&[("RATE_LIMIT_PER_ORG", "1")]));
        let mut refused = 0;
        for _ in 0..10 {
            match app.get_as(&caller, "/tools").await.status {
                200 => {}
                429 => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert!(refused > 0, "ten requests at once exceed one per second");
        let text = scrape(&app).await;
        assert_eq!(sample(&text, "tolstoy_rate_limited_total", r#"method="GET",route="/tools""#), Some(f64::from(refused)), "{text}");
        assert_eq!(sample(&text, "tolstoy_http_requests_total", r#"method="GET",route="/tools",status="4xx""#), Some(f64::from(refused)), "{text}");
    }

    /// A run of two steps, one retried once: its attempts and its end are counted.
    async fn step_attempts_and_finished_runs_are_counted(app) {
        let target = Target::start().await;
        let (app, _workers) = workers(&app, &[]).await;
        let caller = app.new_tenant("Acme").await;
        let tool_id = tool(&app, &caller, &target.url).await;
        let calls = [("a", "/flaky/m?fail=1&status=503"), ("b", "/echo/b")];
        let retry = json!({"retry": {"maxAttempts": 2, "initialDelayMs": 10}});
        let flow_id = flow_of_calls(&app, &caller, &tool_id, &calls, retry).await;
        let run = start(&app, &caller, &flow_id, json!({})).await;
        assert_eq!(finished(&app, &caller, &run).await["status"], "completed");

        // The worker counts a transition just after committing it, so a client may see the run
        // finished a moment before its counts move: wait for the last one.
        let mut text = scrape(&app).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sample(&text, "tolstoy_runs_finished_total", r#"status="completed""#).is_none()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            text = scrape(&app).await;
        }
        assert_eq!(sample(&text, "tolstoy_step_attempts_total", r#"status="failed""#), Some(1.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_step_attempts_total", r#"status="completed""#), Some(2.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_step_duration_seconds_count", r#"status="completed""#), Some(2.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_runs_finished_total", r#"status="completed""#), Some(1.0), "{text}");
        assert_eq!(sample(&text, "tolstoy_runs", r#"status="running""#), Some(0.0), "{text}");
    }
}
