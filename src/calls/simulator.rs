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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::{RngExt, SeedableRng};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CallProvider, CallbackSpec, Dialed, Lookup, ProviderError};
use crate::calls::signature::Verifier;
use crate::config::{BodyFormat, SimulatorConfig};
use crate::store::CallRecord;
use crate::store::CallStatus;

/// One line of the dial log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogEntry {
    Dial {
        call_id: String,
        provider_call_id: String,
        to: String,
        agent: String,
        at_ms: i64,
    },
    End {
        call_id: String,
        status: String,
        at_ms: i64,
    },
}

/// A call's predetermined fate.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub final_status: CallStatus,
    pub ring_ms: i64,
    pub talk_ms: i64,
    pub outcome: Option<String>,
}

impl Plan {
    /// The events and their offsets from the dial.
    fn timeline(&self) -> Vec<(i64, CallStatus)> {
        let mut t = vec![(0, CallStatus::Ringing)];
        match self.final_status {
            CallStatus::Completed => {
                t.push((self.ring_ms, CallStatus::InProgress));
                t.push((self.ring_ms + self.talk_ms, CallStatus::Completed));
            }
            CallStatus::Failed => t.push((0, CallStatus::Failed)),
            other => t.push((self.ring_ms, other)),
        }
        t
    }

    /// The status a lookup reports `elapsed_ms` after the dial.
    fn status_at(&self, elapsed_ms: i64) -> CallStatus {
        self.timeline()
            .into_iter()
            .take_while(|(at, _)| *at <= elapsed_ms)
            .last()
            .map(|(_, s)| s)
            .unwrap_or(CallStatus::Dialing)
    }
}

/// The fate of `call_id` under `cfg` (same seed, same id: same fate).
pub fn plan(cfg: &SimulatorConfig, call_id: &str) -> Plan {
    let mut seed_input = cfg.seed.to_le_bytes().to_vec();
    seed_input.extend_from_slice(call_id.as_bytes());
    let mut rng = rand::rngs::StdRng::from_seed(crate::crypto::sha256(&seed_input));
    let ring_ms = cfg.ring_time.as_millis() as i64;
    let (r_fail, r_answer, r_busy, r_talk, r_outcome): (f64, f64, f64, f64, f64) = (
        rng.random(),
        rng.random(),
        rng.random(),
        rng.random(),
        rng.random(),
    );
    if r_fail < cfg.fail_rate {
        return Plan {
            final_status: CallStatus::Failed,
            ring_ms: 0,
            talk_ms: 0,
            outcome: None,
        };
    }
    if r_answer >= cfg.answer_rate {
        let status = if r_busy < cfg.busy_rate {
            CallStatus::Busy
        } else {
            CallStatus::NoAnswer
        };
        return Plan {
            final_status: status,
            ring_ms,
            talk_ms: 0,
            outcome: None,
        };
    }
    let (min, max) = (
        cfg.min_duration.as_millis() as f64,
        cfg.max_duration.as_millis() as f64,
    );
    let total: f64 = cfg.outcomes.values().sum();
    let mut pick = r_outcome * total;
    let outcome = cfg
        .outcomes
        .iter()
        .find(|(_, w)| {
            pick -= **w;
            pick < 0.0
        })
        .or(cfg.outcomes.iter().last())
        .map(|(o, _)| o.clone());
    Plan {
        final_status: CallStatus::Completed,
        ring_ms,
        talk_ms: (min + (max - min) * r_talk) as i64,
        outcome,
    }
}

struct DialLog {
    path: PathBuf,
    file: Mutex<File>,
    dialed: Mutex<HashMap<String, (i64, String)>>,
}

impl DialLog {
    fn open(path: &Path) -> anyhow::Result<(Self, Vec<LogEntry>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut entries = Vec::new();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                // A torn last line (crash mid-write) is not a dial that was acknowledged.
                if let Ok(entry) = serde_json::from_str::<LogEntry>(&line?) {
                    entries.push(entry);
                }
            }
        }
        let dialed = entries
            .iter()
            .filter_map(|e| match e {
                LogEntry::Dial {
                    call_id,
                    provider_call_id,
                    at_ms,
                    ..
                } => Some((call_id.clone(), (*at_ms, provider_call_id.clone()))),
                LogEntry::End { .. } => None,
            })
            .collect();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok((
            Self {
                path: path.to_owned(),
                file: Mutex::new(file),
                dialed: Mutex::new(dialed),
            },
            entries,
        ))
    }

    fn append(&self, entry: &LogEntry, sync: bool) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(&line)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }
}

/// Reads a dial log (tests count dials and measure concurrency with it).
pub fn read_log(path: &Path) -> std::io::Result<Vec<LogEntry>> {
    let f = File::open(path)?;
    Ok(BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

/// Where a simulator keeps its dial log.
pub fn log_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("simulator").join(name).join("dials.jsonl")
}

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
            client: super::http_client(Duration::from_secs(10), own_cert)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> SimulatorConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_same_seed_and_call_give_the_same_fate() {
        let c = cfg("seed = 42");
        for id in ["call_a", "call_b", "call_c"] {
            assert_eq!(plan(&c, id), plan(&c, id));
        }
        let other = cfg("seed = 43");
        let differs =
            (0..50).any(|i| plan(&c, &format!("call_{i}")) != plan(&other, &format!("call_{i}")));
        assert!(differs, "another seed gives other fates");
    }

    #[test]
    fn the_mix_follows_the_configured_rates() {
        let c =
            cfg("seed = 1\nanswer_rate = 0.7\nbusy_rate = 0.5\noutcomes = { yes = 1.0, no = 3.0 }");
        let plans: Vec<Plan> = (0..2000).map(|i| plan(&c, &format!("call_{i}"))).collect();
        let answered = plans
            .iter()
            .filter(|p| p.final_status == CallStatus::Completed)
            .count();
        assert!((1300..1500).contains(&answered), "{answered}");
        let yes = plans
            .iter()
            .filter(|p| p.outcome.as_deref() == Some("yes"))
            .count();
        assert!((250..450).contains(&yes), "{yes}");
        assert!(
            plans
                .iter()
                .all(|p| p.final_status != CallStatus::Completed || p.talk_ms >= 20_000)
        );
        let never = cfg("answer_rate = 0.0\nbusy_rate = 1.0");
        assert_eq!(plan(&never, "x").final_status, CallStatus::Busy);
    }

    #[test]
    fn lookups_report_the_status_the_timeline_has_reached() {
        let p = Plan {
            final_status: CallStatus::Completed,
            ring_ms: 100,
            talk_ms: 1000,
            outcome: None,
        };
        assert_eq!(p.status_at(-1), CallStatus::Dialing);
        assert_eq!(p.status_at(0), CallStatus::Ringing);
        assert_eq!(p.status_at(500), CallStatus::InProgress);
        assert_eq!(p.status_at(5000), CallStatus::Completed);
    }
}
