//! One integration-test binary: the real server over HTTPS on an ephemeral
//! port, a real client, real SQLite files. Modules mirror the routes and
//! concerns.

mod accept;
mod actions;
mod auth;
mod calls;
mod cli;
mod deliveries;
mod durability;
mod errors;
mod fuzz;
mod idempotency;
mod input;
mod jobs;
mod jwt;
mod limits;
mod metrics;
mod openapi;
mod receiver;
mod runner;
mod schemathesis;
mod support;
