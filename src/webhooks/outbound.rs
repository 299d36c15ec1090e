//! Everything outbound in one place: the clients by endpoint name, the
//! delivery wake-up, and the mid-call action caches.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;

use super::actions::{Caches, Upstream};
use super::client::EndpointClient;
use crate::catalog::Catalog;
use crate::outbound::MidCallAction;

/// Everything outbound: clients by endpoint name, the delivery wake-up, the
/// mid-call action caches.
pub struct Outbound {
    pub clients: BTreeMap<String, Arc<EndpointClient>>,
    /// The application clock (webhook ids and timestamps of action requests).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// Poked when a delivery is created or replayed.
    pub wake: Arc<Notify>,
    pub caches: Caches,
    /// The endpoints' last health-check results (this instance's).
    pub health: Arc<super::health::HealthBoard>,
}

impl Outbound {
    pub fn build(config: &Catalog, clock: Arc<dyn crate::clock::Clock>) -> anyhow::Result<Self> {
        let mut clients = BTreeMap::new();
        for (name, e) in &config.endpoints {
            clients.insert(name.clone(), Arc::new(EndpointClient::build(e.clone())?));
        }
        Ok(Self {
            clients,
            clock,
            wake: Arc::new(Notify::new()),
            caches: Caches::build(config),
            health: Arc::default(),
        })
    }

    pub fn client(&self, endpoint: &str) -> Option<&Arc<EndpointClient>> {
        self.clients.get(endpoint)
    }
}

impl Outbound {
    /// What `action`'s requests go through; `None` when its endpoint has no
    /// client (it is not configured any more).
    pub fn upstream(&self, action: &MidCallAction) -> Option<Upstream> {
        Some(Upstream {
            client: self.client(&action.endpoint.name)?.clone(),
            cache: self.caches.get(&action.name).cloned(),
            clock: self.clock.clone(),
        })
    }
}
