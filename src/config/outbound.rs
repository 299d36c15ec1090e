//! The shapes of `endpoints.toml` (outbound webhook endpoints, with global
//! defaults and per-endpoint overrides) and `actions.toml` (mid-call
//! actions, which call one of those endpoints).

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::duration;

/// `endpoints.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFile {
    #[serde(default)]
    pub defaults: EndpointDefaults,
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Header values written as `${ENV}` (secrets), as (endpoint or
    /// `defaults`, header name): filled by the loader from the raw file.
    #[serde(skip)]
    pub secret_headers: std::collections::HashSet<(String, String)>,
}

/// `[defaults]`: what every endpoint inherits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointDefaults {
    #[serde(with = "duration", default = "default_timeout")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Deliveries in flight to one endpoint at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Headers sent to every endpoint (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Defaults for the endpoints that do not set their own.
    #[serde(default)]
    pub method: Option<String>,
    pub auth: Option<EndpointAuth>,
    pub signing_secret: Option<SecretString>,
    /// PEM bundle of CA certificates (relative to the config dir) trusted,
    /// beside the system's roots, by the endpoints that do not set their own.
    pub ca_file: Option<String>,
}

impl Default for EndpointDefaults {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            retry: RetryPolicy::default(),
            concurrency: default_concurrency(),
            breaker: BreakerConfig::default(),
            headers: BTreeMap::new(),
            method: None,
            auth: None,
            signing_secret: None,
            ca_file: None,
        }
    }
}

/// When and how often a failed delivery is tried again.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Caps of the waits before attempt 2, 3, …: each wait is drawn
    /// uniformly below its cap (full jitter). Its length + 1 is the number
    /// of attempts. The default, 8 attempts, spreads over about a day.
    #[serde(default = "default_schedule", deserialize_with = "durations")]
    pub schedule: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
        }
    }
}

impl RetryPolicy {
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }
}

/// A circuit breaker per endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// How long it stays open before one probe is let through (doubles
    /// while probes fail, up to `max_cooldown`).
    #[serde(with = "duration", default = "default_cooldown")]
    pub cooldown: Duration,
    #[serde(with = "duration", default = "default_max_cooldown")]
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: default_breaker_failures(),
            cooldown: default_cooldown(),
            max_cooldown: default_max_cooldown(),
        }
    }
}

/// `[endpoints.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Target URL (`https://` unless `allow_http`).
    pub url: String,
    /// Default: the defaults' method, else POST.
    pub method: Option<String>,
    /// Header templates, over the defaults'.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub auth: Option<EndpointAuth>,
    /// Standard Webhooks secret (`whsec_…`): deliveries carry
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature`.
    pub signing_secret: Option<SecretString>,
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub concurrency: Option<usize>,
    pub breaker: Option<BreakerConfig>,
    /// Allow loopback, private, link-local and unique-local addresses
    /// (SSRF allow-list; for endpoints on your own network).
    #[serde(default)]
    pub allow_private: bool,
    /// Allow `http://` (plain text) targets.
    #[serde(default)]
    pub allow_http: bool,
    /// Follow redirects (each hop is checked like the first).
    #[serde(default)]
    pub follow_redirects: bool,
    /// PEM bundle of CA certificates (relative to the config dir) trusted
    /// for this endpoint beside the system's roots: an internal server
    /// behind a private CA. Default: the defaults' `ca_file`.
    pub ca_file: Option<String>,
    /// A periodic availability check: `GET` of `path` on the endpoint's
    /// origin, through the same client and SSRF guard as deliveries.
    pub health_check: Option<HealthCheckConfig>,
}

/// `health_check = { path = "/health", interval = "30s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Absolute path (with an optional query) on the endpoint's origin.
    pub path: String,
    /// Between checks (at least 5 s, at most 1 h).
    #[serde(with = "duration")]
    pub interval: Duration,
}

/// Endpoint authentication (secrets from `${ENV}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EndpointAuth {
    Bearer {
        token: SecretString,
    },
    Basic {
        username: String,
        password: SecretString,
    },
    Header {
        name: String,
        value: SecretString,
    },
}

/// `actions.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionsFile {
    #[serde(default)]
    pub actions: BTreeMap<String, MidCallActionConfig>,
}

/// `[actions.<name>]`: a mid-call action answered from an upstream endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MidCallActionConfig {
    #[serde(default)]
    pub description: String,
    /// An endpoint of `endpoints.toml` (URL base, auth, SSRF settings).
    pub endpoint: String,
    /// Agents that may call it (empty: every agent).
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default = "default_get")]
    pub method: String,
    /// Appended to the endpoint's URL (template over `args`, `call`, `agent`).
    #[serde(default)]
    pub path: String,
    /// JSON body template (for POST and friends).
    pub body: Option<toml::Value>,
    /// The whole answer's budget: DNS, connect, TLS, request and response
    /// (at most 5 s).
    #[serde(with = "duration", default = "default_deadline")]
    pub deadline: Duration,
    /// Name → JSON pointer into the upstream answer (empty: the whole answer).
    #[serde(default)]
    pub result: BTreeMap<String, String>,
    /// Answered at once, with `"degraded": true`, when the upstream is slow
    /// or failing. Without it such a call is a 504.
    pub fallback: Option<toml::Value>,
    pub cache: Option<ActionCache>,
}

/// `[actions.<name>.cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionCache {
    /// Template of the cache key, e.g. `{{ call.from }}`.
    pub key: String,
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// Keys kept at most.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
}

fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| serde::de::Error::custom(format!("`{s}`: {e}")))
        })
        .collect()
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                humantime::parse_duration(&s)
                    .map_err(|e| serde::de::Error::custom(format!("`{s}`: {e}")))
            })
            .transpose()
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_concurrency() -> usize {
    4
}
fn default_schedule() -> Vec<Duration> {
    ["10s", "2m", "20m", "2h", "6h", "12h", "24h"]
        .iter()
        .filter_map(|s| humantime::parse_duration(s).ok())
        .collect()
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_max_cooldown() -> Duration {
    Duration::from_secs(600)
}
fn default_get() -> String {
    "GET".into()
}
fn default_deadline() -> Duration {
    Duration::from_secs(2)
}
fn default_cache_entries() -> u64 {
    10_000
}
