//! Outbound webhook endpoints and mid-call actions as the gateway runs
//! them, compiled from `endpoints.toml` and `actions.toml`: defaults
//! applied, URLs checked against the SSRF rules (`ssrf.rs`), secrets
//! checked, and every template compiled with the names it reads checked, so
//! that a typo is a `callgate check` problem and not a failed delivery at
//! 3 a.m.

mod actions;
mod alerts;
mod endpoints;
pub mod ssrf;

pub use actions::compile_actions;
pub use alerts::{ALERT_TIMEOUT, AlertTarget, compile_alerts};
pub use endpoints::{ca_file, compile_endpoints};

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::config::outbound::{BreakerConfig, EndpointAuth, MidCallActionConfig, RetryPolicy};
use crate::template::JsonTemplate;

/// Longest mid-call deadline the voice runtime's turn can afford.
pub const MAX_ACTION_DEADLINE: Duration = Duration::from_secs(5);

/// The fields of a call record that templates may read (`call.<field>`).
pub const CALL_FIELDS: [&str; 15] = [
    "id",
    "job_id",
    "agent_id",
    "to",
    "from",
    "status",
    "outcome",
    "duration_seconds",
    "custom",
    "variables",
    "provider",
    "provider_call_id",
    "summary",
    "transcript",
    "recording_url",
];

/// What a template may read: roots, and for some of them their fields.
pub struct Names<'a> {
    pub roots: &'a [&'a str],
    /// Roots whose fields are checked (`call` → `CALL_FIELDS`).
    pub fields: &'a [(&'a str, &'a [&'a str])],
}

/// The context of a `webhook` step's payload and of endpoint headers.
pub const DELIVERY_NAMES: Names<'static> = Names {
    roots: &["input", "call", "calls", "event", "job", "agent"],
    fields: &[
        ("call", &CALL_FIELDS),
        ("agent", &["id", "name", "from_number"]),
        ("job", &["id"]),
        ("event", &["name", "call"]),
    ],
};

/// The context of a mid-call action's path, body and cache key.
pub const ACTION_NAMES: Names<'static> = Names {
    roots: &["args", "call", "agent", "action"],
    fields: &[
        ("call", &["id", "from", "to", "provider_call_id"]),
        ("agent", &["id"]),
    ],
};

/// Problems with the names `t` reads (unknown root or field).
pub fn unknown_names(t: &JsonTemplate, names: &Names<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for path in t.variables() {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or_default();
        if !names.roots.contains(&root) {
            out.push(format!(
                "`{root}` is not defined here (available: {})",
                names.roots.join(", ")
            ));
            continue;
        }
        if let (Some(field), Some((_, known))) =
            (parts.next(), names.fields.iter().find(|(r, _)| *r == root))
            && !known.contains(&field)
        {
            out.push(format!(
                "`{root}.{field}` is not a field of `{root}` ({})",
                known.join(", ")
            ));
        }
    }
    out
}

/// Compiles a template and checks its names; problems go to `problem`.
pub fn template(
    value: &toml::Value,
    names: &Names<'_>,
    mut problem: impl FnMut(String),
) -> Option<JsonTemplate> {
    match JsonTemplate::from_toml(value) {
        Ok(t) => {
            let bad = unknown_names(&t, names);
            let ok = bad.is_empty();
            bad.into_iter().for_each(&mut problem);
            ok.then_some(t)
        }
        Err(e) => {
            problem(e);
            None
        }
    }
}

/// Endpoint and action names: 1-64 of a-z, 0-9, `-` and `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An endpoint with its defaults applied, checked and compiled.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    pub method: reqwest::Method,
    /// Header name → template (defaults' then the endpoint's).
    pub headers: Vec<(String, JsonTemplate)>,
    /// Headers whose values came from `${ENV}`: sent, never stored or
    /// logged.
    pub secret_headers: Vec<(String, SecretString)>,
    pub auth: Option<EndpointAuth>,
    pub signing_secret: Option<SecretString>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub breaker: BreakerConfig,
    pub allow_private: bool,
    pub allow_http: bool,
    pub follow_redirects: bool,
    /// CA certificates trusted beside the system's roots (`ca_file`, read
    /// and parsed when the config is compiled).
    pub ca_certificates: Vec<reqwest::Certificate>,
    /// The availability check (`health_check`), if configured.
    pub health_check: Option<HealthCheck>,
}

/// An endpoint's availability check, compiled.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// The endpoint's origin with the check's path.
    pub url: url::Url,
    /// As configured (`path`), for display.
    pub path: String,
    pub interval: Duration,
}

/// A mid-call action, checked and compiled.
#[derive(Debug, Clone)]
pub struct MidCallAction {
    pub name: String,
    pub config: MidCallActionConfig,
    pub endpoint: Arc<Endpoint>,
    pub path: Option<JsonTemplate>,
    pub body: Option<JsonTemplate>,
    pub fallback: Option<serde_json::Value>,
    pub cache_key: Option<JsonTemplate>,
}

impl MidCallAction {
    /// May `agent` call it?
    pub fn allows(&self, agent: &str) -> bool {
        self.config.agents.is_empty() || self.config.agents.iter().any(|a| a == agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_roots_and_call_fields_are_reported() {
        let t = JsonTemplate::compile(&serde_json::json!({
            "a": "{{ call.duration_seconds }}",
            "b": "{{ call.durration }}",
            "c": "{{ customer.name }}",
            "d": "{{ input.anything.goes }}"
        }))
        .unwrap();
        let bad = unknown_names(&t, &DELIVERY_NAMES);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad.iter().any(|m| m.contains("call.durration")));
        assert!(bad.iter().any(|m| m.contains("`customer`")));
    }
}
