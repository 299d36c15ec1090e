//! The global guards, in order: request id, access log, declared body size,
//! timeout. One middleware function rather than a layer each: every layer
//! is cloned and boxed per request, and this is the measured hot path.
//!
//! Policy: `x-request-id` is kept when sane, otherwise minted, and echoed on
//! every response; one access-log line per request inside a span carrying
//! the request id (5xx causes are logged here, never sent), at the level the
//! response asks for (`LogAs`: ERROR only for our own faults); a
//! `Content-Length` above `server.max_body_bytes` answers 413 before
//! anything reads the body, and any 413 on HTTP/1 carries `Connection:
//! close` (the rest of the body is never read, so the connection cannot be
//! reused; the server lingers so that the client can still read the 413;
//! h2 resets just the stream); a request that runs past
//! `server.request_timeout` answers 503 with `Retry-After`.

use std::any::Any;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::request_id::{self, X_REQUEST_ID};
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorCause, LogAs, default_log_level};
use crate::http::refusals;

pub async fn front_door(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = request_id::assign(&mut req);
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id.to_str().unwrap_or_default(),
        client_ip = tracing::field::Empty,
        principal = tracing::field::Empty,
    );
    let started = Instant::now();
    let http1 = req.version() < Version::HTTP_2;
    let server = &app.config.main.server;
    // Refusals made here, before routing, are counted for the stats too
    // (the route layer `prometheus::track` never sees them).
    let accept = refusals::is_accept(req.method(), req.uri().path());
    let refused = |reason: &'static str| {
        if accept {
            app.refusals.add(app.clock.now_ms(), reason);
        }
    };
    let mut response =
        if declared_length(&req).is_some_and(|len| len > server.max_body_bytes as u64) {
            refused("payload-too-large");
            ApiError::PayloadTooLarge {
                limit: server.max_body_bytes,
            }
            .into_response()
        } else {
            match tokio::time::timeout(
                server.request_timeout,
                next.run(req).instrument(span.clone()),
            )
            .await
            {
                Ok(response) => response,
                Err(_) => {
                    refused("timeout");
                    ApiError::Timeout.into_response()
                }
            }
        };
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    if http1 && response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    access_log(&span, &response, started);
    response
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn access_log(span: &tracing::Span, response: &Response, started: Instant) {
    let _entered = span.enter();
    let latency_us = started.elapsed().as_micros() as u64;
    let level = response
        .extensions()
        .get::<LogAs>()
        .map_or_else(|| default_log_level(response.status()), |l| l.0);
    let status = response.status().as_u16();
    // Only a present cause is written (an `Option` field records nothing
    // when `None`).
    let cause = response
        .extensions()
        .get::<ErrorCause>()
        .map(|c| tracing::field::display(&c.0));
    let message = if status >= 500 {
        "request failed"
    } else {
        "request"
    };
    // A level is part of an event's static metadata: one call per level.
    match level {
        tracing::Level::ERROR => tracing::error!(status, latency_us, cause, "{message}"),
        tracing::Level::WARN => tracing::warn!(status, latency_us, cause, "{message}"),
        _ => tracing::info!(status, latency_us, cause, "{message}"),
    }
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
