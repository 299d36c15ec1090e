//! Records for the conformance cases, complete in every field, so that a
//! case can check each one reads back exactly as written.

use std::sync::Arc;

use callgate::ids::{CallId, DeliveryId, JobId, MsgId, TriggerId};
use callgate::store::{
    CallEventIn, CallStatus, DeliveryAttempt, EventJobs, JobStatus, JobUpdate, LineWait, NewCall,
    NewDelivery, NewIdempotency, NewJob,
};
use serde_json::{Value, json};

/// The suite's epoch (Unix ms): every time in a case is relative to it.
pub const T0: i64 = 1_800_000_000_000;
/// A lease or backstop far enough away never to expire within a case.
pub const LATER: i64 = T0 + 3_600_000;
pub const PRINCIPAL: &str = "key:zapier";
pub const TRIGGER: &str = "demo-call";
pub const AGENT: &str = "agent-a";

pub fn trigger(id: &str) -> TriggerId {
    TriggerId::parse(id).unwrap()
}

pub fn action() -> Value {
    json!({"type": "start_call", "agent": AGENT, "note": "ünïcode ✓"})
}

pub fn input(n: i64) -> Value {
    json!({"phone_number": format!("+1555012{n:04}"), "customer": {"name": "Ada"}})
}

/// A queued trigger job created (and due) at `at`.
pub fn job(at: i64) -> NewJob {
    NewJob {
        id: JobId::new(at),
        trigger_id: Some(trigger(TRIGGER)),
        principal: Arc::from(PRINCIPAL),
        action_json: action().to_string(),
        input_json: input(at % 10_000).to_string(),
        request_id: Some(format!("req-{at}")),
        created_at_ms: at,
        run_at_ms: at,
        status: JobStatus::Queued,
        idempotency: None,
        dedupe_key: None,
        dedupe: None,
    }
}

/// A job held back until `run_at`.
pub fn scheduled(at: i64, run_at: i64) -> NewJob {
    NewJob {
        status: JobStatus::Scheduled,
        run_at_ms: run_at,
        ..job(at)
    }
}

/// A job with an Idempotency-Key record expiring at `expires_at`.
pub fn keyed(at: i64, key: &str, hash: &str, expires_at: i64) -> NewJob {
    let mut j = job(at);
    j.idempotency = Some(NewIdempotency {
        key: key.into(),
        request_hash: hash.into(),
        response_status: 202,
        response_body: json!({"job_id": j.id, "status": "queued"}).to_string(),
        expires_at_ms: expires_at,
    });
    j
}

/// A job started by a call event (no trigger), deduplicated by `key`.
pub fn event_job(at: i64, key: &str) -> NewJob {
    NewJob {
        trigger_id: None,
        principal: Arc::from("automation:after-call"),
        request_id: None,
        dedupe_key: Some(key.into()),
        ..job(at)
    }
}

/// How a worker leaves a job: `status`, due again at `run_at`.
pub fn update(status: JobStatus, run_at: i64) -> JobUpdate {
    JobUpdate {
        status,
        reason: None,
        run_at_ms: run_at,
        state: None,
        result: None,
        error: None,
        attempts: 0,
        detail: None,
        line_wait: None,
    }
}

/// Waiting for one of `AGENT`'s `lines`, with a backstop at `LATER`.
pub fn line_wait(lines: u32) -> JobUpdate {
    JobUpdate {
        reason: Some(format!("lines busy: {AGENT}")),
        line_wait: Some(LineWait {
            agent_id: AGENT.into(),
            lines,
        }),
        ..update(JobStatus::Waiting, LATER)
    }
}

/// A call for `job`'s `step` on `agent`, reserved at `at`.
pub fn call(job: &JobId, step: i64, agent: &str, at: i64) -> NewCall {
    NewCall {
        id: CallId::new(at),
        job_id: job.clone(),
        step,
        agent_id: agent.into(),
        to: "+15550121234".into(),
        from: "+15550009999".into(),
        provider: "simulator".into(),
        variables: json!({"plan": "enterprise", "n": 1}),
        origin: json!({"automation": "after-call", "depth": 1}),
        now_ms: at,
    }
}

/// A provider event for `call` that reports `status`.
pub fn event(call: &CallId, key: &str, status: Option<CallStatus>, at: i64) -> CallEventIn {
    let mut e = CallEventIn::new(
        call.clone(),
        key.into(),
        format!("{{\"key\":\"{key}\"}}"),
        at,
    );
    e.status = status;
    e
}

/// An `on_final` that starts nothing.
pub fn no_jobs() -> EventJobs {
    Box::new(|_| Vec::new())
}

/// A delivery to `endpoint` created (and due) at `at`.
pub fn delivery(endpoint: &str, at: i64) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::new(at),
        msg_id: MsgId::new(at),
        endpoint: endpoint.into(),
        event: "lead.created".into(),
        job_id: Some(JobId::new(at)),
        call_id: Some(CallId::new(at)),
        headers_json: json!({"x-source": "callgate", "x-job": "job_1"}).to_string(),
        body: format!("{{\"n\":{at}}}"),
        dedupe_key: None,
        created_at_ms: at,
    }
}

/// Attempt number `n`, started at `at`, answered `status`.
pub fn attempt(n: i64, at: i64, status: Option<i64>, next: Option<i64>) -> DeliveryAttempt {
    DeliveryAttempt {
        attempt: n,
        started_at_ms: at,
        request_headers: json!({"authorization": "[redacted]", "webhook-id": "msg_x"}),
        request_body: "{\"n\":1}".into(),
        response_status: status,
        response_body: status.map(|s| format!("status {s}")),
        latency_ms: 12,
        error: status.is_none().then(|| "connection refused".to_owned()),
        next_attempt_at_ms: next,
    }
}
