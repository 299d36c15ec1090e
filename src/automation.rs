//! Automations: named lists of steps, started by a trigger or by a call
//! event, compiled from `automations.toml` once at start (step references
//! resolved, templates compiled and their names checked), so a runner step
//! only renders.
//!
//! Policy: every problem is reported with its file and key; an automation
//! with a problem is left out (and `callgate check` fails).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::config::outbound::EndpointConfig;
use crate::config::{
    AUTOMATIONS_FILE, AgentConfig, AutomationConfig, ENDPOINTS_FILE, EventFilter, OnTimeout,
    Problem, StepConfig,
};
use crate::outbound::{DELIVERY_NAMES, template};
use crate::template::{JsonTemplate, compile_text};

/// Call-status events automations may subscribe to.
pub const CALL_EVENTS: [&str; 5] = [
    "call.completed",
    "call.no_answer",
    "call.busy",
    "call.failed",
    "call.canceled",
];

/// An automation, compiled.
#[derive(Debug, Clone)]
pub struct Automation {
    pub name: String,
    pub description: String,
    /// The call event that starts it (`call.completed` …), if any.
    pub on: Option<String>,
    pub filter: EventFilter,
    pub steps: Vec<Step>,
    /// Step id → index.
    step_index: HashMap<String, usize>,
}

/// One compiled step.
#[derive(Debug, Clone)]
pub enum Step {
    StartCall {
        /// The key its call is kept under: the step's `id`, else its index.
        key: String,
        agent: String,
        to: JsonTemplate,
        variables: Option<JsonTemplate>,
    },
    WaitForCall {
        call: Option<String>,
        timeout: Duration,
        on_timeout: OnTimeout,
    },
    Branch {
        call: Option<String>,
        cases: BTreeMap<String, String>,
        default: String,
    },
    Webhook {
        endpoint: String,
        event: Option<String>,
        payload: Option<JsonTemplate>,
    },
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

    /// Whether a call's final event starts this automation: it subscribes
    /// to `event` and the call's agent and outcome pass its filter.
    pub fn starts_on(&self, event: &str, agent_id: &str, outcome: Option<&str>) -> bool {
        let f = &self.filter;
        self.on.as_deref() == Some(event)
            && (f.agents.is_empty() || f.agents.iter().any(|a| a == agent_id))
            && (f.outcomes.is_empty() || outcome.is_some_and(|o| f.outcomes.iter().any(|x| x == o)))
    }
}

/// Compiles `automations.toml` against the agents and endpoints it names.
pub fn compile_automations(
    automations: &BTreeMap<String, AutomationConfig>,
    agents: &BTreeMap<String, AgentConfig>,
    endpoints: &BTreeMap<String, EndpointConfig>,
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
        let refs = StepRefs {
            agents,
            endpoints,
            call_steps: &call_steps,
            step_index: &step_index,
        };
        let mut steps = Vec::new();
        for (i, step) in cfg.steps.iter().enumerate() {
            if let Some(s) = compile_step(i, step, &refs, &mut problem) {
                steps.push(s);
            }
        }
        if problems.len() == before {
            out.insert(
                name.clone(),
                Arc::new(Automation {
                    name: name.clone(),
                    description: cfg.description.clone(),
                    on: cfg.on.clone(),
                    filter: cfg.filter.clone(),
                    steps,
                    step_index,
                }),
            );
        }
    }
    out
}

/// What a step may refer to.
struct StepRefs<'a> {
    agents: &'a BTreeMap<String, AgentConfig>,
    endpoints: &'a BTreeMap<String, EndpointConfig>,
    call_steps: &'a HashSet<&'a str>,
    step_index: &'a HashMap<String, usize>,
}

fn compile_step(
    i: usize,
    step: &StepConfig,
    refs: &StepRefs<'_>,
    problem: &mut impl FnMut(&str, String),
) -> Option<Step> {
    let sat = format!(".steps[{i}]");
    match step {
        StepConfig::StartCall {
            id,
            agent,
            to,
            variables,
        } => {
            if !refs.agents.contains_key(agent) {
                problem(&format!("{sat}.agent"), format!("no agent `{agent}`"));
            }
            let to = compile_text(to)
                .map_err(|e| problem(&format!("{sat}.to"), e))
                .ok();
            let variables = match variables {
                None => Some(None),
                Some(v) => JsonTemplate::from_toml(v)
                    .map_err(|e| problem(&format!("{sat}.variables"), e))
                    .ok()
                    .map(Some),
            };
            Some(Step::StartCall {
                key: id.clone().unwrap_or_else(|| i.to_string()),
                agent: agent.clone(),
                to: to?,
                variables: variables?,
            })
        }
        StepConfig::WaitForCall {
            call,
            timeout,
            on_timeout,
            ..
        } => {
            check_call_ref(call.as_deref(), refs, &sat, problem);
            Some(Step::WaitForCall {
                call: call.clone(),
                timeout: *timeout,
                on_timeout: *on_timeout,
            })
        }
        StepConfig::Branch {
            call,
            cases,
            default,
            ..
        } => {
            check_call_ref(call.as_deref(), refs, &sat, problem);
            for target in cases.values().chain(std::iter::once(default)) {
                if !matches!(target.as_str(), "end" | "fail")
                    && !refs.step_index.contains_key(target)
                {
                    problem(
                        &format!("{sat}.cases"),
                        format!("`{target}` is not a step id, `end` or `fail`"),
                    );
                }
            }
            Some(Step::Branch {
                call: call.clone(),
                cases: cases.clone(),
                default: default.clone(),
            })
        }
        StepConfig::Webhook {
            endpoint,
            event,
            payload,
            ..
        } => {
            if !refs.endpoints.contains_key(endpoint) {
                problem(
                    &format!("{sat}.endpoint"),
                    format!("no endpoint `{endpoint}` in {ENDPOINTS_FILE}"),
                );
            }
            let payload = match payload {
                None => Some(None),
                Some(p) => template(p, &DELIVERY_NAMES, |m| {
                    problem(&format!("{sat}.payload"), m)
                })
                .map(Some),
            };
            Some(Step::Webhook {
                endpoint: endpoint.clone(),
                event: event.clone(),
                payload: payload?,
            })
        }
    }
}

fn check_call_ref(
    call: Option<&str>,
    refs: &StepRefs<'_>,
    sat: &str,
    problem: &mut impl FnMut(&str, String),
) {
    if let Some(c) = call
        && !refs.call_steps.contains(c)
    {
        problem(
            &format!("{sat}.call"),
            format!("no start_call step with id `{c}`"),
        );
    }
}
