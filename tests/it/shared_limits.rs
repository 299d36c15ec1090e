//! Limits that hold across instances through the store: a provider's dial
//! rate (fail closed when the store cannot decide), and an outbound
//! endpoint's circuit breaker and concurrency cap, with two servers on one
//! PostgreSQL schema.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deliveries::{NOTIFY_AUTOMATION, NOTIFY_TRIGGER, REPO_AUTOMATIONS, crm_endpoint};
use crate::receiver::{Receiver, Reply};
use crate::runner::{ANYTIME_AGENT, eventually, fast_simulator};
use crate::support::{Builder, TestApp, demo_body};
use callgate::store::{BreakerAdmission, JobStatus};

const CALL_TRIGGER: &str = "[triggers.demo-call]\nschema = \"schemas/demo-call.json\"\n\
    action = { type = \"start_call\", agent = \"demo-agent\" }\n";

/// A server whose simulator may dial twice, then once an hour.
async fn dialing(builder: Builder) -> TestApp {
    builder
        .file(
            "providers.toml",
            &fast_simulator("dial_rate = { requests = 1, per = \"1h\", burst = 2 }"),
        )
        .file("agents.toml", ANYTIME_AGENT)
        .file("triggers.toml", CALL_TRIGGER)
        .key("zapier", &["triggers:run"])
        .start()
        .await
}

async fn accept(app: &TestApp) -> callgate::ids::JobId {
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    callgate::ids::JobId::parse(v["job_id"].as_str().unwrap()).unwrap()
}

/// How many calls the server's simulator was asked to place.
fn dials(app: &TestApp) -> usize {
    app.dial_log()
        .iter()
        .filter(|e| matches!(e, callgate::calls::simulator::LogEntry::Dial { .. }))
        .count()
}

async fn job(app: &TestApp, id: &callgate::ids::JobId) -> callgate::store::JobRecord {
    app.store().job(id).await.unwrap().expect("the job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dial_rate_lets_its_burst_dial_and_the_next_job_waits() {
    let app = dialing(TestApp::builder()).await;
    for _ in 0..2 {
        accept(&app).await;
    }
    assert_eq!(app.run_pending().await, 2);
    let third = accept(&app).await;
    app.run_pending().await;
    let j = job(&app, &third).await;
    assert_eq!(j.status, JobStatus::Waiting, "{j:?}");
    assert_eq!(j.status_reason.as_deref(), Some("dial rate: simulator"));
    assert_eq!(dials(&app), 2, "the burst only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_dial_rate_holds_across_two_instances() {
    let url = crate::pg_url_or_skip!("on_postgres_a_dial_rate_holds_across_two_instances");
    let a = dialing(TestApp::builder().postgres(&url)).await;
    let shared = a.pg.as_ref().unwrap().url.clone();
    let b = dialing(TestApp::builder().storage_url(&shared)).await;
    for _ in 0..2 {
        accept(&a).await;
    }
    assert_eq!(a.run_pending().await, 2);
    assert_eq!(dials(&a), 2);
    // B has dialed nothing itself, but A spent the provider's burst.
    let third = accept(&b).await;
    b.run_pending().await;
    let j = job(&b, &third).await;
    assert_eq!(j.status, JobStatus::Waiting, "{j:?}");
    assert_eq!(j.status_reason.as_deref(), Some("dial rate: simulator"));
    assert_eq!(dials(&b), 0, "{:?}", b.dial_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_dial_rate_that_cannot_be_read_holds_the_job_and_never_dials() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_a_dial_rate_that_cannot_be_read_holds_the_job_and_never_dials"
    );
    let app = dialing(TestApp::builder().postgres(&url)).await;
    let id = accept(&app).await;
    let schema = app.pg.as_ref().unwrap();
    // The rate's table is gone (behind the store's back): the rate cannot
    // be read, while jobs can still be claimed and finished.
    schema.execute("DROP TABLE rate_tokens", &[]);
    assert_eq!(app.run_pending().await, 1);
    let j = job(&app, &id).await;
    assert_eq!(j.status, JobStatus::Waiting, "{j:?}");
    assert_eq!(
        j.status_reason.as_deref(),
        Some("dial rate: simulator (storage unavailable)")
    );
    assert_eq!(dials(&app), 0, "dialed unmetered");
    schema.execute(
        "CREATE TABLE rate_tokens (key TEXT PRIMARY KEY, tat BIGINT)",
        &[],
    );
    // Readable again: the job dials when it is looked at next (1 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        app.run_pending().await;
        let j = job(&app, &id).await;
        if j.status == JobStatus::Succeeded {
            break;
        }
        assert!(Instant::now() < deadline, "the job did not dial: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dials(&app), 1);
}

/// A server whose `notify` trigger sends one webhook to `crm` at `rx`,
/// with the deliverer running.
async fn notifying(builder: Builder, rx: &Receiver, extra: &str) -> TestApp {
    builder
        .file("endpoints.toml", &crm_endpoint(&rx.url("/hooks"), extra))
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run"])
        .background_runner()
        .start()
        .await
}

async fn notify(app: &TestApp) {
    let r = app.trigger(app.key("zapier"), "notify", &demo_body()).await;
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_breaker_opened_by_one_instance_holds_the_other_back() {
    let url =
        crate::pg_url_or_skip!("on_postgres_a_breaker_opened_by_one_instance_holds_the_other_back");
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(503));
    let breaker = "breaker = { failures = 2, cooldown = \"3s\", max_cooldown = \"3s\" }";
    let a = notifying(TestApp::builder().postgres(&url), &rx, breaker).await;
    for _ in 0..3 {
        notify(&a).await;
    }
    rx.wait_for(2, Duration::from_secs(10)).await;
    // A has opened the breaker (read through the store both share).
    let until = eventually(Duration::from_secs(10), "the breaker to open", || async {
        let now = callgate::clock::system_now_ms();
        match a.store().breaker_admit("crm", now, now).await.unwrap() {
            BreakerAdmission::Open { until_ms } => Some(until_ms),
            _ => None,
        }
    })
    .await;
    // The same moment on the monotonic clock the receiver stamps with.
    let until_at = Instant::now()
        + Duration::from_millis((until - callgate::clock::system_now_ms()).max(0) as u64);
    let before = rx.received().len();
    // B starts while it is open, with due deliveries to send: it sends
    // nothing until the open period ends.
    let shared = a.pg.as_ref().unwrap().url.clone();
    let b = notifying(TestApp::builder().storage_url(&shared), &rx, breaker).await;
    notify(&b).await;
    assert!(
        until_at > Instant::now() + Duration::from_millis(500),
        "B started too late to tell"
    );
    // Then one probe, from either instance, once the period is over; it
    // fails and reopens the breaker.
    let got = rx.wait_for(before + 1, Duration::from_secs(10)).await;
    let early = until_at.saturating_duration_since(got[before].at);
    assert!(
        early <= Duration::from_millis(20),
        "a request reached the endpoint {early:?} before its breaker's open period ended"
    );
    let now = callgate::clock::system_now_ms();
    assert!(matches!(
        a.store().breaker_admit("crm", now, now).await.unwrap(),
        BreakerAdmission::Open { .. }
    ));
    assert_eq!(rx.received().len(), before + 1, "one probe only");
    drop(b);
}

/// The most requests the receiver was answering at once.
fn most_in_flight(rx: &Receiver) -> usize {
    let received = rx.received();
    let answered = rx.answered();
    received
        .iter()
        .map(|r| {
            received
                .iter()
                .zip(&answered)
                .filter(|(o, done)| o.at <= r.at && done.is_none_or(|d| d > r.at))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_an_endpoints_concurrency_is_capped_across_instances() {
    let url =
        crate::pg_url_or_skip!("on_postgres_an_endpoints_concurrency_is_capped_across_instances");
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok("{}").after(Duration::from_millis(600)));
    let a = notifying(TestApp::builder().postgres(&url), &rx, "concurrency = 2").await;
    let shared = a.pg.as_ref().unwrap().url.clone();
    let b = notifying(
        TestApp::builder().storage_url(&shared),
        &rx,
        "concurrency = 2",
    )
    .await;
    for i in 0..8 {
        notify(if i % 2 == 0 { &a } else { &b }).await;
    }
    rx.wait_for(8, Duration::from_secs(30)).await;
    assert_eq!(
        most_in_flight(&rx),
        2,
        "each instance alone may send 2 at once; both together, 2"
    );
}
