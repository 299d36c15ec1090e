//! Console sessions: stored, read back exactly, touched forward only,
//! deleted, purged by idle and absolute age; and shared by two stores on
//! one database, as a session made through one instance works on another.

use callgate::config::StorageConfig;
use callgate::store::{ConsoleSession, Store};

use super::engines::TestDb;
use super::make::T0;

fn session(hash: &str, created: i64, seen: i64) -> ConsoleSession {
    ConsoleSession {
        id_hash: hash.into(),
        principal: "key:ops".into(),
        scopes: vec!["console".into(), "jobs:read".into()],
        csrf_token: format!("csrf-{hash}"),
        created_at_ms: created,
        last_seen_at_ms: seen,
    }
}

pub async fn console_sessions_read_back_touch_forward_and_are_deleted(store: &dyn Store) {
    assert_eq!(store.console_session("aa").await.unwrap(), None);
    let s = session("aa", T0, T0);
    store.create_console_session(s.clone()).await.unwrap();
    assert_eq!(store.console_session("aa").await.unwrap(), Some(s.clone()));

    store
        .touch_console_session("aa", T0 + 60_000)
        .await
        .unwrap();
    // Never backwards: a slower instance's older touch changes nothing.
    store.touch_console_session("aa", T0 + 1_000).await.unwrap();
    let read = store.console_session("aa").await.unwrap().unwrap();
    assert_eq!(read.last_seen_at_ms, T0 + 60_000);
    assert_eq!(read.created_at_ms, T0);

    assert!(store.delete_console_session("aa").await.unwrap());
    assert!(!store.delete_console_session("aa").await.unwrap());
    assert_eq!(store.console_session("aa").await.unwrap(), None);
}

pub async fn console_sessions_are_purged_when_idle_or_too_old(store: &dyn Store) {
    // Idle: last seen before T0 + 10.
    store
        .create_console_session(session("idle", T0, T0 + 5))
        .await
        .unwrap();
    // Too old: created before T0 + 1, though seen just now.
    store
        .create_console_session(session("old", T0, T0 + 100))
        .await
        .unwrap();
    store
        .create_console_session(session("live", T0 + 2, T0 + 100))
        .await
        .unwrap();
    let purged = store.purge_console_sessions(T0 + 10, T0 + 1).await.unwrap();
    assert_eq!(purged, 2);
    assert!(store.console_session("idle").await.unwrap().is_none());
    assert!(store.console_session("old").await.unwrap().is_none());
    assert!(store.console_session("live").await.unwrap().is_some());
}

/// A session made through one instance is found, and ended, through another.
pub async fn a_session_made_by_one_store_is_seen_and_ended_by_another(db: &TestDb) {
    let other = db.reopen(&StorageConfig::default()).await;
    db.store()
        .create_console_session(session("bb", T0, T0))
        .await
        .unwrap();
    assert!(other.console_session("bb").await.unwrap().is_some());
    assert!(other.delete_console_session("bb").await.unwrap());
    assert!(db.store().console_session("bb").await.unwrap().is_none());
    other.close().await;
}
