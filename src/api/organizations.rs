//! `/organizations`: the tenants. No tenant headers needed.

use entity::organization;
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
use super::rules::{email_domains, retention_days, text};
use super::timestamp::Timestamp;
use super::ApiTags;
use crate::error::ApiError;
use crate::identity::platform::PlatformCaller;
use crate::identity::Role;
use crate::service::organizations::{self, NewOrganization, OrganizationChanges};
use crate::state::AppState;

/// An organization: the tenant that owns users, tools, actions, flows and execution logs.
#[derive(Object, Serialize)]
#[oai(rename = "Organization", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct OrganizationOut {
    /// Server-made UUID (version 7).
    pub id: Uuid,
    /// The organization's name.
    pub name: String,
    /// Days its execution logs and finished runs are kept (0: for ever); null: the server's
    /// `RETENTION_DAYS`.
    #[oai(nullable)]
    pub retention_days: Option<i32>,
    /// The domains users' emails must be in (`*.acme.com`: its subdomains); empty: any.
    pub allowed_email_domains: Vec<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl From<organization::Model> for OrganizationOut {
    fn from(row: organization::Model) -> Self {
        let allowed_email_domains = organizations::allowed_email_domains(&row);
        Self {
            id: row.id,
            name: row.name,
            retention_days: row.retention_days,
            allowed_email_domains,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A new organization.
#[derive(Object)]
#[oai(
    rename = "OrganizationIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct OrganizationIn {
    /// 1 to 200 characters, trimmed of surrounding white space.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// Days its execution logs and finished runs are kept, 0 (for ever) to 3650; absent or
    /// null: the server's `RETENTION_DAYS`.
    #[oai(validator(minimum(value = "0"), maximum(value = "3650")), nullable)]
    pub retention_days: Option<i32>,
    /// At most 50 lower-case ASCII domain names (punycode for an internationalized one) users'
    /// emails must be in (`*.acme.com` admits its subdomains, not itself); an email's domain is
    /// compared after IDNA normalisation. Absent, null or empty: any.
    #[oai(
        validator(
            max_items = 50,
            max_length = 255,
            pattern = r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
        ),
        nullable
    )]
    pub allowed_email_domains: Option<Vec<String>>,
}

impl Example for OrganizationIn {
    fn example() -> Self {
        Self {
            name: "Acme".to_owned(),
            retention_days: None,
            allowed_email_domains: Some(vec!["acme.com".to_owned()]),
        }
    }
}

impl ReadBody for OrganizationIn {
    type Value = NewOrganization;

    fn read(fields: &mut Fields) -> NewOrganization {
        NewOrganization {
            name: fields.required("name", text(1, 200)),
            retention_days: fields.optional("retentionDays", retention_days),
            allowed_email_domains: fields
                .optional("allowedEmailDomains", email_domains)
                .unwrap_or_default(),
        }
    }
}

/// Changes to an organization; absent fields stay as they are.
#[derive(Object)]
#[oai(
    rename = "OrganizationUpdate",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct OrganizationUpdate {
    /// 1 to 200 characters, trimmed of surrounding white space.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    /// 0 (for ever) to 3650 days; null: back to the server's `RETENTION_DAYS`.
    #[oai(validator(minimum(value = "0"), maximum(value = "3650")), nullable)]
    pub retention_days: Option<i32>,
    /// Replaces the list (an admin's or owner's change, in keys mode); null or empty: any
    /// domain. Existing users stay: `GET /users?outsideAllowedDomains=true` lists those the
    /// list no longer admits.
    #[oai(
        validator(
            max_items = 50,
            max_length = 255,
            pattern = r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
        ),
        nullable
    )]
    pub allowed_email_domains: Option<Vec<String>>,
}

impl Example for OrganizationUpdate {
    fn example() -> Self {
        Self {
            name: Some("Acme Inc.".to_owned()),
            retention_days: Some(90),
            allowed_email_domains: Some(vec!["acme.com".to_owned(), "*.acme.com".to_owned()]),
        }
    }
}

impl ReadBody for OrganizationUpdate {
    type Value = OrganizationChanges;

    fn read(fields: &mut Fields) -> OrganizationChanges {
        OrganizationChanges {
            name: fields.patch("name", text(1, 200)),
            retention_days: fields.patch_nullable("retentionDays", retention_days),
            allowed_email_domains: fields
                .patch_nullable("allowedEmailDomains", email_domains)
                .map(Option::unwrap_or_default),
        }
    }
}

/// The organizations endpoints.
pub struct OrganizationsApi;

#[OpenApi(tag = "ApiTags::Organizations")]
impl OrganizationsApi {
    /// Create an organization.
    ///
    /// Open in headers mode; in keys mode only the platform operator's admin token may.
    #[oai(
        path = "/organizations",
        method = "post",
        operation_id = "createOrganization"
    )]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: PlatformCaller,
        body: JsonBody<OrganizationIn>,
    ) -> Result<Created<OrganizationOut>, ApiError> {
        caller.may_create()?;
        let row = organizations::create(&state.db, body.0).await?;
        Ok(Created::at("/organizations", row.id, row.into()))
    }

    /// List organizations, newest first.
    ///
    /// Every organization in headers mode and with the admin token; with an API key, only its
    /// own.
    #[oai(
        path = "/organizations",
        method = "get",
        operation_id = "listOrganizations"
    )]
    async fn list(
        &self,
        state: Data<&AppState>,
        caller: PlatformCaller,
        request: &Request,
        /// Page size, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u64>>,
        /// The opaque cursor from the previous page's `Link` header.
        #[oai(validator(pattern = "^[0-9a-f]{32}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Listed<OrganizationOut>, ApiError> {
        let only = caller.only_organization()?;
        let page = page_request(limit.0, cursor.0.as_deref())?;
        let rows = organizations::list(&state.db, only, page).await?;
        Ok(Listed::page(request, page, rows))
    }

    /// Get an organization.
    ///
    /// In keys mode: a member (any role) or the admin token; another organization is 404.
    #[oai(
        path = "/organizations/:id",
        method = "get",
        operation_id = "getOrganization"
    )]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: PlatformCaller,
        /// The organization's id.
        id: Path<Uuid>,
    ) -> Result<Reply<OrganizationOut>, ApiError> {
        caller.may_act_on(id.0, Role::Viewer)?;
        let row = organizations::find(&state.db, id.0).await?;
        Ok(Reply(row.into()))
    }

    /// Update an organization (partial).
    ///
    /// In keys mode: an admin or owner of it, or the admin token.
    ///
    /// Any subset of the writable fields; a change to nothing leaves `updatedAt` as it was.
    #[oai(
        path = "/organizations/:id",
        method = "put",
        operation_id = "updateOrganization"
    )]
    async fn update(
        &self,
        state: Data<&AppState>,
        caller: PlatformCaller,
        /// The organization's id.
        id: Path<Uuid>,
        body: JsonBody<OrganizationUpdate>,
    ) -> Result<Reply<OrganizationOut>, ApiError> {
        caller.may_act_on(id.0, Role::Admin)?;
        let row = organizations::update(&state.db, id.0, body.0).await?;
        Ok(Reply(row.into()))
    }

    /// Delete an organization.
    ///
    /// In keys mode: an owner of it, or the admin token.
    ///
    /// 409 while it still owns users, tools, actions, flows or execution logs (the detail says
    /// how many of each); with `?cascade=true` it is deleted with all of its rows in one
    /// transaction.
    #[oai(
        path = "/organizations/:id",
        method = "delete",
        operation_id = "deleteOrganization"
    )]
    async fn delete(
        &self,
        state: Data<&AppState>,
        caller: PlatformCaller,
        /// The organization's id.
        id: Path<Uuid>,
        /// Also delete every row the organization owns.
        cascade: Query<Option<bool>>,
    ) -> Result<Deleted, ApiError> {
        caller.may_act_on(id.0, Role::Owner)?;
        organizations::delete(&state.db, id.0, cascade.0.unwrap_or(false)).await?;
        Ok(Deleted::Deleted)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::MAX_RETENTION_DAYS;
    use crate::service::email_domains::{ENTRY_PATTERN, MAX_ENTRIES, MAX_ENTRY_CHARS};

    /// poem-openapi's attributes take literals only: the document's bounds and pattern must be
    /// the constants the server checks with.
    #[test]
    fn the_document_states_the_rules_the_server_checks() {
        let document = super::super::openapi_value();
        for schema in ["OrganizationIn", "OrganizationUpdate"] {
            let properties = &document["components"]["schemas"][schema]["properties"];
            let domains = &properties["allowedEmailDomains"];
            assert_eq!(domains["maxItems"], MAX_ENTRIES, "{schema}");
            assert_eq!(domains["items"]["maxLength"], MAX_ENTRY_CHARS, "{schema}");
            assert_eq!(domains["items"]["pattern"], ENTRY_PATTERN, "{schema}");
            let days = &properties["retentionDays"];
            assert_eq!(
                days["maximum"].as_f64(),
                Some(f64::from(MAX_RETENTION_DAYS)),
                "{schema}"
            );
            assert_eq!(days["minimum"].as_f64(), Some(0.0), "{schema}");
        }
    }
}
