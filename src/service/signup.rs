//! Signing up: a new organization, its first user as `owner`, and an owner API key, in one
//! transaction, so that a first deploy needs no other call and a failure leaves nothing behind.

use entity::{api_key, organization, user};
use sea_orm::ActiveModelTrait;

use super::organizations::{self, NewOrganization};
use super::tenancy::Role;
use super::users::{self, NewUser};
use super::{api_keys, conflict_on_duplicate, ServiceError};
use crate::db::Pool;

/// A validated sign-up.
#[derive(Debug)]
pub struct NewSignup {
    pub organization: NewOrganization,
    pub owner: NewUser,
}

/// What a sign-up made; `key` is the owner key itself, which exists only here.
#[derive(Debug)]
pub struct SignedUp {
    pub organization: organization::Model,
    pub user: user::Model,
    pub api_key: api_key::Model,
    pub key: String,
}

/// The name of the key a sign-up makes.
const OWNER_KEY_NAME: &str = "owner key (sign-up)";

pub async fn sign_up(db: &Pool, new: NewSignup) -> Result<SignedUp, ServiceError> {
    let txn = db.begin().await?;
    let organization = organizations::new_row(new.organization)
        .insert(&txn)
        .await?;
    let owner = NewUser {
        role: Some(Role::Owner),
        ..new.owner
    };
    let user = users::new_row(organization.id, owner)
        .insert(&txn)
        .await
        .map_err(|err| conflict_on_duplicate(err, "a user with this email already exists"))?;
    let (row, key) = api_keys::new_row(
        organization.id,
        user.id,
        OWNER_KEY_NAME.to_owned(),
        Role::Owner,
        None,
    );
    let api_key = row.insert(&txn).await?;
    txn.commit().await?;
    Ok(SignedUp {
        organization,
        user,
        api_key,
        key,
    })
}
