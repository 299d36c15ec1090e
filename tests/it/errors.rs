//! Transport and error plumbing: request ids, fallbacks, panics, TLS.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use callgate::clock::SystemClock;
use callgate::http::serve::{ServeOptions, serve};
use rustls::pki_types::pem::PemObject;
use tokio_util::sync::CancellationToken;

use crate::support::{self, TestApp, demo_body, problem};

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_sane_client_id_is_kept() {
    let app = TestApp::start().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .header("x-request-id", "zap-run-42")
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "zap-run-42");
    problem(r, 401).await;
    // Not a token we would put in a log line: replaced.
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a b\"c")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_get_405_as_problems() {
    let app = TestApp::start().await;
    let body = problem(app.client.get(app.url("/nope")).send().await.unwrap(), 404).await;
    assert!(body["detail"].as_str().unwrap().contains("/nope"));
    let r = app
        .client
        .delete(app.url("/v1/triggers/demo-call"))
        .bearer_auth(app.key("zapier"))
        .send()
        .await
        .unwrap();
    problem(r, 405).await;
    let r = app.client.post(app.url("/healthz")).send().await.unwrap();
    problem(r, 405).await;
}

#[tokio::test]
async fn health_and_readiness_answer_without_credentials() {
    let app = TestApp::start().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "storage": "sqlite", "storage_reachable": true, "leader": true, "limits": {"backend": "memory"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_readiness_names_the_engine_and_turns_503_when_the_database_is_gone() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_readiness_names_the_engine_and_turns_503_when_the_database_is_gone"
    );
    let app = TestApp::builder()
        .postgres(&url)
        .key("zapier", &["triggers:run"])
        .storage("busy_timeout = \"1s\"\nconnect_timeout = \"1s\"")
        .start()
        .await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "storage": "postgres", "storage_reachable": true, "leader": true, "limits": {"backend": "memory"}})
    );
    // The schema goes away under the running server: the heartbeat cannot
    // be written, and readiness says why, with Retry-After.
    let schema = app.pg.as_ref().unwrap();
    schema.execute(&format!("DROP SCHEMA {} CASCADE", schema.name), &[]);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["type"], "urn:callgate:problem:storage-unavailable",
        "{body}"
    );
    let r = app
        .trigger(app.key("zapier"), "demo-call", &support::demo_body())
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
}

async fn boom() -> &'static str {
    panic!("secret internals")
}

#[tokio::test]
async fn a_panicking_handler_answers_500_problem_and_the_server_keeps_serving() {
    support::crypto();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::test_cert();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    for f in ["agents.toml", "providers.toml"] {
        std::fs::copy(format!("{}/{f}", support::REPO_CONFIG), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("callgate.toml"),
        "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n",
    )
    .unwrap();
    let config =
        callgate::app::compile::load(dir.path(), &dir.path().join("data"), &Default::default())
            .unwrap();
    let tls = callgate::app::tls::server_config(&config).unwrap();
    let state = callgate::app::build_state(
        Arc::new(config),
        Arc::new(SystemClock),
        "https://127.0.0.1:1".into(),
        None,
    )
    .await
    .unwrap();
    let routes: Router = Router::new()
        .route("/boom", get(boom))
        .route("/fine", get(|| async { "fine" }));
    let app = callgate::http::middleware::stack(routes, &state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let options = ServeOptions {
        max_connections: 16,
        handshake_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
    };
    let server = tokio::spawn(serve(listener, tls, app, options, token.clone()));
    let client = support::client(cert.as_bytes());
    for _ in 0..2 {
        let r = client
            .get(format!("https://127.0.0.1:{}/boom", addr.port()))
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("x-request-id"));
        let body = problem(r, 500).await;
        assert!(
            !body.to_string().contains("secret internals"),
            "5xx bodies hide internals"
        );
    }
    let r = client
        .get(format!("https://127.0.0.1:{}/fine", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "fine");
    token.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn plain_http_to_the_https_port_is_refused_and_http1_works_too() {
    let app = TestApp::start().await;
    let plain = reqwest::Client::new();
    let r = plain
        .get(format!("http://127.0.0.1:{}/healthz", app.addr.port()))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(app.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let h1 = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
}
