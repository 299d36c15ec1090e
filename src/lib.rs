//! callgate: an inbound webhook trigger gateway for voice-agent platforms.
//!
//! Modules sit in layers (ARCHITECTURE.md, enforced by a test): entry
//! (`cli`) → wiring (`app`) → `http` → services (`runner`, `calls`,
//! `webhooks`) → domain (`catalog`, `trigger`, `automation`, `calling`,
//! `outbound`, `auth`, `limits`, `idempotency`, `input`, `schema`,
//! `template`, `job`) → `store` → leaves (`config`, `crypto`, `ids`,
//! `clock`). Imports only go down.

// Tests may unwrap, expect and panic: a failure there is the test's answer.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod app;
pub mod auth;
pub mod automation;
pub mod calling;
pub mod calls;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dedupe;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod input;
pub mod job;
pub mod limits;
pub mod outbound;
pub mod runner;
pub mod schema;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod trigger;
pub mod webhooks;

pub use app::{RunOptions, Started, run, run_with, run_worker};

/// Unit tests' access to the repository's fixtures (`tests/fixtures/`).
#[cfg(test)]
pub(crate) mod fixtures {
    /// A sender sample from `tests/fixtures/samples/` (see its README); a
    /// missing file fails the test that wanted it.
    pub fn sample(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/samples/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
    }
}
