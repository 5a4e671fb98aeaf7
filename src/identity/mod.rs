//! Who is calling and what they may do: the one place where a request becomes a verified
//! caller, and where an operation's right is checked against the caller's role.
//!
//! An operation declares its right by the extractor it takes: `caller: Caller<Write>` needs at
//! least `editor`, `Caller<Read>` any member, and so on ([`Right`]). Handlers never read the
//! identity headers or keys themselves.
//!
//! - With a key (`Authorization: Bearer tol_…`, both modes): the key is checked for form and
//!   checksum without a database query, then looked up by its digest with its user in one
//!   indexed read; its rights are the lower of its own role and its user's current role, and
//!   the call is refused (403) here when they are below the operation's.
//! - With the admin token (both modes): the platform operator, acting as an owner of the
//!   organization named by `X-Org-ID`.
//! - With the two headers (headers mode only): their form is checked here (400); membership
//!   and role are checked by the door inside the call's own statement (see
//!   `service::tenancy`), so that a header call costs no extra round trip.

pub mod key;
pub mod platform;
pub mod rate_limit;

use std::marker::PhantomData;

use chrono::Utc;
use poem::http::header::AUTHORIZATION;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::config::{AuthMode, IdentitySettings, Secret};
use crate::error::{ApiError, FieldError};
use crate::service::api_keys::{self, AuthenticatedKey};
pub use crate::service::tenancy::{Role, Tenant};
use crate::state::AppState;
use rate_limit::{AuthFailureLimit, OrgRateLimit};

/// The header naming the caller's organization.
pub const ORG_HEADER: &str = "X-Org-ID";
/// The header naming the calling user.
pub const USER_HEADER: &str = "X-User-ID";

/// The security scheme of an API key (or the admin token): `Authorization: Bearer …`.
pub const BEARER_SCHEME: &str = "ApiKey";
/// The security schemes of the two headers, required together.
pub const HEADER_SCHEMES: [&str; 2] = ["OrgId", "UserId"];

/// How identity is configured for the running server.
pub struct IdentityConfig {
    pub mode: AuthMode,
    admin_token: Option<Secret>,
    pub signup_open: bool,
    /// Failed authentications per client address: the middleware around every route.
    pub auth_failures: AuthFailureLimit,
    /// `RATE_LIMIT_PER_ORG`, when set.
    org_limit: Option<OrgRateLimit>,
    /// `METRICS_TOKEN`, when set.
    metrics_token: Option<Secret>,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("mode", &self.mode)
            .field("admin_token", &self.admin_token)
            .field("signup_open", &self.signup_open)
            .finish_non_exhaustive()
    }
}

impl IdentityConfig {
    pub fn from_settings(settings: &IdentitySettings) -> Self {
        Self {
            mode: settings.mode,
            admin_token: settings.admin_token.clone(),
            signup_open: settings.signup_open,
            auth_failures: AuthFailureLimit::new(
                settings.auth_failures_per_minute,
                settings.trusted_proxies.clone(),
            ),
            org_limit: settings.rate_limit_per_org.map(OrgRateLimit::new),
            metrics_token: settings.metrics_token.clone(),
        }
    }

    /// Counts a request against its organization's limit (429 beyond it), when one is set.
    pub fn limit_organization(&self, org_id: Uuid) -> Result<(), ApiError> {
        match &self.org_limit {
            Some(limit) => limit.check(org_id),
            None => Ok(()),
        }
    }

    /// Whether `token` is the admin token, compared in constant time.
    pub fn is_admin_token(&self, token: &str) -> bool {
        self.admin_token
            .as_ref()
            .is_some_and(|admin| same_secret(admin, token))
    }

    /// Whether a request with this `Authorization` header may read `/metrics`: any request
    /// when `METRICS_TOKEN` is unset, else only `Bearer <METRICS_TOKEN>`.
    pub fn may_read_metrics(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = &self.metrics_token else {
            return true;
        };
        authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|token| same_secret(expected, token.trim()))
    }
}

/// `token` compared with `expected` in constant time, over digests so that not even the
/// length shows.
fn same_secret(expected: &Secret, token: &str) -> bool {
    let expected = key::digest(expected.expose());
    bool::from(expected.as_bytes().ct_eq(key::digest(token).as_bytes()))
}

/// The least role an operation needs, declared by the type its handler extracts.
pub trait Right: Send + Sync + 'static {
    const LEAST: Role;
}

/// Reading anything of the organization: every member.
pub struct Read;
/// Creating, changing and deleting tools, actions, flows and execution logs: `editor` and up.
pub struct Write;
/// Managing users, every key, and the organization: `admin` and up.
pub struct Manage;
/// Giving and taking `owner`, deleting the organization: `owner`.
pub struct Own;

impl Right for Read {
    const LEAST: Role = Role::Viewer;
}
impl Right for Write {
    const LEAST: Role = Role::Editor;
}
impl Right for Manage {
    const LEAST: Role = Role::Admin;
}
impl Right for Own {
    const LEAST: Role = Role::Owner;
}

/// A tenant caller, verified as far as this layer can, allowed at least the right `R`.
pub struct Caller<R: Right> {
    /// What the door needs: organization, user, and the least role of the call.
    pub tenant: Tenant,
    /// The key the caller authenticated with; `None` for the two headers.
    pub key_id: Option<Uuid>,
    right: PhantomData<R>,
}

impl<R: Right> std::fmt::Debug for Caller<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("tenant", &self.tenant)
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// What the `Authorization` header carries.
pub(crate) enum Credentials<'a> {
    None,
    Bearer(&'a str),
}

/// The bearer token of the request. Another `Authorization` scheme is 401 in keys mode; in
/// headers mode it is none of ours (a gateway's own credentials, passed along) and is ignored.
pub(crate) fn credentials(request: &Request, mode: AuthMode) -> Result<Credentials<'_>, ApiError> {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let bearer = value
        .to_str()
        .ok()
        .and_then(|value| match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
            _ => None,
        });
    match (bearer, mode) {
        (Some(token), _) => Ok(Credentials::Bearer(token)),
        (None, AuthMode::Headers) => Ok(Credentials::None),
        (None, AuthMode::Keys) => Err(ApiError::unauthenticated()),
    }
}

/// Reads one identity header: `None` when absent or empty, a 400 naming it when malformed.
fn header_id(request: &Request, name: &'static str) -> Result<Option<Uuid>, FieldError> {
    let value = request
        .headers()
        .get(name)
        .map(|v| v.to_str().map(str::trim).unwrap_or("\u{0}"));
    match value {
        None | Some("") => Ok(None),
        Some(value) => Uuid::try_parse(value)
            .map(Some)
            .map_err(|_| FieldError::new(name, "must be a UUID")),
    }
}

/// Both identity headers, as far as they are sent; a 400 listing every malformed one.
fn header_claim(request: &Request) -> Result<(Option<Uuid>, Option<Uuid>), ApiError> {
    let org = header_id(request, ORG_HEADER);
    let user = header_id(request, USER_HEADER);
    match (org, user) {
        (Ok(org), Ok(user)) => Ok((org, user)),
        (org, user) => Err(ApiError::validation(
            [org.err(), user.err()].into_iter().flatten().collect(),
        )),
    }
}

/// The live key `token` is, or 401. The checksum refuses a mistyped or made-up key before any
/// database query.
pub(crate) async fn authenticated_key(
    state: &AppState,
    token: &str,
) -> Result<AuthenticatedKey, ApiError> {
    let digest = key::verified_digest(token).ok_or_else(ApiError::unauthenticated)?;
    api_keys::authenticate(&state.db, &digest, Utc::now())
        .await?
        .ok_or_else(ApiError::unauthenticated)
}

/// The server's state, which every route carries (`startup::build_route`).
pub(crate) fn app_state(request: &Request) -> Result<&AppState, ApiError> {
    request
        .data::<AppState>()
        .ok_or_else(|| ApiError::internal(&"the application state is missing"))
}

/// Turns the request into the verified caller of a call that needs at least `least`.
async fn identify(
    request: &Request,
    state: &AppState,
    least: Role,
) -> Result<(Tenant, Option<Uuid>), ApiError> {
    match credentials(request, state.identity.mode)? {
        // The platform operator acts as an owner of the organization in X-Org-ID, and records
        // the user in X-User-ID where a write names one.
        Credentials::Bearer(token) if state.identity.is_admin_token(token) => {
            let (org_id, user_id) = header_claim(request)?;
            let org_id = org_id
                .ok_or_else(|| ApiError::invalid(ORG_HEADER, "is required with the admin token"))?;
            let tenant = Tenant {
                org_id,
                user_id: user_id.unwrap_or(Uuid::nil()),
                least,
                most: Role::Owner,
                operator: true,
            };
            Ok((tenant, None))
        }
        Credentials::Bearer(token) => {
            let key = authenticated_key(state, token).await?;
            let (org_header, user_header) = header_claim(request)?;
            if org_header.is_some_and(|org| org != key.org_id)
                || user_header.is_some_and(|user| user != key.user_id)
            {
                return Err(ApiError::forbidden(
                    "X-Org-ID and X-User-ID must name the API key's organization and user",
                ));
            }
            if key.role < least {
                return Err(crate::service::ServiceError::LacksRole(least).into());
            }
            let tenant = Tenant {
                org_id: key.org_id,
                user_id: key.user_id,
                least,
                most: key.key_role,
                operator: false,
            };
            Ok((tenant, Some(key.id)))
        }
        Credentials::None if state.identity.mode == AuthMode::Keys => {
            Err(ApiError::unauthenticated())
        }
        Credentials::None => match header_claim(request)? {
            (Some(org_id), Some(user_id)) => Ok((
                Tenant {
                    org_id,
                    user_id,
                    least,
                    most: Role::Owner,
                    operator: false,
                },
                None,
            )),
            (org, user) => Err(ApiError::validation(
                [(ORG_HEADER, org), (USER_HEADER, user)]
                    .into_iter()
                    .filter(|(_, value)| value.is_none())
                    .map(|(name, _)| FieldError::new(name, "is required"))
                    .collect(),
            )),
        },
    }
}

pub(crate) fn register_schemes(registry: &mut Registry) {
    registry.create_security_scheme(
        BEARER_SCHEME,
        MetaSecurityScheme {
            ty: "http",
            description: Some(
                "An API key (`tol_…`), or the platform operator's admin token. Required on \
                 every tenant call in keys mode; accepted, and then winning, in headers mode.",
            ),
            name: None,
            key_in: None,
            scheme: Some("bearer"),
            bearer_format: Some("tol_ API key"),
            flows: None,
            openid_connect_url: None,
        },
    );
    for (scheme, header) in HEADER_SCHEMES.into_iter().zip([ORG_HEADER, USER_HEADER]) {
        registry.create_security_scheme(
            scheme,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some(match header {
                    ORG_HEADER => "Headers mode: the caller's organization (a UUID), sent with X-User-ID.",
                    _ => "Headers mode: the calling user (a UUID), who must belong to the organization in X-Org-ID.",
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

impl<'a, R: Right> ApiExtractor<'a> for Caller<R> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_schemes(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut schemes = vec![BEARER_SCHEME];
        schemes.extend(HEADER_SCHEMES);
        schemes
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = app_state(request)?;
        let (tenant, key_id) = identify(request, state, R::LEAST).await?;
        state.identity.limit_organization(tenant.org_id)?;
        Ok(Self {
            tenant,
            key_id,
            right: PhantomData,
        })
    }
}
