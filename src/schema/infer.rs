//! `callgate schema infer`: a starting schema from one sample payload.
//!
//! The hosted product this replaces silently locks a trigger's schema from
//! its first test payload; here the inference is explicit, printed, and meant
//! to be reviewed and committed. Every property present with a non-null value
//! becomes required; objects stay open (extra fields allowed) because senders
//! such as Zapier add fields over time; nulls give an unconstrained property
//! with a note to fill in.

use serde_json::{Map, Value, json};

use super::DRAFT_2020_12;

/// Infers a draft 2020-12 schema from `sample`.
pub fn infer(sample: &Value) -> Value {
    let mut schema = infer_value(sample, None);
    if let Some(obj) = schema.as_object_mut() {
        let mut top = Map::new();
        top.insert("$schema".into(), json!(DRAFT_2020_12));
        top.insert(
            "$comment".into(),
            json!("Inferred from one sample by `callgate schema infer`: review types, required fields and phone fields before use."),
        );
        top.append(obj);
        return Value::Object(top);
    }
    schema
}

fn infer_value(v: &Value, key: Option<&str>) -> Value {
    match v {
        Value::Null => json!({"description": "null in the sample: give it a type"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"type": "integer"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::String(_) if key.is_some_and(looks_like_phone_key) => json!({
            "type": "string",
            "description": "phone number: list its pointer in the trigger's phone_fields (or as the action's `to`) to normalise it to E.164"
        }),
        Value::String(_) => json!({"type": "string"}),
        Value::Array(items) => match items.first() {
            Some(first) => json!({"type": "array", "items": infer_value(first, None)}),
            None => json!({"type": "array"}),
        },
        Value::Object(map) => {
            let properties: Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), infer_value(v, Some(k))))
                .collect();
            let required: Vec<&String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect();
            json!({"type": "object", "required": required, "properties": properties})
        }
    }
}

fn looks_like_phone_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["phone", "mobile", "msisdn", "cell"]
        .iter()
        .any(|needle| k.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::CompiledSchema;

    #[test]
    fn the_inferred_schema_compiles_and_accepts_its_own_sample() {
        let sample = json!({
            "phone_number": "+1 555-012-1234",
            "customer": {"name": "Ada", "crm_id": "0031"},
            "attempt": 2,
            "score": 0.5,
            "tags": ["a"],
            "vip": true,
            "note": null
        });
        let schema = infer(&sample);
        assert_eq!(schema["$schema"], DRAFT_2020_12);
        assert_eq!(schema["properties"]["attempt"]["type"], "integer");
        assert_eq!(schema["properties"]["score"]["type"], "number");
        assert!(
            schema["properties"]["phone_number"]["description"]
                .as_str()
                .unwrap()
                .contains("phone")
        );
        let required = schema["required"].as_array().unwrap();
        assert!(required.contains(&json!("phone_number")));
        assert!(!required.contains(&json!("note")));
        let compiled = CompiledSchema::compile(&schema).unwrap();
        assert!(compiled.violations(&sample).is_empty());
        assert!(!compiled.violations(&json!({"customer": {}})).is_empty());
    }
}
