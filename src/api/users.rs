//! `/users`: the users of the caller's organization.

use entity::user;
use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{Object, OpenApi};
use serde::Serialize;
use uuid::Uuid;

use super::body::{Fields, JsonBody, ReadBody};
use super::pagination::page_request;
use super::responses::{Created, Deleted, Listed, Reply};
use super::rules::{email, role, text, RoleName};
use super::timestamp::Timestamp;
use super::ApiTags;
use crate::error::ApiError;
use crate::identity::{Caller, Manage, Read};
use crate::service::users::{self, NewUser, UserChanges};
use crate::state::AppState;

/// A user of an organization.
#[derive(Object, Serialize)]
#[oai(rename = "User", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct UserOut {
    /// Server-made UUID (version 7).
    pub id: Uuid,
    /// The organization the user belongs to.
    pub org_id: Uuid,
    /// The address as given (uniqueness ignores letter case).
    pub email: String,
    /// Display name, if any.
    #[oai(nullable)]
    pub name: Option<String>,
    /// What the user may do in the organization.
    pub role: RoleName,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl From<user::Model> for UserOut {
    fn from(row: user::Model) -> Self {
        let role = users::role_of(&row).into();
        Self {
            id: row.id,
            org_id: row.org_id,
            email: row.email,
            role,
            name: row.name,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A new user.
#[derive(Object)]
#[oai(
    rename = "UserIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct UserIn {
    /// A valid address of at most 254 characters, unique in the organization regardless of letter case.
    #[oai(validator(
        max_length = 254,
        pattern = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    ))]
    pub email: String,
    /// At most 200 characters.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub name: Option<String>,
    /// Default `editor`; at most the caller's own role. An organization's first user is its
    /// `owner` whatever is asked.
    #[oai(nullable)]
    pub role: Option<RoleName>,
}

impl Example for UserIn {
    fn example() -> Self {
        Self {
            email: "ada@example.com".to_owned(),
            name: Some("Ada Lovelace".to_owned()),
            role: Some(RoleName::Editor),
        }
    }
}

impl ReadBody for UserIn {
    type Value = NewUser;

    fn read(fields: &mut Fields) -> NewUser {
        NewUser {
            email: fields.required("email", email),
            name: fields.optional("name", text(0, 200)),
            role: fields.optional("role", role),
        }
    }
}

/// Changes to a user; absent fields stay as they are, `name: null` clears the name.
#[derive(Object)]
#[oai(
    rename = "UserUpdate",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct UserUpdate {
    /// A valid address of at most 254 characters.
    #[oai(validator(
        max_length = 254,
        pattern = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    ))]
    pub email: Option<String>,
    /// At most 200 characters; null clears it.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub name: Option<String>,
    /// A new role: at most the caller's own; nobody changes their own; only an owner gives or
    /// takes `owner`; the last owner stays (409).
    pub role: Option<RoleName>,
}

impl Example for UserUpdate {
    fn example() -> Self {
        Self {
            email: None,
            name: Some("Ada King".to_owned()),
            role: None,
        }
    }
}

impl ReadBody for UserUpdate {
    type Value = UserChanges;

    fn read(fields: &mut Fields) -> UserChanges {
        UserChanges {
            email: fields.patch("email", email),
            name: fields.patch_nullable("name", text(0, 200)),
            role: fields.patch("role", role),
        }
    }
}

/// The users endpoints.
pub struct UsersApi;

#[OpenApi(tag = "ApiTags::Users")]
impl UsersApi {
    /// Create a user.
    ///
    /// Needs `admin` (and `owner` to create an owner), except for the organization's first
    /// user: into an organization with no users, any well-formed `X-User-ID` may create one,
    /// who becomes its `owner`.
    #[oai(path = "/users", method = "post", operation_id = "createUser")]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: Caller<Manage>,
        body: JsonBody<UserIn>,
    ) -> Result<Created<UserOut>, ApiError> {
        let row = users::create(&state.db, &caller.tenant, body.0).await?;
        Ok(Created::at("/users", row.id, row.into()))
    }

    /// List the organization's users, newest first.
    ///
    /// With `outsideAllowedDomains=true`, only those whose email the organization's
    /// `allowedEmailDomains` no longer admit.
    #[oai(path = "/users", method = "get", operation_id = "listUsers")]
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
        /// `true`: only the users whose email the organization's `allowedEmailDomains` no
        /// longer admit (none when it sets no domains).
        #[oai(name = "outsideAllowedDomains")]
        outside_allowed_domains: Query<Option<bool>>,
    ) -> Result<Listed<UserOut>, ApiError> {
        let page = page_request(limit.0, cursor.0.as_deref())?;
        let rows = if outside_allowed_domains.0.unwrap_or(false) {
            users::list_outside_allowed_domains(&state.db, &caller.tenant, page).await?
        } else {
            users::list(&state.db, &caller.tenant, page).await?
        };
        Ok(Listed::page(request, page, rows))
    }

    /// Get a user.
    #[oai(path = "/users/:id", method = "get", operation_id = "getUser")]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: Caller<Read>,
        /// The user's id.
        id: Path<Uuid>,
    ) -> Result<Reply<UserOut>, ApiError> {
        let row = users::find(&state.db, &caller.tenant, id.0).await?;
        Ok(Reply(row.into()))
    }

    /// Update a user (partial).
    #[oai(path = "/users/:id", method = "put", operation_id = "updateUser")]
    async fn update(
        &self,
        state: Data<&AppState>,
        caller: Caller<Manage>,
        /// The user's id.
        id: Path<Uuid>,
        body: JsonBody<UserUpdate>,
    ) -> Result<Reply<UserOut>, ApiError> {
        let row = users::update(&state.db, &caller.tenant, id.0, body.0).await?;
        Ok(Reply(row.into()))
    }

    /// Delete a user.
    ///
    /// 409 while the user has execution logs, unless `?cascade=true`, which deletes them too.
    #[oai(path = "/users/:id", method = "delete", operation_id = "deleteUser")]
    async fn delete(
        &self,
        state: Data<&AppState>,
        caller: Caller<Manage>,
        /// The user's id.
        id: Path<Uuid>,
        /// Also delete the user's execution logs.
        cascade: Query<Option<bool>>,
    ) -> Result<Deleted, ApiError> {
        users::delete(&state.db, &caller.tenant, id.0, cascade.0.unwrap_or(false)).await?;
        Ok(Deleted::Deleted)
    }
}
