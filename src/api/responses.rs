//! Success responses shared by every resource.

use poem::web::IntoResponse;
use poem::{Request, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::ApiResponse;
use serde::Serialize;
use uuid::Uuid;

use super::pagination::next_link;
use crate::service::pagination::{Page, PageRequest};

/// A wire type as a JSON body (200 where it is the whole answer): documented by its `Object`
/// schema, as poem-openapi's `Json` is, but written by its `Serialize` straight into the body,
/// where `Json` first builds a `serde_json::Value` tree of it, then writes the tree (a third of
/// the CPU of a page of 100 tools, docs/benchmarks.md). The two agree field for field: the wire
/// types derive both with the same names, and a test compares them.
pub struct Reply<T>(pub T);

const JSON: &str = "application/json; charset=utf-8";

impl<T: Type> Payload for Reply<T> {
    const CONTENT_TYPE: &'static str = JSON;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder().content_type(JSON).body(body),
            Err(err) => crate::error::ApiError::internal(&err).into_response(),
        }
    }
}

impl<T: Type + Serialize + Send> ApiResponse for Reply<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: JSON,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// 201 with the new row and its `Location`.
#[derive(ApiResponse)]
pub enum Created<T: ToJSON + Serialize + Type + Send + Sync> {
    /// Created; `Location` is the new row's URL.
    #[oai(status = 201)]
    Created(Reply<T>, #[oai(header = "Location")] String),
}

impl<T: ToJSON + Serialize + Type + Send + Sync> Created<T> {
    /// The new row `body`, created in `collection` (e.g. `/tools`) with `id`.
    pub fn at(collection: &str, id: Uuid, body: T) -> Self {
        Self::Created(Reply(body), format!("{collection}/{id}"))
    }
}

/// 200 with one page of rows, newest first, and a `Link` to the next page when there is one.
#[derive(ApiResponse)]
pub enum Listed<T: ToJSON + Serialize + Type + Send + Sync> {
    /// One page of rows, newest first. `Link: <…>; rel="next"` is present only when there is a
    /// next page.
    #[oai(status = 200)]
    Page(Reply<Vec<T>>, #[oai(header = "Link")] Option<String>),
}

impl<T: ToJSON + Serialize + Type + Send + Sync> Listed<T> {
    /// One page of `rows` as wire types, with the `Link` to the next page of `request`.
    pub fn page<R: Into<T>>(request: &Request, page: PageRequest, rows: Page<R>) -> Self {
        let link = next_link(request, page, rows.next);
        Self::Page(Reply(rows.map(Into::into).items), link)
    }
}

/// 204 with no body.
#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

#[cfg(test)]
mod tests {
    //! [`Reply`] writes a wire type by its `Serialize`; the document describes its `ToJSON`.
    //! These must agree for every wire type, with every optional field present and absent.

    use chrono::{TimeZone, Utc};
    use poem_openapi::types::ToJSON;
    use serde::Serialize;
    use serde_json::json;
    use uuid::Uuid;

    use crate::api::actions::ActionOut;
    use crate::api::api_keys::{ApiKeyOut, CreatedApiKeyOut};
    use crate::api::execution_logs::ExecutionLogOut;
    use crate::api::flows::FlowOut;
    use crate::api::organizations::OrganizationOut;
    use crate::api::rules::RoleName;
    use crate::api::runs::RunOut;
    use crate::api::signup::SignedUpOut;
    use crate::api::timestamp::Timestamp;
    use crate::api::tools::ToolOut;
    use crate::api::users::UserOut;

    fn agree<T: ToJSON + Serialize>(value: &T) {
        let document = value.to_json().expect("a wire type is JSON");
        let written = serde_json::to_value(value).expect("a wire type serializes");
        assert_eq!(written, document);
    }

    fn at(millis: i64) -> Timestamp {
        Utc.timestamp_millis_opt(millis)
            .single()
            .expect("a valid instant")
            .into()
    }

    fn key(some: bool) -> ApiKeyOut {
        ApiKeyOut {
            id: Uuid::now_v7(),
            org_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            name: "ci \"deploy\" ✓".to_owned(),
            prefix: "tol_abc".to_owned(),
            role: RoleName::Editor,
            expires_at: some.then(|| at(1_800_000_000_001)),
            last_used_at: some.then(|| at(1_800_000_000_010)),
            revoked_at: some.then(|| at(1_800_000_000_100)),
            created_at: at(1_800_000_000_000),
            updated_at: at(1_800_000_000_999),
        }
    }

    fn user(some: bool) -> UserOut {
        UserOut {
            id: Uuid::now_v7(),
            org_id: Uuid::now_v7(),
            email: "a@b.example".to_owned(),
            name: some.then(|| "Ada".to_owned()),
            role: RoleName::Owner,
            created_at: at(0),
            updated_at: at(1),
        }
    }

    #[test]
    fn every_wire_type_writes_what_the_document_describes() {
        let big = json!({"n": 12345678901234567890u64, "x": [1.5, null, "s"], "o": {}});
        for some in [true, false] {
            agree(&ToolOut {
                id: Uuid::now_v7(),
                org_id: Uuid::now_v7(),
                name: "Slack\n\u{1}".to_owned(),
                base_url: "https://slack.com/api".to_owned(),
                auth_type: "bearer".to_owned(),
                has_credentials: some,
                created_at: at(1_800_000_000_123),
                updated_at: at(1_800_000_000_456),
            });
            agree(&ActionOut {
                id: Uuid::now_v7(),
                org_id: Uuid::now_v7(),
                tool_id: Uuid::now_v7(),
                name: some.then(|| "Post".to_owned()),
                method: "POST".to_owned(),
                endpoint: "/chat".to_owned(),
                schema: big.clone(),
                execute_if: some.then(|| json!("inputs.x > 1")),
                created_at: at(2),
                updated_at: at(3),
            });
            agree(&key(some));
            agree(&CreatedApiKeyOut {
                key: "tol_secret".to_owned(),
                stored: key(some),
            });
            agree(&ExecutionLogOut {
                id: Uuid::now_v7(),
                org_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
                flow_id: Uuid::now_v7(),
                execution_id: some.then(|| "run-1".to_owned()),
                step_id: "fetch".to_owned(),
                status: "completed".to_owned(),
                inputs: big.clone(),
                outputs: some.then(|| json!({"ok": true})),
                error: some.then(|| json!({"kind": "timeout"})),
                run_id: some.then(Uuid::now_v7),
                attempt: some.then_some(2),
                duration_ms: some.then_some(1234),
                created_at: at(4),
                updated_at: at(5),
            });
            agree(&FlowOut {
                id: Uuid::now_v7(),
                org_id: Uuid::now_v7(),
                name: some.then(|| "Flow".to_owned()),
                steps: vec![json!({"id": "a", "type": "action"}), big.clone()],
                version: 3,
                created_at: at(6),
                updated_at: at(7),
            });
            let organization = OrganizationOut {
                id: Uuid::now_v7(),
                name: "Acme".to_owned(),
                retention_days: some.then_some(90),
                allowed_email_domains: vec!["acme.com".to_owned()],
                created_at: at(8),
                updated_at: at(9),
            };
            agree(&organization);
            agree(&RunOut {
                id: Uuid::now_v7(),
                org_id: Uuid::now_v7(),
                flow_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
                flow_version: 1,
                status: "succeeded".to_owned(),
                inputs: big.clone(),
                outputs: json!({}),
                error: some.then(|| json!({"message": "m"})),
                created_at: at(10),
                started_at: some.then(|| at(11)),
                finished_at: some.then(|| at(12)),
                updated_at: at(13),
            });
            agree(&user(some));
            agree(&SignedUpOut {
                organization,
                user: user(some),
                api_key: CreatedApiKeyOut {
                    key: "tol_k".to_owned(),
                    stored: key(some),
                },
            });
            agree(&vec![user(some), user(!some)]);
        }
    }
}
