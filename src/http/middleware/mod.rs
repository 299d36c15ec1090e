//! The middleware stack, in the order a request meets it (outermost first):
//!
//! 1. sensitive headers: `Authorization`, `X-Api-Key` and `Cookie` are marked
//!    so no layer can log them;
//! 2. request id: `x-request-id` kept when it is a sane token, else minted;
//!    echoed on every response;
//! 3. trace span + access log (the span carries the request id; 5xx causes
//!    are logged here, never sent);
//! 4. panic catcher: a panic becomes a 500 problem and the server serves on;
//! 5. timeout: the whole request, body included → 503;
//! 6. body size: a declared `Content-Length` over the limit → 413 before any
//!    work (the handler enforces the same limit while streaming);
//!
//! and for the `/v1` routes, after routing:
//!
//! 7. pre-auth limit per client IP → 429;
//! 8. authentication → 401;
//! 9. limit per principal → 429.
//!
//! Scope checks (403), the per-trigger limit and everything about the body
//! happen in the handlers, where the resource is known.

mod auth;
mod guards;
mod limits;
mod request_id;

use axum::Router;
use axum::http::HeaderName;
use axum::http::header;
use axum::middleware::{from_fn, from_fn_with_state};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

pub use request_id::RequestIdValue;

use super::AppState;

/// Wraps the routed app in the global layers (1–6).
pub fn stack(app: Router, state: &AppState) -> Router {
    app.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
                header::COOKIE,
            ]))
            .layer(from_fn(request_id::request_id))
            .layer(from_fn(guards::access_log))
            .layer(CatchPanicLayer::custom(guards::panic_response))
            .layer(from_fn_with_state(state.clone(), guards::timeout))
            .layer(from_fn_with_state(
                state.clone(),
                guards::declared_body_limit,
            )),
    )
}

/// Adds layers 7–9 to the routes that need credentials.
pub fn authenticated(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    // `route_layer`: the last one added runs first.
    routes
        .route_layer(from_fn_with_state(state.clone(), limits::principal_limit))
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate))
        .route_layer(from_fn_with_state(state.clone(), limits::ip_limit))
}
