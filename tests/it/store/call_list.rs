//! Listing calls by filter, newest first, with a cursor.

use callgate::ids::{CallId, JobId};
use callgate::store::{CallFilter, CallRecord, CallStatus, Store};

use super::make::{self, T0};

pub async fn calls_are_listed_newest_first_by_filter_and_cursor(store: &dyn Store) {
    // Five calls a second apart; agent, number and fate vary.
    let at = |i: i64| T0 + i * 1_000;
    let mut ids = Vec::new();
    for i in 0..5 {
        let agent = if i % 2 == 0 { "agent-a" } else { "agent-b" };
        let mut call = make::call(&JobId::new(at(i)), 0, agent, at(i));
        if i % 2 == 1 {
            call.to = "+15550120000".into();
        }
        ids.push(call.id.clone());
        store.reserve_call(call, 10).await.unwrap();
    }
    for (i, outcome) in [(0, "interested"), (2, "not_interested")] {
        let mut e = make::event(
            &ids[i],
            "end",
            Some(CallStatus::Completed),
            at(i as i64) + 500,
        );
        e.outcome = Some(outcome.into());
        store.apply_call_event(e, make::no_jobs()).await.unwrap();
    }
    store
        .set_call_status(&ids[4], CallStatus::Failed, Some("refused".into()), at(5))
        .await
        .unwrap();

    let listed = |v: Vec<CallRecord>| -> Vec<CallId> { v.into_iter().map(|c| c.id).collect() };
    let want = |idx: &[usize]| -> Vec<CallId> { idx.iter().map(|i| ids[*i].clone()).collect() };
    let check = |filter: CallFilter, expect: Vec<CallId>| async move {
        let got = listed(store.calls(filter.clone(), None, 100).await.unwrap());
        assert_eq!(got, expect, "{filter:?}");
    };
    check(CallFilter::default(), want(&[4, 3, 2, 1, 0])).await;
    let completed = CallFilter {
        status: Some(CallStatus::Completed),
        ..Default::default()
    };
    check(completed.clone(), want(&[2, 0])).await;
    let interested = CallFilter {
        outcome: Some("interested".into()),
        ..Default::default()
    };
    check(interested, want(&[0])).await;
    let agent_b = CallFilter {
        agent_id: Some("agent-b".into()),
        ..Default::default()
    };
    check(agent_b, want(&[3, 1])).await;
    let number = CallFilter {
        to: Some("+15550120000".into()),
        ..Default::default()
    };
    check(number, want(&[3, 1])).await;
    let window = CallFilter {
        since_ms: Some(at(1)),
        until_ms: Some(at(4)),
        ..Default::default()
    };
    check(window, want(&[3, 2, 1])).await;
    let combined = CallFilter {
        agent_id: Some("agent-a".into()),
        since_ms: Some(at(1)),
        ..completed
    };
    check(combined, want(&[2])).await;
    let failed = CallFilter {
        status: Some(CallStatus::Failed),
        ..Default::default()
    };
    let got = store.calls(failed, None, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].error.as_deref(), Some("refused"));

    // Pages of two, each after the last one's id, cover everything once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = listed(
            store
                .calls(CallFilter::default(), cursor.clone(), 2)
                .await
                .unwrap(),
        );
        assert!(page.len() <= 2);
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        cursor = Some(last);
    }
    assert_eq!(seen, want(&[4, 3, 2, 1, 0]));
    assert_eq!(
        listed(store.calls(CallFilter::default(), None, 0).await.unwrap()),
        want(&[4]),
        "a limit of 0 still lists one"
    );
}
