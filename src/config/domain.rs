//! The shapes of the domain files: `agents.toml`, `triggers.toml`,
//! `automations.toml` and `providers.toml`.
//!
//! Policy as in `types.rs`: unknown keys are errors; cross-references (an
//! agent naming a provider, a trigger naming an automation, a step naming a
//! step) are checked in `validate.rs` and `validate_calls.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::types::{FormNesting, OneOrMany, PhoneValidation, RateSpec, duration};

/// `agents.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    #[serde(default)]
    pub agents: BTreeMap<String, AgentConfig>,
}

/// `[agents.<id>]`: a Voice Agent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub name: String,
    /// A provider from `providers.toml`.
    pub provider: String,
    /// Caller number (E.164).
    pub from_number: String,
    /// Calls this agent may have in progress at once; more jobs wait.
    #[serde(default = "default_lines")]
    pub max_concurrent_calls: u32,
    /// The provider's own id for this agent (Vapi assistant, Retell agent…),
    /// available to request templates as `agent.provider_agent_id`.
    pub provider_agent_id: Option<String>,
    /// When calls may be placed, in the callee's local time.
    #[serde(default)]
    pub calling_window: CallingWindowConfig,
    /// Time zone when neither the input nor the number tells the callee's
    /// (IANA name). Default: UTC.
    pub default_timezone: Option<String>,
}

/// `[agents.<id>.calling_window]`. The default, 08:00–21:00 every day, is
/// the US federal rule for telemarketing calls.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallingWindowConfig {
    /// `false` places calls at any hour (for non-telemarketing agents).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Days (`mon` … `sun`).
    #[serde(default = "all_days")]
    pub days: Vec<String>,
    /// Local opening time, `HH:MM`.
    #[serde(default = "default_open")]
    pub start: String,
    /// Local closing time, `HH:MM` (exclusive).
    #[serde(default = "default_close")]
    pub end: String,
}

impl Default for CallingWindowConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            days: all_days(),
            start: default_open(),
            end: default_close(),
        }
    }
}

/// `triggers.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TriggersFile {
    #[serde(default)]
    pub triggers: BTreeMap<String, TriggerConfig>,
}

/// `[triggers.<id>]`: one inbound URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    #[serde(default)]
    pub description: String,
    /// JSON Schema file (draft 2020-12), relative to the config dir.
    pub schema: String,
    pub action: ActionConfig,
    /// JSON pointers of further fields normalised to E.164 (the action's
    /// `to` field always is).
    #[serde(default)]
    pub phone_fields: Vec<String>,
    /// Overrides `[defaults].phone_region`.
    pub phone_region: Option<String>,
    /// Overrides `[defaults].form_nesting`.
    pub form_nesting: Option<FormNesting>,
    /// Overrides `[defaults].phone_validation`.
    pub phone_validation: Option<PhoneValidation>,
    /// Overrides `[limits.per_trigger]`.
    pub rate_limit: Option<RateSpec>,
}

/// What an accepted trigger runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionConfig {
    /// Place one call with `agent` to the number at JSON pointer `to`; the
    /// input's `variables` object goes to the agent.
    StartCall {
        agent: String,
        #[serde(default = "default_to_pointer")]
        to: String,
    },
    /// Run a named automation with the input as context (`input`).
    Automation {
        name: String,
        /// The input field holding the number to call, normalised to E.164
        /// at the gateway (optional for automations).
        #[serde(default)]
        to: Option<String>,
    },
}

impl ActionConfig {
    /// The pointer of the input field that must hold a phone number.
    pub fn to_pointer(&self) -> Option<&str> {
        match self {
            ActionConfig::StartCall { to, .. } => Some(to),
            ActionConfig::Automation { to, .. } => to.as_deref(),
        }
    }
}

/// `automations.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AutomationsFile {
    #[serde(default)]
    pub automations: BTreeMap<String, AutomationConfig>,
}

/// `[automations.<name>]`: ordered steps, started by a trigger or by a call
/// event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationConfig {
    #[serde(default)]
    pub description: String,
    /// A call event that starts it: `call.completed`, `call.no_answer`,
    /// `call.busy`, `call.failed`, `call.canceled`. Absent: started by
    /// triggers only.
    pub on: Option<String>,
    /// Which calls' events start it.
    #[serde(default)]
    pub filter: EventFilter,
    pub steps: Vec<StepConfig>,
}

/// Filters on the event's call.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Agent ids (empty: any).
    #[serde(default)]
    pub agents: Vec<String>,
    /// Outcomes (empty: any).
    #[serde(default)]
    pub outcomes: Vec<String>,
}

/// One automation step. Strings in `to` and `variables` are templates over
/// the context (`input`, `call`, `calls`, `job`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepConfig {
    StartCall {
        id: Option<String>,
        agent: String,
        /// Template, e.g. `{{ input.phone_number }}` or `{{ call.to }}`.
        to: String,
        /// JSON template for the agent's variables.
        #[serde(default)]
        variables: Option<toml::Value>,
    },
    WaitForCall {
        id: Option<String>,
        /// The `start_call` step whose call to wait for (default: the last).
        call: Option<String>,
        #[serde(with = "duration", default = "default_wait")]
        timeout: Duration,
        /// `fail` (default) or `continue` (with outcome `timeout`).
        #[serde(default)]
        on_timeout: OnTimeout,
    },
    Branch {
        id: Option<String>,
        /// The `start_call` step whose call decides (default: the last).
        call: Option<String>,
        /// Outcome (or final status) → step id, `end` or `fail`.
        cases: BTreeMap<String, String>,
        /// Where other outcomes go (default `end`).
        #[serde(default = "default_branch")]
        default: String,
    },
    /// Queues a signed, retried delivery to an endpoint of `endpoints.toml`
    /// and goes on (the delivery log shows how it went).
    Webhook {
        id: Option<String>,
        endpoint: String,
        /// The delivery's event name (default: `automation.<name>`).
        event: Option<String>,
        /// JSON template over `input`, `call`, `calls`, `event`, `job`,
        /// `agent` (default: those of them that are set).
        #[serde(default)]
        payload: Option<toml::Value>,
    },
}

impl StepConfig {
    pub fn id(&self) -> Option<&str> {
        match self {
            StepConfig::StartCall { id, .. }
            | StepConfig::WaitForCall { id, .. }
            | StepConfig::Branch { id, .. }
            | StepConfig::Webhook { id, .. } => id.as_deref(),
        }
    }
}

/// What `wait_for_call` does when the call does not finish in time.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    #[default]
    Fail,
    Continue,
}

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

fn yes() -> bool {
    true
}
fn all_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .map(String::from)
        .to_vec()
}
fn default_open() -> String {
    "08:00".into()
}
fn default_close() -> String {
    "21:00".into()
}
fn default_lines() -> u32 {
    1
}
fn default_to_pointer() -> String {
    "/phone_number".to_owned()
}
fn default_wait() -> Duration {
    Duration::from_secs(3600)
}
fn default_branch() -> String {
    "end".into()
}
fn default_ring() -> Duration {
    Duration::from_secs(2)
}
fn default_answer_rate() -> f64 {
    0.8
}
fn default_min_talk() -> Duration {
    Duration::from_secs(20)
}
fn default_max_talk() -> Duration {
    Duration::from_secs(120)
}
fn default_outcomes() -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("interested".to_owned(), 0.3),
        ("not_interested".to_owned(), 0.5),
        ("voicemail".to_owned(), 0.2),
    ])
}
fn default_provider_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_post() -> String {
    "POST".into()
}
