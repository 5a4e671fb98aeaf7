//! Test harness: every test body runs once on a fresh SQLite file and once on a fresh
//! PostgreSQL database, through the same HTTP surface the server exposes.

mod database;
mod http;
pub mod process;
pub mod target;

pub use database::{
    pooler_url, with_database, with_user, Backend, TestDb, APP_ROLE, DECOY_ORGANIZATION_ID,
    OWNER_ROLE, PRODUCTION_SCHEMA,
};
pub use http::{identity, ids, next_path, Caller, TestApp, Workers, TEST_CREDENTIALS_KEY};

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `done` every 20 ms until it holds; fails the test after `limit`, naming `what`.
pub async fn wait_for<F: Fn() -> bool>(what: &str, limit: Duration, done: F) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `body` against a fresh app on `backend`, then drops the test database whether the body
/// passed or panicked.
pub async fn run_on<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let app = TestApp::new(&db, |_| {}).await;
    let outcome = tokio::spawn(body(app)).await;
    db.destroy().await;
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Declares tests whose body runs on both backends: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($(
        $(#[doc = $doc:literal])*
        async fn $name:ident($app:ident) $body:block
    )*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::helpers::run_on($crate::helpers::Backend::Sqlite, |$app| async move $body).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::helpers::run_on($crate::helpers::Backend::Postgres, |$app| async move $body).await
            }
        }
    )*};
}
