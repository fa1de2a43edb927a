//! The connector registry: one factory per connector kind, building a connector from its
//! `connections` row and opened credentials.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::connector::SyncCapable;
use crate::error::{Error, Result};
use crate::model::ConnectorKind;
use crate::store::{ConnectionRow, Credentials};

/// Builds a connector from its connection row and opened credentials.
pub type ConnectorFactory =
    Arc<dyn Fn(&ConnectionRow, Option<&Credentials>) -> Result<Box<dyn SyncCapable>> + Send + Sync>;

/// Turns `connections` rows into connector instances, one factory per connector kind.
///
/// [`ConnectorRegistry::builtin`] registers every connector whose feature is enabled; hosts
/// can [`register`](ConnectorRegistry::register) their own (or fakes, in tests).
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    factories: BTreeMap<ConnectorKind, ConnectorFactory>,
}

impl std::fmt::Debug for ConnectorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorRegistry")
            .field("connectors", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConnectorRegistry {
    /// A registry without connectors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the factory of a connector kind.
    pub fn register(
        mut self,
        kind: ConnectorKind,
        factory: impl Fn(&ConnectionRow, Option<&Credentials>) -> Result<Box<dyn SyncCapable>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.factories.insert(kind, Arc::new(factory));
        self
    }

    /// Every built-in connector whose feature is enabled, talking to the providers' real
    /// hosts; `base_urls` replaces a provider's origin (a simulator, a proxy).
    pub fn builtin(base_urls: &BTreeMap<ConnectorKind, String>) -> Self {
        #[allow(unused_mut)]
        let mut registry = Self::new();
        let _ = base_urls;
        #[cfg(feature = "hubspot")]
        {
            use crate::connectors::hubspot::{HubSpotConfig, HubSpotConnector, HubSpotCredentials};

            let base = base_urls
                .get(&ConnectorKind::Hubspot)
                .cloned()
                .unwrap_or_else(|| "https://api.hubapi.com".to_owned());
            registry = registry.register(ConnectorKind::Hubspot, move |row, creds| {
                let creds = creds
                    .ok_or_else(|| Error::config("the hubspot connection has no credentials"))?;
                let credentials = HubSpotCredentials::from_lookup(|k| creds.get(k))?;
                let config = HubSpotConfig::from_json(&row.config)?;
                Ok(Box::new(HubSpotConnector::new(&base, credentials, config)?))
            });
        }
        #[cfg(feature = "gong")]
        {
            use crate::connectors::gong::{GongConfig, GongConnector, GongCredentials};

            let base = base_urls
                .get(&ConnectorKind::Gong)
                .cloned()
                .unwrap_or_else(|| "https://api.gong.io".to_owned());
            registry = registry.register(ConnectorKind::Gong, move |row, creds| {
                let creds =
                    creds.ok_or_else(|| Error::config("the gong connection has no credentials"))?;
                let credentials = GongCredentials::from_lookup(|k| creds.get(k))?;
                let config = GongConfig::from_json(&row.config)?;
                Ok(Box::new(GongConnector::new(&base, credentials, config)?))
            });
        }
        registry
    }

    /// Builds the connector of a connection.
    pub fn build(
        &self,
        row: &ConnectionRow,
        credentials: Option<&Credentials>,
    ) -> Result<Box<dyn SyncCapable>> {
        let factory = self.factories.get(&row.connector).ok_or_else(|| {
            Error::config(format!(
                "no connector registered for {} (is its cargo feature enabled?)",
                row.connector
            ))
        })?;
        factory(row, credentials)
    }
}
