//! Alert deduplication: a (kind, subject) is claimed once per window, by
//! one of two stores on one database racing for it; an empty delivery log
//! has no success counts.

use callgate::config::StorageConfig;
use callgate::store::Store;

use super::engines::TestDb;
use super::make::T0;

const WINDOW: i64 = 60_000;

pub async fn an_alert_is_claimed_once_per_window(store: &dyn Store) {
    let claim = |kind: &'static str, subject: &'static str, at: i64| async move {
        store.claim_alert(kind, subject, at, WINDOW).await.unwrap()
    };
    assert!(claim("breaker_opened", "crm", T0).await);
    assert!(!claim("breaker_opened", "crm", T0 + 1).await);
    assert!(!claim("breaker_opened", "crm", T0 + WINDOW - 1).await);
    // Another subject, another kind: their own.
    assert!(claim("breaker_opened", "erp", T0 + 1).await);
    assert!(claim("delivery_dead", "crm", T0 + 1).await);
    // Once the window is over, again (and then not within the new one).
    assert!(claim("breaker_opened", "crm", T0 + WINDOW).await);
    assert!(!claim("breaker_opened", "crm", T0 + WINDOW + 10).await);
    assert!(store.delivery_success(T0).await.unwrap().is_empty());
}

/// Two instances raising the same alert at once: exactly one sends it.
pub async fn of_two_stores_racing_for_an_alert_one_wins(db: &TestDb) {
    let other = db.reopen(&StorageConfig::default()).await;
    for i in 0..20i64 {
        let subject = format!("job_{i}");
        let (a, b) = tokio::join!(
            db.store()
                .claim_alert("job_needs_attention", &subject, T0 + i, WINDOW),
            other.claim_alert("job_needs_attention", &subject, T0 + i, WINDOW),
        );
        assert!(a.unwrap() ^ b.unwrap(), "exactly one claim of {subject}");
    }
    other.close().await;
}
