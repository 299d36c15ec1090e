//! The HTTP error type: every failure a client can see, rendered once as RFC
//! 9457 `application/problem+json`.
//!
//! Policy: 5xx bodies never carry internal messages. The cause travels as a
//! response extension (`ErrorCause`) that the access-log layer writes next to
//! the request id, so `into_response` has no side effects; so does the level
//! the access log uses (`LogAs`): ERROR only for our own faults (a bug,
//! storage failing), WARN for 5xx answers that are not (a slow client's
//! timeout, an upstream that failed a mid-call action, backpressure).

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::Scope;
use crate::idempotency::IdempotencyError;
use crate::input::InputError;
use crate::limits::RateLimited;
use crate::store::StoreError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

pub use crate::schema::Violation;

/// Every error the HTTP layer answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body or a parameter could not be parsed.
    #[error("{detail}")]
    BadRequest {
        detail: String,
        errors: Vec<Violation>,
    },
    /// 400: the `Idempotency-Key` header is empty, too long or not text.
    #[error("invalid Idempotency-Key: {0}")]
    BadIdempotencyKey(&'static str),
    /// 401: no credentials, or credentials that are not valid.
    #[error("{detail}")]
    Unauthorized {
        detail: String,
        /// A token was presented (adds `error="invalid_token"`).
        token_given: bool,
    },
    /// 401: a provider callback whose signature does not verify.
    #[error("callback signature: {0}")]
    BadSignature(String),
    /// 401: a request to a signed trigger without a signature that verifies
    /// (or with a credential where the trigger takes signatures only).
    #[error("{detail}")]
    TriggerSignature {
        detail: String,
        /// The trigger also takes bearer tokens and API keys (the challenge
        /// names `Bearer` too).
        bearer_accepted: bool,
    },
    /// 403: valid credentials without the needed scope. The answer carries
    /// `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`
    /// (RFC 6750 §3.1) naming `scopes`, any one of which would allow it.
    #[error("{detail}")]
    Forbidden { detail: String, scopes: Vec<Scope> },
    /// 403: the client address is outside the allowlist (`allowed_ips`) of
    /// the trigger or the API key. The detail names the address seen (so a
    /// sender behind a proxy can tell what the gateway saw), never the list.
    #[error("requests from {ip} may not {what}")]
    IpNotAllowed {
        ip: std::net::IpAddr,
        /// `run this trigger` or `use this API key`.
        what: &'static str,
    },
    /// 404: no such resource (only after authentication).
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the resource is not in a state that allows this (e.g. replaying
    /// a delivery that has not failed).
    #[error("{0}")]
    Conflict(String),
    /// 409: the job is claimed by a worker right now (`Retry-After: 1`);
    /// it is cancellable again once the worker leaves it waiting.
    #[error("{0}")]
    JobBusy(String),
    /// 409: retrying the job may call someone a second time (its last
    /// call's status is `unknown`); the request must say
    /// `confirm_no_call=true`.
    #[error("{0}")]
    ConfirmRequired(String),
    /// 504: a mid-call action's upstream failed or missed the deadline, and
    /// the action has no fallback.
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// 409: the trigger's campaign dedupe key is held by a live job (with
    /// `on_duplicate = "conflict"`).
    #[error("a job for this trigger's dedupe key exists: {job_id}")]
    Duplicate { job_id: String },
    /// 409: a request with the same Idempotency-Key is still being processed.
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInFlight,
    /// 413: body over the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: neither JSON nor form-encoded.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the input breaks the trigger's schema or cannot be normalised
    /// (every violation listed).
    #[error("the input is not valid for this trigger; see `errors`")]
    Validation(Vec<Violation>),
    /// 422: a value outside a trigger's input (a path segment, a
    /// do-not-call number) cannot be used; the detail names it.
    #[error("{detail}")]
    InvalidValue {
        detail: String,
        errors: Vec<Violation>,
    },
    /// 422: an Idempotency-Key reused with a different body.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// 429: a rate limit is exhausted.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// 503: the durable writer is behind (backpressure); retry later.
    #[error("the gateway is at capacity; retry after {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    /// 503: storage cannot be reached or written.
    #[error("storage is unavailable")]
    StorageUnavailable(String),
    /// 503: the request did not finish within the server's request timeout.
    #[error("the request did not complete in time")]
    Timeout,
    /// 500: a bug or an unexpected failure (cause logged, never shown).
    #[error("internal error")]
    Internal(String),
}

/// The problem type's slug of an error response (a response extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemSlug(pub &'static str);

/// The logged cause of a 5xx (never sent to the client).
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// The level the access log writes a response at, when it is not the
/// default for its status (INFO below 500, ERROR from 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAs(pub tracing::Level);

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [Violation]>,
}

impl ApiError {
    /// A 400 for an unparseable body, pointing at the failing place.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A 401 with the reason (safe to show: it never echoes the credential).
    pub fn unauthorized(detail: impl Into<String>, token_given: bool) -> Self {
        ApiError::Unauthorized {
            detail: detail.into(),
            token_given,
        }
    }

    /// A 403 for a principal that lacks every one of `scopes`.
    pub fn missing_scope(scopes: Vec<Scope>, detail: impl Into<String>) -> Self {
        ApiError::Forbidden {
            detail: detail.into(),
            scopes,
        }
    }

    /// How loud the access log should be: ERROR for our own faults only.
    pub fn log_level(&self) -> tracing::Level {
        use ApiError::*;
        match self {
            Internal(_) | StorageUnavailable(_) => tracing::Level::ERROR,
            // 503/504 that the client or an upstream caused, or load: worth
            // seeing, not a fault of ours.
            Timeout | UpstreamUnavailable(_) | Overloaded { .. } => tracing::Level::WARN,
            _ => tracing::Level::INFO,
        }
    }

    /// Status, slug and title of this error's problem type: one table.
    fn kind(&self) -> &'static Kind {
        use ApiError::*;
        match self {
            BadRequest { .. } => &MALFORMED,
            BadIdempotencyKey(_) => &BAD_IDEMPOTENCY_KEY,
            Unauthorized { .. } => &UNAUTHORIZED,
            BadSignature(_) | TriggerSignature { .. } => &BAD_SIGNATURE,
            Forbidden { .. } => &FORBIDDEN,
            IpNotAllowed { .. } => &IP_NOT_ALLOWED,
            NotFound(_) => &NOT_FOUND,
            MethodNotAllowed => &METHOD_NOT_ALLOWED,
            IdempotencyInFlight => &IN_FLIGHT,
            Conflict(_) => &CONFLICT,
            Duplicate { .. } => &DUPLICATE,
            JobBusy(_) => &JOB_BUSY,
            ConfirmRequired(_) => &CONFIRM_REQUIRED,
            UpstreamUnavailable(_) => &UPSTREAM,
            PayloadTooLarge { .. } => &TOO_LARGE,
            UnsupportedMediaType(_) => &MEDIA_TYPE,
            Validation(_) | InvalidValue { .. } => &VALIDATION,
            IdempotencyKeyReused => &KEY_REUSED,
            RateLimited(_) => &RATE_LIMITED,
            Overloaded { .. } => &OVERLOADED,
            StorageUnavailable(_) => &STORAGE,
            Timeout => &TIMEOUT,
            Internal(_) => &INTERNAL,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status
    }

    /// Short slug naming the problem type (`urn:callgate:problem:<slug>`).
    pub fn slug(&self) -> &'static str {
        self.kind().slug
    }

    fn title(&self) -> &'static str {
        self.kind().title
    }
}

/// A problem type: its status, slug and title.
struct Kind {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
}

macro_rules! kinds {
    ($($name:ident = $status:ident, $slug:literal, $title:literal;)*) => {
        $(const $name: Kind = Kind { status: StatusCode::$status, slug: $slug, title: $title };)*
        /// Every problem type the API answers with (the OpenAPI test checks
        /// `openapi.yaml` documents each slug).
        pub const PROBLEM_TYPES: &[(u16, &str, &str)] = &[$(($name.status.as_u16(), $slug, $title)),*];
    };
}

kinds! {
    MALFORMED = BAD_REQUEST, "malformed-request", "Malformed request";
    BAD_IDEMPOTENCY_KEY = BAD_REQUEST, "invalid-idempotency-key", "Invalid Idempotency-Key";
    UNAUTHORIZED = UNAUTHORIZED, "unauthorized", "Authentication required";
    BAD_SIGNATURE = UNAUTHORIZED, "bad-signature", "Signature rejected";
    FORBIDDEN = FORBIDDEN, "forbidden", "Not allowed";
    IP_NOT_ALLOWED = FORBIDDEN, "ip-not-allowed", "Client address not allowed";
    NOT_FOUND = NOT_FOUND, "not-found", "Not found";
    METHOD_NOT_ALLOWED = METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed";
    IN_FLIGHT = CONFLICT, "idempotency-key-in-flight", "Request in progress";
    CONFLICT = CONFLICT, "conflict", "Conflict";
    DUPLICATE = CONFLICT, "duplicate", "Duplicate trigger";
    JOB_BUSY = CONFLICT, "job-busy", "Job busy";
    CONFIRM_REQUIRED = CONFLICT, "confirm-required", "Confirmation required";
    UPSTREAM = GATEWAY_TIMEOUT, "upstream-unavailable", "Upstream unavailable";
    TOO_LARGE = PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large";
    MEDIA_TYPE = UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type";
    VALIDATION = UNPROCESSABLE_ENTITY, "validation-failed", "Validation failed";
    KEY_REUSED = UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused";
    RATE_LIMITED = TOO_MANY_REQUESTS, "rate-limited", "Too many requests";
    OVERLOADED = SERVICE_UNAVAILABLE, "overloaded", "Overloaded";
    STORAGE = SERVICE_UNAVAILABLE, "storage-unavailable", "Storage unavailable";
    TIMEOUT = SERVICE_UNAVAILABLE, "timeout", "Request timed out";
    INTERNAL = INTERNAL_SERVER_ERROR, "internal", "Internal server error";
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::UnsupportedMediaType(m) => ApiError::UnsupportedMediaType(m),
            InputError::Malformed { detail, errors } => ApiError::BadRequest { detail, errors },
            InputError::Invalid(v) => ApiError::Validation(v),
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::BadKey(why) => ApiError::BadIdempotencyKey(why),
            IdempotencyError::InFlight => ApiError::IdempotencyInFlight,
            IdempotencyError::Reused => ApiError::IdempotencyKeyReused,
        }
    }
}

/// Storage failures: backpressure is 503 `overloaded`; a store that cannot
/// be reached, written or read is 503 `storage-unavailable` (a corrupt row
/// is a 500: retrying will not help).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Backpressure => ApiError::Overloaded {
                retry_after_secs: 1,
            },
            StoreError::Closed | StoreError::Unavailable(_) => {
                ApiError::StorageUnavailable(e.to_string())
            }
            StoreError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let level = self.log_level();
        let errors = match &self {
            ApiError::Validation(v)
            | ApiError::BadRequest { errors: v, .. }
            | ApiError::InvalidValue { errors: v, .. } => {
                Some(v.as_slice()).filter(|v| !v.is_empty())
            }
            _ => None,
        };
        let cause = match &self {
            ApiError::Internal(c) | ApiError::StorageUnavailable(c) => Some(c.clone()),
            _ => None,
        };
        let body = Problem {
            kind: format!("urn:callgate:problem:{}", self.slug()),
            title: self.title(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            ApiError::Unauthorized { token_given, .. } => {
                let v = if *token_given {
                    "Bearer realm=\"callgate\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"callgate\""
                };
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
            }
            ApiError::Forbidden { scopes, .. } => {
                headers.insert(header::WWW_AUTHENTICATE, insufficient_scope(scopes));
            }
            ApiError::BadSignature(_) => {
                // No registered scheme fits provider signatures; the
                // challenge names what is expected.
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Signature realm=\"callgate-callbacks\""),
                );
            }
            ApiError::TriggerSignature {
                bearer_accepted, ..
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Signature realm=\"callgate\""),
                );
                if *bearer_accepted {
                    headers.append(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"callgate\""),
                    );
                }
            }
            ApiError::RateLimited(refused) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(refused.retry_after_secs()),
                );
                refused.0.append_to(&mut headers);
            }
            ApiError::Overloaded { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::StorageUnavailable(_) | ApiError::Timeout | ApiError::JobBusy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            _ => {}
        }
        let mut response = (status, headers, bytes).into_response();
        // Counted by kind where refusals are (the accept path's refusal
        // counts, `http::refusals`).
        response.extensions_mut().insert(ProblemSlug(self.slug()));
        if let Some(cause) = cause {
            response.extensions_mut().insert(ErrorCause(cause));
        }
        if level != default_log_level(status) {
            response.extensions_mut().insert(LogAs(level));
        }
        response
    }
}

/// The RFC 6750 §3.1 challenge of a 403: `error="insufficient_scope"` and,
/// space-separated, the scopes that would allow the request.
fn insufficient_scope(scopes: &[Scope]) -> HeaderValue {
    const BARE: &str = "Bearer realm=\"callgate\", error=\"insufficient_scope\"";
    let list = scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    // Scopes are parsed types (trigger ids are `A-Z a-z 0-9 _ -`), so the
    // value is always a valid quoted string; the bare challenge is a
    // fallback that cannot drop the header.
    HeaderValue::from_str(&format!("{BARE}, scope=\"{list}\""))
        .unwrap_or_else(|_| HeaderValue::from_static(BARE))
}

/// The access log's level for a response that does not say otherwise.
pub fn default_log_level(status: StatusCode) -> tracing::Level {
    if status.is_server_error() {
        tracing::Level::ERROR
    } else {
        tracing::Level::INFO
    }
}

/// `Idempotent-Replayed: true` on a replayed answer.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Fallback for paths no route matches.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for `{}`", uri.path()))
}

/// Fallback for a known path with a method it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    fn logged_at(e: ApiError) -> Level {
        let status = e.status();
        let response = e.into_response();
        response
            .extensions()
            .get::<LogAs>()
            .map(|l| l.0)
            .unwrap_or_else(|| default_log_level(status))
    }

    #[test]
    fn only_our_own_faults_are_logged_as_errors() {
        assert_eq!(logged_at(ApiError::Internal("bug".into())), Level::ERROR);
        assert_eq!(
            logged_at(ApiError::StorageUnavailable("disk".into())),
            Level::ERROR
        );
        // A slow client, a failing upstream, load.
        assert_eq!(logged_at(ApiError::Timeout), Level::WARN);
        assert_eq!(
            logged_at(ApiError::UpstreamUnavailable("late".into())),
            Level::WARN
        );
        assert_eq!(
            logged_at(ApiError::Overloaded {
                retry_after_secs: 1
            }),
            Level::WARN
        );
        // Client errors are ordinary access-log lines.
        for e in [
            ApiError::bad_request("x"),
            ApiError::unauthorized("x", true),
            ApiError::missing_scope(vec![Scope::JobsRead], "x"),
            ApiError::NotFound("x".into()),
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::Validation(Vec::new()),
        ] {
            assert_eq!(logged_at(e), Level::INFO);
        }
        // Responses that are not ours keep the default by status.
        assert_eq!(default_log_level(StatusCode::BAD_GATEWAY), Level::ERROR);
        assert_eq!(default_log_level(StatusCode::OK), Level::INFO);
    }
}
