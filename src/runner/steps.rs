//! The automation step types, one function each: `start_call`,
//! `wait_for_call`, `branch`, `webhook`. Each moves the job's progress on,
//! or says what the job does instead (wait, retry, fail).

use serde_json::{Value, json};

use super::dial::{CallPlan, call_json};
use super::job::{Job, JobState};
use super::{Next, RunnerCtx};
use crate::automation::{Automation, Step};
use crate::config::OnTimeout;
use crate::ids::{DeliveryId, MsgId};
use crate::input::phone::{self, PhoneValidation};
use crate::job::JobAction;
use crate::template::{JsonTemplate, render_text};

/// What the automation does after a step.
pub(super) enum Flow {
    /// Run the step the progress now points at.
    Next,
    /// The automation is over (a `branch` to `end`).
    End,
    /// The job stops here for now, or for good.
    Stop(Next),
}

impl From<Next> for Flow {
    fn from(next: Next) -> Self {
        Flow::Stop(next)
    }
}

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

impl RunnerCtx {
    /// Runs the step the job's progress points at.
    pub(super) async fn run_step(
        &self,
        job: &Job,
        automation: &Automation,
        state: &mut JobState,
    ) -> Flow {
        let i = state.step;
        match &automation.steps[i] {
            Step::StartCall {
                key,
                agent,
                to,
                variables,
            } => {
                self.start_call_step(job, automation, state, key, agent, to, variables.as_ref())
                    .await
            }
            Step::WaitForCall {
                call,
                timeout,
                on_timeout,
            } => {
                self.wait_for_call_step(state, call.as_deref(), *timeout, *on_timeout)
                    .await
            }
            Step::Branch {
                call,
                cases,
                default,
            } => {
                self.branch_step(automation, state, call.as_deref(), cases, default)
                    .await
            }
            Step::Webhook {
                endpoint,
                event,
                payload,
            } => {
                self.webhook_step(
                    job,
                    automation,
                    state,
                    endpoint,
                    event.as_deref(),
                    payload.as_ref(),
                )
                .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_call_step(
        &self,
        job: &Job,
        automation: &Automation,
        state: &mut JobState,
        key: &str,
        agent: &str,
        to: &JsonTemplate,
        variables: Option<&JsonTemplate>,
    ) -> Flow {
        let i = state.step;
        let Some(agent) = self.config.agents.get(agent) else {
            return Next::Fail(format!("agent `{agent}` is not configured (any more)")).into();
        };
        let ctx = self.automation_context(job, state).await;
        let to = match render_text(to, &ctx) {
            Ok(raw) => raw,
            Err(e) => return Next::Fail(format!("step {i} `to`: {e}")).into(),
        };
        let region = self.config.main.defaults.phone_region.as_str();
        let e164 = match phone::Region::parse(region)
            .and_then(|r| phone::normalize(&to, r, PhoneValidation::Possible))
        {
            Ok(n) => n,
            Err(e) => {
                return Next::Fail(format!("step {i}: `{to}` is not a phone number: {e}")).into();
            }
        };
        let vars = match variables.map(|v| v.render(&ctx)) {
            None => json!({}),
            Some(Ok(v)) => v,
            Some(Err(e)) => return Next::Fail(format!("step {i} `variables`: {e}")).into(),
        };
        let depth = job.input.get("depth").and_then(Value::as_i64).unwrap_or(0);
        let plan = CallPlan {
            job_id: &job.id,
            step: state.call_slot(i),
            agent,
            to: &e164,
            variables: vars,
            timezone: self.timezone_hint(&job.input),
            origin: json!({"automation": automation.name, "depth": depth}),
        };
        match self.place_call(plan).await {
            Ok(call_id) => {
                state.log(
                    i,
                    "start_call",
                    "placed",
                    Some(&call_id),
                    self.clock.now_ms(),
                );
                state.calls.insert(key.to_owned(), call_id.clone());
                state.last_call = Some(call_id);
                state.step += 1;
                Flow::Next
            }
            Err(next) => next.into(),
        }
    }

    async fn wait_for_call_step(
        &self,
        state: &mut JobState,
        call: Option<&str>,
        timeout: std::time::Duration,
        on_timeout: OnTimeout,
    ) -> Flow {
        let i = state.step;
        let now = self.clock.now_ms();
        let Some(call_id) = state.call_for(call) else {
            return Next::Fail(format!("step {i}: no call to wait for")).into();
        };
        let record = match self.store.call(&call_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Next::Fail(format!("call {call_id} vanished")).into(),
            Err(e) => return Next::Retry(format!("storage: {e}")).into(),
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
            return Flow::Next;
        }
        let deadline = *state
            .wait_deadline_ms
            .get_or_insert(now + timeout.as_millis() as i64);
        if now < deadline {
            return Next::Wait {
                until: deadline,
                reason: format!("waiting for call {call_id}"),
            }
            .into();
        }
        state.wait_deadline_ms = None;
        state.log(i, "wait_for_call", "timeout", Some(&call_id), now);
        match on_timeout {
            OnTimeout::Fail => Next::Fail(format!(
                "call {call_id} did not finish within {}",
                humantime::format_duration(timeout)
            ))
            .into(),
            OnTimeout::Continue => {
                state.step += 1;
                Flow::Next
            }
        }
    }

    async fn branch_step(
        &self,
        automation: &Automation,
        state: &mut JobState,
        call: Option<&str>,
        cases: &std::collections::BTreeMap<String, String>,
        default: &str,
    ) -> Flow {
        let i = state.step;
        let call_id = state.call_for(call);
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
        let target = cases.get(&decided).map(String::as_str).unwrap_or(default);
        state.log(
            i,
            "branch",
            &format!("{decided} -> {target}"),
            call_id.as_ref(),
            self.clock.now_ms(),
        );
        match automation.target(target) {
            Ok(Some(next)) => {
                state.step = next;
                Flow::Next
            }
            Ok(None) => Flow::End,
            Err(_) => Next::Fail(format!(
                "branch at step {i}: outcome `{decided}` leads to `fail`"
            ))
            .into(),
        }
    }

    async fn webhook_step(
        &self,
        job: &Job,
        automation: &Automation,
        state: &mut JobState,
        endpoint: &str,
        event: Option<&str>,
        payload: Option<&JsonTemplate>,
    ) -> Flow {
        let ctx = self.automation_context(job, state).await;
        match self
            .queue_delivery(job, automation, state.step, endpoint, event, payload, &ctx)
            .await
        {
            Ok(id) => {
                state.log(
                    state.step,
                    "webhook",
                    &format!("queued {id}"),
                    None,
                    self.clock.now_ms(),
                );
                state.step += 1;
                Flow::Next
            }
            Err(next) => next.into(),
        }
    }

    /// Creates the step's delivery (once: a step that runs again after a
    /// crash finds the one it made) and wakes the delivery engine.
    #[allow(clippy::too_many_arguments)]
    async fn queue_delivery(
        &self,
        job: &Job,
        automation: &Automation,
        step: usize,
        endpoint: &str,
        event: Option<&str>,
        payload: Option<&JsonTemplate>,
        ctx: &Value,
    ) -> Result<DeliveryId, Next> {
        let Some(ep) = self.config.endpoints.get(endpoint) else {
            return Err(Next::Fail(format!(
                "step {step}: endpoint `{endpoint}` is not configured (any more)"
            )));
        };
        let body = match payload {
            Some(p) => p.render(ctx),
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
            .and_then(crate::ids::CallId::parse);
        let delivery = crate::store::NewDelivery {
            id: DeliveryId::new(now),
            msg_id: MsgId::new(now),
            endpoint: endpoint.to_owned(),
            event: event
                .map(str::to_owned)
                .unwrap_or_else(|| format!("automation.{}", automation.name)),
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
    /// `event`, `job`, `agent`.
    async fn automation_context(&self, job: &Job, state: &JobState) -> Value {
        let mut calls = serde_json::Map::new();
        for (key, id) in &state.calls {
            if let Ok(Some(c)) = self.store.call(id).await {
                calls.insert(key.clone(), call_json(&c));
            }
        }
        let last = state
            .last_call
            .as_ref()
            .and_then(|id| calls.values().find(|c| c["id"] == id.as_str()).cloned());
        let event_call = job.input.get("call").cloned();
        let call = last.or(event_call.clone()).unwrap_or(Value::Null);
        let agent = call
            .get("agent_id")
            .and_then(Value::as_str)
            .and_then(|id| self.config.agents.get(id))
            .map(|a| json!({"id": a.id, "name": a.name, "from_number": a.from_number}))
            .or_else(|| job.input.get("agent").cloned())
            .unwrap_or(Value::Null);
        let event_name = match &job.action {
            JobAction::Automation { event, .. } => event.clone(),
            JobAction::StartCall { .. } => None,
        };
        json!({
            "input": job.input,
            "agent": agent,
            "call": call,
            "event": {"call": event_call, "name": event_name},
            "calls": calls,
            "job": {"id": job.id},
        })
    }
}
