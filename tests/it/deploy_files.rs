//! The deployment files stay true to the code: every environment override
//! the compose file gives the instances is a setting this version knows
//! (loaded with the shipped config, as an instance would at start), and the
//! load balancer points at the services and port the compose file runs.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support;

const COMPOSE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/compose.yaml");
const CADDYFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Caddyfile");

fn compose() -> serde_norway::Value {
    let text = std::fs::read_to_string(COMPOSE).expect("deploy/compose.yaml is missing");
    let mut doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    doc
}

/// `${NAME:-default}` as compose expands it when NAME is unset.
fn compose_default(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("unclosed ${") + start;
        let inner = &rest[start + 2..end];
        let (_, default) = inner
            .split_once(":-")
            .unwrap_or_else(|| panic!("`{value}`: compose variable without a default"));
        out.push_str(default);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn environment(service: &serde_norway::Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .expect("a callgate service has an environment mapping")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_norway::Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), compose_default(&v))
        })
        .collect()
}

#[test]
fn every_compose_override_is_a_setting_the_instances_load() {
    let doc = compose();
    let services = doc["services"].as_mapping().unwrap();
    let callgate: Vec<_> = services
        .iter()
        .filter(|(_, s)| s["image"].as_str() == Some("callgate:local"))
        .collect();
    assert!(
        callgate.len() >= 2,
        "the compose file runs at least two instances"
    );
    for (name, service) in callgate {
        let mut env = support::test_env();
        env.extend(environment(service));
        assert!(
            env.keys().any(|k| k.starts_with("CALLGATE_STORAGE__")),
            "{name:?}: no storage override"
        );
        let data = tempfile::tempdir().unwrap();
        let catalog =
            callgate::app::compile::load(Path::new(support::REPO_CONFIG), data.path(), &env)
                .unwrap_or_else(|e| panic!("{name:?}: the compose environment does not load: {e}"));
        let main = &catalog.main;
        assert!(main.storage.url.starts_with("postgres://"), "{name:?}");
        assert!(
            main.server.plain_http,
            "{name:?}: TLS ends at the load balancer"
        );
        assert!(
            main.server.public_url.is_some(),
            "{name:?}: providers need the public URL"
        );
        assert!(!main.server.trusted_proxies.is_empty(), "{name:?}");
    }
}

#[test]
fn the_load_balancer_forwards_to_the_compose_services_and_their_port() {
    let doc = compose();
    let caddy = std::fs::read_to_string(CADDYFILE).expect("deploy/Caddyfile is missing");
    let services = doc["services"].as_mapping().unwrap();
    for (name, service) in services {
        if service["image"].as_str() != Some("callgate:local") {
            continue;
        }
        let env = environment(service);
        let port = env["CALLGATE_SERVER__LISTEN"]
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        let upstream = format!("{}:{port}", name.as_str().unwrap());
        assert!(
            caddy.contains(&upstream),
            "the Caddyfile does not forward to {upstream}"
        );
    }
}
