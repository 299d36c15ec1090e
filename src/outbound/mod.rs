//! Outbound webhook endpoints and mid-call actions as the gateway runs
//! them, compiled from `endpoints.toml` and `actions.toml`: defaults
//! applied, URLs checked against the SSRF rules (`ssrf.rs`), secrets
//! checked, and every template compiled with the names it reads checked, so
//! that a typo is a `callgate check` problem and not a failed delivery at
//! 3 a.m.

pub mod ssrf;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use secrecy::SecretString;

use crate::config::outbound::{
    ActionsFile, BreakerConfig, EndpointAuth, EndpointConfig, EndpointsFile, MidCallActionConfig,
    RetryPolicy,
};
use crate::config::{ACTIONS_FILE, AgentConfig, ENDPOINTS_FILE, Problem};
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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Compiles `endpoints.toml`; endpoints with problems are left out.
pub fn compile_endpoints(
    file: &EndpointsFile,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Endpoint>> {
    let d = &file.defaults;
    let mut out = BTreeMap::new();
    let check_common = |at: &str,
                        retry: &super::outbound::RetryPolicy,
                        concurrency: usize,
                        timeout: Duration,
                        problems: &mut Vec<Problem>| {
        let mut p =
            |k: &str, m: String| problems.push(Problem::new(ENDPOINTS_FILE, format!("{at}{k}"), m));
        if retry.schedule.len() > 20 {
            p(".retry.schedule", "at most 20 retries".into());
        }
        if retry.schedule.iter().any(Duration::is_zero) {
            p(".retry.schedule", "waits must be longer than zero".into());
        }
        if concurrency == 0 || concurrency > 1024 {
            p(".concurrency", "must be between 1 and 1024".into());
        }
        if timeout.is_zero() || timeout > Duration::from_secs(120) {
            p(".timeout", "must be between 1ms and 2m".into());
        }
    };
    check_common("defaults", &d.retry, d.concurrency, d.timeout, problems);
    if d.breaker.failures == 0 {
        problems.push(Problem::new(
            ENDPOINTS_FILE,
            "defaults.breaker.failures",
            "must be at least 1",
        ));
    }
    for (name, e) in &file.endpoints {
        let at = format!("endpoints.{name}");
        let before = problems.len();
        let mut p =
            |k: &str, m: String| problems.push(Problem::new(ENDPOINTS_FILE, format!("{at}{k}"), m));
        if !valid_name(name) {
            p("", "names are 1-64 of a-z, 0-9, - and _".into());
        }
        let url = match url::Url::parse(&e.url) {
            Ok(u) => {
                if let Err(err) = ssrf::check_url(&u, e.allow_private, e.allow_http) {
                    p(".url", err.to_string());
                }
                if u.host_str().is_none_or(str::is_empty) {
                    p(".url", "has no host".into());
                }
                Some(u)
            }
            Err(err) => {
                p(".url", format!("`{}`: {err}", e.url));
                None
            }
        };
        let method_name = e
            .method
            .clone()
            .or_else(|| d.method.clone())
            .unwrap_or_else(|| "POST".into());
        let method = match reqwest::Method::from_bytes(method_name.to_ascii_uppercase().as_bytes())
        {
            Ok(m) => Some(m),
            Err(_) => {
                p(".method", format!("`{method_name}` is not an HTTP method"));
                None
            }
        };
        let mut headers = Vec::new();
        let mut secret_headers: Vec<(String, secrecy::SecretString)> = Vec::new();
        let sources = d
            .headers
            .iter()
            .map(|(h, v)| ("defaults", h, v))
            .chain(e.headers.iter().map(|(h, v)| (name.as_str(), h, v)));
        for (owner, h, v) in sources {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                p(&format!(".headers.{h}"), "not a valid header name".into());
                continue;
            }
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("webhook-") || lower == "content-length" || lower == "host" {
                p(
                    &format!(".headers.{h}"),
                    "set by callgate; cannot be configured".into(),
                );
                continue;
            }
            headers.retain(|(k, _): &(String, JsonTemplate)| !k.eq_ignore_ascii_case(h));
            secret_headers.retain(|(k, _)| !k.eq_ignore_ascii_case(h));
            if file.secret_headers.contains(&(owner.to_owned(), h.clone())) {
                // From the environment: a secret. Sent as is, never stored
                // with the delivery, never shown in the log.
                if v.contains("{{") || v.contains("{%") {
                    p(
                        &format!(".headers.{h}"),
                        "a header from the environment cannot also be a template".into(),
                    );
                }
                secret_headers.push((h.clone(), secrecy::SecretString::from(v.clone())));
                continue;
            }
            if let Some(t) = template(&toml::Value::String(v.clone()), &DELIVERY_NAMES, |m| {
                p(&format!(".headers.{h}"), m)
            }) {
                headers.push((h.clone(), t));
            }
        }
        let signing_secret = e
            .signing_secret
            .clone()
            .or_else(|| d.signing_secret.clone());
        let auth = e.auth.clone().or_else(|| d.auth.clone());
        if let Some(secret) = &signing_secret {
            let s = secret.expose_secret();
            if !s.starts_with("${")
                && (!s.starts_with("whsec_") || standardwebhooks::Webhook::new(s).is_err())
            {
                p(
                    ".signing_secret",
                    "not a Standard Webhooks secret (whsec_<base64>)".into(),
                );
            }
        }
        if let Some(EndpointAuth::Header { name: h, .. }) = &auth
            && reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            p(".auth.name", "not a valid header name".into());
        }
        let retry = e.retry.clone().unwrap_or_else(|| d.retry.clone());
        let concurrency = e.concurrency.unwrap_or(d.concurrency);
        let timeout = e.timeout.unwrap_or(d.timeout);
        let breaker = e.breaker.clone().unwrap_or_else(|| d.breaker.clone());
        check_common(&at, &retry, concurrency, timeout, problems);
        if breaker.failures == 0 {
            problems.push(Problem::new(
                ENDPOINTS_FILE,
                format!("{at}.breaker.failures"),
                "must be at least 1",
            ));
        }
        if problems.len() != before {
            continue;
        }
        if let (Some(url), Some(method)) = (url, method) {
            out.insert(
                name.clone(),
                Arc::new(Endpoint {
                    name: name.clone(),
                    url,
                    method,
                    headers,
                    secret_headers,
                    auth,
                    signing_secret,
                    timeout,
                    retry,
                    concurrency,
                    breaker,
                    allow_private: e.allow_private,
                    allow_http: e.allow_http,
                    follow_redirects: e.follow_redirects,
                }),
            );
        }
    }
    out
}

/// Compiles `actions.toml` against the compiled endpoints and the agents.
pub fn compile_actions(
    file: &ActionsFile,
    endpoints: &BTreeMap<String, Arc<Endpoint>>,
    endpoint_names: &BTreeMap<String, EndpointConfig>,
    agents: &BTreeMap<String, AgentConfig>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<MidCallAction>> {
    let mut out = BTreeMap::new();
    for (name, a) in &file.actions {
        let at = format!("actions.{name}");
        let before = problems.len();
        let mut p =
            |k: &str, m: String| problems.push(Problem::new(ACTIONS_FILE, format!("{at}{k}"), m));
        if !valid_name(name) {
            p("", "names are 1-64 of a-z, 0-9, - and _".into());
        }
        let endpoint = endpoints.get(&a.endpoint).cloned();
        if endpoint.is_none() && !endpoint_names.contains_key(&a.endpoint) {
            p(
                ".endpoint",
                format!("no endpoint `{}` in {ENDPOINTS_FILE}", a.endpoint),
            );
        }
        if let Some(e) = &endpoint {
            for (h, t) in &e.headers {
                for m in unknown_names(t, &ACTION_NAMES) {
                    p(
                        ".endpoint",
                        format!(
                            "endpoint `{}` header `{h}` cannot be rendered for an action: {m}",
                            e.name
                        ),
                    );
                }
            }
        }
        for agent in &a.agents {
            if !agents.contains_key(agent) {
                p(".agents", format!("no agent `{agent}`"));
            }
        }
        if reqwest::Method::from_bytes(a.method.to_ascii_uppercase().as_bytes()).is_err() {
            p(".method", format!("`{}` is not an HTTP method", a.method));
        }
        if a.deadline.is_zero() || a.deadline > MAX_ACTION_DEADLINE {
            p(
                ".deadline",
                "must be between 1ms and 5s (the caller is waiting on a live call)".into(),
            );
        }
        for (k, ptr) in &a.result {
            if !ptr.is_empty() && !ptr.starts_with('/') {
                p(
                    &format!(".result.{k}"),
                    format!("`{ptr}` is not a JSON pointer (/a/b)"),
                );
            }
        }
        let path = (!a.path.is_empty())
            .then(|| {
                template(&toml::Value::String(a.path.clone()), &ACTION_NAMES, |m| {
                    p(".path", m)
                })
            })
            .flatten();
        let body = a
            .body
            .as_ref()
            .and_then(|b| template(b, &ACTION_NAMES, |m| p(".body", m)));
        let cache_key = a.cache.as_ref().and_then(|c| {
            if c.ttl.is_zero() {
                p(".cache.ttl", "must be longer than zero".into());
            }
            if c.max_entries == 0 {
                p(".cache.max_entries", "must be at least 1".into());
            }
            template(&toml::Value::String(c.key.clone()), &ACTION_NAMES, |m| {
                p(".cache.key", m)
            })
        });
        let fallback = a
            .fallback
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok());
        if problems.len() != before {
            continue;
        }
        if let Some(endpoint) = endpoint {
            out.insert(
                name.clone(),
                Arc::new(MidCallAction {
                    name: name.clone(),
                    config: a.clone(),
                    endpoint,
                    path,
                    body,
                    fallback,
                    cache_key,
                }),
            );
        }
    }
    out
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
