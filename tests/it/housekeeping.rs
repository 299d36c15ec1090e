//! Housekeeping on PostgreSQL: of the instances sharing one database, one
//! (the leader) runs it, `/readyz` says which, and another takes over when
//! the leader stops.

use std::time::{Duration, Instant};

use callgate::clock::{Clock, ManualClock, SystemClock};
use serde_json::Value;

use crate::support::{TestApp, demo_body};

async fn ready(app: &TestApp) -> Value {
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
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
