//! Stored API keys: made once per name, read back exactly (hash, scopes,
//! networks, rate), disabled (the first time kept), last uses moved
//! forward only in one batch; shared by two stores on one database, as
//! the key snapshots of two instances read them.

use std::time::Duration;

use callgate::config::{RateSpec, StorageConfig};
use callgate::store::{ApiKeyRecord, Store};

use super::engines::TestDb;
use super::make::T0;

fn key(name: &str, fill: u8) -> ApiKeyRecord {
    ApiKeyRecord {
        name: name.into(),
        hash: [fill; 32],
        scopes: vec!["triggers:run".into(), "jobs:read".into()],
        allowed_ips: vec!["10.0.0.0/8".into()],
        rate_limit: Some(RateSpec {
            requests: 10,
            per: Duration::from_secs(60),
            burst: 3,
        }),
        created_at_ms: T0,
        created_by: "key:ops".into(),
        disabled_at_ms: None,
        last_used_at_ms: None,
    }
}

pub async fn api_keys_are_made_once_per_name_disabled_and_their_use_recorded(store: &dyn Store) {
    assert!(store.api_keys().await.unwrap().is_empty());
    let crm = key("crm", 7);
    let plain = ApiKeyRecord {
        scopes: Vec::new(),
        allowed_ips: Vec::new(),
        rate_limit: None,
        ..key("b-plain", 9)
    };
    assert!(store.create_api_key(crm.clone()).await.unwrap());
    assert!(store.create_api_key(plain.clone()).await.unwrap());
    // A name is taken once; the first key stays as it was.
    assert!(!store.create_api_key(key("crm", 8)).await.unwrap());
    assert_eq!(
        store.api_keys().await.unwrap(),
        vec![plain.clone(), crm.clone()]
    );

    let disabled = store.disable_api_key("crm", T0 + 5).await.unwrap().unwrap();
    assert_eq!(disabled.disabled_at_ms, Some(T0 + 5));
    let again = store.disable_api_key("crm", T0 + 9).await.unwrap().unwrap();
    assert_eq!(again.disabled_at_ms, Some(T0 + 5), "the first time is kept");
    assert_eq!(store.disable_api_key("nobody", T0).await.unwrap(), None);
    // A disabled key keeps its name.
    assert!(!store.create_api_key(key("crm", 1)).await.unwrap());

    store
        .record_api_key_use(vec![("crm".into(), T0 + 100), ("b-plain".into(), T0 + 50)])
        .await
        .unwrap();
    // Never back; an unknown name changes nothing.
    store
        .record_api_key_use(vec![("crm".into(), T0 + 60), ("ghost".into(), T0)])
        .await
        .unwrap();
    store.record_api_key_use(Vec::new()).await.unwrap();
    let keys = store.api_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].last_used_at_ms, Some(T0 + 50));
    assert_eq!(
        keys[1],
        ApiKeyRecord {
            disabled_at_ms: Some(T0 + 5),
            last_used_at_ms: Some(T0 + 100),
            ..crm
        }
    );
}

/// What one instance stores, another's next read sees.
pub async fn an_api_key_made_by_one_store_is_seen_by_another_at_once(db: &TestDb) {
    let other = db.reopen(&StorageConfig::default()).await;
    assert!(other.api_keys().await.unwrap().is_empty());
    db.store().create_api_key(key("crm", 7)).await.unwrap();
    assert_eq!(other.api_keys().await.unwrap(), vec![key("crm", 7)]);
    other.disable_api_key("crm", T0 + 1).await.unwrap();
    assert_eq!(
        db.store().api_keys().await.unwrap()[0].disabled_at_ms,
        Some(T0 + 1)
    );
    other.close().await;
}
