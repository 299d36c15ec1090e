//! `[console]` in `callgate.toml`: the operator console at `/console`.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// `[console]`: the browser console and its sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve `/console` (off: every console path is a 404).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A session not used for this long ends.
    #[serde(default = "default_idle", with = "duration")]
    pub idle_timeout: Duration,
    /// A session ends this long after its login, used or not.
    #[serde(default = "default_absolute", with = "duration")]
    pub absolute_timeout: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout: default_idle(),
            absolute_timeout: default_absolute(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_idle() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_absolute() -> Duration {
    Duration::from_secs(12 * 3600)
}
