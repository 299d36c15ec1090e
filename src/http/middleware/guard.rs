//! The `/v1` guard for routes with credentials, in order: per-IP limit
//! (before any credential work), authentication, per-principal limit. One
//! middleware function rather than a layer per check: every layer is cloned
//! and boxed per request on the hot path. (Signed provider callbacks have no
//! guard: their handler verifies the signature, then applies the provider's
//! limit; see `http/calls.rs`.)
//!
//! Policy: 429 with `Retry-After` when a limit is exhausted, 401 when
//! credentials are missing or invalid (see `auth.rs`); every answer that
//! passed a limit carries that limit's `RateLimit` item, errors included.
//! A refused request's body (at most `server.max_body_bytes`) is read and
//! dropped before the answer, for a short while at most, so that the
//! connection stays usable for the client's next request; when it cannot
//! be, the answer says `Connection: close` (see `serve.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::limits::client_ip;

/// How long a refused request's remaining body is waited for.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let checked = match request_ip(&app, &req) {
        Ok(ip) => app.limiters.check_ip(ip).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let ip_state = match checked {
        Ok(state) => state,
        Err(e) => return refuse(&app, req, e).await,
    };
    let mut response = authenticated(&app, req, next).await;
    ip_state.append_to(response.headers_mut());
    response
}

/// Answers `e` after reading what is left of the request's body (bounded
/// in size and time), so that the connection can carry the next request.
async fn refuse(app: &AppState, req: Request, e: ApiError) -> Response {
    use http_body_util::BodyExt;
    let limit = app.config.main.server.max_body_bytes;
    let body = http_body_util::Limited::new(req.into_body(), limit);
    // Whatever happens (too large, too slow, broken), the answer is the same;
    // an unread rest makes the connection close with `Connection: close`.
    let _ = tokio::time::timeout(DRAIN_TIME, body.collect()).await;
    e.into_response()
}

/// The client's address (the request is not held across the limit's
/// check: a body is not `Sync`).
fn request_ip(app: &AppState, req: &Request) -> Result<std::net::IpAddr, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .ok_or_else(|| ApiError::Internal("connection info missing".into()))?;
    Ok(client_ip(app, peer, req.headers()))
}

/// The client's address (trusted-proxy aware), recorded on the request's
/// span.
pub fn client_ip(
    app: &AppState,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
) -> std::net::IpAddr {
    let ip = client_ip::resolve(peer.ip(), headers, &app.config.main.server.trusted_proxies);
    tracing::Span::current().record("client_ip", tracing::field::display(ip));
    ip
}

async fn authenticated(app: &AppState, mut req: Request, next: Next) -> Response {
    let principal = match auth::identify(app, req.headers()).await {
        Ok(p) => p,
        Err(e) => return refuse(app, req, e).await,
    };
    tracing::Span::current().record("principal", &*principal.id);
    let state = match app.limiters.check_principal(&principal).await {
        Ok(state) => state,
        Err(e) => return refuse(app, req, e.into()).await,
    };
    req.extensions_mut().insert::<Arc<_>>(principal);
    let mut response = next.run(req).await;
    state.append_to(response.headers_mut());
    response
}
