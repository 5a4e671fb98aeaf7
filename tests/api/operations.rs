//! `/health`, `/ready` and `/docs`.

use serde_json::json;

use crate::on_both_backends;

on_both_backends! {
    async fn health_and_ready_answer_200_without_headers(app) {
        let health = app.get("/health").await;
        assert_eq!(health.status, 200);
        assert_eq!(health.body, json!({ "status": "ok" }));
        let ready = app.get("/ready").await;
        assert_eq!(ready.status, 200);
        assert_eq!(ready.body, json!({ "status": "ready" }));
    }

    async fn docs_serve_swagger_ui_with_no_outside_assets(app) {
        let docs = app.get("/docs").await;
        assert_eq!(docs.status, 200);
        assert!(docs.header("content-type").unwrap_or_default().starts_with("text/html"));
        assert!(docs.text.contains("SwaggerUIBundle"), "Swagger UI is inlined");
        for outside in ["<script src=\"http", "<link href=\"http", "cdn."] {
            assert!(!docs.text.contains(outside), "Swagger UI must not load {outside}");
        }
        let served = app.get("/openapi.json").await;
        assert!(docs.text.contains(&served.text), "Swagger UI shows the document that is served");
        let security = &served.body["paths"]["/tools"]["get"]["security"];
        assert_eq!(security, &json!([{ "ApiKey": [] }, { "OrgId": [], "UserId": [] }]), "a key, or one requirement with both headers");
        assert_eq!(served.body["components"]["securitySchemes"]["ApiKey"]["scheme"], "bearer");
        assert_eq!(served.body["components"]["securitySchemes"]["OrgId"]["name"], "X-Org-ID");
        assert_eq!(served.body["components"]["securitySchemes"]["UserId"]["name"], "X-User-ID");
    }
}
