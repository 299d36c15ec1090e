//! Campaign dedupe keys: claimed with the job in one commit, once per
//! trigger and key while live, never leaving an Idempotency-Key record for
//! a job that lost its dedupe key, and purged with the Idempotency-Keys.

use callgate::store::{DEDUPE_PRINCIPAL, DedupeClaim, EnqueueOutcome, NewJob, Store};
use futures_util::future::join_all;

use super::make::{self, PRINCIPAL, T0, TRIGGER};

fn deduped(job: NewJob, key: &str, expires_at: i64) -> NewJob {
    let body = format!("{{\"job_id\":\"{}\"}}", job.id);
    NewJob {
        dedupe: Some(DedupeClaim {
            key: key.into(),
            response_body: body,
            expires_at_ms: expires_at,
        }),
        ..job
    }
}

pub async fn a_dedupe_key_makes_one_job_until_it_expires_and_is_purged(store: &dyn Store) {
    let expires = T0 + 1_000;
    // Concurrent enqueues share a batch: one wins, the rest are duplicates.
    let jobs: Vec<NewJob> = (0..8)
        .map(|i| deduped(make::job(T0 + i), "+15550100:spring", expires))
        .collect();
    let outcomes = join_all(jobs.iter().map(|j| store.enqueue(j.clone()))).await;
    let won: Vec<&NewJob> = jobs
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, Ok(EnqueueOutcome::Inserted)))
        .map(|(j, _)| j)
        .collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    for (j, o) in jobs.iter().zip(&outcomes) {
        let inserted = store.job(&j.id).await.unwrap().is_some();
        assert_eq!(inserted, matches!(o, Ok(EnqueueOutcome::Inserted)), "{o:?}");
        if !inserted {
            assert!(matches!(o, Ok(EnqueueOutcome::Duplicate)), "{o:?}");
        }
    }
    let rec = store
        .idempotency(DEDUPE_PRINCIPAL, TRIGGER, "+15550100:spring", T0 + 10)
        .await
        .unwrap()
        .expect("the dedupe record");
    assert_eq!(rec.job_id, won[0].id);
    assert_eq!(
        rec.response_body,
        won[0].dedupe.as_ref().unwrap().response_body
    );

    // A duplicate carrying an Idempotency-Key leaves no record for it.
    let keyed = deduped(
        make::keyed(T0 + 20, "idem-1", "h", expires),
        "+15550100:spring",
        expires,
    );
    assert_eq!(
        store.enqueue(keyed).await.unwrap(),
        EnqueueOutcome::Duplicate
    );
    let idem = store
        .idempotency(PRINCIPAL, TRIGGER, "idem-1", T0 + 20)
        .await;
    assert!(idem.unwrap().is_none());

    // Another key is another job; an expired key is free again.
    let other = deduped(make::job(T0 + 30), "+15550100:autumn", expires);
    assert_eq!(
        store.enqueue(other).await.unwrap(),
        EnqueueOutcome::Inserted
    );
    let later = deduped(make::job(expires), "+15550100:spring", expires + 1_000);
    assert_eq!(
        store.enqueue(later.clone()).await.unwrap(),
        EnqueueOutcome::Inserted
    );
    let rec = store
        .idempotency(DEDUPE_PRINCIPAL, TRIGGER, "+15550100:spring", expires)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.job_id, later.id);

    // Expired dedupe records go with the Idempotency-Keys' purge.
    assert_eq!(store.purge_idempotency(expires + 1_000).await.unwrap(), 2);
    let gone = store
        .idempotency(DEDUPE_PRINCIPAL, TRIGGER, "+15550100:spring", T0)
        .await
        .unwrap();
    assert!(gone.is_none());
}
