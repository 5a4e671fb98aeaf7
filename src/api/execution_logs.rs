//! `/execution-logs`: the audit trail of the caller's organization's flow runs.

use entity::execution_log;
use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{Enum, Object, OpenApi};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use chrono::{DateTime, Utc};

use super::body::{Fields, JsonBody, JsonObject, ReadBody};
use super::export::{Export, ExportFormat};
use super::pagination::page_request;
use super::responses::{Created, Deleted, Listed, Reply};
use super::rules::{any_json, enum_text, json_object, one_of, text, uuid};
use super::timestamp::Timestamp;
use super::ApiTags;
use crate::error::ApiError;
use crate::identity::{Caller, Read, Write};
use crate::service::execution_logs::{
    self, ExecutionLogChanges, ExecutionLogFilter, NewExecutionLog,
};
use crate::service::export::CreatedWindow;
use crate::state::AppState;

/// JSON fields of a log are bounded by the body limit alone.
const NO_SIZE_LIMIT: usize = usize::MAX;

/// Where a step of a run stands.
#[derive(Enum)]
#[oai(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

/// An execution log: one step of one run of a flow.
#[derive(Object, Serialize)]
#[oai(rename = "ExecutionLog", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ExecutionLogOut {
    /// Server-made UUID (version 7).
    pub id: Uuid,
    /// The organization the log belongs to.
    pub org_id: Uuid,
    /// The user who wrote it (from `X-User-ID`).
    pub user_id: Uuid,
    /// The flow that ran.
    pub flow_id: Uuid,
    /// Groups the rows of one run.
    #[oai(nullable)]
    pub execution_id: Option<String>,
    /// The step of the flow.
    pub step_id: String,
    /// One of `queued running completed failed skipped cancelled`.
    pub status: String,
    /// The step's inputs, as given.
    pub inputs: Value,
    /// The step's outputs, as given.
    #[oai(nullable)]
    pub outputs: Option<Value>,
    /// The step's error, as given.
    #[oai(nullable)]
    pub error: Option<Value>,
    /// The run that wrote the row; null on rows written through the API.
    #[oai(nullable)]
    pub run_id: Option<Uuid>,
    /// The step attempt (from 1) on rows a run wrote.
    #[oai(nullable)]
    pub attempt: Option<i32>,
    /// How long the attempt took, on rows a run wrote.
    #[oai(nullable)]
    pub duration_ms: Option<i64>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl From<execution_log::Model> for ExecutionLogOut {
    fn from(row: execution_log::Model) -> Self {
        Self {
            id: row.id,
            org_id: row.org_id,
            user_id: row.user_id,
            flow_id: row.flow_id,
            execution_id: row.execution_id,
            step_id: row.step_id,
            status: row.status,
            inputs: row.inputs,
            outputs: row.outputs,
            error: row.error,
            run_id: row.run_id,
            attempt: row.attempt,
            duration_ms: row.duration_ms,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A new execution log; its user is the caller.
#[derive(Object)]
#[oai(
    rename = "ExecutionLogIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct ExecutionLogIn {
    /// A flow of the caller's organization (422 otherwise).
    pub flow_id: Uuid,
    /// At most 200 characters: groups the rows of one run.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub execution_id: Option<String>,
    /// 1 to 200 characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub step_id: String,
    /// Where the step stands.
    pub status: ExecutionStatus,
    /// A JSON object.
    pub inputs: JsonObject,
    /// Any JSON.
    #[oai(nullable)]
    pub outputs: Option<Value>,
    /// Any JSON.
    #[oai(nullable)]
    pub error: Option<Value>,
}

impl Example for ExecutionLogIn {
    fn example() -> Self {
        Self {
            flow_id: Uuid::nil(),
            execution_id: Some("run-2026-11-21-0001".to_owned()),
            step_id: "notify".to_owned(),
            status: ExecutionStatus::Completed,
            inputs: JsonObject::from([("text".to_owned(), json!("Good morning"))]),
            outputs: Some(json!({ "ok": true })),
            error: None,
        }
    }
}

impl ReadBody for ExecutionLogIn {
    type Value = NewExecutionLog;

    fn read(fields: &mut Fields) -> NewExecutionLog {
        NewExecutionLog {
            flow_id: fields.required("flowId", uuid),
            execution_id: fields.optional("executionId", text(0, 200)),
            step_id: fields.required("stepId", text(1, 200)),
            status: fields.required("status", one_of::<ExecutionStatus>),
            inputs: fields.required("inputs", json_object(NO_SIZE_LIMIT)),
            outputs: fields.optional("outputs", any_json),
            error: fields.optional("error", any_json),
        }
    }
}

/// Changes to an execution log; absent fields stay as they are, null clears the optional ones.
#[derive(Object)]
#[oai(
    rename = "ExecutionLogUpdate",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct ExecutionLogUpdate {
    /// A flow of the caller's organization (422 otherwise).
    pub flow_id: Option<Uuid>,
    /// At most 200 characters; null clears it.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub execution_id: Option<String>,
    /// 1 to 200 characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub step_id: Option<String>,
    /// Where the step stands.
    pub status: Option<ExecutionStatus>,
    /// A JSON object.
    pub inputs: Option<JsonObject>,
    /// Any JSON; null clears it.
    #[oai(nullable)]
    pub outputs: Option<Value>,
    /// Any JSON; null clears it.
    #[oai(nullable)]
    pub error: Option<Value>,
}

impl Example for ExecutionLogUpdate {
    fn example() -> Self {
        Self {
            flow_id: None,
            execution_id: None,
            step_id: None,
            status: Some(ExecutionStatus::Failed),
            inputs: None,
            outputs: None,
            error: Some(json!({ "message": "timeout after 30 s" })),
        }
    }
}

impl ReadBody for ExecutionLogUpdate {
    type Value = ExecutionLogChanges;

    fn read(fields: &mut Fields) -> ExecutionLogChanges {
        ExecutionLogChanges {
            flow_id: fields.patch("flowId", uuid),
            execution_id: fields.patch_nullable("executionId", text(0, 200)),
            step_id: fields.patch("stepId", text(1, 200)),
            status: fields.patch("status", one_of::<ExecutionStatus>),
            inputs: fields.patch("inputs", json_object(NO_SIZE_LIMIT)),
            outputs: fields.patch_nullable("outputs", any_json),
            error: fields.patch_nullable("error", any_json),
        }
    }
}

/// The execution logs endpoints.
pub struct ExecutionLogsApi;

#[OpenApi(tag = "ApiTags::ExecutionLogs")]
impl ExecutionLogsApi {
    /// Write an execution log.
    #[oai(
        path = "/execution-logs",
        method = "post",
        operation_id = "createExecutionLog"
    )]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        body: JsonBody<ExecutionLogIn>,
    ) -> Result<Created<ExecutionLogOut>, ApiError> {
        let row = execution_logs::create(&state.db, &caller.tenant, body.0).await?;
        Ok(Created::at("/execution-logs", row.id, row.into()))
    }

    /// List the organization's execution logs, newest first, with optional filters.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/execution-logs",
        method = "get",
        operation_id = "listExecutionLogs"
    )]
    async fn list(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        request: &Request,
        /// Only the logs of this flow.
        #[oai(name = "flowId")]
        flow_id: Query<Option<Uuid>>,
        /// Only the logs written by this user.
        #[oai(name = "userId")]
        user_id: Query<Option<Uuid>>,
        /// Only the logs of this run.
        #[oai(name = "executionId")]
        execution_id: Query<Option<String>>,
        /// Only the logs with this status.
        status: Query<Option<ExecutionStatus>>,
        /// Page size, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u64>>,
        /// The opaque cursor from the previous page's `Link` header.
        #[oai(validator(pattern = "^[0-9a-f]{32}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Listed<ExecutionLogOut>, ApiError> {
        let page = page_request(limit.0, cursor.0.as_deref())?;
        let filter = ExecutionLogFilter {
            flow_id: flow_id.0,
            user_id: user_id.0,
            execution_id: execution_id.0,
            status: status.0.as_ref().and_then(enum_text),
        };
        let rows = execution_logs::list(&state.db, &caller.tenant, filter, page).await?;
        Ok(Listed::page(request, page, rows))
    }

    /// Export every execution log that the list's filters and the creation window select,
    /// newest first, with no page limit, streamed: NDJSON by default, CSV with `format=csv` or
    /// `Accept: text/csv`.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/execution-logs/export",
        method = "get",
        operation_id = "exportExecutionLogs"
    )]
    async fn export(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        request: &Request,
        /// Only the logs of this flow.
        #[oai(name = "flowId")]
        flow_id: Query<Option<Uuid>>,
        /// Only the logs written by this user.
        #[oai(name = "userId")]
        user_id: Query<Option<Uuid>>,
        /// Only the logs of this run.
        #[oai(name = "executionId")]
        execution_id: Query<Option<String>>,
        /// Only the logs with this status.
        status: Query<Option<ExecutionStatus>>,
        /// Only the logs created at or after this instant (RFC 3339).
        #[oai(name = "createdAfter")]
        created_after: Query<Option<DateTime<Utc>>>,
        /// Only the logs created before this instant (RFC 3339); none when it is not later than `createdAfter`.
        #[oai(name = "createdBefore")]
        created_before: Query<Option<DateTime<Utc>>>,
        /// `ndjson` or `csv`; wins over `Accept`.
        format: Query<Option<ExportFormat>>,
    ) -> Result<Export<ExecutionLogOut>, ApiError> {
        let window = CreatedWindow {
            after: created_after.0,
            before: created_before.0,
        };
        let filter = ExecutionLogFilter {
            flow_id: flow_id.0,
            user_id: user_id.0,
            execution_id: execution_id.0,
            status: status.0.as_ref().and_then(enum_text),
        };
        Export::of(
            request,
            format.0,
            "execution-logs",
            "execution_logs",
            &state.metrics,
            |size| execution_logs::export(&state.db, &caller.tenant, filter, window, size),
        )
        .await
    }

    /// Get an execution log.
    #[oai(
        path = "/execution-logs/:id",
        method = "get",
        operation_id = "getExecutionLog"
    )]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The execution log's id.
        id: Path<Uuid>,
    ) -> Result<Reply<ExecutionLogOut>, ApiError> {
        let row = execution_logs::find(&state.db, &caller.tenant, id.0).await?;
        Ok(Reply(row.into()))
    }

    /// Update an execution log (partial).
    #[oai(
        path = "/execution-logs/:id",
        method = "put",
        operation_id = "updateExecutionLog"
    )]
    async fn update(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The execution log's id.
        id: Path<Uuid>,
        body: JsonBody<ExecutionLogUpdate>,
    ) -> Result<Reply<ExecutionLogOut>, ApiError> {
        let row = execution_logs::update(&state.db, &caller.tenant, id.0, body.0).await?;
        Ok(Reply(row.into()))
    }

    /// Delete an execution log.
    #[oai(
        path = "/execution-logs/:id",
        method = "delete",
        operation_id = "deleteExecutionLog"
    )]
    async fn delete(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The execution log's id.
        id: Path<Uuid>,
    ) -> Result<Deleted, ApiError> {
        execution_logs::delete(&state.db, &caller.tenant, id.0).await?;
        Ok(Deleted::Deleted)
    }
}
