//! API keys: `cg_` + 43 characters (32 random bytes, base64url), stored only
//! as SHA-256 hashes in the key file, compared in constant time.
//!
//! Policy: a key that is unknown, disabled or malformed is a 401. The lookup
//! compares the presented key's hash with every stored hash without stopping
//! at a match, so timing does not depend on which key matched.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use subtle::ConstantTimeEq;

use super::{IpAllowlist, Principal, Scope, Scopes};
use crate::config::{KeysFile, Problem, RateSpec};
use crate::crypto::{random_bytes, sha256};

/// Prefix of every API key.
pub const PREFIX: &str = "cg_";
/// Longest string treated as a possible key (longer ones are refused unhashed).
const MAX_KEY_LEN: usize = 128;

#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    principal: Arc<Principal>,
}

/// The API keys the gateway accepts.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    entries: Arc<[Entry]>,
    /// Every named key of the file, disabled or broken ones too: what
    /// `GET /v1/keys` lists, and the names a stored key may not take.
    listed: Arc<[ListedKey]>,
}

/// A `keys.toml` key as `GET /v1/keys` shows it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: Option<String>,
    pub disabled: bool,
}

impl KeySet {
    /// Builds the set from the key file, reporting problems under `file`.
    pub fn build(file: &KeysFile, file_name: &str, problems: &mut Vec<Problem>) -> KeySet {
        let mut entries = Vec::new();
        let mut listed = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, key) in file.keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            let mut ok = true;
            if key.name.is_empty() || !names.insert(key.name.clone()) {
                problems.push(Problem::new(
                    file_name,
                    format!("{at}.name"),
                    format!("`{}` is empty or used twice", key.name),
                ));
                ok = false;
            } else {
                listed.push(ListedKey {
                    name: key.name.clone(),
                    scopes: key.scopes.clone(),
                    created_at: key.created_at.clone(),
                    disabled: key.disabled,
                });
            }
            let hash = parse_hash(&key.hash);
            if hash.is_none() {
                problems.push(Problem::new(
                    file_name,
                    format!("{at}.hash"),
                    "expected `sha256:` and 64 hex digits",
                ));
                ok = false;
            }
            let mut scopes = Vec::new();
            for (j, s) in key.scopes.iter().enumerate() {
                match Scope::parse(s) {
                    Some(scope) => scopes.push(scope),
                    None => {
                        problems.push(Problem::new(
                            file_name,
                            format!("{at}.scopes[{j}]"),
                            format!(
                                "unknown scope `{s}` (known: {})",
                                super::scope::known_scopes()
                            ),
                        ));
                        ok = false;
                    }
                }
            }
            if let Some(rate) = &key.rate_limit
                && let Err(e) = rate.check()
            {
                problems.push(Problem::new(file_name, format!("{at}.rate_limit"), e));
                ok = false;
            }
            let allowed_ips = match IpAllowlist::parse(&key.allowed_ips) {
                Ok(list) => list.map(Arc::new),
                Err(errors) => {
                    for (j, e) in errors {
                        problems.push(Problem::new(file_name, format!("{at}.allowed_ips[{j}]"), e));
                    }
                    ok = false;
                    None
                }
            };
            if let (true, false, Some(hash)) = (ok, key.disabled, hash) {
                entries.push(Entry {
                    hash,
                    principal: Arc::new(Principal {
                        id: Arc::from(format!("key:{}", key.name)),
                        scopes: Scopes::new(scopes),
                        rate_limit: key.rate_limit,
                        allowed_ips,
                    }),
                });
            }
        }
        KeySet {
            entries: entries.into(),
            listed: listed.into(),
        }
    }

    /// The file's keys by name, disabled ones too.
    pub fn listed(&self) -> &[ListedKey] {
        &self.listed
    }

    /// Whether the file names a key `name` (disabled or not).
    pub fn has_name(&self, name: &str) -> bool {
        self.listed.iter().any(|k| k.name == name)
    }

    /// The principal of `presented`, if it is a known, enabled key.
    pub fn verify(&self, presented: &str) -> Option<Arc<Principal>> {
        if !presented.starts_with(PREFIX) || presented.len() > MAX_KEY_LEN {
            return None;
        }
        let hash = sha256(presented.as_bytes());
        let mut found: Option<&Entry> = None;
        for entry in self.entries.iter() {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found.map(|e| e.principal.clone())
    }

    /// The principal of the enabled key whose principal id is `id`
    /// (`key:<name>`): a console session lives only as long as its key.
    pub fn principal(&self, id: &str) -> Option<Arc<Principal>> {
        self.entries
            .iter()
            .find(|e| &*e.principal.id == id)
            .map(|e| e.principal.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `s` has the shape of a key `generate` makes (`cg_` + 43
/// base64url characters): only such a string may make the stored keys be
/// read again (`auth::db_keys`).
pub fn well_formed(s: &str) -> bool {
    s.len() == PREFIX.len() + 43
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Makes a new random key: `cg_` + base64url of 32 random bytes.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes);
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// `sha256:<hex>` as stored in the key file.
pub fn hash_for_file(key: &str) -> String {
    format!("sha256:{}", hex::encode(sha256(key.as_bytes())))
}

pub(crate) fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// A key's name: 1-64 of A-Z a-z 0-9 - _ . (it becomes part of a path).
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "key name `{name}` must be 1-64 of A-Z a-z 0-9 - _ ."
        ))
    }
}

/// Why a key could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddKeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot update {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Creates a key named `name` with `scopes`, appends its hash to the key file
/// at `path` (atomically: write a temporary file, fsync, rename) and returns
/// the plaintext key, which is not stored anywhere.
pub fn add_to_file(
    path: &Path,
    name: &str,
    scopes: &[String],
    rate_limit: Option<RateSpec>,
    now_rfc3339: &str,
) -> Result<String, AddKeyError> {
    add_to_file_allowing(path, name, scopes, rate_limit, &[], now_rfc3339)
}

/// `add_to_file` for a key usable only from `allowed_ips` (CIDRs or
/// addresses; empty: anywhere).
pub fn add_to_file_allowing(
    path: &Path,
    name: &str,
    scopes: &[String],
    rate_limit: Option<RateSpec>,
    allowed_ips: &[String],
    now_rfc3339: &str,
) -> Result<String, AddKeyError> {
    let io = |source| AddKeyError::Io {
        path: path.display().to_string(),
        source,
    };
    check_name(name).map_err(AddKeyError::Invalid)?;
    for s in scopes {
        if Scope::parse(s).is_none() {
            return Err(AddKeyError::Invalid(format!(
                "unknown scope `{s}` (known: {})",
                super::scope::known_scopes()
            )));
        }
    }
    if let Err(errors) = IpAllowlist::parse(allowed_ips) {
        let why: Vec<String> = errors.into_iter().map(|(_, e)| e).collect();
        return Err(AddKeyError::Invalid(why.join("; ")));
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KEYS_FILE_HEADER.to_owned(),
        Err(e) => return Err(io(e)),
    };
    let parsed: KeysFile = toml::from_str(&existing).map_err(|e| {
        AddKeyError::Invalid(format!(
            "{} is not a valid key file: {}",
            path.display(),
            e.message()
        ))
    })?;
    if parsed.keys.iter().any(|k| k.name == name) {
        return Err(AddKeyError::Invalid(format!(
            "a key named `{name}` already exists"
        )));
    }
    let key = generate();
    let mut block = String::new();
    if !existing.ends_with('\n') && !existing.is_empty() {
        block.push('\n');
    }
    let scopes_toml = toml::Value::Array(
        scopes
            .iter()
            .map(|s| toml::Value::String(s.clone()))
            .collect(),
    );
    block.push_str(&format!(
        "\n[[keys]]\nname = {}\nhash = \"{}\"\nscopes = {}\ncreated_at = \"{}\"\n",
        toml::Value::String(name.to_owned()),
        hash_for_file(&key),
        scopes_toml,
        now_rfc3339
    ));
    if let Some(r) = rate_limit {
        block.push_str(&format!(
            "rate_limit = {{ requests = {}, per = \"{}\", burst = {} }}\n",
            r.requests,
            humantime::format_duration(r.per),
            r.burst
        ));
    }
    if !allowed_ips.is_empty() {
        let list = toml::Value::Array(
            allowed_ips
                .iter()
                .map(|s| toml::Value::String(s.trim().to_owned()))
                .collect(),
        );
        block.push_str(&format!("allowed_ips = {list}\n"));
    }
    let updated = existing + &block;
    let tmp = path.with_extension("toml.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(updated.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(key)
}

const KEYS_FILE_HEADER: &str = "# API keys for callgate, managed by `callgate key new`.\n# Only SHA-256 hashes are stored; the plaintext key is printed once.\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_verify_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let k1 = add_to_file(&path, "zapier", &["triggers:run".into()], None, "now").unwrap();
        let k2 = add_to_file(&path, "crm", &["trigger:demo-call".into()], None, "now").unwrap();
        assert!(k1.starts_with("cg_") && k1.len() == 46, "{k1}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&k1) && !text.contains(&k2),
            "plaintext must not be stored"
        );
        let file: KeysFile = toml::from_str(&text).unwrap();
        let mut problems = Vec::new();
        let set = KeySet::build(&file, "keys.toml", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(&*set.verify(&k1).unwrap().id, "key:zapier");
        assert_eq!(&*set.verify(&k2).unwrap().id, "key:crm");
        let last = if k1.ends_with('A') { 'B' } else { 'A' };
        let wrong = format!("{}{last}", &k1[..k1.len() - 1]);
        assert!(set.verify(&wrong).is_none());
        assert!(set.verify("cg_").is_none());
        assert!(set.verify("not-a-key").is_none());
    }

    #[test]
    fn duplicate_names_and_unknown_scopes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        add_to_file(&path, "a", &[], None, "now").unwrap();
        assert!(matches!(
            add_to_file(&path, "a", &[], None, "now"),
            Err(AddKeyError::Invalid(_))
        ));
        assert!(matches!(
            add_to_file(&path, "b", &["root".into()], None, "now"),
            Err(AddKeyError::Invalid(_))
        ));
        assert!(matches!(
            add_to_file(&path, "bad name", &[], None, "now"),
            Err(AddKeyError::Invalid(_))
        ));
    }

    #[test]
    fn a_key_restricted_to_networks_carries_its_allowlist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let ips = ["10.0.0.0/8".to_owned(), "192.0.2.7".to_owned()];
        let k = add_to_file_allowing(&path, "crm", &[], None, &ips, "now").unwrap();
        let file: KeysFile = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(file.keys[0].allowed_ips, ips);
        let mut problems = Vec::new();
        let set = KeySet::build(&file, "keys.toml", &mut problems);
        let list = set.verify(&k).unwrap().allowed_ips.clone().unwrap();
        assert!(list.allows("10.1.1.1".parse().unwrap()));
        assert!(!list.allows("192.0.2.8".parse().unwrap()));
        assert!(matches!(
            add_to_file_allowing(&path, "bad", &[], None, &["10.0.0.0/40".into()], "now"),
            Err(AddKeyError::Invalid(m)) if m.contains("10.0.0.0/40")
        ));
    }

    #[test]
    fn disabled_keys_and_bad_entries_are_not_accepted() {
        let file: KeysFile = toml::from_str(&format!(
            "[[keys]]\nname = \"off\"\nhash = \"{}\"\ndisabled = true\n[[keys]]\nname = \"bad\"\nhash = \"md5:00\"\nscopes = [\"nope\"]\nallowed_ips = [\"10.0.0.0/8\", \"nonsense\"]\n",
            hash_for_file("cg_x")
        ))
        .unwrap();
        let mut problems = Vec::new();
        let set = KeySet::build(&file, "keys.toml", &mut problems);
        assert!(set.verify("cg_x").is_none());
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0].key, "keys[1].hash");
        assert_eq!(problems[2].key, "keys[1].allowed_ips[1]");
    }
}
