//! Outbound webhook deliveries against a real local receiver: signing with
//! one `webhook-id` across retries, what is retried and what is not,
//! `Retry-After`, dead deliveries and their replay, the delivery log API,
//! the SSRF guard, and a retry that survives SIGKILL.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::runner::{ANYTIME_AGENT, eventually, fast_simulator, get_json};
use crate::support::{CRM_TOKEN, TestApp, demo_body, problem};

pub const WH_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const REPO_AUTOMATIONS: &str = include_str!("../../config/automations.toml");

/// An endpoint `crm` at the receiver (allow-listed: it is on loopback,
/// plain http), signed, with bearer auth and short retry waits.
pub fn crm_endpoint(url: &str, extra: &str) -> String {
    format!(
        "[endpoints.crm]\nurl = \"{url}\"\nallow_private = true\nallow_http = true\n\
         signing_secret = \"{WH_SECRET}\"\nauth = {{ type = \"bearer\", token = \"${{CRM_TOKEN}}\" }}\n\
         headers = {{ \"X-Source\" = \"callgate\", \"X-Job\" = \"{{{{ job.id }}}}\" }}\n\
         retry = {{ schedule = [\"20ms\", \"20ms\", \"20ms\"] }}\n{extra}\n"
    )
}

/// A trigger `notify` whose automation is one webhook step to `crm`.
pub const NOTIFY_TRIGGER: &str = "[triggers.notify]\nschema = \"schemas/demo-call.json\"\n\
    action = { type = \"automation\", name = \"notify\", to = \"/phone_number\" }\n";
pub const NOTIFY_AUTOMATION: &str = "[automations.notify]\n[[automations.notify.steps]]\ntype = \"webhook\"\n\
    endpoint = \"crm\"\nevent = \"lead.created\"\n\
    payload = { phone = \"{{ input.phone_number }}\", job_id = \"{{ job.id }}\", score = 3, tags = [\"a\", \"b\"] }\n";

async fn notify_app(endpoints: &str) -> TestApp {
    TestApp::builder()
        .file("endpoints.toml", endpoints)
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", &["deliveries:read", "deliveries:write"])
        .key("reader", &["deliveries:read"])
        .background_runner()
        .start()
        .await
}

pub async fn notify(app: &TestApp) -> String {
    let r = app.trigger(app.key("zapier"), "notify", &demo_body()).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The one delivery of `job_id`, once it reaches `status`.
pub async fn delivery_when(app: &TestApp, job_id: &str, status: &str) -> Value {
    let key = app.key("ops").to_owned();
    let list = eventually(
        Duration::from_secs(20),
        &format!("a {status} delivery"),
        || {
            let key = key.clone();
            async move {
                let v = get_json(app, &key, &format!("/v1/deliveries?job_id={job_id}")).await;
                let d = v["deliveries"].as_array()?.first()?.clone();
                (d["status"] == status).then_some(d)
            }
        },
    )
    .await;
    get_json(
        app,
        &key,
        &format!("/v1/deliveries/{}", list["id"].as_str().unwrap()),
    )
    .await
}

/// `POST /v1/deliveries/{id}/retry` with the key named `key`.
async fn replay(app: &TestApp, key: &str, id: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/deliveries/{id}/retry")))
        .bearer_auth(app.key(key))
        .send()
        .await
        .unwrap()
}

fn verify(r: &crate::receiver::Received) {
    let wh = standardwebhooks::Webhook::new(WH_SECRET).unwrap();
    wh.verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("the receiver could not verify the signature: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_receiver_gets_retries_with_one_webhook_id_until_it_succeeds() {
    let rx = Receiver::start().await;
    rx.script([
        Reply::status(503),
        Reply::status(500).header("content-type", "text/plain"),
    ]);
    let app = notify_app(&crm_endpoint(&rx.url("/hooks"), "")).await;
    let job_id = notify(&app).await;

    let got = rx.wait_for(3, Duration::from_secs(20)).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert!(
        ids[0].len() == 30 && ids[0].starts_with("msg_") && !ids[0].starts_with("msg__"),
        "msg_<ULID>: {}",
        ids[0]
    );
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id across retries: {ids:?}"
    );
    for r in &got {
        verify(r);
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hooks");
        assert_eq!(r.headers["authorization"], format!("Bearer {CRM_TOKEN}"));
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["x-source"], "callgate");
        assert_eq!(r.headers["x-job"], job_id.as_str());
    }
    // Values that are one expression keep their JSON type.
    assert_eq!(
        got[2].json(),
        json!({"phone": "+15550121234", "job_id": job_id, "score": 3, "tags": ["a", "b"]})
    );

    let d = delivery_when(&app, &job_id, "succeeded").await;
    assert_eq!(d["attempt_count"], 3);
    let id = d["id"].as_str().unwrap();
    assert!(
        id.len() == 30 && id.starts_with("dlv_") && !id.starts_with("dlv__"),
        "dlv_<ULID>: {id}"
    );
    assert_eq!(d["webhook_id"], ids[0]);
    assert_eq!(d["event"], "lead.created");
    assert_eq!(d["endpoint"], "crm");
    let list = d["attempts"].as_array().expect("attempts");
    let codes: Vec<i64> = list
        .iter()
        .map(|a| a["response"]["status"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [503, 500, 200]);
    assert_eq!(list[0]["request"]["headers"]["authorization"], "[redacted]");
    assert_eq!(list[0]["request"]["headers"]["webhook-id"], ids[0]);
    assert!(list[0]["next_attempt_at"].is_string());
    assert!(list[2]["next_attempt_at"].is_null());
    assert!(
        !d.to_string().contains(CRM_TOKEN),
        "no secret in the log: {d}"
    );

    // The job itself went on right after queueing the delivery.
    let job = get_json(&app, app.key("zapier"), &format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_4xx_other_than_408_or_429_is_not_retried() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(422)]);
    let app = notify_app(&crm_endpoint(&rx.url("/hooks"), "")).await;
    let job_id = notify(&app).await;
    let d = delivery_when(&app, &job_id, "failed").await;
    assert_eq!(d["attempt_count"], 1);
    assert_eq!(d["last_status_code"], 422);
    // Nothing else arrives: the store holds no further attempt for it…
    let id = callgate::ids::DeliveryId::parse(d["id"].as_str().unwrap()).unwrap();
    let stored = app.store().delivery(&id).await.unwrap().unwrap();
    assert_eq!(stored.next_attempt_at_ms, None, "no retry scheduled");
    // …and the engine has been through the endpoint's queue since: a
    // later delivery to it went out, and it alone followed the 422.
    let marker = notify(&app).await;
    delivery_when(&app, &marker, "succeeded").await;
    let got = rx.received();
    assert_eq!(got.len(), 2, "the 422 was not sent again");
    assert_eq!(got[1].headers["x-job"], marker.as_str());
    let again = app.store().delivery(&id).await.unwrap().unwrap();
    assert_eq!(
        (again.status.as_str(), again.attempts),
        ("failed", 1),
        "still one attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_is_honoured_for_429() {
    let rx = Receiver::start().await;
    rx.script([
        Reply::status(429).header("retry-after", "1"),
        Reply::status(408),
    ]);
    let app = notify_app(&crm_endpoint(&rx.url("/hooks"), "")).await;
    let job_id = notify(&app).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    let first = Instant::now();
    rx.wait_for(2, Duration::from_secs(10)).await;
    let gap = first.elapsed();
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After: 1 was not honoured ({gap:?})"
    );
    // 408 is retried too (after 20 ms at most).
    let d = delivery_when(&app, &job_id, "succeeded").await;
    assert_eq!(d["attempt_count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_delivery_is_replayed_with_the_same_webhook_id() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(502));
    let app = notify_app(&crm_endpoint(
        &rx.url("/hooks"),
        "breaker = { failures = 100, cooldown = \"1s\", max_cooldown = \"1s\" }",
    ))
    .await;
    let job_id = notify(&app).await;
    let dead = delivery_when(&app, &job_id, "dead").await;
    assert_eq!(dead["attempt_count"], 4, "1 + 3 retries: {dead}");
    assert_eq!(rx.received().len(), 4);
    let id = dead["id"].as_str().unwrap().to_owned();

    // Needs deliveries:write.
    let r = replay(&app, "reader", &id).await;
    problem(r, 403).await;

    rx.default_reply(Reply::ok("{\"ok\": true}"));
    let r = replay(&app, "ops", id.as_str()).await;
    assert_eq!(r.status(), 202);
    let d = delivery_when(&app, &job_id, "succeeded").await;
    assert_eq!(d["attempt_count"], 5);
    let got = rx.received();
    assert_eq!(got.len(), 5);
    assert_eq!(got[4].headers["webhook-id"], got[0].headers["webhook-id"]);
    verify(&got[4]);
    assert_eq!(
        d["attempts"][4]["response"]["body_excerpt"],
        "{\"ok\": true}"
    );

    // A succeeded delivery is not replayed; an unknown one is 404.
    let r = replay(&app, "ops", id.as_str()).await;
    let p = problem(r, 409).await;
    assert!(p["detail"].as_str().unwrap().contains("succeeded"), "{p}");
    problem(replay(&app, "ops", "dlv_01JNOPE").await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_delivery_log_filters_pages_and_checks_its_inputs() {
    let rx = Receiver::start().await;
    let app = notify_app(&crm_endpoint(&rx.url("/hooks"), "")).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(notify(&app).await);
    }
    for j in &jobs {
        delivery_when(&app, j, "succeeded").await;
    }
    let ops = app.key("ops").to_owned();
    let page1 = get_json(
        &app,
        &ops,
        "/v1/deliveries?limit=2&endpoint=crm&status=succeeded",
    )
    .await;
    assert_eq!(page1["deliveries"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page2 = get_json(
        &app,
        &ops,
        &format!("/v1/deliveries?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(page2["deliveries"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());
    let mut seen: Vec<String> = page1["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["deliveries"].as_array().unwrap())
        .map(|d| d["job_id"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    jobs.sort();
    assert_eq!(seen, jobs, "newest first, each once");
    let none = get_json(&app, &ops, "/v1/deliveries?status=dead").await;
    assert_eq!(none["deliveries"], json!([]));
    let future = get_json(&app, &ops, "/v1/deliveries?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["deliveries"], json!([]));
    // Any id of the documented form is a cursor, whether or not it exists.
    let oldest = get_json(
        &app,
        &ops,
        "/v1/deliveries?cursor=dlv_00000000000000000000000000",
    )
    .await;
    assert_eq!(oldest["deliveries"], json!([]));

    for bad in [
        "/v1/deliveries?status=lost",
        "/v1/deliveries?since=yesterday",
        "/v1/deliveries?limit=0",
        "/v1/deliveries?limit=1000",
        "/v1/deliveries?cursor=abc",
        "/v1/deliveries?cursor=00000000000000000000000000000000000000000000000000000000000000",
        "/v1/deliveries?cursor=dlv_0000000000000000000000000",
        "/v1/deliveries?cursor=dlv_0000000000000000000000000U",
        "/v1/deliveries?cursor=dlv_01m8d4heyca2b4c6d8e0f2g4h6",
        "/v1/deliveries?colour=red",
    ] {
        problem(app.get(&ops, bad).await, 400).await;
    }
    // Scopes: a trigger key cannot read the log; no key is 401.
    problem(app.get(app.key("zapier"), "/v1/deliveries").await, 403).await;
    let r = app
        .client
        .get(app.url("/v1/deliveries"))
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    problem(app.get(&ops, "/v1/deliveries/dlv_nope").await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_call_automation_sends_the_crm_update_with_typed_fields() {
    let rx = Receiver::start().await;
    let automations = "[automations.crm-update]\non = \"call.completed\"\n\
        [[automations.crm-update.steps]]\ntype = \"webhook\"\nendpoint = \"crm\"\nevent = \"call.completed\"\n\
        payload = { call_id = \"{{ call.id }}\", customer_phone = \"{{ call.to }}\", agent_id = \"{{ call.agent_id }}\", \
        call_outcome = \"{{ call.outcome }}\", duration_seconds = \"{{ call.duration_seconds }}\", agent_name = \"{{ agent.name }}\" }\n";
    let app = TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .file("automations.toml", automations)
        .file("endpoints.toml", &crm_endpoint(&rx.url("/calls"), ""))
        .file("triggers.toml", "[triggers.demo-call]\nschema = \"schemas/demo-call.json\"\naction = { type = \"start_call\", agent = \"demo-agent\" }\n")
        .key("zapier", &["triggers:run"])
        .key("ops", &["deliveries:read"])
        .background_runner()
        .start()
        .await;
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    verify(&got[0]);
    let body = got[0].json();
    assert!(
        body["call_id"].as_str().unwrap().starts_with("call_"),
        "{body}"
    );
    assert_eq!(body["customer_phone"], "+15550121234");
    assert_eq!(body["agent_id"], "demo-agent");
    assert_eq!(body["agent_name"], "Demo Agent");
    assert_eq!(body["call_outcome"], "interested");
    assert!(
        body["duration_seconds"].is_i64(),
        "a number stays a number: {body}"
    );
    let list = get_json(
        &app,
        app.key("ops"),
        &format!(
            "/v1/deliveries?call_id={}",
            body["call_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(list["deliveries"][0]["event"], "call.completed");
}

fn endpoint(
    url: &str,
    allow_private: bool,
    follow_redirects: bool,
) -> callgate::outbound::Endpoint {
    use callgate::config::outbound::*;
    callgate::outbound::Endpoint {
        name: "t".into(),
        url: url.parse().unwrap(),
        method: reqwest::Method::POST,
        headers: Vec::new(),
        secret_headers: Vec::new(),
        auth: None,
        signing_secret: None,
        timeout: Duration::from_secs(2),
        retry: RetryPolicy::default(),
        concurrency: 1,
        breaker: BreakerConfig::default(),
        allow_private,
        allow_http: true,
        follow_redirects,
        ca_certificates: Vec::new(),
        health_check: None,
    }
}

async fn send(e: callgate::outbound::Endpoint) -> callgate::webhooks::client::Exchange {
    let e = std::sync::Arc::new(e);
    let client = callgate::webhooks::EndpointClient::build(e.clone()).unwrap();
    client
        .exchange(
            callgate::webhooks::client::Outgoing {
                method: &e.method,
                url: &e.url,
                headers: &[],
                body: Some("{}"),
                msg_id: None,
                now_ms: 0,
            },
            Duration::from_secs(2),
            4096,
        )
        .await
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_targets_unless_allow_listed() {
    crate::support::crypto();
    let rx = Receiver::start().await;
    let port = rx.addr.port();
    // Literal private, loopback, metadata and unique-local addresses, and a
    // name that resolves to loopback: refused before anything is sent.
    for url in [
        format!("http://127.0.0.1:{port}/x"),
        "http://10.0.0.1/x".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]/x".to_owned(),
        "http://[fd00::1]/x".to_owned(),
        format!("http://localhost:{port}/x"),
    ] {
        let out = send(endpoint(&url, false, false)).await;
        assert!(out.refused, "{url} was not refused: {out:?}");
        assert!(out.status.is_none());
        assert!(!out.is_retryable(), "a refusal is final");
        let err = out.error.unwrap();
        assert!(err.contains("allow_private"), "{url}: {err}");
    }
    assert_eq!(rx.received().len(), 0, "nothing reached the receiver");

    // Allow-listed, it goes through.
    let out = send(endpoint(&rx.url("/ok"), true, false)).await;
    assert_eq!(out.status, Some(200));

    // Redirects are not followed by default (a 3xx is a final failure)…
    rx.script([Reply::status(302).header("location", "http://10.0.0.1/")]);
    let out = send(endpoint(&rx.url("/r"), true, false)).await;
    assert_eq!(out.status, Some(302));
    assert!(!out.is_success() && !out.is_retryable());
    // …and when they are, a hop to another private address is refused even
    // for an allow-listed endpoint, by IP literal or by name.
    rx.script([Reply::status(302).header("location", "http://10.0.0.1/")]);
    let out = send(endpoint(&rx.url("/r"), true, true)).await;
    assert!(
        out.status.is_none() && out.error.as_deref().unwrap().contains("10.0.0.1"),
        "{out:?}"
    );
    rx.script([Reply::status(307).header("location", &format!("http://localhost:{port}/other"))]);
    let out = send(endpoint(&rx.url("/r"), true, true)).await;
    assert!(out.status.is_none(), "{out:?}");
    assert!(out.refused, "{out:?}");
    assert_eq!(
        rx.received().iter().filter(|r| r.path == "/other").count(),
        0
    );
    // A hop on the endpoint's own host is fine.
    rx.script([Reply::status(307).header("location", &rx.url("/moved"))]);
    let out = send(endpoint(&rx.url("/r"), true, true)).await;
    assert_eq!(out.status, Some(200));
}

#[tokio::test]
async fn callgate_check_refuses_private_or_plain_http_endpoints_that_are_not_allow_listed() {
    let err = crate::support::config_problems(&[(
        "endpoints.toml",
        "[endpoints.a]\nurl = \"https://127.0.0.1/x\"\n[endpoints.b]\nurl = \"https://10.1.2.3/\"\n\
         [endpoints.c]\nurl = \"https://169.254.169.254/\"\n[endpoints.d]\nurl = \"https://[::1]/\"\n\
         [endpoints.e]\nurl = \"http://crm.example.com/\"\n[endpoints.f]\nurl = \"https://10.1.2.3/\"\nallow_private = true\n\
         [endpoints.g]\nurl = \"https://crm.example.com/\"\nsigning_secret = \"not-a-secret\"\n",
    )]);
    for (key, what) in [
        ("endpoints.a.url", "loopback"),
        ("endpoints.b.url", "private"),
        ("endpoints.c.url", "cloud metadata"),
        ("endpoints.d.url", "loopback"),
        ("endpoints.e.url", "allow_http"),
        ("endpoints.g.signing_secret", "whsec_"),
    ] {
        crate::support::assert_problem(&err, key, what);
    }
    assert!(
        !err.0.iter().any(|p| p.key.starts_with("endpoints.f")),
        "f is allow-listed:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_to_a_name_resolving_to_loopback_fails_without_reaching_it() {
    let rx = Receiver::start().await;
    let url = format!("http://localhost:{}/hooks", rx.addr.port());
    let endpoints = crm_endpoint(&url, "").replace("allow_private = true\n", "");
    let app = notify_app(&endpoints).await;
    let job_id = notify(&app).await;
    let d = delivery_when(&app, &job_id, "failed").await;
    assert!(
        d["last_error"].as_str().unwrap().contains("loopback"),
        "{d}"
    );
    assert_eq!(d["attempt_count"], 1, "a refusal is not retried");
    assert_eq!(rx.received().len(), 0);
}

#[test]
fn the_shipped_outbound_examples_validate() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(crate::support::REPO_CONFIG);
    crate::support::copy_dir(repo, dir.path());
    let examples = repo.join("examples/outbound");
    for f in ["endpoints.toml", "actions.toml"] {
        std::fs::copy(examples.join(f), dir.path().join(f)).unwrap();
    }
    let mut automations = std::fs::read_to_string(dir.path().join("automations.toml")).unwrap();
    automations.push_str(&std::fs::read_to_string(examples.join("automations.toml")).unwrap());
    std::fs::write(dir.path().join("automations.toml"), automations).unwrap();
    let mut env = crate::support::test_env();
    env.insert("CRM_WEBHOOK_SECRET".into(), WH_SECRET.into());
    env.insert("ALERTS_WEBHOOK_SECRET".into(), WH_SECRET.into());
    let data = tempfile::tempdir().unwrap();
    let config = callgate::app::compile::load(dir.path(), data.path(), &env)
        .unwrap_or_else(|e| panic!("the examples do not validate:\n{e}"));
    assert_eq!(config.endpoints.len(), 2);
    assert!(config.actions.contains_key("customer_lookup"));
    assert!(config.automations.contains_key("crm-update"));
    assert!(config.automations.contains_key("escalation-alert"));
    // Without the secrets, check names every missing variable.
    let err = callgate::app::compile::load(dir.path(), data.path(), &crate::support::test_env())
        .unwrap_err();
    assert!(err.to_string().contains("CRM_WEBHOOK_SECRET"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_are_purged_after_the_retention_and_pending_ones_kept() {
    let rx = Receiver::start().await;
    rx.script([Reply::ok("{}"), Reply::status(503)]);
    let clock = callgate::clock::ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = TestApp::builder()
        .file(
            "endpoints.toml",
            &crm_endpoint(&rx.url("/hooks"), "")
                .replace("[\"20ms\", \"20ms\", \"20ms\"]", "[\"1h\"]"),
        )
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .main("[deliveries]\nretention = \"7d\"\n")
        .key("zapier", &["triggers:run"])
        .key("ops", &["deliveries:read"])
        .clock(clock.clone())
        .start()
        .await;
    let deliverer = app.state.deliverer();
    let done = notify(&app).await;
    app.run_pending().await;
    assert_eq!(deliverer.run_due().await, 1);
    let waiting = notify(&app).await;
    app.run_pending().await;
    assert_eq!(
        deliverer.run_due().await,
        1,
        "503: pending, next try in up to 1 h"
    );
    let ops = app.key("ops").to_owned();
    let id_of = |job: String| {
        let (app, ops) = (&app, ops.clone());
        async move {
            let v = get_json(app, &ops, &format!("/v1/deliveries?job_id={job}")).await;
            v["deliveries"][0]["id"].as_str().unwrap().to_owned()
        }
    };
    let (done_id, waiting_id) = (id_of(done).await, id_of(waiting).await);

    clock.advance_ms(6 * 24 * 3600 * 1000);
    assert_eq!(deliverer.purge_expired().await, 0, "not yet");
    clock.advance_ms(2 * 24 * 3600 * 1000);
    assert_eq!(deliverer.purge_expired().await, 1);
    problem(
        app.get(&ops, &format!("/v1/deliveries/{done_id}")).await,
        404,
    )
    .await;
    let kept = get_json(&app, &ops, &format!("/v1/deliveries/{waiting_id}")).await;
    assert_eq!(
        kept["status"], "pending",
        "a delivery still retrying is never purged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_endpoint_does_not_starve_another() {
    let slow = Receiver::start().await;
    slow.default_reply(Reply::ok("{}").after(Duration::from_millis(1500)));
    let fast = Receiver::start().await;
    let endpoints = format!(
        "{}\n[endpoints.fast]\nurl = \"{}\"\nallow_private = true\nallow_http = true\n",
        crm_endpoint(&slow.url("/slow"), "concurrency = 1"),
        fast.url("/fast")
    );
    let automations = format!(
        "{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}\n[automations.notify-fast]\n[[automations.notify-fast.steps]]\n\
         type = \"webhook\"\nendpoint = \"fast\"\n"
    );
    let triggers = format!(
        "{NOTIFY_TRIGGER}\n[triggers.notify-fast]\nschema = \"schemas/demo-call.json\"\n\
         action = {{ type = \"automation\", name = \"notify-fast\", to = \"/phone_number\" }}\n"
    );
    let app = TestApp::builder()
        .file("endpoints.toml", &endpoints)
        .file("automations.toml", &automations)
        .triggers(&triggers)
        // Two delivery slots in all: without per-endpoint limits the slow
        // endpoint would hold both.
        .main("[deliveries]\nworkers = 2\n")
        .key("zapier", &["triggers:run"])
        .background_runner()
        .start()
        .await;
    for _ in 0..4 {
        notify(&app).await;
    }
    slow.wait_for(1, Duration::from_secs(10)).await;
    let started = Instant::now();
    let r = app
        .trigger(app.key("zapier"), "notify-fast", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    fast.wait_for(1, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "the fast endpoint waited for the slow one: {took:?}"
    );
    assert_eq!(
        slow.received().len(),
        1,
        "the slow endpoint gets one at a time (concurrency = 1)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_header_from_the_environment_is_sent_but_never_stored_or_shown() {
    let rx = Receiver::start().await;
    let endpoints = crm_endpoint(&rx.url("/hooks"), "").replace(
        "headers = { \"X-Source\" = \"callgate\", \"X-Job\" = \"{{ job.id }}\" }",
        "headers = { \"X-Source\" = \"callgate\", \"X-Custom-Auth\" = \"${CRM_TOKEN}\" }",
    );
    assert!(endpoints.contains("X-Custom-Auth"));
    let app = notify_app(&endpoints).await;
    let job_id = notify(&app).await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].headers["x-custom-auth"], CRM_TOKEN);
    let d = delivery_when(&app, &job_id, "succeeded").await;
    assert_eq!(
        d["attempts"][0]["request"]["headers"]["x-custom-auth"],
        "[redacted]"
    );
    assert_eq!(
        d["attempts"][0]["request"]["headers"]["x-source"],
        "callgate"
    );
    assert!(!d.to_string().contains(CRM_TOKEN), "{d}");
    let store = app.store();
    let deliveries = crate::support::all_deliveries(store).await;
    assert_eq!(deliveries.len(), 1);
    let stored = deliveries
        .iter()
        .filter(|d| d.headers.to_string().contains(CRM_TOKEN))
        .count();
    assert_eq!(stored, 0, "the secret is not in the database");
    let mut logged = 0;
    for d in &deliveries {
        let attempts = store.delivery_attempts(&d.id).await.unwrap();
        assert!(!attempts.is_empty());
        logged += attempts
            .iter()
            .filter(|a| a.request_headers.to_string().contains(CRM_TOKEN))
            .count();
    }
    assert_eq!(logged, 0);
}

#[tokio::test]
async fn an_endpoint_with_credentials_is_not_redirected_off_its_host() {
    crate::support::crypto();
    let rx = Receiver::start().await;
    let port = rx.addr.port();
    let mut e = endpoint(&rx.url("/r"), true, true);
    e.auth = Some(callgate::config::outbound::EndpointAuth::Header {
        name: "X-Key".into(),
        value: "k".to_owned().into(),
    });
    rx.script([Reply::status(302).header("location", &format!("http://localhost:{port}/other"))]);
    let out = send(e.clone()).await;
    assert!(
        out.error.as_deref().unwrap().contains("credentials"),
        "{out:?}"
    );
    assert!(out.refused);
    // On its own host it follows.
    rx.script([Reply::status(302).header("location", &rx.url("/moved"))]);
    assert_eq!(send(e).await.status, Some(200));
    assert_eq!(
        rx.received().iter().filter(|r| r.path == "/other").count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_an_endpoint_no_longer_configured_is_failed_and_not_replayed() {
    let rx = Receiver::start().await;
    let app = notify_app(&crm_endpoint(&rx.url("/hooks"), "")).await;
    let store = app.state.store.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let id = store
        .create_delivery(callgate::store::NewDelivery {
            id: callgate::ids::DeliveryId::new(now),
            msg_id: callgate::ids::MsgId::new(now),
            endpoint: "old-crm".into(),
            event: "test".into(),
            job_id: None,
            call_id: None,
            headers_json: "{}".into(),
            body: "{}".into(),
            dedupe_key: None,
            created_at_ms: now,
        })
        .await
        .unwrap();
    // The delivery engine's own sweep (at its start, then every ten
    // minutes) may get there first: either way it ends up failed, once.
    let failed_now = store
        .fail_unconfigured_deliveries(vec!["crm".into()], now)
        .await
        .unwrap();
    assert!(failed_now <= 1, "{failed_now}");
    let d = get_json(&app, app.key("ops"), &format!("/v1/deliveries/{id}")).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(d["attempt_count"], 0, "never sent");
    assert!(
        d["last_error"].as_str().unwrap().contains("not configured"),
        "{d}"
    );
    let r = replay(&app, "ops", id.as_str()).await;
    let p = problem(r, 409).await;
    assert!(p["detail"].as_str().unwrap().contains("old-crm"), "{p}");
}
