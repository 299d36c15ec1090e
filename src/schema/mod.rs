//! Trigger input schemas: JSON Schema draft 2020-12 via the `jsonschema`
//! crate, compiled once at start.
//!
//! Policy: schemas are draft 2020-12 (a `$schema` naming another draft is a
//! config error); `format` is asserted, not only annotated (an operator who
//! writes `"format": "email"` expects it checked); remote `$ref`s are not
//! fetched. Validation reports every violation (up to `MAX_VIOLATIONS`) as an
//! RFC 6901 pointer into the input and a message; a missing required property
//! points at the property itself.

pub mod infer;

use serde::Serialize;
use serde_json::Value;

/// One validation failure: where (an RFC 6901 pointer into the input) and
/// what.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

impl Violation {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// The only `$schema` accepted (with or without a trailing `#`).
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Violations reported for one request at most (the rest are counted).
pub const MAX_VIOLATIONS: usize = 100;

/// A compiled schema.
#[derive(Debug, Clone)]
pub struct CompiledSchema(jsonschema::Validator);

impl CompiledSchema {
    /// Compiles `schema`, checking it against the draft 2020-12 meta-schema.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        if !schema.is_object() {
            return Err("a schema must be a JSON object".into());
        }
        if let Some(declared) = schema.get("$schema") {
            let declared = declared.as_str().unwrap_or_default().trim_end_matches('#');
            if declared != DRAFT_2020_12 {
                return Err(format!(
                    "`$schema` is `{declared}`; callgate uses draft 2020-12 ({DRAFT_2020_12})"
                ));
            }
        }
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(schema)
            .map(Self)
            .map_err(|e| {
                let at = e.instance_path().as_str();
                let at = if at.is_empty() { "/" } else { at };
                format!("invalid schema at {at}: {e}")
            })
    }

    /// Every violation of `instance`, in document order of the schema.
    pub fn violations(&self, instance: &Value) -> Vec<Violation> {
        // The common case first: a short-circuiting check that allocates nothing.
        if self.0.is_valid(instance) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut more = 0usize;
        for e in self.0.iter_errors(instance) {
            if out.len() == MAX_VIOLATIONS {
                more += 1;
                continue;
            }
            let mut pointer = e.instance_path().as_str().to_owned();
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                pointer.push('/');
                pointer.push_str(&escape(property.as_str().unwrap_or_default()));
            }
            out.push(Violation {
                pointer,
                message: e.to_string(),
            });
        }
        if more > 0 {
            out.push(Violation {
                pointer: String::new(),
                message: format!("{more} more violation(s) not listed"),
            });
        }
        out
    }
}

/// Escapes one RFC 6901 reference token.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Checks that `pointer` is RFC 6901 syntax (empty, or `/`-prefixed with
/// only `~0`/`~1` escapes).
pub fn is_valid_pointer(pointer: &str) -> bool {
    if pointer.is_empty() {
        return true;
    }
    if !pointer.starts_with('/') {
        return false;
    }
    let bytes = pointer.as_bytes();
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'~' || matches!(bytes.get(i + 1), Some(b'0' | b'1')))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn demo() -> CompiledSchema {
        CompiledSchema::compile(&json!({
            "$schema": DRAFT_2020_12,
            "type": "object",
            "required": ["phone_number"],
            "properties": {
                "phone_number": {"type": "string"},
                "email": {"type": "string", "format": "email"},
                "customer": {"type": "object", "properties": {"name": {"type": "string"}}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn every_violation_is_listed_with_a_pointer() {
        let v = demo().violations(&json!({"email": "nope", "customer": {"name": 7}}));
        let pointers: Vec<_> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/phone_number"), "{v:?}");
        assert!(pointers.contains(&"/email"), "{v:?}");
        assert!(pointers.contains(&"/customer/name"), "{v:?}");
        assert_eq!(v.len(), 3);
        assert!(demo().violations(&json!({"phone_number": "+1"})).is_empty());
    }

    #[test]
    fn other_drafts_and_broken_schemas_do_not_compile() {
        let err =
            CompiledSchema::compile(&json!({"$schema": "http://json-schema.org/draft-07/schema#"}))
                .unwrap_err();
        assert!(err.contains("2020-12"), "{err}");
        assert!(CompiledSchema::compile(&json!({"type": "nope"})).is_err());
        assert!(CompiledSchema::compile(&json!([1])).is_err());
    }

    #[test]
    fn pointer_syntax_is_checked() {
        assert!(is_valid_pointer("/phone_number"));
        assert!(is_valid_pointer("/a~1b/c~0d"));
        assert!(!is_valid_pointer("phone_number"));
        assert!(!is_valid_pointer("/bad~2"));
    }
}
