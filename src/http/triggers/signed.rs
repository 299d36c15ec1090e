//! Signed requests to a trigger (`signatures` in `triggers.toml`): the
//! sender has no credential, so the guard let the request through after
//! the per-IP limit, and this verifies it.
//!
//! Order: trigger 404 → body size 413 → signature 401 (`bad-signature`,
//! saying what was wrong: a missing header, a malformed one, a timestamp
//! out of the 5 minute window, a mismatch; never the expected value) →
//! the sender's per-principal limit 429. The sender becomes the principal
//! `sig:<trigger>:<name>` (`name` defaults to the scheme), allowed to run
//! this trigger only; jobs record it.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};

use crate::auth::signed::SignedRequest;
use crate::auth::{Principal, Scope, Scopes};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::ids::TriggerId;
use crate::limits::PolicyState;

/// A request whose signature verified.
pub(super) struct SignedSender {
    pub principal: Arc<Principal>,
    pub body: Bytes,
    /// The Idempotency-Key the request stands for (an Idempotency-Key
    /// header, which is not signed, never replaces it).
    pub message_key: String,
    /// The sender's per-principal limit.
    pub limit: PolicyState,
}

pub(super) async fn verify(
    app: &AppState,
    trigger_id: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<SignedSender, ApiError> {
    let trigger = TriggerId::parse(trigger_id)
        .ok()
        .and_then(|id| app.config.triggers.get(&id).cloned())
        .ok_or_else(|| ApiError::NotFound(format!("no trigger `{trigger_id}`")))?;
    let Some(signatures) = &trigger.signatures else {
        return Err(ApiError::unauthorized(
            "credentials are required: `Authorization: Bearer <token>` or `X-Api-Key: <key>`",
            false,
        ));
    };
    let body = crate::http::extract::read_body(body, app.config.main.server.max_body_bytes).await?;
    let url = crate::http::calls::callback_url(app, uri);
    let request = SignedRequest {
        method: method.as_str(),
        url: &url,
        headers,
        body: &body,
        // Signed timestamps come from the sender's real clock.
        now_ms: crate::clock::system_now_ms(),
    };
    let verified = signatures
        .verify(&request)
        .map_err(|e| ApiError::TriggerSignature {
            detail: e.to_string(),
            bearer_accepted: !signatures.only,
        })?;
    let principal = Arc::new(Principal {
        id: format!("sig:{}:{}", trigger.id, verified.name).into(),
        scopes: Scopes::new(vec![Scope::Trigger(trigger.id.to_string())]),
        rate_limit: None,
        // The trigger's own `allowed_ips` was judged by the guard.
        allowed_ips: None,
    });
    tracing::Span::current().record("principal", &*principal.id);
    let limit = app.limiters.check_principal(&principal).await?;
    Ok(SignedSender {
        principal,
        message_key: verified.message_key,
        body,
        limit,
    })
}
