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
    /// Where the delivery engine and the runner raise alerts.
    pub alerts: super::AlertSink,
    /// The alerts raised, for the alert task (`take_alert_queue`).
    alert_queue: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<super::Alert>>>,
    /// The endpoints' last health-check results (this instance's).
    pub health: Arc<super::health::HealthBoard>,
}

impl Outbound {
    pub fn build(config: &Catalog, clock: Arc<dyn crate::clock::Clock>) -> anyhow::Result<Self> {
        let mut clients = BTreeMap::new();
        for (name, e) in &config.endpoints {
            clients.insert(name.clone(), Arc::new(EndpointClient::build(e.clone())?));
        }
        let (alerts, queue) = super::AlertSink::for_config(config);
        Ok(Self {
            clients,
            clock,
            wake: Arc::new(Notify::new()),
            caches: Caches::build(config),
            alerts,
            alert_queue: std::sync::Mutex::new(queue),
            health: Arc::default(),
        })
    }

    /// The raised alerts' queue, for the one alert task (`None` when alerts
    /// are off, or taken already).
    pub fn take_alert_queue(&self) -> Option<tokio::sync::mpsc::Receiver<super::Alert>> {
        self.alert_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
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
