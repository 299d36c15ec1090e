//! API-key authentication and scopes: every check has a test that tries to
//! get past it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::runner::{ANYTIME_AGENT, fast_simulator};
use crate::support::{TestApp, demo_body, forbidden, problem};

#[tokio::test]
async fn missing_credentials_get_401_with_www_authenticate_and_no_trigger_enumeration() {
    let app = TestApp::start().await;
    for path in ["/v1/triggers/demo-call", "/v1/triggers/does-not-exist"] {
        let r = app
            .client
            .post(app.url(path))
            .json(&demo_body())
            .send()
            .await
            .unwrap();
        let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert_eq!(www, "Bearer realm=\"callgate\"");
        let body = problem(r, 401).await;
        assert_eq!(body["type"], "urn:callgate:problem:unauthorized");
    }
    // Only after authentication does an unknown trigger become 404.
    let r = app
        .trigger(app.key("zapier"), "does-not-exist", &demo_body())
        .await;
    problem(r, 404).await;
    assert_eq!(app.jobs_on_disk().await, 0);
}

#[tokio::test]
async fn unknown_malformed_or_foreign_scheme_credentials_get_401_invalid_token() {
    let app = TestApp::start().await;
    let real = app.key("zapier").to_owned();
    let last = if real.ends_with('A') { 'B' } else { 'A' };
    let near_miss = format!("{}{last}", &real[..real.len() - 1]);
    let not_jwt = "the bearer token is neither an API key (`cg_…`) nor a well-formed JWT: ";
    for (token, detail) in [
        (near_miss.as_str(), "unknown or disabled API key".to_owned()),
        ("cg_", "unknown or disabled API key".to_owned()),
        (
            "not-a-token",
            format!("{not_jwt}it must be three base64url parts separated by dots"),
        ),
        (
            "a.b.c",
            format!("{not_jwt}its header is not a base64url-encoded JSON object"),
        ),
    ] {
        let r = app.trigger(token, "demo-call", &demo_body()).await;
        let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(www.contains("error=\"invalid_token\""), "{token}: {www}");
        let body = problem(r, 401).await;
        assert_eq!(body["detail"], detail.as_str(), "{token}");
        assert!(
            !body.to_string().contains(token) || token.len() < 6,
            "the token must not be echoed"
        );
    }
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .basic_auth("user", Some(&real))
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    let body = problem(r, 401).await;
    assert_eq!(
        body["detail"],
        "use `Authorization: Bearer <token>` (or `X-Api-Key: <key>`)"
    );
    for (value, detail) in [
        ("Bearer ", "the bearer token is empty"),
        (
            "Bearer caf\u{e9}",
            "the Authorization header is not valid text",
        ),
    ] {
        let r = app
            .client
            .post(app.url("/v1/triggers/demo-call"))
            .header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(
                    &value.chars().map(|c| c as u8).collect::<Vec<u8>>(),
                )
                .unwrap(),
            )
            .json(&demo_body())
            .send()
            .await
            .unwrap();
        let body = problem(r, 401).await;
        assert_eq!(body["detail"], detail, "{value:?}");
    }
    assert_eq!(app.jobs_on_disk().await, 0);
}

#[tokio::test]
async fn x_api_key_header_is_accepted_for_senders_without_bearer_support() {
    let app = TestApp::start().await;
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .header("x-api-key", app.key("zapier"))
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .header("x-api-key", "cg_wrong")
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    // X-Api-Key carries API keys only, not bearer tokens.
    let jwt = crate::support::hs256(&crate::support::claims("triggers:run"));
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .header("x-api-key", jwt)
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
}

#[tokio::test]
async fn valid_credentials_without_the_scope_get_403() {
    let app = TestApp::builder()
        .triggers("[triggers.other]\nschema = \"schemas/demo-call.json\"\naction = { type = \"start_call\", agent = \"demo-agent\" }\n")
        .key("other-only", &["trigger:other"])
        .key("reader", &["jobs:read"])
        .start()
        .await;
    for key in ["other-only", "reader"] {
        let r = app.trigger(app.key(key), "demo-call", &demo_body()).await;
        let body = problem(r, 403).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("trigger:demo-call")
        );
    }
    // A trigger-scoped key learns nothing about triggers outside its scope.
    let r = app
        .trigger(app.key("other-only"), "no-such-trigger", &demo_body())
        .await;
    problem(r, 403).await;
    assert_eq!(
        app.trigger(app.key("other-only"), "other", &demo_body())
            .await
            .status(),
        202
    );
    assert_eq!(app.jobs_on_disk().await, 1);
}

#[tokio::test]
async fn a_key_minted_while_serving_is_accepted_once_the_file_changes() {
    let app = TestApp::start().await;
    let path = app.config_dir.path().join("keys.toml");
    let key =
        callgate::auth::api_key::add_to_file(&path, "late", &["triggers:run".into()], None, "now")
            .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.trigger(&key, "demo-call", &demo_body()).await.status();
        if status == 202 {
            break;
        }
        assert_eq!(status, 401);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Disabling it in the file revokes it the same way.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("name = \"late\"", "name = \"late\"\ndisabled = true"),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.trigger(&key, "demo-call", &demo_body()).await.status() != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the disabled key still works"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.trigger(app.key("zapier"), "demo-call", &demo_body())
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn every_403_names_the_scopes_that_would_allow_it_in_www_authenticate() {
    let app = TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .triggers("[triggers.other]\nschema = \"schemas/demo-call.json\"\naction = { type = \"start_call\", agent = \"demo-agent\" }\n")
        .key("owner", &["triggers:run"])
        .key("other-only", &["trigger:other"])
        .start()
        .await;
    let r = app
        .trigger(app.key("owner"), "demo-call", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    let job_id =
        callgate::ids::JobId::parse(r.json::<Value>().await.unwrap()["job_id"].as_str().unwrap())
            .unwrap();
    app.run_pending().await;
    let calls = app.state.store.calls_for_job(&job_id).await.unwrap();
    let call_id = &calls[0].id;
    let key = app.key("other-only");

    // Triggers: run and describe; an id that cannot be a trigger's has no
    // `trigger:<id>` scope to name.
    forbidden(
        app.trigger(key, "demo-call", &demo_body()).await,
        "triggers:run trigger:demo-call",
    )
    .await;
    forbidden(
        app.get(key, "/v1/triggers/demo-call").await,
        "triggers:run trigger:demo-call",
    )
    .await;
    forbidden(
        app.trigger(key, "not%20an%20id", &demo_body()).await,
        "triggers:run",
    )
    .await;
    // Another principal's job and call.
    forbidden(
        app.get(key, &format!("/v1/jobs/{job_id}")).await,
        "jobs:read",
    )
    .await;
    forbidden(
        app.get(key, &format!("/v1/calls/{call_id}")).await,
        "jobs:read",
    )
    .await;
    // Mid-call actions, the delivery log, replays, metrics.
    let r = app
        .client
        .post(app.url("/v1/agents/demo-agent/actions/customer_lookup"))
        .bearer_auth(key)
        .json(&json!({"call": {"id": "c1"}, "args": {}}))
        .send()
        .await
        .unwrap();
    forbidden(r, "actions:invoke").await;
    forbidden(app.get(key, "/v1/deliveries").await, "deliveries:read").await;
    forbidden(
        app.get(key, "/v1/deliveries/dlv_01M8D45RWS5DP9XYG8YHW9H4TR")
            .await,
        "deliveries:read",
    )
    .await;
    let r = app
        .client
        .post(app.url("/v1/deliveries/dlv_01M8D45RWS5DP9XYG8YHW9H4TR/retry"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    forbidden(r, "deliveries:write").await;
    forbidden(app.get(key, "/metrics").await, "metrics:read").await;
    // A 401 is not a 403: its challenge carries no scope.
    let r = app.trigger("cg_not-a-key", "demo-call", &demo_body()).await;
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(!www.contains("insufficient_scope"), "{www}");
    problem(r, 401).await;
}

/// A raw request's head: a POST with a JSON body of `len` bytes and no
/// credentials.
fn unauthenticated_post_head(len: usize) -> String {
    format!(
        "POST /v1/triggers/demo-call HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_refused_request_whose_body_comes_after_its_head_leaves_the_connection_usable() {
    use tokio::io::AsyncWriteExt;
    // Python's http.client (and others) write the head and the body
    // separately. The 401 used to be answered before the body arrived, and
    // hyper then closed the connection without saying so: the client's
    // next request on it failed. The wait between the writes only makes
    // that order likely; every outcome must hold for any wait.
    let app = TestApp::start().await;
    let body = serde_json::to_vec(&demo_body()).unwrap();
    for pause_ms in [0, 20, 100] {
        let mut io = crate::support::raw_tls(app.addr, app.cert_pem.as_bytes()).await;
        for round in 0..2 {
            io.write_all(unauthenticated_post_head(body.len()).as_bytes())
                .await
                .unwrap();
            io.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            io.write_all(&body).await.unwrap();
            io.flush().await.unwrap();
            let r = crate::support::read_response(&mut io)
                .await
                .unwrap_or_else(|e| panic!("pause {pause_ms} ms, request {round}: {e}"));
            assert_eq!(r.status, 401, "pause {pause_ms} ms, request {round}");
            assert_eq!(
                r.header("connection"),
                None,
                "pause {pause_ms} ms: the connection stays open"
            );
        }
    }
}

#[tokio::test]
async fn a_refused_request_whose_body_never_comes_is_answered_with_connection_close() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::start().await;
    let mut io = crate::support::raw_tls(app.addr, app.cert_pem.as_bytes()).await;
    // The head promises 100 bytes; 10 come.
    io.write_all(unauthenticated_post_head(100).as_bytes())
        .await
        .unwrap();
    io.write_all(b"{\"a\": 1,  ").await.unwrap();
    io.flush().await.unwrap();
    let r = crate::support::read_response(&mut io).await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the client must not reuse a connection the server is closing"
    );
}
