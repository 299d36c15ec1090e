//! The `/v1` guard for routes with credentials, in order: per-IP limit
//! (before any credential work), the trigger's IP allowlist (`POST
//! /v1/triggers/{id}` of a trigger with `allowed_ips`), authentication,
//! the API key's IP allowlist, per-principal limit. One middleware
//! function rather than a layer per check: every layer is cloned and boxed
//! per request on the hot path. (Signed provider callbacks have no guard:
//! their handler verifies the signature, then applies the provider's
//! limit; see `http/calls.rs`.)
//!
//! Policy: 429 with `Retry-After` when a limit is exhausted, 403
//! `ip-not-allowed` when the client address (`client_ip`: the peer, or
//! what a trusted proxy forwarded) is outside an allowlist, 401 when
//! credentials are missing or invalid (see `auth.rs`); every answer that
//! passed a limit carries that limit's `RateLimit` item, errors included.
//! The trigger's allowlist is judged before authentication, so that it
//! holds for every way of running the trigger and a sender outside it
//! cannot even try credentials; a key's allowlist right after the key is
//! known, before it is charged its limit. Both come before the body is
//! read. A request without credentials to a trigger that takes signatures
//! passes the per-IP limit and the trigger's allowlist only: its handler
//! verifies the signature over the body (see `auth.rs`).
//! A refused request's body (at most `server.max_body_bytes`) is
//! read and dropped before the answer, for a short while at most, so that
//! the connection stays usable for the client's next request; when it
//! cannot be, the answer says `Connection: close` (see `serve.rs`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::ids::TriggerId;
use crate::limits::client_ip;

/// How long a refused request's remaining body is waited for.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let ip = match request_ip(&app, &req) {
        Ok(ip) => ip,
        Err(e) => return refuse(&app, req, e).await,
    };
    let ip_state = match app.limiters.check_ip(ip).await {
        Ok(state) => state,
        Err(e) => return refuse(&app, req, e.into()).await,
    };
    let (req, trigger_allows) = trigger_allows(&app, req, ip).await;
    let mut response = if trigger_allows {
        authenticated(&app, req, next, ip).await
    } else {
        let refused = ApiError::IpNotAllowed {
            ip,
            what: "run this trigger",
        };
        refuse(&app, req, refused).await
    };
    ip_state.append_to(response.headers_mut());
    response
}

/// The accept route, whose trigger may restrict where it is run from.
const ACCEPT_ROUTE: &str = "/v1/triggers/{trigger_id}";

/// Whether `ip` may run the trigger this request runs (true for other
/// routes, unknown triggers and triggers without `allowed_ips`). The id is
/// read by the router's own extractor, percent-decoding included, so that
/// it is the trigger the handler will run.
async fn trigger_allows(app: &AppState, req: Request, ip: IpAddr) -> (Request, bool) {
    let on_accept = req.method() == Method::POST
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|m| m.as_str() == ACCEPT_ROUTE);
    if !on_accept {
        return (req, true);
    }
    // An id that does not decode (not UTF-8) is not judged here: the
    // handler's own path extractor refuses it the same way (400).
    let (mut parts, body) = req.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, app)
        .await
        .ok();
    let req = Request::from_parts(parts, body);
    let trigger = params
        .as_ref()
        .and_then(|p| p.iter().find(|(k, _)| *k == "trigger_id").map(|(_, v)| v))
        .and_then(|id| TriggerId::parse(id).ok())
        .and_then(|id| app.config.triggers.get(&id));
    let allowed = match trigger.and_then(|t| t.allowed_ips.as_ref()) {
        Some(list) => list.allows(ip),
        None => true,
    };
    (req, allowed)
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

async fn authenticated(app: &AppState, mut req: Request, next: Next, ip: IpAddr) -> Response {
    if auth::signed_trigger(app, &req) {
        // The handler verifies the signature over the body, then applies
        // the per-principal limit to the sender.
        return next.run(req).await;
    }
    let principal = match auth::identify(app, req.headers()).await {
        Ok(p) => p,
        Err(e) => return refuse(app, req, e).await,
    };
    tracing::Span::current().record("principal", &*principal.id);
    if let Some(list) = &principal.allowed_ips
        && !list.allows(ip)
    {
        let refused = ApiError::IpNotAllowed {
            ip,
            what: "use this API key",
        };
        return refuse(app, req, refused).await;
    }
    let state = match app.limiters.check_principal(&principal).await {
        Ok(state) => state,
        Err(e) => return refuse(app, req, e.into()).await,
    };
    req.extensions_mut().insert::<Arc<_>>(principal);
    let mut response = next.run(req).await;
    state.append_to(response.headers_mut());
    response
}
