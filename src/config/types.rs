//! The configuration files' shapes, as serde types.
//!
//! Policy: every struct denies unknown keys (a typo is an error at
//! `callgate check`, never a silently ignored setting), and every field has a
//! default that is safe for production where one exists. Semantic checks that
//! span files (a trigger naming an agent, a schema file compiling) live in
//! `app::compile` and the domain modules.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::duration;
use super::{AuthConfig, CallingConfig, ConsoleConfig, DeliveriesConfig, RunnerConfig};

/// How strictly phone numbers are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneValidation {
    /// The length is possible for the country.
    #[default]
    Possible,
    /// The number is in a range the metadata knows as assigned.
    Valid,
}

/// `callgate.toml`: server, storage, limits and global defaults.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MainFile {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    #[serde(default)]
    pub defaults: DefaultsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub runner: RunnerConfig,
    #[serde(default)]
    pub calling: CallingConfig,
    /// Outbound webhook deliveries: workers, log retention.
    #[serde(default)]
    pub deliveries: DeliveriesConfig,
    /// The operator console (`/console`) and its sessions.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Alerts to operators (Slack, or a signed webhook).
    #[serde(default)]
    pub alerts: super::AlertsConfig,
}

/// `[server]`: listener, TLS and request-level protections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS. Only for running behind a TLS proxy.
    #[serde(default)]
    pub plain_http: bool,
    /// TLS certificate and key. Without them a self-signed certificate is
    /// generated into the data dir on first start.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Upper bound on handling one request, body upload included (503 past it).
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// How long graceful shutdown waits for in-flight requests.
    #[serde(default = "default_shutdown_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// Largest accepted request body in bytes (413 past it).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Connections served at once; further ones wait in the accept backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time allowed for a client to finish the TLS handshake and send headers.
    #[serde(default = "default_handshake_timeout", with = "duration")]
    pub handshake_timeout: Duration,
    /// CIDR ranges of reverse proxies whose `Forwarded` / `X-Forwarded-For`
    /// headers are believed. Empty: the socket peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The gateway's address as voice providers reach it (their status
    /// callbacks go to `<public_url>/v1/calls/<id>/events`).
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            plain_http: false,
            tls: TlsConfig::default(),
            request_timeout: default_request_timeout(),
            shutdown_grace: default_shutdown_grace(),
            max_body_bytes: default_max_body_bytes(),
            max_connections: default_max_connections(),
            handshake_timeout: default_handshake_timeout(),
            trusted_proxies: Vec::new(),
            public_url: None,
        }
    }
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (relative paths are relative to the config dir).
    pub cert_file: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
    /// Extra DNS names or IPs for the generated self-signed certificate
    /// (it always covers `localhost`, `127.0.0.1` and `::1`).
    #[serde(default)]
    pub self_signed_names: Vec<String>,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite:<path>` (relative paths are inside the data dir), or
    /// `postgres://user:password@host:port/database` (libpq style; a schema
    /// other than `public` with `?options=-csearch_path%3D<schema>`).
    #[serde(default = "default_storage_url")]
    pub url: String,
    /// Accepted jobs waiting for the writer before new ones get 503.
    #[serde(default = "default_max_pending_writes")]
    pub max_pending_writes: usize,
    /// Most jobs committed in one transaction (group commit).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the writer waits for a lock held by another process.
    /// PostgreSQL: also each statement's `statement_timeout` and the wait
    /// for a pooled connection.
    #[serde(default = "default_busy_timeout", with = "duration")]
    pub busy_timeout: Duration,
    /// Connections for reads (job lookups, idempotency checks). SQLite only.
    #[serde(default = "default_read_connections")]
    pub read_connections: u32,
    /// PostgreSQL: most pooled connections per instance (reads and the
    /// runner's writes; the group-commit writer has one more of its own).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// PostgreSQL: group-commit batches in flight at once, each on a
    /// connection of its own (one runs while another's commit flushes).
    #[serde(default = "default_write_connections")]
    pub write_connections: usize,
    /// PostgreSQL: how long connecting may take before the store reports
    /// itself unavailable.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// PostgreSQL: at start, how long to keep trying to reach a server
    /// that is down, still starting or not answering (with a growing
    /// pause) before giving up with an error. An answer that waiting will
    /// not change (a wrong password, no such database, `fsync` off) fails
    /// at once.
    #[serde(default = "default_start_timeout", with = "duration")]
    pub start_timeout: Duration,
    /// PostgreSQL: no LISTEN connection; runners find jobs other instances
    /// accepted only by polling (`runner.poll_interval`). For poolers that
    /// cannot keep a session (PgBouncer in transaction mode). Nor a
    /// leadership session: every instance runs the housekeeping.
    #[serde(default)]
    pub poll_only: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: default_storage_url(),
            max_pending_writes: default_max_pending_writes(),
            max_batch: default_max_batch(),
            busy_timeout: default_busy_timeout(),
            read_connections: default_read_connections(),
            pool_size: default_pool_size(),
            write_connections: default_write_connections(),
            connect_timeout: default_connect_timeout(),
            start_timeout: default_start_timeout(),
            poll_only: false,
        }
    }
}

/// A GCRA quota: `requests` per `per`, with up to `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub requests: u32,
    #[serde(with = "duration")]
    pub per: Duration,
    pub burst: u32,
}

impl RateSpec {
    /// The time it takes to earn back one request.
    pub fn replenish_interval(&self) -> Duration {
        self.per / self.requests.max(1)
    }

    /// Whether the spec describes a usable quota.
    pub fn check(&self) -> Result<(), String> {
        if self.requests == 0 || self.burst == 0 {
            return Err("`requests` and `burst` must be at least 1".into());
        }
        if self.replenish_interval().is_zero() {
            return Err("`per` must be long enough that `per / requests` is at least 1ns".into());
        }
        Ok(())
    }
}

/// `[limits]`: global defaults; triggers, keys and JWT issuers may override.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Per client IP, before authentication (protects the auth work).
    #[serde(default = "default_per_ip")]
    pub per_ip: RateSpec,
    /// Per authenticated principal (API key or JWT subject).
    #[serde(default = "default_per_principal")]
    pub per_principal: RateSpec,
    /// Per trigger, across all callers.
    #[serde(default = "default_per_trigger")]
    pub per_trigger: RateSpec,
    /// Verified status callbacks per voice provider (providers may
    /// override). Callbacks are not limited per IP: a platform sends from
    /// few addresses, and only a callback whose signature fails is charged
    /// to its IP's `per_ip` bucket.
    #[serde(default = "default_per_provider")]
    pub per_provider: RateSpec,
    /// How often idle limiter keys are dropped.
    #[serde(default = "default_housekeeping", with = "duration")]
    pub housekeeping_interval: Duration,
    /// Tracked keys per limiter that trigger an early clean-up.
    #[serde(default = "default_max_tracked_keys")]
    pub max_tracked_keys: usize,
    /// Where the limits' state lives: `memory` (each process its own) or
    /// `redis` (shared by every instance, exact across them).
    #[serde(default)]
    pub backend: LimitsBackend,
    /// `redis://[user:password@]host[:port][/db]`; required with
    /// `backend = "redis"`. A secret (it may hold a password): `${ENV}` it.
    #[serde(default)]
    pub redis_url: Option<SecretString>,
    /// How many instances share the limits. While Redis is unreachable each
    /// one falls back to a local limit of (limit ÷ `instances`).
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Prefix of every Redis key (`<prefix><limit>:<key>`), so that several
    /// deployments can share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    /// How long one limit decision may wait for Redis before the instance
    /// falls back to its local share (and treats Redis as down until the
    /// background probe reaches it again).
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub redis_timeout: Duration,
}

/// `limits.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsBackend {
    /// In-process GCRA (one instance, or per-instance limits).
    #[default]
    Memory,
    /// GCRA in Redis, shared by every instance.
    Redis,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_ip: default_per_ip(),
            per_principal: default_per_principal(),
            per_trigger: default_per_trigger(),
            per_provider: default_per_provider(),
            housekeeping_interval: default_housekeeping(),
            max_tracked_keys: default_max_tracked_keys(),
            backend: LimitsBackend::default(),
            redis_url: None,
            instances: default_instances(),
            redis_prefix: default_redis_prefix(),
            redis_timeout: default_redis_timeout(),
        }
    }
}

/// `[idempotency]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a key and its first answer are kept.
    #[serde(default = "default_idem_retention", with = "duration")]
    pub retention: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention: default_idem_retention(),
        }
    }
}

/// How form-encoded keys express nesting.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormNesting {
    /// Both `customer[name]` and `customer__name` nest.
    #[default]
    Auto,
    /// `customer[name]=Ada` (PHP/Rails style, `tags[]` for arrays).
    Brackets,
    /// `customer__name=Ada` (Webhooks by Zapier's flattening).
    DoubleUnderscore,
    /// Keys are taken literally.
    None,
}

/// `[defaults]`: values triggers inherit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsConfig {
    /// Region (ISO 3166 alpha-2) for phone numbers written without `+`.
    #[serde(default = "default_region")]
    pub phone_region: String,
    #[serde(default)]
    pub form_nesting: FormNesting,
    /// `possible` (length fits the country) or `valid` (assigned range).
    #[serde(default)]
    pub phone_validation: PhoneValidation,
}

impl Default for DefaultsConfig {
    fn default() -> Self {
        Self {
            phone_region: default_region(),
            form_nesting: FormNesting::default(),
            phone_validation: PhoneValidation::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_max_connections() -> usize {
    10_000
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_storage_url() -> String {
    "sqlite:callgate.db".to_owned()
}
fn default_max_pending_writes() -> usize {
    4096
}
fn default_max_batch() -> usize {
    512
}
fn default_write_connections() -> usize {
    2
}
fn default_busy_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_read_connections() -> u32 {
    4
}
fn default_pool_size() -> usize {
    16
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_start_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_per_ip() -> RateSpec {
    RateSpec {
        requests: 100,
        per: Duration::from_secs(1),
        burst: 200,
    }
}
fn default_per_principal() -> RateSpec {
    RateSpec {
        requests: 50,
        per: Duration::from_secs(1),
        burst: 100,
    }
}
fn default_per_trigger() -> RateSpec {
    RateSpec {
        requests: 100,
        per: Duration::from_secs(1),
        burst: 200,
    }
}
fn default_per_provider() -> RateSpec {
    RateSpec {
        requests: 1000,
        per: Duration::from_secs(1),
        burst: 2000,
    }
}
fn default_housekeeping() -> Duration {
    Duration::from_secs(60)
}
fn default_max_tracked_keys() -> usize {
    100_000
}
fn default_instances() -> u32 {
    1
}
/// A healthy Redis answers the GCRA script in well under a millisecond on a
/// LAN; 100 ms rides out a busy moment, while a request never waits longer
/// than that before failing open.
fn default_redis_timeout() -> Duration {
    Duration::from_millis(100)
}
fn default_redis_prefix() -> String {
    "callgate:".to_owned()
}
fn default_idem_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_region() -> String {
    "US".to_owned()
}
