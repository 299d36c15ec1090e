//! JWKS issuers (`jwks_url`, `discovery`) against a real local identity
//! provider: an axum server on 127.0.0.1:0 (plain HTTP, or HTTPS with a
//! certificate from a test CA) that serves a key set it can be told to
//! change, take down, redirect or cache, and counts the requests it gets.

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

#[tokio::test]
async fn a_rotated_key_set_takes_the_new_kid_and_refuses_the_old_one_even_when_cached() {
    let a = Key::es256("a");
    let b = Key::es256("b");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    idp.set_cache_control("max-age=1");
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&local(
            "rotate",
            &idp,
            "[\"ES256\"]",
            "jwks_cache_min = \"1s\"",
        ))
        .start()
        .await;
    let iss = "https://rotate.test/";
    let old = a.token(iss, "user-a");
    assert_eq!(call(&app, &old).await.0, 202, "fetched at start");

    // A new kid appears: the token naming it is accepted once a fetch
    // brought it (at most a refresh interval later).
    idp.set_keys(vec![a.jwk.clone(), b.jwk.clone()]);
    accepted_within(&app, &b.token(iss, "user-b"), Duration::from_secs(15)).await;

    // The old key leaves: its token, though verified (and cached) before,
    // is refused once the set without it is in force.
    idp.set_keys(vec![b.jwk.clone()]);
    let refused = eventually(Duration::from_secs(15), "the old key to go", || async {
        let (status, detail) = call(&app, &old).await;
        (status == 401).then_some(detail)
    })
    .await;
    assert_eq!(refused, UNKNOWN_KID);
    assert_eq!(call(&app, &b.token(iss, "user-b2")).await.0, 202);
    assert_eq!(
        metric(&app, "callgate_jwks_keys{issuer=\"rotate\"}").await,
        1.0
    );
    assert!(
        metric(
            &app,
            "callgate_jwks_fetch_total{issuer=\"rotate\",outcome=\"ok\"}"
        )
        .await
            >= 3.0
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_min_refresh() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    let app = TestApp::builder()
        .main(&local("flood", &idp, "[\"ES256\"]", ""))
        .start()
        .await;
    assert_eq!(idp.hits(), 1, "one fetch at start");
    let iss = "https://flood.test/";
    let started = Instant::now();
    let mut sent = 0;
    // Made-up kids, 8 at a time, for 3.5 s (the interval is 1 s).
    while started.elapsed() < Duration::from_millis(3500) {
        let batch: Vec<String> = (0..8)
            .map(|i| a.token_as(iss, "flooder", &format!("random-{sent}-{i}")))
            .collect();
        let answers = futures_util::future::join_all(batch.iter().map(|t| call(&app, t))).await;
        for answer in answers {
            assert_eq!(answer, (401, UNKNOWN_KID.to_owned()));
        }
        sent += 8;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = idp.hits();
    assert!(sent >= 24, "only {sent} tokens sent");
    // The start's fetch, then at most one per started second.
    let bound = 1 + elapsed.ceil() as usize;
    assert!(
        (2..=bound).contains(&fetches),
        "{fetches} fetches for {sent} unknown kids in {elapsed:.1} s (bound {bound})"
    );
    // The known key still works.
    assert_eq!(call(&app, &a.token(iss, "user")).await.0, 202);
}

#[tokio::test]
async fn when_the_provider_goes_down_the_last_good_keys_keep_working() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    idp.set_cache_control("max-age=1");
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&local(
            "down",
            &idp,
            "[\"ES256\"]",
            "jwks_cache_min = \"1s\"",
        ))
        .start()
        .await;
    let iss = "https://down.test/";
    assert_eq!(call(&app, &a.token(iss, "before")).await.0, 202);
    idp.set_down(true);
    let at_outage = idp.hits();
    eventually(Duration::from_secs(15), "two failed fetches", || async {
        (idp.hits() >= at_outage + 2).then_some(())
    })
    .await;
    // A token never seen (not in the verified cache) still verifies.
    assert_eq!(call(&app, &a.token(iss, "during")).await.0, 202);
    assert!(
        metric(
            &app,
            "callgate_jwks_fetch_total{issuer=\"down\",outcome=\"error\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(&app, "callgate_jwks_keys{issuer=\"down\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_provider_down_at_start_gives_401_until_its_keys_arrive() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    idp.set_down(true);
    let app = TestApp::builder()
        .main(&local("late", &idp, "[\"ES256\"]", ""))
        .start()
        .await;
    let token = a.token("https://late.test/", "user");
    assert_eq!(call(&app, &token).await, (401, NOT_FETCHED.to_owned()));
    idp.set_down(false);
    accepted_within(&app, &token, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn keys_of_other_types_uses_or_algorithms_are_ignored() {
    let rsa = Key::rs256("rsa");
    let ec = Key::es256("ec");
    let secret = "a-shared-secret-that-is-32-bytes-or-more!";
    let oct = json!({"kty": "oct", "kid": "hmac", "k": base64_url(secret.as_bytes())});
    let mut enc = rsa.jwk.clone();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    let idp = Idp::start(vec![rsa.jwk.clone(), ec.jwk.clone(), oct, enc]).await;
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&local("types", &idp, "[\"RS256\"]", ""))
        .start()
        .await;
    let iss = "https://types.test/";
    assert_eq!(call(&app, &rsa.token(iss, "ok")).await.0, 202);
    // Only the RSA signature key was taken.
    assert_eq!(
        metric(&app, "callgate_jwks_keys{issuer=\"types\"}").await,
        1.0
    );
    // An EC key does not widen an RS256-only issuer.
    let (status, detail) = call(&app, &ec.token(iss, "ec")).await;
    assert_eq!(status, 401);
    assert!(detail.contains("ES256 is not accepted"), "{detail}");
    // The ignored keys' kids name nothing (had they been taken, the
    // refusal would name their algorithms).
    for kid in ["ec", "hmac", "enc"] {
        assert_eq!(
            call(&app, &rsa.token_as(iss, "x", kid)).await,
            (401, UNKNOWN_KID.to_owned()),
            "{kid}"
        );
    }
    // The `oct` key's secret signs nothing acceptable.
    let hs = sign(
        Algorithm::HS256,
        Some("hmac"),
        &EncodingKey::from_secret(secret.as_bytes()),
        &token_claims(iss, "hs"),
    );
    let (status, detail) = call(&app, &hs).await;
    assert_eq!(status, 401);
    assert!(detail.contains("HS256 is not accepted"), "{detail}");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn cache_control_decides_when_the_key_set_is_fetched_again() {
    let a = Key::es256("a");
    let short = Idp::start(vec![a.jwk.clone()]).await;
    short.set_cache_control("public, max-age=1");
    let long = Idp::start(vec![a.jwk.clone()]).await;
    long.set_cache_control("public, max-age=86400");
    let _app = TestApp::builder()
        .main(&local(
            "short",
            &short,
            "[\"ES256\"]",
            "jwks_cache_min = \"1s\"",
        ))
        .main(&local(
            "long",
            &long,
            "[\"ES256\"]",
            "jwks_cache_min = \"1s\"",
        ))
        .start()
        .await;
    eventually(Duration::from_secs(15), "max-age=1 refetches", || async {
        (short.hits() >= 3).then_some(())
    })
    .await;
    assert_eq!(long.hits(), 1, "max-age=86400 is not due yet");
}

#[tokio::test]
async fn discovery_finds_the_key_set_and_checks_what_it_says() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    let iss = idp.base();
    *idp.state.discovery.lock().unwrap() = Some(json!({"issuer": iss, "jwks_uri": idp.jwks_url()}));
    // A document that names another issuer is not taken.
    let liar = Idp::start(vec![a.jwk.clone()]).await;
    *liar.state.discovery.lock().unwrap() =
        Some(json!({"issuer": "https://someone-else.test/", "jwks_uri": liar.jwks_url()}));
    // `allow_private` covers the discovery host, not a `jwks_uri` elsewhere.
    let elsewhere = Idp::start(vec![a.jwk.clone()]).await;
    *elsewhere.state.discovery.lock().unwrap() = Some(json!({
        "issuer": elsewhere.base(),
        "jwks_uri": format!("http://localhost:{}/jwks", elsewhere.addr.port()),
    }));
    let relaxed = "discovery = true\nallow_http = true\nallow_private = true";
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&issuer("disc", &iss, "[\"ES256\"]", relaxed, ""))
        .main(&issuer("liar", &liar.base(), "[\"ES256\"]", relaxed, ""))
        .main(&issuer(
            "far",
            &elsewhere.base(),
            "[\"ES256\"]",
            relaxed,
            "",
        ))
        .start()
        .await;
    assert_eq!(call(&app, &a.token(&iss, "user")).await.0, 202);
    assert_eq!(idp.state.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(idp.hits(), 1);

    assert_eq!(
        call(&app, &a.token(&liar.base(), "user")).await,
        (401, NOT_FETCHED.to_owned())
    );
    assert_eq!(liar.hits(), 0, "its jwks_uri was never fetched");

    assert_eq!(
        call(&app, &a.token(&elsewhere.base(), "user")).await,
        (401, NOT_FETCHED.to_owned())
    );
    assert_eq!(elsewhere.hits(), 0);
    assert!(
        metric(
            &app,
            "callgate_jwks_fetch_total{issuer=\"far\",outcome=\"refused\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_hosts_and_redirects_without_allow_private() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    let hop = Idp::start(vec![a.jwk.clone()]).await;
    // 127.0.0.1 is allowed for `hop`; its redirect to another private
    // host is not.
    *hop.state.redirect.lock().unwrap() =
        Some(format!("http://localhost:{}/jwks", idp.addr.port()));
    let by_name = format!("http://localhost:{}/jwks", idp.addr.port());
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&issuer(
            "named",
            "https://named.test/",
            "[\"ES256\"]",
            &format!("jwks_url = \"{by_name}\"\nallow_http = true"),
            "",
        ))
        .main(&local("hop", &hop, "[\"ES256\"]", ""))
        .start()
        .await;
    for (id, iss) in [
        ("named", "https://named.test/"),
        ("hop", "https://hop.test/"),
    ] {
        assert_eq!(
            call(&app, &a.token(iss, "user")).await,
            (401, NOT_FETCHED.to_owned()),
            "{id}"
        );
        let refused = format!("callgate_jwks_fetch_total{{issuer=\"{id}\",outcome=\"refused\"}}");
        assert!(metric(&app, &refused).await >= 1.0, "{id}");
    }
    assert_eq!(idp.hits(), 0, "the private JWKS was never reached");
    assert!(hop.hits() >= 1);
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

#[tokio::test]
async fn ca_file_trusts_a_private_ca_for_an_https_key_set_and_redirects_stay_on_https() {
    crate::support::crypto();
    let (ca_pem, tls) = ca_signed_tls();
    let a = Key::es256("a");
    let idp = Idp::serve(vec![a.jwk.clone()], Some(tls.clone())).await;
    // An https key set that redirects to plain http on its own host:
    // refused without `allow_http`.
    let plain = Idp::start(vec![a.jwk.clone()]).await;
    let downgrade = Idp::serve(vec![a.jwk.clone()], Some(tls)).await;
    *downgrade.state.redirect.lock().unwrap() = Some(plain.jwks_url());
    let url = format!("jwks_url = \"{}\"\nallow_private = true", idp.jwks_url());
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .file("idp-ca.pem", &ca_pem)
        .main(&issuer(
            "withca",
            "https://withca.test/",
            "[\"ES256\"]",
            &url,
            "ca_file = \"idp-ca.pem\"",
        ))
        .main(&issuer(
            "noca",
            "https://noca.test/",
            "[\"ES256\"]",
            &url,
            "",
        ))
        .main(&issuer(
            "downgrade",
            "https://downgrade.test/",
            "[\"ES256\"]",
            &format!(
                "jwks_url = \"{}\"\nallow_private = true",
                downgrade.jwks_url()
            ),
            "ca_file = \"idp-ca.pem\"",
        ))
        .start()
        .await;
    assert_eq!(
        call(&app, &a.token("https://withca.test/", "u")).await.0,
        202
    );
    assert_eq!(
        call(&app, &a.token("https://noca.test/", "u")).await,
        (401, NOT_FETCHED.to_owned()),
        "without ca_file the certificate is not trusted"
    );
    assert!(
        metric(
            &app,
            "callgate_jwks_fetch_total{issuer=\"noca\",outcome=\"error\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        call(&app, &a.token("https://downgrade.test/", "u")).await,
        (401, NOT_FETCHED.to_owned())
    );
    assert!(downgrade.hits() >= 1);
    assert_eq!(plain.hits(), 0, "the plain-http hop was never taken");
    let refused = "callgate_jwks_fetch_total{issuer=\"downgrade\",outcome=\"refused\"}";
    assert!(metric(&app, refused).await >= 1.0);
}

/// A `callgate.toml` with one issuer and otherwise the shipped settings.
fn main_with(issuer_toml: &str) -> String {
    let shipped =
        std::fs::read_to_string(format!("{}/callgate.toml", crate::support::REPO_CONFIG)).unwrap();
    format!("{shipped}\n{issuer_toml}")
}

#[test]
fn config_problems_name_the_issuer_key() {
    let at = "auth.jwt.issuers.x";
    let cases: Vec<(String, String, &str)> = vec![
        (
            issuer("x", "https://x.test/", "[\"RS256\"]", "", ""),
            format!("{at}.keys"),
            "set one of `keys`, `jwks_url` or `discovery = true`",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"\ndiscovery = true",
                "",
            ),
            at.to_owned(),
            "set only one of",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"http://x.test/jwks\"",
                "",
            ),
            format!("{at}.jwks_url"),
            "plain http is not allowed",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://10.0.0.1/jwks\"",
                "",
            ),
            format!("{at}.jwks_url"),
            "refusing to connect to 10.0.0.1 (private)",
        ),
        (
            issuer(
                "x",
                "https://169.254.169.254/",
                "[\"RS256\"]",
                "discovery = true",
                "",
            ),
            format!("{at}.discovery"),
            "cloud metadata",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"HS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "",
            ),
            format!("{at}.algorithms"),
            "HS256 cannot take its key from a JWKS",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "ca_file = \"missing-ca.pem\"",
            ),
            format!("{at}.ca_file"),
            "cannot read",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "ca_file = \"callgate.toml\"",
            ),
            format!("{at}.ca_file"),
            "no `-----BEGIN CERTIFICATE-----`",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "jwks_min_refresh = \"0s\"",
            ),
            format!("{at}.jwks_min_refresh"),
            "from 1s to 1h",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "jwks_cache_min = \"10m\"\njwks_cache_max = \"1m\"",
            ),
            format!("{at}.jwks_cache_max"),
            "must not be shorter",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"HS256\"]",
                "allow_private = true",
                "[[auth.jwt.issuers.x.keys]]\nsecret = \"${TEST_JWT_SECRET}\"",
            ),
            format!("{at}.allow_private"),
            "only applies with `jwks_url` or `discovery`",
        ),
    ];
    for (toml, key, what) in cases {
        let err = config_problems(&[("callgate.toml", &main_with(&toml))]);
        crate::support::assert_problem(&err, &key, what);
    }
}

#[test]
fn check_reports_a_jwks_issuer_problem_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(
        std::path::Path::new(crate::support::REPO_CONFIG),
        dir.path(),
    );
    std::fs::write(
        dir.path().join("callgate.toml"),
        main_with(&issuer(
            "idp",
            "https://idp.test/",
            "[\"RS256\"]",
            "jwks_url = \"https://127.0.0.1/jwks\"",
            "",
        )),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["check", "--config", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("callgate.toml: auth.jwt.issuers.idp.jwks_url: `https://127.0.0.1/jwks`: refusing to connect to 127.0.0.1 (loopback)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_new_kid_waits_for_one_refetch_unless_the_last_fetch_is_too_recent() {
    let a = Key::es256("a");
    let b = Key::es256("b");
    let quick = Idp::start(vec![a.jwk.clone()]).await;
    let slow = Idp::start(vec![a.jwk.clone()]).await;
    let app = TestApp::builder()
        .main(&local("quick", &quick, "[\"ES256\"]", ""))
        .main(&issuer(
            "slow",
            "https://slow.test/",
            "[\"ES256\"]",
            &format!("jwks_url = \"{}\"", slow.jwks_url()),
            "allow_http = true\nallow_private = true\njwks_min_refresh = \"1h\"",
        ))
        .start()
        .await;
    let started = Instant::now();
    quick.set_keys(vec![a.jwk.clone(), b.jwk.clone()]);
    slow.set_keys(vec![a.jwk.clone(), b.jwk.clone()]);

    // Within an hour of its start-up fetch, `slow` refuses at once.
    assert_eq!(
        call(&app, &b.token("https://slow.test/", "u")).await,
        (401, UNKNOWN_KID.to_owned())
    );
    assert_eq!(slow.hits(), 1);

    // Once `quick`'s second has passed since its start-up fetch (which
    // began before `start` returned), the first token naming the new kid
    // asks for a refetch, waits for it and is accepted.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    assert_eq!(
        call(&app, &b.token("https://quick.test/", "u")).await.0,
        202
    );
    assert_eq!(quick.hits(), 2);
}
