//! Triggers as the gateway runs them: one inbound URL with its compiled input
//! schema, its action, and how its input is normalised.

use crate::config::{ActionConfig, FormNesting, RateSpec};
pub use crate::ids::TriggerId;
use crate::input::phone::{PhoneValidation, Region};
use crate::job::JobAction;
use crate::schema::CompiledSchema;

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
    /// test mode: the action with its target resolved from the (normalised)
    /// input. `None` when the number to call is missing, which normalising
    /// has already refused.
    pub fn plan(&self, input: &serde_json::Value) -> Option<JobAction> {
        Some(match &self.action {
            ActionConfig::StartCall { agent, to } => JobAction::StartCall {
                agent: agent.clone(),
                to: input.pointer(to)?.as_str()?.to_owned(),
            },
            ActionConfig::Automation { name, .. } => JobAction::Automation {
                name: name.clone(),
                event: None,
                call_id: None,
            },
        })
    }
}
