//! `TestApp`: the real server on 127.0.0.1:0 over HTTPS, with a temp config
//! dir (the shipped agents, triggers and schemas, plus what a test adds), a
//! temp data dir, API keys minted the way `callgate key new` does, JWT
//! signing helpers, and a real HTTPS client that trusts only the test cert.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use callgate::clock::{Clock, ManualClock, SystemClock};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const JWT_SECRET: &str = "test-secret-that-is-at-least-32-bytes-long!!";
/// The `${CRM_TOKEN}` of test endpoint configs.
pub const CRM_TOKEN: &str = "crm-token-that-must-never-be-logged";
pub const JWT_ISS: &str = "https://idp.test/";
pub const JWT_AUD: &str = "callgate";
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
pub const REPO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");

/// Installs ring as the process-wide rustls provider (reqwest needs one).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What a test wants different from the defaults.
pub struct Builder {
    main_extra: String,
    limits: String,
    triggers_extra: String,
    keys: Vec<(String, Vec<String>, Option<String>)>,
    clock: Option<Arc<ManualClock>>,
    storage: String,
    trusted_proxies: bool,
    background_runner: bool,
    files: Vec<(String, String)>,
    max_body_bytes: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            main_extra: String::new(),
            // Generous unless a test is about limits.
            limits: "per_ip = { requests = 100000, per = \"1s\", burst = 100000 }\n\
                     per_principal = { requests = 100000, per = \"1s\", burst = 100000 }\n\
                     per_trigger = { requests = 100000, per = \"1s\", burst = 100000 }\n"
                .into(),
            triggers_extra: String::new(),
            keys: Vec::new(),
            clock: None,
            storage: String::new(),
            trusted_proxies: false,
            background_runner: false,
            files: Vec::new(),
            max_body_bytes: 4096,
        }
    }
}

impl Builder {
    /// Replaces the `[limits]` body.
    pub fn limits(mut self, toml: &str) -> Self {
        self.limits = toml.to_owned();
        self
    }
    /// Extra top-level TOML for `callgate.toml` (e.g. `[idempotency]`).
    pub fn main(mut self, toml: &str) -> Self {
        self.main_extra.push_str(toml);
        self.main_extra.push('\n');
        self
    }
    /// Extra `[storage]` keys.
    pub fn storage(mut self, toml: &str) -> Self {
        self.storage.push_str(toml);
        self.storage.push('\n');
        self
    }
    /// Appended to the shipped `triggers.toml`.
    pub fn triggers(mut self, toml: &str) -> Self {
        self.triggers_extra.push_str(toml);
        self.triggers_extra.push('\n');
        self
    }
    /// An API key with these scopes (minted before start).
    pub fn key(mut self, name: &str, scopes: &[&str]) -> Self {
        self.keys.push((
            name.into(),
            scopes.iter().map(|s| s.to_string()).collect(),
            None,
        ));
        self
    }
    /// An API key with a rate-limit override, as in keys.toml.
    pub fn key_with_limit(mut self, name: &str, scopes: &[&str], rate: &str) -> Self {
        self.keys.push((
            name.into(),
            scopes.iter().map(|s| s.to_string()).collect(),
            Some(rate.into()),
        ));
        self
    }
    /// Runs the job runner's loop in the background (default: off; tests
    /// drive it with `app.run_pending()`).
    pub fn background_runner(mut self) -> Self {
        self.background_runner = true;
        self
    }
    /// Replaces (or adds) a file in the config dir.
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.to_owned(), contents.to_owned()));
        self
    }
    /// `server.max_body_bytes` (default 4096).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
    /// Runs the server on a manual clock.
    pub fn clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts with 127.0.0.1 as a trusted reverse proxy.
    pub async fn start_with_trusted_proxy(mut self) -> TestApp {
        self.trusted_proxies = true;
        self.start().await
    }

    pub async fn start(self) -> TestApp {
        crypto();
        let config_dir = tempfile::tempdir().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let dir = config_dir.path();
        copy_dir(Path::new(REPO_CONFIG), dir);
        std::fs::write(dir.join("keys.toml"), "").unwrap();

        let (cert_pem, key_pem) = test_cert();
        std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
        let main = format!(
            r#"
[server]
listen = "127.0.0.1:0"
request_timeout = "10s"
shutdown_grace = "5s"
max_body_bytes = {max_body}
trusted_proxies = {proxies}
[server.tls]
cert_file = "cert.pem"
key_file = "key.pem"
[storage]
url = "sqlite:callgate.db"
{storage}
[limits]
{limits}
[auth]
keys_reload_interval = "100ms"
[auth.jwt.issuers.test]
issuer = "{JWT_ISS}"
audience = "{JWT_AUD}"
algorithms = ["HS256"]
leeway = "30s"
[[auth.jwt.issuers.test.keys]]
secret = "${{TEST_JWT_SECRET}}"
[auth.jwt.issuers.rsa]
issuer = "https://rsa.test/"
audience = ["callgate", "other"]
algorithms = ["RS256"]
[[auth.jwt.issuers.rsa.keys]]
kid = "rsa-1"
public_key_file = "{FIXTURES}/jwt/rsa-public.pem"
[auth.jwt.issuers.ec]
issuer = "https://ec.test/"
audience = "callgate"
algorithms = ["ES256"]
[[auth.jwt.issuers.ec.keys]]
public_key_file = "{FIXTURES}/jwt/ec-public.pem"
[auth.jwt.issuers.ed]
issuer = "https://ed.test/"
audience = "callgate"
algorithms = ["EdDSA"]
scope_claim = "scp"
[[auth.jwt.issuers.ed.keys]]
public_key_file = "{FIXTURES}/jwt/ed-public.pem"
{extra}
"#,
            storage = self.storage,
            max_body = self.max_body_bytes,
            proxies = if self.trusted_proxies {
                "[\"127.0.0.1/32\"]"
            } else {
                "[]"
            },
            limits = self.limits,
            extra = self.main_extra,
        );
        std::fs::write(dir.join("callgate.toml"), main).unwrap();
        if !self.triggers_extra.is_empty() {
            let mut t = std::fs::read_to_string(dir.join("triggers.toml")).unwrap();
            t.push('\n');
            t.push_str(&self.triggers_extra);
            std::fs::write(dir.join("triggers.toml"), t).unwrap();
        }
        for (name, contents) in &self.files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        let mut keys = BTreeMap::new();
        for (name, scopes, rate) in &self.keys {
            let key = callgate::auth::api_key::add_to_file(
                &dir.join("keys.toml"),
                name,
                scopes,
                None,
                "test",
            )
            .unwrap();
            if let Some(rate) = rate {
                let mut text = std::fs::read_to_string(dir.join("keys.toml")).unwrap();
                text.push_str(&format!("rate_limit = {rate}\n"));
                std::fs::write(dir.join("keys.toml"), text).unwrap();
            }
            keys.insert(name.clone(), key);
        }
        let env = test_env();
        let config = callgate::config::load(dir, data_dir.path(), &env)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let clock: Arc<dyn Clock> = match &self.clock {
            Some(c) => c.clone(),
            None => Arc::new(SystemClock),
        };
        let (started_tx, started_rx) = oneshot::channel();
        let options = callgate::RunOptions {
            clock,
            runner: self.background_runner,
            started: Some(started_tx),
        };
        let server = tokio::spawn(callgate::run_with(
            config,
            listener,
            async {
                let _ = stopped.await;
            },
            options,
        ));
        let started = started_rx.await.expect("the server did not start");
        TestApp {
            addr,
            base: format!("https://127.0.0.1:{}", addr.port()),
            client: client(cert_pem.as_bytes()),
            cert_pem,
            keys,
            config_dir,
            data_dir,
            stop: Some(stop),
            server: Some(server),
            runner: started.runner,
            state: started.state,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub cert_pem: String,
    pub keys: BTreeMap<String, String>,
    pub config_dir: tempfile::TempDir,
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    pub runner: callgate::runner::Runner,
    pub state: callgate::http::AppState,
}

impl TestApp {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A server with one key `zapier` (triggers:run) and defaults otherwise.
    pub async fn start() -> TestApp {
        Self::builder()
            .key("zapier", &["triggers:run"])
            .start()
            .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn key(&self, name: &str) -> &str {
        &self.keys[name]
    }

    /// POSTs JSON to a trigger with an API key.
    pub async fn trigger(&self, key: &str, trigger: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/triggers/{trigger}")))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// Runs every due job now (instead of waiting for the background loop).
    pub async fn run_pending(&self) -> usize {
        self.runner.run_pending().await
    }

    /// The simulator's dial log.
    pub fn dial_log(&self) -> Vec<callgate::calls::simulator::LogEntry> {
        let path = callgate::calls::simulator::log_path(self.data_dir.path(), "simulator");
        callgate::calls::simulator::read_log(&path).unwrap_or_default()
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.path().join("callgate.db")
    }

    /// Counts the jobs on disk, reading the SQLite file directly.
    pub async fn jobs_on_disk(&self) -> i64 {
        count_jobs(&self.db_path()).await
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(h) => h.await.unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens a database file read-only and counts its jobs.
pub async fn count_jobs(path: &Path) -> i64 {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

pub fn test_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("TEST_JWT_SECRET".to_string(), JWT_SECRET.to_string()),
        ("CRM_TOKEN".to_string(), CRM_TOKEN.to_string()),
    ])
}

/// A self-signed certificate for 127.0.0.1 / localhost: (cert PEM, key PEM).
pub fn test_cert() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// An HTTPS client that trusts only `cert_pem`.
pub fn client(cert_pem: &[u8]) -> reqwest::Client {
    crypto();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem).unwrap()])
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Loads the shipped config with `files` written over it; it must fail.
pub fn config_problems(files: &[(&str, &str)]) -> callgate::config::ConfigError {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(REPO_CONFIG), dir.path());
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    callgate::config::load(dir.path(), data.path(), &test_env())
        .expect_err("the config should not validate")
}

/// Asserts that `err` has a problem at `key` whose message contains `what`.
pub fn assert_problem(err: &callgate::config::ConfigError, key: &str, what: &str) {
    assert!(
        err.0
            .iter()
            .any(|p| p.key == key && p.message.contains(what)),
        "expected {key} ({what}) in:\n{err}"
    );
}

/// Reads a problem+json body, checking the media type and the basic members.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(ct, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:callgate:problem:"),
        "{body}"
    );
    assert!(!body["title"].as_str().unwrap().is_empty(), "{body}");
    assert!(!body["detail"].as_str().unwrap().is_empty(), "{body}");
    body
}

/// Signs a JWT with the test HMAC issuer's secret.
pub fn hs256(claims: &Value) -> String {
    sign(
        jsonwebtoken::Algorithm::HS256,
        None,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        claims,
    )
}

pub fn sign(
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    key: &jsonwebtoken::EncodingKey,
    claims: &Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/jwt/{name}")).unwrap()
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Standard valid claims for the HMAC test issuer.
pub fn claims(scope: &str) -> Value {
    serde_json::json!({
        "iss": JWT_ISS,
        "aud": JWT_AUD,
        "sub": "user-1",
        "scope": scope,
        "iat": now(),
        "exp": now() + 300,
    })
}

pub fn demo_body() -> Value {
    serde_json::json!({
        "phone_number": "+1 (555) 012-1234",
        "customer": {"name": "Ada Lovelace", "crm_id": "0031x00000ABC"},
        "variables": {"plan": "enterprise"}
    })
}
