//! The configuration files' shapes, as serde types.
//!
//! Policy: every struct denies unknown keys (a typo is an error at
//! `callgate check`, never a silently ignored setting), and every field has a
//! default that is safe for production where one exists. Semantic checks that
//! span files (a trigger naming an agent, a schema file compiling) live in
//! `validate.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

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
}

/// `[runner]`: the workers that execute accepted jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Run the workers inside `callgate serve` (`--no-runner` turns it off;
    /// `callgate run-worker` runs them alone).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Jobs executed at once by one process.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How long a claim holds before another worker may take the job over;
    /// renewed while the job runs.
    #[serde(default = "default_lease", with = "duration")]
    pub lease: Duration,
    /// How often idle workers look for due jobs (new jobs wake them at once).
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
    /// Attempts of a failing step before the job is `failed`.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Exponential backoff with full jitter between attempts.
    #[serde(default = "default_retry_base", with = "duration")]
    pub retry_base: Duration,
    #[serde(default = "default_retry_max", with = "duration")]
    pub retry_max: Duration,
    /// Backstop for jobs waiting for a free line: they are woken one per
    /// freed line, oldest first, and look again after this long at the
    /// latest (a safety net, e.g. after `max_concurrent_calls` was raised).
    #[serde(default = "default_line_retry", with = "duration")]
    pub line_retry: Duration,
    /// On shutdown, running jobs get this long before their leases are
    /// released for another worker.
    #[serde(default = "default_runner_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// A call with no news for this long is checked with its provider.
    #[serde(default = "default_stale_call", with = "duration")]
    pub stale_call_after: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: default_workers(),
            lease: default_lease(),
            poll_interval: default_poll(),
            max_attempts: default_attempts(),
            retry_base: default_retry_base(),
            retry_max: default_retry_max(),
            line_retry: default_line_retry(),
            shutdown_grace: default_runner_grace(),
            stale_call_after: default_stale_call(),
        }
    }
}

/// `[deliveries]` in `callgate.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesConfig {
    /// How long the delivery log keeps deliveries and their attempts.
    #[serde(with = "duration", default = "default_retention")]
    pub retention: Duration,
    /// Deliveries sent at once by one process (across endpoints).
    #[serde(default = "default_delivery_workers")]
    pub workers: usize,
    /// How long past its endpoint's timeout a claimed delivery stays leased
    /// to the process sending it. When that process dies mid-attempt, the
    /// delivery is sent again (same `webhook-id`) once the lease is over.
    #[serde(with = "duration", default = "default_lease_grace")]
    pub lease_grace: Duration,
}

impl Default for DeliveriesConfig {
    fn default() -> Self {
        Self {
            retention: default_retention(),
            workers: default_delivery_workers(),
            lease_grace: default_lease_grace(),
        }
    }
}

fn default_lease_grace() -> Duration {
    Duration::from_secs(30)
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_delivery_workers() -> usize {
    16
}

/// `[calling]`: rules for every call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallingConfig {
    /// Do-not-call list: one E.164 number per line, `#` comments (relative
    /// to the config dir; a missing file is an empty list).
    #[serde(default = "default_dnc_file")]
    pub do_not_call_file: String,
    /// Input field with the callee's IANA time zone, when the sender knows it.
    #[serde(default = "default_tz_field")]
    pub timezone_field: String,
}

impl Default for CallingConfig {
    fn default() -> Self {
        Self {
            do_not_call_file: default_dnc_file(),
            timezone_field: default_tz_field(),
        }
    }
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
    /// `sqlite:<path>` (relative paths are inside the data dir).
    #[serde(default = "default_storage_url")]
    pub url: String,
    /// Accepted jobs waiting for the writer before new ones get 503.
    #[serde(default = "default_max_pending_writes")]
    pub max_pending_writes: usize,
    /// Most jobs committed in one transaction (group commit).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the writer waits for a lock held by another process.
    #[serde(default = "default_busy_timeout", with = "duration")]
    pub busy_timeout: Duration,
    /// Connections for reads (job lookups, idempotency checks).
    #[serde(default = "default_read_connections")]
    pub read_connections: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: default_storage_url(),
            max_pending_writes: default_max_pending_writes(),
            max_batch: default_max_batch(),
            busy_timeout: default_busy_timeout(),
            read_connections: default_read_connections(),
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

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API key hashes, managed by `callgate key new` (relative to config dir).
    #[serde(default = "default_keys_file")]
    pub keys_file: String,
    /// How often the keys file is checked for changes while serving.
    #[serde(default = "default_keys_reload", with = "duration")]
    pub keys_reload_interval: Duration,
    #[serde(default)]
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys_file: default_keys_file(),
            keys_reload_interval: default_keys_reload(),
            jwt: JwtConfig::default(),
        }
    }
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    #[serde(default)]
    pub issuers: BTreeMap<String, IssuerConfig>,
}

/// `[auth.jwt.issuers.<id>]`: one trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values (one must match).
    pub audience: OneOrMany,
    /// Accepted algorithms. The token header never widens this list.
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` / `nbf` (at most 60 s).
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    /// Claim holding scopes: a space-separated string or an array.
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Per-subject rate limit for this issuer's tokens.
    pub rate_limit: Option<RateSpec>,
    /// Verification keys (several during rotation).
    pub keys: Vec<JwtKeyConfig>,
}

/// One verification key of an issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Matches the token header's `kid`. When any key of the issuer has one,
    /// tokens must name a configured `kid`.
    pub kid: Option<String>,
    /// HMAC secret (use `${ENV_VAR}`; never commit it).
    pub secret: Option<SecretString>,
    /// PEM public key (RSA, EC P-256/P-384 or Ed25519), relative to config dir.
    pub public_key_file: Option<String>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `keys.toml`: API keys, hashes only.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
}

/// One `[[keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Unique name; the principal is `key:<name>`.
    pub name: String,
    /// `sha256:<64 hex digits>` of the plaintext key.
    pub hash: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub created_at: Option<String>,
    /// Overrides `[limits.per_principal]` for this key.
    pub rate_limit: Option<RateSpec>,
    /// A disabled key is rejected like an unknown one.
    #[serde(default)]
    pub disabled: bool,
}

/// Serde helper for human durations (`"30s"`, `"24h"`).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration like \"30s\" or \"24h\": {e}"
            ))
        })
    }
}

fn default_true() -> bool {
    true
}
fn default_workers() -> usize {
    8
}
fn default_lease() -> Duration {
    Duration::from_secs(15)
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_attempts() -> u32 {
    5
}
fn default_retry_base() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_line_retry() -> Duration {
    Duration::from_secs(30)
}
fn default_runner_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_stale_call() -> Duration {
    Duration::from_secs(600)
}
fn default_dnc_file() -> String {
    "do_not_call.txt".to_owned()
}
fn default_tz_field() -> String {
    "/timezone".to_owned()
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
fn default_busy_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_read_connections() -> u32 {
    4
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
fn default_idem_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_region() -> String {
    "US".to_owned()
}
fn default_keys_file() -> String {
    "keys.toml".to_owned()
}
fn default_keys_reload() -> Duration {
    Duration::from_secs(2)
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_scope_claim() -> String {
    "scope".to_owned()
}
