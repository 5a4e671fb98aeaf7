//! `/health`, `/ready` and `/metrics`: for load balancers, orchestrators and scrapers; no
//! tenant headers.

use poem::http::header::AUTHORIZATION;
use poem::web::Data;
use poem::{IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::error::ApiError;
use crate::runs::queue;
use crate::state::AppState;
use crate::telemetry::metrics::{Snapshot, CONTENT_TYPE};

/// The operations endpoints.
pub struct HealthApi;

/// A liveness or readiness answer.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct HealthStatus {
    /// `ok` from `/health`, `ready` from `/ready`.
    pub status: String,
}

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: the process is up.
    ///
    /// Answers 200 while the process runs; never touches the database.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<HealthStatus> {
        Json(HealthStatus {
            status: "ok".to_owned(),
        })
    }

    /// Readiness: the database answers.
    ///
    /// Answers 200 when a database round trip succeeds and 503 when it does not.
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, state: Data<&AppState>) -> Result<Json<HealthStatus>, ApiError> {
        state
            .db
            .ping()
            .await
            .map_err(|err| ApiError::unavailable(&err))?;
        Ok(Json(HealthStatus {
            status: "ready".to_owned(),
        }))
    }
}

/// `GET /metrics`: the metrics in OpenMetrics text (Prometheus scrapes it). Open when
/// `METRICS_TOKEN` is unset, else only with `Authorization: Bearer <METRICS_TOKEN>` (401
/// otherwise). Not in the OpenAPI document: it is for the scraper, not for API clients.
#[poem::handler]
pub async fn serve_metrics(request: &Request, state: Data<&AppState>) -> Response {
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if !state.identity.may_read_metrics(authorization) {
        return ApiError::unauthenticated().into_response();
    }
    let queue = match queue::snapshot(&state.db).await {
        Ok(queue) => Some(queue),
        Err(err) => {
            tracing::warn!(error = %err, "the metrics' database queries failed");
            None
        }
    };
    let snapshot = Snapshot {
        pool: state.db.usage(),
        queue,
    };
    state
        .metrics
        .render(&snapshot)
        .with_content_type(CONTENT_TYPE)
        .into_response()
}
