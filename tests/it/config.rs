//! `callgate.toml` settings from the environment: `CALLGATE_<SECTION>__<KEY>`
//! works for every section (the README's promise), nested keys included,
//! and a bad value is reported like one in the file.

use std::path::Path;
use std::time::Duration;

use crate::support::{REPO_CONFIG, copy_dir, test_cert, test_env};

/// Loads the shipped config with `vars` added to the environment.
fn load_with(
    vars: &[(&str, &str)],
) -> Result<callgate::catalog::Catalog, callgate::config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(REPO_CONFIG), dir.path());
    let (cert, key) = test_cert();
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let mut env = test_env();
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let data = tempfile::tempdir().unwrap();
    callgate::app::compile::load(dir.path(), data.path(), &env)
}

#[test]
fn every_section_of_callgate_toml_can_be_set_from_the_environment() {
    let config = load_with(&[
        ("CALLGATE_SERVER__MAX_BODY_BYTES", "1024"),
        ("CALLGATE_SERVER__TLS__CERT_FILE", "cert.pem"),
        ("CALLGATE_SERVER__TLS__KEY_FILE", "key.pem"),
        ("CALLGATE_STORAGE__MAX_BATCH", "256"),
        (
            "CALLGATE_LIMITS__PER_IP",
            "{ requests = 5, per = \"1s\", burst = 7 }",
        ),
        ("CALLGATE_IDEMPOTENCY__RETENTION", "1h"),
        ("CALLGATE_DEFAULTS__PHONE_REGION", "GB"),
        ("CALLGATE_AUTH__KEYS_RELOAD_INTERVAL", "5s"),
        ("CALLGATE_RUNNER__WORKERS", "3"),
        ("CALLGATE_RUNNER__LEASE", "45s"),
        ("CALLGATE_CALLING__TIMEZONE_FIELD", "/tz"),
        ("CALLGATE_DELIVERIES__WORKERS", "2"),
        ("CALLGATE_DELIVERIES__RETENTION", "7d"),
        // Not settings: left alone.
        ("CALLGATE_LOG", "debug"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let main = &config.main;
    assert_eq!(main.server.max_body_bytes, 1024);
    assert_eq!(main.server.tls.cert_file.as_deref(), Some("cert.pem"));
    assert_eq!(main.server.tls.key_file.as_deref(), Some("key.pem"));
    assert_eq!(main.storage.max_batch, 256);
    assert_eq!(main.limits.per_ip.burst, 7);
    assert_eq!(main.idempotency.retention, Duration::from_secs(3600));
    assert_eq!(main.defaults.phone_region, "GB");
    assert_eq!(main.auth.keys_reload_interval, Duration::from_secs(5));
    assert_eq!(main.runner.workers, 3);
    assert_eq!(main.runner.lease, Duration::from_secs(45));
    assert_eq!(main.calling.timezone_field, "/tz");
    assert_eq!(main.deliveries.workers, 2);
    assert_eq!(main.deliveries.retention, Duration::from_secs(7 * 86_400));
}

#[test]
fn a_bad_value_from_the_environment_is_reported_with_its_key() {
    let err = load_with(&[("CALLGATE_RUNNER__WORKERS", "many")]).unwrap_err();
    assert!(
        err.0.iter().any(|p| p.key.contains("runner.workers")),
        "{err}"
    );
    let err = load_with(&[("CALLGATE_DELIVERIES__NO_SUCH_KEY", "1")]).unwrap_err();
    assert!(err.to_string().contains("no_such_key"), "{err}");
}

#[test]
fn storage_urls_are_checked_by_engine_and_passwords_are_not_echoed() {
    let problem = |url: &str| {
        let err = crate::support::config_problems(&[(
            "callgate.toml",
            &format!("[storage]\nurl = \"{url}\"\n"),
        )]);
        let found = err
            .0
            .iter()
            .find(|p| p.to_string().contains("storage.url"))
            .unwrap_or_else(|| panic!("no storage.url problem for {url}: {err}"))
            .to_string();
        assert!(
            !found.contains("s3cret"),
            "the password was echoed: {found}"
        );
        found
    };
    assert!(problem("mysql://cg:s3cret@db/callgate").contains("unsupported"));
    assert!(problem("postgres://cg:s3cret@db:notaport/callgate").contains("not a PostgreSQL URL"));
    assert!(problem("postgres://cg:s3cret@db/callgate?sslmode=require").contains("TLS"));

    // A well-formed PostgreSQL URL passes the check (nothing connects).
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(REPO_CONFIG), dir.path());
    let main = dir.path().join("callgate.toml");
    let text = std::fs::read_to_string(&main).unwrap().replace(
        "url = \"sqlite:callgate.db\"",
        "url = \"postgres://cg:s3cret@db:5432/callgate?options=-csearch_path%3Dcg\"",
    );
    std::fs::write(&main, text).unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = callgate::app::compile::load(dir.path(), data.path(), &test_env()).unwrap();
    assert!(config.main.storage.url.starts_with("postgres://"));
    assert_eq!(config.main.storage.pool_size, 16);
    assert!(!config.main.storage.poll_only);
}

#[test]
fn the_redis_limits_backend_is_set_from_the_environment() {
    let config = load_with(&[
        ("CALLGATE_LIMITS__BACKEND", "redis"),
        (
            "CALLGATE_LIMITS__REDIS_URL",
            "redis://cache.internal:6380/2",
        ),
        ("CALLGATE_LIMITS__INSTANCES", "3"),
        ("CALLGATE_LIMITS__REDIS_PREFIX", "prod:"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let limits = &config.main.limits;
    assert_eq!(limits.backend, callgate::config::LimitsBackend::Redis);
    use secrecy::ExposeSecret;
    assert_eq!(
        limits.redis_url.as_ref().unwrap().expose_secret(),
        "redis://cache.internal:6380/2"
    );
    assert_eq!(
        (limits.instances, limits.redis_prefix.as_str()),
        (3, "prod:")
    );
    // The defaults: memory, one instance.
    let config = load_with(&[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.main.limits.backend,
        callgate::config::LimitsBackend::Memory
    );
    assert_eq!(config.main.limits.instances, 1);
}

#[test]
fn redis_url_takes_a_secret_from_the_environment() {
    let shipped = std::fs::read_to_string(Path::new(REPO_CONFIG).join("callgate.toml")).unwrap();
    let main = shipped
        .replace("backend = \"memory\"", "backend = \"redis\"")
        .replace(
            "# redis_url = \"redis://127.0.0.1:6379\"",
            "redis_url = \"${CG_TEST_REDIS}\"",
        );
    assert_ne!(main, shipped, "the shipped [limits] comments changed");
    let err = crate::support::config_problems(&[("callgate.toml", &main)]);
    crate::support::assert_problem(&err, "limits.redis_url", "CG_TEST_REDIS");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(REPO_CONFIG), dir.path());
    std::fs::write(dir.path().join("callgate.toml"), &main).unwrap();
    let mut env = test_env();
    env.insert("CG_TEST_REDIS".into(), "redis://:s3cret@cache:6379".into());
    let data = tempfile::tempdir().unwrap();
    let config = callgate::app::compile::load(dir.path(), data.path(), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    use secrecy::ExposeSecret;
    let url = config.main.limits.redis_url.as_ref().unwrap();
    assert_eq!(url.expose_secret(), "redis://:s3cret@cache:6379");
    // A secret: its Debug form is redacted.
    assert!(!format!("{:?}", config.main.limits).contains("s3cret"));
}

#[test]
fn redis_limits_problems_name_their_key() {
    let err = load_with(&[("CALLGATE_LIMITS__BACKEND", "redis")]).unwrap_err();
    crate::support::assert_problem(&err, "limits.redis_url", "required");
    for bad in ["0s", "11s"] {
        let err = load_with(&[("CALLGATE_LIMITS__REDIS_TIMEOUT", bad)]).unwrap_err();
        crate::support::assert_problem(&err, "limits.redis_timeout", "at most 10s");
    }
    let config = load_with(&[("CALLGATE_LIMITS__REDIS_TIMEOUT", "250ms")]).unwrap();
    assert_eq!(
        config.main.limits.redis_timeout,
        std::time::Duration::from_millis(250)
    );
    let err = load_with(&[
        ("CALLGATE_LIMITS__BACKEND", "redis"),
        ("CALLGATE_LIMITS__REDIS_URL", "http://cache:6379"),
    ])
    .unwrap_err();
    crate::support::assert_problem(&err, "limits.redis_url", "redis://");
    let err = load_with(&[
        ("CALLGATE_LIMITS__BACKEND", "redis"),
        ("CALLGATE_LIMITS__REDIS_URL", "rediss://cache:6380"),
    ])
    .unwrap_err();
    crate::support::assert_problem(&err, "limits.redis_url", "TLS");
    let err = load_with(&[("CALLGATE_LIMITS__INSTANCES", "0")]).unwrap_err();
    crate::support::assert_problem(&err, "limits.instances", "at least 1");
    let err = load_with(&[("CALLGATE_LIMITS__BACKEND", "valkey")]).unwrap_err();
    assert!(err.to_string().contains("limits.backend"), "{err}");
    // Every problem at once, each with the file and key.
    let err = load_with(&[
        ("CALLGATE_LIMITS__BACKEND", "redis"),
        ("CALLGATE_LIMITS__INSTANCES", "0"),
    ])
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("callgate.toml") && text.contains("limits.redis_url"),
        "{text}"
    );
    assert!(text.contains("limits.instances"), "{text}");
}
