//! The `/v1` guard, in order: per-IP limit (before any credential work),
//! authentication, per-principal limit. One middleware function for the
//! same reason as `front_door`.
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
use crate::limits::client_ip;

pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return ApiError::Internal("connection info missing".into()).into_response();
    };
    let ip = client_ip::resolve(peer, req.headers(), &app.config.main.server.trusted_proxies);
    tracing::Span::current().record("client_ip", tracing::field::display(ip));
    let ip_state = match app.limiters.check_ip(ip) {
        Ok(state) => state,
        Err(e) => return e.into_response(),
    };
    let mut response = authenticated(&app, req, next).await;
    ip_state.append_to(response.headers_mut());
    response
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
