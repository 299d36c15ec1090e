//! What a job runs: its action, stored with it as JSON. Accepted triggers
//! and call events create jobs; the runner reads the action back into this
//! type, and a stored action that does not read is the job's problem
//! (`needs_attention`), never a default.

use serde::{Deserialize, Serialize};

use crate::ids::CallId;

/// A job's action (`{"type": "start_call", …}` in storage and the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobAction {
    /// One call by `agent` to `to` (E.164).
    StartCall { agent: String, to: String },
    /// The steps of the automation `name`; for an automation started by a
    /// call event, the event and its call.
    Automation {
        name: String,
        /// The number the trigger's `to` pointer named (E.164), when it
        /// names one: what the job is about (`GET /v1/jobs?phone=`); the
        /// automation's steps decide what they dial.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<CallId>,
    },
}

impl JobAction {
    /// The JSON text stored with the job.
    pub fn to_json(&self) -> String {
        // A tagged enum of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_keep_their_stored_shape() {
        let a = JobAction::StartCall {
            agent: "demo-agent".into(),
            to: "+15550121234".into(),
        };
        assert_eq!(
            a.to_json(),
            r#"{"type":"start_call","agent":"demo-agent","to":"+15550121234"}"#
        );
        let b = JobAction::Automation {
            name: "crm".into(),
            to: None,
            event: None,
            call_id: None,
        };
        assert_eq!(b.to_json(), r#"{"type":"automation","name":"crm"}"#);
        for s in [a.to_json(), b.to_json()] {
            assert_eq!(serde_json::from_str::<JobAction>(&s).unwrap().to_json(), s);
        }
        assert!(serde_json::from_str::<JobAction>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<JobAction>(r#"{"type":"start_call","agent":"a"}"#).is_err());
    }
}
