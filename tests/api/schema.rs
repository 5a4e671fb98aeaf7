//! `DB_SCHEMA`: Tolstoy in a schema of its own, in the production shape (the owner migrates
//! straight to the server, the application role queries through PgBouncer), beside tables of
//! the same names in `public` that it never touches; and the server refusing to start when its
//! tables are not where `DB_SCHEMA` says.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::json;

use crate::helpers::process::{free_port, temp_dir, tolstoy};
use crate::helpers::{
    with_user, TestApp, TestDb, APP_ROLE, DECOY_ORGANIZATION_ID, OWNER_ROLE, PRODUCTION_SCHEMA,
};

async fn admin(db: &TestDb) -> DatabaseConnection {
    Database::connect(db.admin_url().expect("a PostgreSQL database"))
        .await
        .expect("connect as the administrator")
}

/// The first column of every row of `sql`, as text.
async fn texts(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a text column"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_schema_holds_every_table_and_leaves_public_untouched() {
    let Some(db) = TestDb::create_production().await else {
        return;
    };
    let app = TestApp::new(&db, |_| {}).await;
    let caller = app.new_tenant("Acme").await;
    let tool = app
        .post_as(
            &caller,
            "/tools",
            &json!({"name": "CRM", "baseUrl": "https://crm.example", "authType": "none"}),
        )
        .await;
    assert_eq!(tool.status, 201, "{}", tool.text);
    assert_eq!(
        app.get_as(&caller, "/tools")
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let admin = admin(&db).await;
    assert_eq!(
        texts(&admin, "SELECT id::text FROM public.organizations").await,
        [DECOY_ORGANIZATION_ID],
        "public's same-named table keeps its one row and gets none"
    );
    assert_eq!(
        texts(&admin, "SELECT count(*)::text FROM public.tools").await,
        ["0"]
    );
    assert_eq!(
        texts(
            &admin,
            &format!("SELECT id::text FROM {PRODUCTION_SCHEMA}.organizations")
        )
        .await,
        std::slice::from_ref(&caller.org_id)
    );
    let migrations = migration::Migrator::migrations().len().to_string();
    for schema in ["public", PRODUCTION_SCHEMA] {
        assert_eq!(
            texts(
                &admin,
                &format!("SELECT count(*)::text FROM {schema}.seaql_migrations")
            )
            .await,
            std::slice::from_ref(&migrations),
            "{schema}'s ledger"
        );
    }
    // Every table, index and sequence the owner made is in the schema, and there are some
    // (their TOAST tables are in pg_toast, wherever the table is).
    let placed = texts(
        &admin,
        &format!(
            "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE pg_get_userbyid(c.relowner) = '{OWNER_ROLE}' AND c.relkind IN ('r', 'i', 'S') AND n.nspname <> 'pg_toast'"
        ),
    )
    .await;
    assert!(placed.len() > 20, "{placed:?}");
    assert!(
        placed.iter().all(|schema| schema == PRODUCTION_SCHEMA),
        "{placed:?}"
    );
    // The application role may use its schema only: public's tables are not its to read.
    let stray = app
        .db
        .execute_unprepared("SELECT * FROM public.organizations")
        .await
        .expect_err("the application role reads nothing in public");
    assert!(stray.to_string().contains("permission denied"), "{stray}");
    admin.close().await.ok();
    db.destroy().await;
}

/// Runs `tolstoy serve` with `env` and waits (up to 30 s) for it to stop by itself.
fn serve_until_it_stops(env: &[(&str, String)]) -> Output {
    let dir = temp_dir();
    let mut child = tolstoy(&dir)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("PORT", free_port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tolstoy serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tolstoy serve started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(dir);
    child.wait_with_output().expect("output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_when_its_tables_are_not_where_db_schema_says() {
    let Some(db) = TestDb::create_production().await else {
        return;
    };
    let app = TestApp::new(&db, |_| {}).await;
    let env = |replace: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut env = app.server_env.clone();
        env.retain(|(name, _)| replace.iter().all(|(other, _)| other != name));
        env.extend_from_slice(replace);
        env
    };
    let refusal = |output: &Output| {
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    // DB_SCHEMA names a schema where nothing is; the role finds the tables elsewhere.
    let stderr = refusal(&serve_until_it_stops(&env(&[(
        "DB_SCHEMA",
        "elsewhere".into(),
    )])));
    assert!(
        stderr.contains(r#"DB_SCHEMA is "elsewhere""#)
            && stderr.contains(&format!(r#"in schema "{PRODUCTION_SCHEMA}""#))
            && stderr.contains("tolstoy roles --schema elsewhere"),
        "{stderr}"
    );

    // The application role without its search_path finds public's same-named tables.
    let admin = admin(&db).await;
    admin
        .execute_unprepared(&format!(
            "ALTER ROLE {APP_ROLE} IN DATABASE \"{}\" RESET search_path",
            db.database_name()
        ))
        .await
        .expect("reset the search_path");
    // Straight to the server: PgBouncer's open server connections keep the old setting.
    let app_direct = (
        "DATABASE_URL",
        with_user(&db.admin_url().expect("url"), APP_ROLE),
    );
    let stderr = refusal(&serve_until_it_stops(&env(&[
        app_direct.clone(),
        ("DB_STATEMENT_CACHE", "true".into()),
    ])));
    assert!(
        stderr.contains(&format!(r#"DB_SCHEMA is "{PRODUCTION_SCHEMA}""#))
            && stderr.contains(r#"in schema "public""#)
            && stderr.contains("search_path: \"$user\", public"),
        "{stderr}"
    );

    // Without those: the tables are there, the role does not see them.
    admin
        .execute_unprepared("DROP TABLE public.seaql_migrations, public.organizations CASCADE")
        .await
        .expect("drop the decoys");
    let stderr = refusal(&serve_until_it_stops(&env(&[
        app_direct,
        ("DB_STATEMENT_CACHE", "true".into()),
    ])));
    assert!(
        stderr.contains(&format!(
            r#"is in schema "{PRODUCTION_SCHEMA}" (DB_SCHEMA), but this connection does not see it"#
        )) && stderr.contains(&format!("tolstoy roles --schema {PRODUCTION_SCHEMA}")),
        "{stderr}"
    );
    admin.close().await.ok();
    drop(app);
    db.destroy().await;
}

#[tokio::test]
async fn migrate_creates_the_schema_and_puts_everything_there() {
    let Some(db) = TestDb::create(crate::helpers::Backend::Postgres).await else {
        return;
    };
    let url = db.admin_url().expect("a PostgreSQL database");
    let dir = temp_dir();
    let migrate = |action: &str| {
        tolstoy(&dir)
            .env("DIRECT_URL", &url)
            .env("DB_SCHEMA", "fresh_schema")
            .args(["migrate", action])
            .output()
            .expect("run tolstoy migrate")
    };
    let up = migrate("up");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = String::from_utf8_lossy(&migrate("status").stdout).into_owned();
    assert!(
        !status.contains("pending") && status.contains("applied"),
        "{status}"
    );

    let admin = admin(&db).await;
    let where_ = |table: &str| {
        format!(
            "SELECT table_schema::text FROM information_schema.tables WHERE table_name = '{table}'"
        )
    };
    for table in [
        "seaql_migrations",
        "organizations",
        "runs",
        "execution_logs",
    ] {
        assert_eq!(
            texts(&admin, &where_(table)).await,
            ["fresh_schema"],
            "{table}"
        );
    }
    admin.close().await.ok();
    let _ = std::fs::remove_dir_all(dir);
    db.destroy().await;
}

#[test]
fn sqlite_ignores_db_schema_and_says_so() {
    let dir = temp_dir();
    let output = tolstoy(&dir)
        .env("DB_SCHEMA", "tolstoy_service")
        .args(["prune", "--dry-run"])
        .output()
        .expect("run tolstoy prune");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("DB_SCHEMA is ignored on SQLite"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
