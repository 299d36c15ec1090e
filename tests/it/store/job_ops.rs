//! Operations on jobs for the operations API: listing by the number a job
//! calls.

use std::sync::Arc;

use callgate::ids::JobId;
use callgate::store::{JobFilter, Store};
use serde_json::json;

use super::make::{self, AGENT, T0};

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
