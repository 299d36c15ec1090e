//! Calls: reserving a line, the dial's answer, statuses set outright, and
//! reconciliation candidates. (Provider events: `call_events.rs`.)

use callgate::ids::{CallId, JobId};
use callgate::store::{CallRecord, CallStatus, Reservation, Store};
use serde_json::json;

use super::make::{self, AGENT, T0};

pub async fn created(store: &dyn Store, job: &JobId, step: i64, agent: &str, at: i64) -> CallId {
    match store
        .reserve_call(make::call(job, step, agent, at), 2)
        .await
        .unwrap()
    {
        Reservation::Created(id) => id,
        other => panic!("expected a new call, got {other:?}"),
    }
}

pub async fn call(store: &dyn Store, id: &CallId) -> CallRecord {
    store.call(id).await.unwrap().expect("the call")
}

pub async fn reserving_a_line_creates_finds_or_refuses_a_call(store: &dyn Store) {
    let (j, k, l) = (JobId::new(T0), JobId::new(T0 + 1), JobId::new(T0 + 2));
    let new = make::call(&j, 0, AGENT, T0);
    assert!(matches!(
        store.reserve_call(new.clone(), 2).await.unwrap(),
        Reservation::Created(ref id) if *id == new.id
    ));
    let c = call(store, &new.id).await;
    assert_eq!(
        (c.id.clone(), c.job_id.clone(), c.step),
        (new.id.clone(), j.clone(), 0)
    );
    assert_eq!(
        (c.agent_id.as_str(), c.to.as_str(), c.from.as_str()),
        (AGENT, "+15550121234", "+15550009999")
    );
    assert_eq!(c.provider, "simulator");
    assert_eq!(
        (c.provider_call_id.clone(), c.status),
        (None, CallStatus::Dialing)
    );
    assert_eq!((c.outcome.clone(), c.duration_seconds), (None, None));
    assert_eq!(c.custom, json!({}));
    assert_eq!(c.variables, json!({"plan": "enterprise", "n": 1}));
    assert_eq!(c.origin, json!({"automation": "after-call", "depth": 1}));
    assert_eq!(
        (
            c.transcript.clone(),
            c.summary.clone(),
            c.recording_url.clone(),
            c.error.clone()
        ),
        (None, None, None, None)
    );
    assert_eq!(c.dial_attempts, 1);
    assert_eq!(
        (c.created_at_ms, c.updated_at_ms, c.dial_requested_at_ms),
        (T0, T0, Some(T0))
    );
    assert_eq!((c.answered_at_ms, c.ended_at_ms), (None, None));

    let second = created(store, &k, 0, AGENT, T0 + 1).await;
    // The step's call exists: found, whatever the lines (never dial twice).
    let retry = make::call(&j, 0, AGENT, T0 + 2);
    assert!(matches!(
        store.reserve_call(retry.clone(), 2).await.unwrap(),
        Reservation::Existing(ref id) if *id == new.id
    ));
    assert!(store.call(&retry.id).await.unwrap().is_none());
    assert!(matches!(
        store
            .reserve_call(make::call(&l, 0, AGENT, T0 + 3), 2)
            .await
            .unwrap(),
        Reservation::Busy { active: 2 }
    ));
    // Lines are per agent.
    created(store, &l, 0, "agent-b", T0 + 4).await;
    // A call in `unknown` holds no line.
    store
        .set_call_status(&second, CallStatus::Unknown, None, T0 + 5)
        .await
        .unwrap();
    let later_step = created(store, &j, 1, AGENT, T0 + 6).await;
    let steps: Vec<(i64, CallId)> = store
        .calls_for_job(&j)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.step, c.id))
        .collect();
    assert_eq!(steps, [(0, new.id.clone()), (1, later_step)]);
    assert!(
        store
            .calls_for_job(&JobId::new(T0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.call(&CallId::new(T0)).await.unwrap().is_none());
}

pub async fn a_dial_answer_is_recorded_and_never_moves_the_call_backwards(store: &dyn Store) {
    let c = created(store, &JobId::new(T0), 0, AGENT, T0).await;
    store
        .set_call_status(
            &c,
            CallStatus::Dialing,
            Some("timed out; dialing again".into()),
            T0 + 1,
        )
        .await
        .unwrap();
    store
        .call_dialed(&c, Some("prov-1"), CallStatus::Ringing, T0 + 2)
        .await
        .unwrap();
    let r = call(store, &c).await;
    assert_eq!(r.provider_call_id.as_deref(), Some("prov-1"));
    assert_eq!(
        (r.status, r.updated_at_ms, r.error.clone()),
        (CallStatus::Ringing, T0 + 2, None)
    );
    // A late answer saying `dialing`: the status stays, the id is kept.
    store
        .call_dialed(&c, None, CallStatus::Dialing, T0 + 3)
        .await
        .unwrap();
    let r = call(store, &c).await;
    assert_eq!(r.status, CallStatus::Ringing);
    assert_eq!(r.provider_call_id.as_deref(), Some("prov-1"));
    assert_eq!(r.updated_at_ms, T0 + 3);
    // Off a final status, never.
    let e = make::event(&c, "done", Some(CallStatus::Completed), T0 + 4);
    store.apply_call_event(e, make::no_jobs()).await.unwrap();
    store
        .call_dialed(&c, None, CallStatus::InProgress, T0 + 5)
        .await
        .unwrap();
    assert_eq!(call(store, &c).await.status, CallStatus::Completed);
}

pub async fn set_call_status_sets_the_status_outright(store: &dyn Store) {
    let c = created(store, &JobId::new(T0), 0, AGENT, T0).await;
    store
        .call_dialed(&c, Some("p"), CallStatus::InProgress, T0 + 1)
        .await
        .unwrap();
    store
        .set_call_status(
            &c,
            CallStatus::Unknown,
            Some("crashed while dialing".into()),
            T0 + 2,
        )
        .await
        .unwrap();
    let r = call(store, &c).await;
    assert_eq!(
        (r.status, r.error.as_deref(), r.updated_at_ms),
        (CallStatus::Unknown, Some("crashed while dialing"), T0 + 2)
    );
    assert_eq!((r.dial_attempts, r.ended_at_ms), (1, None));
    // Going back to `dialing` is a new dial.
    store
        .set_call_status(&c, CallStatus::Dialing, None, T0 + 3)
        .await
        .unwrap();
    let r = call(store, &c).await;
    assert_eq!((r.status, r.error.clone()), (CallStatus::Dialing, None));
    assert_eq!((r.dial_attempts, r.dial_requested_at_ms), (2, Some(T0 + 3)));
    store
        .set_call_status(
            &c,
            CallStatus::Failed,
            Some("the provider refused".into()),
            T0 + 4,
        )
        .await
        .unwrap();
    let r = call(store, &c).await;
    assert_eq!(
        (r.status, r.ended_at_ms, r.dial_attempts),
        (CallStatus::Failed, Some(T0 + 4), 2)
    );
    assert_eq!(r.error.as_deref(), Some("the provider refused"));

    let d = created(store, &JobId::new(T0 + 1), 0, AGENT, T0).await;
    store
        .set_call_status(&d, CallStatus::Canceled, None, T0 + 5)
        .await
        .unwrap();
    assert_eq!(call(store, &d).await.ended_at_ms, Some(T0 + 5));
}

pub async fn stale_calls_are_the_line_holding_ones_without_news(store: &dyn Store) {
    let mk = |i: i64| async move {
        created(store, &JobId::new(T0 + i), 0, &format!("agent-{i}"), T0).await
    };
    let (dialing, ringing, completed, unknown, fresh) = (
        mk(1).await,
        mk(2).await,
        mk(3).await,
        mk(4).await,
        mk(5).await,
    );
    store
        .set_call_status(&dialing, CallStatus::Dialing, None, T0 + 100)
        .await
        .unwrap();
    store
        .call_dialed(&ringing, Some("p"), CallStatus::Ringing, T0 + 50)
        .await
        .unwrap();
    let e = make::event(&completed, "k", Some(CallStatus::Completed), T0 + 10);
    store.apply_call_event(e, make::no_jobs()).await.unwrap();
    store
        .set_call_status(&unknown, CallStatus::Unknown, None, T0 + 10)
        .await
        .unwrap();
    store
        .set_call_status(&fresh, CallStatus::Dialing, None, T0 + 900)
        .await
        .unwrap();
    let stale: Vec<CallId> = store
        .stale_calls(T0 + 500)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(stale, [ringing, dialing], "oldest news first");
    assert!(store.stale_calls(T0).await.unwrap().is_empty());
}

pub async fn a_refused_call_is_dialed_again_only_on_a_free_line(store: &dyn Store) {
    // One line: the refused call gave it up, and another job's call took it.
    let first = store
        .reserve_call(make::call(&JobId::new(T0), 0, AGENT, T0), 1)
        .await
        .unwrap();
    let Reservation::Created(refused) = first else {
        panic!("expected a new call, got {first:?}")
    };
    store
        .set_call_status(&refused, CallStatus::Failed, Some("422".into()), T0 + 1)
        .await
        .unwrap();
    let second = store
        .reserve_call(make::call(&JobId::new(T0 + 2), 0, AGENT, T0 + 2), 1)
        .await
        .unwrap();
    let Reservation::Created(other) = second else {
        panic!("the freed line is free: {second:?}")
    };
    let busy = store.redial_call(&refused, 1, T0 + 3).await.unwrap();
    assert!(matches!(busy, Reservation::Busy { active: 1 }), "{busy:?}");
    let c = call(store, &refused).await;
    assert_eq!(
        (c.status, c.dial_attempts),
        (CallStatus::Failed, 1),
        "untouched"
    );
    // The other call ends: the refused one gets the line back.
    store
        .set_call_status(&other, CallStatus::Failed, None, T0 + 4)
        .await
        .unwrap();
    let taken = store.redial_call(&refused, 1, T0 + 5).await.unwrap();
    assert!(
        matches!(taken, Reservation::Created(ref id) if *id == refused),
        "{taken:?}"
    );
    let c = call(store, &refused).await;
    assert_eq!(
        (c.status, c.dial_attempts, c.dial_requested_at_ms, c.error),
        (CallStatus::Dialing, 2, Some(T0 + 5), None)
    );
    // Redialing a call that holds its line already does not need another.
    let again = store.redial_call(&refused, 1, T0 + 6).await.unwrap();
    assert!(matches!(again, Reservation::Created(_)), "{again:?}");
}
