//! `[alerts]` against real local receivers: a breaker that opens (and
//! reopens after failed probes) is announced once, signed with the
//! Standard Webhooks headers, and to Slack as `{"text": …}`; a dead
//! delivery, a low success rate and a job that needs attention are
//! announced too. Deduplication across instances is the store's
//! `claim_alert` (conformance suite, two stores on one database).

use std::time::Duration;

use serde_json::Value;

use crate::calls::{FAKE_AGENT, fake_twilio};
use crate::deliveries::{
    NOTIFY_AUTOMATION, NOTIFY_TRIGGER, REPO_AUTOMATIONS, WH_SECRET, crm_endpoint, delivery_when,
    notify,
};
use crate::receiver::{Received, Receiver, Reply};
use crate::runner::eventually;
use crate::support::{TestApp, assert_problem, config_problems, demo_body};

/// `[alerts]` with a signed webhook target at `/hook` and a Slack one at
/// `/slack` of `rx`, and `extra` keys.
fn alerts_config(rx: &Receiver, extra: &str) -> String {
    format!(
        "[alerts]\n{extra}\n\
         [[alerts.targets]]\nurl = \"{}\"\npreset = \"webhook\"\nsecret = \"{WH_SECRET}\"\n\
         allow_private = true\nallow_http = true\n\
         [[alerts.targets]]\nurl = \"{}\"\npreset = \"slack\"\nallow_private = true\nallow_http = true\n",
        rx.url("/hook"),
        rx.url("/slack"),
    )
}

fn at<'a>(got: &'a [Received], path: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.path == path).collect()
}

/// The signed alerts of `kind` (each one's signature verified).
fn signed(got: &[Received], kind: &str) -> Vec<Value> {
    let wh = standardwebhooks::Webhook::new(WH_SECRET).unwrap();
    at(got, "/hook")
        .into_iter()
        .filter(|r| {
            wh.verify(&r.body, &r.headers)
                .unwrap_or_else(|e| panic!("the alert's signature does not verify: {e:?}"));
            r.json()["type"] == format!("alert.{kind}")
        })
        .map(Received::json)
        .collect()
}

/// The Slack messages containing `text`, each checked for Slack's shape.
fn slack(got: &[Received], text: &str) -> Vec<String> {
    at(got, "/slack")
        .into_iter()
        .map(|r| {
            assert_eq!(r.headers["content-type"], "application/json");
            assert!(
                r.headers.get("webhook-signature").is_none(),
                "Slack is not signed"
            );
            let body = r.json();
            let fields = body.as_object().unwrap();
            assert_eq!(fields.len(), 1, "only `text`: {body}");
            let line = body["text"].as_str().unwrap().to_owned();
            assert!(!line.contains('\n'), "one line: {line}");
            line
        })
        .filter(|line| line.contains(text))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_breaker_that_opens_and_reopens_is_announced_once_signed_and_to_slack() {
    let crm = Receiver::start().await;
    crm.default_reply(Reply::status(502));
    let alerts = Receiver::start().await;
    let app = TestApp::builder()
        .file(
            "endpoints.toml",
            // Every failure opens it; each retry is a probe that reopens it.
            &crm_endpoint(
                &crm.url("/hooks"),
                "breaker = { failures = 1, cooldown = \"10ms\", max_cooldown = \"10ms\" }",
            ),
        )
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .main(&alerts_config(
            &alerts,
            "success_rate_below = 0.9\nmin_deliveries = 4\ncheck_every = \"100ms\"",
        ))
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", &["deliveries:read", "deliveries:write"])
        .background_runner()
        .start()
        .await;
    let job_id = notify(&app).await;
    let dead = delivery_when(&app, &job_id, "dead").await;
    assert_eq!(dead["attempt_count"], 4, "{dead}");
    assert_eq!(crm.received().len(), 4, "four failures, four openings");

    // Alerts go out in the order raised, each to every target before the
    // next: once the dead delivery's reached Slack, every opening was
    // handled.
    let got = eventually(Duration::from_secs(20), "the dead-delivery alert", || {
        let got = alerts.received();
        async move { (!slack(&got, "is dead after 4 attempts").is_empty()).then_some(got) }
    })
    .await;
    let opened = signed(&got, "breaker_opened");
    assert_eq!(
        opened.len(),
        1,
        "one alert, not one per opening: {opened:?}"
    );
    assert_eq!(opened[0]["data"]["subject"], "crm");
    assert_eq!(opened[0]["data"]["details"]["endpoint"], "crm");
    assert_eq!(opened[0]["data"]["details"]["last_status"], 502);
    let line = &slack(&got, "circuit breaker opened")[..];
    assert_eq!(line.len(), 1, "{line:?}");
    assert!(line[0].starts_with("callgate: endpoint `crm`"), "{line:?}");
    let dead_alert = signed(&got, "delivery_dead");
    assert_eq!(dead_alert.len(), 1);
    assert_eq!(dead_alert[0]["data"]["details"]["delivery_id"], dead["id"]);
    // One message id per alert, the same for every attempt at it.
    let hooks = at(&got, "/hook");
    assert_ne!(
        hooks[0].headers["webhook-id"],
        hooks[1].headers["webhook-id"]
    );

    // 0 of 4 attempts succeeded: below 90%, announced once.
    let got = eventually(Duration::from_secs(20), "the success-rate alert", || {
        let got = alerts.received();
        // Both targets: the signed webhook is sent before the Slack copy.
        async move {
            let both = !signed(&got, "success_rate_low").is_empty()
                && !slack(&got, "0% of 4 delivery attempts").is_empty();
            both.then_some(got)
        }
    })
    .await;
    let low = signed(&got, "success_rate_low");
    assert_eq!(low[0]["data"]["details"]["success_rate"], 0.0);
    assert_eq!(low[0]["data"]["details"]["attempts"], 4);
    assert_eq!(slack(&got, "0% of 4 delivery attempts").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_needs_attention_is_announced() {
    let provider = Receiver::start().await;
    // Slower than the dial's timeout, and no lookup: the call is unknown.
    provider.default_reply(Reply::ok(r#"{"sid":"CA9"}"#).after(Duration::from_secs(3)));
    let alerts = Receiver::start().await;
    let app = TestApp::builder()
        .file("providers.toml", &fake_twilio(&provider, ""))
        .file("agents.toml", FAKE_AGENT)
        .main(&alerts_config(&alerts, ""))
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    let job_id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_pending().await;
    let got = alerts.wait_for(2, Duration::from_secs(20)).await;
    let attention = signed(&got, "job_needs_attention");
    assert_eq!(attention.len(), 1);
    assert_eq!(attention[0]["data"]["subject"], job_id.as_str());
    assert_eq!(
        slack(&got, &format!("job {job_id} needs attention")).len(),
        1
    );
}

/// The shipped `callgate.toml` with `extra` after it.
fn main_with(extra: &str) -> String {
    let shipped =
        std::fs::read_to_string(format!("{}/callgate.toml", crate::support::REPO_CONFIG)).unwrap();
    format!("{shipped}\n{extra}")
}

#[test]
fn bad_alert_settings_and_targets_are_config_problems() {
    let err = config_problems(&[(
        "callgate.toml",
        &main_with(
            "[alerts]\nsuccess_rate_below = 1.5\ndedupe_window = \"0s\"\n\
             [[alerts.targets]]\nurl = \"https://hooks.example.com/x\"\npreset = \"webhook\"\n\
             [[alerts.targets]]\nurl = \"http://10.0.0.1/x\"\npreset = \"slack\"\n\
             [[alerts.targets]]\nurl = \"https://hooks.example.com/y\"\npreset = \"webhook\"\nsecret = \"nope\"\n\
             [[alerts.targets]]\nurl = \"https://hooks.example.com/z\"\npreset = \"slack\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        ),
    )]);
    assert_problem(&err, "alerts.success_rate_below", "at most 1");
    assert_problem(&err, "alerts.dedupe_window", "longer than 0s");
    assert_problem(&err, "alerts.targets[0].secret", "needs");
    assert_problem(&err, "alerts.targets[1].url", "");
    assert_problem(&err, "alerts.targets[2].secret", "whsec_");
    assert_problem(&err, "alerts.targets[3].secret", "not signed");
    let err = config_problems(&[(
        "callgate.toml",
        &main_with(
            "[alerts]\n[[alerts.targets]]\nurl = \"https://hooks.example.com/z\"\npreset = \"teams\"\n",
        ),
    )]);
    assert!(err.to_string().contains("teams"), "{err}");
}
