//! `[alerts]` compiled: each target becomes an outbound `Endpoint` (so it
//! is sent through the same SSRF-guarded client as deliveries, and a
//! `webhook` target is signed the same way), and the thresholds checked.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::{Endpoint, ssrf};
use crate::config::outbound::{BreakerConfig, RetryPolicy};
use crate::config::{AlertPreset, AlertsConfig, MAIN_FILE, Problem};

/// How long one alert request may take.
pub const ALERT_TIMEOUT: Duration = Duration::from_secs(10);

/// One place alerts go.
#[derive(Debug, Clone)]
pub struct AlertTarget {
    pub preset: AlertPreset,
    /// `alert-<n>`, its URL, and (for `webhook`) its signing secret.
    pub endpoint: Arc<Endpoint>,
}

/// The targets of `[alerts]`; targets with problems are left out (every
/// problem is reported).
pub fn compile_alerts(cfg: &AlertsConfig, problems: &mut Vec<Problem>) -> Vec<AlertTarget> {
    let mut p = |key: String, msg: String| problems.push(Problem::new(MAIN_FILE, key, msg));
    if cfg.dedupe_window.is_zero() {
        p(
            "alerts.dedupe_window".into(),
            "must be longer than 0s".into(),
        );
    }
    if cfg.window.is_zero() || cfg.check_every.is_zero() {
        p(
            "alerts".into(),
            "`window` and `check_every` must be longer than 0s".into(),
        );
    }
    if let Some(rate) = cfg.success_rate_below
        && !(rate > 0.0 && rate <= 1.0)
    {
        p(
            "alerts.success_rate_below".into(),
            "must be above 0 and at most 1".into(),
        );
    }
    let mut out = Vec::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        let at = format!("alerts.targets[{i}]");
        let mut ok = true;
        let url = match url::Url::parse(&t.url) {
            Ok(u) => {
                if let Err(e) = ssrf::check_url(&u, t.allow_private, t.allow_http) {
                    p(format!("{at}.url"), e.to_string());
                    ok = false;
                }
                Some(u)
            }
            Err(e) => {
                p(format!("{at}.url"), format!("`{}`: {e}", t.url));
                None
            }
        };
        match (t.preset, &t.secret) {
            (AlertPreset::Webhook, None) => {
                p(
                    format!("{at}.secret"),
                    "a `webhook` target needs a Standard Webhooks secret (whsec_…)".into(),
                );
                ok = false;
            }
            (AlertPreset::Webhook, Some(s))
                if !s.expose_secret().starts_with("whsec_")
                    || standardwebhooks::Webhook::new(s.expose_secret()).is_err() =>
            {
                p(
                    format!("{at}.secret"),
                    "not a Standard Webhooks secret (whsec_<base64>)".into(),
                );
                ok = false;
            }
            (AlertPreset::Slack, Some(_)) => {
                p(
                    format!("{at}.secret"),
                    "a `slack` target is not signed (the secret is in its URL)".into(),
                );
                ok = false;
            }
            _ => {}
        }
        if let (true, Some(url)) = (ok, url) {
            out.push(AlertTarget {
                preset: t.preset,
                endpoint: Arc::new(Endpoint {
                    name: format!("alert-{i}"),
                    url,
                    method: reqwest::Method::POST,
                    headers: Vec::new(),
                    secret_headers: Vec::new(),
                    auth: None,
                    signing_secret: t.secret.clone(),
                    timeout: ALERT_TIMEOUT,
                    retry: RetryPolicy::default(),
                    concurrency: 1,
                    breaker: BreakerConfig::default(),
                    allow_private: t.allow_private,
                    allow_http: t.allow_http,
                    follow_redirects: false,
                    ca_certificates: Vec::new(),
                    health_check: None,
                }),
            });
        }
    }
    out
}
