//! `/flows/{id}/runs`, `/runs`: starting flows, following and cancelling their runs.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{run, run_event};
use futures_util::stream::{self, BoxStream, StreamExt};
use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::EventStream;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::body::{Fields, JsonBody, JsonObject, ReadBody};
use super::export::{Export, ExportFormat};
use super::pagination::page_request;
use super::responses::{Listed, Reply};
use super::rules::{enum_text, json_object};
use super::timestamp::Timestamp;
use super::ApiTags;
use crate::db::Pool;
use crate::error::ApiError;
use crate::identity::{Caller, Read, Write};
use crate::middleware::current_trace;
use crate::runs::Signals;
use crate::service::export::CreatedWindow;
use crate::service::runs::{self, NewRun, RunFilter};
use crate::service::tenancy::Tenant;
use crate::state::AppState;

/// The largest `inputs` of a run (256 KiB of JSON).
const MAX_INPUTS_BYTES: usize = 256 * 1024;

/// How often an event stream looks for events written by workers in other processes, and how
/// often it sends a keep-alive comment.
const EVENT_POLL: Duration = Duration::from_secs(1);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Where a run stands.
#[derive(Enum)]
#[oai(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// A run of a flow.
#[derive(Object, Serialize)]
#[oai(rename = "Run", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct RunOut {
    /// Server-made UUID (version 7).
    pub id: Uuid,
    /// The organization the run belongs to.
    pub org_id: Uuid,
    /// The flow being run.
    pub flow_id: Uuid,
    /// The user who started it.
    pub user_id: Uuid,
    /// The flow version being run: later edits of the flow do not change a run.
    pub flow_version: i32,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The run's inputs, as given.
    pub inputs: Value,
    /// Step id -> that step's output, for the steps that completed.
    pub outputs: Value,
    /// Why it failed: `{"stepId", "message", "kind"}`.
    #[oai(nullable)]
    pub error: Option<Value>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// When a worker first took it.
    #[oai(nullable)]
    pub started_at: Option<Timestamp>,
    /// When it completed, failed or was cancelled.
    #[oai(nullable)]
    pub finished_at: Option<Timestamp>,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl From<run::Model> for RunOut {
    fn from(row: run::Model) -> Self {
        Self {
            outputs: runs::outputs_of(&row),
            id: row.id,
            org_id: row.org_id,
            flow_id: row.flow_id,
            user_id: row.user_id,
            flow_version: row.flow_version,
            status: row.status,
            inputs: row.inputs,
            error: row.error,
            created_at: row.created_at.into(),
            started_at: row.started_at.map(Into::into),
            finished_at: row.finished_at.map(Into::into),
            updated_at: row.updated_at.into(),
        }
    }
}

/// What to run a flow with.
#[derive(Object)]
#[oai(
    rename = "RunIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct RunIn {
    /// A JSON object of at most 256 KiB (default `{}`): what the steps' expressions see as
    /// `inputs`.
    pub inputs: Option<JsonObject>,
}

impl Example for RunIn {
    fn example() -> Self {
        Self {
            inputs: Some(JsonObject::from([("city".to_owned(), json!("Tula"))])),
        }
    }
}

impl ReadBody for RunIn {
    type Value = Value;

    fn read(fields: &mut Fields) -> Value {
        fields
            .optional("inputs", json_object(MAX_INPUTS_BYTES))
            .unwrap_or_else(|| json!({}))
    }
}

/// One event of a run: a step attempt began or ended, or the run ended.
#[derive(Object)]
#[oai(rename = "RunEvent", rename_all = "camelCase")]
pub struct RunEventOut {
    /// 1, 2, … within the run; the SSE `id`, for `Last-Event-ID`.
    pub id: i32,
    /// `step` or `run`; also the SSE `event`.
    #[oai(rename = "type")]
    pub kind: String,
    /// The run.
    pub run_id: Uuid,
    /// The step, on step events.
    #[oai(nullable)]
    pub step_id: Option<String>,
    /// The attempt (from 1), on step events.
    #[oai(nullable)]
    pub attempt: Option<i32>,
    /// The step's status (`running`, `completed`, `failed`, `skipped`, `cancelled`) or the
    /// run's final status.
    pub status: String,
    /// Details: `durationMs`, `error`, `retryInMs` (when another attempt follows).
    pub data: Value,
    /// When it happened.
    pub created_at: Timestamp,
}

impl From<run_event::Model> for RunEventOut {
    fn from(row: run_event::Model) -> Self {
        Self {
            id: row.seq,
            kind: row.kind,
            run_id: row.run_id,
            step_id: row.step_id,
            attempt: row.attempt,
            status: row.status,
            data: row.data,
            created_at: row.created_at.into(),
        }
    }
}

/// 202 with the run and its `Location`.
#[derive(ApiResponse)]
pub enum Accepted {
    /// Queued (or, for a repeated `Idempotency-Key`, the run the first request started);
    /// `Location` is the run's URL.
    #[oai(status = 202)]
    Accepted(Reply<RunOut>, #[oai(header = "Location")] String),
}

impl Accepted {
    fn run(row: run::Model) -> Self {
        let location = format!("/runs/{}", row.id);
        Self::Accepted(Reply(row.into()), location)
    }
}

/// The runs endpoints.
pub struct RunsApi;

#[OpenApi(tag = "ApiTags::Runs")]
impl RunsApi {
    /// Run a flow: its steps are checked (422 naming the step that cannot run), then the run is
    /// queued and worked in the background.
    #[oai(path = "/flows/:id/runs", method = "post", operation_id = "startRun")]
    async fn start(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The flow's id.
        id: Path<Uuid>,
        /// 1 to 200 visible ASCII characters: a repeat with the same key and body within 24
        /// hours answers the same run; with another body, 409.
        #[oai(
            name = "Idempotency-Key",
            validator(pattern = "^[\\x21-\\x7E]{1,200}$")
        )]
        idempotency_key: Header<Option<String>>,
        body: JsonBody<RunIn>,
    ) -> Result<Accepted, ApiError> {
        let new = NewRun {
            inputs: body.0,
            idempotency_key: idempotency_key.0,
            trace: current_trace(),
        };
        let row = runs::start(&state.db, &state.runs, &caller.tenant, id.0, new).await?;
        Ok(Accepted::run(row))
    }

    /// List the organization's runs, newest first, with optional filters.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/runs", method = "get", operation_id = "listRuns")]
    async fn list(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        request: &Request,
        /// Only the runs of this flow.
        #[oai(name = "flowId")]
        flow_id: Query<Option<Uuid>>,
        /// Only the runs with this status.
        status: Query<Option<RunStatus>>,
        /// Page size, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u64>>,
        /// The opaque cursor from the previous page's `Link` header.
        #[oai(validator(pattern = "^[0-9a-f]{32}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Listed<RunOut>, ApiError> {
        let page = page_request(limit.0, cursor.0.as_deref())?;
        let filter = RunFilter {
            flow_id: flow_id.0,
            status: status.0.as_ref().and_then(enum_text),
        };
        let rows = runs::list(&state.db, &caller.tenant, filter, page).await?;
        Ok(Listed::page(request, page, rows))
    }

    /// Export every run that the list's filters and the creation window select, newest first,
    /// with no page limit, streamed: NDJSON by default, CSV with `format=csv` or
    /// `Accept: text/csv`.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/runs/export", method = "get", operation_id = "exportRuns")]
    async fn export(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        request: &Request,
        /// Only the runs of this flow.
        #[oai(name = "flowId")]
        flow_id: Query<Option<Uuid>>,
        /// Only the runs with this status.
        status: Query<Option<RunStatus>>,
        /// Only the runs created (queued) at or after this instant (RFC 3339).
        #[oai(name = "createdAfter")]
        created_after: Query<Option<DateTime<Utc>>>,
        /// Only the runs created before this instant (RFC 3339); none when it is not later than `createdAfter`.
        #[oai(name = "createdBefore")]
        created_before: Query<Option<DateTime<Utc>>>,
        /// `ndjson` or `csv`; wins over `Accept`.
        format: Query<Option<ExportFormat>>,
    ) -> Result<Export<RunOut>, ApiError> {
        let window = CreatedWindow {
            after: created_after.0,
            before: created_before.0,
        };
        let filter = RunFilter {
            flow_id: flow_id.0,
            status: status.0.as_ref().and_then(enum_text),
        };
        Export::of(request, format.0, "runs", "runs", &state.metrics, |size| {
            runs::export(&state.db, &caller.tenant, filter, window, size)
        })
        .await
    }

    /// Get a run.
    #[oai(path = "/runs/:id", method = "get", operation_id = "getRun")]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The run's id.
        id: Path<Uuid>,
    ) -> Result<Reply<RunOut>, ApiError> {
        let row = runs::find(&state.db, &caller.tenant, id.0).await?;
        Ok(Reply(row.into()))
    }

    /// Cancel a run: a queued one at once; a running one stops before its next step and its
    /// in-flight call is abandoned. A finished run: 409.
    #[oai(path = "/runs/:id/cancel", method = "post", operation_id = "cancelRun")]
    async fn cancel(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The run's id.
        id: Path<Uuid>,
    ) -> Result<Accepted, ApiError> {
        let row = runs::cancel(&state.db, &state.runs, &caller.tenant, id.0).await?;
        Ok(Accepted::run(row))
    }

    /// Follow a run as Server-Sent Events: one per step transition and one for the end of the
    /// run, each with an `id`; the stream ends after the run's end. `Last-Event-ID` resumes
    /// after that event.
    #[oai(
        path = "/runs/:id/events",
        method = "get",
        operation_id = "streamRunEvents"
    )]
    async fn events(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The run's id.
        id: Path<Uuid>,
        /// Resume after this event.
        #[oai(
            name = "Last-Event-ID",
            validator(minimum(value = "0"), maximum(value = "2147483647"))
        )]
        last_event_id: Header<Option<i32>>,
    ) -> Result<EventStream<BoxStream<'static, RunEventOut>>, ApiError> {
        let after = last_event_id.0.unwrap_or(0);
        let (first, finished) = runs::events_after(&state.db, &caller.tenant, id.0, after).await?;
        let follow = Follow {
            db: state.db.clone(),
            signals: state.runs.clone(),
            tenant: caller.tenant,
            run_id: id.0,
            after,
            pending: first.into(),
            finished,
        };
        let events = stream::unfold(follow, Follow::next).boxed();
        Ok(EventStream::new(events)
            .keep_alive(KEEP_ALIVE)
            .to_event(|event| {
                let id = event.id.to_string();
                let kind = event.kind.clone();
                poem::web::sse::Event::message(
                    serde_json::to_string(&poem_openapi::types::ToJSON::to_json(&event))
                        .unwrap_or_default(),
                )
                .id(id)
                .event_type(kind)
            }))
    }
}

/// An event stream's place in its run.
struct Follow {
    db: Pool,
    signals: Signals,
    tenant: Tenant,
    run_id: Uuid,
    after: i32,
    pending: VecDeque<run_event::Model>,
    finished: bool,
}

impl Follow {
    /// The next event, waiting for it; `None` once the run's end has been sent.
    async fn next(mut self) -> Option<(RunEventOut, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = event.seq;
                return Some((event.into(), self));
            }
            if self.finished {
                return None;
            }
            let signals = self.signals.clone();
            let written = signals.next_events();
            tokio::pin!(written);
            written.as_mut().enable();
            match runs::events_after(&self.db, &self.tenant, self.run_id, self.after).await {
                Ok((events, finished)) => {
                    self.finished = finished;
                    if events.is_empty() && !finished {
                        let _ = tokio::time::timeout(EVENT_POLL, written).await;
                    }
                    self.pending = events.into();
                }
                Err(err) => {
                    tracing::warn!(run_id = %self.run_id, error = %err, "event stream ended");
                    return None;
                }
            }
        }
    }
}
