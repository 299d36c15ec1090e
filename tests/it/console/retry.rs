//! The retry button on a job's page over HTTPS, with the real runner and
//! the simulator's dial log: a failed job retried dials again; a job whose
//! last call is unknown shows the confirmation and is a 409 page (the
//! API's message) without it; a read-only session sees no button and its
//! forged POST is 403, as is one without the CSRF token.

use callgate::store::{CallStatus, JobStatus};

use super::Console;
use crate::jobs_api::retry::{dials, ended_job, retry_app};
use crate::runner::get_json;
use crate::support::TestApp;

async fn app() -> TestApp {
    retry_app(
        TestApp::builder()
            .key("operator", &["console", "jobs:read", "jobs:write"])
            .key("viewer", &["console", "jobs:read"]),
    )
    .await
}

#[tokio::test]
async fn a_failed_job_retried_in_the_console_dials_again() {
    let app = app().await;
    let job = ended_job(&app, CallStatus::Failed, JobStatus::Failed).await;
    let c = Console::login(&app, "operator").await;
    let page = c.html(&format!("/console/jobs/{job}")).await;
    assert!(page.contains(r#"id="retry""#), "{page}");
    assert!(
        !page.contains("confirm-no-call"),
        "the last call failed: no doubt"
    );
    let r = c
        .post(&format!("/console/jobs/{job}/retry"), &[("csrf", &c.csrf)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], format!("/console/jobs/{job}"));
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(dials(&app), 1);
    let after = get_json(&app, app.key("ops"), &format!("/v1/jobs/{job}")).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    let page = c.html(&format!("/console/jobs/{job}")).await;
    assert!(
        !page.contains(r#"id="retry""#),
        "a succeeded job has no retry"
    );
}

#[tokio::test]
async fn an_unknown_last_call_needs_the_confirmation_box() {
    let app = app().await;
    let job = ended_job(&app, CallStatus::Unknown, JobStatus::NeedsAttention).await;
    let c = Console::login(&app, "operator").await;
    let page = c.html(&format!("/console/jobs/{job}")).await;
    assert!(page.contains(r#"id="confirm-no-call""#), "{page}");
    let path = format!("/console/jobs/{job}/retry");
    let r = c.post(&path, &[("csrf", &c.csrf)]).await;
    assert_eq!(r.status(), 409);
    let html = r.text().await.unwrap();
    assert!(html.contains("it may have reached the callee"), "{html}");
    assert_eq!(app.run_pending().await, 0);
    assert_eq!(dials(&app), 0, "no dial without the confirmation");
    let r = c
        .post(&path, &[("csrf", &c.csrf), ("confirm_no_call", "true")])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(dials(&app), 1, "confirmed: it dials");
}

#[tokio::test]
async fn a_read_only_or_tokenless_retry_is_403_and_dials_nothing() {
    let app = app().await;
    let job = ended_job(&app, CallStatus::Failed, JobStatus::Failed).await;
    let path = format!("/console/jobs/{job}/retry");
    let viewer = Console::login(&app, "viewer").await;
    let page = viewer.html(&format!("/console/jobs/{job}")).await;
    assert!(!page.contains(r#"id="retry""#), "{page}");
    let r = viewer.post(&path, &[("csrf", &viewer.csrf)]).await;
    assert_eq!(r.status(), 403);
    let operator = Console::login(&app, "operator").await;
    for form in [vec![], vec![("csrf", "wrong")]] {
        assert_eq!(operator.post(&path, &form).await.status(), 403);
    }
    assert_eq!(app.run_pending().await, 0);
    assert_eq!(dials(&app), 0);
    let still = get_json(&app, app.key("ops"), &format!("/v1/jobs/{job}")).await;
    assert_eq!(still["status"], "failed");
}
