//! Environment handling for configuration: `${VAR}` substitution in string
//! values (how secrets reach the config without being committed) and
//! `CALLGATE_<SECTION>__<KEY>` overrides of `callgate.toml` (twelve-factor).
//!
//! The environment is passed in as a snapshot so that tests never touch the
//! process environment.
//!
//! Policy: every section of `callgate.toml` can be overridden, nested keys
//! included (`CALLGATE_SERVER__TLS__CERT_FILE`). The sections are read off
//! `MainFile` itself (the fields serde's derive knows), so a new section
//! cannot be forgotten; other `CALLGATE_*` variables (`CALLGATE_LOG`, a
//! secret's `CALLGATE_JWT_SECRET`) are left alone.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::de::{self, Deserialize, Visitor};

use super::Problem;
use super::types::MainFile;

/// A snapshot of environment variables.
pub type Env = BTreeMap<String, String>;

/// Reads the process environment once (at the edge, in `main`).
pub fn from_process() -> Env {
    std::env::vars().collect()
}

/// Replaces `${VAR}` in every string of `value` with the variable's value;
/// `$${` is a literal `${`. Unset variables are reported with the key path.
pub fn substitute(value: &mut toml::Value, env: &Env, file: &str, problems: &mut Vec<Problem>) {
    walk(
        value,
        &mut String::new(),
        &mut |path, s| match expand(s, env) {
            Ok(Some(expanded)) => *s = expanded,
            Ok(None) => {}
            Err(var) => problems.push(Problem::new(
                file,
                path,
                format!("environment variable `{var}` is not set"),
            )),
        },
    );
}

fn walk(value: &mut toml::Value, path: &mut String, f: &mut dyn FnMut(&str, &mut String)) {
    match value {
        toml::Value::String(s) => f(path, s),
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, f);
                path.truncate(len);
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(v, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// `Ok(None)` when there is nothing to expand, `Err(var)` for an unset one.
fn expand(s: &str, env: &Env) -> Result<Option<String>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                // An unterminated reference is kept literally.
                out.push_str(tail);
                rest = "";
                break;
            };
            let name = &after[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => return Err(name.to_owned()),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// Sections of `callgate.toml` that `CALLGATE_<SECTION>__<KEY>` may
/// override: every field of `MainFile`.
pub fn sections() -> &'static [&'static str] {
    static SECTIONS: OnceLock<&'static [&'static str]> = OnceLock::new();
    SECTIONS.get_or_init(struct_fields::<MainFile>)
}

/// The field names serde's derive gives the struct `T`, from the one place
/// that defines them. (Hand-written rather than a crate: it is one call of
/// `deserialize_struct`, which hands over the derived field list.)
fn struct_fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the fields a struct asks for, then
/// stops.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Applies `CALLGATE_SERVER__LISTEN=0.0.0.0:8443`-style overrides. A value
/// that parses as a TOML value (number, bool, array) keeps that type; anything
/// else is a string. Returns the names of the variables applied.
pub fn apply_overrides(root: &mut toml::Value, env: &Env) -> Vec<String> {
    let mut applied = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("CALLGATE_") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.len() < 2 || !sections().contains(&path[0].as_str()) {
            continue;
        }
        let value = parse_scalar(raw);
        if insert_at(root, &path, value) {
            applied.push(name.clone());
        }
    }
    applied
}

/// Sets `path` in `root`, creating tables on the way; `false` when a
/// non-table value is in the way.
fn insert_at(root: &mut toml::Value, path: &[String], value: toml::Value) -> bool {
    let Some(table) = root.as_table_mut() else {
        return false;
    };
    match path {
        [] => false,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => {
            let child = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            insert_at(child, rest, value)
        }
    }
}

fn parse_scalar(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_set_variables_and_reports_unset_ones_with_their_key() {
        let mut v: toml::Value = toml::from_str(
            r#"
            [a]
            secret = "${S1}"
            mixed = "x-${S1}-y"
            literal = "$${NOT}"
            [[a.list]]
            k = "${MISSING}"
            "#,
        )
        .unwrap();
        let mut problems = Vec::new();
        substitute(&mut v, &env(&[("S1", "hunter2")]), "f.toml", &mut problems);
        assert_eq!(v["a"]["secret"].as_str(), Some("hunter2"));
        assert_eq!(v["a"]["mixed"].as_str(), Some("x-hunter2-y"));
        assert_eq!(v["a"]["literal"].as_str(), Some("${NOT}"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "a.list[0].k");
        assert!(problems[0].message.contains("MISSING"));
    }

    #[test]
    fn overrides_typed_values_into_known_sections_only() {
        let mut v: toml::Value = toml::from_str("[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let applied = apply_overrides(
            &mut v,
            &env(&[
                ("CALLGATE_SERVER__LISTEN", "0.0.0.0:9"),
                ("CALLGATE_SERVER__MAX_BODY_BYTES", "1024"),
                ("CALLGATE_LOG", "debug"),
                ("CALLGATE_JWT_SECRET", "x"),
            ]),
        );
        assert_eq!(applied.len(), 2);
        assert_eq!(v["server"]["listen"].as_str(), Some("0.0.0.0:9"));
        assert_eq!(v["server"]["max_body_bytes"].as_integer(), Some(1024));
        assert!(v.get("log").is_none());
    }

    #[test]
    fn every_section_of_main_file_is_overridable() {
        // Read off `MainFile`: the sections there today, whatever is added.
        let known = [
            "server",
            "storage",
            "limits",
            "idempotency",
            "defaults",
            "auth",
            "runner",
            "calling",
            "deliveries",
        ];
        for section in known {
            assert!(sections().contains(&section), "{section}: {:?}", sections());
        }
        // And each one takes an override, nested keys too.
        for section in sections() {
            let mut v = toml::Value::Table(toml::Table::new());
            let name = format!("CALLGATE_{}__A__B", section.to_ascii_uppercase());
            assert_eq!(apply_overrides(&mut v, &env(&[(&name, "3")])), [name]);
            assert_eq!(v[section]["a"]["b"].as_integer(), Some(3));
        }
        // Every top-level table of the shipped callgate.toml is a section
        // (what the README's promise is read against).
        let shipped: toml::Table =
            toml::from_str(include_str!("../../config/callgate.toml")).unwrap();
        for key in shipped.keys() {
            assert!(sections().contains(&key.as_str()), "{key}");
        }
    }
}
