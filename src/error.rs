//! `ApiError` and the problem+json body (RFC 9457): the one place where failures get a status.

use poem::error::{MethodNotAllowedError, NotFoundError, ResponseError};
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::error::{ContentTypeError, ParseParamError, ParsePathError};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};
use sea_orm::{DbErr, SqlErr};

use crate::middleware::current_request_id;
use crate::service::ServiceError;

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One failing field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct FieldError {
    /// The field, header or parameter that failed, as the client named it (`email`, `X-Org-ID`, `limit`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error response (RFC 9457 problem details).
#[derive(Clone, Debug, Object)]
#[oai(rename = "Problem", rename_all = "camelCase")]
pub struct ProblemBody {
    /// A URI reference naming the kind of problem, e.g. `/problems/validation`.
    #[oai(rename = "type")]
    pub kind: String,
    /// A short, fixed summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Every failing field; only on validation problems.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldError>>,
    /// The request id, also sent as the `X-Request-Id` header and written to the server's log.
    pub request_id: String,
}

/// A failed request, ready to become a problem+json response.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    /// Headers the status calls for: `WWW-Authenticate` on a 401, `Retry-After` on a 429.
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            kind,
            title,
            detail,
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// 401: credentials are needed and missing, or not valid. The detail is the same whatever
    /// was wrong with them, so that it tells an attacker nothing.
    pub fn unauthenticated() -> Self {
        Self {
            headers: vec![("WWW-Authenticate", "Bearer".to_owned())],
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "/problems/unauthenticated",
                "Unauthenticated",
                "send a valid API key as Authorization: Bearer <key>".to_owned(),
            )
        }
    }

    /// 429: too many requests from this client (failed authentications) or for this
    /// organization; retry after `retry_after` (whole seconds, at least 1).
    pub fn rate_limited(detail: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        Self {
            headers: vec![("Retry-After", seconds.to_string())],
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/rate-limited",
                "Too many requests",
                detail.into(),
            )
        }
    }

    /// 400: the listed fields fail validation.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "/problems/validation",
                "Request is invalid",
                detail,
            )
        }
    }

    /// 400: one field, header or parameter fails validation.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    /// 400: the body is not JSON at all.
    pub fn malformed_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "/problems/malformed-body",
            "Request body is not valid JSON",
            detail.into(),
        )
    }

    /// 403: the tenant headers do not name a member of the organization.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "/problems/forbidden",
            "Forbidden",
            detail.into(),
        )
    }

    /// 404: no such row in the caller's organization, or no such route.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "/problems/not-found",
            "Not found",
            detail.into(),
        )
    }

    /// 409: the request conflicts with the stored state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "/problems/conflict",
            "Conflict",
            detail.into(),
        )
    }

    /// 413: the body is larger than `MAX_BODY_BYTES`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "/problems/payload-too-large",
            "Request body too large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 422: the body names a row that does not exist in the caller's organization.
    pub fn unknown_reference(field: &str, message: &str) -> Self {
        Self {
            errors: vec![FieldError::new(field, message)],
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/unknown-reference",
                "Referenced row does not exist",
                format!("{field}: {message}"),
            )
        }
    }

    /// 422: a field breaks a rule of the caller's organization; nothing was written.
    pub fn against_organization_rule(field: &str, message: &str) -> Self {
        Self {
            errors: vec![FieldError::new(field, message)],
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/organization-rule",
                "Refused by a rule of the organization",
                format!("{field}: {message}"),
            )
        }
    }

    /// 422: a flow has a step the executor cannot run; nothing was queued.
    pub fn unrunnable(field: &str, message: &str) -> Self {
        Self {
            errors: vec![FieldError::new(field, message)],
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/unrunnable-flow",
                "The flow cannot be run",
                format!("{field}: {message}"),
            )
        }
    }

    /// 500: a fault of the server. The cause is logged here, once; the body says nothing of it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/problems/internal",
            "Internal server error",
            "the server failed to handle this request; quote the request id when reporting it"
                .to_owned(),
        )
    }

    /// 503: the database cannot be reached right now.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "database unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/unavailable",
            "Service unavailable",
            "the database cannot be reached; try again shortly".to_owned(),
        )
    }

    fn body(&self) -> ProblemBody {
        ProblemBody {
            kind: self.kind.to_owned(),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            errors: (!self.errors.is_empty()).then(|| self.errors.clone()),
            request_id: current_request_id().unwrap_or_default(),
        }
    }

    /// Turns any error that reaches the top of the route (our own, or one that poem and
    /// poem-openapi raise before a handler runs) into an `ApiError`.
    pub fn from_poem(err: poem::Error) -> Self {
        if let Some(err) = err.downcast_ref::<ApiError>() {
            return err.clone();
        }
        if let Some(err) = err.downcast_ref::<ParseParamError>() {
            return Self::invalid(err.name, err.reason.clone());
        }
        if err.is::<ParsePathError>() {
            // poem-openapi names path parameters internally (`param0`); the only path
            // parameter of this API is a row's `id`.
            return Self::invalid("id", "must be a UUID");
        }
        if let Some(err) = err.downcast_ref::<ContentTypeError>() {
            return Self::invalid("Content-Type", err.to_string());
        }
        if err.is::<NotFoundError>() {
            return Self::not_found("no such route");
        }
        if err.is::<MethodNotAllowedError>() {
            return Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "/problems/method-not-allowed",
                "Method not allowed",
                "this route does not support that method".to_owned(),
            );
        }
        match err.status() {
            status if status.is_client_error() => Self::new(
                status,
                "/problems/bad-request",
                "Bad request",
                err.to_string(),
            ),
            _ => Self::internal(&err),
        }
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        let body = self
            .body()
            .to_json()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let mut response = Response::builder()
            .status(self.status)
            .content_type(PROBLEM_CONTENT_TYPE);
        for (name, value) in &self.headers {
            response = response.header(*name, value.as_str());
        }
        response.body(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.as_response()
    }
}

/// Documents the problem responses that every operation can answer.
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let problem = |status: u16, description: &'static str| MetaResponse {
            description,
            status: Some(status),
            status_range: None,
            content: vec![MetaMediaType {
                content_type: PROBLEM_CONTENT_TYPE,
                schema: ProblemBody::schema_ref(),
            }],
            headers: vec![],
        };
        MetaResponses {
            responses: vec![
                problem(400, "Malformed JSON, wrong content type, or a field, header or parameter that fails validation"),
                problem(401, "Credentials are needed and missing, or not valid (WWW-Authenticate: Bearer)"),
                problem(403, "The caller is not a user of the organization, the headers disagree with the key, or the caller's role does not allow the call"),
                problem(404, "No such row in the caller's organization"),
                problem(409, "Conflicts with the stored state"),
                problem(413, "Request body larger than MAX_BODY_BYTES"),
                problem(422, "The body names a row that does not exist in the caller's organization"),
                problem(429, "Too many failed authentications from this address, or the organization's rate limit (Retry-After)"),
                problem(500, "A fault of the server; the body carries only the request id"),
                problem(503, "The database cannot be reached"),
            ],
        }
    }

    fn register(registry: &mut Registry) {
        ProblemBody::register(registry);
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::NotFound(what) => Self::not_found(format!("no such {what}")),
            ServiceError::NotAMember => {
                Self::forbidden("the caller is not a user of the organization it names")
            }
            ServiceError::LacksRole(role) => Self::forbidden(format!(
                "this call needs the {role} role or a higher one, which the caller does not have"
            )),
            ServiceError::Forbidden(detail) => Self::forbidden(detail),
            ServiceError::Conflict(detail) => Self::conflict(detail),
            ServiceError::UnknownReference { field, message } => {
                Self::unknown_reference(field, &message)
            }
            ServiceError::Unrunnable { field, message } => Self::unrunnable(&field, &message),
            ServiceError::AgainstOrganizationRule { field, message } => {
                Self::against_organization_rule(field, &message)
            }
            ServiceError::Invalid(errors) => Self::validation(errors),
            ServiceError::NoSealingKey(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/credentials-unavailable",
                "Credentials cannot be stored",
                "this server has no CREDENTIALS_KEY configured, so it cannot store credentials; \
                 everything else works, tools without credentials included"
                    .to_owned(),
            ),
            ServiceError::Db(err) => Self::from(err),
        }
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                return Self::conflict("a row with the same unique value already exists")
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                return Self::conflict(
                    "other rows still reference this row, or it references a row that is gone",
                )
            }
            _ => {}
        }
        match err {
            _ if crate::db::is_unavailable(&err) => Self::unavailable(&err),
            _ => Self::internal(&err),
        }
    }
}

/// The last resort for errors that reach the top of the route: every one becomes problem+json.
pub async fn problem_response(err: poem::Error) -> Response {
    ApiError::from_poem(err).as_response()
}
