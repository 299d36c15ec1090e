//! The command line: `check`, `key new`, `schema infer`.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn callgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = callgate(&["check", "--config", crate::support::REPO_CONFIG]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_lists_every_problem_with_its_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("callgate.toml"),
        "[server]\nlisten = \"127.0.0.1:8443\"\nmax_body_bytes = 0\n\n[defaults]\nphone_region = \"XX\"\n\n\
         [auth.jwt.issuers.dev]\nissuer = \"dev\"\naudience = \"callgate\"\nalgorithms = [\"HS256\"]\n\
         [[auth.jwt.issuers.dev.keys]]\nsecret = \"${NOT_SET_ANYWHERE_42}\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("agents.toml"),
        "[agents.a]\nname = \"A\"\nprovider = \"acme\"\nfrom_number = \"555\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("triggers.toml"),
        "[triggers.t1]\nschema = \"missing.json\"\naction = { type = \"start_call\", agent = \"ghost\" }\n\
         [triggers.t2]\nschema = \"bad.json\"\naction = { type = \"start_call\", agent = \"a\", to = \"phone\" }\nsurprise = 1\n",
    )
    .unwrap();
    std::fs::write(d.join("bad.json"), "{\"type\": \"nope\"}").unwrap();
    let out = callgate(&["check", "--config", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "callgate.toml: server.max_body_bytes",
        "callgate.toml: defaults.phone_region",
        "callgate.toml: auth.jwt.issuers.dev.keys[0].secret: environment variable `NOT_SET_ANYWHERE_42` is not set",
        "agents.toml: agents.a.provider",
        "agents.toml: agents.a.from_number",
        "triggers.toml: triggers.t2.surprise",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    // Once the unknown key is gone, the deeper trigger problems show too.
    std::fs::write(
        d.join("triggers.toml"),
        "[triggers.t1]\nschema = \"missing.json\"\naction = { type = \"start_call\", agent = \"ghost\" }\n\
         [triggers.t2]\nschema = \"bad.json\"\naction = { type = \"start_call\", agent = \"a\", to = \"phone\" }\n",
    )
    .unwrap();
    let out = callgate(&["check", "--config", d.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "triggers.toml: triggers.t1.schema: cannot read missing.json",
        "triggers.toml: triggers.t1.action.agent: no agent `ghost`",
        "triggers.toml: triggers.t2.schema: bad.json: invalid schema",
        "triggers.toml: triggers.t2.action.to: `phone` is not a JSON pointer",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    // The secret's value never appears, only the variable's name.
    assert!(!err.contains("hunter2"));
}

#[test]
fn key_new_prints_only_the_key_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("callgate.toml"), "").unwrap();
    let out = callgate(&[
        "key",
        "new",
        "--name",
        "zapier",
        "--scope",
        "trigger:demo-call",
        "--config",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.trim_end();
    assert_eq!(stdout.lines().count(), 1);
    assert!(key.starts_with("cg_") && key.len() >= 46);
    let file = std::fs::read_to_string(dir.path().join("keys.toml")).unwrap();
    assert!(!file.contains(key));
    assert!(file.contains(&callgate::auth::api_key::hash_for_file(key)));
    assert!(file.contains("trigger:demo-call"));
    let again = callgate(&[
        "key",
        "new",
        "--name",
        "zapier",
        "--config",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(again.stdout.is_empty());
}

#[test]
fn schema_infer_turns_a_sample_into_a_schema_that_accepts_it() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["schema", "infer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let sample =
        r#"{"phone_number": "+1 555-012-1234", "customer": {"name": "Ada"}, "attempt": 1}"#;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sample.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["properties"]["attempt"]["type"], "integer");
    let compiled = callgate::schema::CompiledSchema::compile(&schema).unwrap();
    assert!(
        compiled
            .violations(&serde_json::from_str(sample).unwrap())
            .is_empty()
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["schema", "infer", "--form"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"phone_number=%2B15550121234&customer__name=Ada")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["properties"]["customer"]["properties"]["name"]["type"],
        "string"
    );
}
