//! The delivery log: replays (failed and dead deliveries only), listing
//! with filters and a cursor, deliveries whose endpoint is gone, and
//! purging finished ones.

use std::collections::HashSet;

use callgate::ids::DeliveryId;
use callgate::store::{DeliveryFilter, DeliveryStatus, Replay, Store};
use futures_util::StreamExt;

use super::deliveries::{claimed_ids, get, ids};
use super::make::{self, LATER, T0};

/// A delivery to `crm` taken to `status` by one attempt at `at`.
async fn finished(store: &dyn Store, status: DeliveryStatus, at: i64) -> DeliveryId {
    let id = store
        .create_delivery(make::delivery("crm", at))
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("crm", "w", at, LATER, 1)
        .await
        .unwrap();
    assert_eq!(claimed_ids(&claimed), vec![id.clone()]);
    let code = match status {
        DeliveryStatus::Succeeded => Some(200),
        DeliveryStatus::Pending => Some(503),
        _ => Some(410),
    };
    let next = (status == DeliveryStatus::Pending).then_some(LATER);
    let ok = store
        .finish_delivery_attempt(
            &id,
            &claimed[0].claim_id,
            make::attempt(1, at, code, next),
            status,
            at,
        )
        .await;
    assert!(ok.unwrap());
    id
}

pub async fn only_failed_and_dead_deliveries_are_replayed(store: &dyn Store) {
    assert!(matches!(
        store
            .replay_delivery(&DeliveryId::new(T0), T0)
            .await
            .unwrap(),
        Replay::NotFound
    ));
    let pending = finished(store, DeliveryStatus::Pending, T0).await;
    let succeeded = finished(store, DeliveryStatus::Succeeded, T0 + 1).await;
    let failed = finished(store, DeliveryStatus::Failed, T0 + 2).await;
    let dead = finished(store, DeliveryStatus::Dead, T0 + 3).await;
    let sending = store
        .create_delivery(make::delivery("crm", T0 + 4))
        .await
        .unwrap();
    store
        .claim_deliveries("crm", "w", T0 + 4, LATER, 10)
        .await
        .unwrap();
    for (id, status) in [
        (&pending, DeliveryStatus::Pending),
        (&succeeded, DeliveryStatus::Succeeded),
        (&sending, DeliveryStatus::Sending),
    ] {
        assert!(
            matches!(store.replay_delivery(id, T0 + 10).await.unwrap(), Replay::NotReplayable(s) if s == status),
            "{status:?}"
        );
    }
    for id in [&failed, &dead] {
        let before = get(store, id).await;
        let Replay::Queued(d) = store.replay_delivery(id, T0 + 10).await.unwrap() else {
            panic!("{id} was not replayed");
        };
        assert_eq!(
            (d.status, d.next_attempt_at_ms, d.updated_at_ms),
            (DeliveryStatus::Pending, Some(T0 + 10), T0 + 10)
        );
        assert_eq!(d.msg_id, before.msg_id, "the same webhook-id");
        assert_eq!(
            (d.attempts, d.budget_start),
            (1, 1),
            "a fresh retry budget from here"
        );
        let now = get(store, id).await;
        assert_eq!(
            (now.status, now.next_attempt_at_ms, now.budget_start),
            (d.status, d.next_attempt_at_ms, d.budget_start),
            "what the store now holds"
        );
    }
    let due: HashSet<DeliveryId> = claimed_ids(
        &store
            .claim_deliveries("crm", "w", T0 + 10, LATER, 10)
            .await
            .unwrap(),
    )
    .into_iter()
    .collect();
    assert_eq!(due, HashSet::from([failed, dead]));
}

pub async fn the_delivery_log_filters_and_pages_newest_first(store: &dyn Store) {
    let mut made = Vec::new();
    for (i, endpoint) in ["crm", "alerts", "crm", "crm", "alerts"]
        .into_iter()
        .enumerate()
    {
        let at = T0 + i as i64 * 1_000;
        made.push(
            store
                .create_delivery(make::delivery(endpoint, at))
                .await
                .unwrap(),
        );
    }
    store
        .claim_deliveries("alerts", "w", T0 + 5_000, LATER, 1)
        .await
        .unwrap();
    let want =
        |idx: &[usize]| -> Vec<DeliveryId> { idx.iter().map(|i| made[*i].clone()).collect() };
    let list = |f: DeliveryFilter| async move {
        ids(&store
            .deliveries(DeliveryFilter {
                limit: f.limit.max(100),
                ..f
            })
            .await
            .unwrap())
    };
    assert_eq!(
        list(DeliveryFilter::default()).await,
        want(&[4, 3, 2, 1, 0])
    );
    let of = |d: &DeliveryId| made.iter().position(|m| m == d).unwrap();
    let job_of_2 = store.delivery(&made[2]).await.unwrap().unwrap();
    for (filter, expect) in [
        (
            DeliveryFilter {
                status: Some(DeliveryStatus::Sending),
                ..Default::default()
            },
            want(&[1]),
        ),
        (
            DeliveryFilter {
                endpoint: Some("crm".into()),
                ..Default::default()
            },
            want(&[3, 2, 0]),
        ),
        (
            DeliveryFilter {
                job_id: Some(job_of_2.job_id.clone().unwrap().into_string()),
                ..Default::default()
            },
            want(&[2]),
        ),
        (
            DeliveryFilter {
                call_id: Some(job_of_2.call_id.clone().unwrap().into_string()),
                ..Default::default()
            },
            want(&[2]),
        ),
        (
            DeliveryFilter {
                since_ms: Some(T0 + 3_000),
                ..Default::default()
            },
            want(&[4, 3]),
        ),
        (
            DeliveryFilter {
                before: Some(made[3].clone()),
                ..Default::default()
            },
            want(&[2, 1, 0]),
        ),
        (
            DeliveryFilter {
                endpoint: Some("crm".into()),
                before: Some(made[3].clone()),
                since_ms: Some(T0 + 1),
                ..Default::default()
            },
            want(&[2]),
        ),
        (
            DeliveryFilter {
                status: Some(DeliveryStatus::Dead),
                ..Default::default()
            },
            Vec::new(),
        ),
    ] {
        let got = list(filter.clone()).await;
        assert_eq!(
            got,
            expect,
            "{filter:?}: {:?}",
            got.iter().map(of).collect::<Vec<_>>()
        );
    }
    // Pages: newest first, each after the last one's id.
    let page = |before: Option<DeliveryId>| async move {
        ids(&store
            .deliveries(DeliveryFilter {
                before,
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap())
    };
    let p1 = page(None).await;
    let p2 = page(p1.last().cloned()).await;
    let p3 = page(p2.last().cloned()).await;
    assert_eq!((p1, p2, p3), (want(&[4, 3]), want(&[2, 1]), want(&[0])));
}

pub async fn pending_deliveries_to_unconfigured_endpoints_fail_visibly(store: &dyn Store) {
    let gone = store
        .create_delivery(make::delivery("old-crm", T0))
        .await
        .unwrap();
    let kept = store
        .create_delivery(make::delivery("crm", T0 + 1))
        .await
        .unwrap();
    let also_gone = store
        .create_delivery(make::delivery("zapier-hook", T0 + 2))
        .await
        .unwrap();
    let n = store
        .fail_unconfigured_deliveries(vec!["crm".into(), "alerts".into()], T0 + 100)
        .await
        .unwrap();
    assert_eq!(n, 2);
    for (id, name) in [(&gone, "old-crm"), (&also_gone, "zapier-hook")] {
        let d = get(store, id).await;
        assert_eq!(
            (d.status, d.next_attempt_at_ms, d.updated_at_ms),
            (DeliveryStatus::Failed, None, T0 + 100)
        );
        let why = d.last_error.unwrap();
        assert!(
            why.contains(&format!("`{name}` is not configured")),
            "{why}"
        );
    }
    assert_eq!(get(store, &kept).await.status, DeliveryStatus::Pending);
    assert_eq!(
        store
            .fail_unconfigured_deliveries(vec!["crm".into()], T0 + 200)
            .await
            .unwrap(),
        0,
        "done once"
    );
    // Replayable once the endpoint is back.
    assert!(matches!(
        store.replay_delivery(&gone, T0 + 300).await.unwrap(),
        Replay::Queued(_)
    ));
    // With no endpoint configured, every pending delivery fails.
    assert_eq!(
        store
            .fail_unconfigured_deliveries(Vec::new(), T0 + 400)
            .await
            .unwrap(),
        2
    );
    assert_eq!(get(store, &kept).await.status, DeliveryStatus::Failed);
}

pub async fn purge_deletes_finished_deliveries_and_keeps_unfinished_ones(store: &dyn Store) {
    let succeeded = finished(store, DeliveryStatus::Succeeded, T0).await;
    let failed = finished(store, DeliveryStatus::Failed, T0 + 1).await;
    let dead = finished(store, DeliveryStatus::Dead, T0 + 2).await;
    let pending = finished(store, DeliveryStatus::Pending, T0 + 3).await;
    let sending = store
        .create_delivery(make::delivery("crm", T0 + 4))
        .await
        .unwrap();
    store
        .claim_deliveries("crm", "w", T0 + 4, LATER, 10)
        .await
        .unwrap();
    let fresh = finished(store, DeliveryStatus::Succeeded, T0 + 5_000).await;

    assert_eq!(
        store.purge_deliveries(T0).await.unwrap(),
        0,
        "last updated before, strictly"
    );
    assert_eq!(store.purge_deliveries(LATER).await.unwrap(), 4);
    for id in [&succeeded, &failed, &dead, &fresh] {
        assert!(store.delivery(id).await.unwrap().is_none(), "{id} purged");
        assert!(
            store.delivery_attempts(id).await.unwrap().is_empty(),
            "its attempts with it"
        );
    }
    assert_eq!(get(store, &pending).await.status, DeliveryStatus::Pending);
    assert_eq!(store.delivery_attempts(&pending).await.unwrap().len(), 1);
    assert_eq!(get(store, &sending).await.status, DeliveryStatus::Sending);
}

pub async fn a_large_purge_removes_every_finished_delivery(store: &dyn Store) {
    const N: usize = 2_500;
    // Created 32 at a time: the purge is under test, not how many writes
    // one store takes at once (2,500 at once time out waiting for a
    // connection on a loaded machine).
    let made: Vec<_> = futures_util::stream::iter(0..N)
        .map(|i| store.create_delivery(make::delivery("gone", T0 + i as i64)))
        .buffer_unordered(32)
        .collect()
        .await;
    if let Some(Err(e)) = made.iter().find(|r| r.is_err()) {
        panic!("creating the deliveries: {e}");
    }
    assert_eq!(
        store
            .fail_unconfigured_deliveries(Vec::new(), T0 + 10_000)
            .await
            .unwrap(),
        N as u64
    );
    let keep = store
        .create_delivery(make::delivery("crm", T0))
        .await
        .unwrap();
    assert_eq!(store.purge_deliveries(T0 + 10_001).await.unwrap(), N as u64);
    let left = store
        .deliveries(DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&left), [keep]);
}

pub async fn an_interrupted_delivery_to_an_unconfigured_endpoint_fails_once_its_lease_is_over(
    store: &dyn Store,
) {
    let id = store
        .create_delivery(make::delivery("old-crm", T0))
        .await
        .unwrap();
    // Its sender died mid-attempt; then the endpoint left endpoints.toml.
    let claimed = store
        .claim_deliveries("old-crm", "w1", T0, T0 + 100, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        store
            .fail_unconfigured_deliveries(vec!["crm".into()], T0 + 50)
            .await
            .unwrap(),
        0,
        "its lease still runs: the attempt may yet be logged"
    );
    assert_eq!(
        store
            .fail_unconfigured_deliveries(vec!["crm".into()], T0 + 200)
            .await
            .unwrap(),
        1
    );
    let d = get(store, &id).await;
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert!(
        d.last_error
            .unwrap()
            .contains("`old-crm` is not configured")
    );
    // The dead sender can no longer log its attempt.
    assert!(
        !store
            .finish_delivery_attempt(
                &id,
                &claimed[0].claim_id,
                make::attempt(1, T0, Some(200), None),
                DeliveryStatus::Succeeded,
                T0 + 300
            )
            .await
            .unwrap()
    );
}
