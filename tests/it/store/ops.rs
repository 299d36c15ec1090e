//! The operations API's store methods: retrying a failed job (one
//! conditional update, a new round), endpoint health from the delivery
//! log, the stats series and the refusal counts.

use callgate::ids::{DeliveryId, JobId};
use callgate::store::{
    BreakerPolicy, CallStatus, DeliveryStatus, JobStatus, RefusalCount, Retry, StatsWindow, Store,
};
use serde_json::json;

use super::make::{self, AGENT, LATER, T0};

/// Enqueues a job and takes it through one claim to `status` (with a
/// progress at step 0).
async fn ended(store: &dyn Store, at: i64, status: JobStatus) -> JobId {
    let job = make::job(at);
    store.enqueue(job.clone()).await.unwrap();
    let claims = store.claim_jobs("w1", at, LATER, 1).await.unwrap();
    assert_eq!(claims[0].id, job.id);
    let update = callgate::store::JobUpdate {
        state: Some(json!({"step": 0, "calls": {}, "steps": []})),
        error: Some(json!({"message": "dial refused"})),
        attempts: 3,
        ..make::update(status, at)
    };
    let done = store.finish_claim(&job.id, &claims[0].claim_id, update, at);
    assert!(done.await.unwrap());
    job.id
}

pub async fn only_failed_and_needs_attention_jobs_are_retried_in_a_new_round(store: &dyn Store) {
    let failed = ended(store, T0, JobStatus::Failed).await;
    let attention = ended(store, T0 + 1, JobStatus::NeedsAttention).await;
    let done = ended(store, T0 + 2, JobStatus::Succeeded).await;
    let at = T0 + 100;
    let retry = |id: &JobId| {
        let id = id.clone();
        let detail = json!({"event": "retried", "by": "key:ops"});
        async move {
            store
                .retry_job(&id, "retried by key:ops".into(), detail, at)
                .await
                .unwrap()
        }
    };
    for id in [&failed, &attention] {
        assert_eq!(retry(id).await, Retry::Retried, "{id}");
        let job = store.job(id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(job.status_reason.as_deref(), Some("retried by key:ops"));
        assert_eq!(
            (job.attempts, job.run_at_ms, job.updated_at_ms),
            (0, at, at)
        );
        assert_eq!(job.error, None);
        let state = job.state.unwrap();
        assert_eq!(state["round"], 1, "a new round: {state}");
        assert_eq!(state["step"], 0, "the progress is kept: {state}");
        let last = store.job_events(id).await.unwrap().pop().unwrap();
        assert_eq!((last.status, last.at_ms), (JobStatus::Queued, at));
        assert_eq!(last.reason.as_deref(), Some("retried by key:ops"));
        assert_eq!(last.detail.unwrap()["event"], "retried");
    }
    assert_eq!(
        retry(&done).await,
        Retry::NotRetryable(JobStatus::Succeeded)
    );
    assert_eq!(
        retry(&failed).await,
        Retry::NotRetryable(JobStatus::Queued),
        "a second retry changes nothing"
    );
    assert_eq!(retry(&JobId::new(T0 + 99)).await, Retry::NotFound);
    // Due at once, with their attempts reset; a second round counts up.
    let claims = store.claim_jobs("w2", at, LATER, 10).await.unwrap();
    let mut ids: Vec<JobId> = claims.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec![failed.clone(), attention.clone()]);
    assert!(claims.iter().all(|c| c.attempts == 0));
    let c = claims.iter().find(|c| c.id == failed).unwrap();
    let again = make::update(JobStatus::Failed, at + 1);
    assert!(
        store
            .finish_claim(&failed, &c.claim_id, again, at + 1)
            .await
            .unwrap()
    );
    assert_eq!(retry(&failed).await, Retry::Retried);
    let state = store.job(&failed).await.unwrap().unwrap().state.unwrap();
    assert_eq!(state["round"], 2);
}

pub async fn concurrent_retries_of_one_job_let_exactly_one_win(store: &dyn Store) {
    let id = ended(store, T0, JobStatus::Failed).await;
    let tries = (0..8).map(|i| {
        let id = id.clone();
        async move {
            store
                .retry_job(&id, format!("retried by key:{i}"), json!({}), T0 + 10)
                .await
                .unwrap()
        }
    });
    let results = futures_util::future::join_all(tries).await;
    let won = results.iter().filter(|r| **r == Retry::Retried).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Retry::Retried | Retry::NotRetryable(JobStatus::Queued)))
    );
    let state = store.job(&id).await.unwrap().unwrap().state.unwrap();
    assert_eq!(state["round"], 1);
    let retried = store.job_events(&id).await.unwrap();
    let logged = retried
        .iter()
        .filter(|e| e.status == JobStatus::Queued)
        .count();
    assert_eq!(logged, 1, "one retry logged");
}

/// A delivery to `endpoint` with one attempt answered `code` (`None`: a
/// transport error) after `latency_ms`, at `at`, left in `status`.
async fn attempted(
    store: &dyn Store,
    endpoint: &str,
    at: i64,
    code: Option<i64>,
    latency_ms: i64,
    status: DeliveryStatus,
) -> DeliveryId {
    let id = store
        .create_delivery(make::delivery(endpoint, at))
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries(endpoint, "w", at, at + 60_000, 1)
        .await
        .unwrap();
    assert_eq!(claimed[0].delivery.id, id);
    let attempt = callgate::store::DeliveryAttempt {
        latency_ms,
        ..make::attempt(1, at, code, None)
    };
    let ok = store
        .finish_delivery_attempt(&id, &claimed[0].claim_id, attempt, status, at)
        .await;
    assert!(ok.unwrap());
    id
}

pub async fn endpoint_health_reports_windows_the_last_error_counts_and_the_breaker(
    store: &dyn Store,
) {
    let now = T0 + 2 * 86_400_000;
    let hour_ago = now - 3_600_000;
    use DeliveryStatus::*;
    // Within the hour: latencies 10..=100 (ten attempts, two failed).
    for i in 1..=10 {
        let (code, status) = match i {
            3 => (Some(500), Dead),
            7 => (None, Failed),
            _ => (Some(200), Succeeded),
        };
        attempted(store, "crm", hour_ago + i * 1_000, code, i * 10, status).await;
    }
    // Earlier that day, one slow success; two days ago, one not counted.
    attempted(
        store,
        "crm",
        now - 5 * 3_600_000,
        Some(204),
        5_000,
        Succeeded,
    )
    .await;
    attempted(store, "crm", T0, Some(200), 1, Succeeded).await;
    store
        .create_delivery(make::delivery("crm", now - 10))
        .await
        .unwrap();
    attempted(store, "billing", now - 60_000, Some(200), 7, Succeeded).await;
    let policy = BreakerPolicy {
        failures: 1,
        cooldown_ms: 30_000,
        max_cooldown_ms: 60_000,
    };
    store
        .breaker_record("crm", false, policy, now - 1_000)
        .await
        .unwrap();

    let names = vec!["crm".to_owned(), "billing".to_owned(), "idle".to_owned()];
    let health = store.endpoint_health(names, now).await.unwrap();
    let crm = &health[0];
    assert_eq!(crm.endpoint, "crm");
    assert_eq!((crm.last_hour.attempts, crm.last_hour.succeeded), (10, 8));
    assert_eq!(
        (crm.last_hour.p50_ms, crm.last_hour.p95_ms),
        (Some(50), Some(100))
    );
    assert_eq!((crm.last_day.attempts, crm.last_day.succeeded), (11, 9));
    assert_eq!(crm.last_day.p95_ms, Some(5_000));
    let err = crm.last_error.as_ref().unwrap();
    assert_eq!((err.at_ms, err.status), (hour_ago + 7_000, None));
    assert_eq!(err.error.as_deref(), Some("connection refused"));
    assert_eq!((crm.pending, crm.dead), (1, 1));
    assert_eq!(crm.breaker.open_until_ms, Some(now - 1_000 + 30_000));
    assert_eq!(crm.breaker.cooldown_ms, 30_000);
    let billing = &health[1];
    assert_eq!(
        (billing.last_hour.attempts, billing.last_hour.p50_ms),
        (1, Some(7))
    );
    assert_eq!(
        (billing.last_error.clone(), billing.pending, billing.dead),
        (None, 0, 0)
    );
    assert_eq!(billing.breaker, Default::default());
    let idle = &health[2];
    assert_eq!((idle.last_day.attempts, idle.last_day.p50_ms), (0, None));
}

pub async fn stats_count_jobs_refusals_calls_and_attempts_by_bucket(store: &dyn Store) {
    let minute = 60_000;
    // Two jobs in the first minute, one in the third; one just before the
    // window and one at its end (both outside).
    for at in [
        T0 + 1_000,
        T0 + 2_000,
        T0 + 2 * minute + 5,
        T0 - 1,
        T0 + 3 * minute,
    ] {
        store.enqueue(make::job(at)).await.unwrap();
    }
    // An event-started job is not a trigger accepted.
    store
        .insert_jobs(vec![make::event_job(T0 + 3_000, "k")])
        .await
        .unwrap();
    let job = JobId::new(T0 + 1_000);
    let a = store
        .reserve_call(make::call(&job, 0, AGENT, T0 + 10), 5)
        .await
        .unwrap();
    let callgate::store::Reservation::Created(a) = a else {
        panic!("{a:?}")
    };
    let mut completed = make::event(&a, "done", Some(CallStatus::Completed), T0 + 20);
    completed.outcome = Some("interested".into());
    store
        .apply_call_event(completed, make::no_jobs())
        .await
        .unwrap();
    store
        .reserve_call(make::call(&job, 1, AGENT, T0 + minute), 5)
        .await
        .unwrap();
    attempted(
        store,
        "crm",
        T0 + 100,
        Some(200),
        10,
        DeliveryStatus::Succeeded,
    )
    .await;
    attempted(store, "crm", T0 + 200, Some(503), 30, DeliveryStatus::Dead).await;
    let refusals = vec![
        RefusalCount {
            minute_ms: T0,
            reason: "unauthorized".into(),
            count: 2,
        },
        RefusalCount {
            minute_ms: T0 + 2 * minute,
            reason: "rate-limited".into(),
            count: 5,
        },
    ];
    store.add_refusals(refusals.clone()).await.unwrap();
    // Another instance's counts for the same minute add up.
    store.add_refusals(refusals[..1].to_vec()).await.unwrap();

    let window = StatsWindow {
        since_ms: T0,
        until_ms: T0 + 3 * minute,
        bucket_ms: minute,
    };
    let s = store.stats(window).await.unwrap();
    let counts = |rows: &[callgate::store::BucketCount]| {
        rows.iter()
            .map(|r| (r.bucket, r.key.clone(), r.count))
            .collect::<Vec<_>>()
    };
    let trigger = make::TRIGGER.to_owned();
    assert_eq!(
        counts(&s.accepted),
        vec![(0, trigger.clone(), 2), (2, trigger, 1)]
    );
    assert_eq!(
        counts(&s.refused),
        vec![(0, "unauthorized".into(), 4), (2, "rate-limited".into(), 5)]
    );
    assert_eq!(
        counts(&s.calls),
        vec![(0, "interested".into(), 1), (1, "dialing".into(), 1)]
    );
    assert_eq!(s.deliveries.len(), 1);
    let d = &s.deliveries[0];
    assert_eq!(
        (d.bucket, d.endpoint.as_str(), d.succeeded, d.failed),
        (0, "crm", 1, 1)
    );
    assert_eq!(d.mean_latency_ms, 20);

    // Purged by minute: the first goes, the later one stays.
    assert_eq!(store.purge_refusals(T0 + minute).await.unwrap(), 1);
    let s = store.stats(window).await.unwrap();
    assert_eq!(counts(&s.refused), vec![(2, "rate-limited".into(), 5)]);
}

pub async fn refusal_counts_written_by_two_stores_add_up(db: &super::engines::TestDb) {
    let other = db.reopen(&callgate::config::StorageConfig::default()).await;
    let stores: [&dyn Store; 2] = [db.store(), &*other];
    let count = |n: i64| {
        vec![RefusalCount {
            minute_ms: T0,
            reason: "rate-limited".into(),
            count: n,
        }]
    };
    // Flushes from both at once, a few times each.
    let writes = (0..8).map(|i| stores[i % 2].add_refusals(count(i as i64 + 1)));
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    let window = StatsWindow {
        since_ms: T0,
        until_ms: T0 + 60_000,
        bucket_ms: 60_000,
    };
    for store in stores {
        let refused = store.stats(window).await.unwrap().refused;
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused[0].count,
            (1..=8).sum::<i64>(),
            "every flush counted once"
        );
    }
    other.close().await;
}
