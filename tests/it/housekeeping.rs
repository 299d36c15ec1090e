//! Housekeeping on PostgreSQL: of the instances sharing one database, one
//! (the leader) runs it, `/readyz` says which, and another takes over when
//! the leader stops.

use std::time::{Duration, Instant};

use callgate::clock::{Clock, ManualClock, SystemClock};
use serde_json::Value;

use crate::durability::{Gateway, config_dir, ops_key};
use crate::support::pg::Schema;
use crate::support::{TestApp, demo_body};

/// `/readyz`'s answer once it is 200 (a heartbeat may miss its 2 s on a
/// loaded machine: 503 then, which is not what these tests are about).
async fn ready(app: &TestApp) -> Value {
    ready_from(&app.client, &app.url("/readyz")).await
}

async fn ready_from(client: &reqwest::Client, url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get(url).send().await.unwrap();
        if r.status() == 200 {
            return r.json().await.unwrap();
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_expires_idempotency_keys_and_another_takes_over_when_it_stops() {
    let url = crate::pg_url_or_skip!(
        "only_the_leader_expires_idempotency_keys_and_another_takes_over_when_it_stops"
    );
    // Retention 24 s: each instance's clean-up pass runs every second.
    let idempotency = "[idempotency]\nretention = \"24s\"";
    let mut leader = TestApp::builder()
        .postgres(&url)
        .key("zapier", &["triggers:run"])
        .main(idempotency)
        .start()
        .await;
    let schema = leader.pg.take().unwrap();
    // The other instance's clock is a day ahead: for it, every key has
    // expired, so if it cleaned up while not leading, the key would go.
    let ahead = ManualClock::new(SystemClock.now_ms() + 86_400_000);
    let follower = TestApp::builder()
        .storage_url(&schema.url)
        .key("zapier", &["triggers:run"])
        .main(idempotency)
        .clock(ahead)
        .start()
        .await;
    assert_eq!(ready(&leader).await["leader"], true);
    assert_eq!(ready(&follower).await["leader"], false);

    let r = leader
        .client
        .post(leader.url("/v1/triggers/demo-call"))
        .bearer_auth(leader.key("zapier"))
        .header("idempotency-key", "kept-while-the-leader-lives")
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let keys = || schema.query_i64("SELECT COUNT(*) FROM idempotency_keys");
    assert_eq!(keys(), 1);
    // Several of the follower's clean-up passes (one a second): none
    // deletes, because it does not lead (and for the leader the key is
    // live).
    let watch = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch {
        assert_eq!(keys(), 1, "a non-leader expired an idempotency key");
        assert_eq!(ready(&follower).await["leader"], false);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The leader stops: the follower leads within a few seconds, and its
    // clean-up (the key has expired by its clock) removes the key.
    leader.stop().await.unwrap();
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(15);
    while ready(&follower).await["leader"] != true {
        assert!(Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("took over {:?} after the leader stopped", stopped.elapsed());
    while keys() != 0 {
        assert!(
            Instant::now() < deadline,
            "the new leader did not expire the key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    follower.stop().await.unwrap();
    drop(schema);
}

/// `callgate_leader` as `/metrics` reports it.
async fn leader_gauge(gw: &Gateway, client: &reqwest::Client, key: &str) -> f64 {
    let r = client
        .get(gw.url("/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("callgate_leader "))
        .unwrap_or_else(|| panic!("no callgate_leader in {text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn ready_at(gw: &Gateway, client: &reqwest::Client) -> Value {
    ready_from(client, &gw.url("/readyz")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_leading_process_is_killed_another_leads_and_reports_the_counts() {
    let url = crate::pg_url_or_skip!(
        "when_the_leading_process_is_killed_another_leads_and_reports_the_counts"
    );
    let schema = Schema::create(&url);
    let (config, key) = config_dir();
    let ops = ops_key(config.path());
    let main = config.path().join("callgate.toml");
    let mut toml = std::fs::read_to_string(&main).unwrap();
    toml.push_str(&format!("[storage]\nurl = \"{}\"\n", schema.url));
    std::fs::write(&main, toml).unwrap();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The first to start takes the free lock before it listens.
    let mut a = Gateway::start(config.path(), data_a.path());
    let b = Gateway::start(config.path(), data_b.path());
    let (client_a, client_b) = (a.client(data_a.path()), b.client(data_b.path()));
    assert_eq!(ready_at(&a, &client_a).await["leader"], true);
    assert_eq!(ready_at(&b, &client_b).await["leader"], false);

    let r = client_a
        .post(a.url("/v1/triggers/demo-call"))
        .bearer_auth(&key)
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The leader counts the rows; the other reports 0, so a sum over the
    // instances is the database's count.
    assert_eq!(leader_gauge(&a, &client_a, &ops).await, 1.0);
    assert_eq!(leader_gauge(&b, &client_b, &ops).await, 0.0);
    let jobs = |g: std::collections::HashMap<String, i64>| g.values().sum::<i64>();
    assert!(jobs(a.status_gauges(&client_a, &ops, "jobs").await) >= 1);
    assert_eq!(jobs(b.status_gauges(&client_b, &ops, "jobs").await), 0);

    // SIGKILL: no goodbye; the server sees the session end, and the other
    // process takes over at its next attempt.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(20);
    while ready_at(&b, &client_b).await["leader"] != true {
        assert!(Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "took over {:?} after the leader was killed",
        killed.elapsed()
    );
    assert_eq!(leader_gauge(&b, &client_b, &ops).await, 1.0);
    assert!(jobs(b.status_gauges(&client_b, &ops, "jobs").await) >= 1);
    let logs = b.logs.lock().unwrap().clone();
    assert!(
        logs.contains("housekeeping leadership gained"),
        "no INFO line: {logs}"
    );
    let mut b = b;
    b.signal("TERM");
    assert!(b.child.wait().unwrap().success());
    drop(schema);
}
