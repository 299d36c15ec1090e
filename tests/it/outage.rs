//! A PostgreSQL outage under a running server: the connection to the
//! database is cut (a proxy in between) and restored. While it is cut the
//! accept path answers `503 storage-unavailable` with `Retry-After` well
//! within the request timeout (never hangs) and `/readyz` is 503; no job
//! is half-written; once restored, service resumes by itself (no restart)
//! and the runner claims again.

use std::time::{Duration, Instant};

use callgate::ids::JobId;
use serde_json::json;

use crate::support::pg::{Proxy, Schema};
use crate::support::{TestApp, problem};

async fn post(app: &TestApp, idem: &str, phone: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/triggers/demo-call"))
        .bearer_auth(app.key("zapier"))
        .header("idempotency-key", idem)
        .json(&json!({"phone_number": phone, "customer": {"name": "Ada"}}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_cut_off_triggers_get_503_fast_and_service_resumes_when_it_is_back() {
    let url = crate::pg_url_or_skip!(
        "while_postgres_is_cut_off_triggers_get_503_fast_and_service_resumes_when_it_is_back"
    );
    let schema = Schema::create(&url);
    let (proxy, proxied) = Proxy::in_front_of(&schema.url).await;
    // The server's request timeout is 10 s (TestApp); the store's bound on
    // one operation is connect + busy = 2 s.
    let app = TestApp::builder()
        .storage_url(&proxied)
        .storage("busy_timeout = \"1s\"\nconnect_timeout = \"1s\"")
        .key("zapier", &["triggers:run"])
        .background_runner()
        .start()
        .await;

    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..5 {
        let idem = format!("before-{i}");
        let r = post(&app, &idem, &format!("+1555012{:04}", i)).await;
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        accepted.push((idem, body["job_id"].as_str().unwrap().to_owned()));
    }

    proxy.die();
    let mut slowest = Duration::ZERO;
    for i in 0..6 {
        let idem = format!("during-{i}");
        let started = Instant::now();
        let r = post(&app, &idem, &format!("+1555012{:04}", 1000 + i)).await;
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < Duration::from_secs(5),
            "answer {i} took {took:?} (request timeout 10 s)"
        );
        assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
        let body = problem(r, 503).await;
        assert_eq!(body["type"], "urn:callgate:problem:storage-unavailable");
        refused.push(idem);
    }
    // Without an Idempotency-Key nothing is looked up first: the job goes
    // straight to the group-commit writer, which cannot commit it.
    for i in 0..3 {
        let started = Instant::now();
        let r = app
            .client
            .post(app.url("/v1/triggers/demo-call"))
            .bearer_auth(app.key("zapier"))
            .json(&json!({"phone_number": format!("+1555012{:04}", 3000 + i)}))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < Duration::from_secs(5),
            "unkeyed answer took {took:?}"
        );
        assert!(r.headers().contains_key("retry-after"));
        let body = problem(r, 503).await;
        assert_eq!(body["type"], "urn:callgate:problem:storage-unavailable");
    }
    eprintln!("slowest 503 while PostgreSQL was cut off: {slowest:?}");
    let started = Instant::now();
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(5));

    proxy.revive();
    // Service resumes by itself: a new request is accepted within the
    // deadline (those refused while reconnecting are noted).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let last_job = loop {
        n += 1;
        let idem = format!("after-{n}");
        let r = post(&app, &idem, &format!("+1555012{:04}", 2000 + n)).await;
        if r.status() == 202 {
            let body: serde_json::Value = r.json().await.unwrap();
            let job = body["job_id"].as_str().unwrap().to_owned();
            accepted.push((idem, job.clone()));
            break job;
        }
        assert_eq!(r.status(), 503);
        refused.push(idem);
        assert!(Instant::now() < deadline, "service did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Ready again too (a heartbeat may still miss its 2 s on a loaded
    // machine: asked until it is 200, within the deadline).
    while app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nothing half-written: every 202 has its job and key, every 503 has
    // neither (the job count covers the unkeyed ones).
    for (idem, job) in &accepted {
        let id = JobId::parse(job).unwrap();
        assert!(app.store().job(&id).await.unwrap().is_some(), "{idem}");
    }
    assert_eq!(app.jobs_on_disk().await, accepted.len() as i64);
    for idem in &refused {
        let n = schema.query_i64(&format!(
            "SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = '{idem}'"
        ));
        assert_eq!(n, 0, "a refused request left {idem} behind");
    }

    // The runner survived the outage: it claims the job accepted after it.
    let id = JobId::parse(&last_job).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = app.store().job(&id).await.unwrap().unwrap();
        if job.status != callgate::store::JobStatus::Queued {
            break;
        }
        assert!(Instant::now() < deadline, "the runner never claimed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await.unwrap();
    drop(schema);
}
