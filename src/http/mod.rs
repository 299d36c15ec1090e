//! The HTTP surface: one `router(state)` with every route, and one
//! `middleware_stack` that wraps it, read top to bottom in the order a
//! request meets it. The server and the tests use these same two functions.

mod actions;
pub(crate) mod call_list;
pub(crate) mod calls;
mod console;
pub(crate) mod deliveries;
pub(crate) mod dnc;
mod docs;
pub mod endpoints;
pub mod error;
pub(crate) mod extract;
mod health;
pub mod jobs;
pub mod keys;
pub mod middleware;
pub mod prometheus;
pub mod refusals;
pub mod serve;
pub mod stats;
pub(crate) mod triggers;

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use tokio::sync::Notify;

use crate::auth::{Issuers, KeySet};
use crate::calls::Providers;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::idempotency::Inflight;
use crate::limits::Limiters;
use crate::runner::Runner;
use crate::store::Store;

/// Shared state of the running gateway.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// What handlers and middleware share.
pub struct AppInner {
    pub config: Arc<Catalog>,
    pub store: Arc<dyn Store>,
    pub providers: Arc<Providers>,
    /// Wakes the runner when jobs become due.
    pub wake: Arc<Notify>,
    /// Replaced when the key file changes.
    pub keys: ArcSwap<KeySet>,
    /// Keys made through the API, stored in the database.
    pub db_keys: crate::auth::DbKeys,
    pub issuers: Issuers,
    pub limiters: Limiters,
    pub clock: Arc<dyn Clock>,
    pub inflight: Inflight,
    /// Endpoint clients, breakers and action caches.
    pub outbound: Arc<crate::webhooks::Outbound>,
    /// Renders `/metrics` (the process-wide Prometheus recorder).
    pub metrics: prometheus::Metrics,
    /// Refused trigger requests not flushed to the store yet.
    pub refusals: Arc<refusals::Refusals>,
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }

    /// A runner over this state's store, providers and clock.
    pub fn runner(&self) -> Runner {
        Runner::new(
            self.config.clone(),
            self.store.clone(),
            self.providers.clone(),
            self.clock.clone(),
            self.wake.clone(),
            self.outbound.wake.clone(),
            self.outbound.alerts.clone(),
        )
    }

    /// The delivery engine over this state's store and endpoints.
    pub fn deliverer(&self) -> crate::webhooks::Deliverer {
        crate::webhooks::Deliverer::new(
            self.config.clone(),
            self.store.clone(),
            self.outbound.clone(),
            self.clock.clone(),
        )
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks).
    Public,
    /// Voice providers: the handler verifies the provider's signature, then
    /// applies the provider's limit (forgeries are charged per IP).
    Signed,
    /// A principal (API key or JWT), after the per-IP limit.
    Authenticated,
}

/// One route: method, path (axum syntax) and who may call it.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<AppState>,
}

impl Endpoint {
    pub fn authenticated(&self) -> bool {
        self.access == Access::Authenticated
    }
}

fn endpoint<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Endpoint
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    Endpoint {
        method,
        path,
        access,
        handler: on(filter, handler),
    }
}

/// Every route the gateway serves. The router is built from this list, and
/// the OpenAPI test compares it with `openapi.yaml`, so the two cannot drift.
pub fn endpoints() -> Vec<Endpoint> {
    use Access::*;
    vec![
        endpoint(Method::GET, "/healthz", Public, health::healthz),
        endpoint(Method::GET, "/readyz", Public, health::readyz),
        endpoint(Method::GET, "/docs", Public, docs::docs),
        endpoint(
            Method::GET,
            "/v1/triggers",
            Authenticated,
            triggers::list_triggers,
        ),
        endpoint(
            Method::GET,
            "/v1/triggers/{trigger_id}",
            Authenticated,
            triggers::get_trigger,
        ),
        endpoint(
            Method::POST,
            "/v1/triggers/{trigger_id}",
            Authenticated,
            triggers::accept_trigger,
        ),
        endpoint(Method::GET, "/v1/jobs", Authenticated, jobs::list_jobs),
        endpoint(
            Method::GET,
            "/v1/jobs/{job_id}",
            Authenticated,
            jobs::get_job,
        ),
        endpoint(
            Method::POST,
            "/v1/jobs/{job_id}/cancel",
            Authenticated,
            jobs::cancel_job,
        ),
        endpoint(
            Method::POST,
            "/v1/jobs/{job_id}/retry",
            Authenticated,
            jobs::retry_job,
        ),
        endpoint(
            Method::GET,
            "/v1/calls",
            Authenticated,
            call_list::list_calls,
        ),
        endpoint(
            Method::GET,
            "/v1/calls/{call_id}",
            Authenticated,
            calls::get_call,
        ),
        endpoint(
            Method::POST,
            "/v1/calls/{call_id}/events",
            Signed,
            calls::call_event,
        ),
        endpoint(
            Method::POST,
            "/v1/agents/{agent_id}/actions/{action}",
            Authenticated,
            actions::invoke_action,
        ),
        endpoint(
            Method::GET,
            "/v1/deliveries",
            Authenticated,
            deliveries::list_deliveries,
        ),
        endpoint(
            Method::GET,
            "/v1/deliveries/{delivery_id}",
            Authenticated,
            deliveries::get_delivery,
        ),
        endpoint(
            Method::POST,
            "/v1/deliveries/{delivery_id}/retry",
            Authenticated,
            deliveries::retry_delivery,
        ),
        endpoint(
            Method::GET,
            "/v1/do-not-call",
            Authenticated,
            dnc::list_do_not_call,
        ),
        endpoint(
            Method::POST,
            "/v1/do-not-call",
            Authenticated,
            dnc::import_do_not_call,
        ),
        endpoint(
            Method::GET,
            "/v1/do-not-call/{number}",
            Authenticated,
            dnc::get_do_not_call,
        ),
        endpoint(
            Method::PUT,
            "/v1/do-not-call/{number}",
            Authenticated,
            dnc::put_do_not_call,
        ),
        endpoint(Method::GET, "/v1/keys", Authenticated, keys::list_keys),
        endpoint(Method::POST, "/v1/keys", Authenticated, keys::post_key),
        endpoint(
            Method::POST,
            "/v1/keys/{name}/disable",
            Authenticated,
            keys::post_disable_key,
        ),
        endpoint(
            Method::DELETE,
            "/v1/do-not-call/{number}",
            Authenticated,
            dnc::delete_do_not_call,
        ),
        endpoint(
            Method::GET,
            "/v1/endpoints",
            Authenticated,
            endpoints::list_endpoints,
        ),
        endpoint(
            Method::GET,
            "/v1/endpoints/{name}",
            Authenticated,
            endpoints::get_endpoint,
        ),
        endpoint(Method::GET, "/v1/stats", Authenticated, stats::get_stats),
        endpoint(Method::GET, "/metrics", Authenticated, deliveries::metrics),
    ]
}

/// The complete application: routes plus the middleware stack.
pub fn router(state: AppState) -> Router {
    let mut public = Router::new();
    let mut signed = Router::new();
    let mut private = Router::new();
    for e in endpoints() {
        match e.access {
            Access::Public => public = public.route(e.path, e.handler),
            Access::Signed => signed = signed.route(e.path, e.handler),
            Access::Authenticated => private = private.route(e.path, e.handler),
        }
    }
    let app = public
        .merge(signed)
        .merge(middleware::authenticated(private, &state))
        // The console authenticates by session cookie, not credentials per
        // request (`console::session`); its pages call the handlers above.
        .nest("/console", console::router(&state))
        // Outside every route's own layers (auth, limits), so 401s and 429s
        // are counted under their route too, and the accept route's
        // refusals for the stats (`refusals::note`).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            prometheus::track,
        ))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state.clone());
    middleware::stack(app, &state)
}
