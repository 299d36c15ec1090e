//! Stale calls: calls with no news for `runner.stale_call_after` (their
//! provider's events may have been lost) are looked up with the provider
//! and what it says is applied through the same path as a callback.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Runner, event_jobs};
use crate::calls::Lookup;
use crate::store::{CallEventIn, CallRecord, CallStatus, EventApplied};

impl Runner {
    /// Every `runner.stale_call_after / 4` (at least 5 s), reconciles stale
    /// calls, on the housekeeping leader only (`Store::is_leader`): one
    /// instance asks the providers, not every one.
    pub(super) async fn reconcile_stale(self, token: CancellationToken) {
        let every = (self.ctx.config.main.runner.stale_call_after / 4).max(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(every) => {},
            }
            if self.ctx.store.is_leader() {
                self.reconcile_stale_calls().await;
            }
        }
    }

    /// Asks providers about calls with no news for `runner.stale_call_after`
    /// (their events may have been lost) and applies what they say through
    /// the same path as a callback. Returns how many calls changed.
    pub async fn reconcile_stale_calls(&self) -> usize {
        let after = self.ctx.config.main.runner.stale_call_after;
        let now = self.ctx.clock.now_ms();
        let Ok(stale) = self
            .ctx
            .store
            .stale_calls(now - after.as_millis() as i64)
            .await
        else {
            return 0;
        };
        let mut changed = 0;
        for call in stale {
            let Some(provider) = self.ctx.providers.get(&call.provider) else {
                continue;
            };
            let ctx = self.ctx.call_context(&call);
            let status = match provider.lookup(&call, &ctx).await {
                Ok(Lookup::Found {
                    status: Some(s), ..
                }) => s,
                Ok(Lookup::NotFound) => CallStatus::Failed,
                _ => continue,
            };
            let mut event = CallEventIn::new(
                call.id.clone(),
                format!("reconcile:{}", status.as_str()),
                json!({"reconciled": status}).to_string(),
                now,
            );
            event.status = Some(status);
            let config = self.ctx.config.clone();
            let on_final = Box::new(move |c: &CallRecord| event_jobs(&config, c, now));
            match self.ctx.store.apply_call_event(event, on_final).await {
                Ok(EventApplied::Applied { moved_to: Some(_) }) => changed += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(call_id = %call.id, error = %e, "reconciling a stale call failed")
                }
            }
        }
        if changed > 0 {
            tracing::info!(
                calls = changed,
                "stale calls reconciled with their providers"
            );
            self.ctx.wake.notify_one();
        }
        changed
    }
}
