//! Enqueue (group commit), Idempotency-Keys, jobs inserted by events, job
//! listings, and values that cannot be read back.

use callgate::ids::JobId;
use callgate::store::{EnqueueOutcome, JobFilter, JobStatus, Store, StoreError};
use futures_util::future::join_all;

use super::engines::{Record, TestDb};
use super::make::{self, LATER, PRINCIPAL, T0, TRIGGER};

pub async fn enqueued_jobs_read_back_exactly_as_written(store: &dyn Store) {
    let queued = make::job(T0);
    let held = make::scheduled(T0 + 1, T0 + 60_000);
    let mut bare = make::job(T0 + 2);
    bare.request_id = None;
    for j in [&queued, &held, &bare] {
        assert_eq!(
            store.enqueue(j.clone()).await.unwrap(),
            EnqueueOutcome::Inserted
        );
    }
    let r = store.job(&queued.id).await.unwrap().expect("the job");
    assert_eq!(r.id, queued.id);
    assert_eq!(r.trigger_id, Some(make::trigger(TRIGGER)));
    assert_eq!(r.principal, PRINCIPAL);
    assert_eq!(r.status, JobStatus::Queued);
    assert_eq!(r.status_reason, None);
    assert_eq!(r.action, make::action());
    assert_eq!(r.input, make::input(T0 % 10_000));
    assert_eq!((&r.state, &r.result, &r.error), (&None, &None, &None));
    assert_eq!(r.attempts, 0);
    assert_eq!(r.request_id.as_deref(), Some(format!("req-{T0}").as_str()));
    assert_eq!(
        (r.created_at_ms, r.updated_at_ms, r.run_at_ms),
        (T0, T0, T0)
    );

    let h = store.job(&held.id).await.unwrap().unwrap();
    assert_eq!((h.status, h.run_at_ms), (JobStatus::Scheduled, T0 + 60_000));
    let b = store.job(&bare.id).await.unwrap().unwrap();
    assert_eq!(b.request_id, None);
    // The insert itself is not logged (the API shows it from created_at).
    assert!(store.job_events(&queued.id).await.unwrap().is_empty());
    assert!(store.job(&JobId::new(T0)).await.unwrap().is_none());
}

pub async fn many_concurrent_enqueues_are_all_committed(store: &dyn Store) {
    // Plain jobs and jobs with keys, all at once: they share transactions.
    let jobs: Vec<_> = (0..300)
        .map(|i| match i % 3 {
            0 => make::keyed(T0 + i, &format!("key-{i}"), "h", LATER),
            _ => make::job(T0 + i),
        })
        .collect();
    let outcomes = join_all(jobs.iter().map(|j| store.enqueue(j.clone()))).await;
    for (j, o) in jobs.iter().zip(outcomes) {
        assert_eq!(o.unwrap(), EnqueueOutcome::Inserted, "{}", j.id);
    }
    assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 300);
    for j in &jobs {
        assert!(store.job(&j.id).await.unwrap().is_some(), "{} lost", j.id);
    }
}

pub async fn an_idempotency_key_is_claimed_once_replayed_and_expires(store: &dyn Store) {
    let expires = T0 + 1_000;
    let first = make::keyed(T0, "k1", "hash-1", expires);
    assert_eq!(
        store.enqueue(first.clone()).await.unwrap(),
        EnqueueOutcome::Inserted
    );
    let rec = store
        .idempotency(PRINCIPAL, TRIGGER, "k1", T0)
        .await
        .unwrap()
        .expect("the key's record");
    let written = first.idempotency.as_ref().unwrap();
    assert_eq!(rec.request_hash, "hash-1");
    assert_eq!(rec.job_id, first.id);
    assert_eq!(rec.response_status, 202);
    assert_eq!(rec.response_body, written.response_body);

    // The same live key again: no job, the caller replays the record.
    let second = make::keyed(T0 + 1, "k1", "hash-2", expires + 1);
    assert_eq!(
        store.enqueue(second.clone()).await.unwrap(),
        EnqueueOutcome::IdempotencyConflict
    );
    assert!(store.job(&second.id).await.unwrap().is_none());
    assert_eq!(
        store
            .idempotency(PRINCIPAL, TRIGGER, "k1", T0 + 1)
            .await
            .unwrap()
            .unwrap()
            .job_id,
        first.id
    );

    // Keys are per principal and trigger.
    let mut other_principal = make::keyed(T0 + 2, "k1", "hash-1", expires);
    other_principal.principal = "key:other".into();
    let mut other_trigger = make::keyed(T0 + 3, "k1", "hash-1", expires);
    other_trigger.trigger_id = Some(make::trigger("demo-automation"));
    for j in [other_principal, other_trigger] {
        assert_eq!(store.enqueue(j).await.unwrap(), EnqueueOutcome::Inserted);
    }

    // Expired: not found, and the key is free again.
    assert!(
        store
            .idempotency(PRINCIPAL, TRIGGER, "k1", expires)
            .await
            .unwrap()
            .is_none()
    );
    let third = make::keyed(expires, "k1", "hash-3", expires + 1_000);
    assert_eq!(
        store.enqueue(third.clone()).await.unwrap(),
        EnqueueOutcome::Inserted
    );
    let rec = store
        .idempotency(PRINCIPAL, TRIGGER, "k1", expires)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.job_id, rec.request_hash.as_str()),
        (third.id, "hash-3")
    );

    // Purge removes the expired records only.
    assert_eq!(store.purge_idempotency(expires + 500).await.unwrap(), 2);
    assert!(
        store
            .idempotency(PRINCIPAL, TRIGGER, "k1", expires + 500)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.purge_idempotency(expires + 1_000).await.unwrap(), 1);
    assert_eq!(store.purge_idempotency(expires + 1_000).await.unwrap(), 0);
    assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 4);
}

pub async fn concurrent_requests_with_one_key_insert_one_job(store: &dyn Store) {
    let jobs: Vec<_> = (0..20)
        .map(|i| make::keyed(T0 + i, "same", "h", LATER))
        .collect();
    let outcomes: Vec<EnqueueOutcome> = join_all(jobs.iter().map(|j| store.enqueue(j.clone())))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let inserted: Vec<&JobId> = jobs
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == EnqueueOutcome::Inserted)
        .map(|(j, _)| &j.id)
        .collect();
    assert_eq!(inserted.len(), 1, "{outcomes:?}");
    assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 1);
    let rec = store
        .idempotency(PRINCIPAL, TRIGGER, "same", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&rec.job_id, inserted[0]);
}

pub async fn inserted_jobs_are_deduplicated_by_key(store: &dyn Store) {
    let first = make::event_job(T0, "event:call_1:after-call");
    let dup = make::event_job(T0 + 1, "event:call_1:after-call");
    let mut later = make::event_job(T0 + 2, "event:call_1:other");
    later.status = JobStatus::Scheduled;
    later.run_at_ms = T0 + 9_000;
    store
        .insert_jobs(vec![first.clone(), dup.clone(), later.clone()])
        .await
        .unwrap();
    let again = make::event_job(T0 + 3, "event:call_1:after-call");
    store.insert_jobs(vec![again.clone()]).await.unwrap();
    // Jobs without a key are never duplicates of each other.
    let (a, b) = (make::job(T0 + 4), make::job(T0 + 5));
    store.insert_jobs(vec![a.clone(), b.clone()]).await.unwrap();

    let f = store.job(&first.id).await.unwrap().expect("the first");
    assert_eq!(f.trigger_id, None);
    assert_eq!(f.principal, "automation:after-call");
    assert_eq!(
        (f.status, f.action, f.input),
        (JobStatus::Queued, make::action(), make::input(T0 % 10_000))
    );
    assert!(store.job(&dup.id).await.unwrap().is_none());
    assert!(store.job(&again.id).await.unwrap().is_none());
    let l = store.job(&later.id).await.unwrap().unwrap();
    assert_eq!((l.status, l.run_at_ms), (JobStatus::Scheduled, T0 + 9_000));
    assert!(store.job(&a.id).await.unwrap().is_some());
    assert!(store.job(&b.id).await.unwrap().is_some());
    assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 4);
}

pub async fn jobs_are_listed_newest_first_by_filter_and_cursor(store: &dyn Store) {
    // Six jobs a second apart: (status, trigger, creator) vary.
    let at = |i: i64| T0 + i * 1_000;
    let mut jobs = Vec::new();
    for i in 0..6 {
        let mut j = if i % 2 == 0 {
            make::job(at(i))
        } else {
            make::scheduled(at(i), LATER)
        };
        if i >= 3 {
            j.principal = "jwt:user-1".into();
        }
        if i == 4 {
            j.trigger_id = Some(make::trigger("demo-automation"));
        }
        jobs.push(j);
    }
    for j in &jobs {
        store.enqueue(j.clone()).await.unwrap();
    }
    let event = make::event_job(at(6), "event:c:a");
    store.insert_jobs(vec![event.clone()]).await.unwrap();

    let ids = |v: Vec<callgate::store::JobRecord>| -> Vec<JobId> {
        v.into_iter().map(|r| r.id).collect()
    };
    let want = |idx: &[usize]| -> Vec<JobId> {
        let mut all: Vec<JobId> = jobs.iter().map(|j| j.id.clone()).collect();
        all.push(event.id.clone());
        idx.iter().map(|i| all[*i].clone()).collect()
    };
    let check = |filter: JobFilter, expect: Vec<JobId>| async move {
        let listed = ids(store.jobs(filter.clone(), None, 100).await.unwrap());
        assert_eq!(listed, expect, "{filter:?}");
        assert_eq!(
            store.count_jobs(filter.clone()).await.unwrap(),
            expect.len() as u64,
            "{filter:?}"
        );
    };
    check(JobFilter::default(), want(&[6, 5, 4, 3, 2, 1, 0])).await;
    let by_status = JobFilter {
        status: Some(JobStatus::Scheduled),
        ..Default::default()
    };
    check(by_status, want(&[5, 3, 1])).await;
    let by_trigger = JobFilter {
        trigger_id: Some(make::trigger(TRIGGER)),
        ..Default::default()
    };
    check(by_trigger, want(&[5, 3, 2, 1, 0])).await;
    let by_creator = JobFilter {
        created_by: Some("jwt:user-1".into()),
        ..Default::default()
    };
    check(by_creator, want(&[5, 4, 3])).await;
    let window = JobFilter {
        since_ms: Some(at(2)),
        until_ms: Some(at(5)),
        ..Default::default()
    };
    check(window, want(&[4, 3, 2])).await;
    let combined = JobFilter {
        status: Some(JobStatus::Queued),
        trigger_id: Some(make::trigger(TRIGGER)),
        created_by: Some(PRINCIPAL.into()),
        since_ms: Some(at(1)),
        until_ms: None,
        phone: None,
    };
    check(combined, want(&[2])).await;
    let nothing = JobFilter {
        since_ms: Some(at(7)),
        ..Default::default()
    };
    check(nothing, Vec::new()).await;

    // Pages of two, each after the last one's id, cover everything once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = ids(store
            .jobs(JobFilter::default(), cursor.clone(), 2)
            .await
            .unwrap());
        assert!(page.len() <= 2);
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        cursor = Some(last);
    }
    assert_eq!(seen, want(&[6, 5, 4, 3, 2, 1, 0]));
    // A limit of 0 still lists one.
    assert_eq!(
        ids(store.jobs(JobFilter::default(), None, 0).await.unwrap()),
        want(&[6])
    );
}

pub async fn json_that_does_not_parse_is_an_error_not_a_default(store: &dyn Store) {
    // An engine may refuse such text when it is written; if it stores it,
    // reading it into a record is an error, never a default value.
    let mut bad = make::job(T0);
    bad.action_json = "{not json".into();
    if store.insert_jobs(vec![bad.clone()]).await.is_ok() {
        assert!(
            matches!(store.job(&bad.id).await, Err(StoreError::Corrupt(_))),
            "a job whose action is not JSON read back as a record"
        );
        assert!(matches!(
            store.jobs(JobFilter::default(), None, 10).await,
            Err(StoreError::Corrupt(_))
        ));
        // A claim hands the text over exactly as stored (the runner makes
        // it the job's problem).
        let claimed = store.claim_jobs("w1", T0, LATER, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].action, "{not json");
    }
    let mut d = make::delivery("crm", T0);
    d.headers_json = "[oops".into();
    if let Ok(id) = store.create_delivery(d).await {
        assert!(matches!(
            store.delivery(&id).await,
            Err(StoreError::Corrupt(_))
        ));
        let all = callgate::store::DeliveryFilter {
            limit: 10,
            ..Default::default()
        };
        assert!(matches!(
            store.deliveries(all).await,
            Err(StoreError::Corrupt(_))
        ));
    }
}

pub async fn a_status_no_engine_writes_is_an_error_not_a_default(db: &TestDb) {
    let store = db.store();
    let j = make::job(T0);
    store.enqueue(j.clone()).await.unwrap();
    let c = make::call(&j.id, 0, make::AGENT, T0);
    store.reserve_call(c.clone(), 1).await.unwrap();
    let d = store
        .create_delivery(make::delivery("crm", T0))
        .await
        .unwrap();

    db.corrupt_status(Record::Job, j.id.as_str(), "done");
    db.corrupt_status(Record::Call, c.id.as_str(), "hung_up");
    db.corrupt_status(Record::Delivery, d.as_str(), "delivered");
    assert!(matches!(
        store.job(&j.id).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.jobs(JobFilter::default(), None, 10).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.call(&c.id).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.calls_for_job(&j.id).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.delivery(&d).await,
        Err(StoreError::Corrupt(_))
    ));
    // Nothing written over it either: a call event on it fails.
    let e = make::event(
        &c.id,
        "k1",
        Some(callgate::store::CallStatus::Completed),
        T0 + 1,
    );
    assert!(store.apply_call_event(e, make::no_jobs()).await.is_err());
}
