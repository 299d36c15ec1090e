//! The console's static assets, embedded in the binary (the gateway may run
//! air-gapped: no CDN) and served under a content-hashed name, so they are
//! cached for a year and a new build's pages name new files.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("assets/console.css");

/// `console.<first 16 hex digits of the CSS's SHA-256>.css`.
static CSS_NAME: LazyLock<String> = LazyLock::new(|| {
    let hash = hex::encode(crate::crypto::sha256(CSS.as_bytes()));
    format!("console.{}.css", &hash[..16])
});

/// The stylesheet's URL, for the pages' `<link>`.
pub fn css_path() -> String {
    format!("/console/assets/{}", *CSS_NAME)
}

/// `GET /console/assets/{file}`: a hashed name that matches this build's
/// asset, else 404 (an old name is not served stale content).
pub async fn asset(Path(file): Path<String>) -> Response {
    if file != *CSS_NAME {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}
