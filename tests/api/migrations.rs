//! The schema: migrations up, down and up again, and the database's own tenant guarantees.

use chrono::Utc;
use entity::{action, organization, tool};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use serde_json::json;
use tolstoy::db;
use uuid::Uuid;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

const TABLES: [&str; 7] = [
    "organizations",
    "users",
    "tools",
    "actions",
    "flows",
    "execution_logs",
    "api_keys",
];

async fn table_exists(app: &TestApp, table: &str) -> bool {
    let sql = match app.backend {
        Backend::Sqlite => {
            format!("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table}'")
        }
        Backend::Postgres => {
            format!("SELECT 1 FROM information_schema.tables WHERE table_name = '{table}'")
        }
    };
    app.db
        .query_one_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            sql,
        ))
        .await
        .expect("query catalog")
        .is_some()
}

async fn insert_org(app: &TestApp) -> Uuid {
    let at = Utc::now();
    let id = Uuid::now_v7();
    organization::ActiveModel {
        id: Set(id),
        name: Set("Org".into()),
        retention_days: Set(None),
        allowed_email_domains: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&app.db)
    .await
    .expect("organization");
    id
}

on_both_backends! {
    async fn migrations_go_up_down_and_up_again(app) {
        for table in TABLES {
            assert!(table_exists(&app, table).await, "{table} after up");
        }
        let direct = app.direct().await;
        assert!(db::pending_migrations(&direct).await.expect("status").is_empty());
        let migrations = db::migration_status(&direct).await.expect("status").len();
        db::migrate_down(&direct, migrations as u32).await.expect("down");
        for table in TABLES {
            assert!(!table_exists(&app, table).await, "{table} after down");
        }
        assert_eq!(db::pending_migrations(&direct).await.expect("status").len(), migrations);
        assert_eq!(app.db.pending_migrations().await.expect("read-only status").len(), migrations);
        db::migrate_up(&direct).await.expect("up again");
        for table in TABLES {
            assert!(table_exists(&app, table).await, "{table} after up again");
        }
        assert!(db::migration_status(&direct).await.expect("status").iter().all(|(_, applied)| *applied));
    }

    async fn the_database_refuses_an_action_on_another_organizations_tool(app) {
        let owner = insert_org(&app).await;
        let intruder = insert_org(&app).await;
        let at = Utc::now();
        let tool_id = Uuid::now_v7();
        tool::ActiveModel {
            id: Set(tool_id), org_id: Set(owner), name: Set("Slack".into()),
            base_url: Set("https://slack.com".into()), auth_type: Set("none".into()),
            created_at: Set(at), updated_at: Set(at), ..Default::default()
        }
        .insert(&app.db)
        .await
        .expect("tool");
        let action = |org_id| action::ActiveModel {
            id: Set(Uuid::now_v7()), org_id: Set(org_id), tool_id: Set(tool_id), name: Set(None),
            method: Set("GET".into()), endpoint: Set("/x".into()), schema: Set(json!({})),
            execute_if: Set(None), created_at: Set(at), updated_at: Set(at),
        };
        let refused = action(intruder).insert(&app.db).await.expect_err("cross-organization reference");
        assert!(
            matches!(refused.sql_err(), Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))),
            "{refused}"
        );
        action(owner).insert(&app.db).await.expect("same-organization reference");
    }

    async fn the_database_refuses_an_auth_type_outside_the_enumeration(app) {
        let org_id = insert_org(&app).await;
        let at = Utc::now();
        let refused = tool::ActiveModel {
            id: Set(Uuid::now_v7()), org_id: Set(org_id), name: Set("X".into()),
            base_url: Set("https://x".into()), auth_type: Set("magic".into()),
            created_at: Set(at), updated_at: Set(at), ..Default::default()
        }
        .insert(&app.db)
        .await;
        assert!(refused.is_err(), "CHECK constraint holds");
    }
}
