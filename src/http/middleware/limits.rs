//! Rate-limit middleware: the per-IP limit before authentication and the
//! per-principal limit after it (429 with `Retry-After`); both append their
//! `RateLimit` items to every answer they let through.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::Principal;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::limits::client_ip;

pub async fn ip_limit(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .ok_or_else(|| ApiError::Internal("connection info missing".into()))?;
    let ip = client_ip::resolve(peer, req.headers(), &app.config.main.server.trusted_proxies);
    let state = app.limiters.check_ip(ip)?;
    tracing::Span::current().record("client_ip", tracing::field::display(ip));
    let mut response = next.run(req).await;
    state.append_to(response.headers_mut());
    Ok(response)
}

pub async fn principal_limit(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = req
        .extensions()
        .get::<Arc<Principal>>()
        .ok_or_else(|| ApiError::Internal("principal missing after authentication".into()))?;
    let state = app.limiters.check_principal(principal)?;
    let mut response = next.run(req).await;
    state.append_to(response.headers_mut());
    Ok(response)
}
