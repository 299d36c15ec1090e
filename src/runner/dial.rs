//! Placing one call, with every calling rule, and never twice.
//!
//! Order: do-not-call, the seed file's and the stored list's (rejected;
//! waiting when the store cannot say) → calling window in the callee's zone
//! (scheduled) → provider dial rate, shared through the store (waiting;
//! also when the store cannot decide: fail closed) → reserve a line and record
//! the call durably before asking the provider (waiting when all lines are
//! busy) → dial. A step that already has a call is reconciled instead:
//! placed calls are kept, certainly-unplaced ones are redialed with the same
//! call id, and a call that may or may not have been placed is looked up
//! with the provider or, if it cannot be asked, marked `unknown` and the job
//! `needs_attention`.

use serde_json::{Value, json};

use super::{Next, RunnerCtx};
use crate::calling::Agent;
use crate::calls::{Lookup, ProviderError};
use crate::ids::{CallId, JobId};
use crate::store::CallStatus;
use crate::store::{CallRecord, NewCall, Reservation};

/// How long a job waits when the shared dial rate or the stored
/// do-not-call list cannot be read.
const DIAL_RATE_UNAVAILABLE_WAIT_MS: i64 = 1_000;

/// One call to place.
pub(super) struct CallPlan<'a> {
    pub job_id: &'a JobId,
    /// The call's slot: the step, in the job's round (`JobState::call_slot`).
    pub step: i64,
    pub agent: &'a Agent,
    pub to: &'a str,
    pub variables: Value,
    pub timezone: Option<&'a str>,
    pub origin: Value,
}

impl RunnerCtx {
    /// Places the call (or finds the one already placed); `Err` says what
    /// the job does instead.
    pub(super) async fn place_call(&self, plan: CallPlan<'_>) -> Result<CallId, Next> {
        let now = self.clock.now_ms();
        self.check_do_not_call(plan.to, now).await?;
        let zones = crate::calling::callee_zones(plan.to, plan.timezone, plan.agent.default_zone)
            .map_err(|e| Next::Fail(format!("callee time zone: {e}")))?;
        match plan.agent.window.next_opening(now, &zones) {
            Some(t) if t <= now => {}
            Some(t) => {
                return Err(Next::Schedule {
                    at: t,
                    reason: "outside the calling window".into(),
                });
            }
            None => {
                return Err(Next::Fail(
                    "the calling window never opens for this callee".into(),
                ));
            }
        }
        self.take_dial(&plan.agent.provider, now).await?;
        let call = NewCall {
            id: CallId::new(now),
            job_id: plan.job_id.clone(),
            step: plan.step,
            agent_id: plan.agent.id.clone(),
            to: plan.to.to_owned(),
            from: plan.agent.from_number.clone(),
            provider: plan.agent.provider.clone(),
            variables: plan.variables,
            origin: plan.origin,
            now_ms: now,
        };
        let reserved = self
            .store
            .reserve_call(call, plan.agent.max_concurrent_calls)
            .await
            .map_err(|e| Next::Retry(format!("storage: {e}")))?;
        match reserved {
            Reservation::Busy { .. } => Err(Next::LineBusy {
                agent: plan.agent.id.clone(),
                lines: plan.agent.max_concurrent_calls,
            }),
            Reservation::Created(id) => self.dial(&id).await,
            Reservation::Existing(id) => self.reconcile(&id).await,
        }
    }

    /// Rejects a number on the do-not-call list: the seed file (in the
    /// catalog) or the stored list, read from the store at every dial
    /// rather than cached, so an entry added through any instance applies
    /// to the next dial everywhere (one indexed read beside the dial's
    /// writes). Fails closed: when the store cannot be read, the job waits.
    async fn check_do_not_call(&self, to: &str, now: i64) -> Result<(), Next> {
        let listed = self.config.do_not_call.contains(to)
            || match self.store.do_not_call(to).await {
                Ok(entry) => entry.is_some(),
                Err(e) => {
                    tracing::warn!(error = %e, "the do-not-call list could not be read; the job waits");
                    return Err(Next::Wait {
                        until: now + DIAL_RATE_UNAVAILABLE_WAIT_MS,
                        reason: "do-not-call list (storage unavailable)".into(),
                    });
                }
            };
        if listed {
            return Err(Next::Reject(format!("{to} is on the do-not-call list")));
        }
        Ok(())
    }

    /// Takes one dial from the provider's rate, shared by every instance
    /// through the store. Fails closed: when the store cannot decide, the
    /// job waits and is looked at again shortly; it never dials unmetered.
    async fn take_dial(&self, provider: &str, now: i64) -> Result<(), Next> {
        let Some(rate) = self.providers.dial_rate(provider) else {
            return Ok(());
        };
        match self
            .store
            .take_rate_token(&rate.key, rate.interval_ms, rate.burst, now)
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait_ms)) => Err(Next::Wait {
                until: now + wait_ms + 1,
                reason: format!("dial rate: {provider}"),
            }),
            Err(e) => {
                tracing::warn!(provider, error = %e, "the dial rate could not be checked; the job waits");
                Err(Next::Wait {
                    until: now + DIAL_RATE_UNAVAILABLE_WAIT_MS,
                    reason: format!("dial rate: {provider} (storage unavailable)"),
                })
            }
        }
    }

    async fn load_call(&self, id: &CallId) -> Result<CallRecord, Next> {
        self.store
            .call(id)
            .await
            .map_err(|e| Next::Retry(format!("storage: {e}")))?
            .ok_or_else(|| Next::Fail(format!("call {id} vanished")))
    }

    /// Asks the provider to place a call recorded as `dialing`.
    async fn dial(&self, id: &CallId) -> Result<CallId, Next> {
        let call = self.load_call(id).await?;
        let Some(provider) = self.providers.get(&call.provider) else {
            return Err(Next::Fail(format!(
                "provider `{}` is not configured",
                call.provider
            )));
        };
        let ctx = self.call_context(&call);
        match provider.create_call(&call, &ctx).await {
            Ok(d) => {
                self.store
                    .call_dialed(
                        id,
                        d.provider_call_id.as_deref(),
                        d.status,
                        self.clock.now_ms(),
                    )
                    .await
                    .map_err(|e| Next::Retry(format!("storage: {e}")))?;
                Ok(id.clone())
            }
            Err(ProviderError::Rejected(e)) => {
                self.set_status(id, CallStatus::Failed, Some(e.clone()))
                    .await?;
                Err(Next::Retry(format!("dial refused: {e}")))
            }
            Err(ProviderError::Ambiguous(e)) => match self.settle(&call, &e).await? {
                Some(id) => Ok(id),
                None => {
                    // The provider says it never placed it: a plain failed
                    // attempt, redialed on the next one.
                    self.set_status(id, CallStatus::Failed, Some(e.clone()))
                        .await?;
                    Err(Next::Retry(format!("dial failed: {e}")))
                }
            },
        }
    }

    /// The step's call exists: keep it, redial it, or settle it.
    async fn reconcile(&self, id: &CallId) -> Result<CallId, Next> {
        let call = self.load_call(id).await?;
        match call.status {
            CallStatus::Unknown => Err(Next::Attention(format!(
                "call {id} may or may not have been placed; check with the provider"
            ))),
            // A dial the provider definitely refused: safe to try again,
            // once one of the agent's lines is free.
            CallStatus::Failed if call.provider_call_id.is_none() => {
                let Some(agent) = self.config.agents.get(&call.agent_id) else {
                    return Err(Next::Fail(format!(
                        "agent `{}` is not configured (any more)",
                        call.agent_id
                    )));
                };
                let taken = self
                    .store
                    .redial_call(id, agent.max_concurrent_calls, self.clock.now_ms())
                    .await
                    .map_err(|e| Next::Retry(format!("storage: {e}")))?;
                match taken {
                    Reservation::Busy { .. } => Err(Next::LineBusy {
                        agent: agent.id.clone(),
                        lines: agent.max_concurrent_calls,
                    }),
                    _ => self.dial(id).await,
                }
            }
            // Asked, but the answer never got recorded (a crash in between).
            CallStatus::Dialing if call.provider_call_id.is_none() => {
                match self
                    .settle(&call, "the gateway stopped between dialing and the answer")
                    .await?
                {
                    Some(id) => Ok(id),
                    None => {
                        tracing::info!(call_id = %id, "provider never placed the call; dialing");
                        self.dial(id).await
                    }
                }
            }
            _ => Ok(id.clone()),
        }
    }

    /// We do not know whether the provider placed `call`: ask it. `Some` when
    /// it did (recorded), `None` when it certainly did not.
    async fn settle(&self, call: &CallRecord, why: &str) -> Result<Option<CallId>, Next> {
        let Some(provider) = self.providers.get(&call.provider) else {
            return Err(Next::Fail(format!(
                "provider `{}` is not configured",
                call.provider
            )));
        };
        let ctx = self.call_context(call);
        match provider.lookup(call, &ctx).await {
            Ok(Lookup::Found {
                provider_call_id,
                status,
            }) => {
                let status = status.unwrap_or(CallStatus::Dialing);
                self.store
                    .call_dialed(
                        &call.id,
                        provider_call_id.as_deref(),
                        status,
                        self.clock.now_ms(),
                    )
                    .await
                    .map_err(|e| Next::Retry(format!("storage: {e}")))?;
                Ok(Some(call.id.clone()))
            }
            Ok(Lookup::NotFound) => Ok(None),
            Ok(Lookup::Unsupported) | Err(_) => {
                let reason = format!(
                    "{why}; the provider cannot be asked whether call {} was placed",
                    call.id
                );
                self.set_status(&call.id, CallStatus::Unknown, Some(reason.clone()))
                    .await?;
                Err(Next::Attention(reason))
            }
        }
    }

    async fn set_status(
        &self,
        id: &CallId,
        status: CallStatus,
        error: Option<String>,
    ) -> Result<(), Next> {
        self.store
            .set_call_status(id, status, error, self.clock.now_ms())
            .await
            .map_err(|e| Next::Retry(format!("storage: {e}")))
    }

    /// What provider request templates see.
    pub(super) fn call_context(&self, call: &CallRecord) -> Value {
        let agent = self.config.agents.get(&call.agent_id);
        json!({
            "call": call_json(call),
            "agent": agent.map(|a| json!({
                "id": a.id,
                "name": a.name,
                "from_number": a.from_number,
                "provider_agent_id": a.provider_agent_id,
            })),
            "job": {"id": call.job_id},
            "callback_url": self.providers.callback_url(&call.id),
            "metadata": {"callgate_call_id": call.id, "callgate_job_id": call.job_id},
        })
    }
}

/// A call as templates and automations see it.
pub(super) fn call_json(call: &CallRecord) -> Value {
    json!({
        "id": call.id,
        "job_id": call.job_id,
        "agent_id": call.agent_id,
        "to": call.to,
        "from": call.from,
        "status": call.status,
        "outcome": call.outcome,
        "duration_seconds": call.duration_seconds,
        "custom": call.custom,
        "variables": call.variables,
        "provider": call.provider,
        "provider_call_id": call.provider_call_id,
        "summary": call.summary,
        "transcript": call.transcript,
        "recording_url": call.recording_url,
    })
}
