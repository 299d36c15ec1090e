//! The compile step: turns the configuration files into the `Catalog` the
//! gateway runs with. Each domain module compiles its own part (triggers
//! with their schemas, agents, automations, endpoints, actions, keys,
//! issuers); this is the one place that orders them and checks what spans
//! files (the server's TLS files, the storage URL).
//!
//! Policy: nothing stops at the first problem. Every problem found in any
//! file is returned, with its file and key, so that `callgate check` lists
//! them all at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::auth::{Issuers, KeySet};
use crate::catalog::Catalog;
use crate::config::{self, ConfigError, Env, Files, MAIN_FILE, MainFile, Problem};
use crate::input::phone::Region;
use crate::{automation, calling, outbound, trigger};

/// Reads and compiles the config dir. `data_dir` is where storage and the
/// generated certificate go (the CLI's `--data-dir`).
pub fn load(dir: &Path, data_dir: &Path, env: &Env) -> Result<Catalog, ConfigError> {
    let (files, mut problems) = config::read(dir, env);
    let catalog = compile(dir, data_dir, files, &mut problems);
    if problems.is_empty() {
        Ok(catalog)
    } else {
        Err(ConfigError(problems))
    }
}

/// Compiles parsed files; problems are added to `problems` (the catalog is
/// only meant to be used when there are none).
pub fn compile(dir: &Path, data_dir: &Path, files: Files, problems: &mut Vec<Problem>) -> Catalog {
    let Files {
        main,
        agents,
        triggers,
        automations,
        providers,
        endpoints,
        actions,
        keys,
        keys_path,
        keys_modified,
    } = files;
    check_main(dir, &main, problems);
    check_limits_backend(&main.limits, problems);
    let keys = KeySet::build(&keys, &main.auth.keys_file, problems);
    let issuers = Issuers::build(&main.auth.jwt.issuers, dir, MAIN_FILE, problems);
    crate::calls::check_providers(&providers.providers, problems);
    let provider_cas = crate::calls::provider_cas(&providers.providers, dir, problems);
    let built_agents = calling::compile_agents(&agents.agents, &providers.providers, problems);
    let built_automations = automation::compile_automations(
        &automations.automations,
        &agents.agents,
        &endpoints.endpoints,
        problems,
    );
    let built_endpoints = outbound::compile_endpoints(&endpoints, dir, problems);
    let built_actions = outbound::compile_actions(
        &actions,
        &built_endpoints,
        &endpoints.endpoints,
        &agents.agents,
        problems,
    );
    let alert_targets = outbound::compile_alerts(&main.alerts, problems);
    let dnc_file = main.calling.do_not_call_file.clone();
    let do_not_call = calling::load_dnc(&dir.join(&dnc_file), &dnc_file, problems);
    let refs = trigger::References {
        agents: &agents.agents,
        automations: &automations.automations,
    };
    let mut built_triggers = BTreeMap::new();
    for (id, cfg) in &triggers.triggers {
        if let Some(t) = trigger::compile(dir, id, cfg, &main, &refs, problems) {
            built_triggers.insert(t.id.clone(), Arc::new(t));
        }
    }
    Catalog {
        dir: dir.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        main,
        agents: built_agents,
        triggers: built_triggers,
        automations: built_automations,
        providers: providers.providers,
        provider_cas,
        do_not_call,
        keys,
        keys_path,
        keys_modified,
        issuers,
        endpoints: built_endpoints,
        actions: built_actions,
        alert_targets,
    }
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
            } else if let Err(e) = super::tls::load_files(&dir.join(cert), &dir.join(key)) {
                problem("server.tls", e.to_string());
            }
        }
        (None, None) => {}
    }
    if let Err(e) = crate::store::check_url(&main.storage.url) {
        problem("storage.url", e);
    }
    if main.storage.max_pending_writes == 0
        || main.storage.max_batch == 0
        || main.storage.write_connections == 0
    {
        problem(
            "storage",
            "`max_pending_writes`, `max_batch` and `write_connections` must be at least 1".into(),
        );
    }
    for (key, rate) in [
        ("limits.per_ip", &main.limits.per_ip),
        ("limits.per_principal", &main.limits.per_principal),
        ("limits.per_trigger", &main.limits.per_trigger),
        ("limits.per_provider", &main.limits.per_provider),
    ] {
        if let Err(e) = rate.check() {
            problem(key, e);
        }
    }
    if main.limits.housekeeping_interval.is_zero() {
        problem(
            "limits.housekeeping_interval",
            "must be longer than 0s".into(),
        );
    }
    if main.console.idle_timeout.is_zero() || main.console.absolute_timeout.is_zero() {
        problem(
            "console.idle_timeout",
            "console.idle_timeout and console.absolute_timeout must be longer than 0s".into(),
        );
    }
    if main.idempotency.retention.is_zero() {
        problem("idempotency.retention", "must be longer than 0s".into());
    }
    if main.auth.db_keys_refresh.is_zero() {
        problem("auth.db_keys_refresh", "must be longer than 0s".into());
    }
    if let Err(e) = Region::parse(&main.defaults.phone_region) {
        problem("defaults.phone_region", e);
    }
}

/// `limits.backend`, `redis_url`, `instances`, `redis_timeout`.
fn check_limits_backend(limits: &config::LimitsConfig, problems: &mut Vec<Problem>) {
    use secrecy::ExposeSecret;
    let mut problem = |key: &str, msg: String| problems.push(Problem::new(MAIN_FILE, key, msg));
    if limits.instances == 0 {
        problem("limits.instances", "must be at least 1".into());
    }
    if limits.redis_timeout.is_zero() || limits.redis_timeout > std::time::Duration::from_secs(10) {
        problem(
            "limits.redis_timeout",
            "must be more than 0 and at most 10s (every limited request may wait this long)".into(),
        );
    }
    match (limits.backend, &limits.redis_url) {
        (config::LimitsBackend::Redis, None) => problem(
            "limits.redis_url",
            "is required with `backend = \"redis\"` (e.g. \"redis://127.0.0.1:6379\")".into(),
        ),
        (_, Some(url)) => {
            if let Err(e) = crate::limits::check_redis_url(url.expose_secret()) {
                problem("limits.redis_url", e);
            }
        }
        (config::LimitsBackend::Memory, None) => {}
    }
}
