//! The statuses of stored records: jobs, calls (and the order they move
//! in), deliveries.
//!
//! Policy for calls: a call only moves forward. `queued` → `dialing` → `ringing` →
//! `in_progress` → one final status (`completed`, `no_answer`, `busy`,
//! `failed`, `canceled`). An event that would move a call backwards, or off
//! a final status, changes nothing. `unknown` is set only by us, when a crash
//! left us unable to tell whether the provider placed the call.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Queued,
    Dialing,
    Ringing,
    InProgress,
    Completed,
    NoAnswer,
    Busy,
    Failed,
    Canceled,
    Unknown,
}

impl CallStatus {
    pub const ALL: [CallStatus; 10] = [
        CallStatus::Queued,
        CallStatus::Dialing,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Completed,
        CallStatus::NoAnswer,
        CallStatus::Busy,
        CallStatus::Failed,
        CallStatus::Canceled,
        CallStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Dialing => "dialing",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in_progress",
            CallStatus::Completed => "completed",
            CallStatus::NoAnswer => "no_answer",
            CallStatus::Busy => "busy",
            CallStatus::Failed => "failed",
            CallStatus::Canceled => "canceled",
            CallStatus::Unknown => "unknown",
        }
    }

    /// The call is over (the line is free, post-call automations may run).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CallStatus::Completed
                | CallStatus::NoAnswer
                | CallStatus::Busy
                | CallStatus::Failed
                | CallStatus::Canceled
        )
    }

    /// The call occupies one of its agent's lines (it counts against
    /// `max_concurrent_calls`). `unknown` does not: nobody can tell.
    pub fn holds_line(self) -> bool {
        matches!(
            self,
            CallStatus::Queued | CallStatus::Dialing | CallStatus::Ringing | CallStatus::InProgress
        )
    }

    /// `('queued', 'dialing', …)`: the statuses that hold a line, as an SQL
    /// list (engines build their queries from this, never from a literal).
    pub fn holding_line_sql() -> &'static str {
        static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let quoted: Vec<String> = CallStatus::ALL
                .into_iter()
                .filter(|s| s.holds_line())
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            format!("({})", quoted.join(", "))
        });
        &LIST
    }

    /// Position in the forward order (finals share the last rank).
    fn rank(self) -> u8 {
        match self {
            CallStatus::Unknown => 0,
            CallStatus::Queued => 1,
            CallStatus::Dialing => 2,
            CallStatus::Ringing => 3,
            CallStatus::InProgress => 4,
            _ => 5,
        }
    }

    /// Whether an event reporting `next` may change a call that is `self`.
    pub fn may_become(self, next: CallStatus) -> bool {
        !self.is_final() && next != CallStatus::Unknown && next.rank() > self.rank()
    }

    /// The event name for automations (`call.completed`).
    pub fn event_name(self) -> String {
        format!("call.{}", self.as_str())
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CallStatus::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a call status"))
    }
}

/// Job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Scheduled,
    Waiting,
    Succeeded,
    Failed,
    Rejected,
    NeedsAttention,
    /// Cancelled through the API before it ran (or while it waited).
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 9] = [
        Self::Queued,
        Self::Running,
        Self::Scheduled,
        Self::Waiting,
        Self::Succeeded,
        Self::Failed,
        Self::Rejected,
        Self::NeedsAttention,
        Self::Cancelled,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Waiting => "waiting",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Rejected => "rejected",
            JobStatus::NeedsAttention => "needs_attention",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded
                | JobStatus::Failed
                | JobStatus::Rejected
                | JobStatus::NeedsAttention
                | JobStatus::Cancelled
        )
    }

    /// Not claimed and not final: `cancel_job` may still stop it.
    pub fn is_cancellable(self) -> bool {
        matches!(
            self,
            JobStatus::Queued | JobStatus::Scheduled | JobStatus::Waiting
        )
    }
}

/// Delivery states: `pending` (due at `next_attempt_at`), `sending` (an
/// attempt in flight under a lease), then `succeeded`, `failed` (refused
/// by the receiver with a 4xx that is not worth repeating, or by the SSRF
/// guard) or `dead` (every attempt of the retry policy failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Sending,
    Succeeded,
    Failed,
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 5] = [
        Self::Pending,
        Self::Sending,
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::CallStatus::*;
    use super::*;

    #[test]
    fn calls_only_move_forward_and_finals_are_final() {
        assert!(Dialing.may_become(Ringing));
        assert!(Ringing.may_become(Completed));
        assert!(Dialing.may_become(NoAnswer));
        assert!(!InProgress.may_become(Ringing), "out of order");
        assert!(!Completed.may_become(Failed), "final stays final");
        assert!(!Ringing.may_become(Ringing), "repeat changes nothing");
        assert!(!Dialing.may_become(Unknown));
        assert!(
            Unknown.may_become(Completed),
            "reconciliation can settle unknown"
        );
        for s in CallStatus::ALL {
            assert_eq!(s.as_str().parse::<CallStatus>().unwrap(), s);
        }
        assert_eq!(Completed.event_name(), "call.completed");
    }
}
