//! The app under test, driven over HTTP in-process, and what it answers.

use poem::http::{HeaderMap, Method};
use poem::test::TestClient;
use poem::{Endpoint, EndpointExt, Response};
use serde_json::Value;
use std::sync::Arc;

use tolstoy::config::{PoolSettings, Settings, DEFAULT_MAX_BODY_BYTES};
use tolstoy::db::Pool;
use tolstoy::identity::IdentityConfig;
use tolstoy::runs::Signals;
use tolstoy::startup::{build_route, open_database, AppState};
use tolstoy::telemetry::metrics::Metrics;

use super::database::{Backend, TestDb};

type BoxedEndpoint = poem::endpoint::BoxEndpoint<'static, Response>;

pub struct TestApp {
    pub backend: Backend,
    /// The app's own pool, for setting up rows the API under test cannot make yet and for
    /// checking what was stored.
    pub db: Pool,
    /// The direct URL (the owner's, in the production shape), for migrations.
    pub direct_url: String,
    /// The schema that holds the tables (`DB_SCHEMA`).
    pub schema: String,
    /// What a `tolstoy` process needs to reach the same database as this app: the pooled and
    /// direct URLs and the statement-cache setting.
    pub server_env: Vec<(&'static str, String)>,
    client: TestClient<BoxedEndpoint>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body parsed as JSON; `Value::Null` when empty.
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json answer with `status`, and returns the fields it names.
    #[track_caller]
    pub fn assert_problem(&self, status: u16) -> Vec<String> {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["status"], status);
        for key in ["type", "title", "detail", "requestId"] {
            assert!(
                self.body[key].is_string(),
                "problem lacks {key}: {}",
                self.text
            );
        }
        assert_eq!(self.body["requestId"].as_str(), self.header("x-request-id"));
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TestApp {
    /// An app on a migrated `db`; `configure` may change its state (e.g. the body limit).
    pub async fn new(db: &TestDb, configure: impl FnOnce(&mut AppState)) -> Self {
        Self::with_pool(db, &db.pool_settings(), configure).await
    }

    /// An app on a migrated `db` whose pool has `pool` settings.
    pub async fn with_pool(
        db: &TestDb,
        pool: &PoolSettings,
        configure: impl FnOnce(&mut AppState),
    ) -> Self {
        let (statement_cache, schema) = (pool.statement_cache, pool.schema.clone());
        let pool = open_database(&db.urls(), pool, true)
            .await
            .expect("open and migrate the test database");
        let settings = tolstoy::config::Settings::from_lookup(|_| None).expect("default settings");
        let mut state = AppState {
            db: pool.clone(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            identity: std::sync::Arc::new(tolstoy::identity::IdentityConfig::from_settings(
                &settings.identity,
            )),
            runs: Signals::default(),
            keyring: keyring_for(&settings),
            metrics: Metrics::new(),
        };
        configure(&mut state);
        Self {
            direct_url: db.url.clone(),
            server_env: vec![
                ("DATABASE_URL", db.pooled_url.clone()),
                ("DIRECT_URL", db.url.clone()),
                ("DB_STATEMENT_CACHE", statement_cache.to_string()),
                ("DB_SCHEMA", schema.clone()),
                ("CREDENTIALS_KEY", TEST_CREDENTIALS_KEY.to_owned()),
            ],
            schema,
            ..Self::with_endpoint(db.backend, pool, build_route(state))
        }
    }

    /// Another app on the same database, its state changed by `configure` (e.g. keys mode).
    pub fn reconfigured(&self, configure: impl FnOnce(&mut AppState)) -> TestApp {
        let mut state = default_state(self.db.clone());
        configure(&mut state);
        Self {
            direct_url: self.direct_url.clone(),
            schema: self.schema.clone(),
            server_env: self.server_env.clone(),
            ..Self::with_endpoint(self.backend, self.db.clone(), build_route(state))
        }
    }

    /// This app's database served in keys mode, with `settings` (environment names) besides.
    pub fn in_keys_mode(&self, settings: &[(&str, &str)]) -> TestApp {
        let mut all = vec![("AUTH_MODE", "keys")];
        all.extend_from_slice(settings);
        self.reconfigured(|state| state.identity = identity(&all))
    }

    /// A connection on the direct URL, as `tolstoy migrate` opens.
    pub async fn direct(&self) -> sea_orm::DatabaseConnection {
        let url = tolstoy::config::Secret::new(self.direct_url.clone());
        tolstoy::db::connect_direct(&url, &self.schema)
            .await
            .expect("direct connection")
    }

    /// An app serving `endpoint` (for tests of the middleware itself).
    pub fn with_endpoint(
        backend: Backend,
        db: Pool,
        endpoint: impl Endpoint<Output = Response> + 'static,
    ) -> Self {
        Self {
            backend,
            db,
            direct_url: String::new(),
            schema: tolstoy::config::DEFAULT_DB_SCHEMA.to_owned(),
            server_env: Vec::new(),
            client: TestClient::new(endpoint.boxed()),
        }
    }

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body_json(body);
        }
        Self::read(request.send().await.0).await
    }

    /// Sends `body` as it is, with `content_type` when given.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<poem::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, path).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(content_type) = content_type {
            request = request.content_type(content_type);
        }
        Self::read(request.send().await.0).await
    }

    async fn read(response: Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .into_body()
            .into_string()
            .await
            .expect("response body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// Creates an organization and returns its id.
    pub async fn create_org(&self, name: &str) -> String {
        let reply = self
            .post("/organizations", &serde_json::json!({ "name": name }))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// The emails of an organization's users, read from the database, not through the API.
    pub async fn db_users_of(&self, org_id: &str) -> Vec<String> {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        entity::user::Entity::find()
            .filter(entity::user::Column::OrgId.eq(uuid::Uuid::parse_str(org_id).expect("uuid")))
            .all(&self.db)
            .await
            .expect("read users")
            .into_iter()
            .map(|user| user.email)
            .collect()
    }

    /// How many tools an organization has, read from the database, not through the API.
    pub async fn db_tools_of(&self, org_id: &str) -> u64 {
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        entity::tool::Entity::find()
            .filter(entity::tool::Column::OrgId.eq(uuid::Uuid::parse_str(org_id).expect("uuid")))
            .count(&self.db)
            .await
            .expect("count tools")
    }

    /// Follows `Link: rel="next"` from `path` to the end; returns every page's ids.
    pub async fn walk(&self, path: &str) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(path) = next.take() {
            let reply = self.get(&path).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            pages.push(ids(&reply.body));
            next = reply.header("link").map(next_path);
        }
        pages
    }
}

/// The state the server starts with by default (headers mode), on `db`.
fn default_state(db: Pool) -> AppState {
    AppState {
        db,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        identity: identity(&[]),
        runs: Signals::default(),
        keyring: keyring_for(&settings(&[])),
        metrics: Metrics::new(),
    }
}

/// The credentials key of the test servers, in-process and spawned alike.
pub const TEST_CREDENTIALS_KEY: &str = "dGVzdCBrZXkgb2YgdGhlIHRvbHN0b3kgdGVzdCBzdWk=";

/// The keyring of `settings` (`CREDENTIALS_KEY(S)`), else the one of [`TEST_CREDENTIALS_KEY`].
pub fn keyring_for(settings: &Settings) -> Arc<tolstoy::credentials::Keyring> {
    let keys = settings
        .credentials_keys
        .clone()
        .unwrap_or(tolstoy::config::CredentialsKeys {
            variable: "CREDENTIALS_KEY",
            text: tolstoy::config::Secret::new(TEST_CREDENTIALS_KEY),
        });
    Arc::new(keys.keyring().expect("test credentials keys"))
}

/// Settings as the server would read them from these environment variables.
pub fn settings(settings: &[(&str, &str)]) -> Settings {
    Settings::from_lookup(|name| {
        settings
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    })
    .expect("valid settings")
}

/// Identity configured as the server would be by these environment variables.
pub fn identity(settings: &[(&str, &str)]) -> Arc<IdentityConfig> {
    Arc::new(IdentityConfig::from_settings(
        &self::settings(settings).identity,
    ))
}

/// In-process workers beside a [`TestApp`]; they stop when this is dropped or stopped.
pub struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Stops the workers as a SIGTERM would, and waits for them.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(done) = self.done.take() {
            done.await.expect("workers end");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl TestApp {
    /// This app's database served with workers in the same process, configured by `env`
    /// (`WORKERS`, `RUN_LEASE_SECS`, `OUTBOUND_ALLOW_PRIVATE`, …) as the server would be.
    pub fn with_workers(&self, env: &[(&str, &str)]) -> (TestApp, Workers) {
        let settings = self::settings(env);
        let signals = Signals::default();
        let keyring = keyring_for(&settings);
        let metrics = Metrics::new();
        let executor =
            tolstoy::startup::executor(&settings, &self.db, &signals, &keyring, &metrics)
                .expect("executor")
                .expect("WORKERS > 0");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let done = tokio::spawn(executor.run(stopped, settings.shutdown_timeout));
        let app = self.reconfigured(|state| {
            state.identity = Arc::new(IdentityConfig::from_settings(&settings.identity));
            state.runs = signals;
            state.keyring = keyring;
            state.metrics = metrics;
        });
        (
            app,
            Workers {
                stop,
                done: Some(done),
            },
        )
    }
}

/// The ids of a JSON array of rows, in order.
pub fn ids(rows: &Value) -> Vec<String> {
    rows.as_array()
        .expect("a JSON array")
        .iter()
        .map(|row| row["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The target of `Link: <target>; rel="next"`.
#[track_caller]
pub fn next_path(link: &str) -> String {
    assert!(link.ends_with("; rel=\"next\""), "unexpected Link: {link}");
    link.trim_start_matches('<')
        .split_once('>')
        .expect("Link target")
        .0
        .to_owned()
}

/// A verified caller: an organization and one of its users.
#[derive(Clone, Debug)]
pub struct Caller {
    pub org_id: String,
    pub user_id: String,
}

impl Caller {
    pub fn headers(&self) -> [(&str, &str); 2] {
        [
            ("X-Org-ID", self.org_id.as_str()),
            ("X-User-ID", self.user_id.as_str()),
        ]
    }
}

impl TestApp {
    /// A new organization with its first user, who is the returned caller.
    pub async fn new_tenant(&self, name: &str) -> Caller {
        let org_id = self.create_org(name).await;
        let bootstrap = Caller {
            org_id: org_id.clone(),
            user_id: uuid::Uuid::now_v7().to_string(),
        };
        let reply = self
            .post_as(
                &bootstrap,
                "/users",
                &serde_json::json!({ "email": format!("owner@{name}.example") }),
            )
            .await;
        assert_eq!(reply.status, 201, "first user: {}", reply.text);
        Caller {
            org_id,
            user_id: reply.body["id"].as_str().expect("id").to_owned(),
        }
    }

    pub async fn get_as(&self, caller: &Caller, path: &str) -> Reply {
        self.send(Method::GET, path, None, &caller.headers()).await
    }

    pub async fn post_as(&self, caller: &Caller, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body), &caller.headers())
            .await
    }

    pub async fn put_as(&self, caller: &Caller, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(body), &caller.headers())
            .await
    }

    pub async fn delete_as(&self, caller: &Caller, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, &caller.headers())
            .await
    }

    /// Sends a request with `Authorization: Bearer <key>` and nothing else to say who calls.
    pub async fn with_key(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let bearer = format!("Bearer {key}");
        self.send(method, path, body, &[("Authorization", bearer.as_str())])
            .await
    }

    /// Makes an API key for `caller` with `body`; returns the key itself and its id.
    pub async fn key_for(&self, caller: &Caller, body: &Value) -> (String, String) {
        let reply = self.post_as(caller, "/api-keys", body).await;
        assert_eq!(reply.status, 201, "POST /api-keys: {}", reply.text);
        let key = reply.body["key"].as_str().expect("key").to_owned();
        (key, reply.body["id"].as_str().expect("id").to_owned())
    }

    /// Creates a row through the API as `caller`; returns its id.
    pub async fn create_as(&self, caller: &Caller, path: &str, body: &Value) -> String {
        let reply = self.post_as(caller, path, body).await;
        assert_eq!(reply.status, 201, "POST {path}: {}", reply.text);
        assert_eq!(reply.body["orgId"], caller.org_id.as_str());
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// Follows `Link: rel="next"` as `caller` from `path` to the end; returns every page's ids.
    pub async fn walk_as(&self, caller: &Caller, path: &str) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(path) = next.take() {
            let reply = self.get_as(caller, &path).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            pages.push(ids(&reply.body));
            next = reply.header("link").map(next_path);
        }
        pages
    }
}
