//! Configuration files: their shapes (plain serde types), reading them,
//! `${ENV}` substitution, `CALLGATE_<SECTION>__<KEY>` overrides, and
//! problems located by file and key. A leaf: it knows no other module.
//! Turning the files into the running model is `app::compile`'s job (each
//! domain module compiles its own part).
//!
//! Files (all TOML, paths relative to the config dir): `callgate.toml`
//! (required: server, storage, limits, defaults, auth, runner, calling,
//! deliveries), `agents.toml`, `triggers.toml` (and the JSON Schemas it
//! names), `automations.toml`, `providers.toml`, `endpoints.toml`,
//! `actions.toml`, the API-key file (`keys.toml`, hashes only) and the
//! do-not-call list. Secrets come from the environment as `${VAR}`.
//!
//! Policy: loading never stops at the first problem. Every problem found is
//! returned with its file and key so that `callgate check` can list them all.

mod alerts;
mod auth;
mod console;
mod domain;
pub mod duration;
pub mod env;
pub mod outbound;
mod providers;
mod runner;
mod signatures;
mod types;

use std::fmt;
use std::path::{Path, PathBuf};

pub use alerts::*;
pub use auth::*;
pub use console::ConsoleConfig;
pub use domain::*;
pub use env::Env;
pub use providers::*;
pub use runner::*;
pub use signatures::*;
pub use types::*;

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

/// Every configuration file, read and parsed into its shape.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub main: MainFile,
    pub agents: AgentsFile,
    pub triggers: TriggersFile,
    pub automations: AutomationsFile,
    pub providers: ProvidersFile,
    pub endpoints: outbound::EndpointsFile,
    pub actions: outbound::ActionsFile,
    pub keys: KeysFile,
    /// Where the key file is (the server re-reads it when it changes).
    pub keys_path: PathBuf,
    pub keys_modified: Option<std::time::SystemTime>,
}

pub const MAIN_FILE: &str = "callgate.toml";
pub const AGENTS_FILE: &str = "agents.toml";
pub const TRIGGERS_FILE: &str = "triggers.toml";
pub const AUTOMATIONS_FILE: &str = "automations.toml";
pub const PROVIDERS_FILE: &str = "providers.toml";
pub const ENDPOINTS_FILE: &str = "endpoints.toml";
pub const ACTIONS_FILE: &str = "actions.toml";

/// Reads and parses every file of the config dir, with the problems found
/// (a file with problems is read as its defaults, so that the checks that
/// need several files still run: `app::compile` goes on with these and
/// reports everything at once).
pub fn read(dir: &Path, env: &Env) -> (Files, Vec<Problem>) {
    let mut problems = Vec::new();
    if !dir.is_dir() {
        problems.push(Problem::new(
            dir.display().to_string(),
            "",
            "config directory does not exist",
        ));
        return (Files::default(), problems);
    }
    let main: MainFile = match read_toml(dir, MAIN_FILE, true, env, &mut problems) {
        Some(mut value) => {
            env::apply_overrides(&mut value, env);
            parse(value, MAIN_FILE, &mut problems).unwrap_or_default()
        }
        None => MainFile::default(),
    };
    let mut endpoints: outbound::EndpointsFile = read_file(dir, ENDPOINTS_FILE, env, &mut problems);
    endpoints.secret_headers = env_headers(&dir.join(ENDPOINTS_FILE));
    let keys_path = dir.join(&main.auth.keys_file);
    let keys = load_keys_file(&keys_path).unwrap_or_else(|p| {
        problems.push(p);
        KeysFile::default()
    });
    let files = Files {
        agents: read_file(dir, AGENTS_FILE, env, &mut problems),
        triggers: read_file(dir, TRIGGERS_FILE, env, &mut problems),
        automations: read_file(dir, AUTOMATIONS_FILE, env, &mut problems),
        providers: read_file(dir, PROVIDERS_FILE, env, &mut problems),
        actions: read_file(dir, ACTIONS_FILE, env, &mut problems),
        endpoints,
        keys,
        keys_modified: modified(&keys_path),
        keys_path,
        main,
    };
    (files, problems)
}

/// Only `[storage]` of `callgate.toml`, with `${ENV}` substitution and
/// `CALLGATE_STORAGE__*` overrides, for commands that touch only the
/// database (`callgate backup`): they must work whatever state the rest of
/// the configuration is in (a secret elsewhere not exported in this shell,
/// a trigger file mid-edit).
pub fn read_storage(dir: &Path, env: &Env) -> Result<StorageConfig, ConfigError> {
    #[derive(serde::Deserialize)]
    struct StorageOnly {
        #[serde(default)]
        storage: StorageConfig,
    }
    let mut problems = Vec::new();
    let path = dir.join(MAIN_FILE);
    let parsed = match std::fs::read_to_string(&path) {
        Err(e) => {
            problems.push(Problem::new(MAIN_FILE, "", format!("cannot read: {e}")));
            None
        }
        Ok(text) => match toml::from_str::<toml::Table>(&text) {
            Err(e) => {
                problems.push(Problem::new(MAIN_FILE, "", describe_toml_error(&text, &e)));
                None
            }
            Ok(mut table) => {
                // The same order as `read`: `${ENV}` first, then overrides.
                let mut value = toml::Value::Table(toml::Table::new());
                if let (Some(section), Some(t)) = (table.remove("storage"), value.as_table_mut()) {
                    t.insert("storage".into(), section);
                }
                env::substitute(&mut value, env, MAIN_FILE, &mut problems);
                env::apply_overrides(&mut value, env);
                parse::<StorageOnly>(value, MAIN_FILE, &mut problems)
            }
        },
    };
    match parsed {
        Some(s) if problems.is_empty() => Ok(s.storage),
        _ => Err(ConfigError(problems)),
    }
}

/// An optional file's shape (its default when the file is missing or has
/// problems, which are recorded).
fn read_file<T: serde::de::DeserializeOwned + Default>(
    dir: &Path,
    file: &str,
    env: &Env,
    problems: &mut Vec<Problem>,
) -> T {
    read_toml(dir, file, false, env, problems)
        .and_then(|v| parse(v, file, problems))
        .unwrap_or_default()
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
