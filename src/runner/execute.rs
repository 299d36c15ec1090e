//! Executing one claimed job: a single `start_call`, or an automation's
//! steps (`start_call`, `wait_for_call`, `branch`, `webhook`) from where it
//! left off.
//!
//! Progress is kept in the job's `state` (current step, calls by step) and
//! written with every status change, so a job claimed again after a crash
//! resumes at its step; a step that places a call finds that call instead
//! of placing another (one call per job step, enforced by the store).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::dial::{CallPlan, call_json};
use super::{Next, RunnerCtx};
use crate::config::{Automation, OnTimeout, StepConfig};
use crate::input::phone::{self, PhoneValidation};
use crate::store::ClaimedJob;
use crate::template::{JsonTemplate, compile_text, render_text};

/// A `webhook` step's body when it sets no `payload`: the event, the job,
/// the call and the input.
fn default_payload(ctx: &Value) -> Value {
    json!({
        "event": ctx.pointer("/event/name"),
        "job_id": ctx.pointer("/job/id"),
        "call": ctx.get("call"),
        "agent": ctx.get("agent"),
        "input": ctx.get("input"),
    })
}

/// Chains of event-started automations deeper than this are not started.
pub const MAX_EVENT_DEPTH: i64 = 5;

/// A job's progress, stored as its `state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct JobState {
    /// The next step to run.
    #[serde(default)]
    pub step: usize,
    /// Call id by step key (the step's `id`, else its index).
    #[serde(default)]
    pub calls: BTreeMap<String, String>,
    #[serde(default)]
    pub last_call: Option<String>,
    /// When the current `wait_for_call` gives up.
    #[serde(default)]
    pub wait_deadline_ms: Option<i64>,
    /// What each step did, in order.
    #[serde(default)]
    pub steps: Vec<StepLog>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StepLog {
    pub step: usize,
    #[serde(rename = "type")]
    pub kind: String,
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// RFC 3339, like every time in the API.
    pub at: String,
}

impl RunnerCtx {
    /// Runs a claimed job as far as it can go now.
    pub(super) async fn run_job(&self, job: &ClaimedJob, state: &mut JobState) -> Next {
        match job.action.get("type").and_then(Value::as_str) {
            Some("start_call") => self.run_start_call(job, state).await,
            Some("automation") => {
                let name = job
                    .action
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match self.config.automations.get(name) {
                    Some(a) => self.run_automation(job, a.clone(), state).await,
                    None => Next::Fail(format!("automation `{name}` is not configured (any more)")),
                }
            }
            other => Next::Fail(format!("unknown action {other:?}")),
        }
    }

    async fn run_start_call(&self, job: &ClaimedJob, state: &mut JobState) -> Next {
        let agent_id = job
            .action
            .get("agent")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(agent) = self.config.agents.get(agent_id) else {
            return Next::Fail(format!("agent `{agent_id}` is not configured (any more)"));
        };
        let Some(to) = job.action.get("to").and_then(Value::as_str) else {
            return Next::Fail("the job has no number to call".into());
        };
        let variables = job
            .input
            .get("variables")
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or(json!({}));
        let plan = CallPlan {
            job_id: &job.id,
            step: 0,
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

    fn timezone_hint<'a>(&self, input: &'a Value) -> Option<&'a str> {
        input
            .pointer(&self.config.main.calling.timezone_field)
            .and_then(Value::as_str)
    }

    async fn run_automation(
        &self,
        job: &ClaimedJob,
        automation: std::sync::Arc<Automation>,
        state: &mut JobState,
    ) -> Next {
        let steps = &automation.config.steps;
        let depth = job.input.get("depth").and_then(Value::as_i64).unwrap_or(0);
        if state.last_call.is_none() {
            // An event-started automation's steps default to the event's call.
            state.last_call = job
                .input
                .pointer("/call/id")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        while state.step < steps.len() {
            let i = state.step;
            let key = steps[i]
                .id()
                .map(str::to_owned)
                .unwrap_or_else(|| i.to_string());
            let now = self.clock.now_ms();
            match &steps[i] {
                StepConfig::StartCall {
                    agent,
                    to,
                    variables,
                    ..
                } => {
                    let Some(agent) = self.config.agents.get(agent) else {
                        return Next::Fail(format!("agent `{agent}` is not configured (any more)"));
                    };
                    let ctx = self.automation_context(job, state).await;
                    let to = match compile_text(to).and_then(|t| render_text(&t, &ctx)) {
                        Ok(raw) => raw,
                        Err(e) => return Next::Fail(format!("step {i} `to`: {e}")),
                    };
                    let region = self.config.main.defaults.phone_region.as_str();
                    let e164 = match phone::Region::parse(region)
                        .and_then(|r| phone::normalize(&to, r, PhoneValidation::Possible))
                    {
                        Ok(n) => n,
                        Err(e) => {
                            return Next::Fail(format!(
                                "step {i}: `{to}` is not a phone number: {e}"
                            ));
                        }
                    };
                    let vars = match variables
                        .as_ref()
                        .map(|v| JsonTemplate::from_toml(v).and_then(|t| t.render(&ctx)))
                    {
                        None => json!({}),
                        Some(Ok(v)) => v,
                        Some(Err(e)) => return Next::Fail(format!("step {i} `variables`: {e}")),
                    };
                    let plan = CallPlan {
                        job_id: &job.id,
                        step: i as i64,
                        agent,
                        to: &e164,
                        variables: vars,
                        timezone: self.timezone_hint(&job.input),
                        origin: json!({"automation": automation.name, "depth": depth}),
                    };
                    match self.place_call(plan).await {
                        Ok(call_id) => {
                            state.log(i, "start_call", "placed", Some(&call_id), now);
                            state.calls.insert(key, call_id.clone());
                            state.last_call = Some(call_id);
                            state.step += 1;
                        }
                        Err(next) => return next,
                    }
                }
                StepConfig::WaitForCall {
                    call,
                    timeout,
                    on_timeout,
                    ..
                } => {
                    let Some(call_id) = state.call_for(call.as_deref()) else {
                        return Next::Fail(format!("step {i}: no call to wait for"));
                    };
                    let record = match self.store.call(&call_id).await {
                        Ok(Some(c)) => c,
                        Ok(None) => return Next::Fail(format!("call {call_id} vanished")),
                        Err(e) => return Next::Retry(format!("storage: {e}")),
                    };
                    if record.status.is_final() {
                        state.log(
                            i,
                            "wait_for_call",
                            record.status.as_str(),
                            Some(&call_id),
                            now,
                        );
                        state.wait_deadline_ms = None;
                        state.step += 1;
                        continue;
                    }
                    let deadline = *state
                        .wait_deadline_ms
                        .get_or_insert(now + timeout.as_millis() as i64);
                    if now < deadline {
                        return Next::Wait {
                            until: deadline,
                            reason: format!("waiting for call {call_id}"),
                        };
                    }
                    state.wait_deadline_ms = None;
                    state.log(i, "wait_for_call", "timeout", Some(&call_id), now);
                    match on_timeout {
                        OnTimeout::Fail => {
                            return Next::Fail(format!(
                                "call {call_id} did not finish within {}",
                                humantime::format_duration(*timeout)
                            ));
                        }
                        OnTimeout::Continue => state.step += 1,
                    }
                }
                StepConfig::Branch {
                    call,
                    cases,
                    default,
                    ..
                } => {
                    let call_id = state.call_for(call.as_deref());
                    let record = match &call_id {
                        Some(id) => self.store.call(id).await.ok().flatten(),
                        None => None,
                    };
                    let timed_out = state.steps.last().is_some_and(|s| s.result == "timeout");
                    let decided = match &record {
                        _ if timed_out => "timeout".to_owned(),
                        Some(c) => c
                            .outcome
                            .clone()
                            .unwrap_or_else(|| c.status.as_str().to_owned()),
                        None => "none".to_owned(),
                    };
                    let target = cases.get(&decided).unwrap_or(default);
                    state.log(
                        i,
                        "branch",
                        &format!("{decided} -> {target}"),
                        call_id.as_deref(),
                        now,
                    );
                    match automation.target(target) {
                        Ok(Some(next)) => state.step = next,
                        Ok(None) => break,
                        Err(_) => {
                            return Next::Fail(format!(
                                "branch at step {i}: outcome `{decided}` leads to `fail`"
                            ));
                        }
                    }
                }
                StepConfig::Webhook {
                    endpoint,
                    event,
                    payload,
                    ..
                } => {
                    let ctx = self.automation_context(job, state).await;
                    match self
                        .queue_delivery(
                            job,
                            &automation.name,
                            i,
                            endpoint,
                            event.as_deref(),
                            payload.as_ref(),
                            &ctx,
                        )
                        .await
                    {
                        Ok(id) => {
                            state.log(i, "webhook", &format!("queued {id}"), None, now);
                            state.step += 1;
                        }
                        Err(next) => return next,
                    }
                }
            }
        }
        state.step = steps.len();
        let calls: Vec<&String> = state.calls.values().collect();
        let last = match &state.last_call {
            Some(id) => self.store.call(id).await.ok().flatten(),
            None => None,
        };
        Next::Done(json!({
            "call_ids": calls,
            "last_call": last.as_ref().map(call_json),
        }))
    }

    /// Creates the step's delivery (once: a step that runs again after a
    /// crash finds the one it made) and wakes the delivery engine.
    #[allow(clippy::too_many_arguments)]
    async fn queue_delivery(
        &self,
        job: &ClaimedJob,
        automation: &str,
        step: usize,
        endpoint: &str,
        event: Option<&str>,
        payload: Option<&toml::Value>,
        ctx: &Value,
    ) -> Result<String, Next> {
        let Some(ep) = self.config.endpoints.get(endpoint) else {
            return Err(Next::Fail(format!(
                "step {step}: endpoint `{endpoint}` is not configured (any more)"
            )));
        };
        let body = match payload {
            Some(p) => JsonTemplate::from_toml(p).and_then(|t| t.render(ctx)),
            None => Ok(default_payload(ctx)),
        };
        let body = match body {
            Ok(b) => b.to_string(),
            Err(e) => return Err(Next::Fail(format!("step {step} `payload`: {e}"))),
        };
        let mut headers = serde_json::Map::new();
        for (name, t) in &ep.headers {
            match render_text(t, ctx) {
                Ok(v) => {
                    headers.insert(name.clone(), Value::String(v));
                }
                Err(e) => return Err(Next::Fail(format!("step {step}: header `{name}`: {e}"))),
            }
        }
        let now = self.clock.now_ms();
        let call_id = ctx
            .pointer("/call/id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let delivery = crate::store::NewDelivery {
            id: crate::ids::DeliveryId::new(now).into_string(),
            msg_id: crate::ids::MsgId::new(now).into_string(),
            endpoint: endpoint.to_owned(),
            event: event
                .map(str::to_owned)
                .unwrap_or_else(|| format!("automation.{automation}")),
            job_id: Some(job.id.clone()),
            call_id,
            headers_json: Value::Object(headers).to_string(),
            body,
            dedupe_key: Some(format!("{}:{step}", job.id)),
            created_at_ms: now,
        };
        match self.store.create_delivery(delivery).await {
            Ok(id) => {
                self.deliveries_wake.notify_one();
                Ok(id)
            }
            Err(e) => Err(Next::Retry(format!("storage: {e}"))),
        }
    }

    /// `input`, `call` (the last call placed, else the event's), `calls`,
    /// `event`, `job`.
    async fn automation_context(&self, job: &ClaimedJob, state: &JobState) -> Value {
        let mut calls = serde_json::Map::new();
        for (key, id) in &state.calls {
            if let Ok(Some(c)) = self.store.call(id).await {
                calls.insert(key.clone(), call_json(&c));
            }
        }
        let last = state
            .last_call
            .as_ref()
            .and_then(|id| calls.values().find(|c| c["id"] == *id).cloned());
        let event_call = job.input.get("call").cloned();
        let call = last.or(event_call.clone()).unwrap_or(Value::Null);
        let agent = call
            .get("agent_id")
            .and_then(Value::as_str)
            .and_then(|id| self.config.agents.get(id))
            .map(|a| json!({"id": a.id, "name": a.name, "from_number": a.from_number}))
            .or_else(|| job.input.get("agent").cloned())
            .unwrap_or(Value::Null);
        json!({
            "input": job.input,
            "agent": agent,
            "call": call,
            "event": {"call": event_call, "name": job.action.get("event")},
            "calls": calls,
            "job": {"id": job.id},
        })
    }
}

impl JobState {
    pub(super) fn from_value(v: &Value) -> Self {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    fn log(&mut self, step: usize, kind: &str, result: &str, call_id: Option<&str>, at_ms: i64) {
        self.steps.push(StepLog {
            step,
            kind: kind.to_owned(),
            result: result.to_owned(),
            call_id: call_id.map(str::to_owned),
            at: crate::clock::rfc3339(at_ms),
        });
    }

    /// The call of step `key`, or the last one placed.
    fn call_for(&self, key: Option<&str>) -> Option<String> {
        match key {
            Some(k) => self.calls.get(k).cloned(),
            None => self.last_call.clone(),
        }
    }
}

/// The jobs a call's final status starts: automations subscribed to the
/// event whose filters match, not the automation that placed the call
/// (no self-loops), and not past `MAX_EVENT_DEPTH` in a chain.
pub fn event_jobs(
    config: &crate::config::Config,
    call: &crate::store::CallRecord,
    now_ms: i64,
) -> Vec<crate::store::NewJob> {
    let event = call.status.event_name();
    let placed_by = call.origin.get("automation").and_then(Value::as_str);
    let depth = call
        .origin
        .get("depth")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let agent = config.agents.get(&call.agent_id);
    let mut jobs = Vec::new();
    for a in config.automations.values() {
        let c = &a.config;
        let matches = c.on.as_deref() == Some(event.as_str())
            && (c.filter.agents.is_empty() || c.filter.agents.contains(&call.agent_id))
            && (c.filter.outcomes.is_empty()
                || call
                    .outcome
                    .as_ref()
                    .is_some_and(|o| c.filter.outcomes.contains(o)));
        if !matches || placed_by == Some(a.name.as_str()) {
            continue;
        }
        if depth + 1 > MAX_EVENT_DEPTH {
            tracing::warn!(automation = %a.name, call_id = %call.id, "not started: event chain too deep");
            continue;
        }
        let input = json!({
            "call": call_json(call),
            "agent": agent.map(|a| json!({"id": a.id, "name": a.name, "from_number": a.from_number})),
            "depth": depth + 1,
        });
        jobs.push(crate::store::NewJob {
            id: crate::ids::JobId::new(now_ms),
            trigger_id: None,
            principal: std::sync::Arc::from("system:events"),
            action_json:
                json!({"type": "automation", "name": a.name, "event": event, "call_id": call.id})
                    .to_string(),
            input_json: input.to_string(),
            request_id: None,
            created_at_ms: now_ms,
            run_at_ms: now_ms,
            status: crate::store::JobStatus::Queued,
            idempotency: None,
            dedupe_key: Some(format!("event:{}:{}", call.id, a.name)),
        });
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_finds_calls_by_step() {
        let mut s = JobState::default();
        s.calls.insert("first".into(), "call_1".into());
        s.last_call = Some("call_2".into());
        let v = serde_json::to_value(&s).unwrap();
        let back = JobState::from_value(&v);
        assert_eq!(back.call_for(Some("first")).as_deref(), Some("call_1"));
        assert_eq!(back.call_for(None).as_deref(), Some("call_2"));
        assert_eq!(JobState::from_value(&Value::Null).step, 0);
    }
}
