//! The store as a whole: status counts, the writability probe, the bound
//! on pending writes, and closing.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use callgate::config::StorageConfig;
use callgate::store::{
    CallStatus, DeliveryStatus, EnqueueOutcome, JobFilter, JobStatus, Store, StoreError,
};

use super::engines::TestDb;
use super::make::{self, AGENT, LATER, T0};

pub async fn status_counts_count_every_record_by_status(store: &dyn Store) {
    assert!(
        store.status_counts().await.unwrap().is_empty(),
        "an empty store"
    );
    for j in [
        make::job(T0),
        make::job(T0 + 1),
        make::job(T0 + 2),
        make::scheduled(T0 + 3, LATER),
    ] {
        store.enqueue(j).await.unwrap();
    }
    let running = store.claim_jobs("w", T0, LATER, 1).await.unwrap().remove(0);
    store
        .reserve_call(make::call(&running.id, 0, AGENT, T0), 5)
        .await
        .unwrap();
    let ended = make::call(&running.id, 1, AGENT, T0);
    store.reserve_call(ended.clone(), 5).await.unwrap();
    let e = make::event(&ended.id, "end", Some(CallStatus::Completed), T0 + 1);
    store.apply_call_event(e, make::no_jobs()).await.unwrap();
    store
        .create_delivery(make::delivery("crm", T0))
        .await
        .unwrap();
    store
        .create_delivery(make::delivery("gone", T0))
        .await
        .unwrap();
    store
        .fail_unconfigured_deliveries(vec!["crm".into()], T0)
        .await
        .unwrap();

    let got: HashSet<(String, String, i64)> =
        store.status_counts().await.unwrap().into_iter().collect();
    let row = |t: &str, s: &str, n: i64| (t.to_owned(), s.to_owned(), n);
    let want = HashSet::from([
        row("jobs", JobStatus::Queued.as_str(), 2),
        row("jobs", JobStatus::Running.as_str(), 1),
        row("jobs", JobStatus::Scheduled.as_str(), 1),
        row("calls", CallStatus::Dialing.as_str(), 1),
        row("calls", CallStatus::Completed.as_str(), 1),
        row("deliveries", DeliveryStatus::Pending.as_str(), 1),
        row("deliveries", DeliveryStatus::Failed.as_str(), 1),
    ]);
    assert_eq!(got, want);
}

pub async fn check_writable_commits_through_the_writer(store: &dyn Store) {
    assert!(!store.engine().is_empty());
    store.check_writable(T0).await.unwrap();
    store.check_writable(T0 + 1).await.unwrap();
    store.enqueue(make::job(T0)).await.unwrap();
    store.check_writable(T0 + 2).await.unwrap();
}

/// Polls `f` once: its result if it finished at once.
/// Alone on its database, a store leads (SQLite always does; PostgreSQL
/// takes the free lock), and keeps leading when asked again.
pub async fn a_lone_instance_leads_the_housekeeping(store: &dyn Store) {
    for _ in 0..2 {
        assert!(store.try_lead().await.unwrap());
        assert!(store.is_leader());
    }
}

pub async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

pub async fn a_blocked_writer_refuses_enqueues_at_once_past_its_bound(db: &TestDb) {
    db.store.close().await;
    // One job in the writer's hands (batches of one, one batch in flight),
    // one waiting for it.
    let cfg = StorageConfig {
        max_pending_writes: 1,
        max_batch: 1,
        write_connections: 1,
        busy_timeout: Duration::from_secs(30),
        ..StorageConfig::default()
    };
    let store = db.reopen(&cfg).await;
    store.enqueue(make::job(T0)).await.unwrap();
    let lock = db.hold_writes();

    // Fill the pipe: enqueues that do not finish at once were taken in.
    let mut taken_in = Vec::new();
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut at = T0 + 1;
    while taken_in.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer never took a job in"
        );
        let job = make::job(at);
        at += 1;
        let mut f = store.enqueue(job.clone());
        match poll_once(&mut f).await {
            None => taken_in.push((job.id, f)),
            Some(Err(StoreError::Backpressure)) => {
                // The writer has not picked the first one up yet.
                refused += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Some(other) => panic!("while writes are blocked: {other:?}"),
        }
    }
    // Now every further enqueue, and the readiness probe, is refused at once.
    for _ in 0..5 {
        let mut f = store.enqueue(make::job(at));
        at += 1;
        assert!(
            matches!(poll_once(&mut f).await, Some(Err(StoreError::Backpressure))),
            "past the bound an enqueue must fail at once"
        );
        refused += 1;
    }
    let mut probe = store.check_writable(at);
    assert!(matches!(
        poll_once(&mut probe).await,
        Some(Err(StoreError::Backpressure))
    ));
    drop(probe);

    drop(lock);
    for (id, f) in taken_in {
        assert_eq!(f.await.unwrap(), EnqueueOutcome::Inserted, "{id}");
        assert!(store.job(&id).await.unwrap().is_some());
    }
    assert_eq!(
        store.count_jobs(JobFilter::default()).await.unwrap(),
        3,
        "{refused} refused"
    );
    store.check_writable(at).await.unwrap();
    store.close().await;
}

pub async fn close_commits_what_was_accepted_and_refuses_more(db: &TestDb) {
    let store = db.store.clone();
    let sends: Vec<_> = (0..200)
        .map(|i| {
            let (store, job) = (store.clone(), make::job(T0 + i));
            tokio::spawn(async move { (job.id.clone(), store.enqueue(job).await) })
        })
        .collect();
    store.close().await;
    let mut accepted = Vec::new();
    for s in sends {
        match s.await.unwrap() {
            (id, Ok(EnqueueOutcome::Inserted)) => accepted.push(id),
            (_, Err(StoreError::Closed)) => {}
            (id, other) => panic!("{id}: {other:?}"),
        }
    }
    assert!(matches!(
        store.enqueue(make::job(T0)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.check_writable(T0).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.wake_jobs(Vec::new(), T0).await,
        Err(StoreError::Closed)
    ));

    let again = db.reopen(&StorageConfig::default()).await;
    assert_eq!(
        again.count_jobs(JobFilter::default()).await.unwrap(),
        accepted.len() as u64,
        "exactly what was accepted is stored"
    );
    for id in &accepted {
        assert!(again.job(id).await.unwrap().is_some(), "{id} lost at close");
    }
    again.close().await;
}
