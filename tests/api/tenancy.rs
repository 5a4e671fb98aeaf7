//! Tenancy: the headers, membership, the first-user rule, and the cross-tenant matrix — another
//! organization's rows are indistinguishable from missing ones.

use poem::http::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{ids, Caller, TestApp};
use crate::on_both_backends;

/// One row of every resource, owned by `caller`; returns `(collection, id)` pairs.
async fn one_of_each(app: &TestApp, caller: &Caller) -> Vec<(&'static str, String)> {
    let user = app
        .create_as(caller, "/users", &json!({ "email": "member@example.com" }))
        .await;
    let tool = app
        .create_as(
            caller,
            "/tools",
            &json!({ "name": "Slack", "baseUrl": "https://slack.com/api", "authType": "bearer" }),
        )
        .await;
    let action = app
        .create_as(
            caller,
            "/actions",
            &json!({ "toolId": tool, "method": "POST", "endpoint": "/chat.postMessage" }),
        )
        .await;
    let flow = app
        .create_as(
            caller,
            "/flows",
            &json!({ "steps": [{ "id": "a", "type": "action" }] }),
        )
        .await;
    let log = app
        .create_as(
            caller,
            "/execution-logs",
            &json!({ "flowId": flow, "stepId": "a", "status": "queued", "inputs": {} }),
        )
        .await;
    vec![
        ("/users", user),
        ("/tools", tool),
        ("/actions", action),
        ("/flows", flow),
        ("/execution-logs", log),
    ]
}

/// A valid new row for each collection, naming `tool` and `flow` where it needs a reference.
fn new_row_for(collection: &str, tool: &str, flow: &str) -> Value {
    match collection {
        "/users" => json!({ "email": "new@example.com" }),
        "/tools" => json!({ "name": "New", "baseUrl": "https://new.example", "authType": "none" }),
        "/actions" => json!({ "toolId": tool, "method": "GET", "endpoint": "/new" }),
        "/flows" => json!({ "steps": [{ "id": "new", "type": "action" }] }),
        _ => json!({ "flowId": flow, "stepId": "new", "status": "queued", "inputs": {} }),
    }
}

/// Everything `caller` can see in every collection.
async fn everything(app: &TestApp, caller: &Caller) -> Vec<Value> {
    let mut seen = Vec::new();
    for collection in ["/users", "/tools", "/actions", "/flows", "/execution-logs"] {
        seen.push(app.get_as(caller, collection).await.body);
    }
    seen
}

/// A harmless valid update for each resource.
fn update_for(collection: &str) -> Value {
    match collection {
        "/users" => json!({ "name": "Intruder" }),
        "/tools" => json!({ "name": "Hijacked" }),
        "/actions" => json!({ "endpoint": "/hijacked" }),
        "/flows" => json!({ "name": "Hijacked" }),
        _ => json!({ "status": "failed" }),
    }
}

on_both_backends! {
    async fn tenant_routes_need_both_headers_as_uuids(app) {
        let caller = app.new_tenant("acme").await;
        for path in ["/users", "/tools", "/actions", "/flows", "/execution-logs"] {
            let none = app.get(path).await;
            let mut fields = none.assert_problem(400);
            fields.sort();
            assert_eq!(fields, ["X-Org-ID", "X-User-ID"], "{path}");
            let bad = app.send(Method::GET, path, None, &[("X-Org-ID", "acme"), ("X-User-ID", &caller.user_id)]).await;
            assert_eq!(bad.assert_problem(400), ["X-Org-ID"], "{path}");
            let empty = app.send(Method::GET, path, None, &[("X-Org-ID", &caller.org_id), ("X-User-ID", "")]).await;
            assert_eq!(empty.assert_problem(400), ["X-User-ID"], "{path}");
        }
        let upper = Caller { org_id: caller.org_id.to_uppercase(), user_id: caller.user_id.to_uppercase() };
        assert_eq!(app.get_as(&upper, "/tools").await.status, 200, "header ids in any letter case");
    }

    async fn a_user_of_another_organization_gets_403(app) {
        let acme = app.new_tenant("acme").await;
        let globex = app.new_tenant("globex").await;
        let mixed = Caller { org_id: acme.org_id.clone(), user_id: globex.user_id.clone() };
        for path in ["/users", "/tools", "/actions", "/flows", "/execution-logs"] {
            app.get_as(&mixed, path).await.assert_problem(403);
        }
        let stranger = Caller { org_id: acme.org_id.clone(), user_id: Uuid::now_v7().to_string() };
        app.post_as(&stranger, "/users", &json!({ "email": "x@example.com" })).await.assert_problem(403);
        let no_org = Caller { org_id: Uuid::now_v7().to_string(), user_id: acme.user_id.clone() };
        app.get_as(&no_org, "/tools").await.assert_problem(403);
    }

    async fn a_caller_who_is_not_a_member_gets_403_on_every_tenant_operation_and_nothing_changes(app) {
        let acme = app.new_tenant("acme").await;
        let globex = app.new_tenant("globex").await;
        let rows = one_of_each(&app, &acme).await;
        let (tool, flow) = (&rows[1].1, &rows[3].1);
        let departed = app.create_as(&acme, "/users", &json!({ "email": "departed@example.com" })).await;
        let departed = Caller { org_id: acme.org_id.clone(), user_id: departed };
        app.delete_as(&acme, &format!("/users/{}", departed.user_id)).await;
        let before = everything(&app, &acme).await;
        let strangers = [
            ("a user of another organization", Caller { org_id: acme.org_id.clone(), user_id: globex.user_id.clone() }),
            ("an unknown user", Caller { org_id: acme.org_id.clone(), user_id: Uuid::now_v7().to_string() }),
            ("a deleted user", departed),
            ("an unknown organization", Caller { org_id: Uuid::now_v7().to_string(), user_id: acme.user_id.clone() }),
        ];
        for (who, stranger) in &strangers {
            for (collection, id) in &rows {
                let new_row = new_row_for(collection, tool, flow);
                let reply = app.post_as(stranger, collection, &new_row).await;
                assert_eq!(reply.status, 403, "{who}: POST {collection}: {}", reply.text);
                for path in [collection.to_string(), format!("{collection}?limit=1")] {
                    assert_eq!(app.get_as(stranger, &path).await.status, 403, "{who}: GET {path}");
                }
                for id in [id.clone(), Uuid::now_v7().to_string()] {
                    let path = format!("{collection}/{id}");
                    assert_eq!(app.get_as(stranger, &path).await.status, 403, "{who}: GET {path}");
                    let reply = app.put_as(stranger, &path, &update_for(collection)).await;
                    assert_eq!(reply.status, 403, "{who}: PUT {path}: {}", reply.text);
                    assert_eq!(app.put_as(stranger, &path, &json!({})).await.status, 403, "{who}: PUT {{}} {path}");
                    assert_eq!(app.delete_as(stranger, &path).await.status, 403, "{who}: DELETE {path}");
                    let cascade = format!("{path}?cascade=true");
                    if !matches!(*collection, "/actions" | "/execution-logs") {
                        assert_eq!(app.delete_as(stranger, &cascade).await.status, 403, "{who}: DELETE {cascade}");
                    }
                }
            }
        }
        assert_eq!(everything(&app, &acme).await, before, "nothing read by a stranger was written");
    }

    async fn a_user_who_deletes_themselves_is_a_stranger_from_then_on(app) {
        let acme = app.new_tenant("acme").await;
        // Another owner stays, so that this one is not the last.
        let other = app.create_as(&acme, "/users", &json!({ "email": "other@example.com", "role": "owner" })).await;
        let me = format!("/users/{}", acme.user_id);
        assert_eq!(app.delete_as(&acme, &me).await.status, 204);
        app.get_as(&acme, "/tools").await.assert_problem(403);
        app.get_as(&acme, &format!("/users/{other}")).await.assert_problem(403);
        let member = Caller { org_id: acme.org_id.clone(), user_id: other };
        assert_eq!(app.get_as(&member, &me).await.status, 404, "gone for the members who remain");
    }

    async fn the_first_user_of_an_empty_organization_may_be_created_by_anyone_then_only_by_members(app) {
        let org_id = app.create_org("fresh").await;
        let anyone = Caller { org_id: org_id.clone(), user_id: Uuid::now_v7().to_string() };
        app.get_as(&anyone, "/users").await.assert_problem(403);
        let first = app.post_as(&anyone, "/users", &json!({ "email": "first@example.com" })).await;
        assert_eq!(first.status, 201, "{}", first.text);
        assert_ne!(first.body["id"], anyone.user_id.as_str(), "the id is made by the server");
        app.post_as(&anyone, "/users", &json!({ "email": "second@example.com" })).await.assert_problem(403);
        let member = Caller { org_id, user_id: first.body["id"].as_str().unwrap_or_default().to_owned() };
        assert_eq!(app.post_as(&member, "/users", &json!({ "email": "second@example.com" })).await.status, 201);
    }

    async fn another_organizations_rows_are_404_on_get_put_and_delete_and_stay_unchanged(app) {
        let owner = app.new_tenant("owner").await;
        let intruder = app.new_tenant("intruder").await;
        let rows = one_of_each(&app, &owner).await;
        for (collection, id) in &rows {
            let path = format!("{collection}/{id}");
            let before = app.get_as(&owner, &path).await.body;
            app.get_as(&intruder, &path).await.assert_problem(404);
            app.put_as(&intruder, &path, &update_for(collection)).await.assert_problem(404);
            app.delete_as(&intruder, &path).await.assert_problem(404);
            let missing = format!("{collection}/{}", Uuid::now_v7());
            let not_there = app.get_as(&intruder, &missing).await;
            let other_tenants = app.get_as(&intruder, &path).await;
            assert_eq!(not_there.body["detail"], other_tenants.body["detail"], "indistinguishable from missing");
            assert_eq!(app.get_as(&owner, &path).await.body, before, "{path} unchanged");
        }
    }

    async fn another_organizations_rows_never_appear_in_lists_or_filtered_lists(app) {
        let owner = app.new_tenant("owner").await;
        let intruder = app.new_tenant("intruder").await;
        let rows = one_of_each(&app, &owner).await;
        let tool = &rows[1].1;
        let flow = &rows[3].1;
        for collection in ["/tools", "/actions", "/flows", "/execution-logs"] {
            assert_eq!(app.get_as(&intruder, collection).await.body, json!([]), "{collection}");
        }
        let users = ids(&app.get_as(&intruder, "/users").await.body);
        assert_eq!(users, std::slice::from_ref(&intruder.user_id), "only the intruder's own user");
        for filtered in [
            format!("/actions?toolId={tool}"),
            format!("/execution-logs?flowId={flow}"),
            format!("/execution-logs?userId={}", owner.user_id),
            "/execution-logs?status=queued".to_owned(),
        ] {
            assert_eq!(app.get_as(&intruder, &filtered).await.body, json!([]), "{filtered}");
            assert_eq!(ids(&app.get_as(&owner, &filtered).await.body).len(), 1, "{filtered} for the owner");
        }
    }

    async fn body_references_to_another_organizations_tool_or_flow_are_422(app) {
        let owner = app.new_tenant("owner").await;
        let intruder = app.new_tenant("intruder").await;
        let rows = one_of_each(&app, &owner).await;
        let (tool, action, flow, log) = (&rows[1].1, &rows[2].1, &rows[3].1, &rows[4].1);
        let reply = app.post_as(&intruder, "/actions", &json!({ "toolId": tool, "method": "GET", "endpoint": "/x" })).await;
        assert_eq!(reply.assert_problem(422), ["toolId"]);
        let reply = app
            .post_as(&intruder, "/execution-logs", &json!({ "flowId": flow, "stepId": "a", "status": "queued", "inputs": {} }))
            .await;
        assert_eq!(reply.assert_problem(422), ["flowId"]);
        let own_tool = app
            .create_as(&intruder, "/tools", &json!({ "name": "Own", "baseUrl": "http://localhost:8080", "authType": "none" }))
            .await;
        let own_action = app
            .create_as(&intruder, "/actions", &json!({ "toolId": own_tool, "method": "get", "endpoint": "/x" }))
            .await;
        let reply = app.put_as(&intruder, &format!("/actions/{own_action}"), &json!({ "toolId": tool })).await;
        assert_eq!(reply.assert_problem(422), ["toolId"]);
        assert_eq!(app.get_as(&intruder, &format!("/actions/{own_action}")).await.body["toolId"], own_tool.as_str());
        assert_eq!(app.get_as(&owner, &format!("/actions/{action}")).await.status, 200);
        assert_eq!(app.get_as(&owner, &format!("/execution-logs/{log}")).await.body["flowId"], flow.as_str());
    }
}
