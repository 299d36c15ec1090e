//! Wiring: `run(config, listener, shutdown)` opens the store, builds the
//! shared state, starts the background tasks and serves until `shutdown`
//! resolves; then it drains connections, stops the tasks and flushes the
//! last batch of jobs before returning.

pub mod compile;
mod ops;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::calls::Providers;
use crate::runner::Runner;

use crate::catalog::Catalog;
use crate::clock::{Clock, SystemClock};
use crate::config;
use crate::http::serve::{ServeOptions, serve};
use crate::http::{AppInner, AppState, router};
use crate::idempotency::Inflight;
use crate::limits::{Limiters, Redis};
use crate::store;

/// How `run` starts (tests change the clock, turn the background runner
/// off and drive it themselves).
pub struct RunOptions {
    pub clock: Arc<dyn Clock>,
    /// Run the worker loop in this process.
    pub runner: bool,
    /// Receives the state and the runner once the server is up.
    pub started: Option<oneshot::Sender<Started>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            runner: true,
            started: None,
        }
    }
}

/// Handles to a running gateway.
pub struct Started {
    pub state: AppState,
    pub runner: Runner,
}

/// Runs the gateway on an already-bound listener until `shutdown` resolves.
pub async fn run(
    config: Catalog,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runner = config.main.runner.enabled;
    run_with(
        config,
        listener,
        shutdown,
        RunOptions {
            runner,
            ..Default::default()
        },
    )
    .await
}

/// `run` with options.
pub async fn run_with(
    config: Catalog,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: RunOptions,
) -> anyhow::Result<()> {
    crate::crypto::install_tls_provider();
    let config = Arc::new(config);
    let tls = tls::server_config(&config)?;
    let addr = listener.local_addr()?;
    let base = callback_base(&config, addr, tls.is_some());
    let own_cert = tls::served_certificate(&config).and_then(|p| std::fs::read(p).ok());
    let state = build_state(config.clone(), options.clock, base, own_cert).await?;
    let store = state.store.clone();

    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.cancel();
    });
    let mut tasks = JoinSet::new();
    // Asked once before serving, so a lone instance leads from its first
    // request on (an error here is not fatal: the task asks again).
    let _ = store.try_lead().await;
    tasks.spawn(lead(state.clone(), token.clone()));
    tasks.spawn(limiter_housekeeping(state.clone(), token.clone()));
    if let Some(redis) = state.limiters.redis().cloned() {
        let token = token.clone();
        tasks.spawn(async move { redis.watch(token).await });
    }
    tasks.spawn(console_session_cleanup(state.clone(), token.clone()));
    tasks.spawn(idempotency_cleanup(state.clone(), token.clone()));
    tasks.spawn(refresh_db_keys(state.clone(), token.clone()));
    start_alerts(&state, &mut tasks, &token)?;
    tasks.spawn(reload_keys(state.clone(), token.clone()));
    ops::start(&state, &mut tasks, &token);
    start_jwks(&state, &mut tasks, &token).await?;
    let runner = state.runner();
    if options.runner {
        // Jobs other instances accept wake this runner too.
        store.notify_new_jobs(state.wake.clone());
    }
    let runner_task = options
        .runner
        .then(|| tokio::spawn(runner.clone().run(token.clone())));
    // Deliveries go out wherever jobs run.
    let deliverer_task = options
        .runner
        .then(|| tokio::spawn(state.deliverer().run(token.clone())));
    if let Some(started) = options.started {
        let _ = started.send(Started {
            state: state.clone(),
            runner,
        });
    }

    let server = &config.main.server;
    tracing::info!(
        addr = %addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        storage = store.engine(),
        triggers = config.triggers.len(),
        runner = options.runner,
        "listening"
    );
    let serve_options = ServeOptions {
        max_connections: server.max_connections,
        handshake_timeout: server.handshake_timeout,
        shutdown_grace: server.shutdown_grace,
    };
    serve(
        listener,
        tls,
        router(state.clone()),
        serve_options,
        token.clone(),
    )
    .await;

    token.cancel();
    if let Some(task) = runner_task {
        let _ = task.await;
    }
    if let Some(task) = deliverer_task {
        let _ = task.await;
    }
    while tasks.join_next().await.is_some() {}
    store.close().await;
    tracing::info!("stopped; every accepted job is committed");
    Ok(())
}

/// Runs only the workers (`callgate run-worker`), until `shutdown`.
pub async fn run_worker(
    config: Catalog,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::crypto::install_tls_provider();
    let config = Arc::new(config);
    let Some(base) = config.main.server.public_url.clone() else {
        anyhow::bail!(
            "run-worker needs server.public_url: providers send call events to the server, not to the worker"
        );
    };
    let own_cert = tls::served_certificate(&config).and_then(|p| std::fs::read(p).ok());
    let state = build_state(config.clone(), Arc::new(SystemClock), base, own_cert).await?;
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.cancel();
    });
    let _ = state.store.try_lead().await;
    let leadership = tokio::spawn(lead(state.clone(), token.clone()));
    let mut alerts = JoinSet::new();
    start_alerts(&state, &mut alerts, &token)?;
    let deliverer = tokio::spawn(state.deliverer().run(token.clone()));
    state.store.notify_new_jobs(state.wake.clone());
    state.runner().run(token).await;
    let _ = deliverer.await;
    let _ = leadership.await;
    while alerts.join_next().await.is_some() {}
    state.store.close().await;
    Ok(())
}

/// Where providers reach this gateway: `server.public_url`, else the
/// listener itself (loopback when it listens on every address).
fn callback_base(config: &Catalog, addr: SocketAddr, tls: bool) -> String {
    if let Some(url) = &config.main.server.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// Opens the store and builds the state the handlers share.
pub async fn build_state(
    config: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    callback_base: String,
    own_cert: Option<Vec<u8>>,
) -> anyhow::Result<AppState> {
    let store = store::open(&config.main.storage, &config.data_dir).await?;
    let outbound = Arc::new(crate::webhooks::Outbound::build(&config, clock.clone())?);
    let providers = Arc::new(Providers::build(&config, callback_base, own_cert)?);
    let redis = match (&config.main.limits.backend, &config.main.limits.redis_url) {
        (crate::config::LimitsBackend::Redis, Some(url)) => {
            use secrecy::ExposeSecret;
            let limits = &config.main.limits;
            let redis = Redis::connect(
                url.expose_secret(),
                &limits.redis_prefix,
                limits.redis_timeout,
            )
            .await
            .map_err(|e| anyhow::anyhow!("limits.redis_url: {e}"))?;
            Some(Arc::new(redis))
        }
        _ => None,
    };
    let limiters = Limiters::new(
        &config.main.limits,
        config.triggers.values().map(|t| (&t.id, t.rate_limit)),
        config.providers.iter().map(|(name, p)| {
            (
                name,
                p.callback_rate_limit()
                    .unwrap_or(config.main.limits.per_provider),
            )
        }),
        clock.clone(),
        redis,
    );
    let db_keys = crate::auth::DbKeys::new(store.clone(), clock.clone());
    // Read before serving, so stored keys work from the first request; a
    // failure is not fatal (the refresh task tries again).
    if let Err(e) = db_keys.refresh(&config.keys).await {
        tracing::warn!(error = %e, "reading the stored API keys failed; trying again shortly");
    }
    Ok(AppState::new(AppInner {
        keys: ArcSwap::from_pointee(config.keys.clone()),
        db_keys,
        issuers: config.issuers.clone(),
        config,
        store,
        providers,
        wake: Arc::new(Notify::new()),
        limiters,
        clock,
        inflight: Inflight::default(),
        outbound,
        metrics: crate::http::prometheus::Metrics::install(),
        refusals: Arc::default(),
    }))
}

/// How often an instance asks for (or confirms) housekeeping leadership:
/// also about how long the others take to notice a leader that died (its
/// server must first see its session end).
const LEAD_EVERY: Duration = Duration::from_secs(2);

/// Keeps asking the store for housekeeping leadership (PostgreSQL: one
/// instance of those sharing the database; the store logs gains and
/// losses). The housekeeping passes read `Store::is_leader`.
async fn lead(state: AppState, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(LEAD_EVERY) => {}
        }
        if let Err(e) = state.store.try_lead().await {
            tracing::debug!(error = %e, "asking for housekeeping leadership failed");
        }
    }
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

/// Deletes idempotency records past their retention (on the housekeeping
/// leader only).
async fn idempotency_cleanup(state: AppState, token: CancellationToken) {
    let every = (state.config.main.idempotency.retention / 24)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !state.store.is_leader() {
            continue;
        }
        match state.store.purge_idempotency(state.clock.now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency keys removed"),
            Err(e) => tracing::warn!(error = %e, "idempotency clean-up failed"),
        }
    }
}

/// Deletes console sessions past their idle or absolute expiry (on the
/// housekeeping leader only; an expired session is refused when it is
/// used anyway, so this only keeps the table small).
async fn console_session_cleanup(state: AppState, token: CancellationToken) {
    let console = &state.config.main.console;
    let every = (console.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(300));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !state.store.is_leader() {
            continue;
        }
        let now = state.clock.now_ms();
        let idle_before = now - console.idle_timeout.as_millis() as i64;
        let created_before = now - console.absolute_timeout.as_millis() as i64;
        match state
            .store
            .purge_console_sessions(idle_before, created_before)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired console sessions removed"),
            Err(e) => tracing::warn!(error = %e, "console session clean-up failed"),
        }
    }
}

/// Starts the key-set fetchers of JWKS issuers and waits (bounded) for
/// their first fetch, so the first tokens find keys. An issuer whose
/// provider does not answer does not stop the start: its tokens get 401
/// until a fetch succeeds (retried in the background), and that is logged.
async fn start_jwks(
    state: &AppState,
    tasks: &mut JoinSet<()>,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    use crate::auth::jwt::jwks::REFRESH_WAIT;
    let mut first = Vec::new();
    for issuer in state.issuers.remote() {
        let Some(fetcher) = crate::webhooks::jwks::JwksFetcher::build(issuer.clone())
            .map_err(|e| anyhow::anyhow!("auth.jwt.issuers.{}: {e}", issuer.id))?
        else {
            continue;
        };
        tasks.spawn(fetcher.run(token.clone()));
        first.push(issuer.clone());
    }
    futures_util::future::join_all(
        first
            .iter()
            .filter_map(|i| i.jwks())
            .map(|source| source.first_fetch(REFRESH_WAIT)),
    )
    .await;
    for issuer in first.iter().filter(|i| i.key_count() == 0) {
        tracing::warn!(issuer = %issuer.id, "JWKS issuer has no keys yet: its tokens get 401 until its key set is fetched");
    }
    Ok(())
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

/// Reads the API keys stored in the database again every
/// `auth.db_keys_refresh` and writes their noted last uses in one batch
/// (the last ones once more on shutdown).
async fn refresh_db_keys(state: AppState, token: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.main.auth.db_keys_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = token.cancelled() => {
                state.db_keys.flush_uses().await;
                return;
            }
            _ = tick.tick() => {}
        }
        if let Err(e) = state.db_keys.refresh(&state.keys.load()).await {
            tracing::warn!(error = %e, "reading the stored API keys failed; keeping the last ones");
        }
        state.db_keys.flush_uses().await;
    }
}

/// Starts the alert task when `[alerts]` has targets.
fn start_alerts(
    state: &AppState,
    tasks: &mut JoinSet<()>,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    if let Some(queue) = state.outbound.take_alert_queue() {
        let alerter = crate::webhooks::Alerter::build(
            &state.config,
            state.store.clone(),
            state.clock.clone(),
        )
        .map_err(|e| anyhow::anyhow!("alerts.targets: {e}"))?;
        tasks.spawn(alerter.run(queue, token.clone()));
    }
    Ok(())
}
