//! `allowedEmailDomains`: an organization's users' emails must be in one of its domains,
//! compared case-insensitively after IDNA normalisation, a subdomain admitted only by a `*.`
//! entry; changing the list deletes nobody, and `GET /users?outsideAllowedDomains=true` lists
//! those it no longer admits; only admins and owners change it.

use poem::http::Method;
use serde_json::{json, Value};

use crate::helpers::{ids, Caller, TestApp};
use crate::on_both_backends;
use crate::organizations::update_organization;

async fn set_domains(app: &TestApp, caller: &Caller, domains: Value) -> Value {
    let body = json!({"allowedEmailDomains": domains});
    update_organization(app, &caller.org_id, &body).await["allowedEmailDomains"].clone()
}

async fn add_user(app: &TestApp, caller: &Caller, email: &str) -> (u16, Value) {
    let reply = app
        .post_as(caller, "/users", &json!({"email": email}))
        .await;
    (reply.status, reply.body)
}

on_both_backends! {
    /// Entries are stored as sent (lower-case ASCII; an internationalized name as punycode);
    /// emails of those domains, in any letter case, are admitted, a subdomain only through `*.`, anything else
    /// is a 422 naming `email` and writes nothing, on create and on update.
    async fn emails_outside_the_allowed_domains_are_refused_naming_the_field(app) {
        let caller = app.new_tenant("Acme").await;
        let stored = set_domains(&app, &caller, json!(["acme.com", "*.corp.example", "xn--bcher-kva.example"])).await;
        assert_eq!(stored, json!(["acme.com", "*.corp.example", "xn--bcher-kva.example"]));
        assert_eq!(app.get(&format!("/organizations/{}", caller.org_id)).await.body["allowedEmailDomains"], stored);

        for email in ["ada@acme.com", "Bob@ACME.COM", "cy@eu.corp.example", "dee@XN--BCHER-KVA.Example", "eve@xn--bcher-kva.example"] {
            let (status, body) = add_user(&app, &caller, email).await;
            assert_eq!(status, 201, "{email}: {body}");
        }
        let before = app.get_as(&caller, "/users").await.body.as_array().expect("users").len();
        for email in ["fay@a.acme.com", "gus@corp.example", "hal@notacme.com", "ida@acme.com.evil.example"] {
            let reply = app.post_as(&caller, "/users", &json!({"email": email})).await;
            assert_eq!(reply.status, 422, "{email}: {}", reply.text);
            assert_eq!(reply.assert_problem(422), vec!["email".to_owned()], "{email}");
        }
        assert_eq!(app.get_as(&caller, "/users").await.body.as_array().expect("users").len(), before, "nothing written");

        let ada = app.get_as(&caller, "/users").await.body.as_array().expect("users").iter()
            .find(|user| user["email"] == "ada@acme.com").expect("ada")["id"].as_str().expect("id").to_owned();
        let moved = app.put_as(&caller, &format!("/users/{ada}"), &json!({"email": "ada@elsewhere.example", "name": "Ada"})).await;
        assert_eq!(moved.status, 422, "{}", moved.text);
        assert_eq!(moved.assert_problem(422), vec!["email".to_owned()]);
        let kept = app.get_as(&caller, &format!("/users/{ada}")).await.body;
        assert_eq!((kept["email"].clone(), kept["name"].clone()), (json!("ada@acme.com"), json!(null)), "no partial write");
        assert_eq!(app.put_as(&caller, &format!("/users/{ada}"), &json!({"email": "ada@x.corp.example"})).await.status, 200);
    }

    /// A list that is not at most 50 lower-case ASCII domain names is a 400 naming the field.
    async fn the_list_is_checked(app) {
        let org = app.create_org("Acme").await;
        let path = format!("/organizations/{org}");
        let fifty_one: Vec<String> = (0..51).map(|n| format!("d{n}.example")).collect();
        for bad in [json!(fifty_one), json!(["Acme.com"]), json!(["acme"]), json!(["*acme.com"]), json!(["a b.example"]), json!(["bücher.example"]), json!([""]), json!([7]), json!("acme.com")] {
            let reply = app.put(&path, &json!({"allowedEmailDomains": bad})).await;
            assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
            assert_eq!(reply.assert_problem(400), vec!["allowedEmailDomains".to_owned()], "{bad}");
        }
        assert_eq!(app.get(&path).await.body["allowedEmailDomains"], json!([]));
        let made = app.post("/organizations", &json!({"name": "Kept", "allowedEmailDomains": ["kept.example"]})).await;
        assert_eq!(made.status, 201, "{}", made.text);
        assert_eq!(made.body["allowedEmailDomains"], json!(["kept.example"]));
    }

    /// Narrowing the list deletes nobody; the users it no longer admits are listed, a page at
    /// a time, newest first; null (or an empty list) admits everyone again.
    async fn changing_the_list_keeps_users_and_lists_those_outside(app) {
        let caller = app.new_tenant("Acme").await;
        let mut outside = Vec::new();
        for n in 0..5 {
            let email = if n % 2 == 0 { format!("u{n}@old.example") } else { format!("u{n}@acme.com") };
            let (status, body) = add_user(&app, &caller, &email).await;
            assert_eq!(status, 201, "{body}");
            if n % 2 == 0 {
                outside.push(body["id"].as_str().expect("id").to_owned());
            }
        }
        let everyone = ids(&app.get_as(&caller, "/users").await.body);
        assert_eq!(ids(&app.get_as(&caller, "/users?outsideAllowedDomains=true").await.body), Vec::<String>::new(), "no list: nobody is outside");

        // The tenant's own first user has an email of the test's making; admit it too.
        let first_domain = app.get_as(&caller, &format!("/users/{}", caller.user_id)).await.body["email"]
            .as_str().expect("email").rsplit_once('@').expect("domain").1.to_lowercase();
        set_domains(&app, &caller, json!(["acme.com", first_domain])).await;
        assert_eq!(ids(&app.get_as(&caller, "/users").await.body), everyone, "nobody deleted");
        outside.reverse();
        assert_eq!(ids(&app.get_as(&caller, "/users?outsideAllowedDomains=true").await.body), outside);
        let pages = app.walk_as(&caller, "/users?outsideAllowedDomains=true&limit=1").await;
        assert_eq!(pages.concat(), outside, "one per page, in order");
        assert_eq!(pages.len(), outside.len());

        assert_eq!(set_domains(&app, &caller, json!(null)).await, json!([]));
        assert!(ids(&app.get_as(&caller, "/users?outsideAllowedDomains=true").await.body).is_empty());
        let (status, _) = add_user(&app, &caller, "anyone@anywhere.example").await;
        assert_eq!(status, 201);
    }

    /// In keys mode an editor may not change the list; an admin may.
    async fn only_admins_and_owners_change_the_list(app) {
        let owner = app.new_tenant("Acme").await;
        let keys = app.in_keys_mode(&[]);
        let (owner_key, _) = app.key_for(&owner, &json!({"name": "owner"})).await;
        let path = format!("/organizations/{}", owner.org_id);
        let mut made = Vec::new();
        for role in ["editor", "admin"] {
            let reply = keys.with_key(&owner_key, Method::POST, "/users", Some(&json!({"email": format!("{role}@example.com"), "role": role}))).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
            let user = Caller { org_id: owner.org_id.clone(), user_id: reply.body["id"].as_str().expect("id").to_owned() };
            made.push(app.key_for(&user, &json!({"name": role})).await.0);
        }
        let body = json!({"allowedEmailDomains": ["example.com"]});
        let editor = keys.with_key(&made[0], Method::PUT, &path, Some(&body)).await;
        assert_eq!(editor.status, 403, "{}", editor.text);
        assert_eq!(keys.get(&path).await.status, 401);
        let admin = keys.with_key(&made[1], Method::PUT, &path, Some(&body)).await;
        assert_eq!(admin.status, 200, "{}", admin.text);
        assert_eq!(admin.body["allowedEmailDomains"], json!(["example.com"]));
    }
}

/// `count` users of the caller's organization written straight to the database (the API would
/// take minutes), each newer than the one before.
async fn insert_users(
    app: &TestApp,
    caller: &Caller,
    emails: impl Iterator<Item = String>,
) -> Vec<String> {
    use entity::user;
    use sea_orm::{EntityTrait, Set};
    let org_id = uuid::Uuid::parse_str(&caller.org_id).expect("org id");
    let at = chrono::Utc::now();
    let rows: Vec<user::ActiveModel> = emails
        .map(|email| user::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            org_id: Set(org_id),
            email_folded: Set(email.to_lowercase()),
            email: Set(email),
            name: Set(None),
            role: Set("viewer".to_owned()),
            created_at: Set(at),
            updated_at: Set(at),
        })
        .collect();
    let ids = rows.iter().map(|row| row.id.as_ref().to_string()).collect();
    for chunk in rows.chunks(500) {
        user::Entity::insert_many(chunk.to_vec())
            .exec(&app.db)
            .await
            .expect("insert users");
    }
    ids
}

on_both_backends! {
    /// A page of `outsideAllowedDomains` reads at most 10,000 users: where nearly everyone fits,
    /// it ends short, even empty, with a `Link` that goes on from the last user it read, and the
    /// walk still finds everyone outside.
    async fn a_page_of_outsiders_reads_a_bounded_number_of_users(app) {
        let caller = app.new_tenant("Acme").await;
        let outsider = insert_users(&app, &caller, std::iter::once("old@elsewhere.example".to_owned())).await;
        insert_users(&app, &caller, (0..10_050).map(|n| format!("u{n}@acme.example"))).await;
        set_domains(&app, &caller, json!(["acme.example"])).await;

        let first = app.get_as(&caller, "/users?outsideAllowedDomains=true&limit=5").await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(ids(&first.body), Vec::<String>::new(), "10,000 newest users read, all fit");
        assert!(first.header("link").is_some(), "the walk goes on");
        let pages = app.walk_as(&caller, "/users?outsideAllowedDomains=true&limit=5").await;
        assert_eq!(pages.concat(), outsider);
    }
}
