//! `POST /v1/jobs/{job_id}/retry`: a fresh attempt for a failed job, with
//! the real runner and the simulator's dial log; a job whose last call may
//! have reached the callee only with `confirm_no_call=true`.

use callgate::clock::ManualClock;
use callgate::ids::JobId;
use callgate::store::{CallStatus, JobStatus, JobUpdate, NewCall, Reservation};
use serde_json::{Value, json};

use super::{T0, accept};
use crate::runner::{ANYTIME_AGENT, fast_simulator, get_json};
use crate::support::{Builder, TestApp, forbidden, problem};

async fn retry(app: &TestApp, key: &str, job: &str, query: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/jobs/{job}/retry{query}")))
        .bearer_auth(app.key(key))
        .send()
        .await
        .unwrap()
}

pub fn dials(app: &TestApp) -> usize {
    app.dial_log()
        .iter()
        .filter(|e| matches!(e, callgate::calls::simulator::LogEntry::Dial { .. }))
        .count()
}

pub async fn retry_app(builder: Builder) -> TestApp {
    builder
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .key("ops", &["jobs:read", "jobs:write"])
        .key("reader", &["jobs:read"])
        .clock(ManualClock::new(T0))
        .start()
        .await
}

/// Accepts a job and ends it as the runner does when its dial ends in
/// `call`: the step's call recorded, then the job left in `status`.
pub async fn ended_job(app: &TestApp, call: CallStatus, status: JobStatus) -> String {
    let job = accept(
        app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234"}),
    )
    .await;
    let store = app.store();
    let claims = store.claim_jobs("w", T0, T0 + 60_000, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    let id = JobId::parse(&job).unwrap();
    let new_call = NewCall {
        id: callgate::ids::CallId::new(T0),
        job_id: id.clone(),
        step: 0,
        agent_id: "demo-agent".into(),
        to: "+15550121234".into(),
        from: "+15550009999".into(),
        provider: "simulator".into(),
        variables: json!({}),
        origin: json!({"trigger": true, "depth": 0}),
        now_ms: T0,
    };
    let Reservation::Created(call_id) = store.reserve_call(new_call, 3).await.unwrap() else {
        panic!("a fresh step reserves a new call");
    };
    store
        .set_call_status(&call_id, call, Some("the dial went wrong".into()), T0)
        .await
        .unwrap();
    let update = JobUpdate {
        status,
        reason: Some("the dial went wrong".into()),
        run_at_ms: T0,
        state: Some(json!({"step": 0, "calls": {}, "steps": []})),
        result: None,
        error: Some(json!({"message": "the dial went wrong"})),
        attempts: 3,
        detail: None,
        line_wait: None,
    };
    assert!(
        store
            .finish_claim(&id, &claims[0].claim_id, update, T0)
            .await
            .unwrap()
    );
    job
}

#[tokio::test]
async fn a_failed_job_retried_dials_again_with_a_call_of_its_own() {
    a_failed_job_is_retried(TestApp::builder()).await;
}

#[tokio::test]
async fn on_postgres_a_failed_job_retried_dials_again_with_a_call_of_its_own() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_a_failed_job_retried_dials_again_with_a_call_of_its_own"
    );
    a_failed_job_is_retried(TestApp::builder().postgres(&url)).await;
}

async fn a_failed_job_is_retried(builder: Builder) {
    let app = retry_app(builder).await;
    let job = ended_job(&app, CallStatus::Failed, JobStatus::Failed).await;
    assert_eq!(app.run_pending().await, 0, "a failed job is not run again");
    let r = retry(&app, "ops", &job, "").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");
    assert_eq!(body["status_reason"], "retried by key:ops");
    assert_eq!(body["attempts"], 0);
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(dials(&app), 1, "the retry dialed");
    let after = get_json(&app, app.key("ops"), &format!("/v1/jobs/{job}")).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    let calls = after["calls"].as_array().unwrap();
    assert_eq!(
        calls.len(),
        2,
        "the old call stays, the new one is its own: {after}"
    );
    let rounds: Vec<(Value, Value, Value)> = calls
        .iter()
        .map(|c| (c["step"].clone(), c["round"].clone(), c["status"].clone()))
        .collect();
    assert!(
        rounds.contains(&(json!(0), json!(0), json!("failed"))),
        "{rounds:?}"
    );
    assert!(
        rounds
            .iter()
            .any(|(s, r, _)| (s, r) == (&json!(0), &json!(1))),
        "{rounds:?}"
    );
    let retried = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "retried by key:ops")
        .cloned()
        .unwrap_or_else(|| panic!("a retried event: {after}"));
    assert_eq!(retried["status"], "queued");
    assert_eq!(retried["detail"]["event"], "retried");
    assert_eq!(retried["detail"]["by"], "key:ops");
    // Succeeded now: nothing more to retry.
    let body = problem(retry(&app, "ops", &job, "").await, 409).await;
    assert_eq!(body["type"], "urn:callgate:problem:conflict");
    assert!(
        body["detail"].as_str().unwrap().contains("is succeeded"),
        "{body}"
    );
}

#[tokio::test]
async fn a_job_whose_last_call_is_unknown_is_retried_only_when_confirmed() {
    unknown_call_needs_confirmation(TestApp::builder()).await;
}

#[tokio::test]
async fn on_postgres_a_job_whose_last_call_is_unknown_is_retried_only_when_confirmed() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_a_job_whose_last_call_is_unknown_is_retried_only_when_confirmed"
    );
    unknown_call_needs_confirmation(TestApp::builder().postgres(&url)).await;
}

async fn unknown_call_needs_confirmation(builder: Builder) {
    let app = retry_app(builder).await;
    let job = ended_job(&app, CallStatus::Unknown, JobStatus::NeedsAttention).await;
    for query in ["", "?confirm_no_call=false"] {
        let body = problem(retry(&app, "ops", &job, query).await, 409).await;
        assert_eq!(body["type"], "urn:callgate:problem:confirm-required");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("confirm_no_call=true"),
            "{body}"
        );
    }
    assert_eq!(app.run_pending().await, 0);
    assert_eq!(dials(&app), 0, "no dial without the confirmation");
    let still = get_json(&app, app.key("ops"), &format!("/v1/jobs/{job}")).await;
    assert_eq!(still["status"], "needs_attention");

    let r = retry(&app, "ops", &job, "?confirm_no_call=true").await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(dials(&app), 1, "confirmed: it dials");
    let after = get_json(&app, app.key("ops"), &format!("/v1/jobs/{job}")).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    let event = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "retried by key:ops")
        .cloned()
        .unwrap();
    assert_eq!(event["detail"]["confirm_no_call"], true);
}

#[tokio::test]
async fn of_two_concurrent_retries_exactly_one_wins() {
    let app = retry_app(TestApp::builder()).await;
    let job = ended_job(&app, CallStatus::Failed, JobStatus::Failed).await;
    let (a, b) = tokio::join!(retry(&app, "ops", &job, ""), retry(&app, "ops", &job, ""));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let loser = if a.status() == 409 { a } else { b };
    let body = problem(loser, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("is queued"),
        "{body}"
    );
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(dials(&app), 1, "one retry, one dial");
}

#[tokio::test]
async fn retrying_needs_jobs_write_a_known_job_and_a_retryable_status() {
    let app = retry_app(TestApp::builder()).await;
    let job = ended_job(&app, CallStatus::Failed, JobStatus::Failed).await;
    for key in ["zapier", "reader"] {
        for id in [job.as_str(), "job_01M8D4F4J5D0XTTTQXYCB8EWAS", "nope"] {
            forbidden(retry(&app, key, id, "").await, "jobs:write").await;
        }
    }
    let r = app
        .client
        .post(app.url(&format!("/v1/jobs/{job}/retry")))
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    for id in ["job_01M8D4F4J5D0XTTTQXYCB8EWAS", "nope"] {
        let body = problem(retry(&app, "ops", id, "").await, 404).await;
        assert_eq!(body["type"], "urn:callgate:problem:not-found");
    }
    for query in ["?confirm_no_call=yes", "?confirm=true"] {
        let body = problem(retry(&app, "ops", &job, query).await, 400).await;
        assert_eq!(body["type"], "urn:callgate:problem:malformed-request");
    }
    let queued = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121235"}),
    )
    .await;
    let body = problem(retry(&app, "ops", &queued, "").await, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("is queued"),
        "{body}"
    );
    assert_eq!(app.run_pending().await, 1, "only the queued job ran");
    assert_eq!(dials(&app), 1);
    let still = get_json(&app, app.key("ops"), &format!("/v1/jobs/{job}")).await;
    assert_eq!(still["status"], "failed");
}
