//! The HTTP API: one file per resource, each with its `#[OpenApi]` struct and wire types.

pub mod actions;
pub mod api_keys;
pub mod body;
pub mod execution_logs;
pub mod export;
pub mod flows;
pub mod health;
pub mod organizations;
pub mod pagination;
pub mod responses;
pub mod rules;
pub mod runs;
pub mod signup;
pub mod timestamp;
pub mod tools;
pub mod users;

use poem_openapi::{OpenApiService, Tags};
use serde_json::{Map, Value};

use crate::identity::HEADER_SCHEMES;

/// The groups operations are listed under in Swagger UI, in the order a user meets them
/// ([`order_tags`] keeps it; poem-openapi sorts them by name).
#[derive(Tags)]
pub enum ApiTags {
    /// A new organization with its owner and an owner API key, in one call.
    Signup,
    /// Tenants: create one first, then its first user.
    Organizations,
    /// Users of the caller's organization.
    Users,
    /// External APIs the organization calls.
    Tools,
    /// Endpoints of the organization's tools.
    Actions,
    /// Versioned workflow definitions.
    Flows,
    /// The audit trail of flow runs.
    #[oai(rename = "Execution logs")]
    ExecutionLogs,
    /// Flows being run: start one, follow it, cancel it.
    Runs,
    /// Keys that identify a user of the organization: `Authorization: Bearer tol_…`.
    #[oai(rename = "API keys")]
    ApiKeys,
    /// Liveness and readiness.
    Operations,
}

/// The API with every resource, as one OpenAPI service.
pub type Api = (
    signup::SignupApi,
    organizations::OrganizationsApi,
    users::UsersApi,
    tools::ToolsApi,
    actions::ActionsApi,
    flows::FlowsApi,
    execution_logs::ExecutionLogsApi,
    runs::RunsApi,
    api_keys::ApiKeysApi,
    health::HealthApi,
);

pub fn service() -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (
            signup::SignupApi,
            organizations::OrganizationsApi,
            users::UsersApi,
            tools::ToolsApi,
            actions::ActionsApi,
            flows::FlowsApi,
            execution_logs::ExecutionLogsApi,
            runs::RunsApi,
            api_keys::ApiKeysApi,
            health::HealthApi,
        ),
        "Tolstoy",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Multi-tenant workflow automation: organizations, their users, tools, actions, flows \
         and execution logs. Tenant calls need an API key (Authorization: Bearer tol_…), or in \
         headers mode both X-Org-ID and X-User-ID (use Authorize). \
         Errors are application/problem+json (RFC 9457).",
    )
}

/// The OpenAPI document, as served at `/openapi.json` in headers mode, embedded in `/docs` and
/// printed by `tolstoy openapi` (keys mode serves [`keys_mode_openapi_value`]).
///
/// poem-openapi lists an operation's security schemes as alternatives (any one suffices); a
/// tenant call needs the bearer key, or both headers, so the headers' requirements are merged
/// into one.
pub fn openapi_document() -> String {
    serde_json::to_string_pretty(&openapi_value()).unwrap_or_default()
}

/// The document a server in keys mode serves: the same, but the bearer key is the only way in,
/// so the two headers are not offered (Swagger UI's Authorize then asks for the key alone).
pub fn keys_mode_openapi_value() -> Value {
    let mut document = openapi_value();
    for operation in operations_mut(&mut document) {
        if let Some(requirements) = operation.get_mut("security").and_then(Value::as_array_mut) {
            requirements.retain(|requirement| {
                !HEADER_SCHEMES
                    .iter()
                    .any(|scheme| requirement.get(*scheme).is_some())
            });
        }
    }
    if let Some(schemes) = document
        .pointer_mut("/components/securitySchemes")
        .and_then(Value::as_object_mut)
    {
        for scheme in HEADER_SCHEMES {
            schemes.remove(scheme);
        }
    }
    document
}

/// [`openapi_document`] as JSON, for the code that reads it (the `Allow` header of a 405).
pub fn openapi_value() -> Value {
    // poem-openapi always writes JSON; Null would only ever show an empty document.
    let mut document: Value = serde_json::from_str(&service().spec()).unwrap_or(Value::Null);
    for operation in operations_mut(&mut document) {
        if let Some(security) = operation.get_mut("security") {
            *security = merged_tenant_security(security);
        }
    }
    order_tags(&mut document);
    state_request_body_rules(&mut document);
    untyped_unions(&mut document);
    link_created_rows(&mut document);
    give_parameters_examples(&mut document);
    document
}

/// Lists the document's tags in the order of [`ApiTags`], which Swagger UI follows.
fn order_tags(document: &mut Value) {
    let order = [
        ApiTags::Organizations,
        ApiTags::Users,
        ApiTags::Tools,
        ApiTags::Actions,
        ApiTags::Flows,
        ApiTags::ExecutionLogs,
        ApiTags::Runs,
        ApiTags::ApiKeys,
        ApiTags::Signup,
        ApiTags::Operations,
    ]
    .map(|tag| tag.name());
    if let Some(tags) = document.get_mut("tags").and_then(Value::as_array_mut) {
        tags.sort_by_key(|tag| {
            let name = tag["name"].as_str().unwrap_or_default();
            order.iter().position(|known| *known == name)
        });
    }
}

/// OpenAPI links from each `POST /things` 201 to the operations on `/things/{id}`, with the
/// new row's `id`: the create → get → update → delete chain that clients (and schemathesis'
/// stateful phase) can follow.
fn link_created_rows(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let chains: Vec<(String, Vec<String>)> = paths
        .iter()
        .filter(|(_, operations)| operations.get("post").is_some())
        .filter_map(|(collection, _)| {
            let item = paths.get(&format!("{collection}/{{id}}"))?.as_object()?;
            let targets = ["get", "put", "delete"]
                .iter()
                .filter_map(|method| item.get(*method)?.get("operationId")?.as_str())
                .map(str::to_owned)
                .collect();
            Some((collection.clone(), targets))
        })
        .collect();
    for (collection, targets) in chains {
        let links: Map<String, Value> = targets
            .into_iter()
            .map(|operation_id| {
                let link = serde_json::json!({
                    "operationId": operation_id,
                    "parameters": { "id": "$response.body#/id" },
                    "description": "The row just created.",
                });
                (operation_id, link)
            })
            .collect();
        if let Some(created) = paths
            .get_mut(&collection)
            .and_then(|operations| operations.pointer_mut("/post/responses/201"))
            .and_then(Value::as_object_mut)
        {
            created.insert("links".to_owned(), Value::Object(links));
        }
    }
}

/// An example for every path parameter and for `limit` and `cascade`, by name. Filters and
/// the cursor get none: Swagger UI's "Try it out" fills examples in, and a sample filter would
/// quietly narrow the list it shows.
fn give_parameters_examples(document: &mut Value) {
    let parameters = operations_mut(document)
        .filter_map(|operation| operation.get_mut("parameters"))
        .filter_map(Value::as_array_mut)
        .flatten();
    for parameter in parameters {
        let example = match parameter["name"].as_str() {
            Some("id") => Value::from("01a1fdac-9f64-757d-a0d9-edbeaf1f2859"),
            Some("limit") => Value::from(50),
            Some("cascade") => Value::from(false),
            _ => continue,
        };
        if let Some(parameter) = parameter.as_object_mut() {
            parameter.insert("example".to_owned(), example);
        }
    }
}

/// Removes the `type: object` that poem-openapi writes beside the `anyOf` of every `Union`:
/// it would refuse the union's non-object variants (a [`actions::Condition`] expression).
fn untyped_unions(document: &mut Value) {
    let schemas = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut);
    for schema in schemas.into_iter().flat_map(|s| s.values_mut()) {
        if let Some(schema) = schema.as_object_mut() {
            if schema.contains_key("anyOf") {
                schema.remove("type");
            }
        }
    }
}

/// Every operation of the document.
fn operations_mut(document: &mut Value) -> impl Iterator<Item = &mut Value> {
    document
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|operations| operations.values_mut())
}

/// States on every request body schema the rules [`body::Fields`] applies to every body, which
/// poem-openapi does not write: `additionalProperties: false` (an unknown field is a 400), and
/// on each text field without a pattern or format of its own, [`body::text_pattern`] in place
/// of `minLength`/`maxLength`: no U+0000 (refused in every field), and the length counted after
/// trimming, as the server counts it.
fn state_request_body_rules(document: &mut Value) {
    let mut request_schemas: Vec<String> = operations_mut(document)
        .filter_map(|operation| operation.pointer("/requestBody/content"))
        .filter_map(Value::as_object)
        .flat_map(|content| content.values())
        .filter_map(|media| media.pointer("/schema/$ref").and_then(Value::as_str))
        .filter_map(|reference| reference.strip_prefix("#/components/schemas/"))
        .map(str::to_owned)
        .collect();
    // And the request objects nested in them (a sign-up's `organization` and `owner`), which
    // are named `…In` like every request body; a JSON field's own schema is not one.
    let mut index = 0;
    while let Some(name) = request_schemas.get(index).cloned() {
        index += 1;
        let nested: Vec<String> = document
            .pointer(&format!("/components/schemas/{name}/properties"))
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|properties| properties.values())
            .filter_map(|field| field.pointer("/$ref").or(field.pointer("/allOf/0/$ref")))
            .filter_map(Value::as_str)
            .filter_map(|reference| reference.strip_prefix("#/components/schemas/"))
            .filter(|name| name.ends_with("In"))
            .map(str::to_owned)
            .collect();
        for name in nested {
            if !request_schemas.contains(&name) {
                request_schemas.push(name);
            }
        }
    }
    request_schemas.dedup();
    for name in request_schemas {
        if let Some(schema) = document
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(Value::as_object_mut)
        {
            schema.insert("additionalProperties".to_owned(), Value::Bool(false));
            let text_fields = schema
                .get_mut("properties")
                .and_then(Value::as_object_mut)
                .into_iter()
                .flat_map(|properties| properties.values_mut())
                .filter_map(Value::as_object_mut)
                .filter(|field| {
                    field.get("type").and_then(Value::as_str) == Some("string")
                        && !field.contains_key("pattern")
                        && !field.contains_key("format")
                });
            for field in text_fields {
                let min = field
                    .remove("minLength")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                let max = field.remove("maxLength").and_then(|v| v.as_u64());
                let max = max.unwrap_or(u64::from(u32::MAX));
                field.insert("pattern".to_owned(), body::text_pattern(min, max).into());
            }
        }
    }
}

fn merged_tenant_security(security: &Value) -> Value {
    let requirements: Vec<&Map<String, Value>> = security
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .collect();
    let names: Vec<&str> = requirements
        .iter()
        .flat_map(|requirement| requirement.keys().map(String::as_str))
        .collect();
    if !HEADER_SCHEMES.iter().all(|scheme| names.contains(scheme)) {
        return security.clone();
    }
    let mut merged: Vec<Value> = requirements
        .into_iter()
        .filter(|requirement| {
            !requirement
                .keys()
                .any(|name| HEADER_SCHEMES.contains(&name.as_str()))
        })
        .map(|requirement| Value::Object(requirement.clone()))
        .collect();
    let both: Map<String, Value> = HEADER_SCHEMES
        .iter()
        .map(|scheme| ((*scheme).to_owned(), Value::Array(vec![])))
        .collect();
    merged.push(Value::Object(both));
    Value::Array(merged)
}
