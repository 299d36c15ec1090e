//! The `/v1` guards. For routes with credentials, in order: per-IP limit
//! (before any credential work), authentication, per-principal limit. For
//! signed provider callbacks: the per-IP limit alone (the handler verifies
//! the signature). One middleware function each rather than a layer per
//! check: every layer is cloned and boxed per request on the hot path.
//!
//! Policy: 429 with `Retry-After` when a limit is exhausted, 401 when
//! credentials are missing or invalid (see `auth.rs`); every answer that
//! passed a limit carries that limit's `RateLimit` item, errors included.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::limits::{PolicyState, client_ip};

pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let ip_state = match check_ip(&app, &req) {
        Ok(state) => state,
        Err(e) => return e.into_response(),
    };
    let mut response = authenticated(&app, req, next).await;
    ip_state.append_to(response.headers_mut());
    response
}

/// The per-IP limit alone (signed provider callbacks).
pub async fn ip_only(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let ip_state = match check_ip(&app, &req) {
        Ok(state) => state,
        Err(e) => return e.into_response(),
    };
    let mut response = next.run(req).await;
    ip_state.append_to(response.headers_mut());
    response
}

fn check_ip(app: &AppState, req: &Request) -> Result<PolicyState, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .ok_or_else(|| ApiError::Internal("connection info missing".into()))?;
    let ip = client_ip::resolve(peer, req.headers(), &app.config.main.server.trusted_proxies);
    tracing::Span::current().record("client_ip", tracing::field::display(ip));
    app.limiters.check_ip(ip)
}

async fn authenticated(app: &AppState, mut req: Request, next: Next) -> Response {
    let principal = match auth::identify(app, req.headers()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    tracing::Span::current().record("principal", &*principal.id);
    let state = match app.limiters.check_principal(&principal) {
        Ok(state) => state,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert::<Arc<_>>(principal);
    let mut response = next.run(req).await;
    state.append_to(response.headers_mut());
    response
}
