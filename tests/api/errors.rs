//! The error model and request plumbing that every route shares.

use poem::http::Method;
use poem::{handler, Route};
use serde_json::json;
use tolstoy::startup::with_middleware;

use crate::helpers::TestApp;
use crate::on_both_backends;

on_both_backends! {
    async fn every_response_carries_a_request_id_and_keeps_a_sane_one(app) {
        let fresh = app.get("/health").await;
        let generated = fresh.header("x-request-id").expect("request id");
        assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");

        let kept = app.send(Method::GET, "/health", None, &[("X-Request-Id", "trace-abc.123")]).await;
        assert_eq!(kept.header("x-request-id"), Some("trace-abc.123"));

        let long = "a".repeat(129);
        for insane in [long.as_str(), "has space", "tab\there"] {
            let replaced = app.send(Method::GET, "/health", None, &[("X-Request-Id", insane)]).await;
            let id = replaced.header("x-request-id").expect("request id");
            assert!(uuid::Uuid::parse_str(id).is_ok(), "{insane:?} should be replaced, got {id}");
        }

        let problem = app.send(Method::GET, "/organizations/x", None, &[("X-Request-Id", "mine-1")]).await;
        problem.assert_problem(400);
        assert_eq!(problem.body["requestId"], "mine-1");
    }

    async fn unknown_route_is_404_and_wrong_method_405_as_problems(app) {
        app.get("/no/such/route").await.assert_problem(404);
        let reply = app.send(Method::PATCH, "/organizations", Some(&json!({})), &[]).await;
        reply.assert_problem(405);
        // RFC 9110 asks a 405 to say what the path does allow (found by schemathesis).
        assert_eq!(reply.header("allow"), Some("GET, POST"));
        let item = app.send(Method::TRACE, "/tools/01a1fd98-4cfe-7138-9225-91062752751f", None, &[]).await;
        item.assert_problem(405);
        assert_eq!(item.header("allow"), Some("DELETE, GET, PUT"));
    }

    async fn body_over_the_limit_is_413_and_writes_nothing(app) {
        let padding = "x".repeat(tolstoy::config::DEFAULT_MAX_BODY_BYTES);
        let reply = app.post("/organizations", &json!({ "name": padding })).await;
        reply.assert_problem(413);
        let chunked_body = format!("{{\"name\":\"{padding}\"}}").into_bytes();
        let chunked = poem::Body::from_async_read(std::io::Cursor::new(chunked_body));
        let reply = app.send_raw(Method::POST, "/organizations", Some("application/json"), chunked, &[]).await;
        reply.assert_problem(413);
        assert_eq!(app.get("/organizations").await.body, json!([]));
    }

    async fn database_loss_answers_503_problem_and_ready_503(app) {
        app.db.clone().close().await.expect("close the pool");
        let reply = app.get("/organizations").await;
        reply.assert_problem(503);
        assert!(!reply.text.contains("sqlite") && !reply.text.contains("postgres"), "{}", reply.text);
        app.get("/ready").await.assert_problem(503);
        assert_eq!(app.get("/health").await.status, 200, "liveness does not need the database");
    }

    async fn a_panic_becomes_a_500_problem_that_says_nothing_internal(app) {
        #[handler]
        fn explode() -> &'static str {
            panic!("secret internals: password=hunter2")
        }
        let panicking = TestApp::with_endpoint(app.backend, app.db.clone(), with_middleware(Route::new().at("/explode", explode)));
        let reply = panicking.get("/explode").await;
        reply.assert_problem(500);
        assert!(!reply.text.contains("hunter2") && !reply.text.contains("secret"), "{}", reply.text);
    }
}
