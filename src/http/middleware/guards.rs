//! Global guards: access log, panic catcher, request timeout, declared body
//! size.
//!
//! Policy: a panic answers 500 problem+json and the process keeps serving; a
//! request that runs past `server.request_timeout` answers 503 with
//! `Retry-After`; a `Content-Length` above `server.max_body_bytes` answers
//! 413 before anything reads the body. 5xx causes are logged here with the
//! request id and never sent to the client.

use std::any::Any;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::request_id::RequestIdValue;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorCause};

/// Opens the request span (method, path, request id) and writes one access
/// log line per request, with the cause of any 5xx.
pub async fn access_log(req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestIdValue>()
        .map(|r| r.as_str().to_owned())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
        client_ip = tracing::field::Empty,
        principal = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let latency_us = started.elapsed().as_micros() as u64;
    let status = response.status().as_u16();
    let _entered = span.enter();
    match response.extensions().get::<ErrorCause>() {
        Some(cause) => tracing::error!(status, latency_us, cause = %cause.0, "request failed"),
        None if status >= 500 => tracing::error!(status, latency_us, "request failed"),
        None => tracing::info!(status, latency_us, "request"),
    }
    response
}

/// Turns a handler panic into a 500 problem (the cause goes to the log).
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}

/// Bounds the whole request by `server.request_timeout`.
pub async fn timeout(State(app): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(app.config.main.server.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Refuses a declared body over `server.max_body_bytes` before it is read.
pub async fn declared_body_limit(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = app.config.main.server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    next.run(req).await
}
