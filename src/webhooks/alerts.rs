//! Alerts to operators (`[alerts]`): an endpoint's breaker opened, a
//! delivery went dead, a job needs attention, an endpoint's success rate
//! over `alerts.window` fell below `alerts.success_rate_below`.
//!
//! Policy: where an event happens (the delivery engine, the runner), raising
//! its alert is one `try_send` on a bounded channel (`AlertSink::raise`;
//! nothing is built when alerts are off, and a full queue drops the alert
//! with a warning rather than slow the caller). One task per process
//! (`Alerter::run`) takes them in order: it claims each (kind, subject)
//! in the store (`Store::claim_alert`), so that the same alert goes out
//! at most once per `alerts.dedupe_window` across every instance sharing
//! the database, then sends it to every target through an SSRF-guarded
//! endpoint client: Slack's `{"text": …}`, or a JSON body signed with the
//! Standard Webhooks headers, as deliveries are. A target that does not
//! answer 2xx is tried twice more, a few seconds apart, in the
//! background. When the store cannot be asked, the alert is sent anyway
//! (a duplicate is better than a silent outage). The success rates are
//! checked every `alerts.check_every` by the housekeeping leader only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{EndpointClient, Outgoing};
use crate::catalog::Catalog;
use crate::clock::{Clock, rfc3339};
use crate::config::{AlertPreset, AlertsConfig};
use crate::ids::MsgId;
use crate::store::Store;

/// Alerts waiting for the alert task, at most.
const QUEUE: usize = 1024;
/// Attempts per target and alert.
const ATTEMPTS: u32 = 3;
/// The wait before the second attempt (doubled before the third).
const RETRY_WAIT: Duration = Duration::from_secs(2);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    BreakerOpened,
    DeliveryDead,
    JobNeedsAttention,
    SuccessRateLow,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BreakerOpened => "breaker_opened",
            AlertKind::DeliveryDead => "delivery_dead",
            AlertKind::JobNeedsAttention => "job_needs_attention",
            AlertKind::SuccessRateLow => "success_rate_low",
        }
    }
}

/// One alert: its kind and subject (what deduplication is by: an
/// endpoint's name, or a job's id), a one-line summary and details.
#[derive(Debug, Clone)]
pub struct Alert {
    pub kind: AlertKind,
    pub subject: String,
    pub summary: String,
    pub details: Value,
}

/// Where alerts are raised: cheap to clone, and a no-op when alerts are
/// off.
#[derive(Debug, Clone, Default)]
pub struct AlertSink(Option<mpsc::Sender<Alert>>);

impl AlertSink {
    /// A sink and the queue the alert task reads; `None` for both
    /// when the config has no alert target.
    pub fn for_config(config: &Catalog) -> (AlertSink, Option<mpsc::Receiver<Alert>>) {
        if config.alert_targets.is_empty() {
            return (AlertSink(None), None);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        (AlertSink(Some(tx)), Some(rx))
    }

    /// Queues the alert `make` builds (only called when alerts are on).
    pub fn raise(&self, make: impl FnOnce() -> Alert) {
        let Some(tx) = &self.0 else { return };
        if let Err(mpsc::error::TrySendError::Full(alert)) = tx.try_send(make()) {
            tracing::warn!(
                kind = alert.kind.as_str(),
                subject = %alert.subject,
                "the alert queue is full; alert dropped"
            );
        }
    }
}

/// The alert task of one process.
pub struct Alerter {
    targets: Vec<(AlertPreset, Arc<EndpointClient>)>,
    config: AlertsConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Alerter {
    pub fn build(
        config: &Catalog,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let mut targets = Vec::new();
        for t in &config.alert_targets {
            targets.push((
                t.preset,
                Arc::new(EndpointClient::build(t.endpoint.clone())?),
            ));
        }
        Ok(Self {
            targets,
            config: config.main.alerts.clone(),
            store,
            clock,
        })
    }

    /// Sends what is raised until `token` is cancelled.
    pub async fn run(self, mut queue: mpsc::Receiver<Alert>, token: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                Some(alert) = queue.recv() => self.handle(alert).await,
                _ = tick.tick(), if self.config.success_rate_below.is_some() => {
                    if self.store.is_leader() {
                        self.check_success_rates().await;
                    }
                }
            }
        }
    }

    /// Claims the alert and, when it is this process's to send, sends it to
    /// every target (the first attempt of each before the next alert).
    pub async fn handle(&self, alert: Alert) {
        let now = self.clock.now_ms();
        let window = self.config.dedupe_window.as_millis() as i64;
        match self
            .store
            .claim_alert(alert.kind.as_str(), &alert.subject, now, window)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(kind = alert.kind.as_str(), subject = %alert.subject, "alert sent recently; not repeated");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "deduplicating an alert failed; sending it anyway")
            }
        }
        tracing::info!(kind = alert.kind.as_str(), subject = %alert.subject, "sending alert");
        let msg_id = MsgId::new(now).to_string();
        for (preset, client) in &self.targets {
            let body = body(*preset, &alert, now).to_string();
            let msg_id = (*preset == AlertPreset::Webhook).then(|| msg_id.clone());
            if !send(client, &body, msg_id.as_deref(), &*self.clock).await {
                let (client, clock) = (client.clone(), self.clock.clone());
                tokio::spawn(async move {
                    let mut wait = RETRY_WAIT;
                    for _ in 1..ATTEMPTS {
                        tokio::time::sleep(wait).await;
                        if send(&client, &body, msg_id.as_deref(), &*clock).await {
                            return;
                        }
                        wait *= 2;
                    }
                    tracing::error!(target = %client.endpoint.name, "an alert could not be sent");
                });
            }
        }
    }

    /// Raises `success_rate_low` for each endpoint under the threshold.
    async fn check_success_rates(&self) {
        let Some(threshold) = self.config.success_rate_below else {
            return;
        };
        let since = self.clock.now_ms() - self.config.window.as_millis() as i64;
        let counts = match self.store.delivery_success(since).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading delivery success rates failed");
                return;
            }
        };
        let window = humantime::format_duration(self.config.window).to_string();
        for c in counts {
            if c.attempts < self.config.min_deliveries.max(1) {
                continue;
            }
            let rate = c.succeeded as f64 / c.attempts as f64;
            if rate < threshold {
                self.handle(Alert {
                    kind: AlertKind::SuccessRateLow,
                    summary: format!(
                        "endpoint `{}`: {:.0}% of {} delivery attempts succeeded in the last {window} (alert below {:.0}%)",
                        c.endpoint,
                        rate * 100.0,
                        c.attempts,
                        threshold * 100.0
                    ),
                    details: json!({
                        "endpoint": c.endpoint,
                        "success_rate": rate,
                        "attempts": c.attempts,
                        "succeeded": c.succeeded,
                        "window": window,
                        "threshold": threshold,
                    }),
                    subject: c.endpoint,
                })
                .await;
            }
        }
    }
}

/// What a target of `preset` is sent.
fn body(preset: AlertPreset, alert: &Alert, now_ms: i64) -> Value {
    match preset {
        AlertPreset::Slack => json!({ "text": format!("callgate: {}", alert.summary) }),
        AlertPreset::Webhook => json!({
            "type": format!("alert.{}", alert.kind.as_str()),
            "timestamp": rfc3339(now_ms),
            "data": {
                "kind": alert.kind.as_str(),
                "subject": alert.subject,
                "summary": alert.summary,
                "details": alert.details,
            },
        }),
    }
}

/// One attempt; `true` on a 2xx.
async fn send(
    client: &EndpointClient,
    body: &str,
    msg_id: Option<&str>,
    clock: &dyn Clock,
) -> bool {
    let endpoint = &client.endpoint;
    let out = client
        .exchange(
            Outgoing {
                method: &endpoint.method,
                url: &endpoint.url,
                headers: &[],
                body: Some(body),
                msg_id,
                now_ms: clock.now_ms(),
            },
            endpoint.timeout,
            super::client::LOG_EXCERPT,
        )
        .await;
    if !out.is_success() {
        // The name (`alert-<n>`), never the URL: a Slack URL is its secret.
        tracing::warn!(target = %endpoint.name, status = out.status, error = out.error.as_deref(), "an alert target did not take the alert");
    }
    out.is_success()
}
