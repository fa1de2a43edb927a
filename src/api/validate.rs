//! Checks a connection's credentials and non-secret config with its connector's own types
//! before `PUT /connections/{connector}` stores them: an unknown or bad config key is a 400
//! naming it (DESIGN 3.4: every connector accepts `base_url` and `rate_limit`).
//!
//! One arm per built-in connector; a new connector adds its line here.

use crate::error::{Error, Result};
use crate::model::ConnectorKind;
use crate::store::Credentials;

/// Validates `config` (a JSON object, or `null`) and `credentials` for `kind` with the
/// connector's config and credential types.
///
/// # Errors
/// [`Error::Config`] naming the bad key or the missing credential (never a secret value),
/// or saying that the connector is not compiled into this build.
pub fn validate_connection(
    kind: ConnectorKind,
    config: &serde_json::Value,
    credentials: &Credentials,
) -> Result<()> {
    if !(config.is_object() || config.is_null()) {
        return Err(Error::config("config must be a JSON object"));
    }
    #[allow(unused_variables)]
    let get = |k: &str| credentials.get(k);
    match kind {
        #[cfg(feature = "hubspot")]
        ConnectorKind::Hubspot => {
            use crate::connectors::hubspot::{HubSpotConfig as C, HubSpotCredentials as K};
            C::from_json(config).and(K::from_lookup(get)).map(drop)
        }
        #[cfg(feature = "gong")]
        ConnectorKind::Gong => {
            use crate::connectors::gong::{GongConfig as C, GongCredentials as K};
            C::from_json(config).and(K::from_lookup(get)).map(drop)
        }
        #[cfg(feature = "fireflies")]
        ConnectorKind::Fireflies => {
            use crate::connectors::fireflies::{FirefliesConfig as C, FirefliesCredentials as K};
            C::from_json(config).and(K::from_lookup(get)).map(drop)
        }
        #[cfg(feature = "salesforce")]
        ConnectorKind::Salesforce => {
            use crate::connectors::salesforce::{
                SalesforceConfig as C, SalesforceCredentials as K,
            };
            C::from_json(config).and(K::from_lookup(get)).map(drop)
        }
        #[cfg(feature = "monday")]
        ConnectorKind::Monday => {
            use crate::connectors::monday::{MondayConfig as C, MondayCredentials as K};
            C::from_json(config).and(K::from_lookup(get)).map(drop)
        }
        #[cfg(feature = "google-drive")]
        ConnectorKind::GoogleDrive => {
            use crate::connectors::gdrive::{GoogleDriveConfig as C, GoogleDriveCredentials as K};
            C::from_json(config).and(K::from_lookup(get)).map(drop)
        }
        #[allow(unreachable_patterns)]
        other => Err(Error::config(format!(
            "the {other} connector is not compiled into this server (cargo feature `{other}`)"
        ))),
    }
}

/// The `auth_method` stored for a set of credentials.
pub(crate) fn auth_method(credentials: &Credentials) -> &'static str {
    if credentials.get("refresh_token").is_some() {
        "oauth2"
    } else if credentials.get("access_token").is_some() {
        "access_token"
    } else if credentials.get("access_key").is_some() {
        "basic"
    } else {
        "api_key"
    }
}

#[cfg(all(test, feature = "hubspot"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unknown_keys_are_named_and_base_url_is_accepted() {
        let creds = Credentials::from_json(serde_json::json!({"access_token": "t"})).unwrap();
        let ok = serde_json::json!({"base_url": "http://127.0.0.1:1", "lookback_minutes": 5});
        validate_connection(ConnectorKind::Hubspot, &ok, &creds).unwrap();
        let err = validate_connection(
            ConnectorKind::Hubspot,
            &serde_json::json!({"colour": "red"}),
            &creds,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let none = Credentials::from_json(serde_json::json!({"nope": "x"})).unwrap();
        assert!(validate_connection(ConnectorKind::Hubspot, &ok, &none).is_err());
    }
}
