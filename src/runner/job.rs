//! A claimed job as the runner works with it: its action, input and
//! progress read from the stored JSON into types, and the progress kept
//! from run to run.
//!
//! Policy: a stored action, input or progress that cannot be read is not
//! replaced by a default (that could place a call again, or skip one): the
//! job moves to `needs_attention` with the reason, and its stored progress
//! is left as it was for an operator to look at.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{CallId, JobId};
use crate::job::JobAction;
use crate::store::ClaimedJob;

/// A claimed job, read.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub id: JobId,
    pub action: JobAction,
    pub input: Value,
    pub attempts: i64,
}

/// A job's progress, stored as its `state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct JobState {
    /// The next step to run.
    #[serde(default)]
    pub step: usize,
    /// Call id by step key (the step's `id`, else its index).
    #[serde(default)]
    pub calls: BTreeMap<String, CallId>,
    #[serde(default)]
    pub last_call: Option<CallId>,
    /// When the current `wait_for_call` gives up.
    #[serde(default)]
    pub wait_deadline_ms: Option<i64>,
    /// What each step did, in order.
    #[serde(default)]
    pub steps: Vec<StepLog>,
    /// How many times an operator retried the job (`Store::retry_job`
    /// counts it up): a call-placing step of round `r` stores its call at
    /// `r * CALL_ROUND_STRIDE + step`, so a retried step dials its own call.
    #[serde(default)]
    pub round: i64,
}

/// One line of a job's step log (`GET /v1/jobs/{id}`'s `steps`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StepLog {
    pub step: usize,
    #[serde(rename = "type")]
    pub kind: String,
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<CallId>,
    /// RFC 3339, like every time in the API.
    pub at: String,
}

/// Reads a claimed job; `Err` says which stored part cannot be read.
pub(super) fn read(claimed: &ClaimedJob) -> Result<(Job, JobState), String> {
    let action: JobAction = serde_json::from_str(&claimed.action)
        .map_err(|e| format!("the job's stored action cannot be read: {e}"))?;
    let input: Value = serde_json::from_str(&claimed.input)
        .map_err(|e| format!("the job's stored input cannot be read: {e}"))?;
    let state = match claimed.state.as_deref() {
        None => JobState::default(),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| format!("the job's stored progress cannot be read: {e}"))?,
    };
    let job = Job {
        id: claimed.id.clone(),
        action,
        input,
        attempts: claimed.attempts,
    };
    Ok((job, state))
}

impl JobState {
    pub fn log(
        &mut self,
        step: usize,
        kind: &str,
        result: &str,
        call_id: Option<&CallId>,
        at_ms: i64,
    ) {
        self.steps.push(StepLog {
            step,
            kind: kind.to_owned(),
            result: result.to_owned(),
            call_id: call_id.cloned(),
            at: crate::clock::rfc3339(at_ms),
        });
    }

    /// The call slot (`calls.step`) of automation step `step` in this round.
    pub fn call_slot(&self, step: usize) -> i64 {
        self.round * crate::store::CALL_ROUND_STRIDE + step as i64
    }

    /// The call of step `key`, or the last one placed.
    pub fn call_for(&self, key: Option<&str>) -> Option<CallId> {
        match key {
            Some(k) => self.calls.get(k).cloned(),
            None => self.last_call.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(action: &str, input: &str, state: Option<&str>) -> ClaimedJob {
        ClaimedJob {
            id: JobId::new(1),
            claim_id: "claim".into(),
            action: action.into(),
            input: input.into(),
            state: state.map(str::to_owned),
            attempts: 0,
            created_at_ms: 1,
        }
    }

    #[test]
    fn state_round_trips_and_finds_calls_by_step() {
        let mut s = JobState::default();
        let (c1, c2) = (CallId::new(1), CallId::new(2));
        s.calls.insert("first".into(), c1.clone());
        s.last_call = Some(c2.clone());
        let text = serde_json::to_string(&s).unwrap();
        let action = r#"{"type":"automation","name":"a"}"#;
        let (_, back) = read(&claimed(action, "{}", Some(&text))).unwrap();
        assert_eq!(back.call_for(Some("first")), Some(c1));
        assert_eq!(back.call_for(None), Some(c2));
        let (_, fresh) = read(&claimed(action, "{}", None)).unwrap();
        assert_eq!(fresh.step, 0);
    }

    #[test]
    fn unreadable_stored_parts_are_named_never_defaulted() {
        let ok = r#"{"type":"automation","name":"a"}"#;
        let err = |c: ClaimedJob| read(&c).unwrap_err();
        assert!(err(claimed("{}", "{}", None)).contains("action"));
        assert!(err(claimed(ok, "{", None)).contains("input"));
        assert!(err(claimed(ok, "{}", Some(r#"{"step": "two"}"#))).contains("progress"));
    }
}
