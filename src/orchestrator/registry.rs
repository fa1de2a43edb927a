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
    /// hosts; `base_urls` replaces a provider's origin (a simulator, a proxy), and a
    /// connection whose config has a `base_url` uses that origin (DESIGN 3.4: every
    /// connector accepts one; Gong gives each customer its own host).
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
                let base = config.base_url.clone().unwrap_or_else(|| base.clone());
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
                let base = config.base_url.clone().unwrap_or_else(|| base.clone());
                Ok(Box::new(GongConnector::new(&base, credentials, config)?))
            });
        }
        #[cfg(feature = "fireflies")]
        {
            use crate::connectors::fireflies::{
                FirefliesConfig, FirefliesConnector, FirefliesCredentials,
            };

            let base = base_urls
                .get(&ConnectorKind::Fireflies)
                .cloned()
                .unwrap_or_else(|| "https://api.fireflies.ai".to_owned());
            registry = registry.register(ConnectorKind::Fireflies, move |row, creds| {
                let creds = creds
                    .ok_or_else(|| Error::config("the fireflies connection has no credentials"))?;
                let credentials = FirefliesCredentials::from_lookup(|k| creds.get(k))?;
                let config = FirefliesConfig::from_json(&row.config)?;
                let base = config.base_url.clone().unwrap_or_else(|| base.clone());
                Ok(Box::new(FirefliesConnector::new(
                    &base,
                    credentials,
                    config,
                )?))
            });
        }
        #[cfg(feature = "salesforce")]
        {
            use crate::connectors::salesforce::{
                SalesforceConfig, SalesforceConnector, SalesforceCredentials,
            };

            let base = base_urls
                .get(&ConnectorKind::Salesforce)
                .cloned()
                .unwrap_or_else(|| "https://login.salesforce.com".to_owned());
            registry = registry.register(ConnectorKind::Salesforce, move |row, creds| {
                let creds = creds
                    .ok_or_else(|| Error::config("the salesforce connection has no credentials"))?;
                let credentials = SalesforceCredentials::from_lookup(|k| creds.get(k))?;
                let config = SalesforceConfig::from_json(&row.config)?;
                let base = config.base_url.clone().unwrap_or_else(|| base.clone());
                Ok(Box::new(SalesforceConnector::new(
                    &base,
                    credentials,
                    config,
                )?))
            });
        }
        #[cfg(feature = "google-drive")]
        {
            use crate::connectors::gdrive::{
                GoogleDriveConfig, GoogleDriveConnector, GoogleDriveCredentials, PUBLIC_ORIGIN,
            };

            let base = base_urls
                .get(&ConnectorKind::GoogleDrive)
                .cloned()
                .unwrap_or_else(|| PUBLIC_ORIGIN.to_owned());
            registry = registry.register(ConnectorKind::GoogleDrive, move |row, creds| {
                let creds = creds.ok_or_else(|| {
                    Error::config("the google-drive connection has no credentials")
                })?;
                let credentials = GoogleDriveCredentials::from_lookup(|k| creds.get(k))?;
                let config = GoogleDriveConfig::from_json(&row.config)?;
                let base = config.base_url.clone().unwrap_or_else(|| base.clone());
                Ok(Box::new(GoogleDriveConnector::new(
                    &base,
                    credentials,
                    config,
                )?))
            });
        }
        #[cfg(feature = "monday")]
        {
            use crate::connectors::monday::{MondayConfig, MondayConnector, MondayCredentials};

            let base = base_urls
                .get(&ConnectorKind::Monday)
                .cloned()
                .unwrap_or_else(|| "https://api.monday.com".to_owned());
            registry = registry.register(ConnectorKind::Monday, move |row, creds| {
                let creds = creds
                    .ok_or_else(|| Error::config("the monday connection has no credentials"))?;
                let credentials = MondayCredentials::from_lookup(|k| creds.get(k))?;
                let config = MondayConfig::from_json(&row.config)?;
                let base = config.base_url.clone().unwrap_or_else(|| base.clone());
                Ok(Box::new(MondayConnector::new(&base, credentials, config)?))
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

#[cfg(all(test, feature = "hubspot", feature = "simulator"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::connector::{MemorySink, SyncContext};
    use crate::model::SyncMode;
    use crate::simulator::{HubSpotSim, HubSpotSimConfig};
    use crate::store::ConnectionStatus;
    use chrono::Utc;
    use uuid::Uuid;

    fn row(config: serde_json::Value) -> ConnectionRow {
        ConnectionRow {
            id: Uuid::new_v4(),
            workspace_id: Uuid::new_v4(),
            connector: ConnectorKind::Hubspot,
            auth_method: "access_token".into(),
            credentials: None,
            config,
            status: ConnectionStatus::Pending,
            last_sync_at: None,
            sync_cursor: None,
            error_message: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    /// A connection's `base_url` wins over the registry's origin (DESIGN 3.4), so a worker
    /// syncs a connection where its config says, and a bad one is a config error.
    #[tokio::test]
    async fn a_connections_base_url_is_its_origin() {
        let sim = HubSpotSim::start(HubSpotSimConfig {
            companies: 3,
            contacts: 4,
            deals: 2,
            ..Default::default()
        })
        .await
        .unwrap();
        let creds = Credentials::from_json(serde_json::json!({
            "access_token": "sim-hubspot-token"
        }))
        .unwrap();
        // The registry's own origin is unreachable: only the connection's can serve.
        let registry = ConnectorRegistry::builtin(&BTreeMap::from([(
            ConnectorKind::Hubspot,
            "http://127.0.0.1:9".to_owned(),
        )]));
        let conn = row(serde_json::json!({ "base_url": format!("{}/", sim.base_url()) }));
        let connector = registry.build(&conn, Some(&creds)).unwrap();
        let mut sink = MemorySink::new();
        let ctx = SyncContext::new(conn.workspace_id, SyncMode::Initial);
        connector.sync(&ctx, &mut sink).await.unwrap();
        let stored = sink.records().count();
        assert!(stored >= 9, "{stored} records");

        for bad in ["ftp://example.com", "not a url", "https://"] {
            let Err(err) =
                registry.build(&row(serde_json::json!({ "base_url": bad })), Some(&creds))
            else {
                panic!("{bad}: accepted");
            };
            assert!(
                matches!(&err, Error::Config(m) if m.contains("base_url")),
                "{bad}: {err}"
            );
        }
    }
}
