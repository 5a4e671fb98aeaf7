//! `/signup`: a new organization with its owner and an owner API key, in one call.

use poem::web::Data;
use poem_openapi::types::Example;
use poem_openapi::{Object, OpenApi};
use serde::Serialize;

use super::api_keys::CreatedApiKeyOut;
use super::body::{Fields, JsonBody, ReadBody};
use super::organizations::{OrganizationIn, OrganizationOut};
use super::responses::Created;
use super::rules::{email, text};
use super::users::UserOut;
use super::ApiTags;
use crate::error::ApiError;
use crate::identity::platform::PlatformCaller;
use crate::service::signup::{self, NewSignup};
use crate::service::users::NewUser;
use crate::state::AppState;

/// The owner of a new organization.
#[derive(Object)]
#[oai(
    rename = "SignupOwnerIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct SignupOwnerIn {
    /// A valid address of at most 254 characters.
    #[oai(validator(
        max_length = 254,
        pattern = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    ))]
    pub email: String,
    /// At most 200 characters.
    #[oai(validator(max_length = 200))]
    #[oai(nullable)]
    pub name: Option<String>,
}

impl Example for SignupOwnerIn {
    fn example() -> Self {
        Self {
            email: "ada@example.com".to_owned(),
            name: Some("Ada Lovelace".to_owned()),
        }
    }
}

impl ReadBody for SignupOwnerIn {
    type Value = NewUser;

    fn read(fields: &mut Fields) -> NewUser {
        NewUser {
            email: fields.required("email", email),
            name: fields.optional("name", text(0, 200)),
            role: None,
        }
    }
}

/// A sign-up: the organization and its owner.
#[derive(Object)]
#[oai(
    rename = "SignupIn",
    rename_all = "camelCase",
    deny_unknown_fields,
    example,
    skip_serializing_if_is_none
)]
pub struct SignupIn {
    /// The new organization.
    pub organization: OrganizationIn,
    /// Its first user, who becomes its `owner`.
    pub owner: SignupOwnerIn,
}

impl Example for SignupIn {
    fn example() -> Self {
        Self {
            organization: OrganizationIn::example(),
            owner: SignupOwnerIn::example(),
        }
    }
}

impl ReadBody for SignupIn {
    type Value = Option<NewSignup>;

    fn read(fields: &mut Fields) -> Option<NewSignup> {
        let organization = fields.required_object::<OrganizationIn>("organization");
        let owner = fields.required_object::<SignupOwnerIn>("owner");
        Some(NewSignup {
            organization: organization?,
            owner: owner?,
        })
    }
}

/// What a sign-up made. `apiKey.key` is the owner key, shown only here.
#[derive(Object, Serialize)]
#[oai(rename = "SignedUp", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct SignedUpOut {
    /// The new organization.
    pub organization: OrganizationOut,
    /// Its owner.
    pub user: UserOut,
    /// The owner's API key, with the key itself.
    pub api_key: CreatedApiKeyOut,
}

/// The sign-up endpoint.
pub struct SignupApi;

#[OpenApi(tag = "ApiTags::Signup")]
impl SignupApi {
    /// Sign up: create an organization, its owner and an owner API key.
    ///
    /// All in one transaction. Open when the server runs with `SIGNUP=open`; otherwise it
    /// needs the platform operator's admin token. Works in both modes.
    #[oai(path = "/signup", method = "post", operation_id = "signUp")]
    async fn sign_up(
        &self,
        state: Data<&AppState>,
        caller: PlatformCaller,
        body: JsonBody<SignupIn>,
    ) -> Result<Created<SignedUpOut>, ApiError> {
        caller.may_sign_up(state.identity.signup_open)?;
        let Some(new) = body.0 else {
            return Err(ApiError::internal(
                &"a sign-up body passed its checks incomplete",
            ));
        };
        let made = signup::sign_up(&state.db, new).await?;
        let id = made.organization.id;
        let signed_up = SignedUpOut {
            organization: made.organization.into(),
            user: made.user.into(),
            api_key: CreatedApiKeyOut {
                key: made.key,
                stored: made.api_key.into(),
            },
        };
        Ok(Created::at("/organizations", id, signed_up))
    }
}
