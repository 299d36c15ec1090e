//! `GET /metrics`: Prometheus text behind `metrics:read`, with the series
//! the operators' dashboards need.

use crate::support::{TestApp, demo_body, problem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_their_scope_and_count_requests_jobs_and_limits() {
    let app = TestApp::builder()
        .key("zapier", &["triggers:run"])
        .key("prom", &["metrics:read"])
        .key_with_limit(
            "tiny",
            &["triggers:run"],
            "{ requests = 1, per = \"1h\", burst = 1 }",
        )
        .start()
        .await;
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    for _ in 0..2 {
        app.trigger(app.key("tiny"), "demo-call", &demo_body())
            .await;
    }

    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    problem(r, 401).await;
    problem(app.get(app.key("zapier"), "/metrics").await, 403).await;

    let r = app.get(app.key("prom"), "/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for needle in [
        "callgate_http_requests_total{route=\"/v1/triggers/{trigger_id}\",method=\"POST\",status=\"202\"}",
        "callgate_http_request_duration_seconds_bucket{route=\"/v1/triggers/{trigger_id}\",method=\"POST\",le=\"0.005\"}",
        "callgate_rate_limited_total{policy=\"principal\"}",
        "callgate_jobs{status=\"queued\"}",
        "callgate_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"403\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    // Raw paths (with ids) never become labels.
    assert!(!text.contains("job_0"), "{text}");
}
