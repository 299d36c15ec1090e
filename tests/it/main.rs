//! One integration-test binary: the real server over HTTPS on an ephemeral
//! port, a real client, real SQLite files. Modules mirror the routes and
//! concerns.

mod accept;
mod actions;
mod architecture;
mod auth;
mod calls;
mod cli;
mod config;
mod deliveries;
mod durability;
mod errors;
mod idempotency;
mod input;
mod jobs;
mod jwt;
mod limits;
mod logs;
mod metrics;
mod openapi;
mod receiver;
mod runner;
mod store;
mod support;
