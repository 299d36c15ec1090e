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
        .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within {timeout:?}"))?
}
