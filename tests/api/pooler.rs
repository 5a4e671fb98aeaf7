//! Neon's shape, for real: queries as the least-privileged application role through PgBouncer
//! in transaction mode, migrations as the owner; and what the server does when the database
//! goes away under it and comes back.

use std::process::Command;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbErr, RuntimeErr};
use serde_json::json;

use crate::helpers::{pooler_url, with_database, TestApp, TestDb};

/// The SQLSTATE of a failed statement.
fn sqlstate(err: &DbErr) -> Option<String> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)) => err
            .as_database_error()
            .and_then(|db| db.code())
            .map(|code| code.into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_reads_and_writes_rows_but_cannot_change_the_schema() {
    let Some(db) = TestDb::create_production().await else {
        return;
    };
    let app = TestApp::new(&db, |_| {}).await;

    let org = app.post("/organizations", &json!({ "name": "Acme" })).await;
    assert_eq!(org.status, 201, "{}", org.text);
    let who = app
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            "SELECT current_user::text AS name, rolsuper, rolcreaterole, rolcreatedb \
             FROM pg_roles WHERE rolname = current_user",
        ))
        .await
        .expect("who am I")
        .expect("a row");
    assert_eq!(
        who.try_get::<String>("", "name").expect("name"),
        "tolstoy_test_app"
    );
    for power in ["rolsuper", "rolcreaterole", "rolcreatedb"] {
        assert!(!who.try_get::<bool>("", power).expect(power), "{power}");
    }

    for ddl in [
        "CREATE TABLE intruders (id integer)",
        "ALTER TABLE tools ADD COLUMN backdoor text",
        "DROP TABLE execution_logs",
        "TRUNCATE organizations CASCADE",
        "CREATE INDEX sneaky ON users (email)",
    ] {
        let err = app
            .db
            .execute_unprepared(ddl)
            .await
            .expect_err(&format!("the application role may not run: {ddl}"));
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{ddl}: {err}");
    }
    // The rows are still there and still served.
    let again = app
        .get(&format!(
            "/organizations/{}",
            org.body["id"].as_str().unwrap_or_default()
        ))
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    db.destroy().await;
}

/// Runs a command on PgBouncer's admin console (the `pgbouncer` database).
fn pgbouncer_admin(command: &str) {
    let url = with_database(&pooler_url(), "pgbouncer");
    let output = Command::new("psql")
        .args([url.as_str(), "-X", "-q", "-c", command])
        .output()
        .expect("psql (PostgreSQL's client) runs");
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_answers_503_quickly_and_the_server_recovers_by_itself() {
    let Some(db) = TestDb::create_production().await else {
        return;
    };
    let mut pool = db.pool_settings();
    pool.acquire_timeout = Duration::from_secs(2);
    pool.statement_timeout = Duration::from_secs(3);
    let app = TestApp::with_pool(&db, &pool, |_| {}).await;
    let org = app.post("/organizations", &json!({ "name": "Acme" })).await;
    assert_eq!(org.status, 201, "{}", org.text);
    let path = format!(
        "/organizations/{}",
        org.body["id"].as_str().unwrap_or_default()
    );
    let name = db.database_name();

    // PgBouncer drops every connection to the database and holds new ones until RESUME:
    // to the server, the database is gone and does not answer.
    pgbouncer_admin(&format!("KILL \"{name}\""));
    for probe in [path.as_str(), "/ready"] {
        let started = Instant::now();
        let reply = app.get(probe).await;
        reply.assert_problem(503);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{probe} answered after {:?}, beyond the acquire and statement timeouts",
            started.elapsed()
        );
        assert!(
            !reply.text.contains("tolstoy_test"),
            "nothing internal: {}",
            reply.text
        );
        eprintln!("{probe}: 503 after {:?}", started.elapsed());
    }
    let health = app.get("/health").await;
    assert_eq!(
        health.status, 200,
        "liveness does not depend on the database"
    );

    pgbouncer_admin(&format!("RESUME \"{name}\""));
    // PgBouncer 1.18 itself takes about 10 s to serve a killed database again; every probe
    // meanwhile is a bounded 503, and the first one it serves is a 200 with no restart.
    let resumed = Instant::now();
    loop {
        let probe = Instant::now();
        let ready = app.get("/ready").await;
        eprintln!("/ready: {} after {:?}", ready.status, probe.elapsed());
        if ready.status == 200 {
            break;
        }
        ready.assert_problem(503);
        assert!(
            resumed.elapsed() < Duration::from_secs(40),
            "the server did not recover by itself"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("ready again {:?} after RESUME", resumed.elapsed());
    let back = app.get(&path).await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(back.body["name"], "Acme");
    db.destroy().await;
}
