//! `GET`/`POST /console/login` and `POST /console/logout`.
//!
//! Policy: logging in takes an API key (`keys.toml` or stored in the
//! database, checked exactly as the API checks it) holding `console`. Each attempt is charged to the client's
//! per-IP limit first, as every credential the API checks is (the login
//! page with 429 and `Retry-After` when it is spent). A wrong key, or one without `console`, is the login page
//! again with 401; a key used from outside its `allowed_ips` is 403.
//! Login CSRF: the form carries a token that must equal the pre-session
//! cookie `__Host-callgate_login` the login page set (double submit), else
//! 403, so another site cannot log a browser in to the attacker's session.
//! On success the session's cookie is set and the login cookie cleared.
//! Logout (POST, with the session's CSRF token) deletes the session.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::csrf::Form;
use super::render::{error_page, page_status};
use super::session::{self, SESSION_COOKIE, Session};
use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::store::ConsoleSession;

/// The pre-session cookie of the login form (double-submit CSRF token).
const LOGIN_COOKIE: &str = "__Host-callgate_login";
/// How long a login form stays usable.
const LOGIN_FORM_SECS: u64 = 3600;

/// The login form, with a fresh login-CSRF token in a cookie and the form.
fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    let token = session::new_token();
    let mut response = page_status(
        None,
        status,
        "login.html",
        json!({"title": "Log in", "login_csrf": token, "error": error}),
    );
    if let Ok(v) = session::set_cookie(LOGIN_COOKIE, &token, LOGIN_FORM_SECS).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

pub async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

pub async fn log_in(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ip = crate::http::middleware::client_ip(&app, peer, &headers);
    if let Err(limited) = app.limiters.check_ip(ip).await {
        // The login page again, with the limit's `Retry-After`.
        let limit = crate::http::error::ApiError::from(limited).into_response();
        let msg = "Too many attempts from your address. Wait a moment and try again.";
        let mut page = login_form(StatusCode::TOO_MANY_REQUESTS, Some(msg));
        if let Some(wait) = limit.headers().get(header::RETRY_AFTER) {
            page.headers_mut().insert(header::RETRY_AFTER, wait.clone());
        }
        return page;
    }
    let form = match Form::read(&app, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let cookie = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let given = form.get("login_csrf").unwrap_or_default();
    if cookie.is_empty() || !bool::from(cookie.as_bytes().ct_eq(given.as_bytes())) {
        let msg = "The login form expired or was not sent from this site. Try again.";
        return login_form(StatusCode::FORBIDDEN, Some(msg));
    }
    let key = form.get("api_key").unwrap_or_default().trim();
    // The API's own check: `keys.toml` first, then the stored keys.
    let Ok(principal) = crate::http::middleware::verify_key(&app, key).await else {
        return login_form(
            StatusCode::UNAUTHORIZED,
            Some("Unknown or disabled API key."),
        );
    };
    if !principal.scopes.has(&Scope::Console) {
        let msg = "This key lacks the `console` scope.";
        return login_form(StatusCode::UNAUTHORIZED, Some(msg));
    }
    if principal
        .allowed_ips
        .as_ref()
        .is_some_and(|l| !l.allows(ip))
    {
        let msg = "This key may not be used from your address.";
        return login_form(StatusCode::FORBIDDEN, Some(msg));
    }
    start_session(&app, &principal).await
}

/// Stores a new session for `principal` and answers with its cookie (the
/// login cookie cleared) and a 303 to the first page.
async fn start_session(app: &AppState, principal: &Principal) -> Response {
    let token = session::new_token();
    let now = app.clock.now_ms();
    let stored = ConsoleSession {
        id_hash: session::hash_token(&token),
        principal: principal.id.to_string(),
        scopes: principal.scopes.iter().map(ToString::to_string).collect(),
        csrf_token: session::new_token(),
        created_at_ms: now,
        last_seen_at_ms: now,
    };
    if let Err(e) = app.store.create_console_session(stored).await {
        return crate::http::error::ApiError::from(e).into_response();
    }
    tracing::info!(principal = %principal.id, "console login");
    let max_age = app.config.main.console.absolute_timeout.as_secs();
    let mut response = super::see_other("/console");
    for cookie in [
        session::set_cookie(SESSION_COOKIE, &token, max_age),
        session::set_cookie(LOGIN_COOKIE, "", 0),
    ] {
        if let Ok(v) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

pub async fn log_out(State(app): State<AppState>, session: Session, body: Body) -> Response {
    let form = match Form::read(&app, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = super::csrf::check(&session, &form) {
        return r;
    }
    if let Err(e) = app.store.delete_console_session(&session.id_hash).await {
        tracing::warn!(error = %e, "console logout: the session was not deleted");
        return error_page(
            Some(&session),
            StatusCode::SERVICE_UNAVAILABLE,
            "The session could not be ended; try again.",
        );
    }
    let mut response = super::see_other("/console/login");
    if let Ok(v) = session::set_cookie(SESSION_COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}
