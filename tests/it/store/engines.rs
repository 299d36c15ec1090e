//! The engines the conformance suite runs against: one function each,
//! returning a fresh, empty database. SQLite always; PostgreSQL when
//! `CALLGATE_TEST_DATABASE_URL` is set, each case in a schema of its own
//! (created for it, dropped after it).
//!
//! Besides the store, each engine offers the little the suite must do
//! *around* the store, as another client of the same database would:
//! open it again, hold its write lock, and write a value no engine writes.

use std::path::PathBuf;
use std::sync::Arc;

use callgate::config::StorageConfig;
use callgate::store::Store;
use futures_util::future::BoxFuture;

/// Which record `corrupt_status` overwrites.
#[derive(Debug, Clone, Copy)]
pub enum Record {
    Job,
    Call,
    Delivery,
}

/// What only the engine itself can do to its database.
pub trait Raw: Send + Sync {
    /// Opens the same database again, with `cfg` (its URL is the engine's).
    fn reopen<'a>(&'a self, cfg: &'a StorageConfig) -> BoxFuture<'a, Arc<dyn Store>>;
    /// Takes the database's write lock, as another process would, until
    /// the returned guard is dropped.
    fn hold_writes(&self) -> Box<dyn Send>;
    /// Overwrites a record's status with `text`, bypassing the store.
    fn corrupt_status(&self, record: Record, id: &str, text: &str);
}

/// A fresh database of one engine, for one case.
pub struct TestDb {
    pub engine: &'static str,
    pub store: Arc<dyn Store>,
    raw: Box<dyn Raw>,
}

impl TestDb {
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub async fn reopen(&self, cfg: &StorageConfig) -> Arc<dyn Store> {
        self.raw.reopen(cfg).await
    }

    pub fn hold_writes(&self) -> Box<dyn Send> {
        self.raw.hold_writes()
    }

    pub fn corrupt_status(&self, record: Record, id: &str, text: &str) {
        self.raw.corrupt_status(record, id, text)
    }
}

/// A fresh database of every engine available here, for the case `name`.
pub async fn all(cfg: &StorageConfig, name: &str) -> Vec<TestDb> {
    let mut dbs = vec![sqlite(cfg).await];
    match crate::support::pg::database_url() {
        Some(url) => dbs.push(postgres(cfg, &url).await),
        None => crate::support::say_skipped(name, "CALLGATE_TEST_DATABASE_URL"),
    }
    dbs
}

/// SQLite: a new file in a temp dir, opened the way `callgate serve` opens
/// its storage URL.
async fn sqlite(cfg: &StorageConfig) -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let raw = SqliteRaw {
        path: dir.path().join("store.db"),
        dir,
    };
    let store = raw.reopen(cfg).await;
    TestDb {
        engine: "sqlite",
        store,
        raw: Box::new(raw),
    }
}

struct SqliteRaw {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteRaw {
    fn connect(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn
    }
}

impl Raw for SqliteRaw {
    fn reopen<'a>(&'a self, cfg: &'a StorageConfig) -> BoxFuture<'a, Arc<dyn Store>> {
        Box::pin(async move {
            let cfg = StorageConfig {
                url: "sqlite:store.db".into(),
                ..cfg.clone()
            };
            callgate::store::open(&cfg, self.dir.path()).await.unwrap()
        })
    }

    fn hold_writes(&self) -> Box<dyn Send> {
        let conn = self.connect();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Dropping the connection rolls the transaction back.
        Box::new(conn)
    }

    fn corrupt_status(&self, record: Record, id: &str, text: &str) {
        let table = match record {
            Record::Job => "jobs",
            Record::Call => "calls",
            Record::Delivery => "deliveries",
        };
        let n = self
            .connect()
            .execute(
                &format!("UPDATE {table} SET status = ?1 WHERE id = ?2"),
                [text, id],
            )
            .unwrap();
        assert_eq!(n, 1, "no {table} row {id}");
    }
}

/// PostgreSQL: a new schema in the test database, opened the way `callgate
/// serve` opens a `postgres://` storage URL (the schema is the URL's
/// `search_path`).
async fn postgres(cfg: &StorageConfig, base: &str) -> TestDb {
    let schema = crate::support::pg::Schema::create(base);
    let raw = PgRaw { schema };
    let store = raw.reopen(cfg).await;
    TestDb {
        engine: "postgres",
        store,
        raw: Box::new(raw),
    }
}

struct PgRaw {
    schema: crate::support::pg::Schema,
}

impl Raw for PgRaw {
    fn reopen<'a>(&'a self, cfg: &'a StorageConfig) -> BoxFuture<'a, Arc<dyn Store>> {
        Box::pin(async move {
            let cfg = StorageConfig {
                url: self.schema.url.clone(),
                pool_size: cfg.pool_size.min(4),
                ..cfg.clone()
            };
            let dir = tempfile::tempdir().unwrap();
            callgate::store::open(&cfg, dir.path()).await.unwrap()
        })
    }

    /// Another session takes EXCLUSIVE locks on the tables the writer
    /// inserts into (reads go on, writes wait), in a transaction kept open
    /// until the guard is dropped, as another process would.
    fn hold_writes(&self) -> Box<dyn Send> {
        Box::new(
            self.schema
                .hold("LOCK TABLE jobs, idempotency_keys, heartbeat IN EXCLUSIVE MODE"),
        )
    }

    fn corrupt_status(&self, record: Record, id: &str, text: &str) {
        let table = match record {
            Record::Job => "jobs",
            Record::Call => "calls",
            Record::Delivery => "deliveries",
        };
        let n = self.schema.execute(
            &format!("UPDATE {table} SET status = $1 WHERE id = $2"),
            &[text, id],
        );
        assert_eq!(n, 1, "no {table} row {id}");
    }
}
