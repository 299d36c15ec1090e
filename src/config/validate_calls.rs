//! Checks and runtime forms for calls: agents (numbers, windows, zones),
//! providers (templates, pointers, status maps, secrets), automations (step
//! references, templates, events) and the do-not-call list.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use chrono_tz::Tz;
use serde::Serialize;

use super::{
    AgentConfig, AutomationConfig, BodyFormat, CallbackConfig, HttpRequestConfig, Problem,
    ProviderConfig, StepConfig,
};
use crate::input::phone::{self, PhoneValidation, Region};
use crate::runner::window::{CallingWindow, parse_zone};
use crate::schema::is_valid_pointer;
use crate::store::CallStatus;
use crate::template::{JsonTemplate, compile_text};

pub const PROVIDERS_FILE: &str = "providers.toml";
pub const AUTOMATIONS_FILE: &str = "automations.toml";

/// A Voice Agent as the runner uses it.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub provider: String,
    pub from_number: String,
    pub max_concurrent_calls: u32,
    pub provider_agent_id: Option<String>,
    #[serde(skip)]
    pub window: CallingWindow,
    #[serde(skip)]
    pub default_zone: Tz,
}

/// An automation with its step ids resolved.
#[derive(Debug, Clone)]
pub struct Automation {
    pub name: String,
    pub config: AutomationConfig,
    /// Step id → index.
    pub step_index: HashMap<String, usize>,
}

impl Automation {
    /// Resolves a branch target: a step index, or `None` for `end`.
    pub fn target(&self, name: &str) -> Result<Option<usize>, String> {
        match name {
            "end" => Ok(None),
            "fail" => Err("fail".into()),
            id => self
                .step_index
                .get(id)
                .copied()
                .map(Some)
                .ok_or_else(|| format!("no step `{id}`")),
        }
    }
}

/// Numbers never to call (E.164).
#[derive(Debug, Clone, Default)]
pub struct DoNotCall(Arc<HashSet<String>>);

impl DoNotCall {
    pub fn contains(&self, e164: &str) -> bool {
        self.0.contains(e164)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Call-status events automations may subscribe to.
pub const CALL_EVENTS: [&str; 5] = [
    "call.completed",
    "call.no_answer",
    "call.busy",
    "call.failed",
    "call.canceled",
];

pub(super) fn build_agents(
    agents: &BTreeMap<String, AgentConfig>,
    providers: &BTreeMap<String, ProviderConfig>,
    file: &str,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Agent>> {
    let mut out = BTreeMap::new();
    for (id, cfg) in agents {
        let before = problems.len();
        let mut problem = |key: &str, msg: String| {
            problems.push(Problem::new(file, format!("agents.{id}{key}"), msg))
        };
        if crate::ids::TriggerId::parse(id).is_err() {
            problem("", "agent ids are 1-64 of A-Z a-z 0-9 _ -".into());
        }
        if !providers.contains_key(&cfg.provider) {
            let known: Vec<&str> = providers.keys().map(String::as_str).collect();
            problem(
                ".provider",
                format!(
                    "no provider `{}` in {PROVIDERS_FILE} (configured: {})",
                    cfg.provider,
                    known.join(", ")
                ),
            );
        }
        let us = Region::parse("US").ok();
        match us.map(|r| phone::normalize(&cfg.from_number, r, PhoneValidation::Possible)) {
            Some(Ok(e164)) if e164 == cfg.from_number => {}
            Some(Ok(e164)) => problem(".from_number", format!("write it in E.164: `{e164}`")),
            Some(Err(e)) => problem(".from_number", format!("phone number {e}")),
            None => {}
        }
        if cfg.max_concurrent_calls == 0 {
            problem(".max_concurrent_calls", "must be at least 1".into());
        }
        let window = CallingWindow::parse(&cfg.calling_window)
            .map_err(|e| problem(".calling_window", e))
            .ok();
        let zone = match &cfg.default_timezone {
            Some(name) => parse_zone(name)
                .map_err(|e| problem(".default_timezone", e))
                .ok(),
            None => Some(Tz::UTC),
        };
        if problems.len() != before {
            continue;
        }
        let (Some(window), Some(default_zone)) = (window, zone) else {
            continue;
        };
        out.insert(
            id.clone(),
            Arc::new(Agent {
                id: id.clone(),
                name: cfg.name.clone(),
                provider: cfg.provider.clone(),
                from_number: cfg.from_number.clone(),
                max_concurrent_calls: cfg.max_concurrent_calls,
                provider_agent_id: cfg.provider_agent_id.clone(),
                window,
                default_zone,
            }),
        );
    }
    out
}

pub(super) fn check_providers(
    providers: &BTreeMap<String, ProviderConfig>,
    problems: &mut Vec<Problem>,
) {
    for (name, cfg) in providers {
        let at = format!("providers.{name}");
        let mut problem = |key: &str, msg: String| {
            problems.push(Problem::new(PROVIDERS_FILE, format!("{at}{key}"), msg))
        };
        if let Some(rate) = cfg.dial_rate()
            && let Err(e) = crate::limits::check_rate(&rate)
        {
            problem(".dial_rate", e);
        }
        if let Some(rate) = cfg.callback_rate_limit()
            && let Err(e) = crate::limits::check_rate(&rate)
        {
            problem(".callback_rate_limit", e);
        }
        match cfg {
            ProviderConfig::Simulator(s) => {
                for (key, v) in [
                    ("answer_rate", s.answer_rate),
                    ("busy_rate", s.busy_rate),
                    ("fail_rate", s.fail_rate),
                ] {
                    if !(0.0..=1.0).contains(&v) {
                        problem(&format!(".{key}"), "must be between 0 and 1".into());
                    }
                }
                if s.min_duration > s.max_duration {
                    problem(".min_duration", "must not exceed max_duration".into());
                }
                if s.outcomes.values().any(|w| *w < 0.0) || s.outcomes.values().sum::<f64>() <= 0.0
                {
                    problem(
                        ".outcomes",
                        "weights must be non-negative and not all zero".into(),
                    );
                }
                if let Some(secret) = &s.callback_secret
                    && standardwebhooks::Webhook::new(secrecy::ExposeSecret::expose_secret(secret))
                        .is_err()
                {
                    problem(
                        ".callback_secret",
                        "not a Standard Webhooks secret (whsec_<base64>)".into(),
                    );
                }
            }
            ProviderConfig::Http(h) => {
                check_request(&h.create_call, ".create_call", &mut problem);
                if !is_valid_pointer(&h.call_id) || h.call_id.is_empty() {
                    problem(".call_id", format!("`{}` is not a JSON pointer", h.call_id));
                }
                if let Some(lookup) = &h.lookup {
                    check_request(&lookup.request, ".lookup", &mut problem);
                    check_pointers(&lookup.status.to_vec(), ".lookup.status", &mut problem);
                }
                check_callbacks(&h.callbacks, &mut problem);
            }
        }
    }
}

fn check_request(req: &HttpRequestConfig, at: &str, problem: &mut impl FnMut(&str, String)) {
    if reqwest::Method::from_bytes(req.method.as_bytes()).is_err() {
        problem(
            &format!("{at}.method"),
            format!("`{}` is not an HTTP method", req.method),
        );
    }
    if let Err(e) = compile_text(&req.url) {
        problem(&format!("{at}.url"), e);
    }
    for (name, value) in &req.headers {
        if let Err(e) = compile_text(value) {
            problem(&format!("{at}.headers.{name}"), e);
        }
    }
    if let Some(body) = &req.body {
        match JsonTemplate::from_toml(body) {
            Ok(_) if req.body_format == BodyFormat::Form && !body.is_table() => problem(
                &format!("{at}.body"),
                "a form body must be a table of fields".into(),
            ),
            Ok(_) => {}
            Err(e) => problem(&format!("{at}.body"), e),
        }
    }
}

fn check_pointers(pointers: &[String], at: &str, problem: &mut impl FnMut(&str, String)) {
    for p in pointers {
        if p.is_empty() || !is_valid_pointer(p) {
            problem(at, format!("`{p}` is not a JSON pointer such as `/status`"));
        }
    }
}

fn check_callbacks(cb: &CallbackConfig, problem: &mut impl FnMut(&str, String)) {
    check_pointers(&cb.status.to_vec(), ".callbacks.status", problem);
    for (key, p) in [
        ("provider_call_id", &cb.provider_call_id),
        ("event_id", &cb.event_id),
        ("duration_seconds", &cb.duration_seconds),
        ("duration_ms", &cb.duration_ms),
        ("outcome", &cb.outcome),
        ("transcript", &cb.transcript),
        ("summary", &cb.summary),
        ("recording_url", &cb.recording_url),
    ] {
        if let Some(p) = p {
            check_pointers(
                std::slice::from_ref(p),
                &format!(".callbacks.{key}"),
                problem,
            );
        }
    }
    for (name, p) in &cb.custom {
        check_pointers(
            std::slice::from_ref(p),
            &format!(".callbacks.custom.{name}"),
            problem,
        );
    }
    for (from, to) in &cb.status_map {
        if to.parse::<CallStatus>().is_err() || to == "unknown" {
            problem(
                &format!(".callbacks.status_map.{from}"),
                format!("`{to}` is not a call status"),
            );
        }
    }
    for (from, to) in &cb.status_from_outcome {
        if !to.parse::<CallStatus>().is_ok_and(CallStatus::is_final) {
            problem(
                &format!(".callbacks.status_from_outcome.{from}"),
                format!("`{to}` is not a final call status"),
            );
        }
    }
}

pub(super) fn build_automations(
    automations: &BTreeMap<String, AutomationConfig>,
    agents: &BTreeMap<String, AgentConfig>,
    endpoints: &BTreeMap<String, super::outbound::EndpointConfig>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Automation>> {
    let mut out = BTreeMap::new();
    for (name, cfg) in automations {
        let before = problems.len();
        let at = format!("automations.{name}");
        let mut problem = |key: &str, msg: String| {
            problems.push(Problem::new(AUTOMATIONS_FILE, format!("{at}{key}"), msg))
        };
        if let Some(on) = &cfg.on
            && !CALL_EVENTS.contains(&on.as_str())
        {
            problem(
                ".on",
                format!("`{on}` is not an event ({})", CALL_EVENTS.join(", ")),
            );
        }
        for agent in &cfg.filter.agents {
            if !agents.contains_key(agent) {
                problem(".filter.agents", format!("no agent `{agent}`"));
            }
        }
        if cfg.steps.is_empty() {
            problem(".steps", "at least one step is required".into());
        }
        let mut step_index = HashMap::new();
        for (i, step) in cfg.steps.iter().enumerate() {
            if let Some(id) = step.id()
                && step_index.insert(id.to_owned(), i).is_some()
            {
                problem(&format!(".steps[{i}].id"), format!("`{id}` is used twice"));
            }
        }
        let call_steps: HashSet<&str> = cfg
            .steps
            .iter()
            .filter(|s| matches!(s, StepConfig::StartCall { .. }))
            .filter_map(StepConfig::id)
            .collect();
        for (i, step) in cfg.steps.iter().enumerate() {
            let sat = format!(".steps[{i}]");
            match step {
                StepConfig::StartCall {
                    agent,
                    to,
                    variables,
                    ..
                } => {
                    if !agents.contains_key(agent) {
                        problem(&format!("{sat}.agent"), format!("no agent `{agent}`"));
                    }
                    if let Err(e) = compile_text(to) {
                        problem(&format!("{sat}.to"), e);
                    }
                    if let Some(v) = variables
                        && let Err(e) = JsonTemplate::from_toml(v)
                    {
                        problem(&format!("{sat}.variables"), e);
                    }
                }
                StepConfig::WaitForCall { call, .. } | StepConfig::Branch { call, .. } => {
                    if let Some(c) = call
                        && !call_steps.contains(c.as_str())
                    {
                        problem(
                            &format!("{sat}.call"),
                            format!("no start_call step with id `{c}`"),
                        );
                    }
                    if let StepConfig::Branch { cases, default, .. } = step {
                        for target in cases.values().chain(std::iter::once(default)) {
                            if !matches!(target.as_str(), "end" | "fail")
                                && !step_index.contains_key(target)
                            {
                                problem(
                                    &format!("{sat}.cases"),
                                    format!("`{target}` is not a step id, `end` or `fail`"),
                                );
                            }
                        }
                    }
                }
                StepConfig::Webhook {
                    endpoint, payload, ..
                } => {
                    if !endpoints.contains_key(endpoint) {
                        problem(
                            &format!("{sat}.endpoint"),
                            format!(
                                "no endpoint `{endpoint}` in {}",
                                super::validate_outbound::ENDPOINTS_FILE
                            ),
                        );
                    }
                    if let Some(p) = payload {
                        super::validate_outbound::template(
                            p,
                            &super::validate_outbound::DELIVERY_NAMES,
                            |m| problem(&format!("{sat}.payload"), m),
                        );
                    }
                }
            }
        }
        if problems.len() == before {
            out.insert(
                name.clone(),
                Arc::new(Automation {
                    name: name.clone(),
                    config: cfg.clone(),
                    step_index,
                }),
            );
        }
    }
    out
}

/// Reads the do-not-call file (missing: empty list).
pub(super) fn load_dnc(path: &Path, file: &str, problems: &mut Vec<Problem>) -> DoNotCall {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DoNotCall::default(),
        Err(e) => {
            problems.push(Problem::new(file, "", format!("cannot read: {e}")));
            return DoNotCall::default();
        }
    };
    let mut numbers = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let valid = entry.starts_with('+')
            && entry.len() >= 8
            && entry.len() <= 16
            && entry[1..].bytes().all(|b| b.is_ascii_digit());
        if valid {
            numbers.insert(entry.to_owned());
        } else {
            problems.push(Problem::new(
                file,
                format!("line {}", i + 1),
                format!("`{entry}` is not an E.164 number (+ and 7-15 digits)"),
            ));
        }
    }
    DoNotCall(Arc::new(numbers))
}
