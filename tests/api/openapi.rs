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
