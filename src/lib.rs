//! callgate: an inbound webhook trigger gateway for voice-agent platforms.
//!
//! Request path, outside in: `http` (router, middleware, handlers, errors) →
//! `auth` (API keys, JWTs, scopes) → `limits` (GCRA rate limits) → `input`
//! (media types, forms, phone numbers) → `schema` (JSON Schema) →
//! `idempotency` → `store` (durable jobs, group commit). `config` loads and
//! validates everything at start; `app` wires it together.

pub mod app;
pub mod auth;
pub mod calls;
pub mod cli;
pub mod clock;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod input;
pub mod limits;
pub mod metrics;
pub mod runner;
pub mod schema;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod trigger;
pub mod webhooks;

pub use app::{RunOptions, Started, run, run_with, run_worker};
