//! schemathesis against the real server: openapi.yaml must describe exactly
//! what the server accepts and answers.
//!
//! The server runs as every other test's does (`TestApp`, HTTPS, shipped
//! config), with one key holding every scope and generous limits, so that
//! neither auth nor rate limits hide a contract mismatch. The run is bounded
//! (examples per operation, one worker) and repeatable (fixed seed, no
//! example database). Every check is on. Without a `schemathesis` on `PATH`
//! the test says it was skipped and passes, unless
//! `CALLGATE_REQUIRE_SCHEMATHESIS=1` (set by `.ci/run`, which installs the
//! pinned version) makes that a failure.

use std::process::Command;

use crate::support::TestApp;

/// The version `.ci/run` installs; older or newer ones may generate other
/// cases.
const PINNED: &str = "4.32.5";
/// Test cases per operation and phase (`CALLGATE_SCHEMATHESIS_EXAMPLES`
/// overrides it, to explore further by hand).
const MAX_EXAMPLES: &str = "40";
/// The fixed seed (`CALLGATE_SCHEMATHESIS_SEED` overrides it).
const SEED: &str = "20261201";

/// Every scope there is, with `trigger:<id>` left out (`triggers:run` covers
/// every trigger).
const ALL_SCOPES: [&str; 12] = [
    "triggers:run",
    "jobs:read",
    "jobs:write",
    "deliveries:read",
    "deliveries:write",
    "actions:invoke",
    "metrics:read",
    "dnc:read",
    "dnc:write",
    "console",
    "keys:read",
    "keys:write",
];

/// What schemathesis cannot know from openapi.yaml alone.
///
/// A trigger's input is validated against that trigger's own JSON Schema
/// (config, shown by `GET /v1/triggers/{trigger_id}`), so an input that fits
/// the generic `TriggerInput` may still be a documented `422` (as may a
/// reused `Idempotency-Key`); every other status keeps its meaning. So may
/// a do-not-call `{number}`: which lengths a country's numbers may have is
/// libphonenumber's metadata, not a pattern. A job listing's `phone` must
/// be a phone number, its `cursor` one the API gave and its `since` no
/// later than its `until`: none of which a schema can say, so a string
/// that fits it may still be a documented `400`. Nor can it say that the
/// stats' `since` must come before `until` (a `400`) or that their
/// `bucket` must be `<n>m|h|d` within 1440 buckets (a `422`). A key's
/// scopes, networks and rate are checked against what exists (`422`; a
/// `per` that is not a duration is a `400`) and its name may be taken
/// (`409`); a key to disable may not exist (`404`) or be one of `keys.toml`
/// (`409`).
const CONFIG: &str = r#"
[[operations]]
include-operation-id = "runTrigger"
checks.positive_data_acceptance.expected-statuses = ["2xx", 401, 403, 404, 409, 422, 429]

[[operations]]
include-operation-id = ["getDoNotCall", "putDoNotCall", "deleteDoNotCall"]
checks.positive_data_acceptance.expected-statuses = ["2xx", 401, 403, 404, 409, 422, 429]

[[operations]]
include-operation-id = "createKey"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 409, 422, 429]

[[operations]]
include-operation-id = "disableKey"
checks.positive_data_acceptance.expected-statuses = ["2xx", 401, 403, 404, 409, 429]

[[operations]]
include-operation-id = "listJobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 429]

[[operations]]
include-operation-id = "getStats"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 422, 429]
"#;

fn installed() -> Option<String> {
    let out = Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violations() {
    let required = std::env::var("CALLGATE_REQUIRE_SCHEMATHESIS").is_ok_and(|v| v == "1");
    let Some(version) = installed() else {
        assert!(
            !required,
            "CALLGATE_REQUIRE_SCHEMATHESIS=1 but `schemathesis` is not on PATH \
             (pip install schemathesis=={PINNED})"
        );
        eprintln!(
            "schemathesis::schemathesis_finds_no_contract_violations skipped: \
             `schemathesis` is not installed (pip install schemathesis=={PINNED})"
        );
        return;
    };
    if !version.contains(PINNED) {
        eprintln!("schemathesis: {version} is not the pinned {PINNED}; results may differ");
    }
    // Bodies up to 1 MiB, so that size (a documented 413) never stands in
    // for the answer to the body's content.
    let app = TestApp::builder()
        .key("all", &ALL_SCOPES)
        .max_body_bytes(1 << 20)
        .start()
        .await;
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("ca.pem");
    std::fs::write(&ca, &app.cert_pem).unwrap();
    let config = work.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let setting = |name: &str, default: &str| std::env::var(name).unwrap_or(default.to_owned());
    let examples = setting("CALLGATE_SCHEMATHESIS_EXAMPLES", MAX_EXAMPLES);
    let seed = setting("CALLGATE_SCHEMATHESIS_SEED", SEED);
    let mut cmd = Command::new("schemathesis");
    cmd.current_dir(work.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", spec, "--url", &app.base])
        .args(["--checks", "all", "--max-examples", &examples])
        .args(["--seed", &seed, "--generation-database", "none"])
        .args(["--workers", "1", "--no-color", "--request-timeout", "20"])
        // Network-level failures only (a kept-alive connection the server
        // closed as idle just as the client reused it); an answer is never
        // retried, and a request that breaks the connection every time
        // still fails.
        .args(["--request-retries", "2"])
        .arg("--tls-verify")
        .arg(&ca)
        .args([
            "--header",
            &format!("Authorization: Bearer {}", app.key("all")),
        ]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // A run that tested nothing would also exit 0.
    let summary = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no test-case summary:\n{stdout}\n{stderr}"));
    let generated: u32 = summary.trim().split(' ').next().unwrap().parse().unwrap();
    assert!(generated >= 500, "too few cases: {summary}");
    eprintln!("schemathesis {version}: {}", summary.trim());
}
