//! The stored do-not-call list: added once (the first entry is kept),
//! read, listed in number order by cursor, removed; shared by two stores
//! on one database, as the dial paths of two instances read it.

use callgate::config::StorageConfig;
use callgate::store::{DncEntry, Store};

use super::engines::TestDb;
use super::make::T0;

const A: &str = "+15550120000";
const B: &str = "+15550121234";
const C: &str = "+442071838750";

fn numbers(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

async fn listed(store: &dyn Store, after: Option<&str>, limit: usize) -> Vec<String> {
    store
        .list_do_not_call(after.map(str::to_owned), limit)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.number)
        .collect()
}

pub async fn do_not_call_entries_are_added_once_listed_in_order_and_removed(store: &dyn Store) {
    assert_eq!(store.do_not_call(B).await.unwrap(), None);
    // A number twice in one call counts once.
    let added = store
        .add_do_not_call(numbers(&[B, C, B]), "key:ops", T0)
        .await
        .unwrap();
    assert_eq!(added, 2);
    // Already listed: only the new one is added; the first entry is kept.
    let added = store
        .add_do_not_call(numbers(&[B, A]), "key:other", T0 + 1)
        .await
        .unwrap();
    assert_eq!(added, 1);
    assert_eq!(
        store.do_not_call(B).await.unwrap(),
        Some(DncEntry {
            number: B.into(),
            added_at_ms: T0,
            added_by: "key:ops".into(),
        })
    );
    assert_eq!(
        store.do_not_call(A).await.unwrap().unwrap().added_by,
        "key:other"
    );
    assert_eq!(
        store
            .add_do_not_call(Vec::new(), "key:ops", T0)
            .await
            .unwrap(),
        0
    );

    // Byte order; pages of one, each after the last, cover everything once.
    assert_eq!(listed(store, None, 10).await, numbers(&[A, B, C]));
    assert_eq!(listed(store, Some(A), 1).await, numbers(&[B]));
    assert_eq!(listed(store, Some(C), 10).await, Vec::<String>::new());
    assert_eq!(
        listed(store, None, 0).await,
        numbers(&[A]),
        "a limit of 0 lists one"
    );

    assert!(store.remove_do_not_call(B).await.unwrap());
    assert!(!store.remove_do_not_call(B).await.unwrap(), "removed once");
    assert_eq!(store.do_not_call(B).await.unwrap(), None);
    assert_eq!(listed(store, None, 10).await, numbers(&[A, C]));
}

pub async fn a_large_do_not_call_import_is_added_in_one_call(store: &dyn Store) {
    let many: Vec<String> = (0..3_000).map(|i| format!("+1555{i:07}")).collect();
    let added = store
        .add_do_not_call(many.clone(), "key:ops", T0)
        .await
        .unwrap();
    assert_eq!(added, 3_000);
    let again = store
        .add_do_not_call(many.clone(), "key:ops", T0)
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(listed(store, None, 5_000).await, many);
}

/// What one instance adds, another's next read sees (no cache in between).
pub async fn an_entry_added_by_one_store_is_seen_by_another_at_once(db: &TestDb) {
    let other = db.reopen(&StorageConfig::default()).await;
    assert_eq!(other.do_not_call(B).await.unwrap(), None);
    db.store()
        .add_do_not_call(numbers(&[B]), "key:ops", T0)
        .await
        .unwrap();
    assert!(other.do_not_call(B).await.unwrap().is_some());
    assert!(other.remove_do_not_call(B).await.unwrap());
    assert_eq!(db.store().do_not_call(B).await.unwrap(), None);
    other.close().await;
}
