//! Configuration: config-as-code under one directory, loaded and fully
//! validated before anything is served.
//!
//! Files (all TOML unless noted, paths relative to the config dir):
//! `callgate.toml` (required: server, storage, limits, defaults, auth),
//! `agents.toml`, `triggers.toml`, the JSON Schemas that triggers name, and
//! the API-key file (`keys.toml`, hashes only), `endpoints.toml` and
//! `actions.toml` (outbound webhooks, mid-call actions). Secrets come from the
//! environment as `${VAR}`; `CALLGATE_<SECTION>__<KEY>` overrides settings.
//!
//! Policy: loading never stops at the first problem. Every problem found is
//! returned with its file and key so that `callgate check` can list them all.

mod domain;
pub mod env;
pub mod outbound;
mod types;
mod validate;
mod validate_calls;
pub mod validate_outbound;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use domain::*;
pub use env::Env;
pub use types::*;
pub use validate_calls::{
    AUTOMATIONS_FILE, Agent, Automation, CALL_EVENTS, DoNotCall, PROVIDERS_FILE,
};

use crate::auth::{Issuers, KeySet};
use crate::ids::TriggerId;
use crate::trigger::Trigger;

/// One configuration problem, located by file and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(
        file: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// Every problem found while loading a config dir.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config dir; relative paths in the files are resolved against it.
    pub dir: PathBuf,
    /// Where the database and the generated certificate live.
    pub data_dir: PathBuf,
    pub main: MainFile,
    pub agents: BTreeMap<String, Arc<Agent>>,
    pub triggers: BTreeMap<TriggerId, Arc<Trigger>>,
    pub automations: BTreeMap<String, Arc<Automation>>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub do_not_call: DoNotCall,
    /// API keys as loaded at start (the server reloads the file on change).
    pub keys: KeySet,
    pub keys_path: PathBuf,
    /// Modification time of the key file when `keys` was read (the server
    /// reloads when it changes).
    pub keys_modified: Option<std::time::SystemTime>,
    pub issuers: Issuers,
    /// Outbound webhook endpoints (`endpoints.toml`).
    pub endpoints: BTreeMap<String, Arc<outbound::Endpoint>>,
    /// Mid-call actions (`actions.toml`).
    pub actions: BTreeMap<String, Arc<outbound::MidCallAction>>,
}

pub const MAIN_FILE: &str = "callgate.toml";
pub const AGENTS_FILE: &str = "agents.toml";
pub const TRIGGERS_FILE: &str = "triggers.toml";

/// Loads and validates the config dir. `data_dir` is where storage and the
/// generated certificate go (the CLI's `--data-dir`).
pub fn load(dir: &Path, data_dir: &Path, env: &Env) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    if !dir.is_dir() {
        return Err(ConfigError(vec![Problem::new(
            dir.display().to_string(),
            "",
            "config directory does not exist",
        )]));
    }

    let main: MainFile = match read_toml(dir, MAIN_FILE, true, env, &mut problems) {
        Some(mut value) => {
            env::apply_overrides(&mut value, env);
            parse(value, MAIN_FILE, &mut problems).unwrap_or_default()
        }
        None => MainFile::default(),
    };
    let agents: AgentsFile = read_toml(dir, AGENTS_FILE, false, env, &mut problems)
        .and_then(|v| parse(v, AGENTS_FILE, &mut problems))
        .unwrap_or_default();
    let triggers: TriggersFile = read_toml(dir, TRIGGERS_FILE, false, env, &mut problems)
        .and_then(|v| parse(v, TRIGGERS_FILE, &mut problems))
        .unwrap_or_default();
    let automations: AutomationsFile = read_toml(dir, AUTOMATIONS_FILE, false, env, &mut problems)
        .and_then(|v| parse(v, AUTOMATIONS_FILE, &mut problems))
        .unwrap_or_default();
    let providers: ProvidersFile = read_toml(dir, PROVIDERS_FILE, false, env, &mut problems)
        .and_then(|v| parse(v, PROVIDERS_FILE, &mut problems))
        .unwrap_or_default();
    let mut endpoints: outbound::EndpointsFile = read_toml(
        dir,
        validate_outbound::ENDPOINTS_FILE,
        false,
        env,
        &mut problems,
    )
    .and_then(|v| parse(v, validate_outbound::ENDPOINTS_FILE, &mut problems))
    .unwrap_or_default();
    endpoints.secret_headers = env_headers(&dir.join(validate_outbound::ENDPOINTS_FILE));
    let actions: outbound::ActionsFile = read_toml(
        dir,
        validate_outbound::ACTIONS_FILE,
        false,
        env,
        &mut problems,
    )
    .and_then(|v| parse(v, validate_outbound::ACTIONS_FILE, &mut problems))
    .unwrap_or_default();
    let keys_path = dir.join(&main.auth.keys_file);
    let keys_modified = modified(&keys_path);
    let keys = match load_keys_file(&keys_path) {
        Ok(keys) => KeySet::build(&keys, &main.auth.keys_file, &mut problems),
        Err(p) => {
            problems.push(p);
            KeySet::default()
        }
    };

    let parsed = validate::Parsed {
        main,
        agents,
        triggers,
        automations,
        providers,
        endpoints,
        actions,
    };
    let v = validate::validate(dir, parsed, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }
    Ok(Config {
        dir: dir.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        main: v.main,
        agents: v.agents,
        triggers: v.triggers,
        automations: v.automations,
        providers: v.providers,
        do_not_call: v.do_not_call,
        keys,
        keys_path,
        keys_modified,
        issuers: v.issuers,
        endpoints: v.endpoints,
        actions: v.actions,
    })
}

/// The endpoint headers whose raw value names an environment variable
/// (`${…}`): (endpoint or `defaults`, header). Read from the file before
/// substitution, since after it a secret looks like any other value.
fn env_headers(path: &Path) -> std::collections::HashSet<(String, String)> {
    let mut out = std::collections::HashSet::new();
    let Some(raw) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
    else {
        return out;
    };
    let mut scan = |owner: &str, headers: Option<&toml::Value>| {
        for (h, v) in headers.and_then(|h| h.as_table()).into_iter().flatten() {
            if v.as_str().is_some_and(|s| s.contains("${")) {
                out.insert((owner.to_owned(), h.clone()));
            }
        }
    };
    scan(
        "defaults",
        raw.get("defaults").and_then(|d| d.get("headers")),
    );
    for (name, e) in raw
        .get("endpoints")
        .and_then(|e| e.as_table())
        .into_iter()
        .flatten()
    {
        scan(name, e.get("headers"));
    }
    out
}

/// A file's modification time, if it exists.
pub fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads the API-key file on its own (the server re-reads it when it changes).
/// A missing file is an empty key set.
pub fn load_keys_file(path: &Path) -> Result<KeysFile, Problem> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeysFile::default()),
        Err(e) => return Err(Problem::new(name, "", format!("cannot read: {e}"))),
    };
    toml::from_str(&text).map_err(|e| Problem::new(name, "", describe_toml_error(&text, &e)))
}

fn read_toml(
    dir: &Path,
    file: &str,
    required: bool,
    env: &Env,
    problems: &mut Vec<Problem>,
) -> Option<toml::Value> {
    let path = dir.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return None,
        Err(e) => {
            problems.push(Problem::new(file, "", format!("cannot read: {e}")));
            return None;
        }
    };
    match toml::from_str::<toml::Table>(&text) {
        Ok(table) => {
            let mut value = toml::Value::Table(table);
            env::substitute(&mut value, env, file, problems);
            Some(value)
        }
        Err(e) => {
            problems.push(Problem::new(file, "", describe_toml_error(&text, &e)));
            None
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    // serde_path_to_error names the key that failed ("server.listen"), which
    // a deserializer running over an already-parsed value cannot.
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            problems.push(Problem::new(
                file,
                key,
                e.into_inner().message().trim().to_owned(),
            ));
            None
        }
    }
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message().trim())
        }
        None => e.message().trim().to_owned(),
    }
}

/// The key file's name as `callgate.toml` (or its env override) sets it,
/// read without validating the rest (so `callgate key new` works on a config
/// that is still being written).
pub fn keys_file_name(dir: &Path, env: &Env) -> String {
    let mut value = std::fs::read_to_string(dir.join(MAIN_FILE))
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .map(toml::Value::Table)
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    env::apply_overrides(&mut value, env);
    value
        .get("auth")
        .and_then(|a| a.get("keys_file"))
        .and_then(|k| k.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| "keys.toml".to_owned())
}
