//! The compiled configuration the gateway runs with: every trigger, agent,
//! automation, endpoint, action, key and issuer in its runtime form, plus
//! the settings of `callgate.toml`. Built once at start by `app::compile`
//! from the files `config` reads; handlers and services read it and never
//! the files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::{Issuers, KeySet};
use crate::automation::Automation;
use crate::calling::{Agent, DoNotCall};
use crate::config::{MainFile, ProviderConfig};
use crate::ids::TriggerId;
use crate::outbound::{Endpoint, MidCallAction};
use crate::trigger::Trigger;

/// The validated, compiled configuration.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The config dir; relative paths in the files are resolved against it.
    pub dir: PathBuf,
    /// Where the database and the generated certificate live.
    pub data_dir: PathBuf,
    /// `callgate.toml` as loaded (with environment overrides).
    pub main: MainFile,
    pub agents: BTreeMap<String, Arc<Agent>>,
    pub triggers: BTreeMap<TriggerId, Arc<Trigger>>,
    pub automations: BTreeMap<String, Arc<Automation>>,
    /// Checked provider settings (the calls service builds the clients).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The CA certificates of each provider's `ca_file`, read and parsed
    /// when the config was compiled (absent: the system's roots only).
    pub provider_cas: BTreeMap<String, Vec<reqwest::Certificate>>,
    pub do_not_call: DoNotCall,
    /// API keys as loaded at start (the server reloads the file on change).
    pub keys: KeySet,
    pub keys_path: PathBuf,
    /// Modification time of the key file when `keys` was read.
    pub keys_modified: Option<std::time::SystemTime>,
    pub issuers: Issuers,
    /// Outbound webhook endpoints (`endpoints.toml`).
    pub endpoints: BTreeMap<String, Arc<Endpoint>>,
    /// Mid-call actions (`actions.toml`).
    pub actions: BTreeMap<String, Arc<MidCallAction>>,
    /// Where alerts go (`[alerts]`; empty: alerts are off).
    pub alert_targets: Vec<crate::outbound::AlertTarget>,
}
