//! PostgreSQL for tests: the database named by `CALLGATE_TEST_DATABASE_URL`,
//! and a schema of one's own per test (created for it, dropped with the
//! `Schema`). Another client's work (DDL, locks, writes behind the store's
//! back) runs on a thread with its own runtime, so it can be used from
//! synchronous code and drops. `Proxy` stands between a store and the
//! server to cut and restore the connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio_postgres::NoTls;

/// The test database's URL, if this run has one.
pub fn database_url() -> Option<String> {
    std::env::var("CALLGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh schema of the test database; `url` selects it (`search_path`).
pub struct Schema {
    pub name: String,
    pub url: String,
    base: String,
}

impl Schema {
    pub fn create(base: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "cg_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        run(base.to_owned(), format!("CREATE SCHEMA {name}"), Vec::new());
        Self {
            name,
            url,
            base: base.to_owned(),
        }
    }

    /// Runs one statement in the schema; the rows it changed.
    pub fn execute(&self, sql: &str, params: &[&str]) -> u64 {
        let params = params.iter().map(|p| (*p).to_owned()).collect();
        run(self.url.clone(), sql.to_owned(), params)
    }

    /// Runs `sql` in a transaction of another session, kept open (with its
    /// locks) until the returned guard is dropped.
    pub fn hold(&self, sql: &str) -> Hold {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = runtime();
            let client = rt.block_on(async {
                let client = connect(&url).await;
                client.batch_execute("BEGIN").await.unwrap();
                client.batch_execute(&sql).await.unwrap();
                client
            });
            ready_tx.send(()).unwrap();
            let _ = release_rx.recv();
            rt.block_on(client.batch_execute("ROLLBACK")).unwrap();
        });
        ready_rx.recv().expect("the holding session started");
        Hold {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Bounded: a server still running in this runtime may hold a lock
        // that it cannot release while this thread waits.
        let sql = format!(
            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        );
        let base = self.base.clone();
        // Best effort: a schema left behind only costs disk.
        let _ = std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&base, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

/// Holds another session's open transaction; dropping it rolls back (and
/// returns once the locks are gone).
pub struct Hold {
    release: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

fn run(url: String, sql: String, params: Vec<String>) -> u64 {
    std::thread::spawn(move || {
        runtime().block_on(async {
            let client = connect(&url).await;
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as _).collect();
            client.execute(&sql, &params).await.unwrap()
        })
    })
    .join()
    .unwrap()
}

impl Schema {
    /// The first column of the first row of `sql` (a count), run in the
    /// schema.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        std::thread::spawn(move || {
            runtime().block_on(async {
                let client = connect(&url).await;
                client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0)
            })
        })
        .join()
        .unwrap()
    }
}

/// Skips the calling test (returns from it) when no database is configured,
/// printing the skip line; otherwise the database URL.
#[macro_export]
macro_rules! pg_url_or_skip {
    ($name:literal) => {
        match $crate::support::pg::database_url() {
            Some(url) => url,
            None => {
                $crate::support::say_skipped($name, "CALLGATE_TEST_DATABASE_URL");
                return;
            }
        }
    };
}

/// A TCP proxy in front of PostgreSQL that can play dead: close every
/// connection and take new ones without ever answering.
pub struct Proxy {
    pub port: u16,
    dead: Arc<AtomicBool>,
    /// `true`: the connections stop, their server side left open.
    partitioned: tokio::sync::watch::Sender<bool>,
    /// Server sides of partitioned connections, never closed nor written.
    stranded: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `url`'s server, and `url` through it.
    pub async fn in_front_of(url: &str) -> (Proxy, String) {
        let mut proxied = url::Url::parse(url).unwrap();
        let upstream = format!(
            "{}:{}",
            proxied.host_str().unwrap(),
            proxied.port().unwrap_or(5432)
        );
        let proxy = Proxy::start(upstream).await;
        proxied.set_host(Some("127.0.0.1")).unwrap();
        proxied.set_port(Some(proxy.port)).unwrap();
        (proxy, proxied.to_string())
    }

    pub async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dead = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (d, c) = (dead.clone(), conns.clone());
        let (partitioned, _) = tokio::sync::watch::channel(false);
        let stranded: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
        let (p, st) = (partitioned.clone(), stranded.clone());
        let accept = tokio::spawn(async move {
            let mut silent = Vec::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    silent.push(inbound); // held open, never answered
                    continue;
                }
                let upstream = upstream.clone();
                let (mut cut, stranded) = (p.subscribe(), st.clone());
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let copied = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => true,
                            _ = cut.wait_for(|p| *p) => false,
                        };
                        if !copied {
                            stranded.lock().unwrap().push(out);
                        }
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            dead,
            partitioned,
            stranded,
            conns,
            accept,
        }
    }

    /// Cuts every connection; new ones are taken and never answered.
    pub fn die(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// A network partition: the client's side of every connection is
    /// closed, the server's side stays open and silent (as when a client
    /// machine vanishes: no FIN or RST reaches the server); new
    /// connections are taken and never answered.
    pub fn partition(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.partitioned.send_replace(true);
    }

    /// Lets new connections through again.
    pub fn revive(&self) {
        self.dead.store(false, Ordering::SeqCst);
        self.partitioned.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.die();
        self.stranded.lock().unwrap().clear();
        self.accept.abort();
    }
}
