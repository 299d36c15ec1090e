//! Calls: statuses, the `CallProvider` interface and its two
//! implementations (`simulator`, `http`), callback signatures and event
//! parsing.
//!
//! Policy: a provider error says whether the call was certainly not placed
//! (`Rejected`: safe to retry) or may have been (`Ambiguous`: never redial
//! blindly; reconcile through `lookup`, else the call is `unknown` and the
//! job needs attention).

mod checks;
pub mod events;
mod http_provider;
pub mod signature;
pub mod simulator;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use checks::{check_providers, provider_cas};
pub use events::CallbackSpec;

use crate::catalog::Catalog;
use crate::config::ProviderConfig;
use crate::store::{CallRecord, CallStatus};

/// The provider's answer to a dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialed {
    pub provider_call_id: Option<String>,
    pub status: CallStatus,
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The call was certainly not placed (4xx, refused connection).
    #[error("the provider refused the call: {0}")]
    Rejected(String),
    /// The call may have been placed (timeout, 5xx, dropped connection).
    #[error("the provider's answer was lost: {0}")]
    Ambiguous(String),
}

/// What the provider knows about one of our calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found {
        provider_call_id: Option<String>,
        status: Option<CallStatus>,
    },
    /// The provider has no such call: it was never placed.
    NotFound,
    /// This provider cannot be asked (or not without its call id).
    Unsupported,
}

/// A voice platform (or the simulator).
#[async_trait]
pub trait CallProvider: Send + Sync {
    /// Places `call`; `ctx` is the template context (call, agent, job,
    /// callback_url). Our call id is the provider's idempotency/metadata key.
    async fn create_call(
        &self,
        call: &CallRecord,
        ctx: &serde_json::Value,
    ) -> Result<Dialed, ProviderError>;

    /// Asks the provider about `call` (reconciliation after a crash).
    async fn lookup(
        &self,
        call: &CallRecord,
        ctx: &serde_json::Value,
    ) -> Result<Lookup, ProviderError>;

    /// How its callbacks are verified and read.
    fn callbacks(&self) -> &CallbackSpec;
}

/// Every configured provider, with its dial rate.
pub struct Providers {
    map: HashMap<String, Arc<dyn CallProvider>>,
    dial_rates: HashMap<String, DialRate>,
    callback_base: String,
}

/// A provider's dial rate as the store's shared GCRA takes it: one dial
/// every `interval_ms`, up to `burst` at once. It is decided in the store
/// (`Store::take_rate_token`, key `dial:<provider>`) so that it holds across
/// every instance sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRate {
    pub key: String,
    pub interval_ms: i64,
    pub burst: u32,
}

impl Providers {
    /// Builds the providers. `callback_base` is where providers reach this
    /// gateway; `own_cert` is the certificate it serves (the simulator's
    /// callbacks trust it).
    pub fn build(
        config: &Catalog,
        callback_base: String,
        own_cert: Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        let mut map: HashMap<String, Arc<dyn CallProvider>> = HashMap::new();
        let mut dial_rates = HashMap::new();
        for (name, cfg) in &config.providers {
            let provider: Arc<dyn CallProvider> = match cfg {
                ProviderConfig::Simulator(sim) => Arc::new(simulator::Simulator::start(
                    name,
                    sim,
                    &config.data_dir,
                    &callback_base,
                    own_cert.as_deref(),
                )?),
                ProviderConfig::Http(http) => {
                    let cas = config.provider_cas.get(name).map(Vec::as_slice);
                    Arc::new(http_provider::HttpProvider::new(
                        http,
                        cas.unwrap_or_default(),
                    )?)
                }
            };
            if let Some(rate) = cfg.dial_rate() {
                // Whole milliseconds, at least 1 (rates above 1,000 dials a
                // second are not a voice provider's).
                let interval_ms = (rate.replenish_interval().as_millis() as i64).max(1);
                dial_rates.insert(
                    name.clone(),
                    DialRate {
                        key: format!("dial:{name}"),
                        interval_ms,
                        burst: rate.burst.max(1),
                    },
                );
            }
            map.insert(name.clone(), provider);
        }
        Ok(Self {
            map,
            dial_rates,
            callback_base,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn CallProvider>> {
        self.map.get(name)
    }

    /// The provider's dial rate, if it has one.
    pub fn dial_rate(&self, provider: &str) -> Option<&DialRate> {
        self.dial_rates.get(provider)
    }

    /// The status callback URL for one of our calls.
    pub fn callback_url(&self, call_id: &crate::ids::CallId) -> String {
        format!(
            "{}/v1/calls/{call_id}/events",
            self.callback_base.trim_end_matches('/')
        )
    }

    pub fn callback_base(&self) -> &str {
        &self.callback_base
    }
}

/// An HTTP client for outbound calls, with the process's ring provider,
/// trusting `extra_roots` beside the system's roots (a provider's
/// `ca_file`, or the simulator's own server certificate).
pub fn http_client(
    timeout: Duration,
    extra_roots: &[reqwest::Certificate],
) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
        .tls_certs_merge(extra_roots.iter().cloned())
        .build()?)
}
