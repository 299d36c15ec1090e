//! Wiring: `run(config, listener, shutdown)` opens the store, builds the
//! shared state, starts the background tasks and serves until `shutdown`
//! resolves; then it drains connections, stops the tasks and flushes the
//! last batch of jobs before returning.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::http::serve::{ServeOptions, serve};
use crate::http::{AppInner, AppState, router};
use crate::idempotency::Inflight;
use crate::limits::Limiters;
use crate::store;

/// Runs the gateway on an already-bound listener until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// `run` with an explicit clock (tests move time without sleeping).
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let state = build_state(config.clone(), clock).await?;
    let store = state.store.clone();
    let tls = crate::tls::server_config(&config)?;

    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.cancel();
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(limiter_housekeeping(state.clone(), token.clone()));
    tasks.spawn(idempotency_cleanup(state.clone(), token.clone()));
    tasks.spawn(reload_keys(state.clone(), token.clone()));

    let server = &config.main.server;
    tracing::info!(
        addr = %listener.local_addr()?,
        scheme = if tls.is_some() { "https" } else { "http" },
        storage = store.engine(),
        triggers = config.triggers.len(),
        "listening"
    );
    let options = ServeOptions {
        max_connections: server.max_connections,
        handshake_timeout: server.handshake_timeout,
        shutdown_grace: server.shutdown_grace,
    };
    serve(listener, tls, router(state.clone()), options, token.clone()).await;

    token.cancel();
    while tasks.join_next().await.is_some() {}
    store.close().await;
    tracing::info!("stopped; every accepted job is committed");
    Ok(())
}

/// Opens the store and builds the state the handlers share.
pub async fn build_state(config: Arc<Config>, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let store = store::open(&config.main.storage, &config.data_dir).await?;
    let limiters = Limiters::new(
        &config.main.limits,
        config.triggers.values().map(|t| (&t.id, t.rate_limit)),
    );
    Ok(AppState::new(AppInner {
        keys: ArcSwap::from_pointee(config.keys.clone()),
        issuers: config.issuers.clone(),
        config,
        store,
        limiters,
        clock,
        inflight: Inflight::default(),
    }))
}

/// Drops idle rate-limiter keys so memory stays bounded.
async fn limiter_housekeeping(state: AppState, token: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.main.limits.housekeeping_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {
                let left = state.limiters.housekeep();
                tracing::debug!(keys = left, "rate limiter housekeeping");
            }
        }
    }
}

/// Deletes idempotency records past their retention.
async fn idempotency_cleanup(state: AppState, token: CancellationToken) {
    let every = (state.config.main.idempotency.retention / 24)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => match state.store.purge_idempotency(state.clock.now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired idempotency keys removed"),
                Err(e) => tracing::warn!(error = %e, "idempotency clean-up failed"),
            },
        }
    }
}

/// Picks up keys added by `callgate key new` while serving: the key file is
/// re-read when its modification time changes. A broken file is logged and
/// the previous keys stay in force.
async fn reload_keys(state: AppState, token: CancellationToken) {
    let path = state.config.keys_path.clone();
    let mut seen: Option<SystemTime> = state.config.keys_modified;
    let mut tick = tokio::time::interval(state.config.main.auth.keys_reload_interval);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = config::modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        let mut problems = Vec::new();
        let keys = config::load_keys_file(&path).map(|file| {
            crate::auth::KeySet::build(&file, &state.config.main.auth.keys_file, &mut problems)
        });
        match keys {
            Ok(keys) if problems.is_empty() => {
                tracing::info!(keys = keys.len(), file = %path.display(), "API keys reloaded");
                state.keys.store(Arc::new(keys));
            }
            Ok(_) => {
                tracing::error!(problems = ?problems.iter().map(ToString::to_string).collect::<Vec<_>>(), "key file has problems; keeping the previous keys")
            }
            Err(p) => {
                tracing::error!(problem = %p, "key file unreadable; keeping the previous keys")
            }
        }
    }
}
