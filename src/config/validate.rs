//! Checks that span keys and files: references between agents, triggers
//! and schemas, schema compilation, phone settings, TLS files, limits.
//! Every problem is collected; nothing stops at the first.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{
    AGENTS_FILE, ActionConfig, AgentConfig, AgentsFile, MAIN_FILE, MainFile, Problem,
    TRIGGERS_FILE, TriggerConfig, TriggersFile,
};
use crate::auth::Issuers;
use crate::input::phone::{self, PhoneValidation, Region};
use crate::limits::check_rate;
use crate::schema::{self, CompiledSchema};
use crate::trigger::{Trigger, TriggerId};

type Validated = (
    MainFile,
    BTreeMap<String, AgentConfig>,
    BTreeMap<TriggerId, Arc<Trigger>>,
    Issuers,
);

pub(super) fn validate(
    dir: &Path,
    main: MainFile,
    agents: AgentsFile,
    triggers: TriggersFile,
    problems: &mut Vec<Problem>,
) -> Validated {
    check_main(dir, &main, problems);
    let issuers = Issuers::build(&main.auth.jwt.issuers, dir, MAIN_FILE, problems);
    for (id, agent) in &agents.agents {
        check_agent(id, agent, problems);
    }
    let default_region = Region::parse(&main.defaults.phone_region).unwrap_or(fallback_region());
    let mut built = BTreeMap::new();
    for (id, cfg) in &triggers.triggers {
        if let Some(t) = build_trigger(
            dir,
            id,
            cfg,
            &main,
            default_region,
            &agents.agents,
            problems,
        ) {
            built.insert(t.id.clone(), Arc::new(t));
        }
    }
    (main, agents.agents, built, issuers)
}

fn fallback_region() -> Region {
    // "US" is a valid region in every libphonenumber metadata release.
    Region::parse("US").expect("US is a known region")
}

fn check_main(dir: &Path, main: &MainFile, problems: &mut Vec<Problem>) {
    let mut problem = |key: &str, msg: String| problems.push(Problem::new(MAIN_FILE, key, msg));
    let s = &main.server;
    if s.max_body_bytes == 0 {
        problem("server.max_body_bytes", "must be at least 1".into());
    }
    if s.max_connections == 0 {
        problem("server.max_connections", "must be at least 1".into());
    }
    if s.request_timeout.is_zero() {
        problem("server.request_timeout", "must be longer than 0s".into());
    }
    match (&s.tls.cert_file, &s.tls.key_file) {
        (Some(_), None) | (None, Some(_)) => problem(
            "server.tls",
            "set both `cert_file` and `key_file`, or neither".into(),
        ),
        (Some(cert), Some(key)) => {
            if s.plain_http {
                problem(
                    "server.plain_http",
                    "is true but a TLS certificate is also configured; choose one".into(),
                );
            } else if let Err(e) = crate::tls::load_files(&dir.join(cert), &dir.join(key)) {
                problem("server.tls", e.to_string());
            }
        }
        (None, None) => {}
    }
    if let Err(e) = crate::store::check_url(&main.storage.url) {
        problem("storage.url", e);
    }
    if main.storage.max_pending_writes == 0 || main.storage.max_batch == 0 {
        problem(
            "storage",
            "`max_pending_writes` and `max_batch` must be at least 1".into(),
        );
    }
    for (key, rate) in [
        ("limits.per_ip", &main.limits.per_ip),
        ("limits.per_principal", &main.limits.per_principal),
        ("limits.per_trigger", &main.limits.per_trigger),
    ] {
        if let Err(e) = check_rate(rate) {
            problem(key, e);
        }
    }
    if main.limits.housekeeping_interval.is_zero() {
        problem(
            "limits.housekeeping_interval",
            "must be longer than 0s".into(),
        );
    }
    if main.idempotency.retention.is_zero() {
        problem("idempotency.retention", "must be longer than 0s".into());
    }
    if let Err(e) = Region::parse(&main.defaults.phone_region) {
        problem("defaults.phone_region", e);
    }
}

fn check_agent(id: &str, agent: &AgentConfig, problems: &mut Vec<Problem>) {
    let at = format!("agents.{id}");
    let mut problem = |key: &str, msg: String| {
        problems.push(Problem::new(AGENTS_FILE, format!("{at}{key}"), msg))
    };
    if TriggerId::parse(id).is_err() {
        problem("", "agent ids are 1-64 of A-Z a-z 0-9 _ -".into());
    }
    if agent.provider != "simulator" {
        problem(
            ".provider",
            format!(
                "unknown provider `{}` (available: simulator)",
                agent.provider
            ),
        );
    }
    let us = fallback_region();
    match phone::normalize(&agent.from_number, us, PhoneValidation::Possible) {
        Ok(e164) if e164 == agent.from_number => {}
        Ok(e164) => problem(".from_number", format!("write it in E.164: `{e164}`")),
        Err(e) => problem(".from_number", format!("phone number {e}")),
    }
    if agent.max_concurrent_calls == 0 {
        problem(".max_concurrent_calls", "must be at least 1".into());
    }
}

fn build_trigger(
    dir: &Path,
    id: &str,
    cfg: &TriggerConfig,
    main: &MainFile,
    default_region: Region,
    agents: &BTreeMap<String, AgentConfig>,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let at = format!("triggers.{id}");
    let before = problems.len();
    let mut problem = |key: &str, msg: String| {
        problems.push(Problem::new(TRIGGERS_FILE, format!("{at}{key}"), msg))
    };
    let trigger_id = TriggerId::parse(id).map_err(|e| problem("", e)).ok();

    let schema_path = dir.join(&cfg.schema);
    let schema_json: Option<serde_json::Value> = match std::fs::read_to_string(&schema_path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| problem(".schema", format!("{}: not JSON: {e}", cfg.schema)))
            .ok(),
        Err(e) => {
            problem(".schema", format!("cannot read {}: {e}", cfg.schema));
            None
        }
    };
    let compiled = schema_json.as_ref().and_then(|s| {
        CompiledSchema::compile(s)
            .map_err(|e| problem(".schema", format!("{}: {e}", cfg.schema)))
            .ok()
    });

    let ActionConfig::StartCall { agent, to } = &cfg.action;
    if !agents.contains_key(agent) {
        problem(
            ".action.agent",
            format!("no agent `{agent}` in {AGENTS_FILE}"),
        );
    }
    let mut phone_pointers = vec![to.clone()];
    for p in &cfg.phone_fields {
        if !phone_pointers.contains(p) {
            phone_pointers.push(p.clone());
        }
    }
    for (i, p) in phone_pointers.iter().enumerate() {
        if !schema::is_valid_pointer(p) || p.is_empty() {
            let key = if i == 0 {
                ".action.to".to_owned()
            } else {
                ".phone_fields".to_owned()
            };
            problem(
                &key,
                format!("`{p}` is not a JSON pointer such as `/phone_number`"),
            );
        }
    }
    let phone_region = match &cfg.phone_region {
        Some(r) => Region::parse(r)
            .map_err(|e| problem(".phone_region", e))
            .ok(),
        None => Some(default_region),
    };
    let rate_limit = cfg.rate_limit.unwrap_or(main.limits.per_trigger);
    if let Err(e) = check_rate(&rate_limit) {
        problem(".rate_limit", e);
    }
    if problems.len() != before {
        return None;
    }
    Some(Trigger {
        id: trigger_id?,
        description: cfg.description.clone(),
        schema_json: schema_json?,
        schema: compiled?,
        action: cfg.action.clone(),
        phone_pointers,
        phone_region: phone_region?,
        phone_validation: cfg
            .phone_validation
            .unwrap_or(main.defaults.phone_validation),
        form_nesting: cfg.form_nesting.unwrap_or(main.defaults.form_nesting),
        rate_limit,
    })
}
