//! `/tools`: the external APIs of the caller's organization.

use entity::tool;
use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{Enum, Object, OpenApi};
use serde::Serialize;
use uuid::Uuid;

use super::body::{Fields, JsonBody, JsonObject, ReadBody};
use super::pagination::page_request;
use super::responses::{Created, Deleted, Listed, Reply};
use super::rules::{credentials_object, http_url, one_of, text};
use super::timestamp::Timestamp;
use super::ApiTags;
use crate::error::ApiError;
use crate::identity::{Caller, Read, Write};
use crate::service::tools::{self, CredentialsInput, NewTool, ToolChanges};
use crate::state::AppState;

/// How a tool authenticates its calls.
#[derive(Enum)]
#[oai(rename_all = "camelCase")]
pub enum AuthType {
    None,
    ApiKey,
    Bearer,
    Basic,
    Oauth2,
}

/// A tool: an external API the organization calls.
#[derive(Object, Serialize)]
#[oai(rename = "Tool", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ToolOut {
    /// Server-made UUID (version 7).
    pub id: Uuid,
    /// The organization the tool belongs to.
    pub org_id: Uuid,
    /// Unique in the organization.
    pub name: String,
    /// The API's absolute http(s) base URL, as given.
    pub base_url: String,
    /// One of `none`, `apiKey`, `bearer`, `basic`, `oauth2`.
    pub auth_type: String,
    /// Whether credentials are stored (they are never returned).
    pub has_credentials: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl From<tool::Model> for ToolOut {
    fn from(row: tool::Model) -> Self {
        Self {
            id: row.id,
            org_id: row.org_id,
            name: row.name,
            base_url: row.base_url,
            auth_type: row.auth_type,
            has_credentials: row.credentials_key_id.is_some(),
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A new tool.
#[derive(Object)]
#[oai(
    rename = "ToolIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct ToolIn {
    /// 1 to 200 characters, unique in the organization.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// An absolute http or https URL (localhost, IPv4, bracketed IPv6 and internationalised host
    /// names allowed; the pattern shows the ASCII form), at most 2048 characters, kept as sent.
    #[oai(validator(
        max_length = 2048,
        pattern = r"^https?://(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}|\[(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}|(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}|(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}|:(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:)|(?:[0-9A-Fa-f]{1,4}:){6}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}|::(?:[0-9A-Fa-f]{1,4}:){0,5}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})\]|(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*)(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(?:[/?#][!-~]*)?$"
    ))]
    pub base_url: String,
    /// How the tool authenticates.
    pub auth_type: AuthType,
    /// Write-only: the secret `authType` needs, sealed at rest and never returned. `apiKey`:
    /// `{"value", "header"}` (default header `X-API-Key`) or `{"value", "query"}`; `bearer`:
    /// `{"token"}`; `basic`: `{"username", "password"}`; `oauth2`: `{"tokenUrl", "clientId",
    /// "clientSecret", "scope"}` (client-credentials grant); `none` takes none. `null`: none.
    #[oai(nullable)]
    pub credentials: Option<JsonObject>,
}

impl Example for ToolIn {
    fn example() -> Self {
        Self {
            name: "Slack".to_owned(),
            base_url: "https://slack.com/api".to_owned(),
            auth_type: AuthType::Bearer,
            credentials: Some(JsonObject::from([(
                "token".to_owned(),
                serde_json::Value::from("xoxb-…"),
            )])),
        }
    }
}

impl ReadBody for ToolIn {
    type Value = NewTool;

    fn read(fields: &mut Fields) -> NewTool {
        NewTool {
            name: fields.required("name", text(1, 200)),
            base_url: fields.required("baseUrl", http_url),
            auth_type: fields.required("authType", one_of::<AuthType>),
            credentials: fields
                .optional("credentials", credentials_object)
                .map(CredentialsInput),
        }
    }
}

/// Changes to a tool; absent fields stay as they are.
#[derive(Object)]
#[oai(
    rename = "ToolUpdate",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct ToolUpdate {
    /// 1 to 200 characters, unique in the organization.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    /// An absolute http or https URL, as on create.
    #[oai(validator(
        max_length = 2048,
        pattern = r"^https?://(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}|\[(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}|(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}|(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}|:(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:)|(?:[0-9A-Fa-f]{1,4}:){6}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}|::(?:[0-9A-Fa-f]{1,4}:){0,5}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})\]|(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*)(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(?:[/?#][!-~]*)?$"
    ))]
    pub base_url: Option<String>,
    /// How the tool authenticates. A new `authType` without new `credentials` removes the
    /// stored ones.
    pub auth_type: Option<AuthType>,
    /// Write-only: the secret `authType` needs, sealed at rest and never returned; `null` removes them. `apiKey`:
    /// `{"value", "header"}` (default header `X-API-Key`) or `{"value", "query"}`; `bearer`:
    /// `{"token"}`; `basic`: `{"username", "password"}`; `oauth2`: `{"tokenUrl", "clientId",
    /// "clientSecret", "scope"}` (client-credentials grant); `none` takes none.
    #[oai(nullable)]
    pub credentials: Option<JsonObject>,
}

impl Example for ToolUpdate {
    fn example() -> Self {
        Self {
            name: None,
            base_url: Some("https://api.slack.com".to_owned()),
            auth_type: None,
            credentials: None,
        }
    }
}

impl ReadBody for ToolUpdate {
    type Value = ToolChanges;

    fn read(fields: &mut Fields) -> ToolChanges {
        ToolChanges {
            name: fields.patch("name", text(1, 200)),
            base_url: fields.patch("baseUrl", http_url),
            auth_type: fields.patch("authType", one_of::<AuthType>),
            credentials: fields
                .patch_nullable("credentials", credentials_object)
                .map(|change| change.map(CredentialsInput)),
        }
    }
}

/// The tools endpoints.
pub struct ToolsApi;

#[OpenApi(tag = "ApiTags::Tools")]
impl ToolsApi {
    /// Create a tool.
    #[oai(path = "/tools", method = "post", operation_id = "createTool")]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        body: JsonBody<ToolIn>,
    ) -> Result<Created<ToolOut>, ApiError> {
        let row = tools::create(&state.db, &state.keyring, &caller.tenant, body.0).await?;
        Ok(Created::at("/tools", row.id, row.into()))
    }

    /// List the organization's tools, newest first.
    #[oai(path = "/tools", method = "get", operation_id = "listTools")]
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
    ) -> Result<Listed<ToolOut>, ApiError> {
        let page = page_request(limit.0, cursor.0.as_deref())?;
        let rows = tools::list(&state.db, &caller.tenant, page).await?;
        Ok(Listed::page(request, page, rows))
    }

    /// Get a tool.
    #[oai(path = "/tools/:id", method = "get", operation_id = "getTool")]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The tool's id.
        id: Path<Uuid>,
    ) -> Result<Reply<ToolOut>, ApiError> {
        let row = tools::find(&state.db, &caller.tenant, id.0).await?;
        Ok(Reply(row.into()))
    }

    /// Update a tool (partial).
    #[oai(path = "/tools/:id", method = "put", operation_id = "updateTool")]
    async fn update(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The tool's id.
        id: Path<Uuid>,
        body: JsonBody<ToolUpdate>,
    ) -> Result<Reply<ToolOut>, ApiError> {
        let row = tools::update(&state.db, &state.keyring, &caller.tenant, id.0, body.0).await?;
        Ok(Reply(row.into()))
    }

    /// Delete a tool.
    ///
    /// 409 while the tool has actions, unless `?cascade=true`, which deletes them too.
    #[oai(path = "/tools/:id", method = "delete", operation_id = "deleteTool")]
    async fn delete(
        &self,
        state: Data<&AppState>,
        caller: Caller<Write>,
        /// The tool's id.
        id: Path<Uuid>,
        /// Also delete the tool's actions.
        cascade: Query<Option<bool>>,
    ) -> Result<Deleted, ApiError> {
        tools::delete(&state.db, &caller.tenant, id.0, cascade.0.unwrap_or(false)).await?;
        Ok(Deleted::Deleted)
    }
}
