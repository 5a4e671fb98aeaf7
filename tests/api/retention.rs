//! Retention: execution logs and finished runs older than the limit go, in batches; newer ones
//! and runs that have not finished (with their logs) stay; an organization's `retentionDays`
//! wins over `RETENTION_DAYS`, and 0 keeps everything. The pass of the real binary, in the
//! background and as `tolstoy prune`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{execution_log, run, run_event};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
};
use serde_json::json;
use tolstoy::retention::{self, Mode, Pass, BATCH_ROWS};
use uuid::Uuid;

use crate::helpers::process::tolstoy;
use crate::helpers::{Caller, TestApp};
use crate::on_both_backends;
use crate::organizations::update_organization;
use crate::recovery::spawn;

fn days_ago(days: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days)
}

/// The tenant's one flow (made through the API).
async fn a_flow(app: &TestApp, caller: &Caller) -> Uuid {
    let id = crate::runs::flow(app, caller, json!([])).await;
    Uuid::parse_str(&id).expect("flow id")
}

/// Writes `count` execution logs of the flow created `at`, of `run_id` when given; their ids.
async fn logs_at(
    app: &TestApp,
    caller: &Caller,
    flow_id: Uuid,
    at: DateTime<Utc>,
    run_id: Option<Uuid>,
    count: usize,
) -> Vec<Uuid> {
    let rows: Vec<execution_log::ActiveModel> = (0..count)
        .map(|_| execution_log::ActiveModel {
            id: Set(Uuid::now_v7()),
            org_id: Set(caller.org_id.parse().expect("org id")),
            flow_id: Set(flow_id),
            user_id: Set(caller.user_id.parse().expect("user id")),
            execution_id: Set(run_id.map(|id| id.to_string())),
            step_id: Set("call".into()),
            status: Set("completed".into()),
            inputs: Set(json!({})),
            outputs: Set(None),
            error: Set(None),
            run_id: Set(run_id),
            attempt: Set(run_id.map(|_| 1)),
            duration_ms: Set(Some(1)),
            created_at: Set(at),
            updated_at: Set(at),
        })
        .collect();
    let ids = rows.iter().map(|row| *row.id.as_ref()).collect();
    // SQLite takes at most 32,766 parameters per statement.
    for chunk in rows.chunks(500) {
        execution_log::Entity::insert_many(chunk.to_vec())
            .exec(&app.db)
            .await
            .expect("insert logs");
    }
    ids
}

/// Writes a run of the flow created `created` days ago, `status`, finished `finished` days ago
/// when given, with one event; its id.
async fn run_at(
    app: &TestApp,
    caller: &Caller,
    flow_id: Uuid,
    status: &str,
    created: i64,
    finished: Option<i64>,
) -> Uuid {
    let id = Uuid::now_v7();
    let org_id: Uuid = caller.org_id.parse().expect("org id");
    let running = finished.is_none();
    run::ActiveModel {
        id: Set(id),
        org_id: Set(org_id),
        flow_id: Set(flow_id),
        user_id: Set(caller.user_id.parse().expect("user id")),
        flow_version: Set(1),
        steps: Set(json!([])),
        status: Set(status.into()),
        inputs: Set(json!({})),
        step_results: Set(json!({})),
        error: Set(None),
        idempotency_key: Set(None),
        request_digest: Set(None),
        step_index: Set(0),
        step_attempt: Set(0),
        event_seq: Set(1),
        available_at: Set(None),
        lease_owner: Set(running.then(|| "someone".to_owned())),
        lease_expires_at: Set(running.then(|| Utc::now() + chrono::Duration::hours(1))),
        cancel_requested: Set(false),
        deadline_at: Set(None),
        created_at: Set(days_ago(created)),
        started_at: Set(Some(days_ago(created))),
        finished_at: Set(finished.map(days_ago)),
        updated_at: Set(days_ago(finished.unwrap_or(created))),
        traceparent: Set(None),
    }
    .insert(&app.db)
    .await
    .expect("insert run");
    run_event::ActiveModel {
        org_id: Set(org_id),
        run_id: Set(id),
        seq: Set(1),
        kind: Set("run".into()),
        step_id: Set(None),
        attempt: Set(None),
        status: Set(status.into()),
        data: Set(json!({})),
        created_at: Set(days_ago(created)),
    }
    .insert(&app.db)
    .await
    .expect("insert run event");
    id
}

async fn log_exists(app: &TestApp, id: Uuid) -> bool {
    execution_log::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .expect("read log")
        .is_some()
}

async fn run_exists(app: &TestApp, id: Uuid) -> bool {
    let runs = run::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .expect("read run");
    let events = run_event::Entity::find()
        .filter(run_event::Column::RunId.eq(id))
        .count(&app.db)
        .await
        .expect("read events");
    assert_eq!(runs.is_some(), events > 0, "a run's events go with it");
    runs.is_some()
}

async fn logs_of(app: &TestApp, caller: &Caller) -> u64 {
    execution_log::Entity::find()
        .filter(execution_log::Column::OrgId.eq(caller.org_id.parse::<Uuid>().expect("org id")))
        .count(&app.db)
        .await
        .expect("count logs")
}

async fn set_retention(app: &TestApp, caller: &Caller, days: serde_json::Value) {
    let body = json!({"retentionDays": days});
    let organization = update_organization(app, &caller.org_id, &body).await;
    assert_eq!(organization["retentionDays"], days);
}

on_both_backends! {
    /// Three organizations: the default of 30 days, their own 90, and 0 (for ever). Logs of
    /// 10, 40 and 100 days, a run finished 40 days ago, a run still going since 100 days ago
    /// with a log of that age; a dry run counts and deletes nothing, the pass deletes exactly
    /// what it counted, in batches.
    async fn old_rows_go_newer_and_unfinished_stay_and_the_organization_setting_wins(app) {
        let default = app.new_tenant("Default").await;
        let ninety = app.new_tenant("Ninety").await;
        let forever = app.new_tenant("Forever").await;
        set_retention(&app, &ninety, json!(90)).await;
        set_retention(&app, &forever, json!(0)).await;

        struct Rows { recent: Uuid, month: Uuid, old: Vec<Uuid>, finished: Uuid, going: Uuid, going_log: Uuid }
        let mut rows = Vec::new();
        for caller in [&default, &ninety, &forever] {
            let flow_id = a_flow(&app, caller).await;
            let going = run_at(&app, caller, flow_id, "running", 100, None).await;
            rows.push(Rows {
                recent: logs_at(&app, caller, flow_id, days_ago(10), None, 1).await[0],
                month: logs_at(&app, caller, flow_id, days_ago(40), None, 1).await[0],
                // More than one batch.
                old: logs_at(&app, caller, flow_id, days_ago(100), None, BATCH_ROWS as usize + 200).await,
                finished: run_at(&app, caller, flow_id, "completed", 41, Some(40)).await,
                going,
                going_log: logs_at(&app, caller, flow_id, days_ago(100), Some(going), 1).await[0],
            });
        }

        let counted = retention::prune(&app.db, 30, Utc::now(), Mode::DryRun, None, None).await.expect("dry run");
        let Pass::Done(counted) = counted else { panic!("{counted:?}") };
        let by_org = |pass: &[retention::Pruned], caller: &Caller| {
            pass.iter().find(|p| p.org_id.to_string() == caller.org_id).map(|p| (p.days, p.execution_logs, p.runs))
        };
        let old = BATCH_ROWS + 200;
        assert_eq!(by_org(&counted, &default), Some((30, old + 1, 1)));
        assert_eq!(by_org(&counted, &ninety), Some((90, old, 0)));
        assert_eq!(by_org(&counted, &forever), None);
        assert_eq!(logs_of(&app, &default).await, old + 3, "a dry run deletes nothing");

        let pass = retention::prune(&app.db, 30, Utc::now(), Mode::Delete, None, None).await.expect("prune");
        let Pass::Done(deleted) = pass else { panic!("{pass:?}") };
        assert_eq!(deleted, counted, "the pass deletes what the dry run counted");

        let [default_rows, ninety_rows, forever_rows] = &rows[..] else { unreachable!() };
        assert!(log_exists(&app, default_rows.recent).await);
        assert!(!log_exists(&app, default_rows.month).await);
        assert!(!log_exists(&app, default_rows.old[0]).await && !log_exists(&app, default_rows.old[old as usize - 1]).await);
        assert!(!run_exists(&app, default_rows.finished).await);
        assert!(run_exists(&app, default_rows.going).await, "a run still going stays");
        assert!(log_exists(&app, default_rows.going_log).await, "and so do its logs");
        assert_eq!(logs_of(&app, &default).await, 2);

        assert!(log_exists(&app, ninety_rows.month).await && run_exists(&app, ninety_rows.finished).await);
        assert!(!log_exists(&app, ninety_rows.old[0]).await);
        assert!(log_exists(&app, ninety_rows.going_log).await);
        assert_eq!(logs_of(&app, &ninety).await, 3);

        assert_eq!(logs_of(&app, &forever).await, old + 3, "0 keeps every row");
        assert!(run_exists(&app, forever_rows.finished).await);

        let again = retention::prune(&app.db, 30, Utc::now(), Mode::Delete, None, None).await.expect("prune");
        assert_eq!(again, Pass::Done(vec![]), "a second pass finds nothing");
        // RETENTION_DAYS=0 keeps what the organizations do not limit themselves.
        let none = retention::prune(&app.db, 0, Utc::now() + chrono::Duration::days(60), Mode::DryRun, None, None).await.expect("dry run");
        let Pass::Done(none) = none else { panic!("{none:?}") };
        assert_eq!(none.iter().map(|p| p.org_id.to_string()).collect::<Vec<_>>(), vec![ninety.org_id.clone()]);
    }

    /// `retentionDays` is 0 to 3650 or null (back to the default); anything else is a 400
    /// naming the field (a field that fails validation), and nothing is written.
    async fn retention_days_is_checked_and_null_resets_it(app) {
        let org = app.create_org("Acme").await;
        let path = format!("/organizations/{org}");
        assert_eq!(app.get(&path).await.body["retentionDays"], json!(null));
        for bad in [json!(3651), json!(-1), json!(1.5), json!("30"), json!(true)] {
            let reply = app.put(&path, &json!({"name": "Changed", "retentionDays": bad})).await;
            assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
            assert_eq!(reply.assert_problem(400), vec!["retentionDays".to_owned()], "{bad}");
            assert_eq!(app.get(&path).await.body["name"], "Acme", "no partial write");
        }
        let made = app.post("/organizations", &json!({"name": "Kept", "retentionDays": 3650})).await;
        assert_eq!(made.status, 201, "{}", made.text);
        assert_eq!(made.body["retentionDays"], 3650);
        assert_eq!(app.post("/organizations", &json!({"name": "No", "retentionDays": 4000})).await.status, 400);
        assert_eq!(app.put(&path, &json!({"retentionDays": 7})).await.body["retentionDays"], 7);
        let reset = app.put(&path, &json!({"retentionDays": null})).await;
        assert_eq!(reset.status, 200, "{}", reset.text);
        assert_eq!(reset.body["retentionDays"], json!(null));
        assert_eq!(reset.body["name"], "Acme");
    }

    /// A finished run's events go in batches of their own before the run, never all in the
    /// statement that deletes the run (the foreign key would cascade them there).
    async fn a_runs_many_events_go_in_batches_before_it(app) {
        let caller = app.new_tenant("Acme").await;
        let flow_id = a_flow(&app, &caller).await;
        let old = run_at(&app, &caller, flow_id, "completed", 50, Some(45)).await;
        let org_id: Uuid = caller.org_id.parse().expect("org id");
        let events: Vec<run_event::ActiveModel> = (2..=(BATCH_ROWS as i32 + 500))
            .map(|seq| run_event::ActiveModel {
                org_id: Set(org_id),
                run_id: Set(old),
                seq: Set(seq),
                kind: Set("step".into()),
                step_id: Set(Some("a".into())),
                attempt: Set(Some(1)),
                status: Set("completed".into()),
                data: Set(json!({})),
                created_at: Set(days_ago(46)),
            })
            .collect();
        for chunk in events.chunks(500) {
            run_event::Entity::insert_many(chunk.to_vec()).exec(&app.db).await.expect("events");
        }
        let metrics = tolstoy::telemetry::metrics::Metrics::new();
        let pass = retention::prune(&app.db, 30, Utc::now(), Mode::Delete, None, Some(&metrics))
            .await
            .expect("prune");
        assert_eq!(pass.totals(), (0, 1), "{pass:?}");
        assert!(!run_exists(&app, old).await);
        let text = metrics.render(&tolstoy::telemetry::metrics::Snapshot {
            pool: app.db.usage(),
            queue: None,
        });
        let events_line = format!("tolstoy_pruned_rows_total{{table=\"run_events\"}} {}", BATCH_ROWS + 500);
        assert!(text.lines().any(|line| line == events_line), "all {} events by our batches:\n{text}", BATCH_ROWS + 500);
    }

    /// The server prunes in the background (here every second), and `tolstoy prune --dry-run`
    /// says what would go without deleting it.
    async fn the_server_prunes_in_the_background_and_the_cli_dry_runs(app) {
        let caller = app.new_tenant("Acme").await;
        let flow_id = a_flow(&app, &caller).await;
        let old = logs_at(&app, &caller, flow_id, days_ago(45), None, 3).await;
        let recent = logs_at(&app, &caller, flow_id, days_ago(5), None, 1).await;

        let mut dry_run = tolstoy(&crate::helpers::process::temp_dir());
        dry_run.args(["prune", "--dry-run"]);
        for (name, value) in &app.server_env {
            dry_run.env(name, value);
        }
        let output = dry_run.output().expect("tolstoy prune --dry-run");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(&format!("organization {} (kept 30 days): would delete 3 execution log(s), 0 run(s)", caller.org_id)), "{stdout}");
        assert!(log_exists(&app, old[0]).await, "a dry run deletes nothing");

        let _server = spawn(&app, "serve", &[("PORT", &crate::helpers::process::free_port().to_string()), ("WORKERS", "0"), ("RETENTION_INTERVAL_SECS", "1")], "server.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while logs_of(&app, &caller).await > 1 {
            assert!(std::time::Instant::now() < deadline, "the server did not prune");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!log_exists(&app, old[2]).await);
        assert!(log_exists(&app, recent[0]).await);
    }
}

/// On PostgreSQL only one process prunes at a time: while another holds the prune lock, a pass
/// stops at once, deleting nothing, instead of waiting. (SQLite has one writer at a time
/// anyway.)
mod a_pass_gives_way_while_another_process_prunes {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        crate::helpers::run_on(crate::helpers::Backend::Postgres, |app| async move {
            let caller = app.new_tenant("Acme").await;
            let flow_id = a_flow(&app, &caller).await;
            logs_at(&app, &caller, flow_id, days_ago(45), None, 2).await;
            let other = app.db.begin().await.expect("begin");
            other
                .execute_unprepared(&retention::prune_lock_sql("pg_advisory_xact_lock"))
                .await
                .expect("take the prune lock");
            let pass = retention::prune(&app.db, 30, Utc::now(), Mode::Delete, None, None)
                .await
                .expect("prune");
            assert_eq!(pass, Pass::Busy(vec![]));
            assert_eq!(logs_of(&app, &caller).await, 2);
            other.commit().await.expect("commit");
            let pass = retention::prune(&app.db, 30, Utc::now(), Mode::Delete, None, None)
                .await
                .expect("prune");
            assert!(
                matches!(pass, Pass::Done(ref pruned) if pruned.len() == 1),
                "{pass:?}"
            );
            assert_eq!(logs_of(&app, &caller).await, 0);
        })
        .await;
    }
}
