//! `POST /v1/triggers/{trigger_id}`: accept a trigger, answer 202 once the
//! job is on disk (or, with `?mode=test`, 200 with what would run).
//!
//! Before the handler, the guard (`http/middleware/guard.rs`) has checked,
//! in order: per-IP limit 429 → the trigger's `allowed_ips` 403
//! `ip-not-allowed` (before any credential, for every way the trigger is
//! run; `?mode=test` is not exempt) → credentials 401 → the API key's
//! `allowed_ips` 403 `ip-not-allowed` → per-principal limit 429; none of
//! them reads the body.
//!
//! Then (each a different status): scope 403 → trigger 404 →
//! trigger limit 429 → media type 415 → Idempotency-Key 400 → body size 413
//! (a declared `Content-Length` over the limit was already refused by the
//! outer guard, before authentication) → parse 400 → schema 422 → phone
//! numbers 422 → dedupe key 422 → idempotency replay / 409 / 422 → campaign
//! dedupe 200 / 409 (`dedupe.rs`) → durable insert (503 under
//! backpressure) → 202. Every answer after the trigger limit carries its
//! `RateLimit` item, errors included.
//!
//! A signed request (no principal from the guard) is verified first, in
//! `signed.rs`: body size 413 → signature 401 → the sender's limit 429;
//! then the checks above, its message id standing for the Idempotency-Key
//! when none is sent. On a `signatures_only` trigger a credential is 401.

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{authorize, signed};
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::error::{ApiError, IDEMPOTENT_REPLAYED};
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::middleware::RequestIdValue;
use crate::idempotency;
use crate::ids::JobId;
use crate::input::{self, BodyKind};
use crate::job::JobAction;
use crate::store::{DedupeClaim, EnqueueOutcome, JobStatus, NewIdempotency, NewJob};
use crate::trigger::Trigger;

/// Query parameters of the accept route. Others are ignored: some senders
/// add cache-busting or tracking parameters.
#[derive(Debug, Deserialize)]
pub struct AcceptQuery {
    /// `test`: validate and show what would run, without creating a job.
    mode: Option<Mode>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Test,
}

/// The 202 body.
#[derive(Debug, Serialize)]
pub struct TriggerAccepted<'a> {
    pub job_id: &'a JobId,
    pub status: &'static str,
    pub trigger_id: &'a str,
    pub created_at: String,
    pub links: Links,
}

#[derive(Debug, Serialize)]
pub struct Links {
    #[serde(rename = "self")]
    pub self_: String,
}

/// The `?mode=test` body.
#[derive(Debug, Serialize)]
struct TriggerTested<'a> {
    mode: &'static str,
    trigger_id: &'a str,
    input: &'a Value,
    would_run: &'a JobAction,
}

/// A request that passed every check: what the job will hold.
struct Planned {
    input: Value,
    /// The campaign dedupe key (only for triggers with a dedupe rule).
    dedupe_key: Option<String>,
    run_at: Option<i64>,
    action: JobAction,
}

/// The request's body: still to be read, or already read to verify its
/// signature.
enum Payload {
    Unread(Body),
    Read(Bytes),
}

/// Who is calling and what they sent.
struct Caller {
    principal: Arc<Principal>,
    payload: Payload,
    /// A signed message's key (`Some` exactly when the request was signed).
    message_key: Option<String>,
}

pub async fn accept_trigger(
    State(app): State<AppState>,
    principal: Option<Extension<Arc<Principal>>>,
    Extension(request_id): Extension<RequestIdValue>,
    ApiPath(trigger_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<AcceptQuery>,
    // What a signature may cover besides the body.
    (method, OriginalUri(uri), headers): (Method, OriginalUri, HeaderMap),
    body: Body,
) -> Result<Response, ApiError> {
    // No principal: the guard let a signed request through (see signed.rs).
    let (caller, sender_limit) = match principal {
        Some(Extension(principal)) => {
            let payload = Payload::Unread(body);
            let caller = Caller {
                principal,
                payload,
                message_key: None,
            };
            (caller, None)
        }
        None => {
            let s = signed::verify(&app, &trigger_id, &method, &uri, &headers, body).await?;
            let caller = Caller {
                principal: s.principal,
                payload: Payload::Read(s.body),
                message_key: Some(s.message_key),
            };
            (caller, Some(s.limit))
        }
    };
    let mut response = accept(&app, caller, &trigger_id, &request_id, query, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if let Some(state) = sender_limit {
        state.append_to(response.headers_mut());
    }
    Ok(response)
}

async fn accept(
    app: &AppState,
    caller: Caller,
    trigger_id: &str,
    request_id: &RequestIdValue,
    query: AcceptQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Caller {
        principal,
        payload,
        message_key,
    } = caller;
    let trigger = authorize(app, &principal, trigger_id)?;
    if message_key.is_none() && trigger.signatures.as_ref().is_some_and(|s| s.only) {
        return Err(ApiError::TriggerSignature {
            detail: "this trigger takes signed requests only; send no bearer token or API key"
                .into(),
            bearer_accepted: false,
        });
    }
    let limit = app.limiters.check_trigger(&trigger.id).await.transpose()?;
    let accept = Accept {
        app,
        principal: &principal,
        trigger: &trigger,
        request_id: request_id.as_str(),
        message_key,
    };
    let mut response = accept
        .handle(query, headers, payload)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if let Some(state) = limit {
        state.append_to(response.headers_mut());
    }
    Ok(response)
}

struct Accept<'a> {
    app: &'a AppState,
    principal: &'a Principal,
    trigger: &'a Trigger,
    request_id: &'a str,
    /// A signed message's key: the Idempotency-Key when none is sent.
    message_key: Option<String>,
}

impl Accept<'_> {
    /// Everything after the trigger limit.
    async fn handle(
        &self,
        query: AcceptQuery,
        headers: &HeaderMap,
        payload: Payload,
    ) -> Result<Response, ApiError> {
        let (app, trigger) = (self.app, self.trigger);
        let kind = BodyKind::from_content_type(headers.get(header::CONTENT_TYPE))?;
        // A signed message's key always wins: the Idempotency-Key header is
        // not signed, so letting it replace the key would let anyone who
        // captured a message replay it under fresh keys, each a new job.
        let idem_key = match &self.message_key {
            Some(key) => Some(key.clone()),
            None => idempotency::key_from(headers)?,
        };
        let bytes = match payload {
            Payload::Read(bytes) => bytes,
            Payload::Unread(body) => {
                crate::http::extract::read_body(body, app.config.main.server.max_body_bytes).await?
            }
        };
        let mut input = input::parse(kind, &bytes, trigger.form_nesting)?;
        let violations = trigger.schema.violations(&input);
        if !violations.is_empty() {
            return Err(ApiError::Validation(violations));
        }
        trigger.normalise(&mut input)?;
        let run_at = input::run_at(&input)?;
        crate::calling::check_timezone(&input, &app.config.main.calling.timezone_field)?;
        let action = trigger
            .plan(&input)
            .ok_or_else(|| ApiError::Internal("a normalised input lost its number".into()))?;
        let dedupe_key = super::dedupe::key(trigger, &input)?;
        let planned = Planned {
            input,
            dedupe_key,
            run_at,
            action,
        };

        if query.mode == Some(Mode::Test) {
            let tested = TriggerTested {
                mode: "test",
                trigger_id: trigger.id.as_str(),
                input: &planned.input,
                would_run: &planned.action,
            };
            return Ok((StatusCode::OK, axum::Json(tested)).into_response());
        }
        match idem_key {
            Some(key) => {
                let hash = idempotency::request_hash(kind.media_type(), &bytes);
                self.idempotent(planned, &key, hash).await
            }
            None => match self.insert(planned, None).await? {
                Inserted::Accepted(response) => Ok(response),
                Inserted::KeyTaken => Err(ApiError::Internal("key conflict without a key".into())),
            },
        }
    }

    /// Replays a stored answer, refuses a reused key, or accepts once.
    async fn idempotent(
        &self,
        planned: Planned,
        key: &str,
        hash: String,
    ) -> Result<Response, ApiError> {
        let (principal, trigger) = (&*self.principal.id, self.trigger.id.as_str());
        if let Some(response) = self.replay(key, &hash).await? {
            return Ok(response);
        }
        let Some(_slot) = self.app.inflight.claim(principal, trigger, key) else {
            return Err(ApiError::IdempotencyInFlight);
        };
        // The first request may have committed between the lookup and the
        // claim: look again now that no one else in this process can.
        if let Some(response) = self.replay(key, &hash).await? {
            return Ok(response);
        }
        match self.insert(planned, Some((key, hash.clone()))).await? {
            Inserted::Accepted(response) => Ok(response),
            // Another gateway process committed this key first.
            Inserted::KeyTaken => self
                .replay(key, &hash)
                .await?
                .ok_or_else(|| ApiError::Internal("idempotency conflict without a record".into())),
        }
    }

    async fn replay(&self, key: &str, hash: &str) -> Result<Option<Response>, ApiError> {
        let now = self.app.clock.now_ms();
        let found = self
            .app
            .store
            .idempotency(&self.principal.id, self.trigger.id.as_str(), key, now)
            .await?;
        let Some(record) = found else { return Ok(None) };
        if record.request_hash != hash {
            return Err(ApiError::IdempotencyKeyReused);
        }
        let status = StatusCode::from_u16(record.response_status).unwrap_or(StatusCode::ACCEPTED);
        let mut response = (status, record.response_body).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            IDEMPOTENT_REPLAYED.clone(),
            HeaderValue::from_static("true"),
        );
        if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", record.job_id)) {
            h.insert(header::LOCATION, location);
        }
        Ok(Some(response))
    }

    /// Inserts the job durably and answers 202.
    async fn insert(
        &self,
        planned: Planned,
        idem: Option<(&str, String)>,
    ) -> Result<Inserted, ApiError> {
        let Planned {
            input,
            dedupe_key,
            run_at,
            action,
        } = planned;
        if let Some(key) = &dedupe_key
            && let Some(response) = super::dedupe::existing(self.app, self.trigger, key).await?
        {
            return Ok(Inserted::Accepted(response));
        }
        let now = self.app.clock.now_ms();
        let id = JobId::new(now);
        let location = format!("/v1/jobs/{id}");
        let run_at = run_at.map_or(now, |t| t.max(now));
        let status = if run_at > now {
            JobStatus::Scheduled
        } else {
            JobStatus::Queued
        };
        let accepted = TriggerAccepted {
            job_id: &id,
            status: status.as_str(),
            trigger_id: self.trigger.id.as_str(),
            created_at: rfc3339(now),
            links: Links {
                self_: location.clone(),
            },
        };
        let body =
            serde_json::to_string(&accepted).map_err(|e| ApiError::Internal(e.to_string()))?;
        let retention = self.app.config.main.idempotency.retention.as_millis() as i64;
        let job = NewJob {
            id: id.clone(),
            trigger_id: Some(self.trigger.id.clone()),
            principal: self.principal.id.clone(),
            action_json: action.to_json(),
            input_json: input.to_string(),
            request_id: Some(self.request_id.to_owned()),
            created_at_ms: now,
            run_at_ms: run_at,
            status,
            dedupe_key: None,
            dedupe: dedupe_key
                .as_ref()
                .zip(self.trigger.dedupe.as_ref())
                .map(|(key, d)| DedupeClaim {
                    key: key.clone(),
                    response_body: body.clone(),
                    expires_at_ms: now + d.window_ms,
                }),
            idempotency: idem.map(|(key, request_hash)| NewIdempotency {
                key: key.to_owned(),
                request_hash,
                response_status: StatusCode::ACCEPTED.as_u16(),
                response_body: body.clone(),
                expires_at_ms: now + retention,
            }),
        };
        match self.app.store.enqueue(job).await? {
            EnqueueOutcome::Inserted => {}
            EnqueueOutcome::IdempotencyConflict => return Ok(Inserted::KeyTaken),
            // Another request (here or on another instance) took the key
            // since the look-up above.
            EnqueueOutcome::Duplicate => {
                let key = dedupe_key.as_deref().unwrap_or_default();
                return super::dedupe::existing(self.app, self.trigger, key)
                    .await?
                    .map(Inserted::Accepted)
                    .ok_or_else(|| ApiError::Internal("dedupe conflict without a record".into()));
            }
        }
        self.app.wake.notify_one();
        let mut response = (StatusCode::ACCEPTED, body).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(location) = HeaderValue::from_str(&location) {
            h.insert(header::LOCATION, location);
        }
        Ok(Inserted::Accepted(response))
    }
}

enum Inserted {
    Accepted(Response),
    /// A live record for the Idempotency-Key already exists.
    KeyTaken,
}
