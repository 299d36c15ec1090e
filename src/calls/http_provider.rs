//! The generic HTTP adapter for real voice platforms: a templated
//! create-call request, the provider's call id read by JSON pointer, an
//! optional lookup request, and callbacks read per `CallbackSpec`.
//!
//! Policy on answers: 2xx is placed; 408, 429 and other 4xx mean not placed
//! (`Rejected`, retried with backoff); a refused connection is not placed;
//! a timeout, a 5xx or a connection lost after sending may have placed the
//! call (`Ambiguous`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;

use super::{CallProvider, CallbackSpec, Dialed, Lookup, ProviderError};
use crate::config::{BodyFormat, HttpProviderConfig, HttpRequestConfig};
use crate::store::CallRecord;
use crate::store::CallStatus;
use crate::template::{JsonTemplate, compile_text, render_text};

struct RequestTemplate {
    method: Method,
    url: JsonTemplate,
    headers: Vec<(String, JsonTemplate)>,
    body: Option<JsonTemplate>,
    format: BodyFormat,
}

impl RequestTemplate {
    fn compile(cfg: &HttpRequestConfig) -> anyhow::Result<Self> {
        let err = |e: String| anyhow::anyhow!(e);
        Ok(Self {
            method: Method::from_bytes(cfg.method.as_bytes())?,
            url: compile_text(&cfg.url).map_err(err)?,
            headers: cfg
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), compile_text(v).map_err(err)?)))
                .collect::<anyhow::Result<_>>()?,
            body: cfg
                .body
                .as_ref()
                .map(JsonTemplate::from_toml)
                .transpose()
                .map_err(err)?,
            format: cfg.body_format,
        })
    }

    fn build(
        &self,
        client: &reqwest::Client,
        ctx: &Value,
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = render_text(&self.url, ctx)?;
        let mut req = client.request(self.method.clone(), url);
        for (name, value) in &self.headers {
            req = req.header(name, render_text(value, ctx)?);
        }
        if let Some(body) = &self.body {
            let body = body.render(ctx)?;
            req = match self.format {
                BodyFormat::Json => req.json(&body),
                BodyFormat::Form => req
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form_encode(&body)),
            };
        }
        Ok(req)
    }
}

/// Flat form encoding; arrays repeat their key (Twilio's
/// `StatusCallbackEvent=a&StatusCallbackEvent=b`).
fn form_encode(body: &Value) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    if let Value::Object(map) = body {
        for (k, v) in map {
            match v {
                Value::Array(items) => {
                    for item in items {
                        out.append_pair(k, &scalar(item));
                    }
                }
                Value::Null => {}
                other => {
                    out.append_pair(k, &scalar(other));
                }
            }
        }
    }
    out.finish()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) struct HttpProvider {
    client: reqwest::Client,
    create: RequestTemplate,
    call_id: String,
    lookup: Option<(RequestTemplate, Vec<String>)>,
    lookup_map: BTreeMap<String, CallStatus>,
    callbacks: CallbackSpec,
}

impl HttpProvider {
    /// `ca_certificates`: the provider's `ca_file`, trusted beside the
    /// system's roots.
    pub(super) fn new(
        cfg: &HttpProviderConfig,
        ca_certificates: &[reqwest::Certificate],
    ) -> anyhow::Result<Self> {
        let callbacks =
            CallbackSpec::from_config(&cfg.callbacks).map_err(|e| anyhow::anyhow!(e))?;
        Ok(Self {
            client: super::http_client(cfg.timeout, ca_certificates)?,
            create: RequestTemplate::compile(&cfg.create_call)?,
            call_id: cfg.call_id.clone(),
            lookup: cfg
                .lookup
                .as_ref()
                .map(|l| {
                    Ok::<_, anyhow::Error>((
                        RequestTemplate::compile(&l.request)?,
                        l.status.to_vec(),
                    ))
                })
                .transpose()?,
            lookup_map: callbacks.status_map.clone(),
            callbacks,
        })
    }
}

fn classify(e: reqwest::Error) -> ProviderError {
    // reqwest's own message stops at "error sending request"; the causes
    // say why (refused, DNS, an untrusted certificate: see `ca_file`).
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    // Never sent (no connection, unbuildable): certainly not placed. Anything
    // after the request may have left is ambiguous.
    if e.is_connect() || e.is_builder() {
        ProviderError::Rejected(msg)
    } else {
        ProviderError::Ambiguous(msg)
    }
}

#[async_trait]
impl CallProvider for HttpProvider {
    async fn create_call(&self, _call: &CallRecord, ctx: &Value) -> Result<Dialed, ProviderError> {
        let req = self
            .create
            .build(&self.client, ctx)
            .map_err(ProviderError::Rejected)?;
        let response = req.send().await.map_err(classify)?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ProviderError::Ambiguous(e.to_string()))?;
        if status.is_server_error() {
            return Err(ProviderError::Ambiguous(format!("HTTP {status}")));
        }
        if !status.is_success() {
            let excerpt: String = text.chars().take(300).collect();
            return Err(ProviderError::Rejected(format!("HTTP {status}: {excerpt}")));
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let id = body.pointer(&self.call_id).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        if id.is_none() {
            // Placed (2xx), but without the id reconciliation needs.
            tracing::warn!(pointer = %self.call_id, "provider answered 2xx without a call id");
        }
        Ok(Dialed {
            provider_call_id: id,
            status: CallStatus::Dialing,
        })
    }

    async fn lookup(&self, call: &CallRecord, ctx: &Value) -> Result<Lookup, ProviderError> {
        let Some((template, status_pointers)) = &self.lookup else {
            return Ok(Lookup::Unsupported);
        };
        if call.provider_call_id.is_none() {
            // Most APIs can only be asked by their own id.
            return Ok(Lookup::Unsupported);
        }
        let req = template
            .build(&self.client, ctx)
            .map_err(ProviderError::Rejected)?;
        let response = req.send().await.map_err(classify)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Lookup::NotFound);
        }
        if !response.status().is_success() {
            return Err(ProviderError::Ambiguous(format!(
                "lookup: HTTP {}",
                response.status()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| ProviderError::Ambiguous(e.to_string()))?;
        let status = status_pointers
            .iter()
            .find_map(|p| body.pointer(p).and_then(Value::as_str))
            .and_then(|s| self.lookup_map.get(s).copied());
        Ok(Lookup::Found {
            provider_call_id: call.provider_call_id.clone(),
            status,
        })
    }

    fn callbacks(&self) -> &CallbackSpec {
        &self.callbacks
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn form_bodies_are_flat_and_repeat_array_keys() {
        let body = json!({"To": "+15550121234", "StatusCallbackEvent": ["initiated", "completed"], "Timeout": 30, "Skip": null});
        assert_eq!(
            form_encode(&body),
            "StatusCallbackEvent=initiated&StatusCallbackEvent=completed&Timeout=30&To=%2B15550121234"
        );
    }
}
