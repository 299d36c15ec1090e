//! More of the console in a real headless Chromium: the overview's charts
//! show the triggers just accepted and refused, the endpoints pages after
//! a delivery to a real local receiver, the keys page makes a key that
//! then works against the API, and the retry button retries a failed job.
//! Screenshots land in `target/console-screenshots/`.

use std::time::Duration;

use callgate::clock::{ManualClock, rfc3339};
use callgate::store::{CallStatus, JobStatus};
use fantoccini::Locator;
use serde_json::json;

use crate::deliveries::{
    NOTIFY_AUTOMATION, NOTIFY_TRIGGER, REPO_AUTOMATIONS, crm_endpoint, notify,
};
use crate::jobs_api::retry::{dials, ended_job, retry_app};
use crate::receiver::{Receiver, Reply};
use crate::runner::{ANYTIME_AGENT, fast_simulator};
use crate::support::TestApp;
use crate::support::browser::Browser;

/// Half a minute into a minute: "this minute" is the charts' last bucket.
const NOW: i64 = 1_800_000_000_000 + 30_000;
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_overview_charts_show_the_triggers_just_accepted_and_refused() {
    let Some(browser) = Browser::start("overview").await else {
        return;
    };
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
    for _ in 0..4 {
        let r = app.trigger(app.key("zapier"), "demo-call", &body).await;
        assert_eq!(r.status(), 202);
    }
    let bad = json!({"phone_number": 5});
    assert_eq!(
        app.trigger(app.key("zapier"), "demo-call", &bad)
            .await
            .status(),
        422
    );
    // At least once each: a job woken by its call's events while the loop
    // still runs is claimed again, so the count may be higher.
    let runs = app.run_pending().await;
    assert!(runs >= 4, "the four jobs ran ({runs} runs)");
    browser.login(&app.base, app.key("ops")).await;
    // Refusals reach the store with the next flush: reload until charted.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !browser
        .text("#legend-triggers")
        .await
        .contains("validation-failed")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusal never showed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        browser.client.refresh().await.unwrap();
    }
    browser.shot("overview").await;
    let minute = &rfc3339(NOW)[11..16];
    let mut seen = Vec::new();
    for bar in browser
        .client
        .find_all(Locator::Css("#chart-triggers rect.bar"))
        .await
        .unwrap()
    {
        let series = bar.attr("data-series").await.unwrap().unwrap_or_default();
        let value = bar.attr("data-value").await.unwrap().unwrap_or_default();
        let title = bar
            .find(Locator::Css("title"))
            .await
            .unwrap()
            .html(true)
            .await
            .unwrap();
        assert!(
            title.starts_with(minute),
            "only this minute has data: {title}"
        );
        seen.push((series, value));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("accepted".to_owned(), "4".to_owned()),
            ("refused: validation-failed".to_owned(), "1".to_owned())
        ]
    );
    let calls = browser
        .client
        .find_all(Locator::Css("#chart-calls rect.bar"))
        .await
        .unwrap();
    assert!(!calls.is_empty(), "the four calls are charted");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_endpoints_pages_show_a_delivery_to_a_real_receiver() {
    let Some(browser) = Browser::start("endpoints").await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok("{}"));
    let app = TestApp::builder()
        .file("endpoints.toml", &crm_endpoint(&rx.url("/hooks"), ""))
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key(
            "ops",
            &[
                "console",
                "jobs:read",
                "metrics:read",
                "deliveries:read",
                "keys:read",
            ],
        )
        .background_runner()
        .start()
        .await;
    for _ in 0..3 {
        notify(&app).await;
    }
    rx.wait_for(3, DEADLINE).await;
    browser.login(&app.base, app.key("ops")).await;
    browser
        .visit(&app.url("/console/endpoints"), "endpoints")
        .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !browser.text("#endpoints").await.contains("100.0% of 3") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            browser.text("#endpoints").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        browser.client.refresh().await.unwrap();
    }
    browser.shot("endpoints").await;
    browser
        .click_to("a[href='/console/endpoints/crm']", "/console/endpoints/crm")
        .await;
    browser.shot("endpoint").await;
    assert_eq!(browser.text("#breaker").await, "closed");
    // The overview with a delivery chart, and the pages not shot elsewhere.
    browser
        .visit(&app.url("/console"), "overview-deliveries")
        .await;
    assert!(browser.text("#legend-success").await.contains("crm"));
    for (path, name) in [
        ("/console/triggers", "triggers"),
        ("/console/calls", "calls"),
    ] {
        browser.visit(&app.url(path), name).await;
    }
    browser.close().await;
}

#[tokio::test]
async fn a_key_made_on_the_keys_page_works_against_the_api() {
    let Some(browser) = Browser::start("keys").await else {
        return;
    };
    let app = TestApp::builder()
        .key("zapier", &["triggers:run"])
        .key(
            "admin",
            &["console", "keys:read", "keys:write", "jobs:read"],
        )
        .start()
        .await;
    browser.login(&app.base, app.key("admin")).await;
    browser.visit(&app.url("/console/keys"), "keys").await;
    browser.fill("#key-name", "reporting").await;
    browser
        .client
        .find(Locator::Css("#scope-jobs-read"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css("#key-create"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let key = browser.text("#new-key-value").await;
    browser.shot("key-created").await;
    assert!(key.starts_with("cg_"), "{key}");
    assert_eq!(app.get(&key, "/v1/jobs").await.status(), 200);
    // It holds only what was ticked.
    assert_eq!(app.get(&key, "/v1/keys").await.status(), 403);
    browser.visit(&app.url("/console/keys"), "keys-after").await;
    assert!(browser.text("#key-reporting").await.contains("jobs:read"));
    browser.close().await;
}

#[tokio::test]
async fn the_retry_button_retries_a_failed_job() {
    let Some(browser) = Browser::start("retry-job").await else {
        return;
    };
    let app =
        retry_app(TestApp::builder().key("operator", &["console", "jobs:read", "jobs:write"]))
            .await;
    let job = ended_job(&app, CallStatus::Failed, JobStatus::Failed).await;
    browser.login(&app.base, app.key("operator")).await;
    browser
        .visit(&app.url(&format!("/console/jobs/{job}")), "job-failed")
        .await;
    assert_eq!(browser.text("#job-status").await, "failed");
    browser
        .client
        .find(Locator::Css("#retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // The same URL answers after the POST's redirect: wait for the new
    // page's status (an element of the old page may go stale meanwhile).
    loop {
        let status = match browser.client.find(Locator::Css("#job-status")).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if status == "queued" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was not requeued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.shot("job-retried").await;
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(dials(&app), 1, "the retry dials");
    browser.client.refresh().await.unwrap();
    assert_eq!(browser.text("#job-status").await, "succeeded");
    browser.close().await;
}
