//! Business rules and queries, one file per resource. No HTTP types here.

pub mod organizations;
pub mod pagination;
pub mod tenant_scope;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::DbErr;

use crate::error::FieldError;

/// What a service call can fail with, in domain words; `ApiError` picks the status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such row in the caller's scope; names the kind of row.
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// A body names a row that does not exist in the caller's organization.
    #[error("{field}: {message}")]
    UnknownReference {
        field: &'static str,
        message: String,
    },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// The current time at the millisecond precision the API promises, so that what is stored is
/// exactly what is returned.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
