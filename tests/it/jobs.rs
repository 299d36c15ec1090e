//! `GET /v1/jobs/{id}`: owners read their jobs; others need `jobs:read`.

use serde_json::Value;

use crate::support::{TestApp, demo_body, problem};

#[tokio::test]
async fn a_principal_reads_its_own_jobs_and_needs_jobs_read_for_others() {
    let app = TestApp::builder()
        .key("owner", &["triggers:run"])
        .key("stranger", &["triggers:run"])
        .key("auditor", &["jobs:read"])
        .start()
        .await;
    let accepted: Value = app
        .trigger(app.key("owner"), "demo-call", &demo_body())
        .await
        .json()
        .await
        .unwrap();
    let path = accepted["links"]["self"].as_str().unwrap();

    let own: Value = app.get(app.key("owner"), path).await.json().await.unwrap();
    assert_eq!(own["job_id"], accepted["job_id"]);
    assert_eq!(own["links"]["self"], path);
    assert!(own["request_id"].as_str().unwrap().starts_with("req_"));

    let body = problem(app.get(app.key("stranger"), path).await, 403).await;
    assert!(body["detail"].as_str().unwrap().contains("jobs:read"));
    assert_eq!(app.get(app.key("auditor"), path).await.status(), 200);
    problem(app.client.get(app.url(path)).send().await.unwrap(), 401).await;
}

#[tokio::test]
async fn unknown_and_malformed_job_ids_get_404() {
    let app = TestApp::start().await;
    for id in [
        "job_01JDEXAMPLE000000000000000",
        "job_nope",
        "nope",
        "job_01M8D45RWS5DP9XYG8YHW9H4TR",
    ] {
        let body = problem(
            app.get(app.key("zapier"), &format!("/v1/jobs/{id}")).await,
            404,
        )
        .await;
        assert_eq!(body["type"], "urn:callgate:problem:not-found");
    }
}
