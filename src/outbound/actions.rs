//! `actions.toml` compiled: each mid-call action checked against the
//! compiled endpoints and the agents, its templates compiled with the names
//! an action may read.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    ACTION_NAMES, Endpoint, MAX_ACTION_DEADLINE, MidCallAction, template, unknown_names, valid_name,
};
use crate::config::outbound::{ActionsFile, EndpointConfig, MidCallActionConfig};
use crate::config::{ACTIONS_FILE, AgentConfig, ENDPOINTS_FILE, Problem};

/// Compiles `actions.toml` against the compiled endpoints and the agents;
/// actions with problems are left out.
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
            check_endpoint_headers(e, &mut p);
        }
        check_settings(a, agents, &mut p);
        let action = compile_templates(name, a, endpoint, &mut p);
        if problems.len() == before
            && let Some(action) = action
        {
            out.insert(name.clone(), Arc::new(action));
        }
    }
    out
}

/// The endpoint's header templates can be rendered with what an action
/// knows (no `input`, no `job`).
fn check_endpoint_headers(e: &Endpoint, p: &mut impl FnMut(&str, String)) {
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

/// Agents exist, the method is one, the deadline fits a live call's turn,
/// results are JSON pointers, the cache is bounded.
fn check_settings(
    a: &MidCallActionConfig,
    agents: &BTreeMap<String, AgentConfig>,
    p: &mut impl FnMut(&str, String),
) {
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
    if let Some(c) = &a.cache {
        if c.ttl.is_zero() {
            p(".cache.ttl", "must be longer than zero".into());
        }
        if c.max_entries == 0 {
            p(".cache.max_entries", "must be at least 1".into());
        }
    }
}

/// The action with its path, body and cache key compiled (their problems
/// are reported even when the endpoint is missing).
fn compile_templates(
    name: &str,
    a: &MidCallActionConfig,
    endpoint: Option<Arc<Endpoint>>,
    p: &mut impl FnMut(&str, String),
) -> Option<MidCallAction> {
    let string = |s: &str| toml::Value::String(s.to_owned());
    let path = (!a.path.is_empty())
        .then(|| template(&string(&a.path), &ACTION_NAMES, |m| p(".path", m)))
        .flatten();
    let body = a
        .body
        .as_ref()
        .and_then(|b| template(b, &ACTION_NAMES, |m| p(".body", m)));
    let cache_key = a
        .cache
        .as_ref()
        .and_then(|c| template(&string(&c.key), &ACTION_NAMES, |m| p(".cache.key", m)));
    Some(MidCallAction {
        name: name.to_owned(),
        config: a.clone(),
        endpoint: endpoint?,
        path,
        body,
        fallback: a
            .fallback
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok()),
        cache_key,
    })
}
