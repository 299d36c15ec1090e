//! Outbound webhook deliveries: created once per key, claimed per endpoint
//! under a lease (an interrupted attempt counts), finished and released
//! only under the claim's id. (The log's other operations:
//! `delivery_log.rs`.)

use callgate::ids::{DeliveryId, MsgId};
use callgate::store::{
    ClaimedDelivery, DeliveryAttempt, DeliveryRecord, DeliveryStatus, NewDelivery, Store,
};
use serde_json::json;

use super::make::{self, LATER, T0};

pub async fn get(store: &dyn Store, id: &DeliveryId) -> DeliveryRecord {
    store.delivery(id).await.unwrap().expect("the delivery")
}

pub fn ids(v: &[DeliveryRecord]) -> Vec<DeliveryId> {
    v.iter().map(|d| d.id.clone()).collect()
}

pub fn claimed_ids(v: &[ClaimedDelivery]) -> Vec<DeliveryId> {
    v.iter().map(|c| c.delivery.id.clone()).collect()
}

pub async fn deliveries_are_created_once_per_key_and_read_back_exactly(store: &dyn Store) {
    let mut new = make::delivery("crm", T0);
    new.dedupe_key = Some("job_1:0".into());
    let id = store.create_delivery(new.clone()).await.unwrap();
    assert_eq!(id, new.id);
    let d = get(store, &id).await;
    assert_eq!(
        (d.msg_id.clone(), d.endpoint.as_str(), d.event.as_str()),
        (new.msg_id.clone(), "crm", "lead.created")
    );
    assert_eq!(
        (d.job_id.clone(), d.call_id.clone()),
        (new.job_id.clone(), new.call_id.clone())
    );
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.headers, json!({"x-source": "callgate", "x-job": "job_1"}));
    assert_eq!(d.body, new.body);
    assert_eq!((d.attempts, d.budget_start), (0, 0));
    assert_eq!(d.next_attempt_at_ms, Some(T0), "due now");
    assert_eq!((d.last_status_code, d.last_error.clone()), (None, None));
    assert_eq!((d.created_at_ms, d.updated_at_ms), (T0, T0));
    assert!(store.delivery_attempts(&id).await.unwrap().is_empty());

    let mut again = make::delivery("crm", T0 + 1);
    again.dedupe_key = Some("job_1:0".into());
    assert_eq!(
        store.create_delivery(again.clone()).await.unwrap(),
        id,
        "one delivery per key"
    );
    assert!(store.delivery(&again.id).await.unwrap().is_none());
    let mut bare = make::delivery("crm", T0 + 2);
    (bare.job_id, bare.call_id) = (None, None);
    let other = store.create_delivery(bare).await.unwrap();
    let o = get(store, &other).await;
    assert_eq!((o.job_id, o.call_id), (None, None));
    assert!(
        store
            .delivery(&DeliveryId::new(T0))
            .await
            .unwrap()
            .is_none()
    );
}

fn new_delivery(n: i64) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::new(n),
        msg_id: MsgId::new(n),
        endpoint: "crm".into(),
        event: "test".into(),
        job_id: Some(callgate::ids::JobId::new(1)),
        call_id: None,
        headers_json: "{}".into(),
        body: "{}".into(),
        dedupe_key: Some(format!("job_1:{n}")),
        created_at_ms: 1_000,
    }
}

/// Moved from the SQLite engine's unit tests.
pub async fn an_expired_lease_counts_as_an_interrupted_attempt_and_dedupe_finds_the_first(
    store: &dyn Store,
) {
    let id = store.create_delivery(new_delivery(1)).await.unwrap();
    let mut again = new_delivery(2);
    again.dedupe_key = Some("job_1:1".into());
    assert_eq!(
        store.create_delivery(again).await.unwrap(),
        id,
        "one delivery per step"
    );

    let claimed = store
        .claim_deliveries("crm", "w1", 1_000, 2_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.attempts, 0);
    // Another endpoint's claim and a claim before the lease expires find nothing.
    assert!(
        store
            .claim_deliveries("other", "w2", 3_000, 4_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_deliveries("crm", "w2", 1_500, 4_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // w1 died: after its lease, w2 takes it over, and the lost attempt counts.
    let taken = store
        .claim_deliveries("crm", "w2", 3_000, 4_000, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].delivery.attempts, 1);
    assert_eq!(taken[0].delivery.status, DeliveryStatus::Sending);
    let log = store.delivery_attempts(&id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert!(log[0].error.as_deref().unwrap().starts_with("interrupted"));
    assert_eq!((log[0].attempt, log[0].started_at_ms), (1, 3_000));
    // w1 can no longer log an outcome for it.
    let attempt = DeliveryAttempt {
        attempt: 1,
        started_at_ms: 1_000,
        request_headers: json!({}),
        request_body: "{}".into(),
        response_status: Some(200),
        response_body: None,
        latency_ms: 1,
        error: None,
        next_attempt_at_ms: None,
    };
    assert!(
        !store
            .finish_delivery_attempt(
                &id,
                &claimed[0].claim_id,
                attempt.clone(),
                DeliveryStatus::Succeeded,
                3_100
            )
            .await
            .unwrap()
    );
    let second = DeliveryAttempt {
        attempt: 2,
        ..attempt
    };
    assert!(
        store
            .finish_delivery_attempt(
                &id,
                &taken[0].claim_id,
                second,
                DeliveryStatus::Succeeded,
                3_100
            )
            .await
            .unwrap()
    );
    let d = store.delivery(&id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Succeeded, 2));

    // Pending deliveries to an endpoint that is gone are failed, visibly.
    let mut gone = new_delivery(3);
    gone.endpoint = "old-crm".into();
    let gone_id = store.create_delivery(gone).await.unwrap();
    let kept_id = store.create_delivery(new_delivery(4)).await.unwrap();
    let n = store
        .fail_unconfigured_deliveries(vec!["crm".into(), "alerts".into()], 5_000)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let g = store.delivery(&gone_id).await.unwrap().unwrap();
    assert_eq!(g.status, DeliveryStatus::Failed);
    assert!(
        g.last_error
            .unwrap()
            .contains("`old-crm` is not configured")
    );
    let k = store.delivery(&kept_id).await.unwrap().unwrap();
    assert_eq!(k.status, DeliveryStatus::Pending);
}

pub async fn claims_are_per_endpoint_oldest_due_first_and_fenced_by_claim(store: &dyn Store) {
    let crm: Vec<DeliveryId> = {
        let mut v = Vec::new();
        for i in 1..=3 {
            v.push(
                store
                    .create_delivery(make::delivery("crm", T0 + i))
                    .await
                    .unwrap(),
            );
        }
        v
    };
    let alerts = store
        .create_delivery(make::delivery("alerts", T0))
        .await
        .unwrap();
    let now = T0 + 10;
    let first = store
        .claim_deliveries("crm", "w1", now, T0 + 1_000, 2)
        .await
        .unwrap();
    assert_eq!(claimed_ids(&first), crm[..2]);
    assert!(
        first.iter().all(
            |c| c.delivery.status == DeliveryStatus::Sending && c.delivery.updated_at_ms == now
        )
    );
    // One claim: its deliveries share its id; the next claim has its own.
    assert_eq!(first[0].claim_id, first[1].claim_id);
    let rest = store
        .claim_deliveries("crm", "w1", now, T0 + 1_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed_ids(&rest), crm[2..]);
    assert_ne!(rest[0].claim_id, first[0].claim_id);
    assert_eq!(
        get(store, &alerts).await.status,
        DeliveryStatus::Pending,
        "another endpoint's"
    );

    // A failed attempt, logged with the next one's time.
    let tried = make::attempt(1, now, Some(503), Some(T0 + 500));
    assert!(
        !store
            .finish_delivery_attempt(
                &crm[0],
                &rest[0].claim_id,
                tried.clone(),
                DeliveryStatus::Pending,
                now + 5
            )
            .await
            .unwrap(),
        "not its claim"
    );
    assert!(store.delivery_attempts(&crm[0]).await.unwrap().is_empty());
    assert!(
        store
            .finish_delivery_attempt(
                &crm[0],
                &first[0].claim_id,
                tried.clone(),
                DeliveryStatus::Pending,
                now + 5
            )
            .await
            .unwrap()
    );
    let d = get(store, &crm[0]).await;
    assert_eq!(
        (d.status, d.attempts, d.next_attempt_at_ms),
        (DeliveryStatus::Pending, 1, Some(T0 + 500))
    );
    assert_eq!(
        (d.last_status_code, d.last_error.clone(), d.updated_at_ms),
        (Some(503), None, now + 5)
    );
    let log = store.delivery_attempts(&crm[0]).await.unwrap();
    assert_eq!(log.len(), 1);
    let a = &log[0];
    assert_eq!((a.attempt, a.started_at_ms, a.latency_ms), (1, now, 12));
    assert_eq!(a.request_headers, tried.request_headers);
    assert_eq!(a.request_body, tried.request_body);
    assert_eq!(
        (a.response_status, a.response_body.as_deref()),
        (Some(503), Some("status 503"))
    );
    assert_eq!(
        (a.error.clone(), a.next_attempt_at_ms),
        (None, Some(T0 + 500))
    );
    // A second outcome for the same claim is refused.
    assert!(
        !store
            .finish_delivery_attempt(
                &crm[0],
                &first[0].claim_id,
                tried,
                DeliveryStatus::Succeeded,
                now + 6
            )
            .await
            .unwrap()
    );

    // Due again at its time, not before.
    assert!(
        store
            .claim_deliveries("crm", "w1", T0 + 499, LATER, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries("crm", "w1", T0 + 500, LATER, 10)
        .await
        .unwrap();
    assert_eq!(claimed_ids(&again), crm[..1]);
    let refused = make::attempt(2, T0 + 500, None, None);
    assert!(
        store
            .finish_delivery_attempt(
                &crm[0],
                &again[0].claim_id,
                refused,
                DeliveryStatus::Dead,
                T0 + 510
            )
            .await
            .unwrap()
    );
    let d = get(store, &crm[0]).await;
    assert_eq!(
        (d.status, d.attempts, d.next_attempt_at_ms),
        (DeliveryStatus::Dead, 2, None)
    );
    assert_eq!(d.last_error.as_deref(), Some("connection refused"));
    assert_eq!(store.delivery_attempts(&crm[0]).await.unwrap().len(), 2);
    assert!(
        store
            .claim_deliveries("crm", "w1", LATER, LATER + 1, 10)
            .await
            .unwrap()
            .iter()
            .all(|c| c.delivery.id != crm[0]),
        "a dead delivery is never claimed"
    );
}

pub async fn released_deliveries_are_due_again_untried(store: &dyn Store) {
    let a = store
        .create_delivery(make::delivery("crm", T0))
        .await
        .unwrap();
    let b = store
        .create_delivery(make::delivery("crm", T0 + 1))
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("crm", "w1", T0 + 10, LATER, 10)
        .await
        .unwrap();
    store
        .release_deliveries(vec![a.clone(), b.clone()], "w1", T0 + 20)
        .await
        .unwrap();
    assert_eq!(
        get(store, &a).await.status,
        DeliveryStatus::Sending,
        "only the claim releases (not its owner's name)"
    );
    store
        .release_deliveries(vec![a.clone(), b.clone()], &claimed[0].claim_id, T0 + 700)
        .await
        .unwrap();
    for id in [&a, &b] {
        let d = get(store, id).await;
        assert_eq!(
            (d.status, d.attempts, d.next_attempt_at_ms),
            (DeliveryStatus::Pending, 0, Some(T0 + 700))
        );
        assert!(
            store.delivery_attempts(id).await.unwrap().is_empty(),
            "untried"
        );
    }
    assert!(
        store
            .claim_deliveries("crm", "w2", T0 + 699, LATER, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        claimed_ids(
            &store
                .claim_deliveries("crm", "w2", T0 + 700, LATER, 10)
                .await
                .unwrap()
        ),
        [a, b]
    );
}

/// A deliverer stalls past its lease and the same process claims the
/// delivery again: only the second claim may log the attempt or release it.
pub async fn a_stalled_delivery_claim_is_fenced_even_when_its_own_owner_claims_again(
    store: &dyn Store,
) {
    let id = store
        .create_delivery(make::delivery("crm", T0))
        .await
        .unwrap();
    let first = store
        .claim_deliveries("crm", "w1", T0, T0 + 1_000, 10)
        .await
        .unwrap();
    let second = store
        .claim_deliveries("crm", "w1", T0 + 1_001, LATER, 10)
        .await
        .unwrap();
    assert_eq!(claimed_ids(&first), vec![id.clone()]);
    assert_eq!(claimed_ids(&second), vec![id.clone()], "the lease expired");
    let (stale, live) = (&first[0].claim_id, &second[0].claim_id);
    assert_ne!(stale, live, "a fresh id per claim");

    let before = get(store, &id).await;
    assert_eq!(before.attempts, 1, "the stalled attempt counts");
    assert!(
        !store
            .finish_delivery_attempt(
                &id,
                stale,
                make::attempt(1, T0, Some(200), None),
                DeliveryStatus::Succeeded,
                T0 + 1_100
            )
            .await
            .unwrap()
    );
    store
        .release_deliveries(vec![id.clone()], stale, T0 + 1_200)
        .await
        .unwrap();
    let d = get(store, &id).await;
    assert_eq!(
        (d.status, d.attempts, d.updated_at_ms),
        (DeliveryStatus::Sending, 1, before.updated_at_ms),
        "nothing the stale claim wrote landed"
    );
    let log = store.delivery_attempts(&id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert!(log[0].error.as_deref().unwrap().starts_with("interrupted"));

    assert!(
        store
            .finish_delivery_attempt(
                &id,
                live,
                make::attempt(2, T0 + 1_001, Some(200), None),
                DeliveryStatus::Succeeded,
                T0 + 1_300
            )
            .await
            .unwrap()
    );
    let d = get(store, &id).await;
    assert_eq!(
        (d.status, d.attempts, d.updated_at_ms),
        (DeliveryStatus::Succeeded, 2, T0 + 1_300)
    );
    assert_eq!(store.delivery_attempts(&id).await.unwrap().len(), 2);
}
