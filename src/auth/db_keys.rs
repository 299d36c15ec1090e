//! API keys stored in the database (made through `POST /v1/keys`), served
//! from an in-memory snapshot so that checking one costs no query.
//!
//! Policy: `keys.toml` keys are checked first, in memory, by the caller;
//! this set is asked only when they do not match. The snapshot is read
//! again from the store every `auth.db_keys_refresh` (a key disabled at
//! any instance stops working everywhere within it), and on a miss for a
//! well-formed key (`cg_` + 43 characters), at most once per
//! `MISS_REFRESH_MIN` across all requests (a key made at another instance
//! works here about a second later; made-up keys cannot hammer the
//! database). A stored key whose name `keys.toml` also holds is ignored:
//! the file wins. Last uses are noted in memory at most once a minute per
//! key and written in one batch at each refresh, never per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::api_key::{self, KeySet};
use super::{IpAllowlist, Principal, Scope, Scopes};
use crate::clock::Clock;
use crate::crypto::sha256;
use crate::store::{ApiKeyRecord, Store, StoreError};

/// Shortest time between two refreshes asked for by unknown keys.
pub const MISS_REFRESH_MIN: Duration = Duration::from_secs(1);
/// A key's last use is written at most this often.
pub const LAST_USE_EVERY_MS: i64 = 60_000;

struct Entry {
    hash: [u8; 32],
    name: Arc<str>,
    principal: Arc<Principal>,
    /// When a use was last noted (shared across snapshots by name).
    noted_ms: Arc<AtomicI64>,
}

/// The enabled stored keys, as of the last refresh.
#[derive(Default)]
struct Snapshot {
    entries: Vec<Entry>,
}

/// The stored API keys of this instance.
pub struct DbKeys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    snapshot: ArcSwap<Snapshot>,
    /// Held while refreshing: one refresh at a time; waiters then find
    /// the fresh snapshot. Holds when the last refresh after a miss
    /// started (the periodic ones do not count: a new key's first use
    /// should not wait for them). Real time, not the injected clock: the
    /// bound is on load on the database.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    /// Last uses not written yet, by name.
    uses: Mutex<HashMap<Arc<str>, i64>>,
    /// How many times the stored keys were read (for tests and logs).
    reads: std::sync::atomic::AtomicU64,
}

impl DbKeys {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            refreshing: tokio::sync::Mutex::new(None),
            uses: Mutex::new(HashMap::new()),
            reads: Default::default(),
        }
    }

    /// The principal of `presented`, if it is an enabled stored key whose
    /// name `toml` does not hold.
    pub async fn verify(&self, presented: &str, toml: &KeySet) -> Option<Arc<Principal>> {
        if !api_key::well_formed(presented) {
            return None;
        }
        let hash = sha256(presented.as_bytes());
        if let Some(p) = self.lookup(&hash) {
            return Some(p);
        }
        self.refresh_after_miss(toml).await;
        self.lookup(&hash)
    }

    fn lookup(&self, hash: &[u8; 32]) -> Option<Arc<Principal>> {
        let snapshot = self.snapshot.load();
        // Every hash is compared (no early exit), as for `keys.toml`.
        let mut found: Option<&Entry> = None;
        for entry in &snapshot.entries {
            if bool::from(entry.hash.ct_eq(hash)) {
                found = Some(entry);
            }
        }
        let entry = found?;
        self.note_use(entry);
        Some(entry.principal.clone())
    }

    fn note_use(&self, entry: &Entry) {
        let now = self.clock.now_ms();
        let last = entry.noted_ms.load(Ordering::Relaxed);
        if now - last >= LAST_USE_EVERY_MS
            && entry
                .noted_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
            uses.insert(entry.name.clone(), now);
        }
    }

    async fn refresh_after_miss(&self, toml: &KeySet) {
        let mut last = self.refreshing.lock().await;
        if last.is_some_and(|at| at.elapsed() < MISS_REFRESH_MIN) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.load(toml).await {
            tracing::warn!(error = %e, "reading the stored API keys failed; keeping the last ones");
        }
    }

    /// Reads the stored keys again now (the periodic refresh, and after a
    /// change made here).
    pub async fn refresh(&self, toml: &KeySet) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        self.load(toml).await
    }

    async fn load(&self, toml: &KeySet) -> Result<(), StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let records = self.store.api_keys().await?;
        let previous = self.snapshot.load();
        let noted: HashMap<&str, &Arc<AtomicI64>> = previous
            .entries
            .iter()
            .map(|e| (&*e.name, &e.noted_ms))
            .collect();
        let mut entries = Vec::new();
        for record in records {
            if record.disabled_at_ms.is_some() {
                continue;
            }
            if toml.has_name(&record.name) {
                tracing::warn!(key = %record.name, "a stored API key has the name of a keys.toml key; only the file's key is accepted");
                continue;
            }
            let noted_ms = noted.get(record.name.as_str()).map_or_else(
                || Arc::new(AtomicI64::new(record.last_used_at_ms.unwrap_or(0))),
                |n| Arc::clone(n),
            );
            match principal(&record) {
                Ok(principal) => entries.push(Entry {
                    hash: record.hash,
                    name: Arc::from(record.name.as_str()),
                    principal,
                    noted_ms,
                }),
                Err(why) => {
                    tracing::error!(key = %record.name, problem = %why, "a stored API key cannot be used")
                }
            }
        }
        drop(noted);
        self.snapshot.store(Arc::new(Snapshot { entries }));
        Ok(())
    }

    /// Writes the noted last uses in one batch (kept for the next time
    /// when the store fails).
    pub async fn flush_uses(&self) {
        let batch: Vec<(String, i64)> = {
            let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
            uses.drain().map(|(n, t)| (n.to_string(), t)).collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_api_key_use(batch.clone()).await {
            tracing::warn!(error = %e, "recording API keys' last use failed; will try again");
            let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
            for (name, at) in batch {
                let at = uses.get(name.as_str()).map_or(at, |t| (*t).max(at));
                uses.insert(Arc::from(name), at);
            }
        }
    }

    /// The principal of the enabled stored key whose principal id is `id`
    /// (`key:<name>`), as of the last refresh: a console session made with
    /// a stored key ends once the key is disabled.
    pub fn principal(&self, id: &str) -> Option<Arc<Principal>> {
        self.snapshot
            .load()
            .entries
            .iter()
            .find(|e| &*e.principal.id == id)
            .map(|e| e.principal.clone())
    }

    /// How many stored keys are in force here.
    pub fn len(&self) -> usize {
        self.snapshot.load().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times the stored keys were read from the store.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// The principal a stored key stands for (`key:<name>`, as a file key).
fn principal(record: &ApiKeyRecord) -> Result<Arc<Principal>, String> {
    let mut scopes = Vec::new();
    for s in &record.scopes {
        scopes.push(Scope::parse(s).ok_or_else(|| {
            format!(
                "unknown scope `{s}` (known: {})",
                super::scope::known_scopes()
            )
        })?);
    }
    let allowed_ips = IpAllowlist::parse(&record.allowed_ips)
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|(_, e)| e)
                .collect::<Vec<_>>()
                .join("; ")
        })?
        .map(Arc::new);
    Ok(Arc::new(Principal {
        id: Arc::from(format!("key:{}", record.name)),
        scopes: Scopes::new(scopes),
        rate_limit: record.rate_limit,
        allowed_ips,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::StorageConfig;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn made_up_keys_read_the_store_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("k.db"), &StorageConfig::default())
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let keys = DbKeys::new(store.clone(), Arc::new(SystemClock));
        let toml = KeySet::default();
        let started = Instant::now();
        for _ in 0..200 {
            assert!(keys.verify(&api_key::generate(), &toml).await.is_none());
        }
        // Malformed ones never read it.
        for bad in ["cg_short", "not-a-key", &format!("cg_{}", "!".repeat(43))] {
            assert!(keys.verify(bad, &toml).await.is_none());
        }
        let bound = 1 + started.elapsed().as_secs();
        assert!(
            keys.reads() <= bound,
            "{} reads in {:?}",
            keys.reads(),
            started.elapsed()
        );
        // A real key made meanwhile is found by the periodic refresh.
        let key = api_key::generate();
        let record = ApiKeyRecord {
            name: "crm".into(),
            hash: sha256(key.as_bytes()),
            scopes: vec!["triggers:run".into()],
            allowed_ips: Vec::new(),
            rate_limit: None,
            created_at_ms: 0,
            created_by: "test".into(),
            disabled_at_ms: None,
            last_used_at_ms: None,
        };
        assert!(store.create_api_key(record).await.unwrap());
        keys.refresh(&toml).await.unwrap();
        let principal = keys.verify(&key, &toml).await.unwrap();
        assert_eq!(&*principal.id, "key:crm");
        store.close().await;
    }
}
