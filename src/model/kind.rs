//! Names shared by the whole crate: connectors, their categories, sync modes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One of the providers `pandora_sync` syncs from.
///
/// `Display` and `FromStr` use exactly the names in the database's `source` and
/// `connector_name` columns: `hubspot`, `gong`, `fireflies`, `salesforce`, `monday`,
/// `google-drive`.
///
/// ```
/// use pandora_sync::ConnectorKind;
/// let kind: ConnectorKind = "google-drive".parse()?;
/// assert_eq!(kind, ConnectorKind::GoogleDrive);
/// assert_eq!(kind.to_string(), "google-drive");
/// assert!("pipedrive".parse::<ConnectorKind>().unwrap_err().to_string().contains("hubspot"));
/// # Ok::<(), pandora_sync::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectorKind {
    /// HubSpot CRM.
    Hubspot,
    /// Gong conversation intelligence.
    Gong,
    /// Fireflies.ai meeting notes.
    Fireflies,
    /// Salesforce CRM.
    Salesforce,
    /// monday.com boards.
    Monday,
    /// Google Drive documents.
    GoogleDrive,
}

impl ConnectorKind {
    /// Every connector, in a fixed order.
    pub const ALL: [ConnectorKind; 6] = [
        ConnectorKind::Hubspot,
        ConnectorKind::Gong,
        ConnectorKind::Fireflies,
        ConnectorKind::Salesforce,
        ConnectorKind::Monday,
        ConnectorKind::GoogleDrive,
    ];

    /// The connector's name as stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Hubspot => "hubspot",
            ConnectorKind::Gong => "gong",
            ConnectorKind::Fireflies => "fireflies",
            ConnectorKind::Salesforce => "salesforce",
            ConnectorKind::Monday => "monday",
            ConnectorKind::GoogleDrive => "google-drive",
        }
    }

    /// What kind of data the connector brings.
    pub const fn category(self) -> ConnectorCategory {
        match self {
            ConnectorKind::Hubspot | ConnectorKind::Salesforce => ConnectorCategory::Crm,
            ConnectorKind::Gong | ConnectorKind::Fireflies => ConnectorCategory::Conversations,
            ConnectorKind::Monday => ConnectorCategory::Tasks,
            ConnectorKind::GoogleDrive => ConnectorCategory::Documents,
        }
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConnectorKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnectorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = ConnectorKind::ALL.iter().map(|k| k.as_str()).collect();
                Error::config(format!(
                    "unknown connector {s:?}; valid connectors are: {}",
                    valid.join(", ")
                ))
            })
    }
}

/// The category of a connector, which decides the tables it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorCategory {
    /// Accounts, contacts, deals (HubSpot, Salesforce).
    Crm,
    /// Calls and meetings (Gong, Fireflies).
    Conversations,
    /// Task boards (monday.com).
    Tasks,
    /// Documents (Google Drive).
    Documents,
}

/// How a sync reads the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Everything from the beginning (or the connector's initial window).
    Initial,
    /// Only what changed since the stored checkpoint's watermark.
    Incremental,
    /// History older than the initial window, in checkpointed slices.
    Backfill,
}

impl SyncMode {
    /// The mode's name: `initial`, `incremental` or `backfill`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SyncMode::Initial => "initial",
            SyncMode::Incremental => "incremental",
            SyncMode::Backfill => "backfill",
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SyncMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "initial" => Ok(SyncMode::Initial),
            "incremental" => Ok(SyncMode::Incremental),
            "backfill" => Ok(SyncMode::Backfill),
            other => Err(Error::config(format!(
                "unknown sync mode {other:?}; valid modes are: initial, incremental, backfill"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_names_round_trip() {
        for k in ConnectorKind::ALL {
            assert_eq!(k.to_string().parse::<ConnectorKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<ConnectorKind>(&json).unwrap(), k);
        }
        assert_eq!(
            ConnectorKind::ALL.map(ConnectorKind::as_str),
            [
                "hubspot",
                "gong",
                "fireflies",
                "salesforce",
                "monday",
                "google-drive"
            ]
        );
    }

    #[test]
    fn unknown_connector_lists_valid_names() {
        let msg = "HubSpot".parse::<ConnectorKind>().unwrap_err().to_string();
        assert!(msg.contains("\"HubSpot\""), "{msg}");
        for k in ConnectorKind::ALL {
            assert!(msg.contains(k.as_str()), "{msg}");
        }
    }

    #[test]
    fn categories() {
        assert_eq!(ConnectorKind::Hubspot.category(), ConnectorCategory::Crm);
        assert_eq!(ConnectorKind::Salesforce.category(), ConnectorCategory::Crm);
        assert_eq!(
            ConnectorKind::Gong.category(),
            ConnectorCategory::Conversations
        );
        assert_eq!(
            ConnectorKind::Fireflies.category(),
            ConnectorCategory::Conversations
        );
        assert_eq!(ConnectorKind::Monday.category(), ConnectorCategory::Tasks);
        assert_eq!(
            ConnectorKind::GoogleDrive.category(),
            ConnectorCategory::Documents
        );
    }

    #[test]
    fn sync_mode_names() {
        for m in [SyncMode::Initial, SyncMode::Incremental, SyncMode::Backfill] {
            assert_eq!(m.to_string().parse::<SyncMode>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        let err = "auto".parse::<SyncMode>().unwrap_err().to_string();
        assert!(err.contains("initial, incremental, backfill"), "{err}");
    }
}
