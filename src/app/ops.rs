//! The operations API's background tasks: flushing the refused-trigger
//! counts to the store every few seconds (and once more at shutdown), and
//! one health-check task per endpoint that has a `health_check`.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::http::AppState;

/// How often the refusal counts are written (one store call each time).
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Starts the tasks (they end when `token` is cancelled).
pub(super) fn start(state: &AppState, tasks: &mut JoinSet<()>, token: &CancellationToken) {
    tasks.spawn(flush_refusals(state.clone(), token.clone()));
    for client in state.outbound.clients.values() {
        if client.endpoint.health_check.is_some() {
            tasks.spawn(crate::webhooks::health::run(
                client.clone(),
                state.outbound.health.clone(),
                state.clock.clone(),
                token.clone(),
            ));
        }
    }
}

async fn flush_refusals(state: AppState, token: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = token.cancelled() => true,
            _ = tick.tick() => false,
        };
        flush(&state).await;
        if stopping {
            return;
        }
    }
}

/// Writes the counts so far; on failure keeps them for the next flush.
pub async fn flush(state: &AppState) {
    let counts = state.refusals.take();
    if counts.is_empty() {
        return;
    }
    if let Err(e) = state.store.add_refusals(counts.clone()).await {
        tracing::warn!(error = %e, "writing the refused-trigger counts failed; kept for the next flush");
        state.refusals.restore(counts);
    }
}
