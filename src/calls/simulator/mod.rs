//! The simulated phone network: a `CallProvider` for tests, demos and
//! benchmarks.
//!
//! Deterministic for a seed: each call's fate (answered or not, ring and
//! talk time, outcome) is a pure function of the seed and our call id. It
//! reports call events the way a real provider does: signed (Standard
//! Webhooks) HTTP callbacks to this gateway's own events endpoint, so tests
//! exercise that path. Every dial is appended to a dial log and fsync'd
//! before the dial is acknowledged (`<data dir>/simulator/<name>/dials.jsonl`):
//! it is the "phone network's" own record, which answers `lookup` after a
//! crash and lets tests count dials. On start, calls whose events were not
//! all delivered are resumed from the log. It stands for a world outside
//! the gateway, so it runs on real time (`clock::system_now_ms`), not on
//! the gateway's injected clock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{CallProvider, CallbackSpec, Dialed, Lookup, ProviderError};
use crate::calls::signature::Verifier;
use crate::config::{BodyFormat, SimulatorConfig};
use crate::store::CallRecord;
use crate::store::CallStatus;

mod log;
mod plan;

use log::DialLog;
pub use log::{LogEntry, log_path, read_log};
pub use plan::{Plan, plan};

pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SimulatorConfig,
    signer: standardwebhooks::Webhook,
    callbacks: CallbackSpec,
    client: reqwest::Client,
    base: String,
    log: DialLog,
}

impl Simulator {
    /// Opens the dial log, resumes unfinished calls and returns the provider.
    pub fn start(
        name: &str,
        cfg: &SimulatorConfig,
        data_dir: &Path,
        callback_base: &str,
        own_cert: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        let own_roots = match own_cert {
            Some(pem) => vec![reqwest::Certificate::from_pem(pem)?],
            None => Vec::new(),
        };
        let secret = match &cfg.callback_secret {
            Some(s) => s.expose_secret().to_owned(),
            None => {
                let mut bytes = [0u8; 24];
                crate::crypto::random_bytes(&mut bytes);
                format!(
                    "whsec_{}",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
                )
            }
        };
        let signer = standardwebhooks::Webhook::new(&secret)
            .map_err(|e| anyhow::anyhow!("simulator secret: {e}"))?;
        let verifier = Verifier::StandardWebhooks(
            standardwebhooks::Webhook::new(&secret)
                .map_err(|e| anyhow::anyhow!("simulator secret: {e}"))?,
        );
        let callbacks = CallbackSpec {
            verifier,
            format: BodyFormat::Json,
            status: vec!["/status".into()],
            status_map: CallStatus::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), *s))
                .collect(),
            status_from_outcome: Default::default(),
            provider_call_id: Some("/provider_call_id".into()),
            event_id: Some("/event_id".into()),
            duration_seconds: Some("/duration_seconds".into()),
            duration_ms: None,
            outcome: Some("/outcome".into()),
            outcome_map: Default::default(),
            transcript: Some("/transcript".into()),
            summary: Some("/summary".into()),
            recording_url: None,
            custom: [("simulated".to_owned(), "/simulated".to_owned())].into(),
        };
        let (log, entries) = DialLog::open(&log_path(data_dir, name))?;
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            signer,
            callbacks,
            client: super::http_client(Duration::from_secs(10), &own_roots)?,
            base: cfg
                .callback_base_url
                .clone()
                .unwrap_or_else(|| callback_base.to_owned()),
            log,
        });
        let ended: std::collections::HashSet<&str> = entries
            .iter()
            .filter_map(|e| match e {
                LogEntry::End { call_id, .. } => Some(call_id.as_str()),
                LogEntry::Dial { .. } => None,
            })
            .collect();
        let mut resumed = 0;
        for entry in &entries {
            if let LogEntry::Dial {
                call_id,
                provider_call_id,
                at_ms,
                ..
            } = entry
                && !ended.contains(call_id.as_str())
            {
                resumed += 1;
                tokio::spawn(inner.clone().lifecycle(
                    call_id.clone(),
                    provider_call_id.clone(),
                    *at_ms,
                ));
            }
        }
        if resumed > 0 {
            tracing::info!(
                simulator = name,
                calls = resumed,
                "resuming simulated calls from the dial log"
            );
        }
        Ok(Self { inner })
    }

    pub fn log_path(&self) -> &Path {
        &self.inner.log.path
    }
}

impl Inner {
    /// Delivers the call's events at their times (past ones at once).
    async fn lifecycle(
        self: Arc<Self>,
        call_id: String,
        provider_call_id: String,
        dialed_at_ms: i64,
    ) {
        let plan = plan(&self.cfg, &call_id);
        let mut end_at = dialed_at_ms;
        let timeline = plan.timeline();
        for (seq, (offset, status)) in timeline.iter().enumerate() {
            let due = dialed_at_ms + offset;
            let wait = due - crate::clock::system_now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            end_at = due;
            let mut body = json!({
                "event_id": format!("{call_id}-{seq}"),
                "call_id": call_id,
                "provider_call_id": provider_call_id,
                "status": status.as_str(),
                "simulated": true,
            });
            if status.is_final() {
                if *status == CallStatus::Completed {
                    body["duration_seconds"] = json!((plan.talk_ms as f64 / 1000.0).round() as i64);
                    body["outcome"] = json!(plan.outcome);
                    body["summary"] = json!(format!(
                        "Simulated call, outcome {}.",
                        plan.outcome.as_deref().unwrap_or("none")
                    ));
                    body["transcript"] =
                        json!("Agent: Hello, this is a simulated call.\nCallee: Hello.");
                } else {
                    body["duration_seconds"] = json!(0);
                }
            }
            if !self.deliver(&call_id, seq, &body).await {
                // The gateway refused the event for good (unknown call): stop.
                break;
            }
        }
        let status = plan.final_status.as_str().to_owned();
        if let Err(e) = self.log.append(
            &LogEntry::End {
                call_id,
                status,
                at_ms: end_at,
            },
            false,
        ) {
            tracing::warn!(error = %e, "simulator: cannot append to the dial log");
        }
    }

    /// Posts one signed event, retrying transient failures; `false` when the
    /// gateway answered with a definitive 4xx.
    async fn deliver(&self, call_id: &str, seq: usize, body: &Value) -> bool {
        let payload = body.to_string();
        let url = format!(
            "{}/v1/calls/{call_id}/events",
            self.base.trim_end_matches('/')
        );
        let msg_id = format!("sim_{call_id}_{seq}");
        for attempt in 0..20u32 {
            let ts = crate::clock::system_now_ms().div_euclid(1000);
            let Ok(signature) = self.signer.sign(&msg_id, ts, payload.as_bytes()) else {
                return false;
            };
            let sent = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(payload.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return true,
                Ok(r)
                    if r.status().is_client_error()
                        && !matches!(r.status().as_u16(), 408 | 429) =>
                {
                    tracing::warn!(call_id, status = %r.status(), "simulator: event refused");
                    return false;
                }
                Ok(r) => {
                    tracing::debug!(call_id, status = %r.status(), attempt, "simulator: event not accepted yet")
                }
                Err(e) => {
                    tracing::debug!(call_id, error = %e, attempt, "simulator: event delivery failed")
                }
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1).min(20))).await;
        }
        tracing::warn!(call_id, "simulator: giving up on an event");
        false
    }
}

#[async_trait]
impl CallProvider for Simulator {
    async fn create_call(&self, call: &CallRecord, _ctx: &Value) -> Result<Dialed, ProviderError> {
        let provider_call_id = format!("sim-{}", call.id);
        let at_ms = crate::clock::system_now_ms();
        {
            let mut dialed = self
                .inner
                .log
                .dialed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some((_, existing)) = dialed.get(call.id.as_str()) {
                // Idempotent on our call id, like a real provider's key.
                return Ok(Dialed {
                    provider_call_id: Some(existing.clone()),
                    status: CallStatus::Dialing,
                });
            }
            dialed.insert(call.id.to_string(), (at_ms, provider_call_id.clone()));
        }
        let entry = LogEntry::Dial {
            call_id: call.id.to_string(),
            provider_call_id: provider_call_id.clone(),
            to: call.to.clone(),
            agent: call.agent_id.clone(),
            at_ms,
        };
        let inner = self.inner.clone();
        let logged = tokio::task::spawn_blocking(move || inner.log.append(&entry, true)).await;
        if !matches!(logged, Ok(Ok(()))) {
            self.inner
                .log
                .dialed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(call.id.as_str());
            return Err(ProviderError::Rejected(
                "simulator: dial log unavailable".into(),
            ));
        }
        tokio::spawn(self.inner.clone().lifecycle(
            call.id.to_string(),
            provider_call_id.clone(),
            at_ms,
        ));
        Ok(Dialed {
            provider_call_id: Some(provider_call_id),
            status: CallStatus::Dialing,
        })
    }

    async fn lookup(&self, call: &CallRecord, _ctx: &Value) -> Result<Lookup, ProviderError> {
        let dialed = self
            .inner
            .log
            .dialed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(call.id.as_str())
            .cloned();
        Ok(match dialed {
            None => Lookup::NotFound,
            Some((at_ms, provider_call_id)) => {
                let elapsed = crate::clock::system_now_ms() - at_ms;
                Lookup::Found {
                    provider_call_id: Some(provider_call_id),
                    status: Some(plan(&self.inner.cfg, call.id.as_str()).status_at(elapsed)),
                }
            }
        })
    }

    fn callbacks(&self) -> &CallbackSpec {
        &self.inner.callbacks
    }
}
