//! The console in a real headless Chromium (`support::browser`): log in and
//! filter jobs, a job's timeline, cancel a scheduled job (no dial follows),
//! add a do-not-call number (the scheduled job to it is rejected), replay a
//! dead delivery (it succeeds against a real local receiver). Screenshots
//! of every page land in `target/console-screenshots/`.

use std::sync::Arc;
use std::time::Duration;

use callgate::clock::{ManualClock, rfc3339};
use serde_json::json;

use crate::deliveries::{
    NOTIFY_AUTOMATION, NOTIFY_TRIGGER, REPO_AUTOMATIONS, crm_endpoint, delivery_when, notify,
};
use crate::jobs_api::accept;
use crate::receiver::{Receiver, Reply};
use crate::runner::{ANYTIME_AGENT, fast_simulator};
use crate::support::TestApp;
use crate::support::browser::Browser;

const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
const OPS: &[&str] = &[
    "console",
    "jobs:read",
    "jobs:write",
    "dnc:read",
    "dnc:write",
    "deliveries:read",
    "deliveries:write",
    "triggers:run",
];

/// An app on a manual clock with the simulator that answers at once.
async fn app(clock: &Arc<ManualClock>) -> TestApp {
    TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .key("ops", OPS)
        .clock(clock.clone())
        .start()
        .await
}

fn dials(app: &TestApp) -> usize {
    app.dial_log()
        .iter()
        .filter(|e| matches!(e, callgate::calls::simulator::LogEntry::Dial { .. }))
        .count()
}

async fn scheduled(app: &TestApp, phone: &str) -> String {
    let at = rfc3339(T0 + HOUR);
    accept(
        app,
        "zapier",
        "demo-call",
        &json!({"phone_number": phone, "schedule_at": at}),
    )
    .await
}

#[tokio::test]
async fn an_operator_logs_in_and_filters_jobs() {
    let Some(browser) = Browser::start("filter-jobs").await else {
        return;
    };
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let held = scheduled(&app, "+15550121234").await;
    clock.advance_ms(1_000);
    let queued = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121235"}),
    )
    .await;
    browser.login(&app.base, app.key("ops")).await;
    browser.visit(&app.url("/console/jobs"), "jobs").await;
    let table = browser.text("#jobs").await;
    assert!(table.contains(&held) && table.contains(&queued), "{table}");

    browser
        .client
        .find(fantoccini::Locator::Css("#f-status"))
        .await
        .unwrap()
        .select_by_value("scheduled")
        .await
        .unwrap();
    browser
        .click_to("#f-apply", "/console/jobs?status=scheduled")
        .await;
    browser.shot("jobs-scheduled").await;
    let table = browser.text("#jobs").await;
    assert!(table.contains(&held) && !table.contains(&queued), "{table}");

    browser.fill("#f-phone", "+15550121235").await;
    browser
        .client
        .find(fantoccini::Locator::Css("#f-status"))
        .await
        .unwrap()
        .select_by_value("")
        .await
        .unwrap();
    browser.click_to("#f-apply", "/console/jobs?").await;
    let table = browser.text("#jobs").await;
    assert!(!table.contains(&held) && table.contains(&queued), "{table}");

    // On a phone-sized screen too.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.visit(&app.url("/console/jobs"), "jobs-phone").await;
    assert!(browser.text("#jobs").await.contains(&held));
    browser.close().await;
}

#[tokio::test]
async fn an_operator_opens_a_jobs_timeline() {
    let Some(browser) = Browser::start("job-timeline").await else {
        return;
    };
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let job = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234"}),
    )
    .await;
    app.run_pending().await;
    browser.login(&app.base, app.key("ops")).await;
    browser.visit(&app.url("/console/jobs"), "jobs").await;
    browser
        .click_to(
            &format!("a[href='/console/jobs/{job}']"),
            &format!("/console/jobs/{job}"),
        )
        .await;
    browser.shot("job").await;
    let timeline = browser.text("#timeline").await;
    assert!(
        timeline.contains("queued") && timeline.contains("running"),
        "{timeline}"
    );
    let calls = browser.text("#calls").await;
    assert!(calls.contains("call_"), "{calls}");
    // The call's own page.
    browser
        .client
        .find(fantoccini::Locator::Css("#calls a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_path("/console/calls/").await;
    browser.shot("call").await;
    assert!(!browser.text("#call-status").await.is_empty());
    browser.close().await;
}

#[tokio::test]
async fn a_scheduled_job_cancelled_in_the_console_never_dials() {
    let Some(browser) = Browser::start("cancel-job").await else {
        return;
    };
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let job = scheduled(&app, "+15550121234").await;
    browser.login(&app.base, app.key("ops")).await;
    browser
        .visit(&app.url(&format!("/console/jobs/{job}")), "job-scheduled")
        .await;
    assert_eq!(browser.text("#job-status").await, "scheduled");
    browser
        .click_to("#cancel", &format!("/console/jobs/{job}"))
        .await;
    browser.shot("job-cancelled").await;
    assert_eq!(browser.text("#job-status").await, "cancelled");
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css("#cancel"))
            .await
            .is_err(),
        "no button once cancelled"
    );
    browser.close().await;

    clock.advance_ms(2 * HOUR);
    app.run_pending().await;
    assert_eq!(dials(&app), 0, "no call for a cancelled job");
    let stored = app
        .store()
        .job(&callgate::ids::JobId::parse(&job).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status.as_str(), "cancelled");
}

#[tokio::test]
async fn a_number_added_in_the_console_rejects_its_scheduled_job() {
    let Some(browser) = Browser::start("do-not-call").await else {
        return;
    };
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let job = scheduled(&app, "+15550121234").await;
    browser.login(&app.base, app.key("ops")).await;
    browser
        .visit(&app.url("/console/do-not-call"), "dnc-empty")
        .await;
    browser.fill("#dnc-number", "+1 555 012 1234").await;
    browser
        .click_to("#dnc-add", "/console/do-not-call?number=")
        .await;
    browser.shot("dnc-added").await;
    let found = browser.text("#dnc-found").await;
    assert!(
        found.contains("+15550121234") && found.contains("key:ops"),
        "{found}"
    );
    assert!(browser.text("#dnc").await.contains("+15550121234"));

    clock.advance_ms(2 * HOUR);
    app.run_pending().await;
    assert_eq!(dials(&app), 0);
    // The session's idle expiry has passed on the manual clock: log in again.
    browser.login(&app.base, app.key("ops")).await;
    browser
        .visit(&app.url(&format!("/console/jobs/{job}")), "job-rejected")
        .await;
    assert_eq!(browser.text("#job-status").await, "rejected");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_delivery_replayed_in_the_console_succeeds() {
    let Some(browser) = Browser::start("replay-delivery").await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(502));
    let app = TestApp::builder()
        .file(
            "endpoints.toml",
            &crm_endpoint(
                &rx.url("/hooks"),
                "breaker = { failures = 100, cooldown = \"1s\", max_cooldown = \"1s\" }",
            ),
        )
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", OPS)
        .background_runner()
        .start()
        .await;
    let job = notify(&app).await;
    let dead = delivery_when(&app, &job, "dead").await;
    let id = dead["id"].as_str().unwrap().to_owned();

    browser.login(&app.base, app.key("ops")).await;
    browser
        .visit(
            &app.url("/console/deliveries?status=dead"),
            "deliveries-dead",
        )
        .await;
    browser
        .click_to(
            &format!("a[href='/console/deliveries/{id}']"),
            &format!("/console/deliveries/{id}"),
        )
        .await;
    browser.shot("delivery-dead").await;
    assert_eq!(browser.text("#delivery-status").await, "dead");

    rx.default_reply(Reply::ok("{\"ok\": true}"));
    browser
        .click_to("#replay", &format!("/console/deliveries/{id}"))
        .await;
    delivery_when(&app, &job, "succeeded").await;
    rx.wait_for(5, Duration::from_secs(10)).await;
    browser
        .visit(
            &app.url(&format!("/console/deliveries/{id}")),
            "delivery-replayed",
        )
        .await;
    assert_eq!(browser.text("#delivery-status").await, "succeeded");
    assert_eq!(browser.text("#attempt-count").await, "5");
    browser.close().await;
}
