//! Mid-call actions against a real upstream: deadline and fallback, cache
//! and single-flight, the Vapi and Retell request shapes, and every way in
//! which a request is refused.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::deliveries::crm_endpoint;
use crate::receiver::{Receiver, Reply};
use crate::support::{TestApp, problem};

const CUSTOMER: &str = r#"{"customer": {"name": "Ada Lovelace", "tier": "gold", "ssn": "hidden"}}"#;

fn actions(extra: &str) -> String {
    format!(
        "[actions.customer_lookup]\nendpoint = \"crm\"\nagents = [\"demo-agent\"]\nmethod = \"GET\"\n\
         path = \"/customers/{{{{ args.phone_number }}}}\"\ndeadline = \"300ms\"\n\
         result = {{ name = \"/customer/name\", tier = \"/customer/tier\" }}\n\
         fallback = {{ name = \"\", tier = \"standard\" }}\n{extra}\n\
         [actions.strict_lookup]\nendpoint = \"crm\"\npath = \"/strict\"\ndeadline = \"300ms\"\n"
    )
}

async fn app_with(rx: &Receiver, action_extra: &str) -> TestApp {
    TestApp::builder()
        .file("endpoints.toml", &lookup_endpoint(rx))
        .file("actions.toml", &actions(action_extra))
        .key("voice", &["actions:invoke"])
        .key("zapier", &["triggers:run"])
        .start()
        .await
}

async fn call_action(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(app.key("voice"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The test CRM endpoint without its per-job header (actions have no job).
fn lookup_endpoint(rx: &Receiver) -> String {
    crm_endpoint(&rx.url(""), "").replace(", \"X-Job\" = \"{{ job.id }}\"", "")
}

/// A one-minute cache keyed by the number looked up.
const BY_NUMBER: &str = "cache = { key = \"{{ args.phone_number }}\", ttl = \"1m\" }";

const LOOKUP: &str = "/v1/agents/demo-agent/actions/customer_lookup";

/// The lookup of +15550121234 in callgate's own shape, answered as JSON.
async fn lookup(app: &TestApp) -> Value {
    call_action(app, LOOKUP, &own_shape("+15550121234"))
        .await
        .json()
        .await
        .unwrap()
}

fn own_shape(phone: &str) -> Value {
    json!({"call": {"id": "call_1", "from": phone}, "args": {"phone_number": phone}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_answer_is_mapped_to_a_compact_result() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok(CUSTOMER));
    let app = app_with(&rx, "").await;
    let r = call_action(&app, LOOKUP, &own_shape("+15550121234")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"action": "customer_lookup", "result": {"name": "Ada Lovelace", "tier": "gold"}, "degraded": false, "cached": false})
    );
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].path, "/customers/%2B15550121234");
    assert_eq!(
        got[0].headers["authorization"],
        format!("Bearer {}", crate::support::CRM_TOKEN)
    );
    // Actions are signed like deliveries, so the upstream can tell it is us.
    assert!(
        got[0].headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1,")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_or_failing_upstream_gets_the_fallback_within_the_deadline() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok(CUSTOMER).after(Duration::from_secs(3)));
    let app = app_with(&rx, "").await;
    // Warm the connection pool and TLS-free path so the timing is the action's.
    let started = Instant::now();
    let r = call_action(&app, LOOKUP, &own_shape("+15550121234")).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["degraded"], true);
    assert_eq!(v["result"], json!({"name": "", "tier": "standard"}));
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(300 + 150),
        "the fallback must come at the deadline, not after the upstream: {elapsed:?}"
    );

    // An upstream error degrades at once.
    rx.default_reply(Reply::status(500));
    let started = Instant::now();
    let v: Value = lookup(&app).await;
    assert_eq!(v["degraded"], true);
    assert!(started.elapsed() < Duration::from_millis(300));

    // Without a fallback: 504 problem+json, still at the deadline.
    rx.default_reply(Reply::ok("{}").after(Duration::from_secs(3)));
    let started = Instant::now();
    let r = call_action(
        &app,
        "/v1/agents/demo-agent/actions/strict_lookup",
        &json!({}),
    )
    .await;
    let p = problem(r, 504).await;
    assert!(started.elapsed() < Duration::from_millis(450));
    assert!(p["detail"].as_str().unwrap().contains("fallback"), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_hit_makes_no_upstream_call_and_concurrent_misses_make_one() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok(CUSTOMER).after(Duration::from_millis(100)));
    let app = app_with(&rx, BY_NUMBER).await;
    // Five lookups of one number at once: one upstream call.
    let body = own_shape("+15550121234");
    let calls = (0..5).map(|_| call_action(&app, LOOKUP, &body));
    let answers = futures_util::future::join_all(calls).await;
    let mut cached = 0;
    for r in answers {
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["result"]["name"], "Ada Lovelace");
        cached += usize::from(v["cached"] == true);
    }
    assert_eq!(rx.received().len(), 1, "single-flight");
    assert_eq!(cached, 4);
    // Later: a hit, no call. Another number: a call.
    let v: Value = lookup(&app).await;
    assert_eq!(v["cached"], true);
    assert_eq!(rx.received().len(), 1);
    call_action(&app, LOOKUP, &own_shape("+15550129999")).await;
    assert_eq!(rx.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vapi_and_retell_requests_are_answered_in_their_shapes() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok(CUSTOMER));
    let app = app_with(&rx, "").await;
    let vapi: Value =
        serde_json::from_slice(include_bytes!("../fixtures/samples/vapi-tool-calls.json")).unwrap();
    let r = call_action(&app, LOOKUP, &vapi).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["results"][0]["toolCallId"], "toolcall_abc123");
    let result: Value = serde_json::from_str(v["results"][0]["result"].as_str().unwrap()).unwrap();
    assert_eq!(result, json!({"name": "Ada Lovelace", "tier": "gold"}));
    assert_eq!(rx.received()[0].path, "/customers/%2B15550121234");

    let retell: Value = serde_json::from_slice(include_bytes!(
        "../fixtures/samples/retell-custom-function.json"
    ))
    .unwrap();
    let r = call_action(&app, LOOKUP, &retell).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"name": "Ada Lovelace", "tier": "gold"})
    );

    // Degraded, in the Retell shape: the fallback with the flag.
    rx.default_reply(Reply::status(503));
    let v: Value = call_action(&app, LOOKUP, &retell)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"name": "", "tier": "standard", "degraded": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn action_requests_that_cannot_be_served_get_clear_problems() {
    let rx = Receiver::start().await;
    let app = app_with(&rx, "").await;
    let body = own_shape("+15550121234");
    // No credentials: 401; a trigger key: 403.
    let r = app
        .client
        .post(app.url(LOOKUP))
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    let r = app
        .client
        .post(app.url(LOOKUP))
        .bearer_auth(app.key("zapier"))
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(r, 403).await;
    // Unknown agent, unknown action.
    problem(
        call_action(&app, "/v1/agents/nobody/actions/customer_lookup", &body).await,
        404,
    )
    .await;
    problem(
        call_action(&app, "/v1/agents/demo-agent/actions/nothing", &body).await,
        404,
    )
    .await;
    // Bodies: not an object, bad args, a Vapi message of another type, a form.
    for bad in [
        json!([1]),
        json!({"args": "x"}),
        json!({"message": {"type": "status-update"}}),
    ] {
        problem(call_action(&app, LOOKUP, &bad).await, 400).await;
    }
    let r = app
        .client
        .post(app.url(LOOKUP))
        .bearer_auth(app.key("voice"))
        .form(&[("a", "b")])
        .send()
        .await
        .unwrap();
    problem(r, 415).await;
    assert_eq!(
        rx.received().len(),
        0,
        "nothing refused reached the upstream"
    );
}

#[tokio::test]
async fn an_action_limited_to_other_agents_is_not_found_for_this_one() {
    let rx = Receiver::start().await;
    let agents = format!(
        "{}\n[agents.other]\nname = \"Other\"\nprovider = \"simulator\"\nfrom_number = \"+15550008888\"\n",
        include_str!("../../config/agents.toml")
    );
    let app = TestApp::builder()
        .file("agents.toml", &agents)
        .file("endpoints.toml", &lookup_endpoint(&rx))
        .file("actions.toml", &actions(""))
        .key("voice", &["actions:invoke"])
        .start()
        .await;
    let r = call_action(
        &app,
        "/v1/agents/other/actions/customer_lookup",
        &own_shape("+15550121234"),
    )
    .await;
    problem(r, 404).await;
}

#[test]
fn an_action_on_an_endpoint_whose_headers_need_a_job_is_a_config_problem() {
    let endpoints = crm_endpoint("http://127.0.0.1:9/", "");
    let err = crate::support::config_problems(&[
        ("endpoints.toml", &endpoints),
        (
            "actions.toml",
            "[actions.a]\nendpoint = \"crm\"\npath = \"/{{ args.x }}/{{ input.y }}\"\ndeadline = \"6s\"\n\
             result = { n = \"name\" }\n[actions.b]\nendpoint = \"nowhere\"\n",
        ),
    ]);
    for (key, what) in [
        ("actions.a.endpoint", "X-Job"),
        ("actions.a.path", "`input` is not defined"),
        ("actions.a.deadline", "5s"),
        ("actions.a.result.n", "JSON pointer"),
        ("actions.b.endpoint", "no endpoint `nowhere`"),
    ] {
        crate::support::assert_problem(&err, key, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arguments_cannot_walk_the_upstream_path() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok(CUSTOMER));
    let app = app_with(&rx, "").await;
    let body = json!({"args": {"phone_number": "../../admin?delete=1#"}});
    assert_eq!(call_action(&app, LOOKUP, &body).await.status(), 200);
    let got = rx.received();
    assert_eq!(
        got[0].path,
        "/customers/%2E%2E%2F%2E%2E%2Fadmin%3Fdelete%3D1%23"
    );
    assert_eq!(got[0].query, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_vapi_batch_a_tool_call_without_an_answer_gets_an_error_item() {
    let rx = Receiver::start().await;
    // The upstream fails: customer_lookup falls back, strict_lookup (no
    // fallback) has no answer.
    rx.default_reply(Reply::status(500));
    let app = app_with(&rx, "").await;
    let vapi = json!({"message": {"type": "tool-calls", "call": {"id": "c1"}, "toolCallList": [
        {"id": "t-ok", "name": "customer_lookup", "parameters": {"phone_number": "+15550121234"}},
        {"id": "t-bad", "name": "strict_lookup", "parameters": {}}
    ]}});
    let r = call_action(&app, LOOKUP, &vapi).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["results"][0]["toolCallId"], "t-ok");
    let first: Value = serde_json::from_str(v["results"][0]["result"].as_str().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"name": "", "tier": "standard", "degraded": true})
    );
    assert_eq!(v["results"][1]["toolCallId"], "t-bad");
    assert!(
        v["results"][1]["error"].as_str().unwrap().contains("500"),
        "{v}"
    );
    assert!(v["results"][1].get("result").is_none());
    assert_eq!(
        rx.received().iter().filter(|r| r.path == "/strict").count(),
        1
    );
    // When no tool call has an answer: 504.
    let only_bad = json!({"message": {"type": "tool-calls", "toolCallList": [
        {"id": "t-bad", "name": "strict_lookup", "parameters": {}}]}});
    problem(call_action(&app, LOOKUP, &only_bad).await, 504).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_caller_number_is_never_a_shared_cache_entry() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok(CUSTOMER));
    let app = app_with(&rx, "cache = { key = \"{{ call.from }}\", ttl = \"1m\" }").await;
    let anonymous = json!({"call": {"id": "c1"}, "args": {"phone_number": "+15550121234"}});
    for _ in 0..2 {
        let v: Value = call_action(&app, LOOKUP, &anonymous)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["cached"], false);
    }
    assert_eq!(rx.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_upstream_still_fills_the_cache_for_the_next_lookup() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok(CUSTOMER).after(Duration::from_millis(500)));
    let app = app_with(&rx, BY_NUMBER).await;
    let v: Value = lookup(&app).await;
    assert_eq!(v["degraded"], true, "past the 300 ms deadline: {v}");
    // The upstream's late answer is on its way into the cache.
    crate::runner::eventually(Duration::from_secs(10), "the upstream's answer", || async {
        rx.answered().first().copied().flatten()
    })
    .await;
    let started = Instant::now();
    let v: Value = lookup(&app).await;
    assert_eq!(v["cached"], true, "{v}");
    assert_eq!(v["result"]["name"], "Ada Lovelace");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_breaker_answers_the_fallback_at_once() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok(CUSTOMER).after(Duration::from_secs(3)));
    let endpoint = lookup_endpoint(&rx)
        + "breaker = { failures = 2, cooldown = \"1m\", max_cooldown = \"1m\" }\n";
    let app = TestApp::builder()
        .file("endpoints.toml", &endpoint)
        .file("actions.toml", &actions(""))
        .key("voice", &["actions:invoke"])
        .start()
        .await;
    for _ in 0..2 {
        let v: Value = lookup(&app).await;
        assert_eq!(v["degraded"], true);
    }
    let started = Instant::now();
    let v: Value = lookup(&app).await;
    assert_eq!(v["degraded"], true);
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "the breaker is open: no wait for the deadline ({:?})",
        started.elapsed()
    );
    assert_eq!(
        rx.received().len(),
        2,
        "no request while the breaker is open"
    );
}
