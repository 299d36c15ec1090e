//! `TestApp`: the real server on 127.0.0.1:0 over HTTPS, with a temp config
//! dir (the shipped agents, triggers and schemas, plus what a test adds), a
//! temp data dir, API keys minted the way `callgate key new` does, JWT
//! signing helpers, and a real HTTPS client that trusts only the test cert.

#![allow(dead_code)]

pub mod browser;
pub mod pg;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
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
    storage_url: String,
    /// The PostgreSQL schema the server stores into (dropped with the app).
    pg: Option<pg::Schema>,
    trusted_proxies: bool,
    background_runner: bool,
    files: Vec<(String, String)>,
    env: Vec<(String, String)>,
    max_body_bytes: usize,
    listen: &'static str,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            main_extra: String::new(),
            // Generous unless a test is about limits.
            limits: "per_ip = { requests = 100000, per = \"1s\", burst = 100000 }\n\
                     per_principal = { requests = 100000, per = \"1s\", burst = 100000 }\n\
                     per_trigger = { requests = 100000, per = \"1s\", burst = 100000 }\n\
                     per_provider = { requests = 100000, per = \"1s\", burst = 100000 }\n"
                .into(),
            triggers_extra: String::new(),
            keys: Vec::new(),
            clock: None,
            storage: String::new(),
            storage_url: "sqlite:callgate.db".into(),
            pg: None,
            trusted_proxies: false,
            background_runner: false,
            files: Vec::new(),
            env: Vec::new(),
            max_body_bytes: 4096,
            listen: "127.0.0.1:0",
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
    /// Stores into a fresh schema of the PostgreSQL database at `url`
    /// (`CALLGATE_TEST_DATABASE_URL`) instead of SQLite.
    pub fn postgres(mut self, url: &str) -> Self {
        let schema = pg::Schema::create(url);
        self.storage_url = schema.url.clone();
        self.pg = Some(schema);
        self
    }
    /// Stores at `url` (e.g. another app's PostgreSQL schema, to run two
    /// instances on one database).
    pub fn storage_url(mut self, url: &str) -> Self {
        self.storage_url = url.to_owned();
        self
    }
    /// Replaces (or adds) a file in the config dir.
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.to_owned(), contents.to_owned()));
        self
    }
    /// An environment variable the config is loaded with, e.g. a
    /// `CALLGATE_<SECTION>__<KEY>` override of the test `callgate.toml`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }
    /// `server.max_body_bytes` (default 4096).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
    /// Listens on IPv6 loopback (`[::1]:0`) instead of 127.0.0.1 (the test
    /// certificate covers both).
    pub fn ipv6(mut self) -> Self {
        self.listen = "[::1]:0";
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
url = "{storage_url}"
{pool}
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
            storage_url = self.storage_url,
            // Few connections per PostgreSQL instance: tests run side by
            // side against one server (max_connections 100 by default).
            pool = if self.storage_url.starts_with("postgres")
                && !self.storage.contains("pool_size")
            {
                "pool_size = 4"
            } else {
                ""
            },
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
        let mut env = test_env();
        env.extend(self.env.iter().cloned());
        let config = callgate::app::compile::load(dir, data_dir.path(), &env)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let listener = tokio::net::TcpListener::bind(self.listen).await.unwrap();
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
            base: format!("https://{addr}"),
            client: client(cert_pem.as_bytes()),
            cert_pem,
            keys,
            config_dir,
            data_dir,
            stop: Some(stop),
            server: Some(server),
            runner: started.runner,
            state: started.state,
            pg: self.pg,
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
    /// Set when the app stores into PostgreSQL (dropped after the server).
    pub pg: Option<pg::Schema>,
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

    /// The running server's store.
    pub fn store(&self) -> &dyn callgate::store::Store {
        &*self.state.store
    }

    /// Counts the jobs the store has committed (and so on disk).
    pub async fn jobs_on_disk(&self) -> i64 {
        self.store()
            .count_jobs(callgate::store::JobFilter::default())
            .await
            .unwrap() as i64
    }

    /// Every job the store holds, newest first.
    pub async fn all_jobs(&self) -> Vec<callgate::store::JobRecord> {
        all_jobs(self.store()).await
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

/// Opens the storage of a gateway that used `data_dir` with the default
/// `[storage]` (as the tests configure it), to inspect what it left once
/// it has exited. Close it when done.
pub async fn open_store(data_dir: &Path) -> Arc<dyn callgate::store::Store> {
    callgate::store::open(&callgate::config::StorageConfig::default(), data_dir)
        .await
        .unwrap()
}

/// Every job in `store`, newest first (page by page).
pub async fn all_jobs(store: &dyn callgate::store::Store) -> Vec<callgate::store::JobRecord> {
    let mut all: Vec<callgate::store::JobRecord> = Vec::new();
    loop {
        let before = all.last().map(|j| j.id.clone());
        let page = store
            .jobs(callgate::store::JobFilter::default(), before, 500)
            .await
            .unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Every delivery in `store`, newest first (page by page).
pub async fn all_deliveries(
    store: &dyn callgate::store::Store,
) -> Vec<callgate::store::DeliveryRecord> {
    let mut all: Vec<callgate::store::DeliveryRecord> = Vec::new();
    loop {
        let filter = callgate::store::DeliveryFilter {
            before: all.last().map(|d| d.id.clone()),
            limit: 500,
            ..Default::default()
        };
        let page = store.deliveries(filter).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// How many records of `table` (`jobs`, `calls`, `deliveries`) have
/// `status` (`None`: all), from the store's status counts.
pub async fn count_status(
    store: &dyn callgate::store::Store,
    table: &str,
    status: Option<&str>,
) -> i64 {
    store
        .status_counts()
        .await
        .unwrap()
        .into_iter()
        .filter(|(t, s, _)| t == table && status.is_none_or(|want| s == want))
        .map(|(_, _, n)| n)
        .sum()
}

/// Says that `test` was skipped for want of the server in `var`. Written
/// straight to the process's stderr, past the test harness's capture, so
/// the line shows in a passing run (`cargo test` hides what a passing test
/// prints with `eprintln!`).
pub fn say_skipped(test: &str, var: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped {test}: {var} not set");
}

pub fn test_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("TEST_JWT_SECRET".to_string(), JWT_SECRET.to_string()),
        ("CRM_TOKEN".to_string(), CRM_TOKEN.to_string()),
    ])
}

/// A self-signed certificate for 127.0.0.1 / ::1 / localhost: (cert PEM,
/// key PEM).
pub fn test_cert() -> (String, String) {
    let names = ["localhost", "127.0.0.1", "::1"].map(str::to_owned);
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).unwrap();
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
    callgate::app::compile::load(dir.path(), data.path(), &test_env())
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

/// A 403 problem whose `WWW-Authenticate` is RFC 6750's
/// `insufficient_scope` naming exactly `scopes` (space-separated).
pub async fn forbidden(response: reqwest::Response, scopes: &str) -> Value {
    let www = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = problem(response, 403).await;
    assert_eq!(
        www.as_deref(),
        Some(
            format!("Bearer realm=\"callgate\", error=\"insufficient_scope\", scope=\"{scopes}\"")
                .as_str()
        ),
        "{body}"
    );
    assert_eq!(body["type"], "urn:callgate:problem:forbidden");
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

/// A file under `tests/fixtures/` (a missing one fails the test).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
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

/// A raw HTTP/1.1-over-TLS connection to `addr` that trusts only `cert_pem`:
/// for tests that decide when each byte is written and when the answer is
/// read (a real client library would read while it writes).
pub async fn raw_tls(
    addr: SocketAddr,
    cert_pem: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response (its body delimited by `content-length`, or by the
/// end of the connection without one). Errors are the connection's: a reset
/// or an end before a complete response.
pub async fn read_response(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<RawResponse> {
    use std::io::{Error, ErrorKind};
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "connection ended before a response head ({} bytes)",
                    buf.len()
                ),
            ));
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().unwrap());
    match length {
        Some(len) => {
            while body.len() < len {
                if io.read_buf(&mut body).await? == 0 {
                    return Err(Error::new(ErrorKind::UnexpectedEof, "truncated body"));
                }
            }
            body.truncate(len);
        }
        None => {
            io.read_to_end(&mut body).await?;
        }
    }
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}
