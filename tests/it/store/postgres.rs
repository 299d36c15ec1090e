//! PostgreSQL beyond the conformance suite: what only a shared database
//! has. Several instances start on one fresh schema at once (migrations
//! apply once); instances share Idempotency-Keys, an agent's lines and the
//! job queue without a job claimed twice; a server that dies or stops
//! answering is `Unavailable` within the configured bound, never a hang,
//! and the store recovers when it is back. Two group-commit batches in
//! flight at once with one Idempotency-Key make one job.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate::config::StorageConfig;
use callgate::store::{EnqueueOutcome, JobFilter, Reservation, Store, StoreError};
use futures_util::future::join_all;

use super::lifecycle::poll_once;
use super::make::{self, AGENT, LATER, T0};
use crate::support::pg::{Proxy, Schema};

async fn open(url: &str, cfg: &StorageConfig) -> Arc<dyn Store> {
    let cfg = StorageConfig {
        url: url.to_owned(),
        pool_size: cfg.pool_size.min(4),
        ..cfg.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    callgate::store::open(&cfg, dir.path()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_at_once_on_a_fresh_schema_migrate_it_once() {
    let url =
        crate::pg_url_or_skip!("instances_starting_at_once_on_a_fresh_schema_migrate_it_once");
    let schema = Schema::create(&url);
    let cfg = StorageConfig::default();
    let stores: Vec<Arc<dyn Store>> = join_all((0..6).map(|_| open(&schema.url, &cfg))).await;
    let versions = schema.query_i64("SELECT COUNT(*) FROM callgate_migrations");
    let distinct = schema.query_i64("SELECT COUNT(DISTINCT version) FROM callgate_migrations");
    assert!(versions >= 1);
    assert_eq!(versions, distinct, "a version applied twice");
    for (i, store) in stores.iter().enumerate() {
        let j = make::job(T0 + i as i64);
        assert_eq!(store.enqueue(j).await.unwrap(), EnqueueOutcome::Inserted);
    }
    for store in &stores {
        assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 6);
    }
    for store in stores {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_idempotency_keys_lines_and_the_queue() {
    let url = crate::pg_url_or_skip!("two_instances_share_idempotency_keys_lines_and_the_queue");
    let schema = Schema::create(&url);
    let cfg = StorageConfig::default();
    let (a, b) = (open(&schema.url, &cfg).await, open(&schema.url, &cfg).await);
    let instance = |i: i64| if i % 2 == 0 { &a } else { &b };

    // One key sent to both instances at once: one job, the rest replay it.
    let keyed: Vec<_> = (0..20)
        .map(|i| make::keyed(T0 + i, "same", "h", LATER))
        .collect();
    let outcomes = join_all(
        keyed
            .iter()
            .enumerate()
            .map(|(i, j)| instance(i as i64).enqueue(j.clone())),
    )
    .await;
    let inserted = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(EnqueueOutcome::Inserted)))
        .count();
    assert_eq!(inserted, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(
        o,
        Ok(EnqueueOutcome::Inserted | EnqueueOutcome::IdempotencyConflict)
    )));
    let rec = b
        .idempotency(make::PRINCIPAL, make::TRIGGER, "same", T0)
        .await
        .unwrap()
        .unwrap();
    assert!(a.job(&rec.job_id).await.unwrap().is_some());

    // 300 jobs claimed by both instances at once: each exactly once.
    let jobs: Vec<_> = (0..300).map(|i| make::job(T0 + 100 + i)).collect();
    for r in join_all(
        jobs.iter()
            .enumerate()
            .map(|(i, j)| instance(i as i64).enqueue(j.clone())),
    )
    .await
    {
        r.unwrap();
    }
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let claimers = (0..6).map(|w| {
        let (store, claimed) = (instance(w).clone(), claimed.clone());
        tokio::spawn(async move {
            loop {
                let got = store
                    .claim_jobs(&format!("w{w}"), T0 + 10_000, LATER, 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return;
                }
                claimed
                    .lock()
                    .unwrap()
                    .extend(got.into_iter().map(|c| c.id));
            }
        })
    });
    for c in join_all(claimers).await {
        c.unwrap();
    }
    let claimed = claimed.lock().unwrap().clone();
    let unique: HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(unique.len(), claimed.len(), "a job was claimed twice");
    assert_eq!(unique.len(), 301, "every due job claimed");

    // An agent with 3 lines, 12 reservations through both instances at
    // once: exactly 3 calls.
    let reservations = join_all(jobs.iter().take(12).enumerate().map(|(i, j)| {
        let call = make::call(&j.id, 0, AGENT, T0 + 20_000 + i as i64);
        instance(i as i64).reserve_call(call, 3)
    }))
    .await;
    let created = reservations
        .iter()
        .filter(|r| matches!(r, Ok(Reservation::Created(_))))
        .count();
    let busy = reservations
        .iter()
        .filter(|r| matches!(r, Ok(Reservation::Busy { active: 3 })))
        .count();
    assert_eq!((created, busy), (3, 9), "{reservations:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_unavailable_within_the_bound_and_the_store_recovers() {
    let url = crate::pg_url_or_skip!(
        "a_dead_server_is_unavailable_within_the_bound_and_the_store_recovers"
    );
    let schema = Schema::create(&url);
    let (proxy, proxied) = Proxy::in_front_of(&schema.url).await;
    let cfg = StorageConfig {
        busy_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..StorageConfig::default()
    };
    let store = open(&proxied, &cfg).await;
    let j = make::job(T0);
    store.enqueue(j.clone()).await.unwrap();
    assert!(store.job(&j.id).await.unwrap().is_some());

    proxy.die();
    // Both ways a server goes: connections dropped (the pooled ones) and
    // connections that are never answered (new ones).
    let bound = Duration::from_secs(5);
    for _ in 0..2 {
        let started = Instant::now();
        let read = store.job(&j.id).await;
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
        let enqueued = store.enqueue(make::job(T0 + 1)).await;
        assert!(
            matches!(enqueued, Err(StoreError::Unavailable(_))),
            "{enqueued:?}"
        );
        let probe = store.check_writable(T0).await;
        assert!(
            matches!(probe, Err(StoreError::Unavailable(_))),
            "{probe:?}"
        );
        let claim = store.claim_jobs("w", T0, LATER, 1).await;
        assert!(
            matches!(claim, Err(StoreError::Unavailable(_))),
            "{claim:?}"
        );
        assert!(
            started.elapsed() < 4 * bound,
            "four operations took {:?}",
            started.elapsed()
        );
    }

    proxy.revive();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.enqueue(make::job(T0 + 2)).await {
            Ok(EnqueueOutcome::Inserted) => break,
            other => assert!(Instant::now() < deadline, "never recovered: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 2);
    store.close().await;
}

/// Sessions listening for `schema`'s new jobs.
fn listeners(schema: &Schema) -> i64 {
    schema.query_i64(&format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE query = 'LISTEN \"callgate_jobs_{}\"'",
        schema.name
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_committed_by_one_instance_wake_the_runner_of_another() {
    let url = crate::pg_url_or_skip!("jobs_committed_by_one_instance_wake_the_runner_of_another");
    let schema = Schema::create(&url);
    let cfg = StorageConfig::default();
    let (a, b) = (open(&schema.url, &cfg).await, open(&schema.url, &cfg).await);
    let wake = Arc::new(tokio::sync::Notify::new());
    b.notify_new_jobs(wake.clone());
    let within = Duration::from_secs(10);
    // The listener wakes the runner once it listens (jobs may have come in
    // before).
    tokio::time::timeout(within, wake.notified())
        .await
        .expect("the listener never started");
    assert_eq!(listeners(&schema), 1);

    a.enqueue(make::job(T0)).await.unwrap();
    tokio::time::timeout(within, wake.notified())
        .await
        .expect("a trigger job committed by another instance woke nobody");
    a.insert_jobs(vec![make::event_job(T0 + 1, "event:c:a")])
        .await
        .unwrap();
    tokio::time::timeout(within, wake.notified())
        .await
        .expect("an event job committed by another instance woke nobody");

    b.close().await;
    let deadline = Instant::now() + within;
    while listeners(&schema) != 0 {
        assert!(
            Instant::now() < deadline,
            "the LISTEN session outlived close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_only_keeps_no_listen_session() {
    let url = crate::pg_url_or_skip!("poll_only_keeps_no_listen_session");
    let schema = Schema::create(&url);
    let cfg = StorageConfig {
        poll_only: true,
        ..StorageConfig::default()
    };
    let store = open(&schema.url, &cfg).await;
    let wake = Arc::new(tokio::sync::Notify::new());
    store.notify_new_jobs(wake.clone());
    store.enqueue(make::job(T0)).await.unwrap();
    // The store works, through pooled connections only. A listener would
    // have woken the runner on starting and on the commit (well within this
    // bound, as the other case shows); none does.
    assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 1);
    let woken = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
    assert!(woken.is_err(), "poll_only, yet something woke the runner");
    assert_eq!(listeners(&schema), 0);
    // No session for a leader's lock either: every instance leads (the
    // housekeeping passes are idempotent).
    let other = open(&schema.url, &cfg).await;
    assert!(store.is_leader() && other.is_leader());
    assert!(store.try_lead().await.unwrap() && other.try_lead().await.unwrap());
    other.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_a_server_that_is_down_is_retried_until_start_timeout() {
    let url =
        crate::pg_url_or_skip!("at_start_a_server_that_is_down_is_retried_until_start_timeout");
    let schema = Schema::create(&url);
    let (proxy, proxied) = Proxy::in_front_of(&schema.url).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        url: proxied,
        busy_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        start_timeout: Duration::from_secs(30),
        ..StorageConfig::default()
    };
    // Down when the store starts; back 2 s later.
    proxy.die();
    let back = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.revive();
        Instant::now()
    };
    let (opened, back_at) = tokio::join!(callgate::store::open(&cfg, dir.path()), back);
    let store = opened.expect("the store opens once the server is back");
    let waited = back_at.elapsed();
    eprintln!("opened {waited:?} after the server came back");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    store.enqueue(make::job(T0)).await.unwrap();
    store.close().await;

    // Down for longer than start_timeout: an error, within about that.
    proxy.die();
    let cfg = StorageConfig {
        start_timeout: Duration::from_secs(3),
        ..cfg
    };
    let started = Instant::now();
    let opened = callgate::store::open(&cfg, dir.path()).await;
    let took = started.elapsed();
    assert!(opened.is_err());
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "gave up after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_an_answer_waiting_cannot_change_fails_at_once() {
    let url = crate::pg_url_or_skip!("at_start_an_answer_waiting_cannot_change_fails_at_once");
    let mut missing = url::Url::parse(&url).unwrap();
    missing.set_path("/callgate_no_such_database");
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        url: missing.to_string(),
        start_timeout: Duration::from_secs(60),
        ..StorageConfig::default()
    };
    let started = Instant::now();
    let opened = callgate::store::open(&cfg, dir.path()).await;
    assert!(opened.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a missing database was retried: {:?}",
        started.elapsed()
    );
}

/// Enqueues `job` and polls it once: the pending future when the writer
/// took it in, after retrying while the queue is full (until `deadline`).
async fn take_in(
    store: &Arc<dyn Store>,
    job: callgate::store::NewJob,
    deadline: Instant,
) -> impl Future<Output = Result<EnqueueOutcome, StoreError>> + Unpin {
    loop {
        assert!(
            Instant::now() < deadline,
            "the writer never took {} in",
            job.id
        );
        let store = store.clone();
        let j = job.clone();
        let mut f = Box::pin(async move { store.enqueue(j).await });
        match poll_once(&mut f).await {
            None => return f,
            Some(Err(StoreError::Backpressure)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Some(other) => panic!("while writes are blocked: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_in_flight_with_one_idempotency_key_make_one_job() {
    let url = crate::pg_url_or_skip!("two_batches_in_flight_with_one_idempotency_key_make_one_job");
    let schema = Schema::create(&url);
    // Batches of one, two in flight, one more queued.
    let cfg = StorageConfig {
        max_pending_writes: 1,
        max_batch: 1,
        write_connections: 2,
        busy_timeout: Duration::from_secs(30),
        ..StorageConfig::default()
    };
    let store = open(&schema.url, &cfg).await;
    let lock = schema.hold("LOCK TABLE jobs, idempotency_keys, heartbeat IN EXCLUSIVE MODE");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (a, b) = (
        make::keyed(T0, "same", "h", LATER),
        make::keyed(T0 + 1, "same", "h", LATER),
    );
    let c = make::job(T0 + 2);
    let fa = take_in(&store, a.clone(), deadline).await;
    let fb = take_in(&store, b.clone(), deadline).await;
    // With one batch in flight, `b` would fill the queue and `c` could
    // never be taken in while the tables are locked.
    let fc = take_in(&store, c.clone(), deadline).await;
    let mut d = Box::pin(store.enqueue(make::job(T0 + 3)));
    assert!(
        matches!(poll_once(&mut d).await, Some(Err(StoreError::Backpressure))),
        "two batches in flight and one queued fill the pipe"
    );
    drop(d);
    drop(lock);

    let (ra, rb, rc) = (fa.await.unwrap(), fb.await.unwrap(), fc.await.unwrap());
    assert_eq!(rc, EnqueueOutcome::Inserted);
    let winner = match (ra, rb) {
        (EnqueueOutcome::Inserted, EnqueueOutcome::IdempotencyConflict) => &a,
        (EnqueueOutcome::IdempotencyConflict, EnqueueOutcome::Inserted) => &b,
        other => panic!("one key, two batches: {other:?}"),
    };
    let rec = store
        .idempotency(make::PRINCIPAL, make::TRIGGER, "same", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.job_id, winner.id);
    assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 2);
    store.close().await;
}
