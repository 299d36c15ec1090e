//! One integration-test binary: the real server over HTTPS on an ephemeral
//! port, a real client, real SQLite files. Modules mirror the routes and
//! concerns.

// Tests may unwrap, expect, panic and print: a failure is the test's answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod accept;
mod actions;
mod alerts;
mod allowlist;
mod architecture;
mod auth;
mod backup;
mod calling_window;
mod calls;
mod calls_api;
mod cli;
mod config;
mod console;
mod dedupe;
mod deliveries;
mod deploy_files;
mod dnc_api;
mod docs;
mod durability;
mod errors;
mod fuzz;
mod housekeeping;
mod idempotency;
mod input;
mod jobs;
mod jobs_api;
mod jwks;
mod jwt;
mod keys_api;
mod limits;
mod limits_redis;
mod logs;
mod metrics;
mod openapi;
mod ops_api;
mod outage;
mod private_ca;
mod receiver;
mod runner;
mod scale_out;
mod schemathesis;
mod shared_limits;
mod signatures;
mod store;
mod support;
