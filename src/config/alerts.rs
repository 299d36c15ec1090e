//! `[alerts]` in `callgate.toml`: where operators are told when something
//! needs them (an endpoint's breaker opens, a delivery goes dead, a job
//! needs attention, an endpoint's success rate drops), and how often.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::duration;

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Where alerts go (none: alerts are off).
    #[serde(default)]
    pub targets: Vec<AlertTargetConfig>,
    /// The same alert (kind and subject) is sent at most once per window,
    /// across every instance sharing the database.
    #[serde(default = "default_dedupe", with = "duration")]
    pub dedupe_window: Duration,
    /// Alert when an endpoint's share of successful delivery attempts over
    /// `window` falls below this (0 < x ≤ 1); absent: no such alert.
    pub success_rate_below: Option<f64>,
    /// The window the success rate is taken over.
    #[serde(default = "default_window", with = "duration")]
    pub window: Duration,
    /// Fewer attempts than this in the window say nothing about the rate.
    #[serde(default = "default_min_deliveries")]
    pub min_deliveries: u64,
    /// How often the success rates are checked (by the housekeeping
    /// leader).
    #[serde(default = "default_check_every", with = "duration")]
    pub check_every: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            dedupe_window: default_dedupe(),
            success_rate_below: None,
            window: default_window(),
            min_deliveries: default_min_deliveries(),
            check_every: default_check_every(),
        }
    }
}

/// `[[alerts.targets]]`: one receiver of alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTargetConfig {
    pub url: String,
    pub preset: AlertPreset,
    /// `webhook` only: the Standard Webhooks secret (`whsec_…`) alerts are
    /// signed with, as outbound deliveries are. Use `${ENV}`.
    pub secret: Option<SecretString>,
    /// The target may be a private, loopback or link-local address.
    #[serde(default)]
    pub allow_private: bool,
    /// The target may be plain `http`.
    #[serde(default)]
    pub allow_http: bool,
}

/// The body an alert target gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertPreset {
    /// A Slack incoming webhook: `{"text": "<one-line summary>"}`.
    Slack,
    /// JSON (`type`, `timestamp`, `data`), signed with `secret` and sent
    /// with the Standard Webhooks headers.
    Webhook,
}

fn default_dedupe() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_window() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_min_deliveries() -> u64 {
    20
}
fn default_check_every() -> Duration {
    Duration::from_secs(60)
}
