//! Calling windows end to end over HTTPS with the manual clock: a job
//! outside the callee's window is scheduled for its next opening, in the
//! explicit zone, the area code's zones, or the country's.

use std::sync::Arc;

use callgate::calls::simulator::LogEntry;
use callgate::clock::{ManualClock, rfc3339};
use chrono::{TimeZone, Utc};
use serde_json::json;

use crate::runner::{accept, fast_simulator, get_json};
use crate::support::TestApp;

/// The demo agent with the default window (08:00–21:00 every day).
const DAY_AGENT: &str = "[agents.demo-agent]\nname = \"Day\"\nprovider = \"simulator\"\n\
    from_number = \"+15550009999\"\nmax_concurrent_calls = 3\n";

async fn app_at(clock: &Arc<ManualClock>) -> TestApp {
    TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", DAY_AGENT)
        .key("zapier", &["triggers:run"])
        .clock(clock.clone())
        .start()
        .await
}

#[tokio::test]
async fn a_new_york_area_code_is_called_at_eight_new_york_not_eight_honolulu() {
    // 12:30 UTC on a winter Thursday: 07:30 in New York, 02:30 in Honolulu.
    let at = |h, m| {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, 0)
            .unwrap()
            .timestamp_millis()
    };
    let clock = ManualClock::new(at(12, 30));
    let app = app_at(&clock).await;
    let key = app.key("zapier").to_owned();
    let new_york = accept(&app, "demo-call", &json!({"phone_number": "+12125550143"})).await;
    let honolulu = accept(&app, "demo-call", &json!({"phone_number": "+18085550143"})).await;
    app.run_pending().await;
    let job = get_json(&app, &key, &format!("/v1/jobs/{new_york}")).await;
    assert_eq!(job["status"], "scheduled", "{job}");
    assert_eq!(job["status_reason"], "outside the calling window");
    assert_eq!(job["next_run_at"], rfc3339(at(13, 0)), "08:00 New York");
    let job = get_json(&app, &key, &format!("/v1/jobs/{honolulu}")).await;
    assert_eq!(job["next_run_at"], rfc3339(at(18, 0)), "08:00 Honolulu");

    clock.advance_ms(30 * 60 * 1000); // 13:00 UTC
    app.run_pending().await;
    let job = get_json(&app, &key, &format!("/v1/jobs/{new_york}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let job = get_json(&app, &key, &format!("/v1/jobs/{honolulu}")).await;
    assert_eq!(job["status"], "scheduled", "{job}");
    let dialed: Vec<String> = app
        .dial_log()
        .into_iter()
        .filter_map(|e| match e {
            LogEntry::Dial { to, .. } => Some(to),
            LogEntry::End { .. } => None,
        })
        .collect();
    assert_eq!(dialed, ["+12125550143"], "only New York was dialed");
}

#[tokio::test]
async fn outside_the_calling_window_a_job_is_scheduled_for_the_next_opening() {
    let ny = chrono_tz::America::New_York;
    let three_am = ny
        .with_ymd_and_hms(2026, 11, 26, 3, 0, 0)
        .unwrap()
        .timestamp_millis();
    let clock = ManualClock::new(three_am);
    let app = app_at(&clock).await;
    let key = app.key("zapier").to_owned();
    let explicit = accept(
        &app,
        "demo-call",
        &json!({"phone_number": "+15550121234", "timezone": "America/New_York"}),
    )
    .await;
    // 555 is no area code: the number's zones are every US zone.
    let derived = accept(&app, "demo-call", &json!({"phone_number": "+15550123456"})).await;
    app.run_pending().await;
    let job = get_json(&app, &key, &format!("/v1/jobs/{explicit}")).await;
    assert_eq!(job["status"], "scheduled", "{job}");
    assert_eq!(job["status_reason"], "outside the calling window");
    let eight = ny.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap();
    assert_eq!(job["next_run_at"], rfc3339(eight.timestamp_millis()));
    // No time zone given: every US zone must be open, so 13:00 in New York.
    let job = get_json(&app, &key, &format!("/v1/jobs/{derived}")).await;
    let one_pm = ny.with_ymd_and_hms(2026, 11, 26, 13, 0, 0).unwrap();
    assert_eq!(job["next_run_at"], rfc3339(one_pm.timestamp_millis()));
    assert!(app.dial_log().is_empty(), "nothing was dialed at night");

    clock.advance_ms(5 * 3600 * 1000); // 08:00 in New York
    app.run_pending().await;
    assert_eq!(
        get_json(&app, &key, &format!("/v1/jobs/{explicit}")).await["status"],
        "succeeded"
    );
    assert_eq!(
        get_json(&app, &key, &format!("/v1/jobs/{derived}")).await["status"],
        "scheduled"
    );
    clock.advance_ms(5 * 3600 * 1000); // 13:00
    app.run_pending().await;
    assert_eq!(
        get_json(&app, &key, &format!("/v1/jobs/{derived}")).await["status"],
        "succeeded"
    );
}
