//! Races: uniqueness and flow versions hold when requests arrive together, and a paginated
//! walk stays exact while rows are inserted.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::{ids, next_path};
use crate::on_both_backends;

on_both_backends! {
    async fn twenty_parallel_creates_of_one_email_give_one_201_and_nineteen_409(app) {
        let caller = app.new_tenant("acme").await;
        let app = Arc::new(app);
        let mut requests = JoinSet::new();
        for n in 0..20 {
            let (app, caller) = (app.clone(), caller.clone());
            // Letter case varies: uniqueness ignores it.
            let email = if n % 2 == 0 { "race@example.com" } else { "RACE@example.com" };
            requests.spawn(async move { app.post_as(&caller, "/users", &json!({ "email": email })).await.status });
        }
        let mut statuses = requests.join_all().await;
        statuses.sort_unstable();
        let mut expected = vec![201];
        expected.extend([409; 19]);
        assert_eq!(statuses, expected);
        assert_eq!(ids(&app.get_as(&caller, "/users").await.body).len(), 2, "the owner and one racer");
    }

    async fn ten_parallel_flow_updates_from_one_version_give_one_200_and_nine_409(app) {
        let caller = app.new_tenant("acme").await;
        let flow = app.create_as(&caller, "/flows", &json!({ "steps": [] })).await;
        let app = Arc::new(app);
        let mut requests = JoinSet::new();
        for n in 0..10 {
            let (app, caller, path) = (app.clone(), caller.clone(), format!("/flows/{flow}"));
            requests.spawn(async move {
                let body = json!({ "name": format!("writer {n}"), "version": 1 });
                app.put_as(&caller, &path, &body).await.status
            });
        }
        let mut statuses = requests.join_all().await;
        statuses.sort_unstable();
        let mut expected = vec![200];
        expected.extend([409; 9]);
        assert_eq!(statuses, expected);
        let stored = app.get_as(&caller, &format!("/flows/{flow}")).await;
        assert_eq!(stored.body["version"], 2, "exactly one update landed");
    }

    async fn ten_parallel_flow_updates_without_a_version_all_land_and_each_counts(app) {
        let caller = app.new_tenant("acme").await;
        let flow = app.create_as(&caller, "/flows", &json!({ "steps": [] })).await;
        let app = Arc::new(app);
        let mut requests = JoinSet::new();
        for n in 0..10 {
            let (app, caller, path) = (app.clone(), caller.clone(), format!("/flows/{flow}"));
            requests.spawn(async move {
                let body = json!({ "name": format!("writer {n}") });
                app.put_as(&caller, &path, &body).await.status
            });
        }
        assert_eq!(requests.join_all().await, [200; 10], "no precondition, so no conflict");
        let stored = app.get_as(&caller, &format!("/flows/{flow}")).await;
        assert_eq!(stored.body["version"], 11, "each of the ten changes counted once");
    }

    async fn a_walk_over_execution_logs_sees_each_row_once_newest_first_while_rows_are_inserted(app) {
        let caller = app.new_tenant("acme").await;
        let flow = app.create_as(&caller, "/flows", &json!({ "steps": [] })).await;
        let log = json!({ "flowId": flow, "stepId": "s", "status": "completed", "inputs": {} });
        let mut original = Vec::new();
        for _ in 0..9 {
            original.push(app.create_as(&caller, "/execution-logs", &log).await);
        }
        original.reverse();
        let mut seen = Vec::new();
        let mut next = Some(format!("/execution-logs?flowId={flow}&limit=4"));
        while let Some(path) = next.take() {
            let page = app.get_as(&caller, &path).await;
            seen.extend(ids(&page.body));
            app.create_as(&caller, "/execution-logs", &log).await;
            next = page.header("link").map(next_path);
        }
        assert_eq!(seen, original, "each original row once, newest first, none of the newcomers");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
    }
}
