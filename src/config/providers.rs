//! The shape of `providers.toml`: the simulator and HTTP voice providers
//! (requests, lookups, callbacks and their signatures).

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::duration;
use super::{OneOrMany, RateSpec};

/// `providers.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProvidersFile {
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// `[providers.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// In-process simulated phone network (tests, demos, benchmarks).
    Simulator(SimulatorConfig),
    /// A real voice platform's HTTP API.
    Http(Box<HttpProviderConfig>),
}

impl ProviderConfig {
    pub fn dial_rate(&self) -> Option<RateSpec> {
        match self {
            ProviderConfig::Simulator(s) => s.dial_rate,
            ProviderConfig::Http(h) => h.dial_rate,
        }
    }

    /// Overrides `[limits.per_provider]` for this provider's callbacks.
    pub fn callback_rate_limit(&self) -> Option<RateSpec> {
        match self {
            ProviderConfig::Simulator(s) => s.callback_rate_limit,
            ProviderConfig::Http(h) => h.callback_rate_limit,
        }
    }
}

/// `type = "simulator"`: deterministic for a seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    #[serde(default)]
    pub seed: u64,
    /// From dialing to answer (or to giving up).
    #[serde(with = "duration", default = "default_ring")]
    pub ring_time: Duration,
    /// Share of calls answered (0–1).
    #[serde(default = "default_answer_rate")]
    pub answer_rate: f64,
    /// Share of unanswered calls that are `busy` (the rest `no_answer`).
    #[serde(default)]
    pub busy_rate: f64,
    /// Share of dials that fail outright.
    #[serde(default)]
    pub fail_rate: f64,
    /// Talk time of answered calls, drawn uniformly.
    #[serde(with = "duration", default = "default_min_talk")]
    pub min_duration: Duration,
    #[serde(with = "duration", default = "default_max_talk")]
    pub max_duration: Duration,
    /// Outcome of answered calls → weight.
    #[serde(default = "default_outcomes")]
    pub outcomes: BTreeMap<String, f64>,
    /// Standard Webhooks secret (`whsec_…`) the simulator signs its events
    /// with. Required when the runner and the server are separate processes;
    /// otherwise a random one is made at start.
    pub callback_secret: Option<SecretString>,
    /// Where the simulator posts events (default: this gateway's own
    /// listener, or `server.public_url`).
    pub callback_base_url: Option<String>,
    pub dial_rate: Option<RateSpec>,
    /// Overrides `[limits.per_provider]` (verified callbacks).
    pub callback_rate_limit: Option<RateSpec>,
}

/// `type = "http"`: a generic adapter for a voice platform's API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    pub create_call: HttpRequestConfig,
    /// JSON pointer of the provider's call id in the create-call response.
    pub call_id: String,
    /// How to ask the provider about a call (reconciliation after a crash);
    /// templates see `call` with `provider_call_id`.
    pub lookup: Option<LookupConfig>,
    pub callbacks: CallbackConfig,
    /// Deadline of one provider request.
    #[serde(with = "duration", default = "default_provider_timeout")]
    pub timeout: Duration,
    pub dial_rate: Option<RateSpec>,
    /// Overrides `[limits.per_provider]` (verified callbacks).
    pub callback_rate_limit: Option<RateSpec>,
    /// PEM bundle of CA certificates (relative to the config dir) trusted
    /// for this provider's API beside the system's roots (a platform, or a
    /// proxy in front of it, behind a private CA).
    pub ca_file: Option<String>,
}

/// One templated HTTP request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestConfig {
    #[serde(default = "default_post")]
    pub method: String,
    /// Template.
    pub url: String,
    /// Header templates (secrets from `${ENV}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body_format: BodyFormat,
    /// JSON template of the body.
    pub body: Option<toml::Value>,
}

/// `[providers.<name>.lookup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupConfig {
    #[serde(flatten)]
    pub request: HttpRequestConfig,
    /// Pointer of the provider's status in the response (mapped like
    /// callbacks). A 404 answer means the call does not exist.
    pub status: OneOrMany,
}

/// Request body encodings.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    #[default]
    Json,
    Form,
}

/// `[providers.<name>.callbacks]`: reading the provider's status callbacks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    pub signature: SignatureConfig,
    #[serde(default)]
    pub format: BodyFormat,
    /// Pointer(s) of the provider's status; the first present wins.
    pub status: OneOrMany,
    /// Provider status → ours (`queued`, `dialing`, `ringing`,
    /// `in_progress`, `completed`, `no_answer`, `busy`, `failed`,
    /// `canceled`). Unmapped values are acknowledged and ignored.
    pub status_map: BTreeMap<String, String>,
    pub provider_call_id: Option<String>,
    /// An id that makes a repeated delivery recognisable (else the body hash).
    pub event_id: Option<String>,
    pub duration_seconds: Option<String>,
    pub duration_ms: Option<String>,
    pub outcome: Option<String>,
    /// Provider outcome → ours (unmapped values are kept as they are).
    #[serde(default)]
    pub outcome_map: BTreeMap<String, String>,
    /// Outcome → final status, when the provider reports how a call ended
    /// only as a reason (Vapi's `endedReason: customer-did-not-answer`).
    #[serde(default)]
    pub status_from_outcome: BTreeMap<String, String>,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub recording_url: Option<String>,
    /// Name → pointer: extra fields kept on the call record.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
}

/// How a provider signs its callbacks.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SignatureConfig {
    /// `webhook-id` / `webhook-timestamp` / `webhook-signature`, ±5 min.
    StandardWebhooks { secret: SecretString },
    /// `X-Twilio-Signature`: HMAC-SHA1 over the public URL and sorted params.
    Twilio { auth_token: SecretString },
    /// `X-Retell-Signature: v=<ms>,d=<hex>`, at most 5 min old.
    Retell { api_key: SecretString },
    /// HMAC-SHA256 of the raw body in a header (hex or base64), optionally
    /// with a prefix such as `sha256=`.
    HmacSha256 {
        header: String,
        secret: SecretString,
        #[serde(default)]
        encoding: SignatureEncoding,
        #[serde(default)]
        prefix: String,
    },
    /// A shared secret sent verbatim in a header (Vapi's `X-Vapi-Secret`).
    SharedSecret {
        header: String,
        secret: SecretString,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

fn default_answer_rate() -> f64 {
    0.8
}
fn default_max_talk() -> Duration {
    Duration::from_secs(120)
}
fn default_min_talk() -> Duration {
    Duration::from_secs(20)
}
fn default_outcomes() -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("interested".to_owned(), 0.3),
        ("not_interested".to_owned(), 0.5),
        ("voicemail".to_owned(), 0.2),
    ])
}
fn default_post() -> String {
    "POST".into()
}
fn default_provider_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_ring() -> Duration {
    Duration::from_secs(2)
}
