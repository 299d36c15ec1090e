//! What `callgate check` refuses in a JWKS issuer, with file and key.

use super::*;

#[test]
fn config_problems_name_the_issuer_key() {
    let at = "auth.jwt.issuers.x";
    let cases: Vec<(String, String, &str)> = vec![
        (
            issuer("x", "https://x.test/", "[\"RS256\"]", "", ""),
            format!("{at}.keys"),
            "set one of `keys`, `jwks_url` or `discovery = true`",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"\ndiscovery = true",
                "",
            ),
            at.to_owned(),
            "set only one of",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"http://x.test/jwks\"",
                "",
            ),
            format!("{at}.jwks_url"),
            "plain http is not allowed",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://10.0.0.1/jwks\"",
                "",
            ),
            format!("{at}.jwks_url"),
            "refusing to connect to 10.0.0.1 (private)",
        ),
        (
            issuer(
                "x",
                "https://169.254.169.254/",
                "[\"RS256\"]",
                "discovery = true",
                "",
            ),
            format!("{at}.discovery"),
            "cloud metadata",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"HS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "",
            ),
            format!("{at}.algorithms"),
            "HS256 cannot take its key from a JWKS",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "ca_file = \"missing-ca.pem\"",
            ),
            format!("{at}.ca_file"),
            "cannot read",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "ca_file = \"callgate.toml\"",
            ),
            format!("{at}.ca_file"),
            "no `-----BEGIN CERTIFICATE-----`",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "jwks_min_refresh = \"0s\"",
            ),
            format!("{at}.jwks_min_refresh"),
            "from 1s to 1h",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"RS256\"]",
                "jwks_url = \"https://x.test/jwks\"",
                "jwks_cache_min = \"10m\"\njwks_cache_max = \"1m\"",
            ),
            format!("{at}.jwks_cache_max"),
            "must not be shorter",
        ),
        (
            issuer(
                "x",
                "https://x.test/",
                "[\"HS256\"]",
                "allow_private = true",
                "[[auth.jwt.issuers.x.keys]]\nsecret = \"${TEST_JWT_SECRET}\"",
            ),
            format!("{at}.allow_private"),
            "only applies with `jwks_url` or `discovery`",
        ),
    ];
    for (toml, key, what) in cases {
        let err = config_problems(&[("callgate.toml", &main_with(&toml))]);
        crate::support::assert_problem(&err, &key, what);
    }
}

#[test]
fn check_reports_a_jwks_issuer_problem_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(
        std::path::Path::new(crate::support::REPO_CONFIG),
        dir.path(),
    );
    std::fs::write(
        dir.path().join("callgate.toml"),
        main_with(&issuer(
            "idp",
            "https://idp.test/",
            "[\"RS256\"]",
            "jwks_url = \"https://127.0.0.1/jwks\"",
            "",
        )),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["check", "--config", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("callgate.toml: auth.jwt.issuers.idp.jwks_url: `https://127.0.0.1/jwks`: refusing to connect to 127.0.0.1 (loopback)"),
        "{err}"
    );
}
