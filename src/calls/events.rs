//! Reading a provider's status callback into a `CallEventIn`: the
//! provider's field names and status words mapped onto ours by config.
//!
//! Policy: an event whose status is not mapped is still recorded
//! (acknowledged, for idempotency and the record's details) but moves
//! nothing; a repeated delivery is recognised by the provider's event id
//! when it has one, else by the SHA-256 of the body.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::signature::{SignatureError, Signed, Verifier};
use crate::config::{BodyFormat, CallbackConfig, FormNesting};
use crate::store::CallEventIn;
use crate::store::CallStatus;

/// How to verify and read one provider's callbacks.
#[derive(Debug)]
pub struct CallbackSpec {
    pub verifier: Verifier,
    pub format: BodyFormat,
    pub status: Vec<String>,
    pub status_map: BTreeMap<String, CallStatus>,
    pub status_from_outcome: BTreeMap<String, CallStatus>,
    pub provider_call_id: Option<String>,
    pub event_id: Option<String>,
    pub duration_seconds: Option<String>,
    pub duration_ms: Option<String>,
    pub outcome: Option<String>,
    pub outcome_map: BTreeMap<String, String>,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub recording_url: Option<String>,
    pub custom: BTreeMap<String, String>,
}

/// Why a callback body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("the body could not be read: {0}")]
    Body(String),
    /// A form body that is not UTF-8, or whose keys conflict.
    #[error("{0}")]
    Form(#[from] crate::input::form::FormError),
}

impl CallbackSpec {
    pub fn from_config(cfg: &CallbackConfig) -> Result<Self, String> {
        let statuses =
            |m: &BTreeMap<String, String>| -> Result<BTreeMap<String, CallStatus>, String> {
                m.iter().map(|(k, v)| Ok((k.clone(), v.parse()?))).collect()
            };
        Ok(Self {
            verifier: Verifier::from_config(&cfg.signature)?,
            format: cfg.format,
            status: cfg.status.to_vec(),
            status_map: statuses(&cfg.status_map)?,
            status_from_outcome: statuses(&cfg.status_from_outcome)?,
            provider_call_id: cfg.provider_call_id.clone(),
            event_id: cfg.event_id.clone(),
            duration_seconds: cfg.duration_seconds.clone(),
            duration_ms: cfg.duration_ms.clone(),
            outcome: cfg.outcome.clone(),
            outcome_map: cfg.outcome_map.clone(),
            transcript: cfg.transcript.clone(),
            summary: cfg.summary.clone(),
            recording_url: cfg.recording_url.clone(),
            custom: cfg.custom.clone(),
        })
    }

    /// Verifies the signature, then reads the body.
    pub fn read(
        &self,
        call_id: &crate::ids::CallId,
        signed: &Signed<'_>,
        now_ms: i64,
    ) -> Result<CallEventIn, EventError> {
        self.verifier.verify(signed)?;
        let body: Value = match self.format {
            BodyFormat::Json => {
                serde_json::from_slice(signed.body).map_err(|e| EventError::Body(e.to_string()))?
            }
            BodyFormat::Form => crate::input::form::parse(signed.body, FormNesting::None)?,
        };
        let text = |p: &Option<String>| {
            p.as_deref()
                .and_then(|p| body.pointer(p))
                .and_then(scalar_text)
        };
        let raw_status = self
            .status
            .iter()
            .find_map(|p| body.pointer(p).and_then(scalar_text));
        let outcome = text(&self.outcome).map(|o| self.outcome_map.get(&o).cloned().unwrap_or(o));
        let status = outcome
            .as_ref()
            .and_then(|o| self.status_from_outcome.get(o).copied())
            .or_else(|| {
                raw_status
                    .as_ref()
                    .and_then(|s| self.status_map.get(s).copied())
            });
        let duration_seconds = text(&self.duration_seconds)
            .and_then(|d| d.parse::<f64>().ok())
            .or_else(|| {
                text(&self.duration_ms)
                    .and_then(|d| d.parse::<f64>().ok())
                    .map(|ms| ms / 1000.0)
            })
            .map(|s| s.round() as i64);
        let custom: Map<String, Value> = self
            .custom
            .iter()
            .filter_map(|(name, p)| body.pointer(p).map(|v| (name.clone(), v.clone())))
            .collect();
        let event_key = match text(&self.event_id) {
            Some(id) => format!("id:{id}"),
            None => format!("sha256:{}", hex::encode(crate::crypto::sha256(signed.body))),
        };
        Ok(CallEventIn {
            call_id: call_id.clone(),
            event_key,
            status,
            provider_call_id: text(&self.provider_call_id),
            duration_seconds,
            outcome,
            transcript: text(&self.transcript),
            summary: text(&self.summary),
            recording_url: text(&self.recording_url),
            custom,
            body: String::from_utf8_lossy(signed.body).into_owned(),
            now_ms,
        })
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::calls::signature::{retell_header, twilio_signature};

    fn spec(toml_text: &str) -> CallbackSpec {
        let cfg: CallbackConfig = toml::from_str(toml_text).unwrap();
        CallbackSpec::from_config(&cfg).unwrap()
    }

    use crate::fixtures::sample;

    fn call_1() -> crate::ids::CallId {
        crate::ids::CallId::new(1)
    }

    #[test]
    fn twilio_status_callbacks_map_onto_our_statuses() {
        let s = spec(
            r#"
            signature = { scheme = "twilio", auth_token = "tok" }
            format = "form"
            status = "/CallStatus"
            status_map = { completed = "completed", "no-answer" = "no_answer" }
            provider_call_id = "/CallSid"
            event_id = "/SequenceNumber"
            duration_seconds = "/CallDuration"
            outcome = "/AnsweredBy"
            "#,
        );
        let body = sample("twilio-status-callback.txt");
        let url = "https://gw.example.com/v1/calls/call_1/events";
        let mut h = HeaderMap::new();
        h.insert(
            "x-twilio-signature",
            HeaderValue::from_str(&twilio_signature("tok", url, &body)).unwrap(),
        );
        let e = s
            .read(
                &call_1(),
                &Signed {
                    headers: &h,
                    body: &body,
                    url,
                    now_ms: 0,
                },
                5,
            )
            .unwrap();
        assert_eq!(e.status, Some(CallStatus::Completed));
        assert_eq!(e.duration_seconds, Some(180));
        assert_eq!(e.outcome.as_deref(), Some("human"));
        assert_eq!(
            e.provider_call_id.as_deref(),
            Some("CA11111111111111111111111111111111")
        );
        assert_eq!(e.event_key, "id:3");
    }

    #[test]
    fn retell_call_ended_reads_milliseconds_and_unmapped_statuses_move_nothing() {
        let s = spec(
            r#"
            signature = { scheme = "retell", api_key = "key" }
            status = "/event"
            status_map = { call_ended = "completed" }
            duration_ms = "/call/duration_ms"
            outcome = "/call/disconnection_reason"
            transcript = "/call/transcript"
            recording_url = "/call/recording_url"
            "#,
        );
        let body = sample("retell-call-ended.json");
        let now = chrono::Utc::now().timestamp_millis();
        let mut h = HeaderMap::new();
        h.insert(
            "x-retell-signature",
            HeaderValue::from_str(&retell_header("key", &body, now)).unwrap(),
        );
        let e = s
            .read(
                &call_1(),
                &Signed {
                    headers: &h,
                    body: &body,
                    url: "",
                    now_ms: now,
                },
                now,
            )
            .unwrap();
        assert_eq!(e.status, Some(CallStatus::Completed));
        assert_eq!(e.duration_seconds, Some(180));
        assert!(e.event_key.starts_with("sha256:"));
        let other = br#"{"event":"call_started"}"#;
        let mut h = HeaderMap::new();
        h.insert(
            "x-retell-signature",
            HeaderValue::from_str(&retell_header("key", other, now)).unwrap(),
        );
        let e = s
            .read(
                &call_1(),
                &Signed {
                    headers: &h,
                    body: other,
                    url: "",
                    now_ms: now,
                },
                now,
            )
            .unwrap();
        assert_eq!(e.status, None);
    }

    #[test]
    fn vapi_end_of_call_reports_can_take_their_status_from_the_reason() {
        let s = spec(
            r#"
            signature = { scheme = "shared-secret", header = "x-vapi-secret", secret = "sec" }
            status = ["/message/status", "/message/type"]
            status_map = { "end-of-call-report" = "completed" }
            status_from_outcome = { "customer-did-not-answer" = "no_answer" }
            outcome = "/message/endedReason"
            summary = "/message/analysis/summary"
            custom = { success = "/message/analysis/successEvaluation" }
            "#,
        );
        let body = sample("vapi-end-of-call-report.json");
        let mut h = HeaderMap::new();
        h.insert("x-vapi-secret", HeaderValue::from_static("sec"));
        let e = s
            .read(
                &call_1(),
                &Signed {
                    headers: &h,
                    body: &body,
                    url: "",
                    now_ms: 0,
                },
                0,
            )
            .unwrap();
        assert_eq!(e.status, Some(CallStatus::Completed));
        assert_eq!(e.summary.as_deref(), Some("Qualified lead."));
        assert_eq!(e.custom["success"], "true");
        let no_answer =
            br#"{"message":{"type":"end-of-call-report","endedReason":"customer-did-not-answer"}}"#;
        let e = s
            .read(
                &call_1(),
                &Signed {
                    headers: &h,
                    body: no_answer,
                    url: "",
                    now_ms: 0,
                },
                0,
            )
            .unwrap();
        assert_eq!(e.status, Some(CallStatus::NoAnswer));
        let bad = HeaderMap::new();
        assert!(matches!(
            s.read(
                &call_1(),
                &Signed {
                    headers: &bad,
                    body: no_answer,
                    url: "",
                    now_ms: 0
                },
                0
            ),
            Err(EventError::Signature(_))
        ));
    }
}
