//! Business rules and queries, one file per resource. No HTTP types here.

pub mod actions;
pub mod api_keys;
pub mod email_domains;
pub mod execution_logs;
pub mod export;
pub mod flows;
pub mod organizations;
pub mod pagination;
pub mod runs;
pub mod signup;
mod statement_cache;
pub mod tenancy;
pub mod tenant_scope;
pub mod tools;
pub mod users;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{DbErr, SqlErr};

/// What a service call can fail with, in domain words; `ApiError` picks the status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such row in the caller's scope; names the kind of row.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The caller is not a user of the organization it names.
    #[error("the caller is not a user of the organization")]
    NotAMember,
    /// The caller's role is below the one the call needs.
    #[error("the call needs the {0} role")]
    LacksRole(tenancy::Role),
    /// A rule of roles forbids the call whatever the caller's role (giving oneself a role).
    #[error("{0}")]
    Forbidden(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// A body names a row that does not exist in the caller's organization.
    #[error("{field}: {message}")]
    UnknownReference {
        field: &'static str,
        message: String,
    },
    /// A field breaks a rule the organization set (an email outside its allowed domains).
    #[error("{field}: {message}")]
    AgainstOrganizationRule {
        field: &'static str,
        message: String,
    },
    /// A flow has a step the executor cannot run; `field` names it (`steps[2].actionId`).
    #[error("{field}: {message}")]
    Unrunnable { field: String, message: String },
    /// Fields that fail a rule only the service can check (credentials against the tool's
    /// `authType`).
    #[error("invalid fields")]
    Invalid(Vec<crate::error::FieldError>),
    /// Credentials were sent, and the server has no key to seal them with.
    #[error(transparent)]
    NoSealingKey(#[from] crate::credentials::NoSealingKey),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl ServiceError {
    /// Whether the database refused a write for a foreign key: a new row names a parent that
    /// is gone, or a deleted row is still referenced.
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, ServiceError::Db(err)
            if matches!(err.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))))
    }

    /// Whether the database refused a write for a unique index: the value is taken.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, ServiceError::Db(err)
            if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))))
    }
}

/// The current time at the millisecond precision the API promises, so that what is stored is
/// exactly what is returned.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// A unique-index violation becomes a conflict saying `message`; other errors pass through.
pub fn conflict_on_duplicate(err: impl Into<ServiceError>, message: &str) -> ServiceError {
    match err.into() {
        err if err.is_unique_violation() => ServiceError::Conflict(message.to_owned()),
        other => other,
    }
}

/// A foreign-key refusal of a delete (rows still reference the target) becomes a conflict
/// saying `message`; other errors pass through.
pub fn conflict_on_reference(err: impl Into<ServiceError>, message: &str) -> ServiceError {
    match err.into() {
        err if err.is_foreign_key_violation() => ServiceError::Conflict(message.to_owned()),
        other => other,
    }
}
