//! Campaign dedupe (`dedupe = { key, window }` on a trigger): one job per
//! key within the window, over HTTPS, across a SIGKILL and across two
//! instances on one PostgreSQL database; bad rules fail `callgate check`.

use std::time::Duration;

use callgate::clock::ManualClock;
use serde_json::{Value, json};

use crate::durability::{Gateway, config_dir};
use crate::support::{TestApp, assert_problem, config_problems, problem};

/// A trigger like `demo-call`, deduplicated by number and campaign.
fn campaign(on_duplicate: &str) -> String {
    format!(
        "[triggers.campaign]\nschema = \"schemas/demo-call.json\"\n\
         action = {{ type = \"start_call\", agent = \"demo-agent\", to = \"/phone_number\" }}\n\
         dedupe = {{ key = \"{{{{ phone_number }}}}:{{{{ variables.campaign }}}}\", \
         window = \"24h\"{on_duplicate} }}\n"
    )
}

fn body(phone: &str, campaign: &str) -> Value {
    json!({"phone_number": phone, "variables": {"campaign": campaign}})
}

async fn app(on_duplicate: &str, clock: Option<std::sync::Arc<ManualClock>>) -> TestApp {
    let mut b = TestApp::builder()
        .key("zapier", &["triggers:run"])
        .triggers(&campaign(on_duplicate));
    if let Some(clock) = clock {
        b = b.clock(clock);
    }
    b.start().await
}

#[tokio::test]
async fn the_same_key_twice_makes_one_job_and_the_second_answer_names_it() {
    let app = app("", None).await;
    let key = app.key("zapier").to_owned();
    let first = app
        .trigger(&key, "campaign", &body("+1 555 012 1234", "spring"))
        .await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("deduplicated").is_none());
    let first: Value = first.json().await.unwrap();
    // The same number written another way normalises to the same key.
    let again = app
        .trigger(&key, "campaign", &body("+15550121234", "spring"))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["deduplicated"], "true");
    let location = format!("/v1/jobs/{}", first["job_id"].as_str().unwrap());
    assert_eq!(again.headers()["location"], location.as_str());
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(app.jobs_on_disk().await, 1);
    // Another campaign to the same number is another job.
    let other = app
        .trigger(&key, "campaign", &body("+15550121234", "autumn"))
        .await;
    assert_eq!(other.status(), 202);
    assert_eq!(app.jobs_on_disk().await, 2);
    // ?mode=test never claims: a fresh key tested, then sent, is a job.
    let tested = app
        .client
        .post(app.url("/v1/triggers/campaign?mode=test"))
        .bearer_auth(&key)
        .json(&body("+15550129999", "spring"))
        .send()
        .await
        .unwrap();
    assert_eq!(tested.status(), 200);
    let sent = app
        .trigger(&key, "campaign", &body("+15550129999", "spring"))
        .await;
    assert_eq!(sent.status(), 202);
    // Triggers without a rule are untouched.
    for _ in 0..2 {
        let r = app
            .trigger(&key, "demo-call", &body("+15550121234", "spring"))
            .await;
        assert_eq!(r.status(), 202);
    }
    assert_eq!(app.jobs_on_disk().await, 5);
}

#[tokio::test]
async fn an_input_the_key_cannot_be_made_from_is_422() {
    let app = app("", None).await;
    let key = app.key("zapier").to_owned();
    let r = app
        .trigger(&key, "campaign", &json!({"phone_number": "+15550121234"}))
        .await;
    let p = problem(r, 422).await;
    assert_eq!(p["type"], "urn:callgate:problem:validation-failed");
    assert_eq!(app.jobs_on_disk().await, 0);
}

#[tokio::test]
async fn after_the_window_the_same_key_makes_a_new_job() {
    let clock = ManualClock::new(1_800_000_000_000);
    let app = app("", Some(clock.clone())).await;
    let key = app.key("zapier").to_owned();
    let b = body("+15550121234", "spring");
    assert_eq!(app.trigger(&key, "campaign", &b).await.status(), 202);
    clock.advance_ms(Duration::from_secs(23 * 3600).as_millis() as i64);
    assert_eq!(app.trigger(&key, "campaign", &b).await.status(), 200);
    clock.advance_ms(Duration::from_secs(3600).as_millis() as i64);
    let r = app.trigger(&key, "campaign", &b).await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.jobs_on_disk().await, 2);
    // The new job now holds the key.
    assert_eq!(app.trigger(&key, "campaign", &b).await.status(), 200);
    assert_eq!(app.jobs_on_disk().await, 2);
}

#[tokio::test]
async fn conflict_mode_answers_409_duplicate_naming_the_job() {
    let app = app(", on_duplicate = \"conflict\"", None).await;
    let key = app.key("zapier").to_owned();
    let b = body("+15550121234", "spring");
    let first: Value = app
        .trigger(&key, "campaign", &b)
        .await
        .json()
        .await
        .unwrap();
    let p = problem(app.trigger(&key, "campaign", &b).await, 409).await;
    assert_eq!(p["type"], "urn:callgate:problem:duplicate");
    let job = first["job_id"].as_str().unwrap();
    assert!(p["detail"].as_str().unwrap().contains(job), "{p}");
    assert_eq!(app.jobs_on_disk().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_make_one_job() {
    let app = app("", None).await;
    let key = app.key("zapier").to_owned();
    let b = body("+15550121234", "burst");
    let sends = (0..12).map(|_| app.trigger(&key, "campaign", &b));
    let mut ids = std::collections::HashSet::new();
    for r in futures_util::future::join_all(sends).await {
        assert!(matches!(r.status().as_u16(), 200 | 202), "{}", r.status());
        let v: Value = r.json().await.unwrap();
        ids.insert(v["job_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.jobs_on_disk().await, 1);
}

#[tokio::test]
async fn a_key_survives_sigkill_and_restart() {
    let (config, key) = config_dir();
    let triggers = config.path().join("triggers.toml");
    let mut t = std::fs::read_to_string(&triggers).unwrap();
    t.push_str(&campaign(""));
    std::fs::write(&triggers, t).unwrap();
    let data = tempfile::tempdir().unwrap();
    let b = body("+15550121234", "spring");
    let send = |gw: &Gateway| {
        let (client, url, key, b) = (
            gw.client(data.path()),
            gw.url("/v1/triggers/campaign"),
            key.clone(),
            b.clone(),
        );
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&b)
                .send()
                .await
                .unwrap()
        }
    };
    let mut gw = Gateway::start(config.path(), data.path());
    let first = send(&gw).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    let gw2 = Gateway::start(config.path(), data.path());
    let again = send(&gw2).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["deduplicated"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["job_id"], first["job_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_two_instances_make_one_job_per_key() {
    let url = crate::pg_url_or_skip!("on_postgres_two_instances_make_one_job_per_key");
    let a = TestApp::builder()
        .postgres(&url)
        .triggers(&campaign(""))
        .start()
        .await;
    let shared = a.pg.as_ref().unwrap().url.clone();
    let b = TestApp::builder()
        .storage_url(&shared)
        .triggers(&campaign(""))
        .start()
        .await;
    let jwt = crate::support::hs256(&crate::support::claims("triggers:run"));
    let sent = body("+15550121234", "shared");
    let sends = (0..16).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.trigger(&jwt, "campaign", &sent)
    });
    let mut ids = std::collections::HashSet::new();
    for r in futures_util::future::join_all(sends).await {
        assert!(matches!(r.status().as_u16(), 200 | 202), "{}", r.status());
        let v: Value = r.json().await.unwrap();
        ids.insert(v["job_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(a.jobs_on_disk().await, 1);
}

#[test]
fn check_names_a_bad_key_template_and_a_window_out_of_range() {
    let bad = |dedupe: &str| {
        let triggers = format!(
            "[triggers.campaign]\nschema = \"schemas/demo-call.json\"\n\
             action = {{ type = \"start_call\", agent = \"demo-agent\", to = \"/phone_number\" }}\n\
             dedupe = {dedupe}\n"
        );
        config_problems(&[("triggers.toml", &triggers)])
    };
    let err = bad("{ key = \"{{ phone_number\", window = \"24h\" }");
    assert_problem(&err, "triggers.campaign.dedupe.key", "template");
    let err = bad("{ key = \"{{ phone_number }}\", window = \"30s\" }");
    assert_problem(
        &err,
        "triggers.campaign.dedupe.window",
        "between 1m and 30d",
    );
    let err = bad("{ key = \"{{ phone_number }}\", window = \"31d\" }");
    assert_problem(
        &err,
        "triggers.campaign.dedupe.window",
        "between 1m and 30d",
    );
    let err = bad("{ key = \"x\", window = \"1h\", on_duplicate = \"drop\" }");
    assert_problem(&err, "triggers.campaign.dedupe.on_duplicate", "`drop`");
}
