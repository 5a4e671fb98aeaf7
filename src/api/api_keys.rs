//! `/api-keys`: the organization's API keys. Every member makes, lists and revokes their own;
//! admins and owners see and revoke every key, and make keys for other users.

use chrono::{DateTime, Utc};
use entity::api_key;
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
use super::rules::{role, text, uuid, RoleName};
use super::timestamp::Timestamp;
use super::ApiTags;
use crate::error::ApiError;
use crate::identity::{Caller, Read, Role};
use crate::service::api_keys::{self, NewApiKey};
use crate::state::AppState;

/// An API key, as stored: everything but the key itself.
#[derive(Object, Serialize)]
#[oai(rename = "ApiKey", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyOut {
    /// Server-made UUID (version 7).
    pub id: Uuid,
    /// The organization the key acts in.
    pub org_id: Uuid,
    /// The user the key acts for.
    pub user_id: Uuid,
    /// What the key is for.
    pub name: String,
    /// The key's first 12 characters, to tell keys apart.
    pub prefix: String,
    /// The most the key may do; its rights are the lower of this and its user's current role.
    pub role: RoleName,
    /// After this time the key answers 401.
    #[oai(nullable)]
    pub expires_at: Option<Timestamp>,
    /// When the key was last used, to within a minute.
    #[oai(nullable)]
    pub last_used_at: Option<Timestamp>,
    /// When the key was revoked; from then on it answers 401.
    #[oai(nullable)]
    pub revoked_at: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl From<api_key::Model> for ApiKeyOut {
    fn from(row: api_key::Model) -> Self {
        Self {
            id: row.id,
            org_id: row.org_id,
            user_id: row.user_id,
            name: row.name,
            prefix: row.prefix,
            role: Role::parse(&row.role).unwrap_or(Role::Viewer).into(),
            expires_at: row.expires_at.map(Into::into),
            last_used_at: row.last_used_at.map(Into::into),
            revoked_at: row.revoked_at.map(Into::into),
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A new API key, with the key itself: this is the only time it is shown.
#[derive(Object, Serialize)]
#[oai(rename = "CreatedApiKey", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKeyOut {
    /// The key: send it as `Authorization: Bearer <key>`. It is not stored and never shown
    /// again.
    pub key: String,
    #[oai(flatten)]
    #[serde(flatten)]
    pub stored: ApiKeyOut,
}

/// A new API key.
#[derive(Object)]
#[oai(
    rename = "ApiKeyIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct ApiKeyIn {
    /// What the key is for: 1 to 200 characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// Whose key it is; default the caller. Admins and owners may name another user of the
    /// organization (403 for anyone else).
    #[oai(nullable)]
    pub user_id: Option<Uuid>,
    /// At most the caller's role and the key user's role (403 above); default the lower of the
    /// two.
    #[oai(nullable)]
    pub role: Option<RoleName>,
    /// An RFC 3339 time in the future; after it the key answers 401. Default: never.
    #[oai(nullable)]
    pub expires_at: Option<Timestamp>,
}

impl Example for ApiKeyIn {
    fn example() -> Self {
        Self {
            name: "CI deploys".to_owned(),
            user_id: None,
            role: Some(RoleName::Editor),
            expires_at: None,
        }
    }
}

/// An RFC 3339 time after now.
fn future_time(value: Value) -> Result<DateTime<Utc>, String> {
    let Value::String(text) = &value else {
        return Err("must be an RFC 3339 time".to_owned());
    };
    let at = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|_| "must be an RFC 3339 time such as 2027-01-01T00:00:00Z".to_owned())?
        .with_timezone(&Utc);
    if at <= Utc::now() {
        return Err("must be in the future".to_owned());
    }
    Ok(at)
}

impl ReadBody for ApiKeyIn {
    type Value = NewApiKey;

    fn read(fields: &mut Fields) -> NewApiKey {
        NewApiKey {
            name: fields.required("name", text(1, 200)),
            user_id: fields.optional("userId", uuid),
            role: fields.optional("role", role),
            expires_at: fields.optional("expiresAt", future_time),
        }
    }
}

/// The API key endpoints.
pub struct ApiKeysApi;

#[OpenApi(tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// Create an API key.
    ///
    /// The answer carries the key itself (`key`), once: it is stored only as a digest.
    #[oai(path = "/api-keys", method = "post", operation_id = "createApiKey")]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        body: JsonBody<ApiKeyIn>,
    ) -> Result<Created<CreatedApiKeyOut>, ApiError> {
        let (row, key) = api_keys::create(&state.db, &caller.tenant, body.0).await?;
        let id = row.id;
        let created = CreatedApiKeyOut {
            key,
            stored: row.into(),
        };
        Ok(Created::at("/api-keys", id, created))
    }

    /// List API keys, newest first: the caller's own, or every key of the organization for
    /// admins and owners.
    #[oai(path = "/api-keys", method = "get", operation_id = "listApiKeys")]
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
    ) -> Result<Listed<ApiKeyOut>, ApiError> {
        let page = page_request(limit.0, cursor.0.as_deref())?;
        let rows = api_keys::list(&state.db, &caller.tenant, page).await?;
        Ok(Listed::page(request, page, rows))
    }

    /// Get an API key (the caller's own, or any for admins and owners).
    #[oai(path = "/api-keys/:id", method = "get", operation_id = "getApiKey")]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The key's id.
        id: Path<Uuid>,
    ) -> Result<Reply<ApiKeyOut>, ApiError> {
        let row = api_keys::find(&state.db, &caller.tenant, id.0).await?;
        Ok(Reply(row.into()))
    }

    /// Revoke an API key: from the next request on it answers 401.
    #[oai(
        path = "/api-keys/:id",
        method = "delete",
        operation_id = "revokeApiKey"
    )]
    async fn revoke(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The key's id.
        id: Path<Uuid>,
    ) -> Result<Deleted, ApiError> {
        api_keys::revoke(&state.db, &caller.tenant, id.0).await?;
        Ok(Deleted::Deleted)
    }
}
