//! JSON templates rendered with minijinja: provider request bodies, URLs,
//! headers and step mappings (and, later, webhook payloads).
//!
//! Policy: a template is a JSON value whose strings are templates. A string
//! that is exactly one expression (`"{{ call.duration_seconds }}"`) keeps
//! the expression's JSON type: numbers stay numbers, objects stay objects.
//! Any other string renders as text. Undefined variables are errors (strict
//! mode), never silently empty. Syntax is checked when the config loads.

use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// The shared environment (strict undefined, no auto-escaping).
fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // For HTTP Basic credentials in provider requests.
        env.add_filter("b64encode", |s: String| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        });
        env
    })
}

/// A compiled (syntax-checked) JSON template.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTemplate(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    Expr(String),
    Text(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl JsonTemplate {
    /// Checks every string's syntax and builds the template.
    pub fn compile(value: &Value) -> Result<Self, String> {
        compile_node(value, "").map(JsonTemplate)
    }

    /// A template from TOML config.
    pub fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
        Self::compile(&json)
    }

    /// Renders against `ctx` (a JSON object of named values).
    pub fn render(&self, ctx: &Value) -> Result<Value, String> {
        let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
        render_node(&self.0, &ctx)
    }

    /// Variable paths the template reads (`input.phone_number`), for checks.
    pub fn variables(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_vars(&self.0, &mut out);
        out.sort();
        out.dedup();
        out
    }
}

/// A single string template (URL, header, `to`).
pub fn compile_text(source: &str) -> Result<JsonTemplate, String> {
    JsonTemplate::compile(&Value::String(source.to_owned()))
}

/// Renders a text template to a string (non-strings are JSON-encoded).
pub fn render_text(t: &JsonTemplate, ctx: &Value) -> Result<String, String> {
    Ok(match t.render(ctx)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

fn compile_node(value: &Value, at: &str) -> Result<Node, String> {
    Ok(match value {
        Value::String(s) => {
            if let Some(expr) = single_expression(s) {
                env()
                    .compile_expression(expr)
                    .map_err(|e| format!("{at}: {e}"))?;
                Node::Expr(expr.to_owned())
            } else if s.contains("{{") || s.contains("{%") {
                env()
                    .template_from_str(s)
                    .map_err(|e| format!("{at}: {e}"))?;
                Node::Text(s.clone())
            } else {
                Node::Literal(value.clone())
            }
        }
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| compile_node(v, &format!("{at}/{i}")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), compile_node(v, &format!("{at}/{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
        other => Node::Literal(other.clone()),
    })
}

fn render_node(node: &Node, ctx: &minijinja::Value) -> Result<Value, String> {
    Ok(match node {
        Node::Literal(v) => v.clone(),
        Node::Expr(expr) => {
            let value = env()
                .compile_expression(expr)
                .and_then(|e| e.eval(ctx.clone()))
                .map_err(|e| format!("`{{{{ {expr} }}}}`: {e}"))?;
            if value.is_undefined() {
                return Err(format!("`{{{{ {expr} }}}}`: undefined value"));
            }
            serde_json::to_value(&value).map_err(|e| e.to_string())?
        }
        Node::Text(source) => Value::String(
            env()
                .render_str(source, ctx.clone())
                .map_err(|e| format!("`{source}`: {e}"))?,
        ),
        Node::Array(items) => Value::Array(
            items
                .iter()
                .map(|n| render_node(n, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Node::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, n)| Ok((k.clone(), render_node(n, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn collect_vars(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Literal(_) => {}
        Node::Expr(expr) => {
            if let Ok(e) = env().compile_expression(expr) {
                out.extend(e.undeclared_variables(true));
            }
        }
        Node::Text(source) => {
            if let Ok(t) = env().template_from_str(source) {
                out.extend(t.undeclared_variables(true));
            }
        }
        Node::Array(items) => items.iter().for_each(|n| collect_vars(n, out)),
        Node::Object(fields) => fields.iter().for_each(|(_, n)| collect_vars(n, out)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn single_expressions_keep_their_type_and_text_renders() {
        let t = JsonTemplate::compile(&json!({
            "duration": "{{ call.duration_seconds }}",
            "customer": "{{ input.customer }}",
            "greeting": "Hi {{ input.customer.name }}!",
            "fixed": 3,
            "list": ["{{ call.id }}", "x"]
        }))
        .unwrap();
        let out = t
            .render(&json!({
                "call": {"duration_seconds": 182, "id": "call_1"},
                "input": {"customer": {"name": "Ada"}}
            }))
            .unwrap();
        assert_eq!(
            out,
            json!({
                "duration": 182,
                "customer": {"name": "Ada"},
                "greeting": "Hi Ada!",
                "fixed": 3,
                "list": ["call_1", "x"]
            })
        );
        let mut vars = t.variables();
        vars.retain(|v| v.starts_with("call"));
        assert_eq!(vars, ["call.duration_seconds", "call.id"]);
    }

    #[test]
    fn syntax_errors_fail_at_compile_and_unknown_names_at_render() {
        assert!(JsonTemplate::compile(&json!({"a": "{{ call. }}"})).is_err());
        assert!(JsonTemplate::compile(&json!({"a": "x {% if %}"})).is_err());
        let t = compile_text("{{ call.nope }}").unwrap();
        assert!(t.render(&json!({"call": {}})).is_err());
        assert!(t.render(&json!({})).is_err());
    }
}
