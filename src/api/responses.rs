//! Success responses shared by every resource.

use poem_openapi::payload::Json;
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::ApiResponse;

/// 201 with the new row and its `Location`.
#[derive(ApiResponse)]
pub enum Created<T: ToJSON + Type + Send + Sync> {
    /// Created; `Location` is the new row's URL.
    #[oai(status = 201)]
    Created(Json<T>, #[oai(header = "Location")] String),
}

/// 200 with one page of rows, newest first, and a `Link` to the next page when there is one.
#[derive(ApiResponse)]
pub enum Listed<T: ToJSON + Type + Send + Sync> {
    /// One page of rows, newest first. `Link: <…>; rel="next"` is present only when there is a
    /// next page.
    #[oai(status = 200)]
    Page(Json<Vec<T>>, #[oai(header = "Link")] Option<String>),
}

/// 204 with no body.
#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}
