//! `/actions`: endpoints of the caller's organization's tools.

use entity::action;
use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{Enum, Object, OpenApi, Union};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::body::{Fields, JsonBody, JsonObject, ReadBody};
use super::pagination::page_request;
use super::responses::{Created, Deleted, Listed, Reply};
use super::rules::{endpoint, json_object, string_or_object, text, upper_case_one_of, uuid};
use super::timestamp::Timestamp;
use super::ApiTags;
use crate::error::ApiError;
use crate::identity::{Caller, Read, Write};
use crate::service::actions::{self, ActionChanges, NewAction};
use crate::state::AppState;

/// The largest action input schema accepted, serialised.
const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// The HTTP method of an action (accepted in any letter case, stored upper case).
#[derive(Enum)]
#[oai(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

/// An action: one endpoint of a tool.
#[derive(Object, Serialize)]
#[oai(rename = "Action", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ActionOut {
    /// Server-made UUID (version 7).
    pub id: Uuid,
    /// The organization the action belongs to.
    pub org_id: Uuid,
    /// The tool this is an endpoint of.
    pub tool_id: Uuid,
    /// Display name, if any.
    #[oai(nullable)]
    pub name: Option<String>,
    /// Upper case HTTP method.
    pub method: String,
    /// The path on the tool, starting with `/`.
    pub endpoint: String,
    /// The action's input schema, as given.
    pub schema: Value,
    /// The condition under which the action runs, as given (string or object).
    #[oai(nullable)]
    pub execute_if: Option<Value>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl From<action::Model> for ActionOut {
    fn from(row: action::Model) -> Self {
        Self {
            id: row.id,
            org_id: row.org_id,
            tool_id: row.tool_id,
            name: row.name,
            method: row.method,
            endpoint: row.endpoint,
            schema: row.schema,
            execute_if: row.execute_if,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// When an action runs: an expression or a structured condition, stored as given.
#[derive(Union)]
#[oai(rename = "Condition")]
pub enum Condition {
    /// An expression, for example `{{ inputs.enabled }}`.
    Expression(String),
    /// A structured condition.
    Structured(JsonObject),
}

/// A new action.
#[derive(Object)]
#[oai(
    rename = "ActionIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct ActionIn {
    /// A tool of the caller's organization (422 otherwise).
    pub tool_id: Uuid,
    /// At most 200 characters.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub name: Option<String>,
    /// `GET POST PUT PATCH DELETE HEAD OPTIONS`, in any letter case.
    #[oai(validator(
        pattern = "^(?:[Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Hh][Ee][Aa][Dd]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$"
    ))]
    pub method: String,
    /// 1 to 2048 characters, starting with `/`.
    #[oai(validator(max_length = 2048, pattern = "^/"))]
    pub endpoint: String,
    /// A JSON object of at most 64 KiB (default `{}`): the action's input schema.
    #[oai(nullable)]
    pub schema: Option<JsonObject>,
    /// A condition, string or object, stored as given.
    #[oai(nullable)]
    pub execute_if: Option<Condition>,
}

impl Example for ActionIn {
    fn example() -> Self {
        Self {
            tool_id: Uuid::nil(),
            name: Some("Post a message".to_owned()),
            method: "POST".to_owned(),
            endpoint: "/chat.postMessage".to_owned(),
            schema: Some(JsonObject::from([
                ("type".to_owned(), json!("object")),
                (
                    "properties".to_owned(),
                    json!({ "text": { "type": "string" } }),
                ),
            ])),
            execute_if: None,
        }
    }
}

impl ReadBody for ActionIn {
    type Value = NewAction;

    fn read(fields: &mut Fields) -> NewAction {
        NewAction {
            tool_id: fields.required("toolId", uuid),
            name: fields.optional("name", text(0, 200)),
            method: fields.required("method", upper_case_one_of::<HttpMethod>),
            endpoint: fields.required("endpoint", endpoint),
            schema: fields
                .optional("schema", json_object(MAX_SCHEMA_BYTES))
                .unwrap_or_else(|| json!({})),
            execute_if: fields.optional("executeIf", string_or_object),
        }
    }
}

/// Changes to an action; absent fields stay as they are, null clears `name` and `executeIf`.
#[derive(Object)]
#[oai(
    rename = "ActionUpdate",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct ActionUpdate {
    /// A tool of the caller's organization (422 otherwise).
    pub tool_id: Option<Uuid>,
    /// At most 200 characters; null clears it.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub name: Option<String>,
    /// `GET POST PUT PATCH DELETE HEAD OPTIONS`, in any letter case.
    #[oai(validator(
        pattern = "^(?:[Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Hh][Ee][Aa][Dd]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$"
    ))]
    pub method: Option<String>,
    /// 1 to 2048 characters, starting with `/`.
    #[oai(validator(max_length = 2048, pattern = "^/"))]
    pub endpoint: Option<String>,
    /// A JSON object of at most 64 KiB.
    pub schema: Option<JsonObject>,
    /// A condition, string or object; null clears it.
    #[oai(nullable)]
    pub execute_if: Option<Condition>,
}

impl Example for ActionUpdate {
    fn example() -> Self {
        Self {
            tool_id: None,
            name: None,
            method: Some("put".to_owned()),
            endpoint: None,
            schema: None,
            execute_if: Some(Condition::Expression("{{ inputs.enabled }}".to_owned())),
        }
    }
}

impl ReadBody for ActionUpdate {
    type Value = ActionChanges;

    fn read(fields: &mut Fields) -> ActionChanges {
        ActionChanges {
            tool_id: fields.patch("toolId", uuid),
            name: fields.patch_nullable("name", text(0, 200)),
            method: fields.patch("method", upper_case_one_of::<HttpMethod>),
            endpoint: fields.patch("endpoint", endpoint),
            schema: fields.patch("schema", json_object(MAX_SCHEMA_BYTES)),
            execute_if: fields.patch_nullable("executeIf", string_or_object),
        }
    }
}

/// The actions endpoints.
pub struct ActionsApi;

#[OpenApi(tag = "ApiTags::Actions")]
impl ActionsApi {
    /// Create an action on a tool.
    #[oai(path = "/actions", method = "post", operation_id = "createAction")]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        body: JsonBody<ActionIn>,
    ) -> Result<Created<ActionOut>, ApiError> {
        let row = actions::create(&state.db, &caller.tenant, body.0).await?;
        Ok(Created::at("/actions", row.id, row.into()))
    }

    /// List the organization's actions, newest first, optionally of one tool.
    #[oai(path = "/actions", method = "get", operation_id = "listActions")]
    async fn list(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        request: &Request,
        /// Only the actions of this tool.
        #[oai(name = "toolId")]
        tool_id: Query<Option<Uuid>>,
        /// Page size, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u64>>,
        /// The opaque cursor from the previous page's `Link` header.
        #[oai(validator(pattern = "^[0-9a-f]{32}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Listed<ActionOut>, ApiError> {
        let page = page_request(limit.0, cursor.0.as_deref())?;
        let rows = actions::list(&state.db, &caller.tenant, tool_id.0, page).await?;
        Ok(Listed::page(request, page, rows))
    }

    /// Get an action.
    #[oai(path = "/actions/:id", method = "get", operation_id = "getAction")]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The action's id.
        id: Path<Uuid>,
    ) -> Result<Reply<ActionOut>, ApiError> {
        let row = actions::find(&state.db, &caller.tenant, id.0).await?;
        Ok(Reply(row.into()))
    }

    /// Update an action (partial).
    #[oai(path = "/actions/:id", method = "put", operation_id = "updateAction")]
    async fn update(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The action's id.
        id: Path<Uuid>,
        body: JsonBody<ActionUpdate>,
    ) -> Result<Reply<ActionOut>, ApiError> {
        let row = actions::update(&state.db, &caller.tenant, id.0, body.0).await?;
        Ok(Reply(row.into()))
    }

    /// Delete an action.
    #[oai(
        path = "/actions/:id",
        method = "delete",
        operation_id = "deleteAction"
    )]
    async fn delete(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The action's id.
        id: Path<Uuid>,
    ) -> Result<Deleted, ApiError> {
        actions::delete(&state.db, &caller.tenant, id.0).await?;
        Ok(Deleted::Deleted)
    }
}
