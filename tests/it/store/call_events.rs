//! Provider events for calls: idempotent by event key, forward only, and
//! on a final status the job woken, the line freed and the post-call jobs
//! inserted, all in one transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use callgate::ids::{CallId, JobId};
use callgate::store::{
    CallEventIn, CallRecord, CallStatus, EventApplied, EventJobs, JobFilter, JobStatus,
    Reservation, Store,
};
use serde_json::json;

use super::calls::{call, created};
use super::make::{self, AGENT, LATER, T0};

pub async fn call_events_apply_once_forward_only_and_merge_details(store: &dyn Store) {
    let c = created(store, &JobId::new(T0), 0, AGENT, T0).await;
    let finals = Arc::new(AtomicUsize::new(0));
    let count = |n: &Arc<AtomicUsize>| -> EventJobs {
        let n = n.clone();
        Box::new(move |_| {
            n.fetch_add(1, Ordering::SeqCst);
            Vec::new()
        })
    };
    let apply = |e: CallEventIn, f: EventJobs| store.apply_call_event(e, f);

    let mut ringing = make::event(&c, "k1", Some(CallStatus::Ringing), T0 + 1);
    ringing.provider_call_id = Some("prov-1".into());
    assert_eq!(
        apply(ringing.clone(), count(&finals)).await.unwrap(),
        EventApplied::Applied {
            moved_to: Some(CallStatus::Ringing)
        }
    );
    // The same event again (even with other content) changes nothing.
    let mut again = ringing.clone();
    again.status = Some(CallStatus::Completed);
    again.summary = Some("not this".into());
    assert_eq!(
        apply(again, count(&finals)).await.unwrap(),
        EventApplied::Duplicate
    );
    // Out of order: the status stays, the details are taken.
    let mut late = make::event(&c, "k2", Some(CallStatus::Dialing), T0 + 2);
    late.summary = Some("summary".into());
    late.provider_call_id = Some("prov-2".into());
    assert_eq!(
        apply(late, count(&finals)).await.unwrap(),
        EventApplied::Applied { moved_to: None }
    );
    let r = call(store, &c).await;
    assert_eq!(
        (r.status, r.summary.as_deref(), r.updated_at_ms),
        (CallStatus::Ringing, Some("summary"), T0 + 2)
    );
    assert_eq!(
        r.provider_call_id.as_deref(),
        Some("prov-1"),
        "the first provider id stays"
    );

    let mut answered = make::event(&c, "k3", Some(CallStatus::InProgress), T0 + 3);
    answered.custom.insert("a".into(), json!(1));
    apply(answered, count(&finals)).await.unwrap();
    let mut detail = make::event(&c, "k4", None, T0 + 4);
    detail.custom.insert("b".into(), json!({"x": [1, 2]}));
    detail.transcript = Some("Hello?".into());
    assert_eq!(
        apply(detail, count(&finals)).await.unwrap(),
        EventApplied::Applied { moved_to: None }
    );
    let r = call(store, &c).await;
    assert_eq!(
        (r.status, r.answered_at_ms, r.ended_at_ms),
        (CallStatus::InProgress, Some(T0 + 3), None)
    );
    assert_eq!(r.custom, json!({"a": 1, "b": {"x": [1, 2]}}));
    assert_eq!(r.transcript.as_deref(), Some("Hello?"));
    assert_eq!(finals.load(Ordering::SeqCst), 0, "nothing final yet");

    let mut ended = make::event(&c, "k5", Some(CallStatus::Completed), T0 + 5);
    ended.outcome = Some("interested".into());
    ended.duration_seconds = Some(42);
    ended.recording_url = Some("https://rec.example/1".into());
    assert_eq!(
        apply(ended, count(&finals)).await.unwrap(),
        EventApplied::Applied {
            moved_to: Some(CallStatus::Completed)
        }
    );
    let failed = make::event(&c, "k6", Some(CallStatus::Failed), T0 + 6);
    assert_eq!(
        apply(failed, count(&finals)).await.unwrap(),
        EventApplied::Applied { moved_to: None }
    );
    let r = call(store, &c).await;
    assert_eq!(r.status, CallStatus::Completed, "final stays final");
    assert_eq!(
        (r.outcome.as_deref(), r.duration_seconds),
        (Some("interested"), Some(42))
    );
    assert_eq!(r.recording_url.as_deref(), Some("https://rec.example/1"));
    assert_eq!(
        (r.answered_at_ms, r.ended_at_ms),
        (Some(T0 + 3), Some(T0 + 5))
    );
    assert_eq!(r.summary.as_deref(), Some("summary"));
    assert_eq!(
        finals.load(Ordering::SeqCst),
        1,
        "on_final runs once, on the move to a final status"
    );
}

/// A job that placed a call on `AGENT` and waits for it to end.
async fn placed_and_waiting(store: &dyn Store, at: i64) -> (JobId, CallId) {
    let j = make::job(at);
    store.enqueue(j.clone()).await.unwrap();
    let claim = store.claim_jobs("w", at, LATER, 1).await.unwrap()[0]
        .claim_id
        .clone();
    let c = match store
        .reserve_call(make::call(&j.id, 0, AGENT, at), 1)
        .await
        .unwrap()
    {
        Reservation::Created(c) => c,
        other => panic!("{other:?}"),
    };
    let wait = make::update(JobStatus::Waiting, LATER);
    assert!(store.finish_claim(&j.id, &claim, wait, at).await.unwrap());
    (j.id, c)
}

pub async fn a_final_call_event_wakes_the_job_frees_the_line_and_starts_its_jobs(
    store: &dyn Store,
) {
    let (job, c) = placed_and_waiting(store, T0).await;
    // Another job waits for the agent's only line.
    let w = make::job(T0 + 1);
    store.enqueue(w.clone()).await.unwrap();
    let claim = store.claim_jobs("w", T0 + 1, LATER, 1).await.unwrap()[0]
        .claim_id
        .clone();
    assert!(
        store
            .finish_claim(&w.id, &claim, make::line_wait(1), T0 + 1)
            .await
            .unwrap()
    );

    let seen = Arc::new(std::sync::Mutex::new(None));
    let auto = make::event_job(T0 + 2, &format!("event:{c}:after-call"));
    let dup = make::event_job(T0 + 3, &format!("event:{c}:after-call"));
    let on_final: EventJobs = {
        let (seen, auto, dup) = (seen.clone(), auto.clone(), dup.clone());
        Box::new(move |call: &CallRecord| {
            *seen.lock().unwrap() = Some(call.clone());
            vec![auto, dup]
        })
    };
    let mut e = make::event(&c, "end", Some(CallStatus::Completed), T0 + 10);
    e.outcome = Some("interested".into());
    assert_eq!(
        store.apply_call_event(e, on_final).await.unwrap(),
        EventApplied::Applied {
            moved_to: Some(CallStatus::Completed)
        }
    );
    let given = seen.lock().unwrap().take().expect("on_final was called");
    assert_eq!(
        (given.id, given.job_id, given.status),
        (c.clone(), job.clone(), CallStatus::Completed)
    );
    assert_eq!(
        (given.outcome.as_deref(), given.ended_at_ms),
        (Some("interested"), Some(T0 + 10))
    );

    assert_eq!(
        store.job(&job).await.unwrap().unwrap().run_at_ms,
        T0 + 10,
        "the job is woken"
    );
    assert_eq!(
        store.job(&w.id).await.unwrap().unwrap().run_at_ms,
        T0 + 10,
        "the line's waiter is woken"
    );
    let a = store
        .job(&auto.id)
        .await
        .unwrap()
        .expect("the automation's job");
    assert_eq!((a.status, a.trigger_id), (JobStatus::Queued, None));
    assert!(store.job(&dup.id).await.unwrap().is_none());
    let due: std::collections::HashSet<JobId> = store
        .claim_jobs("w2", T0 + 10, LATER, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(due, [job, w.id, auto.id].into_iter().collect());
}

pub async fn a_call_event_whose_jobs_cannot_be_inserted_changes_nothing(store: &dyn Store) {
    let (job, c) = placed_and_waiting(store, T0).await;
    let line_waiter = make::job(T0 + 1);
    store.enqueue(line_waiter.clone()).await.unwrap();
    let claim = store.claim_jobs("w", T0 + 1, LATER, 1).await.unwrap()[0]
        .claim_id
        .clone();
    assert!(
        store
            .finish_claim(&line_waiter.id, &claim, make::line_wait(1), T0 + 1)
            .await
            .unwrap()
    );
    // A job with an id that exists already cannot be inserted.
    let mut clash = make::event_job(T0 + 2, "event:clash");
    clash.id = job.clone();
    let e = make::event(&c, "end", Some(CallStatus::Completed), T0 + 10);
    assert!(
        store
            .apply_call_event(e.clone(), Box::new(move |_| vec![clash]))
            .await
            .is_err(),
        "the event cannot be applied without its jobs"
    );
    let r = call(store, &c).await;
    assert_eq!((r.status, r.ended_at_ms), (CallStatus::Dialing, None));
    assert_eq!(store.job(&job).await.unwrap().unwrap().run_at_ms, LATER);
    assert_eq!(
        store.job(&line_waiter.id).await.unwrap().unwrap().run_at_ms,
        LATER
    );
    assert_eq!(store.count_jobs(JobFilter::default()).await.unwrap(), 2);
    // Nothing was recorded: the same event applies in full later.
    assert_eq!(
        store.apply_call_event(e, make::no_jobs()).await.unwrap(),
        EventApplied::Applied {
            moved_to: Some(CallStatus::Completed)
        }
    );
    assert_eq!(store.job(&job).await.unwrap().unwrap().run_at_ms, T0 + 10);
}
