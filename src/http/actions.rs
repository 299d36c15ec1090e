//! `POST /v1/agents/{agent_id}/actions/{action}`: mid-call actions, called
//! by the voice runtime while a call is live (scope `actions:invoke`).
//!
//! Three request shapes, answered in kind:
//! - callgate's own: `{"call": {"id", "from", "to"}, "args": {…}}` →
//!   `{"action", "result", "degraded", "cached"}`;
//! - Vapi's tool server message: `{"message": {"type": "tool-calls",
//!   "call": {"id"}, "customer": {"number"}, "toolCallList": [{"id", "name",
//!   "parameters"} | {"id", "function": {"name", "arguments"}}]}}` →
//!   `{"results": [{"toolCallId", "result"}]}` (`result` a JSON string;
//!   a tool call without an answer gets `error` instead, unless none has
//!   one: then 504); a tool call naming another action of this agent runs
//!   that action, any other name runs the action of the URL;
//! - Retell's custom function: `{"name", "call": {"call_id", "from_number",
//!   "to_number"}, "args": {…}}` → the result object itself.
//!
//! A degraded answer (the fallback) carries `"degraded": true`. Without a
//! fallback, a failed or late upstream is a 504 problem.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};

use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::input::{self, BodyKind};
use crate::outbound::MidCallAction;
use crate::webhooks::actions::{self, Answer};

/// The normalised request.
#[derive(Debug, PartialEq)]
enum Shape {
    Callgate { call: Value, args: Value },
    Vapi { call: Value, calls: Vec<ToolCall> },
    Retell { call: Value, args: Value },
}

#[derive(Debug, PartialEq)]
struct ToolCall {
    id: String,
    name: Option<String>,
    args: Value,
}

fn object_or_empty(v: Option<&Value>, what: &str) -> Result<Value, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(m)) => Ok(Value::Object(m.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{what}` must be a JSON object"
        ))),
    }
}

fn text(v: &Value, ptr: &str) -> Value {
    v.pointer(ptr)
        .filter(|x| x.is_string())
        .cloned()
        .unwrap_or(Value::Null)
}

fn shape(body: &Value) -> Result<Shape, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    if let Some(msg) = body.get("message") {
        if msg.get("type").and_then(Value::as_str) != Some("tool-calls") {
            return Err(ApiError::bad_request(
                "a Vapi server message must be of type `tool-calls` to reach an action",
            ));
        }
        let list = msg
            .get("toolCallList")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("`message.toolCallList` must be a non-empty array")
            })?;
        let mut calls = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let id = item.get("id").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("`message.toolCallList[{i}].id` is missing"))
            })?;
            let name = item
                .get("name")
                .or_else(|| item.pointer("/function/name"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let raw = item
                .get("parameters")
                .or_else(|| item.pointer("/function/arguments"))
                .or_else(|| item.get("arguments"));
            // OpenAI-style tool calls carry their arguments as a JSON string.
            let parsed = match raw {
                Some(Value::String(s)) => Some(serde_json::from_str::<Value>(s).map_err(|e| {
                    ApiError::bad_request(format!(
                        "`message.toolCallList[{i}]` arguments are not JSON: {e}"
                    ))
                })?),
                other => other.cloned(),
            };
            let args = object_or_empty(
                parsed.as_ref(),
                &format!("message.toolCallList[{i}] arguments"),
            )?;
            calls.push(ToolCall {
                id: id.to_owned(),
                name,
                args,
            });
        }
        let call = json!({
            "id": text(msg, "/call/id"),
            "from": text(msg, "/customer/number"),
            "to": text(msg, "/phoneNumber/number"),
            "provider_call_id": text(msg, "/call/id"),
        });
        return Ok(Shape::Vapi { call, calls });
    }
    if body.get("name").is_some() && body.pointer("/call/call_id").is_some() {
        let call = json!({
            "id": text(body, "/call/call_id"),
            "from": text(body, "/call/from_number"),
            "to": text(body, "/call/to_number"),
            "provider_call_id": text(body, "/call/call_id"),
        });
        return Ok(Shape::Retell {
            call,
            args: object_or_empty(body.get("args"), "args")?,
        });
    }
    let call = object_or_empty(body.get("call"), "call")?;
    let call = json!({
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "from": call.get("from").cloned().unwrap_or(Value::Null),
        "to": call.get("to").cloned().unwrap_or(Value::Null),
        "provider_call_id": call.get("provider_call_id").cloned().unwrap_or(Value::Null),
    });
    Ok(Shape::Callgate {
        call,
        args: object_or_empty(body.get("args"), "args")?,
    })
}

fn find<'a>(app: &'a AppState, agent: &str, name: &str) -> Option<&'a Arc<MidCallAction>> {
    app.config.actions.get(name).filter(|a| a.allows(agent))
}

async fn run(
    app: &AppState,
    action: &Arc<MidCallAction>,
    agent: &str,
    call: &Value,
    args: &Value,
) -> Result<Answer, ApiError> {
    let ctx = actions::context(&action.name, agent, call, args);
    let upstream = app.outbound.upstream(action).ok_or_else(|| {
        ApiError::Internal(format!(
            "action `{}` names endpoint `{}`, which has no client",
            action.name, action.endpoint.name
        ))
    })?;
    actions::invoke(upstream, action.clone(), ctx)
        .await
        .map_err(|e| {
            ApiError::UpstreamUnavailable(format!(
                "action `{}` has no answer: {e}; configure a fallback to answer degraded instead",
                action.name
            ))
        })
}

/// The result with `"degraded": true` folded in (objects), for shapes that
/// have no envelope.
fn flagged(a: &Answer) -> Value {
    match (&a.result, a.degraded) {
        (Value::Object(m), true) => {
            let mut m: Map<String, Value> = m.clone();
            m.insert("degraded".into(), Value::Bool(true));
            Value::Object(m)
        }
        (v, _) => v.clone(),
    }
}

pub async fn invoke_action(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath((agent_id, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if !principal.scopes.has(&Scope::ActionsInvoke) {
        return Err(ApiError::missing_scope(
            vec![Scope::ActionsInvoke],
            "mid-call actions need the `actions:invoke` scope",
        ));
    }
    if !app.config.agents.contains_key(&agent_id) {
        return Err(ApiError::NotFound(format!("no agent `{agent_id}`")));
    }
    let action = find(&app, &agent_id, &name)
        .ok_or_else(|| ApiError::NotFound(format!("no action `{name}` for agent `{agent_id}`")))?
        .clone();
    if BodyKind::from_content_type(headers.get(header::CONTENT_TYPE))? != BodyKind::Json {
        return Err(ApiError::UnsupportedMediaType(
            "mid-call actions take application/json".into(),
        ));
    }
    let bytes =
        crate::http::extract::read_body(body, app.config.main.server.max_body_bytes).await?;
    let body = input::parse(BodyKind::Json, &bytes, Default::default())?;
    match shape(&body)? {
        Shape::Callgate { call, args } => {
            let a = run(&app, &action, &agent_id, &call, &args).await?;
            Ok(Json(json!({
                "action": action.name,
                "result": a.result,
                "degraded": a.degraded,
                "cached": a.cached,
            })))
        }
        Shape::Retell { call, args } => {
            let a = run(&app, &action, &agent_id, &call, &args).await?;
            Ok(Json(flagged(&a)))
        }
        Shape::Vapi { call, calls } => vapi(&app, &action, &agent_id, &call, &calls).await,
    }
}

/// A Vapi `tool-calls` message: each tool call runs (the one named, else
/// the action of the URL), all at once, and gets its own result or error
/// item. Only when none has an answer is it an error (a 504).
async fn vapi(
    app: &AppState,
    action: &Arc<MidCallAction>,
    agent_id: &str,
    call: &Value,
    calls: &[ToolCall],
) -> Result<Json<Value>, ApiError> {
    let runs = calls.iter().map(|tc| {
        let target = tc
            .name
            .as_deref()
            .and_then(|n| find(app, agent_id, n))
            .cloned()
            .unwrap_or_else(|| action.clone());
        async move { run(app, &target, agent_id, call, &tc.args).await }
    });
    let answers = futures_util::future::join_all(runs).await;
    if answers.iter().all(Result::is_err) {
        return Err(answers
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_else(|| {
                ApiError::UpstreamUnavailable("no tool call could be answered".into())
            }));
    }
    let results: Vec<Value> = calls
        .iter()
        .zip(answers)
        .map(|(tc, a)| match a {
            Ok(a) => {
                let result = match flagged(&a) {
                    Value::String(s) => s,
                    v => v.to_string(),
                };
                json!({"toolCallId": tc.id, "result": result})
            }
            Err(e) => json!({"toolCallId": tc.id, "error": e.to_string()}),
        })
        .collect();
    Ok(Json(json!({"results": results})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes_are_told_apart() {
        let vapi: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/samples/vapi-tool-calls.json"
        ))
        .unwrap();
        let Shape::Vapi { call, calls } = shape(&vapi).unwrap() else {
            panic!("vapi")
        };
        assert_eq!(call["from"], "+15550121234");
        assert_eq!(calls[0].id, "toolcall_abc123");
        assert_eq!(calls[0].args, json!({"phone_number": "+15550121234"}));
        let retell: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/samples/retell-custom-function.json"
        ))
        .unwrap();
        let Shape::Retell { call, args } = shape(&retell).unwrap() else {
            panic!("retell")
        };
        assert_eq!(call["id"], "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6");
        assert_eq!(call["to"], "+15550121234");
        assert_eq!(args["phone_number"], "+15550121234");
        let own = json!({"call": {"id": "call_1", "from": "+15550100001"}, "args": {"x": 1}});
        assert!(matches!(shape(&own).unwrap(), Shape::Callgate { .. }));
        let openai = json!({"message": {"type": "tool-calls", "toolCallList": [
            {"id": "t1", "function": {"name": "lookup", "arguments": "{\"a\": 2}"}}]}});
        let Shape::Vapi { calls, .. } = shape(&openai).unwrap() else {
            panic!()
        };
        assert_eq!(calls[0].args, json!({"a": 2}));
        assert_eq!(calls[0].name.as_deref(), Some("lookup"));
    }

    #[test]
    fn malformed_shapes_are_400() {
        for bad in [
            json!([1]),
            json!({"args": 3}),
            json!({"message": {"type": "end-of-call-report"}}),
            json!({"message": {"type": "tool-calls", "toolCallList": []}}),
            json!({"message": {"type": "tool-calls", "toolCallList": [{"name": "x"}]}}),
        ] {
            assert!(
                matches!(shape(&bad), Err(ApiError::BadRequest { .. })),
                "{bad}"
            );
        }
    }
}
