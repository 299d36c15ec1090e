//! Checks that span keys and files: references between agents, triggers
//! and schemas, schema compilation, phone settings, TLS files, limits.
//! Every problem is collected; nothing stops at the first.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::validate_calls::{self, AUTOMATIONS_FILE, Agent, Automation, DoNotCall};
use super::{
    AGENTS_FILE, ActionConfig, AgentConfig, AgentsFile, AutomationsFile, MAIN_FILE, MainFile,
    Problem, ProviderConfig, ProvidersFile, TRIGGERS_FILE, TriggerConfig, TriggersFile,
};
use crate::auth::Issuers;
use crate::ids::TriggerId;
use crate::input::phone::Region;
use crate::limits::check_rate;
use crate::schema::{self, CompiledSchema};
use crate::trigger::Trigger;

/// The files as parsed, before cross-checks.
pub(super) struct Parsed {
    pub main: MainFile,
    pub agents: AgentsFile,
    pub triggers: TriggersFile,
    pub automations: AutomationsFile,
    pub providers: ProvidersFile,
    pub endpoints: super::outbound::EndpointsFile,
    pub actions: super::outbound::ActionsFile,
}

/// Everything validated, ready for `Config`.
pub(super) struct Validated {
    pub main: MainFile,
    pub agents: BTreeMap<String, Arc<Agent>>,
    pub triggers: BTreeMap<TriggerId, Arc<Trigger>>,
    pub automations: BTreeMap<String, Arc<Automation>>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub do_not_call: DoNotCall,
    pub issuers: Issuers,
    pub endpoints: BTreeMap<String, Arc<super::outbound::Endpoint>>,
    pub actions: BTreeMap<String, Arc<super::outbound::MidCallAction>>,
}

pub(super) fn validate(dir: &Path, parsed: Parsed, problems: &mut Vec<Problem>) -> Validated {
    let Parsed {
        main,
        agents,
        triggers,
        automations,
        providers,
        endpoints,
        actions,
    } = parsed;
    check_main(dir, &main, problems);
    let issuers = Issuers::build(&main.auth.jwt.issuers, dir, MAIN_FILE, problems);
    validate_calls::check_providers(&providers.providers, problems);
    let built_agents =
        validate_calls::build_agents(&agents.agents, &providers.providers, AGENTS_FILE, problems);
    let built_automations = validate_calls::build_automations(
        &automations.automations,
        &agents.agents,
        &endpoints.endpoints,
        problems,
    );
    let built_endpoints = super::validate_outbound::build_endpoints(&endpoints, problems);
    let built_actions = super::validate_outbound::build_actions(
        &actions,
        &built_endpoints,
        &endpoints.endpoints,
        &agents.agents,
        problems,
    );
    let dnc_file = main.calling.do_not_call_file.clone();
    let do_not_call = validate_calls::load_dnc(&dir.join(&dnc_file), &dnc_file, problems);
    let default_region = Region::parse(&main.defaults.phone_region).unwrap_or(fallback_region());
    let mut built = BTreeMap::new();
    let refs = References {
        agents: &agents.agents,
        automations: &automations.automations,
    };
    for (id, cfg) in &triggers.triggers {
        if let Some(t) = build_trigger(dir, id, cfg, &main, default_region, &refs, problems) {
            built.insert(t.id.clone(), Arc::new(t));
        }
    }
    Validated {
        main,
        agents: built_agents,
        triggers: built,
        automations: built_automations,
        providers: providers.providers,
        do_not_call,
        issuers,
        endpoints: built_endpoints,
        actions: built_actions,
    }
}

/// What a trigger's action may name.
struct References<'a> {
    agents: &'a BTreeMap<String, AgentConfig>,
    automations: &'a BTreeMap<String, super::AutomationConfig>,
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
        ("limits.per_provider", &main.limits.per_provider),
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

fn build_trigger(
    dir: &Path,
    id: &str,
    cfg: &TriggerConfig,
    main: &MainFile,
    default_region: Region,
    refs: &References<'_>,
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

    match &cfg.action {
        ActionConfig::StartCall { agent, .. } if !refs.agents.contains_key(agent) => problem(
            ".action.agent",
            format!("no agent `{agent}` in {AGENTS_FILE}"),
        ),
        ActionConfig::Automation { name, .. } => match refs.automations.get(name) {
            None => problem(
                ".action.name",
                format!("no automation `{name}` in {AUTOMATIONS_FILE}"),
            ),
            Some(a) if a.on.is_some() => problem(
                ".action.name",
                format!(
                    "automation `{name}` is started by `{}` events, not by triggers",
                    a.on.as_deref().unwrap_or_default()
                ),
            ),
            Some(_) => {}
        },
        _ => {}
    }
    let mut phone_pointers: Vec<String> = cfg
        .action
        .to_pointer()
        .map(str::to_owned)
        .into_iter()
        .collect();
    for p in &cfg.phone_fields {
        if !phone_pointers.contains(p) {
            phone_pointers.push(p.clone());
        }
    }
    for (i, p) in phone_pointers.iter().enumerate() {
        if !schema::is_valid_pointer(p) || p.is_empty() {
            let key = if i == 0 && cfg.action.to_pointer().is_some() {
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
