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
