//! The HTTP surface: one `router(state)` with every route, and one
//! `middleware_stack` that wraps it, read top to bottom in the order a
//! request meets it. The server and the tests use these same two functions.

pub mod error;
mod extract;
mod health;
mod jobs;
pub mod middleware;
pub mod serve;
mod triggers;

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::auth::{Issuers, KeySet};
use crate::clock::Clock;
use crate::config::Config;
use crate::idempotency::Inflight;
use crate::limits::Limiters;
use crate::store::Store;

/// Shared state of the running gateway.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// What handlers and middleware share.
pub struct AppInner {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    /// Replaced when the key file changes.
    pub keys: ArcSwap<KeySet>,
    pub issuers: Issuers,
    pub limiters: Limiters,
    pub clock: Arc<dyn Clock>,
    pub inflight: Inflight,
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// One route: method, path (axum syntax) and whether it needs credentials.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub authenticated: bool,
    handler: MethodRouter<AppState>,
}

fn endpoint<H, T>(method: Method, path: &'static str, authenticated: bool, handler: H) -> Endpoint
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    Endpoint {
        method,
        path,
        authenticated,
        handler: on(filter, handler),
    }
}

/// Every route the gateway serves. The router is built from this list, and
/// the OpenAPI test compares it with `openapi.yaml`, so the two cannot drift.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(Method::GET, "/healthz", false, health::healthz),
        endpoint(Method::GET, "/readyz", false, health::readyz),
        endpoint(Method::GET, "/v1/triggers", true, triggers::list_triggers),
        endpoint(
            Method::GET,
            "/v1/triggers/{trigger_id}",
            true,
            triggers::get_trigger,
        ),
        endpoint(
            Method::POST,
            "/v1/triggers/{trigger_id}",
            true,
            triggers::accept_trigger,
        ),
        endpoint(Method::GET, "/v1/jobs/{job_id}", true, jobs::get_job),
    ]
}

/// The complete application: routes plus the middleware stack.
pub fn router(state: AppState) -> Router {
    let mut public = Router::new();
    let mut private = Router::new();
    for e in endpoints() {
        if e.authenticated {
            private = private.route(e.path, e.handler);
        } else {
            public = public.route(e.path, e.handler);
        }
    }
    let app = public
        .merge(middleware::authenticated(private, &state))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state.clone());
    middleware::stack(app, &state)
}
