//! The overview at `/console` over HTTPS: the charts show this minute's
//! accepted and refused triggers (in the SVG's titles and the legend
//! tables), a key without `metrics:read` sees a note instead of charts,
//! and jobs needing attention are counted and linked to the filtered list.

use std::time::Duration;

use callgate::clock::{ManualClock, rfc3339};
use callgate::store::{CallStatus, JobStatus};
use serde_json::json;

use super::Console;
use crate::jobs_api::retry::{ended_job, retry_app};
use crate::runner::{ANYTIME_AGENT, eventually, fast_simulator};
use crate::support::TestApp;

/// Half a minute into a minute, so that "this minute" is the chart's last
/// bucket whatever the test's speed.
const NOW: i64 = 1_800_000_000_000 + 30_000;

#[tokio::test]
async fn the_charts_show_this_minutes_accepted_and_refused_triggers() {
    let app = TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .key(
            "ops",
            &["console", "jobs:read", "metrics:read", "deliveries:read"],
        )
        .clock(ManualClock::new(NOW))
        .start()
        .await;
    let body = json!({"phone_number": "+15550121234"});
    for _ in 0..3 {
        let r = app.trigger(app.key("zapier"), "demo-call", &body).await;
        assert_eq!(r.status(), 202);
    }
    let r = app
        .trigger(app.key("zapier"), "demo-call", &json!({"phone_number": 5}))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(app.run_pending().await, 3);
    let console = Console::login(&app, "ops").await;
    let minute = &rfc3339(NOW)[11..16];
    // Refusals reach the store with the next flush (every few seconds).
    let html = eventually(Duration::from_secs(20), "the refusal charted", || async {
        let html = console.html("/console").await;
        html.contains("refused: validation-failed").then_some(html)
    })
    .await;
    assert!(html.contains(r#"<svg id="chart-triggers""#), "{html}");
    assert!(
        html.contains(&format!("<title>{minute} accepted: 3</title>")),
        "{html}"
    );
    assert!(html.contains(&format!(
        "<title>{minute} refused: validation-failed: 1</title>"
    )));
    assert!(html.contains(r#"<svg id="chart-calls""#));
    assert!(html.contains(r#"<table class="legend" id="legend-triggers">"#));
    // The legend has the numbers too, as whole numbers.
    assert!(html.contains("<td>3</td><td>3</td>"), "{html}");
    // The CSP forbids inline styles: the charts use none.
    assert!(!html.contains("style="), "no inline style");
    assert!(html.contains("Every breaker is closed."));
}

#[tokio::test]
async fn without_metrics_read_the_charts_give_way_to_a_note() {
    let app = TestApp::builder()
        .key("ops", &["console", "jobs:read"])
        .start()
        .await;
    let console = Console::login(&app, "ops").await;
    let html = console.html("/console").await;
    assert!(html.contains(r#"id="charts-hidden""#), "{html}");
    assert!(!html.contains("<svg id=\"chart-"));
    assert!(!html.contains(r#"id="breakers""#), "needs deliveries:read");
}

#[tokio::test]
async fn jobs_needing_attention_are_counted_and_linked() {
    let app = retry_app(TestApp::builder().key("console", &["console", "jobs:read"])).await;
    let job = ended_job(&app, CallStatus::Unknown, JobStatus::NeedsAttention).await;
    ended_job(&app, CallStatus::Failed, JobStatus::Failed).await;
    let console = Console::login(&app, "console").await;
    let html = console.html("/console").await;
    assert!(
        html.contains(r#"href="/console/jobs?status=needs_attention""#),
        "{html}"
    );
    assert!(html.contains("1 job needs attention"), "{html}");
    assert!(html.contains(&format!("/console/jobs/{job}")));
}
