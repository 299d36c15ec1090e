//! Connecting: the session settings every connection gets, the pools, and
//! the start-up check and migrations.

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{parse_url, schema};
use crate::config::StorageConfig;

/// The URL's settings plus callgate's: durable commits, a bound on every
/// statement, a bound on connecting, TCP keepalives (a server that vanished
/// without closing is noticed).
pub(super) fn session_config(cfg: &StorageConfig) -> anyhow::Result<tokio_postgres::Config> {
    let mut pg = parse_url(&cfg.url).map_err(anyhow::Error::msg)?;
    let statement_timeout = cfg.busy_timeout.as_millis().max(1);
    // Startup options (`-c`) are session defaults: they hold for every
    // statement of every pooled connection. Appended to the URL's own (a
    // `search_path`, say).
    let options = format!(
        "{} -c synchronous_commit=on -c statement_timeout={statement_timeout}",
        pg.get_options().unwrap_or("")
    );
    pg.options(options.trim())
        .connect_timeout(cfg.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if pg.get_application_name().is_none() {
        pg.application_name("callgate");
    }
    Ok(pg)
}

/// A pool of at most `size` connections; `Fast` recycling (a connection is
/// checked only for being closed: a transaction dropped half-way is rolled
/// back by tokio-postgres before the connection's next statement).
pub(super) fn pool_of(
    pg: &tokio_postgres::Config,
    cfg: &StorageConfig,
    size: usize,
) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        pg.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(cfg.busy_timeout))
        .create_timeout(Some(cfg.connect_timeout))
        .recycle_timeout(Some(cfg.connect_timeout))
        .build()
        .context("building the PostgreSQL connection pool")
}

/// Checks the server's durability settings and applies the migrations, on a
/// connection of its own, within `timeout`.
pub(super) async fn prepare(pg: &tokio_postgres::Config, timeout: Duration) -> anyhow::Result<()> {
    let work = async {
        let (mut client, connection) = pg.connect(NoTls).await.context("connecting")?;
        let conn_task = tokio::spawn(connection);
        let result = async {
            let fsync: String = client.query_one("SHOW fsync", &[]).await?.try_get(0)?;
            let sync: String = client
                .query_one("SHOW synchronous_commit", &[])
                .await?
                .try_get(0)?;
            anyhow::ensure!(fsync == "on", "the server runs with fsync = {fsync}");
            anyhow::ensure!(sync == "on", "synchronous_commit is {sync}, expected on");
            schema::migrate(&mut client).await.context("migrating")?;
            Ok(())
        }
        .await;
        drop(client);
        let _ = conn_task.await;
        result
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|elapsed| {
            anyhow::Error::new(elapsed)
                .context(format!("PostgreSQL did not answer within {timeout:?}"))
        })?
}

/// `prepare`, tried again while the server cannot be reached (down,
/// starting up, out of connections, not answering), with a pause growing
/// from 250 ms to 5 s, until `start_timeout` has passed: instances started
/// together with their database (one compose file, one boot) come up
/// without a supervisor's restart loop. What waiting will not change fails
/// at once.
///
/// Chosen over serving at once with a store that connects later: every
/// part of the gateway holds an open store, and a wrapper answering
/// "unavailable" for each `Store` operation until then would have to
/// follow every change of the interface. Until the store is open the
/// listener is bound but nothing answers (not even `/healthz`); past
/// `start_timeout` the process exits with the error, for a supervisor to
/// restart it.
pub(super) async fn prepare_retrying(
    pg: &tokio_postgres::Config,
    timeout: Duration,
    start_timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + start_timeout;
    let mut pause = Duration::from_millis(250);
    loop {
        match prepare(pg, timeout).await {
            Ok(()) => return Ok(()),
            Err(e) if transient(&e) && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in = ?pause,
                    "PostgreSQL cannot be reached yet; trying again until storage.start_timeout"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether waiting may cure `e`: no answer in time, a connection that
/// failed or broke (no SQLSTATE: refused, reset, closed), or a server
/// that answered "not now" (class 08 connection exception, class 53
/// insufficient resources such as too many connections, 57P03 starting
/// up or shutting down). Classified by kind, never by message.
fn transient(e: &anyhow::Error) -> bool {
    for cause in e.chain() {
        if cause.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return match pg.code() {
                None => true,
                Some(state) => {
                    let code = state.code();
                    code.starts_with("08") || code.starts_with("53") || code == "57P03"
                }
            };
        }
    }
    false
}
