//! Outbound HTTP: webhook deliveries (signed, retried, logged) and mid-call
//! action upstreams, through one client per endpoint that carries the SSRF
//! guard, a concurrency limit and a circuit breaker; and the key sets of
//! JWKS issuers (`jwks`), through the same guard; endpoint health checks
//! (`health`).

pub mod actions;
pub mod alerts;
pub mod breaker;
pub mod client;
pub mod delivery;
pub mod health;
pub mod jwks;
pub mod outbound;
mod shared_breaker;
pub mod ssrf;

pub use alerts::{Alert, AlertKind, AlertSink, Alerter};
pub use client::EndpointClient;
pub use delivery::Deliverer;
pub use outbound::Outbound;
