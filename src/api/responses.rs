//! Success responses shared by every resource.

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::ApiResponse;
use uuid::Uuid;

use super::pagination::next_link;
use crate::service::pagination::{Page, PageRequest};

/// 201 with the new row and its `Location`.
#[derive(ApiResponse)]
pub enum Created<T: ToJSON + Type + Send + Sync> {
    /// Created; `Location` is the new row's URL.
    #[oai(status = 201)]
    Created(Json<T>, #[oai(header = "Location")] String),
}

impl<T: ToJSON + Type + Send + Sync> Created<T> {
    /// The new row `body`, created in `collection` (e.g. `/tools`) with `id`.
    pub fn at(collection: &str, id: Uuid, body: T) -> Self {
        Self::Created(Json(body), format!("{collection}/{id}"))
    }
}

/// 200 with one page of rows, newest first, and a `Link` to the next page when there is one.
#[derive(ApiResponse)]
pub enum Listed<T: ToJSON + Type + Send + Sync> {
    /// One page of rows, newest first. `Link: <…>; rel="next"` is present only when there is a
    /// next page.
    #[oai(status = 200)]
    Page(Json<Vec<T>>, #[oai(header = "Link")] Option<String>),
}

impl<T: ToJSON + Type + Send + Sync> Listed<T> {
    /// One page of `rows` as wire types, with the `Link` to the next page of `request`.
    pub fn page<R: Into<T>>(request: &Request, page: PageRequest, rows: Page<R>) -> Self {
        let link = next_link(request, page, rows.next);
        Self::Page(Json(rows.map(Into::into).items), link)
    }
}

/// 204 with no body.
#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}
