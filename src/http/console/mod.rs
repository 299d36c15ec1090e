//! The operator console at `/console` (nested into the one router): server-rendered HTML pages over the
//! same cores as the API (each page calls the API handler with the
//! session's principal and renders its answer, so scopes, validation and
//! every write behave exactly as over `/v1`).
//!
//! Policy: every page needs a session (`session.rs`): without one a page
//! request is a 303 to `/console/login`, an XHR a 401 problem. Every POST
//! carries the session's CSRF token (403 without it). Every answer carries
//! a strict Content-Security-Policy (no inline script or style), `X-Frame-
//! Options: DENY`, `nosniff` and `no-referrer`; pages are `no-store`, the
//! embedded assets are cached for a year under a content-hashed name.
//! Templates autoescape everything; no secret (key hashes, endpoint or
//! signing secrets) is ever put into a page's context.
//!
//! One module per page (`jobs.rs`, `calls.rs`, …); the navigation is the
//! `NAV` list, so a page added later is one module and one entry.

// A page's refusal is the response to send (a redirect, an error page): it
// is built once per request and answered at once, so boxing it would buy
// nothing and cost a `Box` at every `?`.
#![allow(
    clippy::result_large_err,
    reason = "the error is the page answered at once"
)]

mod assets;
mod calls;
mod chart;
mod csrf;
mod deliveries;
mod dnc;
mod endpoints;
mod jobs;
mod keys;
mod login;
mod overview;
mod render;
mod session;
mod triggers;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::auth::Scope;
use crate::http::AppState;

/// One entry of the navigation: shown when the session holds `needs`
/// (`None`: always).
pub struct NavEntry {
    pub path: &'static str,
    pub label: &'static str,
    pub needs: Option<Scope>,
}

/// The console's pages, in navigation order.
pub const NAV: &[NavEntry] = &[
    NavEntry {
        path: "/console",
        label: "Overview",
        needs: None,
    },
    NavEntry {
        path: "/console/jobs",
        label: "Jobs",
        needs: None,
    },
    NavEntry {
        path: "/console/calls",
        label: "Calls",
        needs: Some(Scope::JobsRead),
    },
    NavEntry {
        path: "/console/deliveries",
        label: "Deliveries",
        needs: Some(Scope::DeliveriesRead),
    },
    NavEntry {
        path: "/console/endpoints",
        label: "Endpoints",
        needs: Some(Scope::DeliveriesRead),
    },
    NavEntry {
        path: "/console/triggers",
        label: "Triggers",
        needs: None,
    },
    NavEntry {
        path: "/console/do-not-call",
        label: "Do-not-call",
        needs: Some(Scope::DncRead),
    },
    NavEntry {
        path: "/console/keys",
        label: "API keys",
        needs: Some(Scope::KeysRead),
    },
];

/// The console's routes, to nest at `/console` (empty when
/// `console.enabled` is off, so every console path is the usual 404).
pub fn router(state: &AppState) -> Router<AppState> {
    if !state.config.main.console.enabled {
        return Router::new();
    }
    Router::new()
        .route("/", get(overview::overview))
        .route("/login", get(login::login_page).post(login::log_in))
        .route("/logout", post(login::log_out))
        .route("/assets/{file}", get(assets::asset))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{job_id}", get(jobs::detail))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/jobs/{job_id}/retry", post(jobs::retry))
        .route("/calls", get(calls::list))
        .route("/calls/{call_id}", get(calls::detail))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{delivery_id}", get(deliveries::detail))
        .route("/deliveries/{delivery_id}/replay", post(deliveries::replay))
        .route("/endpoints", get(endpoints::list))
        .route("/endpoints/{name}", get(endpoints::detail))
        .route("/triggers", get(triggers::list))
        .route("/triggers/{trigger_id}", get(triggers::detail))
        .route("/triggers/{trigger_id}/test", post(triggers::test))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{name}/disable", post(keys::disable))
        .route("/do-not-call", get(dnc::list).post(dnc::add))
        .route("/do-not-call/remove", post(dnc::remove))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The policy every console answer carries: scripts, styles and images
/// from this origin only, never inline; forms post only here; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every console answer (errors and redirects
/// included); `no-store` unless the handler set its own caching (assets).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A 303 to `to` (after a POST, so that a reload does not post again).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// `HX-Request` (htmx) marks an XHR, as `X-Requested-With` does.
const HX_REQUEST: HeaderName = HeaderName::from_static("hx-request");
