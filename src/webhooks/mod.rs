//! Outbound HTTP: webhook deliveries (signed, retried, logged) and mid-call
//! action upstreams, through one client per endpoint that carries the SSRF
//! guard, a concurrency limit and a circuit breaker.

pub mod actions;
pub mod breaker;
pub mod client;
pub mod delivery;
pub mod ssrf;

pub use client::{EndpointClient, Outbound};
pub use delivery::Deliverer;
