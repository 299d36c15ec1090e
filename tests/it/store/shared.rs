//! State every instance shares through the store: rate tokens (a GCRA per
//! key), endpoint breakers and the capped delivery claim.

use callgate::config::StorageConfig;
use callgate::store::{BreakerAdmission, BreakerPolicy, DeliveryStatus, Store};

use super::engines::TestDb;
use super::make::{self, T0};

/// Takes tokens of `key` at `now` until refused; returns how many were
/// taken and the wait it was refused with.
async fn drain(store: &dyn Store, key: &str, now: i64) -> (u32, i64) {
    for taken in 0..100 {
        match store.take_rate_token(key, 1_000, 3, now).await.unwrap() {
            Ok(()) => {}
            Err(wait) => return (taken, wait),
        }
    }
    panic!("the rate never ran out");
}

pub async fn a_rate_allows_its_burst_then_refuses_with_the_wait_and_refills(store: &dyn Store) {
    assert_eq!(drain(store, "dial:sim", T0).await, (3, 1_000));
    let (taken, wait) = drain(store, "dial:sim", T0 + 400).await;
    assert_eq!((taken, wait), (0, 600), "still spent, 600 ms to go");
    // Another key has a budget of its own.
    assert_eq!(drain(store, "dial:other", T0).await.0, 3);
    // One interval later, one token; a whole burst later, three.
    assert_eq!(drain(store, "dial:sim", T0 + 1_000).await, (1, 1_000));
    assert_eq!(drain(store, "dial:sim", T0 + 10_000).await.0, 3);
}

pub async fn two_stores_on_one_database_share_a_rate(db: &TestDb) {
    let other = db.reopen(&StorageConfig::default()).await;
    let stores: [&dyn Store; 2] = [db.store(), &*other];
    // Six takers at once, three from each store: exactly the burst passes.
    let takes = (0..6).map(|i| stores[i % 2].take_rate_token("dial:sim", 1_000, 3, T0));
    let results = futures_util::future::join_all(takes).await;
    let passed = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    assert_eq!(passed, 3, "{results:?}");
    assert_eq!(
        other
            .take_rate_token("dial:sim", 1_000, 3, T0)
            .await
            .unwrap(),
        Err(1_000)
    );
    other.close().await;
}

const POLICY: BreakerPolicy = BreakerPolicy {
    failures: 2,
    cooldown_ms: 1_000,
    max_cooldown_ms: 3_000,
};

pub async fn a_breaker_opens_lets_one_probe_through_reopens_longer_and_closes(store: &dyn Store) {
    let admit = |now: i64| store.breaker_admit("crm", now, now + 500);
    assert_eq!(admit(T0).await.unwrap(), BreakerAdmission::Closed);
    store
        .breaker_record("crm", false, POLICY, T0)
        .await
        .unwrap();
    assert_eq!(admit(T0).await.unwrap(), BreakerAdmission::Closed);
    // A success resets the count.
    store.breaker_record("crm", true, POLICY, T0).await.unwrap();
    store
        .breaker_record("crm", false, POLICY, T0)
        .await
        .unwrap();
    assert_eq!(admit(T0).await.unwrap(), BreakerAdmission::Closed);
    let row = store
        .breaker_record("crm", false, POLICY, T0)
        .await
        .unwrap();
    assert_eq!(row.open_until_ms, Some(T0 + 1_000));
    assert_eq!(
        admit(T0 + 999).await.unwrap(),
        BreakerAdmission::Open {
            until_ms: T0 + 1_000
        }
    );
    assert_eq!(
        admit(T0).await.unwrap(),
        BreakerAdmission::Open {
            until_ms: T0 + 1_000
        }
    );
    // Another endpoint is not affected.
    assert_eq!(
        store.breaker_admit("other", T0, T0).await.unwrap(),
        BreakerAdmission::Closed
    );
    // Cooldown over: one probe, leased; nobody else gets one meanwhile.
    assert_eq!(admit(T0 + 1_000).await.unwrap(), BreakerAdmission::Probe);
    assert_eq!(
        admit(T0 + 1_100).await.unwrap(),
        BreakerAdmission::Open {
            until_ms: T0 + 1_500
        }
    );
    // A probe given back untried is offered again at once.
    store.breaker_cancel_probe("crm").await.unwrap();
    assert_eq!(admit(T0 + 1_100).await.unwrap(), BreakerAdmission::Probe);
    // A probe whose holder vanished is offered again after its lease.
    assert_eq!(admit(T0 + 1_600).await.unwrap(), BreakerAdmission::Probe);
    // The probe fails: open twice as long.
    let row = store
        .breaker_record("crm", false, POLICY, T0 + 1_700)
        .await
        .unwrap();
    assert_eq!(row.open_until_ms, Some(T0 + 3_700));
    assert_eq!(
        admit(T0 + 3_000).await.unwrap(),
        BreakerAdmission::Open {
            until_ms: T0 + 3_700
        }
    );
    assert_eq!(admit(T0 + 3_700).await.unwrap(), BreakerAdmission::Probe);
    // Fails again: capped at the maximum (3 s, not 4 s).
    let row = store
        .breaker_record("crm", false, POLICY, T0 + 3_800)
        .await
        .unwrap();
    assert_eq!(row.open_until_ms, Some(T0 + 6_800));
    assert_eq!(admit(T0 + 6_800).await.unwrap(), BreakerAdmission::Probe);
    // The probe succeeds: closed, the count reset.
    let row = store
        .breaker_record("crm", true, POLICY, T0 + 6_900)
        .await
        .unwrap();
    assert_eq!((row.failures, row.open_until_ms), (0, None));
    assert_eq!(admit(T0 + 6_900).await.unwrap(), BreakerAdmission::Closed);
    store
        .breaker_record("crm", false, POLICY, T0 + 7_000)
        .await
        .unwrap();
    assert_eq!(admit(T0 + 7_000).await.unwrap(), BreakerAdmission::Closed);
}

pub async fn the_capped_claim_takes_at_most_the_cap_less_unexpired_leases(store: &dyn Store) {
    for i in 0..6 {
        store
            .create_delivery(make::delivery("crm", T0 + i))
            .await
            .unwrap();
    }
    store
        .create_delivery(make::delivery("other", T0 + 10))
        .await
        .unwrap();
    let now = T0 + 100;
    let first = store
        .claim_deliveries_capped("crm", "a", now, now + 1_000, 10, 3)
        .await
        .unwrap();
    assert_eq!(first.len(), 3, "the cap, not the limit");
    let none = store
        .claim_deliveries_capped("crm", "b", now, now + 1_000, 10, 3)
        .await
        .unwrap();
    assert!(
        none.is_empty(),
        "three in flight: {:?}",
        none.iter().map(|c| &c.delivery.id).collect::<Vec<_>>()
    );
    // Another endpoint has its own cap.
    let other = store
        .claim_deliveries_capped("other", "b", now, now + 1_000, 10, 3)
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    // One finishes: one slot frees.
    let done = make::attempt(1, now, Some(200), None);
    assert!(
        store
            .finish_delivery_attempt(
                &first[0].delivery.id,
                &first[0].claim_id,
                done,
                DeliveryStatus::Succeeded,
                now + 1
            )
            .await
            .unwrap()
    );
    let one = store
        .claim_deliveries_capped("crm", "b", now + 1, now + 1_000, 10, 3)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    // The limit still bounds it too.
    let (a, b) = (&first[1], &first[2]);
    for d in [a, b] {
        let attempt = make::attempt(1, now, Some(200), None);
        store
            .finish_delivery_attempt(
                &d.delivery.id,
                &d.claim_id,
                attempt,
                DeliveryStatus::Succeeded,
                now + 2,
            )
            .await
            .unwrap();
    }
    let limited = store
        .claim_deliveries_capped("crm", "b", now + 2, now + 1_000, 1, 3)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    // Expired leases are not counted (their sender is gone) and are
    // taken over within the cap.
    let later = now + 5_000;
    let taken = store
        .claim_deliveries_capped("crm", "c", later, later + 1_000, 10, 3)
        .await
        .unwrap();
    assert_eq!(
        taken.len(),
        3,
        "{:?}",
        taken.iter().map(|c| &c.delivery.id).collect::<Vec<_>>()
    );
}

pub async fn concurrent_capped_claims_from_two_stores_never_exceed_the_cap(db: &TestDb) {
    let other = db.reopen(&StorageConfig::default()).await;
    for i in 0..20 {
        db.store()
            .create_delivery(make::delivery("crm", T0 + i))
            .await
            .unwrap();
    }
    let stores: [&dyn Store; 2] = [db.store(), &*other];
    let now = T0 + 100;
    let claims = (0..8).map(|i| {
        let owner = format!("o{i}");
        async move {
            stores[i % 2]
                .claim_deliveries_capped("crm", &owner, now, now + 1_000, 2, 3)
                .await
                .unwrap()
                .len()
        }
    });
    let total: usize = futures_util::future::join_all(claims).await.iter().sum();
    assert_eq!(total, 3, "the cap across both stores");
    other.close().await;
}
