//! The jobs a call's final status starts: automations subscribed to the
//! event (`on = "call.<status>"`) whose filters match.
//!
//! Policy: an automation never starts from its own calls (no self-loops),
//! and chains of event-started automations stop at `MAX_EVENT_DEPTH`. One
//! job per call and automation (its dedupe key), however often the event
//! is applied.

use serde_json::{Value, json};

use super::dial::call_json;
use super::execute::MAX_EVENT_DEPTH;
use crate::catalog::Catalog;
use crate::ids::JobId;
use crate::job::JobAction;
use crate::store::{CallRecord, JobStatus, NewJob};

/// The principal of jobs started by call events.
pub const EVENTS_PRINCIPAL: &str = "system:events";

/// The jobs `call`'s final status starts (called inside the transaction
/// that applies the event).
pub fn event_jobs(config: &Catalog, call: &CallRecord, now_ms: i64) -> Vec<NewJob> {
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
        let matches = a.starts_on(&event, &call.agent_id, call.outcome.as_deref());
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
        let action = JobAction::Automation {
            name: a.name.clone(),
            to: None,
            event: Some(event.clone()),
            call_id: Some(call.id.clone()),
        };
        jobs.push(NewJob {
            id: JobId::new(now_ms),
            trigger_id: None,
            principal: std::sync::Arc::from(EVENTS_PRINCIPAL),
            action_json: action.to_json(),
            input_json: input.to_string(),
            request_id: None,
            created_at_ms: now_ms,
            run_at_ms: now_ms,
            status: JobStatus::Queued,
            idempotency: None,
            dedupe_key: Some(format!("event:{}:{}", call.id, a.name)),
            dedupe: None,
        });
    }
    jobs
}
