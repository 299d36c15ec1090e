//! Console sessions: the cookie, the stored session it names, expiry, and
//! the CSRF token of every state-changing form.
//!
//! Policy: the cookie holds a 32-byte random token; the store holds only
//! its SHA-256 (`console_sessions`), so sessions work across instances and
//! a database copy opens none. A session ends `console.idle_timeout` after
//! its last use or `console.absolute_timeout` after its login, whichever
//! comes first (deleted when met; housekeeping purges the rest), and as
//! soon as its key is disabled or removed: from the key file, or in the
//! database (a stored key, as of this instance's last `auth::db_keys`
//! refresh). The key's
//! `allowed_ips` hold on every request (403 `ip-not-allowed`).
//! `last_seen_at` is written at most once a minute, not on every page.
//! Without a live session a page request is a 303 to the login page and
//! an XHR (`Accept: application/json`, `X-Requested-With`, `HX-Request`)
//! a 401 problem. (CSRF: `csrf.rs`.)

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::HX_REQUEST;
use crate::auth::{Principal, Scope, Scopes};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::ConsoleSession;

/// The session cookie. `__Host-`: the browser keeps it only when it was set
/// `Secure`, with `Path=/` and no `Domain`, so no sibling host can set or
/// shadow it.
pub const SESSION_COOKIE: &str = "__Host-callgate_console";

/// `last_seen_at` is written at most this often (ms).
const TOUCH_EVERY_MS: i64 = 60_000;

/// A live session: who acts, with which scopes, and the CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: String,
    /// The key's principal as the API handlers see it.
    pub principal: Arc<Principal>,
    pub csrf: String,
}

impl Session {
    pub fn may(&self, scope: &Scope) -> bool {
        self.principal.scopes.has(scope)
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(no_session(&parts.headers));
        };
        let id_hash = hash_token(&token);
        let stored = match app.store.console_session(&id_hash).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(no_session(&parts.headers)),
            Err(e) => return Err(ApiError::from(e).into_response()),
        };
        let now = app.clock.now_ms();
        let cfg = &app.config.main.console;
        let idle = now - stored.last_seen_at_ms >= cfg.idle_timeout.as_millis() as i64;
        let old = now - stored.created_at_ms >= cfg.absolute_timeout.as_millis() as i64;
        // A key disabled or removed since the login ends its sessions.
        let key = app
            .keys
            .load()
            .principal(&stored.principal)
            .or_else(|| app.db_keys.principal(&stored.principal));
        let Some(key) = key.filter(|_| !idle && !old) else {
            // Best effort: housekeeping purges it otherwise.
            let _ = app.store.delete_console_session(&id_hash).await;
            return Err(no_session(&parts.headers));
        };
        // The key's allowlist holds for every request, not only the login.
        if let Some(list) = &key.allowed_ips {
            let ip = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| crate::http::middleware::client_ip(app, c.0, &parts.headers));
            if let Some(ip) = ip.filter(|ip| !list.allows(*ip)) {
                let refused = ApiError::IpNotAllowed {
                    ip,
                    what: "use this API key",
                };
                return Err(refused.into_response());
            }
        }
        if now - stored.last_seen_at_ms >= TOUCH_EVERY_MS
            && let Err(e) = app.store.touch_console_session(&id_hash, now).await
        {
            tracing::warn!(error = %e, "console session: last_seen_at not updated");
        }
        Ok(session_of(stored))
    }
}

/// The session a stored row describes.
fn session_of(s: ConsoleSession) -> Session {
    Session {
        principal: Arc::new(Principal {
            id: Arc::from(s.principal.as_str()),
            scopes: Scopes::parse_lenient(s.scopes.iter().map(String::as_str)),
            rate_limit: None,
            allowed_ips: None,
        }),
        id_hash: s.id_hash,
        csrf: s.csrf_token,
    }
}

/// What a request without a live session gets.
fn no_session(headers: &HeaderMap) -> Response {
    if is_xhr(headers) {
        return ApiError::unauthorized(
            "no console session (it ended or never began): log in at /console/login",
            false,
        )
        .into_response();
    }
    Redirect::to("/console/login").into_response()
}

/// Whether a script, not a person, sent the request.
fn is_xhr(headers: &HeaderMap) -> bool {
    let wants_json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json") || v.contains("application/problem+json"));
    wants_json || headers.contains_key("x-requested-with") || headers.contains_key(HX_REQUEST)
}

/// A fresh 32-byte random token, hex.
pub fn new_token() -> String {
    let mut buf = [0u8; 32];
    crate::crypto::random_bytes(&mut buf);
    hex::encode(buf)
}

/// The stored form of a session token.
pub fn hash_token(token: &str) -> String {
    hex::encode(crate::crypto::sha256(token.as_bytes()))
}

/// The value of cookie `name` (the first, across every `Cookie` header).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value for a host-only, script-invisible, same-site
/// cookie; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64) -> String {
    format!("{name}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_secs}")
}
