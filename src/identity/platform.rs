//! Who calls the platform routes (`/organizations`, `/signup`), and what each caller may do
//! there. In headers mode without credentials they are open, as they always were; in keys mode
//! they need the admin token or an API key.

use poem::{Request, RequestBody};
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use uuid::Uuid;

use super::{
    app_state, authenticated_key, credentials, register_schemes, Credentials, Role, BEARER_SCHEME,
};
use crate::config::AuthMode;
use crate::error::ApiError;
use crate::service::ServiceError;
use crate::state::AppState;

/// The caller of a platform route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformCaller {
    /// Headers mode, no credentials: the platform routes are open.
    Anyone,
    /// Keys mode, no credentials: only an open sign-up answers.
    Nobody,
    /// The platform operator, with `ADMIN_TOKEN`: every organization.
    Operator,
    /// An API key: a member of one organization, with the key's rights there.
    Member {
        org_id: Uuid,
        user_id: Uuid,
        role: Role,
    },
}

impl PlatformCaller {
    /// Creating an organization: the operator, or anyone in headers mode; a key is 403.
    pub fn may_create(&self) -> Result<(), ApiError> {
        match self {
            PlatformCaller::Nobody => Err(ApiError::unauthenticated()),
            PlatformCaller::Member { .. } => Err(ApiError::forbidden(
                "only the platform operator (ADMIN_TOKEN) creates organizations",
            )),
            PlatformCaller::Anyone | PlatformCaller::Operator => Ok(()),
        }
    }

    /// The one organization a list shows, or `None` for every organization.
    pub fn only_organization(&self) -> Result<Option<Uuid>, ApiError> {
        match self {
            PlatformCaller::Nobody => Err(ApiError::unauthenticated()),
            PlatformCaller::Member { org_id, .. } => Ok(Some(*org_id)),
            PlatformCaller::Anyone | PlatformCaller::Operator => Ok(None),
        }
    }

    /// Acting on organization `id` with at least `least`: another organization is 404 (as
    /// any row of another tenant), too low a role 403.
    pub fn may_act_on(&self, id: Uuid, least: Role) -> Result<(), ApiError> {
        match self {
            PlatformCaller::Nobody => Err(ApiError::unauthenticated()),
            PlatformCaller::Member { org_id, .. } if *org_id != id => {
                Err(ServiceError::NotFound("organization").into())
            }
            PlatformCaller::Member { role, .. } if *role < least => {
                Err(ServiceError::LacksRole(least).into())
            }
            _ => Ok(()),
        }
    }

    /// `POST /signup`: the operator, or anyone when `SIGNUP=open`; otherwise 401 without
    /// credentials and 403 with a key.
    pub fn may_sign_up(&self, signup_open: bool) -> Result<(), ApiError> {
        match self {
            _ if signup_open => Ok(()),
            PlatformCaller::Operator => Ok(()),
            PlatformCaller::Anyone | PlatformCaller::Nobody => Err(ApiError::unauthenticated()),
            PlatformCaller::Member { .. } => Err(ApiError::forbidden(
                "signing up needs the admin token unless SIGNUP=open",
            )),
        }
    }
}

/// Identifies the caller of a platform route.
async fn identify(request: &Request, state: &AppState) -> Result<PlatformCaller, ApiError> {
    match credentials(request, state.identity.mode)? {
        Credentials::Bearer(token) if state.identity.is_admin_token(token) => {
            Ok(PlatformCaller::Operator)
        }
        Credentials::Bearer(token) => {
            let key = authenticated_key(state, token).await?;
            Ok(PlatformCaller::Member {
                org_id: key.org_id,
                user_id: key.user_id,
                role: key.role,
            })
        }
        Credentials::None if state.identity.mode == AuthMode::Keys => Ok(PlatformCaller::Nobody),
        Credentials::None => Ok(PlatformCaller::Anyone),
    }
}

impl<'a> ApiExtractor<'a> for PlatformCaller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_schemes(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(identify(request, app_state(request)?).await?)
    }
}
