//! Triggers as the gateway runs them: one inbound URL with its compiled
//! input schema, its action, and how its input is normalised. Compiled from
//! `triggers.toml` (and the schema files it names) once at start.
//!
//! Policy: every problem is reported with its file and key; a trigger with
//! a problem is left out (and `callgate check` fails). Normalising turns
//! the trigger's phone fields into E.164 and names every field it cannot.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::auth::IpAllowlist;
use crate::auth::signed::Signatures;
use crate::config::{
    AGENTS_FILE, AUTOMATIONS_FILE, ActionConfig, AgentConfig, AutomationConfig, FormNesting,
    MainFile, Problem, RateSpec, TRIGGERS_FILE, TriggerConfig, TriggerSignatureConfig,
};
use crate::dedupe::Dedupe;
pub use crate::ids::TriggerId;
use crate::input::InputError;
use crate::input::phone::{self, PhoneValidation, Region};
use crate::job::JobAction;
use crate::schema::{self, CompiledSchema, Violation};

/// A validated trigger, ready to serve.
#[derive(Debug)]
pub struct Trigger {
    pub id: TriggerId,
    pub description: String,
    /// The schema file as written (served by `GET /v1/triggers/{id}`).
    pub schema_json: Value,
    pub schema: CompiledSchema,
    pub action: ActionConfig,
    /// JSON pointers of fields normalised to E.164, the action's `to` first.
    pub phone_pointers: Vec<String>,
    pub phone_region: Region,
    pub phone_validation: PhoneValidation,
    pub form_nesting: FormNesting,
    pub rate_limit: RateSpec,
    /// Where requests to run it may come from (`None`: anywhere).
    pub allowed_ips: Option<IpAllowlist>,
    /// Signatures a sender may sign requests with (`None`: credentials only).
    pub signatures: Option<Signatures>,
    /// Campaign dedupe (`None`: every accepted request is a job).
    pub dedupe: Option<Dedupe>,
}

/// What a trigger's action may name.
pub struct References<'a> {
    pub agents: &'a BTreeMap<String, AgentConfig>,
    pub automations: &'a BTreeMap<String, AutomationConfig>,
}

impl Trigger {
    /// The scope that allows running this trigger alone.
    pub fn scope(&self) -> String {
        format!("trigger:{}", self.id)
    }

    /// Normalises the trigger's phone fields to E.164 in place; every field
    /// that cannot be normalised is a violation.
    pub fn normalise(&self, input: &mut Value) -> Result<(), InputError> {
        let mut violations = Vec::new();
        for (i, pointer) in self.phone_pointers.iter().enumerate() {
            match input.pointer_mut(pointer) {
                Some(Value::String(raw)) => {
                    match phone::normalize(raw, self.phone_region, self.phone_validation) {
                        Ok(e164) => *raw = e164,
                        Err(why) => {
                            violations.push(Violation::new(pointer, format!("phone number {why}")))
                        }
                    }
                }
                Some(other) if !other.is_null() => violations.push(Violation::new(
                    pointer,
                    "must be a phone number written as a string",
                )),
                // The first pointer is the number the action calls: required.
                _ if i == 0 => violations.push(Violation::new(
                    pointer,
                    "is required: the phone number to call",
                )),
                _ => {}
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(InputError::Invalid(violations))
        }
    }

    /// What an accepted request will run, as stored with the job and shown
    /// in test mode: the action with its target resolved from the
    /// (normalised) input. `None` when the number to call is missing, which
    /// `normalise` has already refused.
    pub fn plan(&self, input: &Value) -> Option<JobAction> {
        Some(match &self.action {
            ActionConfig::StartCall { agent, to } => JobAction::StartCall {
                agent: agent.clone(),
                to: input.pointer(to)?.as_str()?.to_owned(),
            },
            ActionConfig::Automation { name, to } => JobAction::Automation {
                name: name.clone(),
                to: to
                    .as_deref()
                    .and_then(|p| input.pointer(p)?.as_str().map(str::to_owned)),
                event: None,
                call_id: None,
            },
        })
    }
}

/// Compiles one `[triggers.<id>]` (its schema file relative to `dir`).
pub fn compile(
    dir: &Path,
    id: &str,
    cfg: &TriggerConfig,
    main: &MainFile,
    refs: &References<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let at = format!("triggers.{id}");
    let before = problems.len();
    let mut problem = |key: &str, msg: String| {
        problems.push(Problem::new(TRIGGERS_FILE, format!("{at}{key}"), msg))
    };
    let trigger_id = TriggerId::parse(id).map_err(|e| problem("", e)).ok();
    let (schema_json, compiled) = compile_schema(dir, &cfg.schema, &mut problem);
    check_action(&cfg.action, refs, &mut problem);
    let phone_pointers = phone_pointers(cfg, &mut problem);
    let phone_region = match cfg.phone_region.as_deref() {
        Some(r) => Region::parse(r)
            .map_err(|e| problem(".phone_region", e))
            .ok(),
        None => Region::parse(&main.defaults.phone_region).ok(),
    };
    let rate_limit = cfg.rate_limit.unwrap_or(main.limits.per_trigger);
    if let Err(e) = rate_limit.check() {
        problem(".rate_limit", e);
    }
    let allowed_ips = IpAllowlist::parse(&cfg.allowed_ips)
        .map_err(|errors| {
            for (i, e) in errors {
                problem(&format!(".allowed_ips[{i}]"), e);
            }
        })
        .ok()
        .flatten();
    let signatures = Signatures::compile(&cfg.signatures, cfg.signatures_only, &mut |k, m| {
        problem(k, m)
    });
    // HubSpot signs the URL it calls, which the gateway cannot guess.
    for (i, entry) in cfg.signatures.iter().enumerate() {
        if matches!(entry, TriggerSignatureConfig::HubspotV3 { .. })
            && main.server.public_url.is_none()
        {
            problem(
                &format!(".signatures[{i}].scheme"),
                "hubspot-v3 signs the URL HubSpot calls: set server.public_url".into(),
            );
        }
    }
    let dedupe = cfg
        .dedupe
        .as_ref()
        .and_then(|d| Dedupe::compile(d, &mut problem));
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
        allowed_ips,
        signatures,
        dedupe,
    })
}

fn compile_schema(
    dir: &Path,
    file: &str,
    problem: &mut impl FnMut(&str, String),
) -> (Option<Value>, Option<CompiledSchema>) {
    let json: Option<Value> = match std::fs::read_to_string(dir.join(file)) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| problem(".schema", format!("{file}: not JSON: {e}")))
            .ok(),
        Err(e) => {
            problem(".schema", format!("cannot read {file}: {e}"));
            None
        }
    };
    let compiled = json.as_ref().and_then(|s| {
        CompiledSchema::compile(s)
            .map_err(|e| problem(".schema", format!("{file}: {e}")))
            .ok()
    });
    (json, compiled)
}

fn check_action(
    action: &ActionConfig,
    refs: &References<'_>,
    problem: &mut impl FnMut(&str, String),
) {
    match action {
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
}

/// The action's `to` first, then the other phone fields.
fn phone_pointers(cfg: &TriggerConfig, problem: &mut impl FnMut(&str, String)) -> Vec<String> {
    let mut pointers: Vec<String> = cfg
        .action
        .to_pointer()
        .map(str::to_owned)
        .into_iter()
        .collect();
    for p in &cfg.phone_fields {
        if !pointers.contains(p) {
            pointers.push(p.clone());
        }
    }
    for (i, p) in pointers.iter().enumerate() {
        if !schema::is_valid_pointer(p) || p.is_empty() {
            let key = if i == 0 && cfg.action.to_pointer().is_some() {
                ".action.to"
            } else {
                ".phone_fields"
            };
            problem(
                key,
                format!("`{p}` is not a JSON pointer such as `/phone_number`"),
            );
        }
    }
    pointers
}
