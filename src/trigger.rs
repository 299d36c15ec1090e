//! Triggers as the gateway runs them: one inbound URL with its compiled input
//! schema, its action, and how its input is normalised.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{ActionConfig, FormNesting, RateSpec};
use crate::input::phone::{PhoneValidation, Region};
use crate::schema::CompiledSchema;

/// A trigger id: 1–64 of `A-Z a-z 0-9 _ -`, starting with a letter or digit.
/// Constructing one is the only validation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TriggerId(Arc<str>);

impl TriggerId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid_len = (1..=64).contains(&s.len());
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let chars_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid_len && first_ok && chars_ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(format!(
                "`{s}` is not a valid trigger id (1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TriggerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TriggerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TriggerId({})", self.0)
    }
}

impl Serialize for TriggerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A validated trigger, ready to serve.
#[derive(Debug)]
pub struct Trigger {
    pub id: TriggerId,
    pub description: String,
    /// The schema file as written (served by `GET /v1/triggers/{id}`).
    pub schema_json: serde_json::Value,
    pub schema: CompiledSchema,
    pub action: ActionConfig,
    /// JSON pointers of fields normalised to E.164, the action's `to` first.
    pub phone_pointers: Vec<String>,
    pub phone_region: Region,
    pub phone_validation: PhoneValidation,
    pub form_nesting: FormNesting,
    pub rate_limit: RateSpec,
}

impl Trigger {
    /// The scope that allows running this trigger alone.
    pub fn scope(&self) -> String {
        format!("trigger:{}", self.id)
    }

    /// What an accepted request will run, as stored with the job and shown in
    /// test mode: the action with its target resolved from the input.
    pub fn plan(&self, input: &serde_json::Value) -> serde_json::Value {
        match &self.action {
            ActionConfig::StartCall { agent, to } => serde_json::json!({
                "type": "start_call",
                "agent": agent,
                "to": input.pointer(to),
            }),
            ActionConfig::Automation { name, .. } => serde_json::json!({
                "type": "automation",
                "name": name,
            }),
        }
    }
}
