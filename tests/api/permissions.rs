//! The permission matrix, generated from the OpenAPI document: every operation × every role ×
//! own or another organization's row, and every operation × every kind of bad credentials, in
//! keys mode and in headers mode. Each cell's expected status comes from API.md's tables (the
//! `NEEDS` table below); an operation of the document that the table does not list fails the
//! test, so the matrix cannot go stale.

use poem::http::Method;
use serde_json::{json, Value};

use crate::helpers::{Caller, TestApp};
use crate::on_both_backends;

const ADMIN_TOKEN: &str = "matrix-admin-token-0123456789abcdef0123";

/// Who may call an operation, as API.md says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    /// No credentials at all (`/health`, `/ready`).
    Open,
    /// A member with at least this role (0 viewer, 1 editor, 2 admin, 3 owner).
    Role(u8),
    /// Only the platform operator's admin token.
    Operator,
}

/// Every operation of the document and what it needs. Keep in step with API.md.
const NEEDS: &[(&str, Need)] = &[
    ("health", Need::Open),
    ("ready", Need::Open),
    ("signUp", Need::Operator),
    ("createOrganization", Need::Operator),
    ("listOrganizations", Need::Role(0)),
    ("getOrganization", Need::Role(0)),
    ("updateOrganization", Need::Role(2)),
    ("deleteOrganization", Need::Role(3)),
    ("listUsers", Need::Role(0)),
    ("getUser", Need::Role(0)),
    ("createUser", Need::Role(2)),
    ("updateUser", Need::Role(2)),
    ("deleteUser", Need::Role(2)),
    ("listTools", Need::Role(0)),
    ("getTool", Need::Role(0)),
    ("createTool", Need::Role(1)),
    ("updateTool", Need::Role(1)),
    ("deleteTool", Need::Role(1)),
    ("listActions", Need::Role(0)),
    ("getAction", Need::Role(0)),
    ("createAction", Need::Role(1)),
    ("updateAction", Need::Role(1)),
    ("deleteAction", Need::Role(1)),
    ("listFlows", Need::Role(0)),
    ("getFlow", Need::Role(0)),
    ("createFlow", Need::Role(1)),
    ("updateFlow", Need::Role(1)),
    ("deleteFlow", Need::Role(1)),
    ("listExecutionLogs", Need::Role(0)),
    ("exportExecutionLogs", Need::Role(0)),
    ("getExecutionLog", Need::Role(0)),
    ("createExecutionLog", Need::Role(1)),
    ("updateExecutionLog", Need::Role(1)),
    ("deleteExecutionLog", Need::Role(1)),
    ("createApiKey", Need::Role(0)),
    ("listApiKeys", Need::Role(0)),
    ("getApiKey", Need::Role(0)),
    ("revokeApiKey", Need::Role(0)),
    ("startRun", Need::Role(1)),
    ("listRuns", Need::Role(0)),
    ("exportRuns", Need::Role(0)),
    ("getRun", Need::Role(0)),
    ("cancelRun", Need::Role(1)),
    ("streamRunEvents", Need::Role(0)),
];

const ROLES: [&str; 4] = ["viewer", "editor", "admin", "owner"];

/// One operation of the document.
#[derive(Clone, Debug)]
struct Operation {
    id: String,
    method: Method,
    path: String,
}

fn operations() -> Vec<Operation> {
    let document = tolstoy::api::openapi_value();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            operations.push(Operation {
                id: operation["operationId"]
                    .as_str()
                    .expect("operationId")
                    .to_owned(),
                method: method.to_uppercase().parse().expect("method"),
                path: path.clone(),
            });
        }
    }
    operations
}

/// The rows a cell acts on, in one organization made for it.
struct Fixture {
    org_id: String,
    /// A key and a caller (the user, for headers mode) of each role, viewer first.
    callers: Vec<(String, Caller)>,
    /// Row ids by path template.
    rows: Vec<(&'static str, String)>,
    /// A key of each caller's own, to revoke (`/api-keys/{id}`), viewer first.
    own_keys: Vec<String>,
    revoked: String,
    expired: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let signed = app
        .with_key(
            ADMIN_TOKEN,
            Method::POST,
            "/signup",
            Some(&json!({
            "organization": { "name": "Matrix" }, "owner": { "email": "owner@example.com" } })),
        )
        .await;
    assert_eq!(signed.status, 201, "{}", signed.text);
    let org_id = signed.body["organization"]["id"]
        .as_str()
        .expect("org")
        .to_owned();
    let owner_key = signed.body["apiKey"]["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let owner = Caller {
        org_id: org_id.clone(),
        user_id: signed.body["user"]["id"].as_str().expect("user").to_owned(),
    };
    let post = |path: &'static str, body: Value| {
        let key = owner_key.clone();
        async move {
            let reply = app.with_key(&key, Method::POST, path, Some(&body)).await;
            assert_eq!(reply.status, 201, "POST {path}: {}", reply.text);
            reply.body
        }
    };
    let mut callers = Vec::new();
    for role in &ROLES[..3] {
        let user = post(
            "/users",
            json!({ "email": format!("{role}@example.com"), "role": role }),
        )
        .await;
        let caller = Caller {
            org_id: org_id.clone(),
            user_id: user["id"].as_str().expect("id").to_owned(),
        };
        let key = post(
            "/api-keys",
            json!({ "name": role, "userId": caller.user_id }),
        )
        .await;
        callers.push((key["key"].as_str().expect("key").to_owned(), caller));
    }
    callers.push((owner_key.clone(), owner.clone()));
    let mut own_keys = Vec::new();
    for (key, _) in &callers {
        let own = app
            .with_key(
                key,
                Method::POST,
                "/api-keys",
                Some(&json!({ "name": "own" })),
            )
            .await;
        own_keys.push(own.body["id"].as_str().expect("id").to_owned());
    }
    let target = post("/users", json!({ "email": "target@example.com" })).await;
    let tool = post(
        "/tools",
        json!({ "name": "Slack", "baseUrl": "https://slack.com/api", "authType": "none" }),
    )
    .await;
    let action = post(
        "/actions",
        json!({ "toolId": tool["id"], "method": "GET", "endpoint": "/x" }),
    )
    .await;
    let flow = post("/flows", json!({ "steps": [] })).await;
    let log = post(
        "/execution-logs",
        json!({ "flowId": flow["id"], "stepId": "s", "status": "queued", "inputs": {} }),
    )
    .await;
    let start_run = || async {
        let path = format!("/flows/{}/runs", flow["id"].as_str().expect("flow id"));
        let reply = app
            .with_key(&owner_key, Method::POST, &path, Some(&json!({})))
            .await;
        assert_eq!(reply.status, 202, "POST {path}: {}", reply.text);
        reply.body["id"].as_str().expect("run id").to_owned()
    };
    // A queued run to cancel, and a finished one to read (its event stream ends).
    let queued_run = start_run().await;
    let finished_run = start_run().await;
    let cancel = format!("/runs/{finished_run}/cancel");
    let cancelled = app.with_key(&owner_key, Method::POST, &cancel, None).await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.text);
    let revoked = post("/api-keys", json!({ "name": "revoked" })).await;
    let revoked_id = revoked["id"].as_str().expect("id");
    assert_eq!(
        app.with_key(
            &owner_key,
            Method::DELETE,
            &format!("/api-keys/{revoked_id}"),
            None
        )
        .await
        .status,
        204
    );
    let expired = post(
        "/api-keys",
        json!({ "name": "expired", "expiresAt": "2999-01-01T00:00:00Z" }),
    )
    .await;
    crate::identity::expire(app, expired["id"].as_str().expect("id")).await;
    let id = |row: &Value| row["id"].as_str().expect("id").to_owned();
    Fixture {
        rows: vec![
            ("/organizations/{id}", org_id.clone()),
            ("/users/{id}", id(&target)),
            ("/tools/{id}", id(&tool)),
            ("/actions/{id}", id(&action)),
            ("/flows/{id}", id(&flow)),
            ("/execution-logs/{id}", id(&log)),
            ("/runs/{id}/cancel", queued_run),
            ("/runs/{id}", finished_run),
        ],
        org_id,
        callers,
        own_keys,
        revoked: revoked["key"].as_str().expect("key").to_owned(),
        expired: expired["key"].as_str().expect("key").to_owned(),
    }
}

/// A valid body for each operation that takes one.
fn body_of(operation: &str, fixture: &Fixture) -> Option<Value> {
    let tool = &fixture.rows[2].1;
    let flow = &fixture.rows[4].1;
    Some(match operation {
        "signUp" => {
            json!({ "organization": { "name": "New" }, "owner": { "email": "new@example.com" } })
        }
        "createOrganization" | "updateOrganization" => json!({ "name": "Renamed" }),
        "createUser" => json!({ "email": "created@example.com" }),
        "updateUser" => json!({ "name": "Renamed" }),
        "createTool" => {
            json!({ "name": "Jira", "baseUrl": "https://jira.example", "authType": "none" })
        }
        "updateTool" => json!({ "name": "Renamed" }),
        "createAction" => json!({ "toolId": tool, "method": "GET", "endpoint": "/y" }),
        "updateAction" => json!({ "endpoint": "/z" }),
        "createFlow" => json!({ "steps": [] }),
        "updateFlow" => json!({ "name": "Renamed" }),
        "createExecutionLog" => {
            json!({ "flowId": flow, "stepId": "t", "status": "queued", "inputs": {} })
        }
        "updateExecutionLog" => json!({ "status": "completed" }),
        "createApiKey" => json!({ "name": "new" }),
        "startRun" => json!({ "inputs": {} }),
        _ => return None,
    })
}

/// The concrete path of `operation` for a caller (`role`), on `rows` (another organization's
/// when testing 404s); deletes cascade, so that a 204 does not depend on children.
fn path_of(operation: &Operation, rows: &Fixture, own_key: &str) -> String {
    let mut path = operation.path.clone();
    if path == "/api-keys/{id}" {
        path = format!("/api-keys/{own_key}");
    }
    for (template, id) in &rows.rows {
        if path == *template || path.starts_with(&format!("{template}/")) {
            path = path.replace("{id}", id);
            break;
        }
    }
    if operation.method == Method::DELETE && !path.starts_with("/api-keys") {
        path.push_str("?cascade=true");
    }
    path
}

fn success(operation: &Operation) -> u16 {
    if ["startRun", "cancelRun"].contains(&operation.id.as_str()) {
        return 202;
    }
    match operation.method {
        Method::POST => 201,
        Method::DELETE => 204,
        _ => 200,
    }
}

fn need_of(operation: &str) -> Need {
    NEEDS
        .iter()
        .find(|(id, _)| *id == operation)
        .map(|(_, need)| *need)
        .unwrap_or_else(|| {
            panic!("{operation} has no declared permission in NEEDS (API.md's tables)")
        })
}

#[test]
fn every_operation_of_the_document_has_a_declared_permission_and_no_other() {
    let operations = operations();
    for operation in &operations {
        need_of(&operation.id);
    }
    for (id, _) in NEEDS {
        assert!(
            operations.iter().any(|operation| operation.id == *id),
            "{id} is not in the document"
        );
    }
}

/// Sends `operation` with a key or the two headers of `caller`.
async fn call(
    app: &TestApp,
    operation: &Operation,
    path: &str,
    body: Option<&Value>,
    credentials: &[(&str, &str)],
) -> u16 {
    app.send(operation.method.clone(), path, body, credentials)
        .await
        .status
}

/// Runs the role × organization matrix, with each role's key (`keys_mode`) or headers. In
/// headers mode `/organizations` is open, as it always was: every role succeeds there.
async fn role_matrix(app: &TestApp, keys_mode: bool) {
    let other = fixture(app).await;
    for operation in operations() {
        let Need::Role(mut least) = need_of(&operation.id) else {
            continue;
        };
        let platform = operation.path.starts_with("/organizations");
        if platform && !keys_mode {
            least = 0;
        }
        for (role, name) in ROLES.iter().enumerate() {
            // A fresh organization per cell: a cell's write never changes another's rows.
            let own = fixture(app).await;
            let (key, caller) = &own.callers[role];
            let bearer = format!("Bearer {key}");
            let credentials: Vec<(&str, &str)> = if keys_mode {
                vec![("Authorization", bearer.as_str())]
            } else {
                vec![
                    ("X-Org-ID", caller.org_id.as_str()),
                    ("X-User-ID", caller.user_id.as_str()),
                ]
            };
            let body = body_of(&operation.id, &own);
            // Another organization's row first (the call below may delete the caller's own
            // organization): 404 for a caller with the right.
            let open = platform && !keys_mode;
            if operation.path.contains("{id}")
                && !operation.path.starts_with("/api-keys")
                && role as u8 >= least
                && !open
            {
                let path = path_of(&operation, &other, "");
                let got = call(app, &operation, &path, body.as_ref(), &credentials).await;
                assert_eq!(
                    got, 404,
                    "{} {path} of another organization as {name}",
                    operation.method
                );
            }
            let path = path_of(&operation, &own, &own.own_keys[role]);
            let expected = if role as u8 >= least {
                success(&operation)
            } else {
                403
            };
            let got = call(app, &operation, &path, body.as_ref(), &credentials).await;
            assert_eq!(
                got,
                expected,
                "{} {path} as {name} ({}): {expected} expected",
                operation.method,
                if keys_mode { "key" } else { "headers" }
            );
        }
    }
}

on_both_backends! {
    async fn in_keys_mode_every_operation_answers_each_role_as_the_contract_says(app) {
        let keys = app.in_keys_mode(&[("ADMIN_TOKEN", ADMIN_TOKEN)]);
        role_matrix(&keys, true).await;
    }

    async fn in_headers_mode_every_operation_answers_each_role_as_the_contract_says(app) {
        let headers = app.reconfigured(|state| state.identity = crate::helpers::identity(&[("ADMIN_TOKEN", ADMIN_TOKEN)]));
        role_matrix(&headers, false).await;
    }

    async fn in_keys_mode_bad_credentials_get_401_and_disagreeing_headers_403_on_every_operation(app) {
        // So many failures from one client would be limited (429) at the default.
        let keys = app.in_keys_mode(&[("ADMIN_TOKEN", ADMIN_TOKEN), ("AUTH_FAILURES_PER_MINUTE", "100000")]);
        let own = fixture(&keys).await;
        let other = fixture(&keys).await;
        let (owner_key, _) = &own.callers[3];
        let mut mistyped = owner_key.clone().into_bytes();
        mistyped[8] = if mistyped[8] == b'a' { b'b' } else { b'a' };
        let mistyped = String::from_utf8(mistyped).expect("ascii");
        for operation in operations() {
            let need = need_of(&operation.id);
            if need == Need::Open {
                continue;
            }
            let body = body_of(&operation.id, &own);
            let path = path_of(&operation, &own, &own.own_keys[3]);
            for (label, key) in [("no key", None), ("mistyped", Some(&mistyped)), ("revoked", Some(&own.revoked)), ("expired", Some(&own.expired))] {
                let bearer = key.map(|key| format!("Bearer {key}"));
                let credentials: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
                let got = call(&keys, &operation, &path, body.as_ref(), &credentials).await;
                assert_eq!(got, 401, "{} {path} with {label}", operation.method);
            }
            if matches!(need, Need::Role(_)) && !operation.path.starts_with("/organizations") {
                let bearer = format!("Bearer {owner_key}");
                let (_, stranger) = &other.callers[3];
                let credentials = [("Authorization", bearer.as_str()), ("X-Org-ID", other.org_id.as_str()), ("X-User-ID", stranger.user_id.as_str())];
                let got = call(&keys, &operation, &path, body.as_ref(), &credentials).await;
                assert_eq!(got, 403, "{} {path} with headers that name another organization", operation.method);
            }
        }
    }

    async fn the_admin_token_acts_in_any_organization_as_an_owner_on_every_tenant_operation(app) {
        let keys = app.in_keys_mode(&[("ADMIN_TOKEN", ADMIN_TOKEN)]);
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        for operation in operations() {
            if !matches!(need_of(&operation.id), Need::Role(_)) || operation.path.starts_with("/organizations") {
                continue;
            }
            let own = fixture(&keys).await;
            let (_, owner) = &own.callers[3];
            // X-User-ID names the user a write records (an execution log's, a key's).
            let credentials = [("Authorization", bearer.as_str()), ("X-Org-ID", own.org_id.as_str()), ("X-User-ID", owner.user_id.as_str())];
            let body = body_of(&operation.id, &own);
            let path = path_of(&operation, &own, &own.own_keys[3]);
            let got = call(&keys, &operation, &path, body.as_ref(), &credentials).await;
            assert_eq!(got, success(&operation), "{} {path} with the admin token", operation.method);
        }
    }

    async fn the_admin_token_may_do_everything_on_the_platform_routes(app) {
        let keys = app.in_keys_mode(&[("ADMIN_TOKEN", ADMIN_TOKEN)]);
        for operation in operations() {
            if operation.path.starts_with("/organizations") || operation.path == "/signup" {
                let own = fixture(&keys).await;
                let body = body_of(&operation.id, &own);
                let path = path_of(&operation, &own, "");
                let bearer = format!("Bearer {ADMIN_TOKEN}");
                let got = call(&keys, &operation, &path, body.as_ref(), &[("Authorization", bearer.as_str())]).await;
                assert_eq!(got, success(&operation), "{} {path} with the admin token", operation.method);
            }
        }
    }
}
