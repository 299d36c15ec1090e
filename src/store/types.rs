//! Records that go into and come out of the store.

use std::sync::Arc;

use serde::Serialize;

use super::status::{CallStatus, DeliveryStatus, JobStatus};
use crate::ids::{CallId, DeliveryId, JobId, MsgId, TriggerId};

/// A job to insert, already serialised by the request handler (so the
/// writer only binds values).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    /// The trigger that created it (`None` for jobs started by call events).
    pub trigger_id: Option<TriggerId>,
    pub principal: Arc<str>,
    /// JSON: what the job will run.
    pub action_json: String,
    /// JSON: the normalised input (or the event's context).
    pub input_json: String,
    pub request_id: Option<String>,
    pub created_at_ms: i64,
    /// When it may first run (`schedule_at` / `not_before`; else created_at).
    pub run_at_ms: i64,
    /// `queued`, or `scheduled` when `run_at_ms` is in the future.
    pub status: JobStatus,
    pub idempotency: Option<NewIdempotency>,
    /// Makes an insert a no-op when a job with this key exists (one job per
    /// call event and automation).
    pub dedupe_key: Option<String>,
    /// A trigger's campaign dedupe key, claimed with the job (before its
    /// Idempotency-Key) for a window; a live claim means no job.
    pub dedupe: Option<DedupeClaim>,
}

/// Principal under which campaign dedupe keys are kept in the
/// idempotency table (no credential's principal has this form).
pub const DEDUPE_PRINCIPAL: &str = "~dedupe";

/// A campaign dedupe key: an idempotency record of the trigger (principal
/// `DEDUPE_PRINCIPAL`) whose answer is the job's 202 body, live until
/// `expires_at_ms` (then purged with the Idempotency-Keys).
#[derive(Debug, Clone)]
pub struct DedupeClaim {
    pub key: String,
    pub response_body: String,
    pub expires_at_ms: i64,
}

/// The Idempotency-Key record stored with a job, in the same transaction.
#[derive(Debug, Clone)]
pub struct NewIdempotency {
    pub key: String,
    pub request_hash: String,
    pub response_status: u16,
    pub response_body: String,
    pub expires_at_ms: i64,
}

/// What happened to one enqueued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Committed.
    Inserted,
    /// Another request committed the same live Idempotency-Key first; no job
    /// was inserted. Look the key up and replay.
    IdempotencyConflict,
    /// The trigger's campaign dedupe key is held by a live job; no job was
    /// inserted. Look it up (`DEDUPE_PRINCIPAL`) for the existing job.
    Duplicate,
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: JobId,
    pub trigger_id: Option<TriggerId>,
    pub principal: String,
    pub status: JobStatus,
    pub status_reason: Option<String>,
    pub action: serde_json::Value,
    pub input: serde_json::Value,
    /// The runner's progress (step, call ids by step, step results).
    pub state: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub attempts: i64,
    pub request_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub run_at_ms: i64,
}

/// A job a worker has claimed (holds the lease until it finishes it).
/// Its action, input and progress are the JSON text as stored: the runner
/// reads them into its own types, and one that cannot be read becomes the
/// job's problem (`needs_attention`), not a failed claim.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: JobId,
    /// This claim's id: `renew_lease` and `finish_claim` are fenced on it.
    pub claim_id: String,
    pub action: String,
    pub input: String,
    pub state: Option<String>,
    pub attempts: i64,
    pub created_at_ms: i64,
}

/// How a worker leaves a job it claimed.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub status: JobStatus,
    /// Why (shown in the API and the job's event log).
    pub reason: Option<String>,
    /// When it may run again (waiting, scheduled, retry).
    pub run_at_ms: i64,
    /// The runner's progress; `None` leaves the stored one as it is.
    pub state: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub attempts: i64,
    /// Extra detail for the event log (the failed attempt's error…).
    pub detail: Option<serde_json::Value>,
    /// With `Waiting`: the agent whose free line the job waits for. The
    /// store wakes such jobs one per freed line, oldest first, and a job
    /// that was woken but finds the lines taken again goes back to waiting
    /// without writing anything to its event log.
    pub line_wait: Option<LineWait>,
}

/// A job waiting for one of an agent's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineWait {
    pub agent_id: String,
    /// The agent's `max_concurrent_calls`: a line freed between the job's
    /// failed reservation and this update makes the job due at once (else
    /// that line's wake-up would have found no waiter).
    pub lines: u32,
}

/// One entry of a job's event log.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    pub at_ms: i64,
    pub status: JobStatus,
    pub reason: Option<String>,
    pub attempt: Option<i64>,
    pub detail: Option<serde_json::Value>,
}

/// A stored Idempotency-Key and the first answer given for it.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub job_id: JobId,
    pub response_status: u16,
    pub response_body: String,
}

/// A call about to be dialed.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub id: CallId,
    pub job_id: JobId,
    /// The job step that places it (one call per step: retries find it).
    pub step: i64,
    pub agent_id: String,
    pub to: String,
    pub from: String,
    pub provider: String,
    pub variables: serde_json::Value,
    /// Which automation placed it, and how deep in a chain of event-started
    /// automations (loop protection).
    pub origin: serde_json::Value,
    pub now_ms: i64,
}

/// A stored call.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub id: CallId,
    pub job_id: JobId,
    pub step: i64,
    pub agent_id: String,
    pub to: String,
    pub from: String,
    pub provider: String,
    pub provider_call_id: Option<String>,
    pub status: CallStatus,
    pub outcome: Option<String>,
    pub duration_seconds: Option<i64>,
    pub custom: serde_json::Value,
    pub variables: serde_json::Value,
    pub origin: serde_json::Value,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub recording_url: Option<String>,
    pub error: Option<String>,
    pub dial_attempts: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub dial_requested_at_ms: Option<i64>,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
}

/// What reserving a line gave.
#[derive(Debug, Clone)]
pub enum Reservation {
    /// The call row exists now (status `dialing`): ask the provider.
    Created(CallId),
    /// This step already has a call: reconcile it, never dial blindly.
    Existing(CallId),
    /// All the agent's lines are in use.
    Busy { active: i64 },
}

/// A call event, normalised from a provider callback.
#[derive(Debug, Clone)]
pub struct CallEventIn {
    pub call_id: CallId,
    /// Deduplicates repeated deliveries.
    pub event_key: String,
    pub status: Option<CallStatus>,
    pub provider_call_id: Option<String>,
    pub duration_seconds: Option<i64>,
    pub outcome: Option<String>,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub recording_url: Option<String>,
    pub custom: serde_json::Map<String, serde_json::Value>,
    pub body: String,
    pub now_ms: i64,
}

impl CallEventIn {
    /// An event that reports nothing yet (its fields are set by the caller).
    pub fn new(call_id: CallId, event_key: String, body: String, now_ms: i64) -> Self {
        Self {
            call_id,
            event_key,
            status: None,
            provider_call_id: None,
            duration_seconds: None,
            outcome: None,
            transcript: None,
            summary: None,
            recording_url: None,
            custom: serde_json::Map::new(),
            body,
            now_ms,
        }
    }
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventApplied {
    /// Seen before: nothing changed.
    Duplicate,
    /// Recorded; the status moved to this (None: only details changed or the
    /// status would have gone backwards).
    Applied { moved_to: Option<CallStatus> },
}

/// An outbound webhook delivery to create (a `webhook` step's, or a replay).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    /// The Standard Webhooks `webhook-id`, the same for every attempt.
    pub msg_id: MsgId,
    pub endpoint: String,
    pub event: String,
    pub job_id: Option<JobId>,
    pub call_id: Option<CallId>,
    /// JSON object of the rendered (non-secret) headers.
    pub headers_json: String,
    /// The request body, as sent.
    pub body: String,
    /// One delivery per key (a job's step): a re-run step finds it.
    pub dedupe_key: Option<String>,
    pub created_at_ms: i64,
}

/// A delivery as stored.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub msg_id: MsgId,
    pub endpoint: String,
    pub event: String,
    pub job_id: Option<JobId>,
    pub call_id: Option<CallId>,
    pub status: DeliveryStatus,
    pub headers: serde_json::Value,
    pub body: String,
    /// Attempts made so far (across replays).
    pub attempts: i64,
    /// `attempts` when the current retry budget started (0, or the count at
    /// the last replay).
    pub budget_start: i64,
    pub next_attempt_at_ms: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A delivery a deliverer has claimed (holds the lease until it logs the
/// attempt or releases it).
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// This claim's id: `finish_delivery_attempt` and `release_deliveries`
    /// are fenced on it.
    pub claim_id: String,
    pub delivery: DeliveryRecord,
}

/// One attempt of a delivery, as logged.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    pub attempt: i64,
    pub started_at_ms: i64,
    /// Headers sent, secrets redacted.
    pub request_headers: serde_json::Value,
    pub request_body: String,
    pub response_status: Option<i64>,
    /// At most 4 KiB of the response body.
    pub response_body: Option<String>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// When the next attempt is due (none after the last).
    pub next_attempt_at_ms: Option<i64>,
}

/// `GET /v1/deliveries` filters. Newest first; `before` is the cursor (a
/// delivery id: ids sort by creation time).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub endpoint: Option<String>,
    pub job_id: Option<String>,
    pub call_id: Option<String>,
    pub since_ms: Option<i64>,
    pub before: Option<DeliveryId>,
    pub limit: usize,
}

/// Which jobs a listing or a count covers (the operations console's job
/// list). Every field narrows; the default is every job.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub trigger_id: Option<TriggerId>,
    /// The principal that created the jobs (`created_by` in the API).
    pub created_by: Option<String>,
    /// Created at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Created before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// The number the job is about (E.164, as stored): its action's `to`
    /// (a `start_call`'s, or an automation trigger's `to` field), or the
    /// `to` of any call the job placed (an automation's steps may dial
    /// others).
    pub phone: Option<String>,
}

/// What a replay request found.
#[derive(Debug, Clone)]
pub enum Replay {
    NotFound,
    /// Only `failed` and `dead` deliveries are replayed.
    NotReplayable(DeliveryStatus),
    Queued(Box<DeliveryRecord>),
}

/// A number on the stored do-not-call list (added through the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DncEntry {
    /// E.164.
    pub number: String,
    pub added_at_ms: i64,
    /// The principal that added it.
    pub added_by: String,
}

/// Which calls a listing covers (`GET /v1/calls`). Every field narrows; the
/// default is every call.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub status: Option<CallStatus>,
    pub outcome: Option<String>,
    pub agent_id: Option<String>,
    /// The number called (E.164).
    pub to: Option<String>,
    /// Created at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Created before this time (Unix ms).
    pub until_ms: Option<i64>,
}

/// What a cancel request found (`Store::cancel_job`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    NotFound,
    /// Now `cancelled`: no claim can take it any more.
    Cancelled,
    /// In this status, which a cancel does not change: `running` (claimed
    /// right now) or final.
    NotCancellable(JobStatus),
}

/// Delivery attempts to one endpoint since some time, and how many
/// succeeded (2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSuccess {
    pub endpoint: String,
    pub attempts: u64,
    pub succeeded: u64,
}
