//! `GET /v1/calls/{call_id}` (a call's record) and
//! `POST /v1/calls/{call_id}/events` (voice providers' status callbacks).
//!
//! Policy for callbacks: an unknown call is 404; the provider's signature is
//! verified against the raw body before anything is read (401
//! `bad-signature`, with a `Signature` challenge; each failure is charged
//! to the sender's per-IP bucket, 429 once it is empty); a body that cannot
//! be read is 400; then the provider's own limit (429; verified callbacks
//! are never limited per IP: a platform sends them all from a few
//! addresses). A repeated event changes nothing and an event that would
//! move the call backwards only adds details. A call reaching a final
//! status wakes its job, frees its line and starts subscribed automations,
//! in the same transaction.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::calls::events::EventError;
use crate::calls::signature::Signed;
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::http::middleware::client_ip;
use crate::ids::{CallId, JobId};
use crate::store::{CallRecord, EventApplied};

/// A call as the API shows it.
#[derive(Debug, Serialize)]
pub struct CallOut {
    call_id: CallId,
    job_id: JobId,
    agent_id: String,
    to: String,
    from: String,
    provider: String,
    provider_call_id: Option<String>,
    status: crate::store::CallStatus,
    outcome: Option<String>,
    duration_seconds: Option<i64>,
    custom: Value,
    variables: Value,
    transcript: Option<String>,
    summary: Option<String>,
    recording_url: Option<String>,
    error: Option<String>,
    dial_attempts: i64,
    created_at: String,
    updated_at: String,
    dialed_at: Option<String>,
    answered_at: Option<String>,
    ended_at: Option<String>,
    links: Value,
}

impl From<CallRecord> for CallOut {
    fn from(c: CallRecord) -> Self {
        Self {
            links: json!({"self": format!("/v1/calls/{}", c.id), "job": format!("/v1/jobs/{}", c.job_id)}),
            call_id: c.id,
            job_id: c.job_id,
            agent_id: c.agent_id,
            to: c.to,
            from: c.from,
            provider: c.provider,
            provider_call_id: c.provider_call_id,
            status: c.status,
            outcome: c.outcome,
            duration_seconds: c.duration_seconds,
            custom: c.custom,
            variables: c.variables,
            transcript: c.transcript,
            summary: c.summary,
            recording_url: c.recording_url,
            error: c.error,
            dial_attempts: c.dial_attempts,
            created_at: rfc3339(c.created_at_ms),
            updated_at: rfc3339(c.updated_at_ms),
            dialed_at: c.dial_requested_at_ms.map(rfc3339),
            answered_at: c.answered_at_ms.map(rfc3339),
            ended_at: c.ended_at_ms.map(rfc3339),
        }
    }
}

pub async fn get_call(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(call_id): ApiPath<String>,
) -> Result<Json<CallOut>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no call `{call_id}`"));
    let id = CallId::parse(&call_id).ok_or_else(not_found)?;
    let call = app.store.call(&id).await?.ok_or_else(not_found)?;
    let owner = app.store.job(&call.job_id).await?.map(|j| j.principal);
    super::jobs::may_read(&principal, owner.as_deref(), "call")?;
    Ok(Json(CallOut::from(call)))
}

pub async fn call_event(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath(call_id): ApiPath<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes =
        crate::http::extract::read_body(body, app.config.main.server.max_body_bytes).await?;
    // Callbacks that fail (unknown call, bad signature) are charged to the
    // sender's address, so that guessing or forging costs quota.
    let refuse = async |e: ApiError| -> Result<Response, ApiError> {
        let ip = client_ip(&app, peer, &headers);
        let ip_state = app.limiters.check_ip(ip).await?;
        let mut response = e.into_response();
        ip_state.append_to(response.headers_mut());
        Ok(response)
    };
    let found = match CallId::parse(&call_id) {
        Some(id) => app.store.call(&id).await?,
        None => None,
    };
    let Some(call) = found else {
        return refuse(ApiError::NotFound(format!("no call `{call_id}`"))).await;
    };
    let provider = app.providers.get(&call.provider).ok_or_else(|| {
        ApiError::Internal(format!(
            "call {call_id} names unknown provider {}",
            call.provider
        ))
    })?;
    let url = callback_url(&app, &uri);
    let signed = Signed {
        headers: &headers,
        body: &bytes,
        url: &url,
        // Replay windows are about the sender's clock: real time.
        now_ms: crate::clock::system_now_ms(),
    };
    let now = app.clock.now_ms();
    let event = match provider.callbacks().read(&call.id, &signed, now) {
        Ok(event) => event,
        Err(EventError::Signature(e)) => {
            return refuse(ApiError::BadSignature(e.to_string())).await;
        }
        Err(EventError::Body(e)) => {
            return Err(ApiError::bad_request(format!("callback body: {e}")));
        }
        Err(EventError::Form(e)) => return Err(crate::input::InputError::from(e).into()),
    };
    let limit = app
        .limiters
        .check_provider(&call.provider)
        .await
        .transpose()?;
    let config = app.config.clone();
    let on_final = Box::new(move |c: &CallRecord| crate::runner::event_jobs(&config, c, now));
    let applied = app.store.apply_call_event(event, on_final).await?;
    app.wake.notify_one();
    let mut response = Json(applied_body(&call_id, applied)).into_response();
    if let Some(state) = limit {
        state.append_to(response.headers_mut());
    }
    Ok(response)
}

/// The URL the sender was given: `server.public_url` (else the listener)
/// + path + query (Twilio and HubSpot sign it).
pub(crate) fn callback_url(app: &AppState, uri: &axum::http::Uri) -> String {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    format!("{}{path}", app.providers.callback_base())
}

/// What a callback is answered with: whether it changed the call.
fn applied_body(call_id: &str, applied: EventApplied) -> Value {
    match applied {
        EventApplied::Duplicate => json!({"call_id": call_id, "applied": false, "duplicate": true}),
        EventApplied::Applied { moved_to } => json!({
            "call_id": call_id,
            "applied": true,
            "duplicate": false,
            "status_changed_to": moved_to,
        }),
    }
}
