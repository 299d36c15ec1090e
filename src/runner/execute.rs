//! Executing one claimed job: a single `start_call`, or an automation's
//! steps from where it left off (each step type in `steps.rs`).
//!
//! Progress is kept in the job's `state` (current step, calls by step) and
//! written with every status change, so a job claimed again after a crash
//! resumes at its step; a step that places a call finds that call instead
//! of placing another (one call per job step, enforced by the store).

use std::sync::Arc;

use serde_json::{Value, json};

use super::dial::{CallPlan, call_json};
use super::job::{Job, JobState};
use super::steps::Flow;
use super::{Next, RunnerCtx};
use crate::automation::Automation;
use crate::job::JobAction;

/// Chains of event-started automations deeper than this are not started.
pub const MAX_EVENT_DEPTH: i64 = 5;

impl RunnerCtx {
    /// Runs a claimed job as far as it can go now.
    pub(super) async fn run_job(&self, job: &Job, state: &mut JobState) -> Next {
        match &job.action {
            JobAction::StartCall { agent, to } => self.run_start_call(job, agent, to, state).await,
            JobAction::Automation { name, .. } => match self.config.automations.get(name) {
                Some(a) => self.run_automation(job, a.clone(), state).await,
                None => Next::Fail(format!("automation `{name}` is not configured (any more)")),
            },
        }
    }

    async fn run_start_call(
        &self,
        job: &Job,
        agent_id: &str,
        to: &str,
        state: &mut JobState,
    ) -> Next {
        let Some(agent) = self.config.agents.get(agent_id) else {
            return Next::Fail(format!("agent `{agent_id}` is not configured (any more)"));
        };
        let variables = job
            .input
            .get("variables")
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or(json!({}));
        let plan = CallPlan {
            job_id: &job.id,
            step: state.call_slot(0),
            agent,
            to,
            variables,
            timezone: self.timezone_hint(&job.input),
            origin: json!({"trigger": true, "depth": 0}),
        };
        match self.place_call(plan).await {
            Ok(call_id) => {
                state.log(
                    0,
                    "start_call",
                    "placed",
                    Some(&call_id),
                    self.clock.now_ms(),
                );
                state.calls.insert("0".into(), call_id.clone());
                state.last_call = Some(call_id.clone());
                state.step = 1;
                Next::Done(json!({"call_ids": [call_id]}))
            }
            Err(next) => next,
        }
    }

    /// The callee's IANA zone, when the input names one.
    pub(super) fn timezone_hint<'a>(&self, input: &'a Value) -> Option<&'a str> {
        input
            .pointer(&self.config.main.calling.timezone_field)
            .and_then(Value::as_str)
    }

    async fn run_automation(
        &self,
        job: &Job,
        automation: Arc<Automation>,
        state: &mut JobState,
    ) -> Next {
        let steps = &automation.steps;
        if state.last_call.is_none() {
            // An event-started automation's steps default to the event's call.
            state.last_call = event_call_id(job);
        }
        while state.step < steps.len() {
            match self.run_step(job, &automation, state).await {
                Flow::Next => {}
                Flow::End => break,
                Flow::Stop(next) => return next,
            }
        }
        state.step = steps.len();
        let calls: Vec<_> = state.calls.values().collect();
        let last = match &state.last_call {
            Some(id) => self.store.call(id).await.ok().flatten(),
            None => None,
        };
        Next::Done(json!({
            "call_ids": calls,
            "last_call": last.as_ref().map(call_json),
        }))
    }
}

/// The call an event-started job was started by.
fn event_call_id(job: &Job) -> Option<crate::ids::CallId> {
    match &job.action {
        JobAction::Automation { call_id, .. } => call_id.clone(),
        JobAction::StartCall { .. } => None,
    }
}
