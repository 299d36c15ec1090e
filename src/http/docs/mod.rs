//! `GET /docs`: the API reference, rendered on the server from the
//! `openapi.yaml` built into the binary (`include_str!`), so the page is
//! the contract the router is tested against, and works air-gapped.
//!
//! Policy: public (no credentials, like `/healthz`), no script at all. The
//! page is rendered once, at the first request, with minijinja (HTML
//! auto-escaping: every text from the spec is escaped), and served with a
//! Content-Security-Policy that allows nothing but its one stylesheet (by
//! hash), no framing (`frame-ancestors 'none'`, `X-Frame-Options: DENY`)
//! and no sniffing. Operations are grouped by tag, each with its
//! parameters, request body, responses and the scopes its description
//! names. A spec that does not parse is a 500 (a test renders it).

mod model;

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::http::error::ApiError;

/// The contract, as built into the binary.
pub const SPEC: &str = include_str!("../../../openapi.yaml");
const TEMPLATE: &str = include_str!("page.html");
const CSS: &str = include_str!("page.css");

/// The rendered page and its policy.
struct Page {
    html: Bytes,
    csp: HeaderValue,
}

// A lazily computed constant (the spec and the template are in the
// binary), not state: the same bytes on every request.
static PAGE: OnceLock<Result<Page, String>> = OnceLock::new();

pub async fn docs() -> Response {
    match PAGE.get_or_init(render) {
        Ok(page) => {
            let mut response = page.html.clone().into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(header::CONTENT_SECURITY_POLICY, page.csp.clone());
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            response
        }
        Err(e) => ApiError::Internal(format!("rendering /docs: {e}")).into_response(),
    }
}

fn render() -> Result<Page, String> {
    let doc: serde_json::Value =
        serde_norway::from_str(SPEC).map_err(|e| format!("openapi.yaml: {e}"))?;
    let mut view = model::view(&doc)?;
    view["css"] = serde_json::Value::String(CSS.to_owned());
    let mut env = minijinja::Environment::new();
    // Named `.html`: minijinja escapes every value for HTML.
    env.add_template("docs.html", TEMPLATE)
        .map_err(|e| e.to_string())?;
    let html = env
        .get_template("docs.html")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&view))))
        .map_err(|e| e.to_string())?;
    let hash =
        base64::engine::general_purpose::STANDARD.encode(crate::crypto::sha256(CSS.as_bytes()));
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    );
    Ok(Page {
        html: Bytes::from(html),
        csp: HeaderValue::from_str(&csp).map_err(|e| e.to_string())?,
    })
}
