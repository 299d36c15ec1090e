//! Calling rules: agents (who calls, from which number, how many lines,
//! when), the callee's local time (`zones.rs` picks the zones, `window.rs`
//! the opening), and the do-not-call list.
//! Compiled from `agents.toml` and the do-not-call file; every problem is
//! reported with its file and key.

mod country_zones;
mod number_zones;
pub mod window;
pub mod zones;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use chrono_tz::Tz;
use serde::Serialize;

pub use window::CallingWindow;
pub use zones::{callee_zones, parse_zone};

use crate::config::{AGENTS_FILE, AgentConfig, PROVIDERS_FILE, Problem, ProviderConfig};
use crate::ids::TriggerId;
use crate::input::InputError;
use crate::input::phone::{self, PhoneValidation, Region};
use crate::schema::Violation;

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

/// Numbers never to call (E.164), from the seed file; the store holds
/// those added through the API.
#[derive(Debug, Clone, Default)]
pub struct DoNotCall(Arc<BTreeSet<String>>);

impl DoNotCall {
    pub fn contains(&self, e164: &str) -> bool {
        self.0.contains(e164)
    }

    /// Up to `limit` numbers in order, only those after `after`.
    pub fn sorted_after(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, |a| Excluded(a.to_owned()));
        self.0
            .range((from, Unbounded))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Compiles `agents.toml`; agents with problems are left out (and the
/// problems reported).
pub fn compile_agents(
    agents: &BTreeMap<String, AgentConfig>,
    providers: &BTreeMap<String, ProviderConfig>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Agent>> {
    let mut out = BTreeMap::new();
    for (id, cfg) in agents {
        let before = problems.len();
        let mut problem = |key: &str, msg: String| {
            problems.push(Problem::new(AGENTS_FILE, format!("agents.{id}{key}"), msg))
        };
        if TriggerId::parse(id).is_err() {
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

/// Reads the do-not-call file (missing: empty list).
pub fn load_dnc(path: &Path, file: &str, problems: &mut Vec<Problem>) -> DoNotCall {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DoNotCall::default(),
        Err(e) => {
            problems.push(Problem::new(file, "", format!("cannot read: {e}")));
            return DoNotCall::default();
        }
    };
    let mut numbers = BTreeSet::new();
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

/// Checks the callee time zone field (`calling.timezone_field`), when
/// present: an IANA name, else a violation naming the field.
pub fn check_timezone(input: &serde_json::Value, pointer: &str) -> Result<(), InputError> {
    match input.pointer(pointer) {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(name)) if parse_zone(name).is_ok() => Ok(()),
        Some(_) => Err(InputError::Invalid(vec![Violation::new(
            pointer,
            "must be an IANA time zone such as America/New_York",
        )])),
    }
}
