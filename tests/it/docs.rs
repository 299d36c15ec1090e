//! `GET /docs` over HTTPS: public, every operation of openapi.yaml on the
//! page, the spec's text escaped, no script, and the same strict headers
//! (CSP, framing, sniffing) on every answer.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::TestApp;

fn operation_ids() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if let Some(id) = op["operationId"].as_str() {
                ids.insert(id.to_owned());
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_shows_every_operation_without_credentials_or_script() {
    let app = TestApp::start().await;
    for _ in 0..2 {
        // The first answer renders the page; the second serves it again.
        let r = app.client.get(app.url("/docs")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let page = r.text().await.unwrap();
        let ids = operation_ids();
        assert!(ids.len() >= 20, "{ids:?}");
        for id in &ids {
            assert!(
                page.contains(&format!("<article id=\"{id}\">")),
                "{id} is not on the page"
            );
        }
        assert!(!page.to_lowercase().contains("<script"), "no script");
        // Text from the spec is escaped, not markup.
        assert!(page.contains("Bearer &lt;token&gt;"), "escaped");
        assert!(!page.contains("Bearer <token>"));
        // Scopes and grouping.
        assert!(page.contains("id=\"tag-keys\""));
        assert!(page.contains("Scopes: <code>keys:write</code>"));
    }
}
