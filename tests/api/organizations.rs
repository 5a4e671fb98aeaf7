//! `/organizations`, rule by rule as API.md states them.

use std::collections::HashSet;

use chrono::Utc;
use entity::{action, execution_log, flow, tool, user};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{ids, next_path, TestApp};
use crate::on_both_backends;

/// `PUT /organizations/{org_id}` with `body`, which must succeed; the organization as it is
/// now.
pub(crate) async fn update_organization(app: &TestApp, org_id: &str, body: &Value) -> Value {
    let reply = app.put(&format!("/organizations/{org_id}"), body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

fn is_api_timestamp(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    let bytes = text.as_bytes();
    text.len() == 24
        && text.ends_with('Z')
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

/// Gives `org_id` one row of every kind, straight through the database (the API for them is
/// not under test here).
async fn give_org_rows(app: &TestApp, org_id: &str) {
    let org_id = Uuid::parse_str(org_id).expect("org id");
    let at = Utc::now();
    let user_id = Uuid::now_v7();
    let tool_id = Uuid::now_v7();
    let flow_id = Uuid::now_v7();
    user::ActiveModel {
        id: Set(user_id),
        org_id: Set(org_id),
        email: Set("a@example.com".into()),
        email_folded: Set("a@example.com".into()),
        name: Set(None),
        role: Set("owner".into()),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&app.db)
    .await
    .expect("user");
    tool::ActiveModel {
        id: Set(tool_id),
        org_id: Set(org_id),
        name: Set("Slack".into()),
        base_url: Set("https://slack.com/api".into()),
        auth_type: Set("bearer".into()),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    }
    .insert(&app.db)
    .await
    .expect("tool");
    action::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(org_id),
        tool_id: Set(tool_id),
        name: Set(None),
        method: Set("POST".into()),
        endpoint: Set("/chat.postMessage".into()),
        schema: Set(json!({})),
        execute_if: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&app.db)
    .await
    .expect("action");
    flow::ActiveModel {
        id: Set(flow_id),
        org_id: Set(org_id),
        name: Set(None),
        steps: Set(json!([])),
        version: Set(1),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&app.db)
    .await
    .expect("flow");
    execution_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        org_id: Set(org_id),
        flow_id: Set(flow_id),
        user_id: Set(user_id),
        execution_id: Set(None),
        step_id: Set("s1".into()),
        status: Set("completed".into()),
        inputs: Set(json!({})),
        outputs: Set(None),
        error: Set(None),
        run_id: Set(None),
        attempt: Set(None),
        duration_ms: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&app.db)
    .await
    .expect("execution log");
}

on_both_backends! {
    async fn post_organization_returns_201_with_row_and_location(app) {
        let reply = app.post("/organizations", &json!({ "name": "  Acme  " })).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let id = reply.body["id"].as_str().expect("id");
        let uuid = Uuid::parse_str(id).expect("id is a UUID");
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(reply.body["name"], "Acme", "surrounding white space is trimmed");
        assert!(is_api_timestamp(&reply.body["createdAt"]), "{}", reply.text);
        assert_eq!(reply.body["createdAt"], reply.body["updatedAt"]);
        assert_eq!(reply.header("location"), Some(format!("/organizations/{id}").as_str()));
        let fetched = app.get(&format!("/organizations/{id}")).await;
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.body, reply.body);
    }

    async fn post_organization_lists_every_failing_field_and_writes_nothing(app) {
        let reply = app
            .post(
                "/organizations",
                &json!({ "name": "", "id": Uuid::now_v7(), "createdAt": "2026-01-01T00:00:00.000Z", "colour": "red" }),
            )
            .await;
        let mut fields = reply.assert_problem(400);
        fields.sort();
        assert_eq!(fields, ["colour", "createdAt", "id", "name"]);
        assert_eq!(reply.body["type"], "/problems/validation");
        assert_eq!(app.get("/organizations").await.body, json!([]));
    }

    async fn post_organization_checks_name_type_presence_and_length_in_characters(app) {
        for (body, field) in [
            (json!({}), "name"),
            (json!({ "name": null }), "name"),
            (json!({ "name": 42 }), "name"),
            (json!({ "name": "   " }), "name"),
            (json!({ "name": "é".repeat(201) }), "name"),
        ] {
            let reply = app.post("/organizations", &body).await;
            assert_eq!(reply.assert_problem(400), [field], "body {body}");
        }
        let reply = app.post("/organizations", &json!({ "name": "é".repeat(200) })).await;
        assert_eq!(reply.status, 201, "200 two-byte characters are 200 characters");
    }

    async fn post_organization_refuses_bodies_that_are_not_a_json_object(app) {
        use poem::http::Method;
        let not_json = app.send_raw(Method::POST, "/organizations", Some("application/json"), "{\"name\":", &[]).await;
        not_json.assert_problem(400);
        let array = app.send_raw(Method::POST, "/organizations", Some("application/json"), "[1]", &[]).await;
        assert_eq!(array.assert_problem(400), ["body"]);
        let form = app.send_raw(Method::POST, "/organizations", Some("application/x-www-form-urlencoded"), "name=Acme", &[]).await;
        assert_eq!(form.assert_problem(400), ["Content-Type"]);
        let bare = app.send_raw(Method::POST, "/organizations", None, "{\"name\":\"Acme\"}", &[]).await;
        assert_eq!(bare.assert_problem(400), ["Content-Type"]);
        let charset = app
            .send_raw(Method::POST, "/organizations", Some("application/json; charset=utf-8"), "{\"name\":\"Acme\"}", &[])
            .await;
        assert_eq!(charset.status, 201);
    }

    async fn get_organization_by_unknown_id_returns_404_and_malformed_id_400(app) {
        let missing = app.get(&format!("/organizations/{}", Uuid::now_v7())).await;
        missing.assert_problem(404);
        let malformed = app.get("/organizations/not-a-uuid").await;
        assert_eq!(malformed.assert_problem(400), ["id"]);
    }

    async fn get_organization_accepts_the_id_in_any_letter_case(app) {
        let id = app.create_org("Acme").await;
        let reply = app.get(&format!("/organizations/{}", id.to_uppercase())).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["id"], id.as_str());
    }

    async fn list_organizations_pages_newest_first_with_link_header(app) {
        let mut created = Vec::new();
        for n in 0..5 {
            created.push(app.create_org(&format!("Org {n}")).await);
        }
        created.reverse();
        let first = app.get("/organizations?limit=2").await;
        assert_eq!(first.status, 200);
        assert_eq!(ids(&first.body), created[..2]);
        let link = first.header("link").expect("a next page");
        assert!(link.contains("limit=2"), "{link}");
        let pages = app.walk("/organizations?limit=2").await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(pages.concat(), created, "every row once, newest first");
        let last = app.get(&next_path(app.get(&next_path(link)).await.header("link").expect("third page"))).await;
        assert_eq!(last.header("link"), None, "no Link on the last page");
    }

    async fn list_rows_equal_their_get(app) {
        let id = app.create_org("Acme").await;
        let listed = app.get("/organizations").await;
        let got = app.get(&format!("/organizations/{id}")).await;
        assert_eq!(listed.body, json!([got.body]));
    }

    async fn list_organizations_walk_sees_each_row_once_while_rows_are_inserted(app) {
        let mut original = HashSet::new();
        for n in 0..7 {
            original.insert(app.create_org(&format!("Org {n}")).await);
        }
        let mut seen = Vec::new();
        let mut next = Some("/organizations?limit=3".to_owned());
        while let Some(path) = next.take() {
            let page = app.get(&path).await;
            seen.extend(ids(&page.body));
            app.create_org("Newcomer").await;
            next = page.header("link").map(next_path);
        }
        assert_eq!(seen.len(), original.len(), "no row repeated or added mid-walk");
        assert_eq!(seen.into_iter().collect::<HashSet<_>>(), original);
    }

    async fn list_organizations_refuses_bad_limit_and_cursor(app) {
        for query in ["limit=0", "limit=1001", "limit=abc", "limit=-1"] {
            let reply = app.get(&format!("/organizations?{query}")).await;
            assert_eq!(reply.assert_problem(400), ["limit"], "{query}");
        }
        assert_eq!(app.get("/organizations?limit=1000").await.status, 200);
        let reply = app.get("/organizations?cursor=bogus").await;
        assert_eq!(reply.assert_problem(400), ["cursor"]);
    }

    async fn put_organization_changes_name_and_updated_at(app) {
        let id = app.create_org("Acme").await;
        let before = app.get(&format!("/organizations/{id}")).await.body;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let reply = app.put(&format!("/organizations/{id}"), &json!({ "name": " Acme Inc. " })).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["name"], "Acme Inc.");
        assert_eq!(reply.body["createdAt"], before["createdAt"]);
        assert!(reply.body["updatedAt"].as_str() > before["updatedAt"].as_str());
        assert_eq!(app.get(&format!("/organizations/{id}")).await.body, reply.body);
    }

    async fn put_organization_that_changes_nothing_keeps_updated_at(app) {
        let id = app.create_org("Acme").await;
        let before = app.get(&format!("/organizations/{id}")).await.body;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        for body in [json!({}), json!({ "name": "Acme" }), json!({ "name": " Acme " })] {
            let reply = app.put(&format!("/organizations/{id}"), &body).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.body, before, "no-op for {body}");
        }
    }

    async fn put_organization_refuses_null_unknown_and_server_owned_fields(app) {
        let id = app.create_org("Acme").await;
        let reply = app
            .put(&format!("/organizations/{id}"), &json!({ "name": null, "updatedAt": "x", "plan": "pro" }))
            .await;
        let mut fields = reply.assert_problem(400);
        fields.sort();
        assert_eq!(fields, ["name", "plan", "updatedAt"]);
        assert_eq!(app.get(&format!("/organizations/{id}")).await.body["name"], "Acme");
        let missing = app.put(&format!("/organizations/{}", Uuid::now_v7()), &json!({ "name": "X" })).await;
        missing.assert_problem(404);
    }

    async fn delete_organization_returns_204_then_404(app) {
        let id = app.create_org("Acme").await;
        let reply = app.delete(&format!("/organizations/{id}")).await;
        assert_eq!(reply.status, 204);
        assert_eq!(reply.text, "");
        app.get(&format!("/organizations/{id}")).await.assert_problem(404);
        app.delete(&format!("/organizations/{id}")).await.assert_problem(404);
    }

    async fn delete_organization_with_rows_returns_409_with_counts(app) {
        let id = app.create_org("Acme").await;
        give_org_rows(&app, &id).await;
        let reply = app.delete(&format!("/organizations/{id}")).await;
        reply.assert_problem(409);
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        for count in ["1 users", "1 tools", "1 actions", "1 flows", "1 execution logs"] {
            assert!(detail.contains(count), "detail should say {count}: {detail}");
        }
        assert_eq!(app.get(&format!("/organizations/{id}")).await.status, 200);
    }

    async fn delete_organization_with_cascade_removes_it_and_all_its_rows(app) {
        let doomed = app.create_org("Doomed").await;
        let kept = app.create_org("Kept").await;
        give_org_rows(&app, &doomed).await;
        give_org_rows(&app, &kept).await;
        let reply = app.delete(&format!("/organizations/{doomed}?cascade=true")).await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        app.get(&format!("/organizations/{doomed}")).await.assert_problem(404);
        let kept_reply = app.delete(&format!("/organizations/{kept}")).await;
        kept_reply.assert_problem(409);
        assert!(kept_reply.body["detail"].as_str().unwrap_or_default().contains("1 users"));
        let bad = app.delete(&format!("/organizations/{kept}?cascade=maybe")).await;
        assert_eq!(bad.assert_problem(400), ["cascade"]);
    }
}
