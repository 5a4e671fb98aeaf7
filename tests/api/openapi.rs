//! The OpenAPI document: served, printed by the binary, and committed, all the same.

use std::process::Command;

use crate::on_both_backends;

fn committed_document() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let text = std::fs::read_to_string(path).expect("openapi.json is committed at the top level");
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

#[test]
fn committed_openapi_json_equals_what_tolstoy_openapi_prints() {
    let output = Command::new(env!("CARGO_BIN_EXE_tolstoy"))
        .arg("openapi")
        .output()
        .expect("run tolstoy openapi");
    assert!(output.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        printed,
        committed_document(),
        "openapi.json is stale: regenerate it with `cargo run -q -- openapi > openapi.json`"
    );
}

on_both_backends! {
    async fn served_openapi_json_is_the_committed_document(app) {
        let reply = app.get("/openapi.json").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, committed_document());
        assert_eq!(reply.body["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        for path in ["/organizations", "/organizations/{id}", "/health", "/ready"] {
            assert!(reply.body["paths"][path].is_object(), "{path} is documented");
        }
    }
}

/// The schemas of the committed document, by name.
fn schemas() -> serde_json::Map<String, serde_json::Value> {
    committed_document()["components"]["schemas"]
        .as_object()
        .cloned()
        .expect("components.schemas")
}

/// The schemas of the six resources, as they are sent.
const RESOURCES: [&str; 6] = [
    "Organization",
    "User",
    "Tool",
    "Action",
    "Flow",
    "ExecutionLog",
];

/// The names a schema lists as required.
fn required(schema: &serde_json::Value) -> Vec<String> {
    schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

// Findings of schemathesis: the document must describe exactly what the server sends and takes.

#[test]
fn every_operation_has_a_summary_a_tag_an_id_problem_errors_and_examples_of_body_and_path() {
    let document = committed_document();
    let schemas = schemas();
    let operations = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .iter()
                .map(move |(method, op)| (format!("{method} {path}"), op))
        });
    let mut operation_ids = std::collections::HashSet::new();
    for (name, operation) in operations {
        assert!(
            operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: summary"
        );
        assert_eq!(
            operation["tags"].as_array().map(Vec::len),
            Some(1),
            "{name}: one tag"
        );
        let id = operation["operationId"].as_str().expect("operationId");
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric())
                && id.starts_with(|c: char| c.is_ascii_lowercase()),
            "{name}: {id}"
        );
        assert!(
            operation_ids.insert(id.to_owned()),
            "{name}: {id} is unique"
        );
        for (status, response) in operation["responses"].as_object().expect("responses") {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{name} {status}"
                );
            }
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            assert!(
                parameter["in"] != "path" || !parameter["example"].is_null(),
                "{name}: example of {}",
                parameter["name"]
            );
        }
        if let Some(schema) = operation
            .pointer("/requestBody/content/application~1json/schema/$ref")
            .and_then(|r| r.as_str())
        {
            let schema = &schemas[schema.trim_start_matches("#/components/schemas/")];
            assert!(schema["example"].is_object(), "{name}: request example");
            assert!(
                schema["example"]
                    .as_object()
                    .expect("object")
                    .values()
                    .all(|v| !v.is_null()),
                "{name}: absent fields are left out of the example, not null"
            );
        }
    }
    assert_eq!(operation_ids.len(), 44);
}

#[test]
fn field_patterns_in_the_document_are_the_ones_the_server_checks() {
    use tolstoy::api::rules::{EMAIL_PATTERN, HTTP_URL_PATTERN};
    let schemas = schemas();
    for (schema, field, pattern) in [
        ("UserIn", "email", EMAIL_PATTERN),
        ("UserUpdate", "email", EMAIL_PATTERN),
        ("ToolIn", "baseUrl", HTTP_URL_PATTERN),
        ("ToolUpdate", "baseUrl", HTTP_URL_PATTERN),
    ] {
        assert_eq!(
            schemas[schema]["properties"][field]["pattern"], pattern,
            "{schema}.{field}"
        );
    }
    for schema in ["ActionIn", "ActionUpdate"] {
        assert_eq!(schemas[schema]["properties"]["endpoint"]["pattern"], "^/");
        assert!(schemas[schema]["properties"]["method"]["pattern"]
            .as_str()
            .is_some_and(|p| p.contains("[Dd][Ee][Ll][Ee][Tt][Ee]")));
    }
    use tolstoy::api::body::text_pattern;
    for (schema, field, min) in [
        ("OrganizationIn", "name", 1),
        ("ToolUpdate", "name", 1),
        ("ExecutionLogIn", "stepId", 1),
        ("ExecutionLogUpdate", "executionId", 0),
        ("UserIn", "name", 0),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert_eq!(
            property["pattern"],
            text_pattern(min, 200),
            "{schema}.{field}"
        );
        assert!(
            property.get("maxLength").is_none(),
            "{schema}.{field}: counted after trimming, in the pattern"
        );
    }
    // The document's text rule is the server's: trim, then count, and no U+0000.
    let name = regex::Regex::new(&text_pattern(1, 200)).expect("pattern");
    for c in (1..=0x3000u32).filter_map(char::from_u32) {
        assert_eq!(
            name.is_match(&c.to_string()),
            !c.is_whitespace(),
            "U+{:04X}",
            c as u32
        );
    }
    let long = "é".repeat(200);
    assert!(
        name.is_match(&format!(" \u{a0}{long}\n")),
        "200 characters once trimmed"
    );
    assert!(!name.is_match(&format!("{long}x")), "201 characters");
    assert!(!name.is_match("a\u{0}b"), "U+0000");
    let optional = regex::Regex::new(&text_pattern(0, 200)).expect("pattern");
    assert!(
        optional.is_match("") && optional.is_match("  "),
        "empty once trimmed is allowed"
    );
}

#[test]
fn json_fields_are_declared_with_the_shape_the_server_takes() {
    let schemas = schemas();
    for (schema, field) in [
        ("ActionIn", "schema"),
        ("ActionUpdate", "schema"),
        ("ExecutionLogIn", "inputs"),
        ("ExecutionLogUpdate", "inputs"),
    ] {
        assert_eq!(
            schemas[schema]["properties"][field]["type"], "object",
            "{schema}.{field}"
        );
    }
    assert_eq!(required(&schemas["StepIn"]), ["id", "type"]);
    assert_eq!(
        schemas["FlowIn"]["properties"]["steps"]["items"]["$ref"],
        "#/components/schemas/StepIn"
    );
    let condition = &schemas["Condition"];
    assert!(
        condition.get("type").is_none(),
        "a string must pass too: {condition}"
    );
    let variants: Vec<_> = condition["anyOf"]
        .as_array()
        .expect("anyOf")
        .iter()
        .map(|v| v["type"].clone())
        .collect();
    assert_eq!(variants, ["string", "object"]);
}

#[test]
fn each_create_links_to_get_update_and_delete_of_the_new_row() {
    let document = committed_document();
    for (collection, resource) in [
        ("/organizations", "Organization"),
        ("/users", "User"),
        ("/tools", "Tool"),
        ("/actions", "Action"),
        ("/flows", "Flow"),
        ("/execution-logs", "ExecutionLog"),
    ] {
        let links = &document["paths"][collection]["post"]["responses"]["201"]["links"];
        for operation in [
            format!("get{resource}"),
            format!("update{resource}"),
            format!("delete{resource}"),
        ] {
            assert_eq!(
                links[&operation]["operationId"],
                operation.as_str(),
                "{collection}"
            );
            assert_eq!(
                links[&operation]["parameters"]["id"], "$response.body#/id",
                "{collection}"
            );
        }
    }
}

#[test]
fn every_optional_response_field_is_nullable_because_the_server_sends_null() {
    let schemas = schemas();
    for name in RESOURCES {
        let schema = &schemas[name];
        let required = required(schema);
        for (field, property) in schema["properties"].as_object().expect("properties") {
            if !required.contains(field) {
                assert_eq!(
                    property["nullable"], true,
                    "{name}.{field} is sent as null when unset"
                );
            }
        }
    }
}

#[test]
fn request_bodies_refuse_unknown_fields_in_the_document_as_the_server_does() {
    let schemas = schemas();
    for resource in RESOURCES {
        for name in [format!("{resource}In"), format!("{resource}Update")] {
            assert_eq!(schemas[&name]["additionalProperties"], false, "{name}");
        }
    }
}

#[test]
fn a_problem_lists_errors_only_when_there_are_some() {
    assert_eq!(
        required(&schemas()["Problem"]),
        ["type", "title", "status", "detail", "requestId"]
    );
}

#[test]
fn the_cursor_parameter_says_what_a_cursor_looks_like() {
    let document = committed_document();
    for path in [
        "/organizations",
        "/users",
        "/tools",
        "/actions",
        "/flows",
        "/execution-logs",
    ] {
        let cursor = document["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "cursor")
            .cloned()
            .expect("cursor");
        assert_eq!(cursor["schema"]["pattern"], "^[0-9a-f]{32}$", "{path}");
    }
}

on_both_backends! {
    async fn an_empty_or_foreign_cursor_is_a_400_naming_cursor_and_a_404_has_no_errors_list(app) {
        for cursor in ["", "01a1fd98-4cfe-7138-9225-91062752751f", "zz"] {
            let reply = app.get(&format!("/organizations?cursor={cursor}")).await;
            assert_eq!(reply.assert_problem(400), ["cursor"], "{cursor:?}");
        }
        let missing = app.get("/organizations/01a1fd984cfe71389225910627527510").await;
        missing.assert_problem(404);
        assert!(missing.body.get("errors").is_none(), "{}", missing.text);
    }
}
