//! `/flows`: the caller's organization's workflow definitions, versioned.

use entity::flow;
use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{Object, OpenApi};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::body::{Fields, JsonBody, ReadBody};
use super::pagination::page_request;
use super::responses::{Created, Deleted, Listed, Reply};
use super::rules::{steps, text, version};
use super::timestamp::Timestamp;
use super::ApiTags;
use crate::error::ApiError;
use crate::identity::{Caller, Read, Write};
use crate::service::flows::{self, FlowChanges, NewFlow};
use crate::state::AppState;

/// A flow: a versioned workflow definition.
#[derive(Object, Serialize)]
#[oai(rename = "Flow", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct FlowOut {
    /// Server-made UUID (version 7).
    pub id: Uuid,
    /// The organization the flow belongs to.
    pub org_id: Uuid,
    /// Display name, if any.
    #[oai(nullable)]
    pub name: Option<String>,
    /// The steps, as given.
    pub steps: Vec<Value>,
    /// Starts at 1; 1 more on every update that changes `steps` or `name`.
    pub version: i32,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl From<flow::Model> for FlowOut {
    fn from(row: flow::Model) -> Self {
        let steps = match row.steps {
            Value::Array(steps) => steps,
            other => vec![other],
        };
        Self {
            id: row.id,
            org_id: row.org_id,
            name: row.name,
            steps,
            version: row.version,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A step of a flow, as documented: an object with a non-empty `id` and `type`; other keys are
/// kept as given. The server also refuses an `id` used by an earlier step of the same flow.
#[derive(Object)]
#[oai(rename = "StepIn")]
pub struct StepIn {
    /// Names the step; unique within the flow.
    #[oai(validator(min_length = 1))]
    pub id: String,
    /// What the step does, for example `action`.
    #[oai(rename = "type", validator(min_length = 1))]
    pub kind: String,
}

fn example_steps() -> Vec<StepIn> {
    vec![
        StepIn {
            id: "fetch".to_owned(),
            kind: "action".to_owned(),
        },
        StepIn {
            id: "notify".to_owned(),
            kind: "action".to_owned(),
        },
    ]
}

/// A new flow.
#[derive(Object)]
#[oai(
    rename = "FlowIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct FlowIn {
    /// At most 200 characters.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub name: Option<String>,
    /// At most 1000 step objects, each with a non-empty string `id` (unique in the flow) and a
    /// non-empty string `type`; other keys are kept as given.
    #[oai(validator(max_items = 1000))]
    pub steps: Vec<StepIn>,
}

impl Example for FlowIn {
    fn example() -> Self {
        Self {
            name: Some("Daily digest".to_owned()),
            steps: example_steps(),
        }
    }
}

impl ReadBody for FlowIn {
    type Value = NewFlow;

    fn read(fields: &mut Fields) -> NewFlow {
        NewFlow {
            name: fields.optional("name", text(0, 200)),
            steps: fields.required("steps", steps),
        }
    }
}

/// Changes to a flow; absent fields stay as they are, `name: null` clears the name.
#[derive(Object)]
#[oai(
    rename = "FlowUpdate",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct FlowUpdate {
    /// At most 200 characters; null clears it.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub name: Option<String>,
    /// The new steps (same rules as on create).
    #[oai(validator(max_items = 1000))]
    pub steps: Option<Vec<StepIn>>,
    /// A precondition: the version this update was made from. When it is not the stored
    /// version the update is refused with 409 and nothing changes.
    #[oai(validator(minimum(value = "1")))]
    pub version: Option<i32>,
}

impl Example for FlowUpdate {
    fn example() -> Self {
        Self {
            name: None,
            steps: Some(example_steps()),
            version: Some(1),
        }
    }
}

impl ReadBody for FlowUpdate {
    type Value = FlowChanges;

    fn read(fields: &mut Fields) -> FlowChanges {
        FlowChanges {
            name: fields.patch_nullable("name", text(0, 200)),
            steps: fields.patch("steps", steps),
            expected_version: fields.patch("version", version),
        }
    }
}

/// The flows endpoints.
pub struct FlowsApi;

#[OpenApi(tag = "ApiTags::Flows")]
impl FlowsApi {
    /// Create a flow (version 1).
    #[oai(path = "/flows", method = "post", operation_id = "createFlow")]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        body: JsonBody<FlowIn>,
    ) -> Result<Created<FlowOut>, ApiError> {
        let row = flows::create(&state.db, &caller.tenant, body.0).await?;
        Ok(Created::at("/flows", row.id, row.into()))
    }

    /// List the organization's flows, newest first.
    #[oai(path = "/flows", method = "get", operation_id = "listFlows")]
    async fn list(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        request: &Request,
        /// Page size, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u64>>,
        /// The opaque cursor from the previous page's `Link` header.
        #[oai(validator(pattern = "^[0-9a-f]{32}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Listed<FlowOut>, ApiError> {
        let page = page_request(limit.0, cursor.0.as_deref())?;
        let rows = flows::list(&state.db, &caller.tenant, page).await?;
        Ok(Listed::page(request, page, rows))
    }

    /// Get a flow.
    #[oai(path = "/flows/:id", method = "get", operation_id = "getFlow")]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The flow's id.
        id: Path<Uuid>,
    ) -> Result<Reply<FlowOut>, ApiError> {
        let row = flows::find(&state.db, &caller.tenant, id.0).await?;
        Ok(Reply(row.into()))
    }

    /// Update a flow (partial).
    ///
    /// A change to `steps` or `name` adds 1 to `version`. A `version` in the body is a
    /// precondition: 409 when it is not the stored version, and nothing changes. Of concurrent
    /// updates from the same version exactly one succeeds.
    #[oai(path = "/flows/:id", method = "put", operation_id = "updateFlow")]
    async fn update(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The flow's id.
        id: Path<Uuid>,
        body: JsonBody<FlowUpdate>,
    ) -> Result<Reply<FlowOut>, ApiError> {
        let row = flows::update(&state.db, &caller.tenant, id.0, body.0).await?;
        Ok(Reply(row.into()))
    }

    /// Delete a flow.
    ///
    /// 409 while the flow has execution logs, unless `?cascade=true`, which deletes them too.
    #[oai(path = "/flows/:id", method = "delete", operation_id = "deleteFlow")]
    async fn delete(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The flow's id.
        id: Path<Uuid>,
        /// Also delete the flow's execution logs.
        cascade: Query<Option<bool>>,
    ) -> Result<Deleted, ApiError> {
        flows::delete(&state.db, &caller.tenant, id.0, cascade.0.unwrap_or(false)).await?;
        Ok(Deleted::Deleted)
    }
}
