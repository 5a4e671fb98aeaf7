//! `/health` and `/ready`: for load balancers and orchestrators; no tenant headers.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::error::ApiError;
use crate::state::AppState;

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
