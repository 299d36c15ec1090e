//! `POST /v1/jobs/{job_id}/cancel`.

use callgate::clock::{ManualClock, rfc3339};
use serde_json::{Value, json};

use super::{T0, accept, ids};
use crate::runner::{ANYTIME_AGENT, fast_simulator, get_json};
use crate::support::{TestApp, forbidden, problem};

async fn cancel(app: &TestApp, key: &str, job: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/jobs/{job}/cancel")))
        .bearer_auth(app.key(key))
        .send()
        .await
        .unwrap()
}

fn dials(app: &TestApp) -> usize {
    app.dial_log()
        .iter()
        .filter(|e| matches!(e, callgate::calls::simulator::LogEntry::Dial { .. }))
        .count()
}

async fn cancel_app(clock: &std::sync::Arc<ManualClock>, simulator: &str) -> TestApp {
    TestApp::builder()
        .file("providers.toml", simulator)
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .key("ops", &["jobs:read", "jobs:write"])
        .key("reader", &["jobs:read"])
        .clock(clock.clone())
        .start()
        .await
}

#[tokio::test]
async fn a_cancelled_scheduled_job_never_dials_once_its_time_comes() {
    let clock = ManualClock::new(T0);
    let app = cancel_app(&clock, &fast_simulator("")).await;
    let at = rfc3339(T0 + 3_600_000);
    let held = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234", "schedule_at": at}),
    )
    .await;
    // Ids sort by creation time; one millisecond apart at least, the
    // listing's order below is theirs.
    clock.advance_ms(1_000);
    let queued = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121235"}),
    )
    .await;

    for job in [&held, &queued] {
        let r = cancel(&app, "ops", job).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["job_id"], job.as_str());
        assert_eq!(body["status"], "cancelled");
        assert_eq!(body["status_reason"], "cancelled by key:ops");
        assert_eq!(body["next_run_at"], Value::Null);
        assert_eq!(body["live_calls"], json!([]));
    }
    clock.advance_ms(2 * 3_600_000);
    assert_eq!(app.run_pending().await, 0, "nothing to claim");
    assert_eq!(dials(&app), 0, "no dial after the answer");
    let job = get_json(&app, app.key("zapier"), &format!("/v1/jobs/{held}")).await;
    assert_eq!(job["status"], "cancelled");
    let last = job["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["status"], &last["reason"]),
        (&json!("cancelled"), &json!("cancelled by key:ops"))
    );
    let listed = get_json(&app, app.key("ops"), "/v1/jobs?status=cancelled").await;
    assert_eq!(ids(&listed), vec![queued.clone(), held.clone()]);

    // A job the runner ran is final: a 409 naming its status.
    let ran = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121236"}),
    )
    .await;
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(dials(&app), 1);
    let body = problem(cancel(&app, "ops", &ran).await, 409).await;
    assert_eq!(body["type"], "urn:callgate:problem:conflict");
    assert!(
        body["detail"].as_str().unwrap().contains("is succeeded"),
        "{body}"
    );
    let body = problem(cancel(&app, "ops", &held).await, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("is cancelled"),
        "{body}"
    );
}

#[tokio::test]
async fn a_job_a_worker_holds_is_busy_with_retry_after() {
    let clock = ManualClock::new(T0);
    let app = cancel_app(&clock, &fast_simulator("")).await;
    let job = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234"}),
    )
    .await;
    // The runner's own claim, as a worker holds it mid-step.
    let claimed = app
        .store()
        .claim_jobs("busy-worker", T0, T0 + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let r = cancel(&app, "ops", &job).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let body = problem(r, 409).await;
    assert_eq!(body["type"], "urn:callgate:problem:job-busy");
    assert!(
        body["detail"].as_str().unwrap().contains("running"),
        "{body}"
    );
    let stored = app.store().job(&claimed[0].id).await.unwrap().unwrap();
    assert_eq!(
        stored.status.as_str(),
        "running",
        "the busy answer changed nothing"
    );
}

#[tokio::test]
async fn a_job_waiting_on_a_live_call_is_cancelled_and_the_call_goes_on() {
    // Calls ring for a minute: the automation's first call stays live.
    let slow = fast_simulator("").replace("ring_time = \"10ms\"", "ring_time = \"60s\"");
    let clock = ManualClock::new(T0);
    let app = cancel_app(&clock, &slow).await;
    let job = accept(
        &app,
        "zapier",
        "demo-automation",
        &json!({"phone_number": "+15550121234"}),
    )
    .await;
    assert_eq!(app.run_pending().await, 1);
    let before = get_json(&app, app.key("ops"), &format!("/v1/jobs/{job}")).await;
    assert_eq!(before["status"], "waiting", "{before}");
    let call = before["calls"][0]["call_id"].clone();
    let r = cancel(&app, "ops", &job).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["live_calls"], json!([call]), "{body}");
    // Woken and past its wait, the job runs no further step.
    clock.advance_ms(3_600_000);
    assert_eq!(app.run_pending().await, 0);
    assert_eq!(dials(&app), 1);
}

#[tokio::test]
async fn cancelling_needs_jobs_write_before_anything_else() {
    let clock = ManualClock::new(T0);
    let app = cancel_app(&clock, &fast_simulator("")).await;
    let job = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234"}),
    )
    .await;
    // Neither the creator nor a reader may cancel; an unknown id tells
    // them nothing more.
    for key in ["zapier", "reader"] {
        for id in [job.as_str(), "job_01M8D4F4J5D0XTTTQXYCB8EWAS", "nope"] {
            forbidden(cancel(&app, key, id).await, "jobs:write").await;
        }
    }
    let r = app
        .client
        .post(app.url(&format!("/v1/jobs/{job}/cancel")))
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    for id in ["job_01M8D4F4J5D0XTTTQXYCB8EWAS", "nope", "job_"] {
        let body = problem(cancel(&app, "ops", id).await, 404).await;
        assert_eq!(body["type"], "urn:callgate:problem:not-found");
    }
    let still = get_json(&app, app.key("zapier"), &format!("/v1/jobs/{job}")).await;
    assert_eq!(still["status"], "queued");
}
