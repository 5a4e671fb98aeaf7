//! The tenant security scheme: `X-Org-ID` + `X-User-ID` become the [`Tenant`] a call acts for.
//!
//! Handlers never read those headers; they receive a `Tenant`, and every service call is
//! scoped by it. The headers are a claim: this extractor checks their form (400), and the
//! service's door checks membership inside each query (403 for a stranger; see
//! `service::tenant_scope`). This is the one place to extend when API keys join the headers as
//! proof of identity.

use poem::{Request, RequestBody, Result};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use uuid::Uuid;

use crate::error::{ApiError, FieldError};
pub use crate::service::tenancy::Tenant;

/// The header naming the caller's organization.
pub const ORG_HEADER: &str = "X-Org-ID";
/// The header naming the calling user.
pub const USER_HEADER: &str = "X-User-ID";

/// Names of the two security schemes in the OpenAPI document. An operation needs both.
pub const SECURITY_SCHEMES: [&str; 2] = ["OrgId", "UserId"];

/// Reads both headers, listing every one that is missing or malformed.
fn claimed_tenant(request: &Request) -> Result<Tenant, ApiError> {
    let mut errors = Vec::new();
    let mut read = |name: &'static str| {
        let value = request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match value {
            None | Some("") => {
                errors.push(FieldError::new(name, "is required"));
                None
            }
            Some(value) => Uuid::try_parse(value).ok().or_else(|| {
                errors.push(FieldError::new(name, "must be a UUID"));
                None
            }),
        }
    };
    let org_id = read(ORG_HEADER);
    let user_id = read(USER_HEADER);
    match (org_id, user_id) {
        (Some(org_id), Some(user_id)) => Ok(Tenant { org_id, user_id }),
        _ => Err(ApiError::validation(errors)),
    }
}

fn register_schemes(registry: &mut Registry) {
    for (scheme, header) in SECURITY_SCHEMES.into_iter().zip([ORG_HEADER, USER_HEADER]) {
        registry.create_security_scheme(
            scheme,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some(match header {
                    ORG_HEADER => "The caller's organization (a UUID). Sent with X-User-ID on every tenant call.",
                    _ => "The calling user (a UUID), who must belong to the organization in X-Org-ID.",
                }),
                name: Some(header),
                key_in: Some("header"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }
}

impl<'a> ApiExtractor<'a> for Tenant {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_schemes(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        SECURITY_SCHEMES.to_vec()
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> Result<Self> {
        Ok(claimed_tenant(request)?)
    }
}
