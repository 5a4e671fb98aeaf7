//! The HTTP API: one file per resource, each with its `#[OpenApi]` struct and wire types.

pub mod body;
pub mod health;
pub mod organizations;
pub mod pagination;
pub mod responses;
pub mod rules;
pub mod timestamp;

use poem_openapi::{OpenApiService, Tags};

/// The groups operations are listed under in Swagger UI.
#[derive(Tags)]
pub enum ApiTags {
    /// Tenants: create one first, then its users.
    Organizations,
    /// Liveness and readiness.
    Operations,
}

/// The API with every resource, as one OpenAPI service.
pub type Api = (health::HealthApi, organizations::OrganizationsApi);

pub fn service() -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (health::HealthApi, organizations::OrganizationsApi),
        "Tolstoy",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Multi-tenant workflow automation: organizations, their users, tools, actions, flows \
         and execution logs. Errors are application/problem+json (RFC 9457).",
    )
}

/// The OpenAPI document, as served at `/openapi.json` and printed by `tolstoy openapi`.
pub fn openapi_document() -> String {
    service().spec()
}
