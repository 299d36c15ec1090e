//! Jobs waiting for one of an agent's lines (`JobUpdate::line_wait`): a
//! freed line wakes one waiter, oldest first; a woken job that finds the
//! lines taken again waits again without a trace in its event log; a line
//! freed while a job was deciding to wait makes it due at once.

use callgate::ids::{CallId, JobId};
use callgate::store::{
    CallStatus, ClaimedJob, EventApplied, JobStatus, JobUpdate, Reservation, Store,
};

use super::make::{self, AGENT, LATER, T0};

/// A running job (claimed by `w`), created at `at`, and its claim id.
async fn running(store: &dyn Store, at: i64) -> (JobId, String) {
    let j = make::job(at);
    store.enqueue(j.clone()).await.unwrap();
    let claimed = store.claim_jobs("w", at, LATER, 1).await.unwrap();
    assert_eq!(claimed[0].id, j.id);
    (j.id, claimed[0].claim_id.clone())
}

/// A call on `AGENT` (one line) for `job`; it must get the line.
async fn take_line(store: &dyn Store, job: &JobId, at: i64) -> CallId {
    match store
        .reserve_call(make::call(job, 0, AGENT, at), 1)
        .await
        .unwrap()
    {
        Reservation::Created(id) => id,
        other => panic!("expected the line, got {other:?}"),
    }
}

/// A job that found the line busy and waits for it.
async fn waiter(store: &dyn Store, at: i64) -> JobId {
    let (j, claim) = running(store, at).await;
    let busy = store
        .reserve_call(make::call(&j, 0, AGENT, at), 1)
        .await
        .unwrap();
    assert!(matches!(busy, Reservation::Busy { active: 1 }), "{busy:?}");
    assert!(
        store
            .finish_claim(&j, &claim, make::line_wait(1), at)
            .await
            .unwrap()
    );
    let r = store.job(&j).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.run_at_ms),
        (JobStatus::Waiting, LATER),
        "the line is busy"
    );
    j
}

async fn end_call(store: &dyn Store, call: &CallId, key: &str, at: i64) {
    let e = make::event(call, key, Some(CallStatus::Completed), at);
    let applied = store.apply_call_event(e, make::no_jobs()).await.unwrap();
    assert_eq!(
        applied,
        EventApplied::Applied {
            moved_to: Some(CallStatus::Completed)
        }
    );
}

async fn due(store: &dyn Store, now: i64) -> Vec<ClaimedJob> {
    store.claim_jobs("w", now, LATER, 10).await.unwrap()
}

fn ids(claimed: &[ClaimedJob]) -> Vec<JobId> {
    claimed.iter().map(|c| c.id.clone()).collect()
}

pub async fn a_freed_line_wakes_the_oldest_waiter_only(store: &dyn Store) {
    let (holder, _) = running(store, T0).await;
    let line = take_line(store, &holder, T0).await;
    // Created in this order; the second waits first.
    let (older, claim) = running(store, T0 + 10).await;
    let younger = waiter(store, T0 + 20).await;
    let busy = store
        .reserve_call(make::call(&older, 0, AGENT, T0 + 30), 1)
        .await
        .unwrap();
    assert!(matches!(busy, Reservation::Busy { .. }));
    assert!(
        store
            .finish_claim(&older, &claim, make::line_wait(1), T0 + 30)
            .await
            .unwrap()
    );
    assert!(due(store, T0 + 40).await.is_empty());

    end_call(store, &line, "end", T0 + 50).await;
    assert_eq!(
        ids(&due(store, T0 + 50).await),
        vec![older.clone()],
        "one line, one waiter, the oldest"
    );
    assert_eq!(store.job(&younger).await.unwrap().unwrap().run_at_ms, LATER);
}

pub async fn a_woken_job_that_waits_again_writes_no_event(store: &dyn Store) {
    let (holder, _) = running(store, T0).await;
    let line = take_line(store, &holder, T0).await;
    let w = waiter(store, T0 + 10).await;
    let logged = store.job_events(&w).await.unwrap();
    assert_eq!(
        logged.iter().map(|e| e.status).collect::<Vec<_>>(),
        [JobStatus::Running, JobStatus::Waiting]
    );

    let (other, _) = running(store, T0 + 15).await;
    end_call(store, &line, "end-1", T0 + 20).await;
    // Someone else takes the freed line before the woken job gets to it.
    let line2 = take_line(store, &other, T0 + 21).await;
    let woken = due(store, T0 + 22).await;
    assert_eq!(ids(&woken), vec![w.clone()]);
    let busy = store
        .reserve_call(make::call(&w, 0, AGENT, T0 + 23), 1)
        .await
        .unwrap();
    assert!(matches!(busy, Reservation::Busy { .. }));
    assert!(
        store
            .finish_claim(&w, &woken[0].claim_id, make::line_wait(1), T0 + 23)
            .await
            .unwrap()
    );
    let r = store.job(&w).await.unwrap().unwrap();
    assert_eq!((r.status, r.run_at_ms), (JobStatus::Waiting, LATER));
    let after = store.job_events(&w).await.unwrap();
    assert_eq!(
        after.len(),
        logged.len(),
        "a futile wake-up writes nothing: {after:?}"
    );

    // Woken again, it gets the line: its run is logged from the claim on.
    end_call(store, &line2, "end-2", T0 + 30).await;
    let woken = due(store, T0 + 31).await;
    assert_eq!(ids(&woken), vec![w.clone()]);
    let call = take_line(store, &w, T0 + 32).await;
    let wait_call = JobUpdate {
        reason: Some(format!("waiting for call {call}")),
        attempts: 1,
        ..make::update(JobStatus::Waiting, LATER)
    };
    assert!(
        store
            .finish_claim(&w, &woken[0].claim_id, wait_call, T0 + 33)
            .await
            .unwrap()
    );
    let events = store.job_events(&w).await.unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.at_ms, e.status, e.attempt))
        .collect();
    assert_eq!(
        got,
        [
            (T0 + 10, JobStatus::Running, Some(0)),
            (T0 + 10, JobStatus::Waiting, Some(0)),
            (T0 + 31, JobStatus::Running, Some(0)),
            (T0 + 33, JobStatus::Waiting, Some(1)),
        ]
    );
}

pub async fn a_line_freed_before_the_wait_is_written_makes_the_job_due_at_once(store: &dyn Store) {
    let (holder, _) = running(store, T0).await;
    let line = take_line(store, &holder, T0).await;
    let (j, claim) = running(store, T0 + 10).await;
    let busy = store
        .reserve_call(make::call(&j, 0, AGENT, T0 + 11), 1)
        .await
        .unwrap();
    assert!(matches!(busy, Reservation::Busy { .. }));
    // The line frees up now: there is no waiter yet to wake.
    end_call(store, &line, "end", T0 + 12).await;
    assert!(
        store
            .finish_claim(&j, &claim, make::line_wait(1), T0 + 13)
            .await
            .unwrap()
    );
    let r = store.job(&j).await.unwrap().unwrap();
    assert_eq!((r.status, r.run_at_ms), (JobStatus::Waiting, T0 + 13));
    assert_eq!(ids(&due(store, T0 + 13).await), [j]);

    // With more lines than calls, the same.
    let (second_holder, _) = running(store, T0 + 19).await;
    take_line(store, &second_holder, T0 + 20).await;
    let (k, claim) = running(store, T0 + 20).await;
    assert!(
        store
            .finish_claim(&k, &claim, make::line_wait(2), T0 + 21)
            .await
            .unwrap()
    );
    assert_eq!(store.job(&k).await.unwrap().unwrap().run_at_ms, T0 + 21);
}

/// The ways a call leaves its line.
#[derive(Debug, Clone, Copy)]
enum Off {
    /// The provider's answer to the dial says it failed.
    DialFailed,
    /// Set outright: a failed dial.
    SetFailed,
    /// Set outright: nobody can tell after a crash.
    SetUnknown,
    /// A provider event.
    NoAnswerEvent,
}

async fn leave_line(store: &dyn Store, how: Off, call: &CallId, at: i64) {
    match how {
        Off::DialFailed => store
            .call_dialed(call, Some("p1"), CallStatus::Failed, at)
            .await
            .unwrap(),
        Off::SetFailed => store
            .set_call_status(call, CallStatus::Failed, Some("refused".into()), at)
            .await
            .unwrap(),
        Off::SetUnknown => store
            .set_call_status(call, CallStatus::Unknown, Some("crashed".into()), at)
            .await
            .unwrap(),
        Off::NoAnswerEvent => {
            let e = make::event(call, "na", Some(CallStatus::NoAnswer), at);
            store.apply_call_event(e, make::no_jobs()).await.unwrap();
        }
    }
}

pub async fn every_way_a_call_leaves_its_line_wakes_one_waiter(store: &dyn Store) {
    let mut at = T0;
    for how in [
        Off::DialFailed,
        Off::SetFailed,
        Off::SetUnknown,
        Off::NoAnswerEvent,
    ] {
        let (holder, holder_claim) = running(store, at).await;
        let line = take_line(store, &holder, at).await;
        let first = waiter(store, at + 1).await;
        let second = waiter(store, at + 2).await;
        leave_line(store, how, &line, at + 3).await;
        let woken = due(store, at + 3).await;
        assert_eq!(ids(&woken), vec![first.clone()], "{how:?}");
        // Leave no waiter behind for the next round.
        let done = || make::update(JobStatus::Succeeded, at);
        assert!(
            store
                .finish_claim(&first, &woken[0].claim_id, done(), at + 4)
                .await
                .unwrap()
        );
        store.wake_jobs(vec![second.clone()], at + 4).await.unwrap();
        let woken = due(store, at + 4).await;
        assert_eq!(ids(&woken), vec![second.clone()], "{how:?}");
        assert!(
            store
                .finish_claim(&second, &woken[0].claim_id, done(), at + 5)
                .await
                .unwrap()
        );
        assert!(
            store
                .finish_claim(&holder, &holder_claim, done(), at + 5)
                .await
                .unwrap()
        );
        at += 100;
    }
}
