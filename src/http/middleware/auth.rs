//! Authentication middleware: turns credentials into a `Principal` request
//! extension, or answers 401.
//!
//! Accepted: `Authorization: Bearer <API key or JWT>`, or `X-Api-Key: <API
//! key>` (API keys only) for senders that can only set a plain header. When
//! both are sent, `Authorization` is the one checked. Without credentials:
//! 401 with `WWW-Authenticate: Bearer realm="callgate"`. With credentials that
//! do not verify: 401 with `error="invalid_token"` and a reason that never
//! echoes the credential.
//!
//! A `POST` to a trigger that accepts signatures (`signatures` in
//! `triggers.toml`) without `Authorization` or `X-Api-Key` has no principal
//! yet: its handler verifies the signature over the body, which is not read
//! here (`http/triggers/signed.rs`).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};

use crate::auth::{Principal, api_key};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::ids::TriggerId;

/// Whether `req` is a signed request to a trigger that takes signatures: it
/// carries no credential, so the handler authenticates it.
pub fn signed_trigger(app: &AppState, req: &Request) -> bool {
    let h = req.headers();
    if req.method() != Method::POST
        || h.contains_key(header::AUTHORIZATION)
        || h.contains_key("x-api-key")
    {
        return false;
    }
    req.uri()
        .path()
        .strip_prefix("/v1/triggers/")
        .and_then(|id| TriggerId::parse(id).ok())
        .and_then(|id| app.config.triggers.get(&id))
        .is_some_and(|t| t.signatures.is_some())
}

/// The caller's principal, or the 401 to answer.
pub async fn identify(app: &AppState, headers: &HeaderMap) -> Result<Arc<Principal>, ApiError> {
    let token = match (headers.get(header::AUTHORIZATION), headers.get("x-api-key")) {
        (Some(value), _) => {
            let value = value.to_str().map_err(|_| {
                ApiError::unauthorized("the Authorization header is not valid text", true)
            })?;
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(ApiError::unauthorized(
                    "use `Authorization: Bearer <token>` (or `X-Api-Key: <key>`)",
                    false,
                ));
            }
            token.trim()
        }
        (None, Some(value)) => {
            let key = value
                .to_str()
                .map_err(|_| {
                    ApiError::unauthorized("the X-Api-Key header is not valid text", true)
                })?
                .trim();
            // X-Api-Key carries API keys only; tokens belong in Authorization.
            return verify_key(app, key).await;
        }
        (None, None) => {
            return Err(ApiError::unauthorized(
                "credentials are required: `Authorization: Bearer <token>` or `X-Api-Key: <key>`",
                false,
            ));
        }
    };
    if token.is_empty() {
        return Err(ApiError::unauthorized("the bearer token is empty", true));
    }
    if token.starts_with(api_key::PREFIX) {
        return verify_key(app, token).await;
    }
    if app.issuers.is_empty() {
        return Err(ApiError::unauthorized(
            "not an API key, and no JWT issuer is configured",
            true,
        ));
    }
    // A JWKS issuer's token with an unknown `kid` may wait for one refresh
    // of its key set (bounded; see `auth::jwt::jwks`).
    app.issuers
        .verify_fresh(token)
        .await
        .map_err(|e| ApiError::unauthorized(e.to_string(), true))
}

/// An API key's principal: `keys.toml` first (in memory, nothing in
/// front of it), then the keys stored in the database (`auth::db_keys`:
/// a snapshot, read again on a miss at most once a second).
pub(crate) async fn verify_key(app: &AppState, key: &str) -> Result<Arc<Principal>, ApiError> {
    let toml = app.keys.load();
    if let Some(principal) = toml.verify(key) {
        return Ok(principal);
    }
    app.db_keys
        .verify(key, &toml)
        .await
        .ok_or_else(|| ApiError::unauthorized("unknown or disabled API key", true))
}
