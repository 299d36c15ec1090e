//! LISTEN/NOTIFY: a session of its own listens on the schema's new-jobs
//! channel (migration 2's trigger notifies it once per statement that
//! inserted jobs, in any instance) and wakes this process's runner.
//!
//! Policy: a wake-up is a hint, never the only way a job is found: the
//! runner still polls. When the session is lost the listener says so once,
//! wakes the runner (jobs may have come in unheard), and reconnects with a
//! growing pause (up to 30 s).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use super::schema::JOBS_CHANNEL_PREFIX;

/// Listens until the task is aborted (at `close`).
pub(super) async fn run(pg: tokio_postgres::Config, wake: Arc<Notify>, connect_timeout: Duration) {
    let mut pause = Duration::from_millis(250);
    loop {
        match tokio::time::timeout(connect_timeout, pg.connect(NoTls)).await {
            Ok(Ok((client, connection))) => {
                pause = Duration::from_millis(250);
                let result = session(client, connection, &wake).await;
                tracing::warn!(
                    error = result.err().map(|e| e.to_string()),
                    "the LISTEN session for new jobs ended; polling until it is back"
                );
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "LISTEN: cannot connect yet"),
            Err(_) => tracing::debug!("LISTEN: connecting timed out"),
        }
        wake.notify_one();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// One session: LISTEN, then wake on every notification until the
/// connection ends.
async fn session<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    wake: &Arc<Notify>,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let waker = wake.clone();
    // The connection is driven here (its notifications are ours); the
    // client's statements go through it.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => waker.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let listen = async {
        let schema: String = client
            .query_one("SELECT current_schema()", &[])
            .await?
            .try_get(0)?;
        let channel = format!("{JOBS_CHANNEL_PREFIX}{schema}").replace('"', "\"\"");
        client.batch_execute(&format!("LISTEN \"{channel}\"")).await
    };
    if let Err(e) = listen.await {
        driver.abort();
        return Err(e);
    }
    // Jobs inserted before LISTEN took effect were not announced.
    wake.notify_one();
    let ended = driver.await;
    drop(client);
    match ended {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
