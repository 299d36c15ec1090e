//! The shapes of the domain files: `agents.toml`, `triggers.toml`
//! and `automations.toml` (`providers.toml` is in `providers.rs`).
//!
//! Policy as in `types.rs`: unknown keys are errors; cross-references (an
//! agent naming a provider, a trigger naming an automation, a step naming a
//! step) are checked where the files are compiled (`app::compile` and the
//! domain modules).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::types::{FormNesting, PhoneValidation, RateSpec};

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
    /// Networks (CIDRs, or addresses) this trigger may be sent from; empty:
    /// anywhere. Judged on the client address (trusted-proxy aware),
    /// before authentication.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Signature schemes (with their secrets) a sender may sign requests
    /// with instead of sending a credential; any entry may match.
    #[serde(default)]
    pub signatures: Vec<super::TriggerSignatureConfig>,
    /// `true`: only signed requests; API keys and JWTs are refused (401).
    #[serde(default)]
    pub signatures_only: bool,
    /// Campaign dedupe: one job per rendered key within a window.
    pub dedupe: Option<DedupeConfig>,
}

/// `dedupe = { key = "{{ phone }}:{{ campaign }}", window = "24h" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// minijinja template over the normalised input.
    pub key: String,
    /// How long a key holds (1m to 30d).
    #[serde(with = "super::duration")]
    pub window: std::time::Duration,
    /// What a duplicate gets: `existing` (200, the first job) or `conflict`
    /// (409 `duplicate`).
    #[serde(default)]
    pub on_duplicate: OnDuplicate,
}

/// The answer to a trigger whose dedupe key is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicate {
    /// 200 with the existing job's body and `Deduplicated: true`.
    #[default]
    Existing,
    /// 409 problem `duplicate` naming the existing job.
    Conflict,
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
