//! Operations on jobs for the operations API: listing by the number a job
//! calls, cancelling (and never both cancelled and claimed).

use std::collections::BTreeSet;
use std::sync::Arc;

use callgate::ids::JobId;
use callgate::store::{Cancel, JobFilter, JobStatus, Store};
use serde_json::json;

use super::make::{self, AGENT, LATER, T0};

pub async fn jobs_are_listed_by_the_number_they_call(store: &dyn Store) {
    // A start_call job names its number in its action; an automation job
    // only through the calls it placed.
    let mut direct = make::job(T0);
    direct.action_json =
        json!({"type": "start_call", "agent": AGENT, "to": "+15550120001"}).to_string();
    let mut automation = make::job(T0 + 1);
    automation.action_json = json!({"type": "automation", "name": "crm"}).to_string();
    automation.principal = Arc::from("key:other");
    let mut both = make::job(T0 + 2);
    both.action_json =
        json!({"type": "start_call", "agent": AGENT, "to": "+15550120001"}).to_string();
    for j in [&direct, &automation, &both] {
        store.enqueue(j.clone()).await.unwrap();
    }
    let mut call = make::call(&automation.id, 0, AGENT, T0 + 10);
    call.to = "+15550120002".into();
    store.reserve_call(call, 5).await.unwrap();

    let listed = |phone: &str, created_by: Option<&str>| {
        let filter = JobFilter {
            phone: Some(phone.to_owned()),
            created_by: created_by.map(str::to_owned),
            ..Default::default()
        };
        async move {
            let rows = store.jobs(filter.clone(), None, 10).await.unwrap();
            let count = store.count_jobs(filter).await.unwrap();
            let ids: Vec<JobId> = rows.into_iter().map(|r| r.id).collect();
            assert_eq!(ids.len() as u64, count);
            ids
        }
    };
    assert_eq!(
        listed("+15550120001", None).await,
        vec![both.id.clone(), direct.id.clone()]
    );
    assert_eq!(
        listed("+15550120002", None).await,
        vec![automation.id.clone()]
    );
    assert_eq!(
        listed("+15550120002", Some("key:other")).await,
        vec![automation.id.clone()]
    );
    assert!(
        listed("+15550120002", Some(make::PRINCIPAL))
            .await
            .is_empty()
    );
    assert!(listed("+15550120003", None).await.is_empty());
    // A prefix or a pattern is not a match.
    assert!(listed("+1555012000", None).await.is_empty());
    assert!(listed("%", None).await.is_empty());
}

pub async fn only_queued_scheduled_and_waiting_jobs_are_cancelled_and_never_claimed_after(
    store: &dyn Store,
) {
    // Claimed first: one left waiting for a line, one running, one done.
    let (w, r, f) = (make::job(T0), make::job(T0 + 1), make::job(T0 + 2));
    for j in [&w, &r, &f] {
        store.enqueue(j.clone()).await.unwrap();
    }
    let claims = store.claim_jobs("w1", T0 + 10, LATER, 10).await.unwrap();
    assert_eq!(claims.len(), 3);
    let claim = |id: &JobId| {
        claims
            .iter()
            .find(|c| &c.id == id)
            .unwrap()
            .claim_id
            .clone()
    };
    let now = T0 + 20;
    assert!(
        store
            .finish_claim(&w.id, &claim(&w.id), make::line_wait(1), now)
            .await
            .unwrap()
    );
    let done = make::update(JobStatus::Succeeded, now);
    assert!(
        store
            .finish_claim(&f.id, &claim(&f.id), done, now)
            .await
            .unwrap()
    );
    let (q, s) = (make::job(T0 + 3), make::scheduled(T0 + 4, T0 + 5_000));
    for j in [&q, &s] {
        store.enqueue(j.clone()).await.unwrap();
    }

    let at = T0 + 30;
    let cancel = |id: &JobId| {
        let id = id.clone();
        async move {
            store
                .cancel_job(&id, "cancelled by key:ops".into(), at)
                .await
        }
    };
    for j in [&q, &s, &w] {
        assert_eq!(
            cancel(&j.id).await.unwrap(),
            Cancel::Cancelled,
            "{:?}",
            j.id
        );
        let rec = store.job(&j.id).await.unwrap().unwrap();
        assert_eq!(rec.status, JobStatus::Cancelled);
        assert_eq!(rec.status_reason.as_deref(), Some("cancelled by key:ops"));
        assert_eq!(rec.updated_at_ms, at);
        let last = store.job_events(&j.id).await.unwrap().pop().unwrap();
        assert_eq!((last.status, last.at_ms), (JobStatus::Cancelled, at));
        assert_eq!(last.reason.as_deref(), Some("cancelled by key:ops"));
    }
    assert_eq!(
        cancel(&r.id).await.unwrap(),
        Cancel::NotCancellable(JobStatus::Running)
    );
    assert_eq!(
        cancel(&f.id).await.unwrap(),
        Cancel::NotCancellable(JobStatus::Succeeded)
    );
    assert_eq!(
        cancel(&q.id).await.unwrap(),
        Cancel::NotCancellable(JobStatus::Cancelled),
        "a second cancel changes nothing"
    );
    assert_eq!(
        cancel(&JobId::new(T0 + 99)).await.unwrap(),
        Cancel::NotFound
    );
    assert_eq!(store.job_events(&q.id).await.unwrap().len(), 1);

    // Woken, past every time, and with the line free: no cancelled job is
    // claimed (only the running one, whose lease has expired by then).
    store
        .wake_jobs(vec![w.id.clone(), s.id.clone()], at)
        .await
        .unwrap();
    let later = store
        .claim_jobs("w2", LATER + 1, LATER + 60_000, 10)
        .await
        .unwrap();
    let ids: Vec<JobId> = later.into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![r.id.clone()]);
    assert_eq!(
        store.job(&s.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
}

pub async fn a_cancel_and_a_claim_never_both_win(store: &dyn Store) {
    let jobs: Vec<_> = (0..40).map(|i| make::job(T0 + i)).collect();
    for j in &jobs {
        store.enqueue(j.clone()).await.unwrap();
    }
    let now = T0 + 1_000;
    let claimer = |owner: &'static str| async move {
        let mut claimed = Vec::new();
        for _ in 0..20 {
            for c in store.claim_jobs(owner, now, LATER, 3).await.unwrap() {
                claimed.push(c.id);
            }
        }
        claimed
    };
    let canceller = async {
        let mut cancelled = Vec::new();
        for j in jobs.iter().rev() {
            match store.cancel_job(&j.id, "test".into(), now).await.unwrap() {
                Cancel::Cancelled => cancelled.push(j.id.clone()),
                Cancel::NotCancellable(JobStatus::Running) => {}
                other => panic!("{other:?}"),
            }
        }
        cancelled
    };
    let (a, b, cancelled) = tokio::join!(claimer("w1"), claimer("w2"), canceller);
    let claimed: BTreeSet<JobId> = a.into_iter().chain(b).collect();
    let cancelled: BTreeSet<JobId> = cancelled.into_iter().collect();
    assert!(
        claimed.is_disjoint(&cancelled),
        "a job both claimed and cancelled"
    );
    assert_eq!(
        claimed.len() + cancelled.len(),
        jobs.len(),
        "every job one or the other"
    );
    for j in &jobs {
        let status = store.job(&j.id).await.unwrap().unwrap().status;
        let want = if cancelled.contains(&j.id) {
            JobStatus::Cancelled
        } else {
            JobStatus::Running
        };
        assert_eq!(status, want);
    }
}
