//! Rate limits over the wire: 429 problems with Retry-After and RateLimit
//! headers, and attempts to escape them.

use serde_json::Value;

use crate::support::{TestApp, demo_body, problem};

fn header_items(r: &reqwest::Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn assert_rate_limited(r: reqwest::Response, policy: &str) -> Value {
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "Retry-After is whole seconds, at least 1");
    let state = header_items(&r, "ratelimit");
    assert!(
        state.contains(&format!("\"{policy}\";r=0;t={retry_after}")),
        "{state:?}"
    );
    assert!(
        header_items(&r, "ratelimit-policy")
            .iter()
            .any(|p| p.starts_with(&format!("\"{policy}\";q=")))
    );
    let body = problem(r, 429).await;
    assert_eq!(body["type"], "urn:callgate:problem:rate-limited");
    assert!(body["detail"].as_str().unwrap().contains(policy), "{body}");
    body
}

const SLOW: &str = "{ requests = 1, per = \"1m\", burst = 3 }";
const FAST: &str = "{ requests = 100000, per = \"1s\", burst = 100000 }";

#[tokio::test]
async fn the_per_ip_limit_answers_429_before_credentials_are_checked() {
    let app = TestApp::builder()
        .limits(&format!(
            "per_ip = {SLOW}\nper_principal = {FAST}\nper_trigger = {FAST}"
        ))
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    assert!(
        header_items(&r, "ratelimit").contains(&"\"ip\";r=2;t=60".to_owned()),
        "{:?}",
        header_items(&r, "ratelimit")
    );
    // Bad credentials spend the same per-IP quota: guessing keys is limited.
    for _ in 0..2 {
        assert_eq!(
            app.trigger("cg_guess", "demo-call", &demo_body())
                .await
                .status(),
            401
        );
    }
    let r = app.trigger("cg_guess", "demo-call", &demo_body()).await;
    assert_rate_limited(r, "ip").await;
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    assert_rate_limited(r, "ip").await;
    assert_eq!(app.jobs_on_disk().await, 1);
}

#[tokio::test]
async fn a_spoofed_forwarded_header_does_not_escape_the_ip_limit() {
    let app = TestApp::builder()
        .limits(&format!(
            "per_ip = {SLOW}\nper_principal = {FAST}\nper_trigger = {FAST}"
        ))
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = app
            .client
            .post(app.url("/v1/triggers/demo-call"))
            .bearer_auth(app.key("zapier"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("forwarded", format!("for=198.51.100.{i}"))
            .json(&demo_body())
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let app = TestApp::builder()
        .limits(&format!(
            "per_ip = {SLOW}\nper_principal = {FAST}\nper_trigger = {FAST}"
        ))
        .key("zapier", &["triggers:run"])
        .start_with_trusted_proxy()
        .await;
    let send = |xff: String| {
        app.client
            .post(app.url("/v1/triggers/demo-call"))
            .bearer_auth(app.key("zapier"))
            .header("x-forwarded-for", xff)
            .json(&demo_body())
            .send()
    };
    for _ in 0..3 {
        assert_eq!(send("203.0.113.1".into()).await.unwrap().status(), 202);
    }
    assert_eq!(send("203.0.113.1".into()).await.unwrap().status(), 429);
    // Another client behind the proxy is unaffected...
    assert_eq!(send("203.0.113.2".into()).await.unwrap().status(), 202);
    // ...and the limited client cannot escape by prepending a fake hop: the
    // proxy appends the real address last, and the chain is read from the right.
    assert_eq!(
        send("198.51.100.77, 203.0.113.1".into())
            .await
            .unwrap()
            .status(),
        429
    );
}

#[tokio::test]
async fn the_per_principal_limit_uses_the_key_override_and_spares_other_keys() {
    let app = TestApp::builder()
        .limits(&format!(
            "per_ip = {FAST}\nper_principal = {FAST}\nper_trigger = {FAST}"
        ))
        .key_with_limit(
            "tight",
            &["triggers:run"],
            "{ requests = 1, per = \"1h\", burst = 2 }",
        )
        .key("roomy", &["triggers:run"])
        .start()
        .await;
    for _ in 0..2 {
        assert_eq!(
            app.trigger(app.key("tight"), "demo-call", &demo_body())
                .await
                .status(),
            202
        );
    }
    let r = app
        .trigger(app.key("tight"), "demo-call", &demo_body())
        .await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    assert_rate_limited(r, "principal").await;
    assert_eq!(
        app.trigger(app.key("roomy"), "demo-call", &demo_body())
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn the_per_trigger_limit_applies_across_callers_and_only_to_its_trigger() {
    let app = TestApp::builder()
        .limits(&format!("per_ip = {FAST}\nper_principal = {FAST}\nper_trigger = {FAST}"))
        .triggers(&format!(
            "[triggers.scarce]\nschema = \"schemas/demo-call.json\"\naction = {{ type = \"start_call\", agent = \"demo-agent\" }}\nrate_limit = {SLOW}\n"
        ))
        .key("a", &["triggers:run"])
        .key("b", &["triggers:run"])
        .start()
        .await;
    for key in ["a", "b"] {
        assert_eq!(
            app.trigger(app.key(key), "scarce", &demo_body())
                .await
                .status(),
            202
        );
    }
    // Invalid input spends trigger quota too, and the answer says so.
    let r = app
        .trigger(
            app.key("a"),
            "scarce",
            &serde_json::json!({"phone_number": 1}),
        )
        .await;
    assert!(
        header_items(&r, "ratelimit").contains(&"\"trigger\";r=0;t=180".to_owned()),
        "{:?}",
        header_items(&r, "ratelimit")
    );
    problem(r, 422).await;
    let r = app.trigger(app.key("b"), "scarce", &demo_body()).await;
    assert_rate_limited(r, "trigger").await;
    assert_eq!(
        app.trigger(app.key("b"), "demo-call", &demo_body())
            .await
            .status(),
        202
    );
}
