//! Campaign dedupe: a trigger's `dedupe = { key, window }` makes a second
//! accepted request with the same rendered key, within the window, answer
//! with the first job instead of creating another (`on_duplicate`:
//! `existing` 200 with `Deduplicated: true`, or `conflict` 409 `duplicate`).
//!
//! Policy: the key is a minijinja template over the normalised input,
//! checked when the config loads; the window is 1m to 30d. The key is
//! claimed in the store in the same commit as the job (an idempotency
//! record of the trigger under `DEDUPE_PRINCIPAL`, expiring with the
//! window), so it holds across restarts and instances. Separate from
//! Idempotency-Key, which is per request and per principal.

use std::time::Duration;

use serde_json::Value;

use crate::config::DedupeConfig;
pub use crate::config::OnDuplicate;
use crate::template::{self, JsonTemplate};

/// Shortest and longest window.
pub const MIN_WINDOW: Duration = Duration::from_secs(60);
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// A trigger's compiled dedupe rule.
#[derive(Debug)]
pub struct Dedupe {
    key: JsonTemplate,
    pub window_ms: i64,
    pub on_duplicate: OnDuplicate,
}

impl Dedupe {
    /// Compiles `cfg`; each problem is reported as `(key, message)`.
    pub fn compile(cfg: &DedupeConfig, problem: &mut impl FnMut(&str, String)) -> Option<Self> {
        let key = template::compile_text(&cfg.key)
            .map_err(|e| problem(".dedupe.key", format!("not a valid template: {e}")))
            .ok();
        let window_ok = (MIN_WINDOW..=MAX_WINDOW).contains(&cfg.window);
        if !window_ok {
            problem(
                ".dedupe.window",
                format!(
                    "must be between 1m and 30d, not {}",
                    humantime::format_duration(cfg.window)
                ),
            );
        }
        Some(Self {
            key: key?,
            window_ms: i64::try_from(cfg.window.as_millis())
                .ok()
                .filter(|_| window_ok)?,
            on_duplicate: cfg.on_duplicate,
        })
    }

    /// The key for a normalised input (its fields are the template's
    /// variables); an error names what the template could not read.
    pub fn key(&self, input: &Value) -> Result<String, String> {
        template::render_text(&self.key, input)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cfg(key: &str, window: u64) -> DedupeConfig {
        DedupeConfig {
            key: key.into(),
            window: Duration::from_secs(window),
            on_duplicate: OnDuplicate::Existing,
        }
    }

    #[test]
    fn the_key_renders_over_the_input_and_bad_rules_are_named() {
        let mut problems = Vec::new();
        let mut p = |k: &str, m: String| problems.push(format!("{k}: {m}"));
        let d = Dedupe::compile(&cfg("{{ phone }}:{{ campaign }}", 86_400), &mut p).unwrap();
        let input = json!({"phone": "+15550100", "campaign": "spring"});
        assert_eq!(d.key(&input).unwrap(), "+15550100:spring");
        assert!(d.key(&json!({"phone": "+15550100"})).is_err());
        assert!(Dedupe::compile(&cfg("{{ phone", 86_400), &mut p).is_none());
        assert!(Dedupe::compile(&cfg("{{ phone }}", 59), &mut p).is_none());
        assert!(Dedupe::compile(&cfg("{{ phone }}", 31 * 86_400), &mut p).is_none());
        assert!(Dedupe::compile(&cfg("{{ phone }}", 30 * 86_400), &mut p).is_some());
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with(".dedupe.key"), "{problems:?}");
        assert!(problems[1].starts_with(".dedupe.window"), "{problems:?}");
    }
}
