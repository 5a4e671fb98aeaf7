//! The wire side of pagination: `?limit=&cursor=` in, `Link: <…>; rel="next"` out.

use poem::Request;
use uuid::Uuid;

use crate::error::ApiError;
use crate::service::pagination::{PageRequest, DEFAULT_LIMIT};

/// Turns the query parameters into a page request. `limit` has been range-checked by its
/// declared validator; a cursor is opaque to clients and only ever one we handed out.
pub fn page_request(limit: Option<u64>, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
    let after = cursor
        .map(|cursor| {
            Uuid::try_parse(cursor)
                .map_err(|_| ApiError::invalid("cursor", "is not a cursor from a previous page"))
        })
        .transpose()?;
    Ok(PageRequest {
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        after,
    })
}

/// The `Link` header for the next page: the same path and filters, with the page's limit and
/// the next cursor.
pub fn next_link(request: &Request, page: PageRequest, next: Option<Uuid>) -> Option<String> {
    let next = next?;
    let mut query: Vec<&str> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && key != "limit" && key != "cursor"
        })
        .collect();
    let limit = format!("limit={}", page.limit);
    let cursor = format!("cursor={}", next.simple());
    query.push(&limit);
    query.push(&cursor);
    Some(format!(
        "<{}?{}>; rel=\"next\"",
        request.uri().path(),
        query.join("&")
    ))
}
