//! Provider callbacks (`POST /v1/calls/{id}/events`): signatures, replays,
//! idempotency, ordering; and the generic HTTP provider against a real local
//! receiver: request templates, refused and ambiguous dials.

use std::time::Duration;

use callgate::clock::ManualClock;
use callgate::ids::{CallId, JobId};
use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::runner::{ANYTIME_AGENT, SIM_SECRET, eventually, fast_simulator, get_json};
use crate::support::{TestApp, demo_body, problem};

/// A simulator that never reports on its own (ring and talk for an hour),
/// so tests send the events themselves.
fn silent_simulator() -> String {
    fast_simulator("").replace("ring_time = \"10ms\"", "ring_time = \"1h\"")
}

async fn placed_call(app: &TestApp) -> CallId {
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    app.run_pending().await;
    let job_id =
        JobId::parse(r.json::<Value>().await.unwrap()["job_id"].as_str().unwrap()).unwrap();
    let calls: Vec<CallId> = app
        .state
        .store
        .calls_for_job(&job_id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    calls[0].clone()
}

fn signed(secret: &str, msg_id: &str, ts: i64, body: &str) -> Vec<(&'static str, String)> {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    vec![
        ("webhook-id", msg_id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            wh.sign(msg_id, ts, body.as_bytes()).unwrap(),
        ),
        ("content-type", "application/json".to_owned()),
    ]
}

async fn post_event(
    app: &TestApp,
    call_id: impl AsRef<str>,
    headers: Vec<(&'static str, String)>,
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(&format!("/v1/calls/{}/events", call_id.as_ref())))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.unwrap()
}

async fn app_with(providers: &str) -> TestApp {
    TestApp::builder()
        .file("providers.toml", providers)
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run", "jobs:read"])
        .start()
        .await
}

#[tokio::test]
async fn valid_events_apply_once_and_never_move_a_call_backwards() {
    let app = app_with(&silent_simulator()).await;
    let call_id = placed_call(&app).await;
    let now = chrono::Utc::now().timestamp();
    let completed = json!({"event_id": "e2", "status": "completed", "duration_seconds": 42, "outcome": "interested"}).to_string();
    let r = post_event(
        &app,
        &call_id,
        signed(SIM_SECRET, "m2", now, &completed),
        &completed,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["status_changed_to"],
        "completed"
    );
    // The same event again: nothing changes.
    let r = post_event(
        &app,
        &call_id,
        signed(SIM_SECRET, "m2", now, &completed),
        &completed,
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    // A late `ringing` does not move a completed call back.
    let ringing = json!({"event_id": "e1", "status": "ringing"}).to_string();
    let r = post_event(
        &app,
        &call_id,
        signed(SIM_SECRET, "m1", now, &ringing),
        &ringing,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["status_changed_to"].is_null());
    let call = get_json(&app, app.key("zapier"), &format!("/v1/calls/{call_id}")).await;
    assert_eq!(call["status"], "completed");
    assert_eq!(call["duration_seconds"], 42);
}

/// Checks a refused callback: 401 `bad-signature` with the `Signature`
/// challenge (not a bearer one: this route takes no tokens).
async fn bad_signature(response: reqwest::Response) -> Value {
    assert_eq!(
        response.headers()["www-authenticate"],
        "Signature realm=\"callgate-callbacks\""
    );
    let p = problem(response, 401).await;
    assert_eq!(p["type"], "urn:callgate:problem:bad-signature", "{p}");
    assert_eq!(p["title"], "Signature rejected", "{p}");
    p
}

#[tokio::test]
async fn tampered_replayed_unsigned_and_unknown_events_are_refused() {
    let app = app_with(&silent_simulator()).await;
    let call_id = placed_call(&app).await;
    let now = chrono::Utc::now().timestamp();
    let body = json!({"event_id": "x", "status": "completed"}).to_string();
    let tampered = body.replace("completed", "failed");
    let r = post_event(
        &app,
        &call_id,
        signed(SIM_SECRET, "m", now, &body),
        &tampered,
    )
    .await;
    let p = bad_signature(r).await;
    assert!(p["detail"].as_str().unwrap().contains("signature"), "{p}");
    // Signed correctly but ten minutes old: a replay.
    let r = post_event(
        &app,
        &call_id,
        signed(SIM_SECRET, "m", now - 600, &body),
        &body,
    )
    .await;
    let p = bad_signature(r).await;
    assert!(p["detail"].as_str().unwrap().contains("window"), "{p}");
    // Signed with another secret.
    let r = post_event(
        &app,
        &call_id,
        signed("whsec_c2VjcmV0c2VjcmV0c2VjcmV0", "m", now, &body),
        &body,
    )
    .await;
    bad_signature(r).await;
    let r = post_event(
        &app,
        &call_id,
        vec![("content-type", "application/json".into())],
        &body,
    )
    .await;
    let p = bad_signature(r).await;
    assert!(p["detail"].as_str().unwrap().contains("missing"), "{p}");
    // An unknown call.
    let r = post_event(
        &app,
        "call_01JDEXAMPLE0000000000000000",
        signed(SIM_SECRET, "m", now, &body),
        &body,
    )
    .await;
    problem(r, 404).await;
    // None of it changed the call.
    let call = get_json(&app, app.key("zapier"), &format!("/v1/calls/{call_id}")).await;
    assert!(
        matches!(call["status"].as_str(), Some("dialing" | "ringing")),
        "{call}"
    );
}

fn ratelimit_policies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("ratelimit-policy")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn verified_callbacks_have_their_provider_limit_and_only_forgeries_spend_the_ip_limit() {
    // A platform posts every call's events from a few addresses: with the
    // per-IP limit in front, a campaign's callbacks were refused with 429
    // (3,394 of 4,594 in one run) and a platform that does not retry loses
    // them. The per-IP bucket here is far smaller than the burst of
    // callbacks that must all pass.
    let app = TestApp::builder()
        .file("providers.toml", &silent_simulator())
        .file("agents.toml", ANYTIME_AGENT)
        .limits(
            "per_ip = { requests = 1, per = \"1h\", burst = 10 }\n\
             per_principal = { requests = 1000, per = \"1s\", burst = 1000 }\n\
             per_trigger = { requests = 1000, per = \"1s\", burst = 1000 }\n\
             per_provider = { requests = 1, per = \"1h\", burst = 40 }\n",
        )
        .key("zapier", &["triggers:run", "jobs:read"])
        .start()
        .await;
    let call_id = placed_call(&app).await;
    // The simulator reports `ringing` at the dial, then nothing for an hour.
    eventually(
        Duration::from_secs(10),
        "the simulator's ringing",
        || async {
            let c = app.state.store.call(&call_id).await.unwrap().unwrap();
            (c.status == callgate::store::CallStatus::Ringing).then_some(())
        },
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let event = |i: usize| {
        json!({"event_id": format!("e{i}"), "status": "ringing", "custom": {"n": i}}).to_string()
    };
    // A burst of 30 verified callbacks from one address, three times the
    // per-IP burst: every one is applied. (The simulator's own event was
    // the provider's first.)
    for i in 0..30 {
        let body = event(i);
        let r = post_event(
            &app,
            &call_id,
            signed(SIM_SECRET, &format!("m{i}"), now, &body),
            &body,
        )
        .await;
        assert_eq!(r.status(), 200, "callback {i}");
        let policies = ratelimit_policies(&r);
        assert_eq!(policies, ["\"provider\";q=40;w=144000"], "callback {i}");
        let left = 38 - i as u64;
        assert_eq!(
            r.headers()["ratelimit"].to_str().unwrap(),
            format!("\"provider\";r={left};t={}", 3600 * (40 - left)),
        );
    }
    // Forgeries are charged to the sender's address: 401 until its bucket
    // is empty (one request went to the trigger), then 429.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let body = event(100 + i);
        let r = post_event(
            &app,
            &call_id,
            signed("whsec_c2VjcmV0c2VjcmV0c2VjcmV0", "f", now, &body),
            &body,
        )
        .await;
        if r.status() == 401 {
            assert_eq!(ratelimit_policies(&r), ["\"ip\";q=10;w=36000"]);
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[..9], [401; 9], "{statuses:?}");
    let last = post_event(&app, &call_id, vec![], "{}").await;
    let p = problem(last, 429).await;
    assert_eq!(p["type"], "urn:callgate:problem:rate-limited");
    assert!(statuses[9..].iter().all(|s| *s == 429), "{statuses:?}");
    // Guessing calls costs the same quota.
    let r = post_event(&app, "call_01JDEXAMPLE0000000000000000", vec![], "{}").await;
    assert_eq!(r.status(), 429);
    // The forger's empty bucket does not stop verified callbacks.
    for i in 30..39 {
        let body = event(i);
        let r = post_event(
            &app,
            &call_id,
            signed(SIM_SECRET, &format!("m{i}"), now, &body),
            &body,
        )
        .await;
        assert_eq!(r.status(), 200, "callback {i}");
    }
    // The provider's own limit: its 41st callback in the window is refused.
    let body = event(40);
    let r = post_event(&app, &call_id, signed(SIM_SECRET, "m40", now, &body), &body).await;
    assert_eq!(ratelimit_policies(&r), ["\"provider\";q=40;w=144000"]);
    assert!(r.headers().contains_key("retry-after"));
    let p = problem(r, 429).await;
    assert!(p["detail"].as_str().unwrap().contains("provider"), "{p}");
}

pub fn fake_twilio(receiver: &Receiver, extra: &str) -> String {
    format!(
        r#"
[providers.simulator]
type = "simulator"

[providers.fake]
type = "http"
call_id = "/sid"
timeout = "500ms"
{extra}
[providers.fake.create_call]
method = "POST"
url = "{url}"
headers = {{ Authorization = "Basic {{{{ 'AC1:tok' | b64encode }}}}" }}
body_format = "form"
[providers.fake.create_call.body]
To = "{{{{ call.to }}}}"
From = "{{{{ call.from }}}}"
StatusCallback = "{{{{ callback_url }}}}"
StatusCallbackEvent = ["initiated", "completed"]
Customer = "{{{{ call.variables.plan }}}}"
[providers.fake.callbacks]
signature = {{ scheme = "twilio", auth_token = "tok" }}
format = "form"
status = "/CallStatus"
status_map = {{ ringing = "ringing", in-progress = "in_progress", completed = "completed", no-answer = "no_answer" }}
provider_call_id = "/CallSid"
event_id = "/SequenceNumber"
duration_seconds = "/CallDuration"
outcome = "/AnsweredBy"
"#,
        url = receiver.url("/2010-04-01/Accounts/AC1/Calls.json")
    )
}

pub const FAKE_AGENT: &str = "[agents.demo-agent]\nname = \"Demo\"\nprovider = \"fake\"\nfrom_number = \"+15550009999\"\n\
    max_concurrent_calls = 3\ncalling_window = { enabled = false }\n";

#[tokio::test]
async fn the_http_provider_renders_its_request_and_twilio_signed_callbacks_complete_the_call() {
    let receiver = Receiver::start().await;
    receiver.default_reply(
        Reply::ok(r#"{"sid": "CA123", "status": "queued"}"#)
            .header("content-type", "application/json"),
    );
    let app = TestApp::builder()
        .file("providers.toml", &fake_twilio(&receiver, ""))
        .file("agents.toml", FAKE_AGENT)
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    let call_id = placed_call(&app).await;
    let sent = receiver.received();
    assert_eq!(sent.len(), 1);
    let form = sent[0].form();
    let get = |k: &str| {
        form.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("To"), ["+15550121234"]);
    assert_eq!(get("From"), ["+15550009999"]);
    assert_eq!(get("StatusCallbackEvent"), ["initiated", "completed"]);
    assert_eq!(get("Customer"), ["enterprise"]);
    let callback = get("StatusCallback").remove(0);
    assert_eq!(callback, app.url(&format!("/v1/calls/{call_id}/events")));
    assert_eq!(sent[0].headers["authorization"], "Basic QUMxOnRvaw==");
    let call = get_json(&app, app.key("zapier"), &format!("/v1/calls/{call_id}")).await;
    assert_eq!(call["provider_call_id"], "CA123");

    // Text that is not UTF-8 (Latin-1 `é`) is refused naming the field,
    // even correctly signed, and moves nothing.
    let latin1 = "CallSid=CA123&CallStatus=completed&AnsweredBy=Jos%E9&SequenceNumber=1";
    let signature =
        callgate::calls::signature::twilio_signature("tok", &callback, latin1.as_bytes());
    let headers = vec![
        ("x-twilio-signature", signature),
        ("content-type", "application/x-www-form-urlencoded".into()),
    ];
    let refused = problem(post_event(&app, &call_id, headers, latin1).await, 400).await;
    assert_eq!(refused["errors"][0]["pointer"], "/AnsweredBy", "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("`AnsweredBy`"),
        "{refused}"
    );
    let call = get_json(&app, app.key("zapier"), &format!("/v1/calls/{call_id}")).await;
    assert_ne!(call["status"], "completed", "{call}");

    let body =
        "CallSid=CA123&CallStatus=completed&CallDuration=61&AnsweredBy=human&SequenceNumber=2";
    let signature = callgate::calls::signature::twilio_signature("tok", &callback, body.as_bytes());
    let headers = vec![
        ("x-twilio-signature", signature),
        ("content-type", "application/x-www-form-urlencoded".into()),
    ];
    let r = post_event(&app, &call_id, headers.clone(), body).await;
    assert_eq!(r.status(), 200);
    let call = get_json(&app, app.key("zapier"), &format!("/v1/calls/{call_id}")).await;
    assert_eq!(
        (
            call["status"].as_str(),
            call["duration_seconds"].as_i64(),
            call["outcome"].as_str()
        ),
        (Some("completed"), Some(61), Some("human"))
    );
    // The signature covers every parameter.
    let forged = body.replace("61", "6100");
    bad_signature(post_event(&app, &call_id, headers, &forged).await).await;
}

#[tokio::test]
async fn a_refused_dial_is_retried_with_backoff_then_fails_with_every_attempt_recorded() {
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::status(400));
    let clock = ManualClock::new(1_800_000_000_000);
    let app = TestApp::builder()
        .file("providers.toml", &fake_twilio(&receiver, ""))
        .file("agents.toml", FAKE_AGENT)
        .main("[runner]\nmax_attempts = 3\nretry_base = \"1s\"\nretry_max = \"4s\"")
        .key("zapier", &["triggers:run"])
        .clock(clock.clone())
        .start()
        .await;
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    let path = r.json::<Value>().await.unwrap()["links"]["self"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        app.run_pending().await;
        clock.advance_ms(10_000);
    }
    let job = get_json(&app, app.key("zapier"), &path).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 3);
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 400")
    );
    let failures = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["error"].is_string())
        .count();
    assert_eq!(failures, 3, "every attempt is in the log: {job}");
    assert_eq!(
        receiver.received().len(),
        3,
        "each attempt asked the provider once"
    );
    // One call record, redialed with the same id (the provider's key).
    assert_eq!(job["calls"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_ambiguous_dial_that_cannot_be_looked_up_needs_attention_and_is_not_redialed() {
    let receiver = Receiver::start().await;
    receiver.default_reply(Reply::ok(r#"{"sid":"CA9"}"#).after(Duration::from_secs(3)));
    let app = TestApp::builder()
        .file("providers.toml", &fake_twilio(&receiver, ""))
        .file("agents.toml", FAKE_AGENT)
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    let path = r.json::<Value>().await.unwrap()["links"]["self"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_pending().await;
    let job = get_json(&app, app.key("zapier"), &path).await;
    assert_eq!(job["status"], "needs_attention", "{job}");
    assert!(
        job["status_reason"]
            .as_str()
            .unwrap()
            .contains("cannot be asked")
    );
    let call = get_json(
        &app,
        app.key("zapier"),
        job["calls"][0]["links"]["self"].as_str().unwrap(),
    )
    .await;
    assert_eq!(call["status"], "unknown");
    // Nothing runs it again: the number is not dialed twice.
    assert_eq!(app.run_pending().await, 0);
    eventually(
        Duration::from_secs(5),
        "the slow request to land",
        || async { (receiver.received().len() == 1).then_some(()) },
    )
    .await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn calls_whose_events_were_lost_are_settled_by_asking_the_provider() {
    // The simulator cannot reach the gateway (a closed port): its events are lost.
    let providers = fast_simulator("callback_base_url = \"https://127.0.0.1:9\"");
    let clock = ManualClock::new(1_800_000_000_000);
    let app = TestApp::builder()
        .file("providers.toml", &providers)
        .file("agents.toml", ANYTIME_AGENT)
        .main("[runner]\nstale_call_after = \"10m\"")
        .key("zapier", &["triggers:run", "jobs:read"])
        .clock(clock.clone())
        .start()
        .await;
    let call_id = placed_call(&app).await;
    assert_eq!(app.runner.reconcile_stale_calls().await, 0, "not stale yet");
    // The simulated call ends ~100 ms after the dial (wall clock); each
    // pass reports what the provider says at that moment.
    let call = eventually(
        Duration::from_secs(10),
        "reconciliation to settle the call",
        || async {
            clock.advance_ms(11 * 60 * 1000);
            app.runner.reconcile_stale_calls().await;
            let c = get_json(&app, app.key("zapier"), &format!("/v1/calls/{call_id}")).await;
            (c["status"] == "completed").then_some(c)
        },
    )
    .await;
    assert!(call["ended_at"].is_string());
}
