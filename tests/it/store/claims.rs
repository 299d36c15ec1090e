//! Claims and leases: what is due, in which order, who may finish it, and
//! how a job becomes due again.

use std::collections::HashSet;

use callgate::ids::JobId;
use callgate::store::{JobStatus, JobUpdate, Store};
use serde_json::json;

use super::make::{self, LATER, T0};

fn ids(claimed: &[callgate::store::ClaimedJob]) -> Vec<JobId> {
    claimed.iter().map(|c| c.id.clone()).collect()
}

pub async fn claims_take_due_jobs_earliest_first(store: &dyn Store) {
    let mut a = make::job(T0);
    a.run_at_ms = T0 + 300;
    let b = make::scheduled(T0 + 1, T0 + 100);
    let mut c = make::job(T0 + 2);
    c.run_at_ms = T0 + 200;
    let future = make::scheduled(T0 + 3, T0 + 5_000);
    for j in [&a, &b, &c, &future] {
        store.enqueue(j.clone()).await.unwrap();
    }
    let now = T0 + 1_000;
    let first = store.claim_jobs("w1", now, LATER, 2).await.unwrap();
    assert_eq!(ids(&first), [b.id.clone(), c.id.clone()]);
    let claimed = &first[0];
    assert_eq!(claimed.action, b.action_json, "as stored");
    assert_eq!(claimed.input, b.input_json);
    assert_eq!(claimed.state, None);
    assert_eq!((claimed.attempts, claimed.created_at_ms), (0, T0 + 1));
    assert_eq!(
        ids(&store.claim_jobs("w1", now, LATER, 10).await.unwrap()),
        vec![a.id.clone()]
    );
    assert!(
        store
            .claim_jobs("w2", now, LATER, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&store.claim_jobs("w1", T0 + 5_000, LATER, 10).await.unwrap()),
        vec![future.id.clone()]
    );

    let running = store.job(&b.id).await.unwrap().unwrap();
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.updated_at_ms, now);
    let events = store.job_events(&b.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].at_ms, events[0].status, events[0].attempt),
        (now, JobStatus::Running, Some(0))
    );
}

pub async fn a_waiting_job_is_claimed_again_when_its_time_comes(store: &dyn Store) {
    let j = make::job(T0);
    store.enqueue(j.clone()).await.unwrap();
    let first = store.claim_jobs("w1", T0, LATER, 1).await.unwrap();
    let wait = JobUpdate {
        reason: Some("waiting for the call".into()),
        state: Some(json!({"step": 1, "calls": {"0": "call_x"}})),
        attempts: 1,
        detail: Some(json!({"call": "call_x"})),
        ..make::update(JobStatus::Waiting, T0 + 5_000)
    };
    assert!(
        store
            .finish_claim(&j.id, &first[0].claim_id, wait, T0 + 10)
            .await
            .unwrap()
    );
    let r = store.job(&j.id).await.unwrap().unwrap();
    assert_eq!(r.status, JobStatus::Waiting);
    assert_eq!(r.status_reason.as_deref(), Some("waiting for the call"));
    assert_eq!(
        (r.run_at_ms, r.updated_at_ms, r.attempts),
        (T0 + 5_000, T0 + 10, 1)
    );
    assert_eq!(r.state, Some(json!({"step": 1, "calls": {"0": "call_x"}})));

    assert!(
        store
            .claim_jobs("w1", T0 + 4_999, LATER, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim_jobs("w2", T0 + 5_000, LATER, 10).await.unwrap();
    assert_eq!(ids(&again), vec![j.id.clone()]);
    let state: serde_json::Value =
        serde_json::from_str(again[0].state.as_deref().unwrap()).unwrap();
    assert_eq!(state, json!({"step": 1, "calls": {"0": "call_x"}}));
    assert_eq!(again[0].attempts, 1);

    // Finishing without a state leaves the stored one.
    let done = JobUpdate {
        result: Some(json!({"call_ids": ["call_x"]})),
        attempts: 1,
        ..make::update(JobStatus::Succeeded, T0 + 5_000)
    };
    assert!(
        store
            .finish_claim(&j.id, &again[0].claim_id, done, T0 + 5_100)
            .await
            .unwrap()
    );
    let r = store.job(&j.id).await.unwrap().unwrap();
    assert_eq!(r.status, JobStatus::Succeeded);
    assert_eq!(r.state, Some(json!({"step": 1, "calls": {"0": "call_x"}})));
    assert_eq!(r.result, Some(json!({"call_ids": ["call_x"]})));
    assert_eq!(r.status_reason, None);

    let events = store.job_events(&j.id).await.unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.at_ms, e.status, e.reason.as_deref(), e.attempt))
        .collect();
    assert_eq!(
        got,
        [
            (T0, JobStatus::Running, None, Some(0)),
            (
                T0 + 10,
                JobStatus::Waiting,
                Some("waiting for the call"),
                Some(1)
            ),
            (T0 + 5_000, JobStatus::Running, None, Some(1)),
            (T0 + 5_100, JobStatus::Succeeded, None, Some(1)),
        ]
    );
    assert_eq!(events[1].detail, Some(json!({"call": "call_x"})));
    assert!(
        store
            .claim_jobs("w1", LATER, LATER + 1, 10)
            .await
            .unwrap()
            .is_empty(),
        "final"
    );
}

pub async fn an_expired_lease_is_taken_over_and_the_old_owner_is_fenced(store: &dyn Store) {
    let j = make::job(T0);
    store.enqueue(j.clone()).await.unwrap();
    let w1 = store.claim_jobs("w1", T0, T0 + 1_000, 1).await.unwrap()[0]
        .claim_id
        .clone();
    assert!(store.renew_lease(&j.id, &w1, T0 + 2_000).await.unwrap());
    assert!(
        !store.renew_lease(&j.id, "w1", T0 + 9_000).await.unwrap(),
        "the owner's name is not the claim"
    );
    assert!(
        store
            .claim_jobs("w2", T0 + 1_999, LATER, 10)
            .await
            .unwrap()
            .is_empty(),
        "the renewed lease still holds"
    );
    let taken = store.claim_jobs("w2", T0 + 2_001, LATER, 10).await.unwrap();
    assert_eq!(
        ids(&taken),
        vec![j.id.clone()],
        "the worker died: its job is taken back"
    );
    let w2 = taken[0].claim_id.clone();

    // The first worker has lost it: nothing it writes lands.
    assert!(!store.renew_lease(&j.id, &w1, T0 + 9_000).await.unwrap());
    let events_before = store.job_events(&j.id).await.unwrap().len();
    let stale = make::update(JobStatus::Succeeded, T0);
    assert!(
        !store
            .finish_claim(&j.id, &w1, stale, T0 + 2_100)
            .await
            .unwrap()
    );
    let r = store.job(&j.id).await.unwrap().unwrap();
    assert_eq!(r.status, JobStatus::Running);
    assert_eq!(store.job_events(&j.id).await.unwrap().len(), events_before);

    let failed = JobUpdate {
        reason: Some("the provider refused the call".into()),
        error: Some(json!({"code": "provider_error", "status": 400})),
        attempts: 2,
        detail: Some(json!({"http_status": 400})),
        ..make::update(JobStatus::Failed, T0 + 2_200)
    };
    assert!(
        store
            .finish_claim(&j.id, &w2, failed.clone(), T0 + 2_200)
            .await
            .unwrap()
    );
    let r = store.job(&j.id).await.unwrap().unwrap();
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(
        r.status_reason.as_deref(),
        Some("the provider refused the call")
    );
    assert_eq!(
        r.error,
        Some(json!({"code": "provider_error", "status": 400}))
    );
    assert_eq!(
        (r.attempts, r.updated_at_ms, r.result),
        (2, T0 + 2_200, None)
    );
    let last = store.job_events(&j.id).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.at_ms, last.status, last.attempt),
        (T0 + 2_200, JobStatus::Failed, Some(2))
    );
    assert_eq!(
        last.reason.as_deref(),
        Some("the provider refused the call")
    );
    assert_eq!(last.detail, Some(json!({"http_status": 400})));
    // Finished: no lease to renew, nothing to finish twice.
    assert!(!store.renew_lease(&j.id, &w2, LATER).await.unwrap());
    assert!(
        !store
            .finish_claim(&j.id, &w2, failed, T0 + 2_300)
            .await
            .unwrap()
    );
}

pub async fn released_leases_are_claimable_at_once_and_only_the_owners(store: &dyn Store) {
    let jobs: Vec<_> = (0..3).map(|i| make::job(T0 + i)).collect();
    for j in &jobs {
        store.enqueue(j.clone()).await.unwrap();
    }
    let w1 = store.claim_jobs("w1", T0 + 10, LATER, 2).await.unwrap();
    let w2 = store.claim_jobs("w2", T0 + 10, LATER, 1).await.unwrap();
    assert_eq!(store.release_leases("w1", T0 + 20).await.unwrap(), 2);
    assert_eq!(
        store.release_leases("w1", T0 + 20).await.unwrap(),
        2,
        "still its leases"
    );
    let taken: HashSet<JobId> = ids(&store.claim_jobs("w3", T0 + 20, LATER, 10).await.unwrap())
        .into_iter()
        .collect();
    assert_eq!(
        taken,
        HashSet::from([jobs[0].id.clone(), jobs[1].id.clone()])
    );
    assert_eq!(
        store.release_leases("w1", T0 + 30).await.unwrap(),
        0,
        "w3 holds them now"
    );
    assert!(
        !store
            .finish_claim(
                &jobs[0].id,
                &w1[0].claim_id,
                make::update(JobStatus::Succeeded, T0),
                T0 + 30
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_claim(
                &jobs[2].id,
                &w2[0].claim_id,
                make::update(JobStatus::Succeeded, T0),
                T0 + 30
            )
            .await
            .unwrap()
    );
}

pub async fn wake_jobs_makes_waiting_and_scheduled_jobs_due_now(store: &dyn Store) {
    let scheduled = make::scheduled(T0, LATER);
    let waiting = make::job(T0 + 1);
    let queued = make::job(T0 + 2);
    let running = make::job(T0 + 3);
    for j in [&scheduled, &waiting, &queued, &running] {
        store.enqueue(j.clone()).await.unwrap();
    }
    // `waiting` and `running` are claimed; `waiting` is left waiting.
    let claimed = store.claim_jobs("w1", T0 + 3, LATER, 3).await.unwrap();
    assert_eq!(
        ids(&claimed),
        [waiting.id.clone(), queued.id.clone(), running.id.clone()]
    );
    let wait = make::update(JobStatus::Waiting, LATER);
    assert!(
        store
            .finish_claim(&waiting.id, &claimed[0].claim_id, wait, T0 + 4)
            .await
            .unwrap()
    );
    let requeue = make::update(JobStatus::Queued, T0 + 4);
    assert!(
        store
            .finish_claim(&queued.id, &claimed[1].claim_id, requeue, T0 + 4)
            .await
            .unwrap()
    );

    let now = T0 + 1_000;
    store
        .wake_jobs(
            vec![
                scheduled.id.clone(),
                waiting.id.clone(),
                queued.id.clone(),
                running.id.clone(),
                JobId::new(T0),
            ],
            now,
        )
        .await
        .unwrap();
    let run_at = |id: JobId| async move { store.job(&id).await.unwrap().unwrap() };
    assert_eq!(run_at(scheduled.id.clone()).await.run_at_ms, now);
    assert_eq!(run_at(waiting.id.clone()).await.run_at_ms, now);
    assert_eq!(
        run_at(queued.id.clone()).await.run_at_ms,
        T0 + 4,
        "already due: not moved later"
    );
    let r = run_at(running.id.clone()).await;
    assert_eq!(r.status, JobStatus::Running, "a running job is not touched");

    let due = store.claim_jobs("w2", now, LATER, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|c| c.id.clone()).collect::<HashSet<_>>(),
        HashSet::from([scheduled.id, waiting.id, queued.id])
    );
}

/// A worker stalls past its lease and the same process claims the job
/// again in another slot: the owner is the same, the claims are not, and
/// only the second claim's writes land (a step is never applied twice).
pub async fn a_stalled_claim_is_fenced_even_when_its_own_owner_claims_again(store: &dyn Store) {
    let j = make::job(T0);
    store.enqueue(j.clone()).await.unwrap();
    let first = store.claim_jobs("w1", T0, T0 + 1_000, 1).await.unwrap();
    assert_eq!(ids(&first), vec![j.id.clone()]);
    let second = store
        .claim_jobs("w1", T0 + 1_001, T0 + 2_000, 10)
        .await
        .unwrap();
    assert_eq!(ids(&second), vec![j.id.clone()], "the lease expired");
    let (stale, live) = (&first[0].claim_id, &second[0].claim_id);
    assert_ne!(stale, live, "a fresh id per claim");

    // The stalled attempt wakes up: nothing it writes lands. (Its renewal
    // would shorten the lease: had it landed, the job would be due below.)
    let record_before = store.job(&j.id).await.unwrap().unwrap();
    let events_before = store.job_events(&j.id).await.unwrap();
    assert!(!store.renew_lease(&j.id, stale, T0 + 1_500).await.unwrap());
    let done = JobUpdate {
        result: Some(json!({"by": "stale"})),
        attempts: 1,
        ..make::update(JobStatus::Succeeded, T0)
    };
    assert!(
        !store
            .finish_claim(&j.id, stale, done.clone(), T0 + 1_100)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_jobs("w2", T0 + 1_600, LATER, 10)
            .await
            .unwrap()
            .is_empty(),
        "the live lease is untouched"
    );
    let r = store.job(&j.id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.updated_at_ms, r.attempts, r.result),
        (
            JobStatus::Running,
            record_before.updated_at_ms,
            record_before.attempts,
            None
        )
    );
    assert_eq!(
        store.job_events(&j.id).await.unwrap().len(),
        events_before.len()
    );

    // The live claim renews and finishes.
    assert!(store.renew_lease(&j.id, live, T0 + 3_000).await.unwrap());
    assert!(
        store
            .claim_jobs("w2", T0 + 2_500, LATER, 10)
            .await
            .unwrap()
            .is_empty(),
        "renewed"
    );
    let done = JobUpdate {
        result: Some(json!({"by": "live"})),
        ..done
    };
    assert!(
        store
            .finish_claim(&j.id, live, done, T0 + 2_600)
            .await
            .unwrap()
    );
    let r = store.job(&j.id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.result, r.updated_at_ms),
        (
            JobStatus::Succeeded,
            Some(json!({"by": "live"})),
            T0 + 2_600
        )
    );
    let events: Vec<_> = store
        .job_events(&j.id)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.at_ms, e.status))
        .collect();
    assert_eq!(
        events,
        [
            (T0, JobStatus::Running),
            (T0 + 1_001, JobStatus::Running),
            (T0 + 2_600, JobStatus::Succeeded),
        ]
    );
}

/// Graceful shutdown releases the owner's leases whatever their claim ids,
/// and no other owner's: not one whose name contains it, extends it, or
/// would match it as a pattern.
pub async fn release_leases_matches_its_owner_exactly(store: &dyn Store) {
    let owners = ["w1", "x/w1", "w1/x", "w1x", "w%", "w_", "w"];
    let mut held = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        let j = make::job(T0 + i as i64);
        store.enqueue(j.clone()).await.unwrap();
        let claimed = store
            .claim_jobs(owner, T0 + 10 + i as i64, LATER, 1)
            .await
            .unwrap();
        assert_eq!(ids(&claimed), vec![j.id.clone()], "{owner}");
        held.push(j.id);
    }
    assert_eq!(store.release_leases("w1", T0 + 20).await.unwrap(), 1);
    assert_eq!(store.release_leases("w%", T0 + 20).await.unwrap(), 1);
    assert_eq!(store.release_leases("", T0 + 20).await.unwrap(), 0);
    assert_eq!(store.release_leases("%", T0 + 20).await.unwrap(), 0);
    let taken: HashSet<JobId> = ids(&store.claim_jobs("w9", T0 + 20, LATER, 10).await.unwrap())
        .into_iter()
        .collect();
    assert_eq!(taken, HashSet::from([held[0].clone(), held[4].clone()]));
}
