//! JWKS issuers (`jwks_url`, `discovery`) against a real local identity
//! provider: an axum server on 127.0.0.1:0 (plain HTTP, or HTTPS with a
//! certificate from a test CA) that serves a key set it can be told to
//! change, take down, redirect or cache, and counts the requests it gets.
//! `keys`: which keys are taken and when; `fetch`: how they are fetched;
//! `config`: what `callgate check` refuses.

mod config;
mod fetch;
mod keys;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::runner::eventually;
use crate::support::{TestApp, config_problems, demo_body, fixture, now, problem, sign};

/// What the identity provider answers, and what it was asked.
#[derive(Default)]
struct IdpState {
    keys: Mutex<Vec<Value>>,
    cache_control: Mutex<Option<String>>,
    discovery: Mutex<Option<Value>>,
    /// `/jwks` answers a redirect here instead.
    redirect: Mutex<Option<String>>,
    down: AtomicBool,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
}

/// A local identity provider.
struct Idp {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<IdpState>,
    _stop: tokio_util::sync::DropGuard,
}

async fn jwks(State(s): State<Arc<IdpState>>) -> Response {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if let Some(to) = s.redirect.lock().unwrap().clone() {
        return (StatusCode::FOUND, [(header::LOCATION, to)]).into_response();
    }
    let body = json!({"keys": *s.keys.lock().unwrap()}).to_string();
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(cc) = s.cache_control.lock().unwrap().clone() {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    r
}

async fn discovery(State(s): State<Arc<IdpState>>) -> Response {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    match s.discovery.lock().unwrap().clone() {
        Some(doc) => axum::Json(doc).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl Idp {
    /// Plain HTTP on 127.0.0.1.
    async fn start(keys: Vec<Value>) -> Idp {
        Self::serve(keys, None).await
    }

    /// HTTPS on 127.0.0.1 with `tls`.
    async fn serve(keys: Vec<Value>, tls: Option<Arc<rustls::ServerConfig>>) -> Idp {
        let state = Arc::new(IdpState::default());
        *state.keys.lock().unwrap() = keys;
        *state.cache_control.lock().unwrap() = Some("public, max-age=3600".into());
        let router = Router::new()
            .route("/jwks", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let options = callgate::http::serve::ServeOptions {
            max_connections: 64,
            handshake_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(1),
        };
        tokio::spawn(callgate::http::serve::serve(
            listener,
            tls,
            router,
            options,
            stop.clone(),
        ));
        Idp {
            addr,
            scheme,
            state,
            _stop: stop.drop_guard(),
        }
    }

    fn base(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.addr.port())
    }

    fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base())
    }

    fn hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    fn set_cache_control(&self, cc: &str) {
        *self.state.cache_control.lock().unwrap() = Some(cc.into());
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

/// A signing key and its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    enc: EncodingKey,
    jwk: Value,
}

impl Key {
    fn from_encoding(kid: &str, alg: Algorithm, enc: EncodingKey) -> Key {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Key {
            kid: kid.into(),
            alg,
            enc,
            jwk,
        }
    }

    /// A fresh EC P-256 key (rcgen generates it).
    fn es256(kid: &str) -> Key {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        Self::from_encoding(kid, Algorithm::ES256, enc)
    }

    /// The fixture RSA key.
    fn rs256(kid: &str) -> Key {
        let enc = EncodingKey::from_rsa_pem(&fixture("jwt/rsa-private.pem")).unwrap();
        Self::from_encoding(kid, Algorithm::RS256, enc)
    }

    /// A token for `iss`, signed by this key and naming its `kid`.
    fn token(&self, iss: &str, sub: &str) -> String {
        self.token_as(iss, sub, &self.kid)
    }

    /// A token signed by this key naming `kid`.
    fn token_as(&self, iss: &str, sub: &str, kid: &str) -> String {
        sign(self.alg, Some(kid), &self.enc, &token_claims(iss, sub))
    }
}

fn token_claims(iss: &str, sub: &str) -> Value {
    json!({
        "iss": iss, "aud": "callgate", "sub": sub, "scope": "triggers:run",
        "iat": now(), "exp": now() + 300,
    })
}

/// A JWKS issuer `id` of tokens from `iss` whose keys are at `url`.
fn issuer(id: &str, iss: &str, algorithms: &str, source: &str, extra: &str) -> String {
    format!(
        "[auth.jwt.issuers.{id}]\nissuer = \"{iss}\"\naudience = \"callgate\"\n\
         algorithms = {algorithms}\n{source}\n{extra}\n"
    )
}

/// A loopback JWKS over plain HTTP (both relaxations), refreshed on an
/// unknown `kid` at most once a second.
fn local(id: &str, idp: &Idp, algorithms: &str, extra: &str) -> String {
    issuer(
        id,
        &format!("https://{id}.test/"),
        algorithms,
        &format!("jwks_url = \"{}\"", idp.jwks_url()),
        &format!("allow_http = true\nallow_private = true\njwks_min_refresh = \"1s\"\n{extra}"),
    )
}

/// The status and (for a 401) detail of a trigger call with `token`.
async fn call(app: &TestApp, token: &str) -> (u16, String) {
    let r = app.trigger(token, "demo-call", &demo_body()).await;
    let status = r.status().as_u16();
    if status == 401 {
        let body = problem(r, 401).await;
        (status, body["detail"].as_str().unwrap().to_owned())
    } else {
        (status, String::new())
    }
}

const UNKNOWN_KID: &str = "the token's `kid` does not name a configured key of this issuer";
const NOT_FETCHED: &str = "this issuer's signing keys could not be fetched yet; try again later";

/// The value of one series in `/metrics` (0 when absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .get(app.key("prom"), "/metrics")
        .await
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until a token is accepted (202), within `timeout`.
async fn accepted_within(app: &TestApp, token: &str, timeout: Duration) {
    eventually(timeout, "the token to be accepted", || async {
        (call(app, token).await.0 == 202).then_some(())
    })
    .await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A CA (certificate PEM, issuer) and a server config for 127.0.0.1 whose
/// certificate that CA signed.
fn ca_signed_tls() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let tls = callgate::app::tls::load_files(&cert, &key).unwrap();
    (ca_cert.pem(), tls)
}

/// A `callgate.toml` with one issuer and otherwise the shipped settings.
fn main_with(issuer_toml: &str) -> String {
    let shipped =
        std::fs::read_to_string(format!("{}/callgate.toml", crate::support::REPO_CONFIG)).unwrap();
    format!("{shipped}\n{issuer_toml}")
}
