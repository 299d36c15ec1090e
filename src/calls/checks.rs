//! Checks of `providers.toml` beyond its shape: request templates compile,
//! JSON pointers are pointers, status maps name our statuses, secrets have
//! the right form, rates are usable. Every problem is reported with its key.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{
    BodyFormat, CallbackConfig, HttpRequestConfig, PROVIDERS_FILE, Problem, ProviderConfig,
};
use crate::schema::is_valid_pointer;
use crate::store::CallStatus;
use crate::template::{JsonTemplate, compile_text};

/// The CA certificates of every HTTP provider's `ca_file` (relative to
/// `dir`); a file that cannot be read or parsed is a problem at
/// `providers.<name>.ca_file`.
pub fn provider_cas(
    providers: &BTreeMap<String, ProviderConfig>,
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Vec<reqwest::Certificate>> {
    let mut out = BTreeMap::new();
    for (name, cfg) in providers {
        let ProviderConfig::Http(http) = cfg else {
            continue;
        };
        let Some(file) = &http.ca_file else { continue };
        let mut problem = |key: &str, msg: String| {
            problems.push(Problem::new(
                PROVIDERS_FILE,
                format!("providers.{name}{key}"),
                msg,
            ))
        };
        if let Some(certs) = crate::outbound::ca_file(dir, file, &mut problem) {
            out.insert(name.clone(), certs);
        }
    }
    out
}

/// Checks `providers.toml`: request templates, JSON pointers, status maps,
/// secrets and rates (every problem with its key).
pub fn check_providers(providers: &BTreeMap<String, ProviderConfig>, problems: &mut Vec<Problem>) {
    for (name, cfg) in providers {
        let at = format!("providers.{name}");
        let mut problem = |key: &str, msg: String| {
            problems.push(Problem::new(PROVIDERS_FILE, format!("{at}{key}"), msg))
        };
        if let Some(rate) = cfg.dial_rate()
            && let Err(e) = rate.check()
        {
            problem(".dial_rate", e);
        }
        if let Some(rate) = cfg.callback_rate_limit()
            && let Err(e) = rate.check()
        {
            problem(".callback_rate_limit", e);
        }
        match cfg {
            ProviderConfig::Simulator(s) => {
                for (key, v) in [
                    ("answer_rate", s.answer_rate),
                    ("busy_rate", s.busy_rate),
                    ("fail_rate", s.fail_rate),
                ] {
                    if !(0.0..=1.0).contains(&v) {
                        problem(&format!(".{key}"), "must be between 0 and 1".into());
                    }
                }
                if s.min_duration > s.max_duration {
                    problem(".min_duration", "must not exceed max_duration".into());
                }
                if s.outcomes.values().any(|w| *w < 0.0) || s.outcomes.values().sum::<f64>() <= 0.0
                {
                    problem(
                        ".outcomes",
                        "weights must be non-negative and not all zero".into(),
                    );
                }
                if let Some(secret) = &s.callback_secret
                    && standardwebhooks::Webhook::new(secrecy::ExposeSecret::expose_secret(secret))
                        .is_err()
                {
                    problem(
                        ".callback_secret",
                        "not a Standard Webhooks secret (whsec_<base64>)".into(),
                    );
                }
            }
            ProviderConfig::Http(h) => {
                check_request(&h.create_call, ".create_call", &mut problem);
                if !is_valid_pointer(&h.call_id) || h.call_id.is_empty() {
                    problem(".call_id", format!("`{}` is not a JSON pointer", h.call_id));
                }
                if let Some(lookup) = &h.lookup {
                    check_request(&lookup.request, ".lookup", &mut problem);
                    check_pointers(&lookup.status.to_vec(), ".lookup.status", &mut problem);
                }
                check_callbacks(&h.callbacks, &mut problem);
            }
        }
    }
}

fn check_request(req: &HttpRequestConfig, at: &str, problem: &mut impl FnMut(&str, String)) {
    if reqwest::Method::from_bytes(req.method.as_bytes()).is_err() {
        problem(
            &format!("{at}.method"),
            format!("`{}` is not an HTTP method", req.method),
        );
    }
    if let Err(e) = compile_text(&req.url) {
        problem(&format!("{at}.url"), e);
    }
    for (name, value) in &req.headers {
        if let Err(e) = compile_text(value) {
            problem(&format!("{at}.headers.{name}"), e);
        }
    }
    if let Some(body) = &req.body {
        match JsonTemplate::from_toml(body) {
            Ok(_) if req.body_format == BodyFormat::Form && !body.is_table() => problem(
                &format!("{at}.body"),
                "a form body must be a table of fields".into(),
            ),
            Ok(_) => {}
            Err(e) => problem(&format!("{at}.body"), e),
        }
    }
}

fn check_pointers(pointers: &[String], at: &str, problem: &mut impl FnMut(&str, String)) {
    for p in pointers {
        if p.is_empty() || !is_valid_pointer(p) {
            problem(at, format!("`{p}` is not a JSON pointer such as `/status`"));
        }
    }
}

fn check_callbacks(cb: &CallbackConfig, problem: &mut impl FnMut(&str, String)) {
    check_pointers(&cb.status.to_vec(), ".callbacks.status", problem);
    for (key, p) in [
        ("provider_call_id", &cb.provider_call_id),
        ("event_id", &cb.event_id),
        ("duration_seconds", &cb.duration_seconds),
        ("duration_ms", &cb.duration_ms),
        ("outcome", &cb.outcome),
        ("transcript", &cb.transcript),
        ("summary", &cb.summary),
        ("recording_url", &cb.recording_url),
    ] {
        if let Some(p) = p {
            check_pointers(
                std::slice::from_ref(p),
                &format!(".callbacks.{key}"),
                problem,
            );
        }
    }
    for (name, p) in &cb.custom {
        check_pointers(
            std::slice::from_ref(p),
            &format!(".callbacks.custom.{name}"),
            problem,
        );
    }
    for (from, to) in &cb.status_map {
        if to.parse::<CallStatus>().is_err() || to == "unknown" {
            problem(
                &format!(".callbacks.status_map.{from}"),
                format!("`{to}` is not a call status"),
            );
        }
    }
    for (from, to) in &cb.status_from_outcome {
        if !to.parse::<CallStatus>().is_ok_and(CallStatus::is_final) {
            problem(
                &format!(".callbacks.status_from_outcome.{from}"),
                format!("`{to}` is not a final call status"),
            );
        }
    }
}
