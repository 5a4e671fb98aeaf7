//! Identity: roles and what each may do, the rules of roles (no escalation, the last owner
//! stays), API keys (shown once, revoked, expired, bounded by their user's role), keys mode,
//! the organization lifecycle with the admin token, and sign-up.

use std::sync::Arc;

use poem::http::Method;
use serde_json::{json, Value};

use crate::helpers::{ids, Caller, TestApp};
use crate::on_both_backends;

/// An admin token for the tests (at least 32 characters).
const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";

/// A user of `owner`'s organization with `role`, as a caller.
async fn member(app: &TestApp, owner: &Caller, email: &str, role: &str) -> Caller {
    let id = app
        .create_as(owner, "/users", &json!({ "email": email, "role": role }))
        .await;
    Caller {
        org_id: owner.org_id.clone(),
        user_id: id,
    }
}

fn tool_body(name: &str) -> Value {
    json!({ "name": name, "baseUrl": "https://api.example.com", "authType": "none" })
}

/// The role of user `id`, as its organization's owner reads it.
async fn role_of(app: &TestApp, owner: &Caller, id: &str) -> Value {
    app.get_as(owner, &format!("/users/{id}")).await.body["role"].clone()
}

on_both_backends! {
    async fn the_first_user_is_the_owner_and_new_users_are_editors_by_default(app) {
        let owner = app.new_tenant("acme").await;
        assert_eq!(role_of(&app, &owner, &owner.user_id).await, "owner");
        let user = app.create_as(&owner, "/users", &json!({ "email": "e@example.com" })).await;
        assert_eq!(role_of(&app, &owner, &user).await, "editor");
        let fields = app.post_as(&owner, "/users", &json!({ "email": "x@example.com", "role": "Admin" })).await.assert_problem(400);
        assert_eq!(fields, ["role"], "roles are case-sensitive");
    }

    async fn a_viewer_reads_an_editor_writes_rows_and_only_admins_manage_users(app) {
        let owner = app.new_tenant("acme").await;
        let tool = app.create_as(&owner, "/tools", &tool_body("Slack")).await;
        let viewer = member(&app, &owner, "v@example.com", "viewer").await;
        let editor = member(&app, &owner, "e@example.com", "editor").await;
        let admin = member(&app, &owner, "a@example.com", "admin").await;
        for caller in [&viewer, &editor, &admin] {
            assert_eq!(app.get_as(caller, "/tools").await.status, 200);
            assert_eq!(app.get_as(caller, &format!("/tools/{tool}")).await.status, 200);
            assert_eq!(app.get_as(caller, "/users").await.status, 200);
        }
        let refused = app.post_as(&viewer, "/tools", &tool_body("Jira")).await;
        refused.assert_problem(403);
        assert!(refused.body["detail"].as_str().unwrap_or_default().contains("editor"), "names the right it lacks: {}", refused.text);
        app.put_as(&viewer, &format!("/tools/{tool}"), &json!({ "name": "Renamed" })).await.assert_problem(403);
        app.delete_as(&viewer, &format!("/tools/{tool}")).await.assert_problem(403);
        assert_eq!(app.post_as(&editor, "/tools", &tool_body("Jira")).await.status, 201);
        app.post_as(&editor, "/users", &json!({ "email": "n@example.com" })).await.assert_problem(403);
        app.delete_as(&editor, &format!("/users/{}", viewer.user_id)).await.assert_problem(403);
        assert_eq!(app.post_as(&admin, "/users", &json!({ "email": "n@example.com", "role": "admin" })).await.status, 201);
        assert_eq!(app.get_as(&owner, &format!("/tools/{tool}")).await.body["name"], "Slack", "nothing changed");
    }

    async fn nobody_gives_a_role_above_their_own_or_changes_their_own_and_nothing_changes(app) {
        let owner = app.new_tenant("acme").await;
        let editor = member(&app, &owner, "e@example.com", "editor").await;
        let admin = member(&app, &owner, "a@example.com", "admin").await;
        let other = member(&app, &owner, "o@example.com", "viewer").await;
        // An editor sets their own role to admin.
        app.put_as(&editor, &format!("/users/{}", editor.user_id), &json!({ "role": "admin" })).await.assert_problem(403);
        // An admin makes an owner, creates one, changes an owner, deletes the owner.
        app.put_as(&admin, &format!("/users/{}", other.user_id), &json!({ "role": "owner" })).await.assert_problem(403);
        app.post_as(&admin, "/users", &json!({ "email": "new@example.com", "role": "owner" })).await.assert_problem(403);
        app.put_as(&admin, &format!("/users/{}", owner.user_id), &json!({ "name": "Mallory" })).await.assert_problem(403);
        app.delete_as(&admin, &format!("/users/{}", owner.user_id)).await.assert_problem(403);
        // An admin changes their own role.
        app.put_as(&admin, &format!("/users/{}", admin.user_id), &json!({ "role": "viewer" })).await.assert_problem(403);
        // The last owner demotes themselves, or deletes themselves.
        app.put_as(&owner, &format!("/users/{}", owner.user_id), &json!({ "role": "admin" })).await.assert_problem(403);
        app.delete_as(&owner, &format!("/users/{}", owner.user_id)).await.assert_problem(409);
        for (id, role) in [(&editor.user_id, "editor"), (&admin.user_id, "admin"), (&other.user_id, "viewer"), (&owner.user_id, "owner")] {
            assert_eq!(role_of(&app, &owner, id).await, role, "nothing changed");
        }
        assert_eq!(app.get_as(&owner, &format!("/users/{}", owner.user_id)).await.body["name"], Value::Null);
        assert_eq!(ids(&app.get_as(&owner, "/users").await.body).len(), 4);
        // What the roles do allow: an admin gives up to admin, an owner gives owner.
        assert_eq!(app.put_as(&admin, &format!("/users/{}", other.user_id), &json!({ "role": "admin" })).await.status, 200);
        assert_eq!(app.put_as(&owner, &format!("/users/{}", other.user_id), &json!({ "role": "owner" })).await.status, 200);
        assert_eq!(app.put_as(&other, &format!("/users/{}", owner.user_id), &json!({ "role": "viewer" })).await.status, 200, "another owner may demote one, while one stays");
    }

    async fn two_owners_deleting_each_other_at_once_leave_one_owner(app) {
        let app = Arc::new(app);
        for round in 0..8 {
            let first = app.new_tenant(&format!("acme{round}")).await;
            let second = member(&app, &first, "second@example.com", "owner").await;
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let mut racers = Vec::new();
            for (deleter, target) in [(first.clone(), second.clone()), (second.clone(), first.clone())] {
                let (app, barrier) = (app.clone(), barrier.clone());
                // Without the organization's lock, both would see two owners and both succeed.
                racers.push(tokio::spawn(async move {
                    barrier.wait().await;
                    app.delete_as(&deleter, &format!("/users/{}", target.user_id)).await.status
                }));
            }
            let mut statuses = Vec::new();
            for racer in racers {
                statuses.push(racer.await.expect("task"));
            }
            statuses.sort_unstable();
            // The loser was deleted first: a stranger now (403).
            assert_eq!(statuses, [204, 403], "round {round}");
            assert_eq!(app.db_users_of(&first.org_id).await.len(), 1, "round {round}: one owner stays");
        }
    }

    async fn an_api_key_is_shown_once_stored_as_a_digest_and_answers_for_its_user(app) {
        let owner = app.new_tenant("acme").await;
        let created = app.post_as(&owner, "/api-keys", &json!({ "name": "CI" })).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let key = created.body["key"].as_str().expect("key").to_owned();
        assert!(key.starts_with("tol_") && key.len() == 42, "{key}");
        assert_eq!(created.body["prefix"], &key[..12]);
        assert_eq!(created.body["role"], "owner", "the lower of the caller's and the user's role");
        assert_eq!(created.body["userId"], owner.user_id.as_str());
        let id = created.body["id"].as_str().expect("id").to_owned();
        let read = app.get_as(&owner, &format!("/api-keys/{id}")).await;
        assert_eq!(read.status, 200);
        assert!(read.body.get("key").is_none(), "the key is shown only once: {}", read.text);
        assert!(!app.get_as(&owner, "/api-keys").await.text.contains(&key));
        let listed = app.with_key(&key, Method::GET, "/users", None).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let tool = app.with_key(&key, Method::POST, "/tools", Some(&tool_body("Slack"))).await;
        assert_eq!(tool.status, 201);
        assert_eq!(tool.body["orgId"], owner.org_id.as_str());
        if app.backend == crate::helpers::Backend::Sqlite {
            let path = app.direct_url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default().to_owned();
            for file in [path.clone(), format!("{path}-wal")] {
                let bytes = std::fs::read(&file).unwrap_or_default();
                assert!(!bytes.windows(key.len()).any(|window| window == key.as_bytes()), "the key is in {file}");
            }
        }
    }

    async fn a_revoked_expired_mistyped_or_orphaned_key_is_401_with_the_same_body(app) {
        let owner = app.new_tenant("acme").await;
        let user = member(&app, &owner, "u@example.com", "editor").await;
        let (revoked, revoked_id) = app.key_for(&owner, &json!({ "name": "revoked" })).await;
        let (orphaned, _) = app.key_for(&owner, &json!({ "name": "orphan", "userId": user.user_id })).await;
        let (expiring, expiring_id) = app.key_for(&owner, &json!({ "name": "soon", "expiresAt": "2999-01-01T00:00:00Z" })).await;
        assert_eq!(app.with_key(&revoked, Method::GET, "/tools", None).await.status, 200);
        assert_eq!(app.delete_as(&owner, &format!("/api-keys/{revoked_id}")).await.status, 204);
        assert!(app.get_as(&owner, &format!("/api-keys/{revoked_id}")).await.body["revokedAt"].is_string(), "revokedAt is set");
        assert_eq!(app.with_key(&orphaned, Method::GET, "/tools", None).await.status, 200);
        assert_eq!(app.delete_as(&owner, &format!("/users/{}", user.user_id)).await.status, 204);
        expire(&app, &expiring_id).await;
        let mut typo = revoked.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        let mut bodies = Vec::new();
        for key in [revoked.as_str(), orphaned.as_str(), expiring.as_str(), typo.as_str(), "tol_short", "not a key"] {
            let reply = app.with_key(key, Method::GET, "/tools", None).await;
            reply.assert_problem(401);
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{key}");
            bodies.push(reply.body["detail"].clone());
        }
        assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]), "the same body whichever it was: {bodies:?}");
    }

    async fn last_used_at_is_written_once_a_minute_not_once_a_request(app) {
        let owner = app.new_tenant("acme").await;
        let (key, id) = app.key_for(&owner, &json!({ "name": "k" })).await;
        let path = format!("/api-keys/{id}");
        assert_eq!(app.get_as(&owner, &path).await.body["lastUsedAt"], Value::Null);
        assert_eq!(app.with_key(&key, Method::GET, "/tools", None).await.status, 200);
        // Written in the background: the request did not wait for it.
        let mut first = Value::Null;
        for _ in 0..50 {
            first = app.get_as(&owner, &path).await.body["lastUsedAt"].clone();
            if first.is_string() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(first.is_string(), "lastUsedAt is set after a use");
        for _ in 0..5 {
            assert_eq!(app.with_key(&key, Method::GET, "/tools", None).await.status, 200);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(app.get_as(&owner, &path).await.body["lastUsedAt"], first, "not written again within the minute");
    }

    async fn a_mistyped_key_is_refused_without_a_database_query(app) {
        let owner = app.new_tenant("acme").await;
        let (key, _) = app.key_for(&owner, &json!({ "name": "k" })).await;
        let mut typo = key.into_bytes();
        typo[30] = if typo[30] == b'Z' { b'Y' } else { b'Z' };
        let typo = String::from_utf8(typo).expect("ascii");
        // With the database gone, a lookup would be a 503: the 401 shows there was none.
        app.db.clone().close().await.expect("close the pool");
        app.with_key(&typo, Method::GET, "/tools", None).await.assert_problem(401);
    }

    async fn a_keys_rights_are_the_lower_of_its_role_and_its_users_current_role(app) {
        let owner = app.new_tenant("acme").await;
        let admin = member(&app, &owner, "a@example.com", "admin").await;
        let (viewer_key, _) = app.key_for(&admin, &json!({ "name": "read only", "role": "viewer" })).await;
        app.with_key(&viewer_key, Method::POST, "/tools", Some(&tool_body("X"))).await.assert_problem(403);
        assert_eq!(app.with_key(&viewer_key, Method::GET, "/tools", None).await.status, 200);
        let (admin_key, _) = app.key_for(&admin, &json!({ "name": "full" })).await;
        assert_eq!(app.with_key(&admin_key, Method::POST, "/users", Some(&json!({ "email": "n@example.com" }))).await.status, 201);
        // Demoted: the key follows the user's role from the next request on.
        assert_eq!(app.put_as(&owner, &format!("/users/{}", admin.user_id), &json!({ "role": "viewer" })).await.status, 200);
        app.with_key(&admin_key, Method::POST, "/tools", Some(&tool_body("Y"))).await.assert_problem(403);
        // Keys above the caller's role, or for another user by a non-admin, are refused.
        let viewer = Caller { org_id: owner.org_id.clone(), user_id: admin.user_id.clone() };
        app.post_as(&viewer, "/api-keys", &json!({ "name": "x", "role": "editor" })).await.assert_problem(403);
        app.post_as(&viewer, "/api-keys", &json!({ "name": "x", "userId": owner.user_id })).await.assert_problem(403);
        let (own, _) = app.key_for(&viewer, &json!({ "name": "mine" })).await;
        assert_eq!(app.with_key(&own, Method::GET, "/api-keys", None).await.status, 200);
    }

    async fn a_key_below_its_owners_role_cannot_give_more_than_its_own_role(app) {
        let owner = app.new_tenant("acme").await;
        let (admin_key, _) = app.key_for(&owner, &json!({ "name": "admin only", "role": "admin" })).await;
        let made = app.with_key(&admin_key, Method::POST, "/users", Some(&json!({ "email": "new@example.com", "role": "owner" }))).await;
        made.assert_problem(403);
        assert_eq!(ids(&app.get_as(&owner, "/users").await.body).len(), 1, "nothing was created");
        assert_eq!(app.with_key(&admin_key, Method::POST, "/users", Some(&json!({ "email": "new@example.com", "role": "admin" }))).await.status, 201);
    }

    async fn in_headers_mode_a_gateways_own_authorization_is_not_ours(app) {
        let owner = app.new_tenant("acme").await;
        let basic = [("Authorization", "Basic dXNlcjpwYXNz"), ("X-Org-ID", owner.org_id.as_str()), ("X-User-ID", owner.user_id.as_str())];
        assert_eq!(app.send(Method::GET, "/tools", None, &basic).await.status, 200);
        app.in_keys_mode(&[]).send(Method::GET, "/tools", None, &basic).await.assert_problem(401);
    }

    async fn members_see_their_own_keys_and_admins_every_key(app) {
        let owner = app.new_tenant("acme").await;
        let editor = member(&app, &owner, "e@example.com", "editor").await;
        let (_, owners) = app.key_for(&owner, &json!({ "name": "owner's" })).await;
        let (_, editors) = app.key_for(&editor, &json!({ "name": "editor's" })).await;
        assert_eq!(ids(&app.get_as(&editor, "/api-keys").await.body), std::slice::from_ref(&editors));
        assert_eq!(ids(&app.get_as(&owner, "/api-keys").await.body), [editors.clone(), owners.clone()]);
        assert_eq!(app.get_as(&editor, &format!("/api-keys/{owners}")).await.status, 404);
        assert_eq!(app.delete_as(&editor, &format!("/api-keys/{owners}")).await.status, 404);
        assert_eq!(app.delete_as(&owner, &format!("/api-keys/{editors}")).await.status, 204, "admins and owners revoke every key");
    }

    async fn a_key_with_headers_that_name_someone_else_is_403(app) {
        let acme = app.new_tenant("acme").await;
        let globex = app.new_tenant("globex").await;
        let (key, _) = app.key_for(&acme, &json!({ "name": "k" })).await;
        let bearer = format!("Bearer {key}");
        let own = app.send(Method::GET, "/tools", None, &[("Authorization", bearer.as_str()), ("X-Org-ID", acme.org_id.as_str()), ("X-User-ID", acme.user_id.as_str())]).await;
        assert_eq!(own.status, 200, "headers that agree are fine");
        for (org, user) in [(&globex.org_id, &acme.user_id), (&acme.org_id, &globex.user_id)] {
            app.send(Method::GET, "/tools", None, &[("Authorization", bearer.as_str()), ("X-Org-ID", org.as_str()), ("X-User-ID", user.as_str())]).await.assert_problem(403);
        }
    }

    async fn in_keys_mode_nothing_tenant_or_platform_wide_answers_without_a_key(app) {
        let owner = app.new_tenant("acme").await;
        let (key, _) = app.key_for(&owner, &json!({ "name": "k" })).await;
        let keys = app.in_keys_mode(&[]);
        for path in ["/tools", "/users", "/api-keys", "/organizations", &format!("/organizations/{}", owner.org_id)] {
            let bare = keys.get(path).await;
            bare.assert_problem(401);
            assert_eq!(bare.header("www-authenticate"), Some("Bearer"));
            keys.get_as(&owner, path).await.assert_problem(401);
            assert_eq!(keys.with_key(&key, Method::GET, path, None).await.status, 200, "{path}");
        }
        keys.post("/organizations", &json!({ "name": "x" })).await.assert_problem(401);
        keys.post("/signup", &json!({ "organization": { "name": "x" }, "owner": { "email": "a@example.com" } })).await.assert_problem(401);
        for path in ["/health", "/openapi.json", "/docs"] {
            assert_eq!(keys.get(path).await.status, 200, "{path} needs no credentials");
        }
    }

    async fn in_keys_mode_organizations_follow_the_table_of_the_contract(app) {
        let acme = app.new_tenant("acme").await;
        let globex = app.new_tenant("globex").await;
        let editor = member(&app, &acme, "e@example.com", "editor").await;
        let admin = member(&app, &acme, "a@example.com", "admin").await;
        let (owner_key, _) = app.key_for(&acme, &json!({ "name": "o" })).await;
        let (editor_key, _) = app.key_for(&editor, &json!({ "name": "e" })).await;
        let (admin_key, _) = app.key_for(&admin, &json!({ "name": "a" })).await;
        let keys = app.in_keys_mode(&[("ADMIN_TOKEN", ADMIN_TOKEN)]);
        let acme_path = format!("/organizations/{}", acme.org_id);
        let globex_path = format!("/organizations/{}", globex.org_id);
        // The admin token: every organization.
        let all = keys.with_key(ADMIN_TOKEN, Method::GET, "/organizations", None).await;
        assert_eq!(all.status, 200);
        assert_eq!(ids(&all.body).len(), 2);
        let created = keys.with_key(ADMIN_TOKEN, Method::POST, "/organizations", Some(&json!({ "name": "Initech" }))).await;
        assert_eq!(created.status, 201);
        // A key: only its own.
        assert_eq!(ids(&keys.with_key(&editor_key, Method::GET, "/organizations", None).await.body), std::slice::from_ref(&acme.org_id));
        keys.with_key(&owner_key, Method::POST, "/organizations", Some(&json!({ "name": "x" }))).await.assert_problem(403);
        assert_eq!(keys.with_key(&editor_key, Method::GET, &acme_path, None).await.status, 200);
        keys.with_key(&owner_key, Method::GET, &globex_path, None).await.assert_problem(404);
        keys.with_key(&owner_key, Method::PUT, &globex_path, Some(&json!({ "name": "x" }))).await.assert_problem(404);
        keys.with_key(&owner_key, Method::DELETE, &globex_path, None).await.assert_problem(404);
        keys.with_key(&editor_key, Method::PUT, &acme_path, Some(&json!({ "name": "x" }))).await.assert_problem(403);
        assert_eq!(keys.with_key(&admin_key, Method::PUT, &acme_path, Some(&json!({ "name": "Acme Corp" }))).await.status, 200);
        keys.with_key(&admin_key, Method::DELETE, &acme_path, None).await.assert_problem(403);
        // A made-up admin token is a bad key: 401.
        keys.with_key("test-admin-token-0123456789abcdef0124", Method::GET, "/organizations", None).await.assert_problem(401);
        assert_eq!(keys.with_key(&owner_key, Method::DELETE, &format!("{acme_path}?cascade=true"), None).await.status, 204);
        assert_eq!(keys.with_key(ADMIN_TOKEN, Method::DELETE, &format!("{globex_path}?cascade=true"), None).await.status, 204);
    }

    async fn the_admin_token_needs_x_org_id_and_names_the_user_of_what_it_writes(app) {
        let keys = app.in_keys_mode(&[("ADMIN_TOKEN", ADMIN_TOKEN)]);
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let org = keys.with_key(ADMIN_TOKEN, Method::POST, "/organizations", Some(&json!({ "name": "Acme" }))).await;
        let org_id = org.body["id"].as_str().expect("id").to_owned();
        let fields = keys.send(Method::GET, "/tools", None, &[("Authorization", bearer.as_str())]).await.assert_problem(400);
        assert_eq!(fields, ["X-Org-ID"]);
        let operator = [("Authorization", bearer.as_str()), ("X-Org-ID", org_id.as_str())];
        // The operator's first user of an organization is its owner.
        let first = keys.send(Method::POST, "/users", Some(&json!({ "email": "ada@example.com", "role": "viewer" })), &operator).await;
        assert_eq!(first.status, 201, "{}", first.text);
        assert_eq!(first.body["role"], "owner");
        let second = keys.send(Method::POST, "/users", Some(&json!({ "email": "bob@example.com" })), &operator).await;
        assert_eq!(second.body["role"], "editor");
        let flow = keys.send(Method::POST, "/flows", Some(&json!({ "steps": [] })), &operator).await;
        assert_eq!(flow.status, 201);
        let log = json!({ "flowId": flow.body["id"], "stepId": "s", "status": "queued", "inputs": {} });
        let fields = keys.send(Method::POST, "/execution-logs", Some(&log), &operator).await.assert_problem(422);
        assert_eq!(fields, ["X-User-ID"], "a log is written for a user");
        let stranger = uuid::Uuid::now_v7().to_string();
        let as_stranger = [operator[0], operator[1], ("X-User-ID", stranger.as_str())];
        keys.send(Method::POST, "/execution-logs", Some(&log), &as_stranger).await.assert_problem(422);
        let ada = first.body["id"].as_str().expect("id").to_owned();
        let as_ada = [operator[0], operator[1], ("X-User-ID", ada.as_str())];
        let written = keys.send(Method::POST, "/execution-logs", Some(&log), &as_ada).await;
        assert_eq!(written.status, 201, "{}", written.text);
        assert_eq!(written.body["userId"], ada.as_str());
        // An organization that does not exist is refused like a stranger's.
        let nowhere = uuid::Uuid::now_v7().to_string();
        keys.send(Method::GET, "/tools", None, &[operator[0], ("X-Org-ID", nowhere.as_str())]).await.assert_problem(403);
        // A wrong token is a bad key.
        let wrong = format!("Bearer {ADMIN_TOKEN}x");
        keys.send(Method::GET, "/tools", None, &[("Authorization", wrong.as_str()), operator[1]]).await.assert_problem(401);
    }

    async fn sign_up_makes_an_organization_its_owner_and_a_working_owner_key(app) {
        let body = json!({ "organization": { "name": "Acme" }, "owner": { "email": "ada@example.com", "name": "Ada" } });
        let closed = app.reconfigured(|state| state.identity = crate::helpers::identity(&[("ADMIN_TOKEN", ADMIN_TOKEN)]));
        closed.post("/signup", &body).await.assert_problem(401);
        let signed = closed.with_key(ADMIN_TOKEN, Method::POST, "/signup", Some(&body)).await;
        assert_eq!(signed.status, 201, "{}", signed.text);
        assert_eq!(signed.body["user"]["role"], "owner");
        assert_eq!(signed.body["apiKey"]["role"], "owner");
        assert_eq!(signed.body["user"]["orgId"], signed.body["organization"]["id"]);
        let key = signed.body["apiKey"]["key"].as_str().expect("key").to_owned();
        let keys = app.in_keys_mode(&[("SIGNUP", "open")]);
        let users = keys.with_key(&key, Method::GET, "/users", None).await;
        assert_eq!(users.body[0]["email"], "ada@example.com");
        let open = keys.post("/signup", &json!({ "organization": { "name": "Globex" }, "owner": { "email": "bob@example.com" } })).await;
        assert_eq!(open.status, 201, "SIGNUP=open needs no credentials");
        let fields = keys.post("/signup", &json!({ "organization": { "name": "" }, "owner": { "email": "nope", "role": "viewer" } })).await.assert_problem(400);
        assert_eq!(fields, ["organization.name", "owner.email", "owner.role"]);
        assert_eq!(ids(&app.get("/organizations").await.body).len(), 2, "a refused sign-up writes nothing");
    }
}

/// Moves an API key's expiry into the past, as time would.
pub async fn expire(app: &TestApp, id: &str) {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    let key = entity::api_key::ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(uuid::Uuid::parse_str(id).expect("uuid")),
        expires_at: Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1))),
        ..Default::default()
    };
    key.update(&app.db).await.expect("expire the key");
}
