//! The middleware stack, in the order a request meets it (outermost first):
//!
//! 1. sensitive headers: `Authorization`, `X-Api-Key` and `Cookie` are marked
//!    so no layer can log them;
//! 2. front door (`front_door.rs`): request id → access log span → declared
//!    body size (413) → timeout (503);
//! 3. panic catcher: a panic becomes a 500 problem and the server serves on;
//!
//! and for the `/v1` routes with credentials, after routing, the guard
//! (`guard.rs`):
//!
//! 4. per-IP limit (429) → the trigger's IP allowlist on `POST
//!    /v1/triggers/{id}` (403) → authentication (401) → the API key's IP
//!    allowlist (403) → per-principal limit (429).
//!
//! Scope checks (403), the per-trigger limit and everything about the body
//! happen in the handlers, where the resource is known. Provider callbacks
//! carry no credentials and get no guard: the handler verifies the
//! signature, then applies the provider's limit.

mod auth;
mod front_door;
mod guard;
mod request_id;

use axum::Router;
use axum::http::HeaderName;
use axum::http::header;
use axum::middleware::from_fn_with_state;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

pub(crate) use auth::verify_key;
pub use guard::client_ip;
pub use request_id::RequestIdValue;

use super::AppState;

/// Wraps the routed app in the global layers (1–3).
pub fn stack(app: Router, state: &AppState) -> Router {
    app.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
                header::COOKIE,
            ]))
            .layer(from_fn_with_state(state.clone(), front_door::front_door))
            .layer(CatchPanicLayer::custom(front_door::panic_response)),
    )
}

/// Adds the guard (4) to the routes that need credentials.
pub fn authenticated(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.route_layer(from_fn_with_state(state.clone(), guard::guard))
}
