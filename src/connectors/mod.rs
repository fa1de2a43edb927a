//! The provider connectors, one folder each, all built the same way.
//!
//! Each connector is a folder `src/connectors/<name>/` with `mod.rs` (the public connector,
//! its credentials and config, the [`SyncCapable`](crate::SyncCapable) impl), `client.rs`
//! (requests through the HTTP presets), `sync.rs` (passes, pages and checkpoints),
//! `transform.rs` (provider JSON → records), `types.rs` (wire shapes) and `fuzz.rs`
//! (property tests). What every connector shares lives beside the folders: the page loop's
//! capture and write (`page`), the JSON request plumbing (`rest`), the locally counted
//! daily quota (`quota`) and `config_from_json`.
//!
//! The connector guide, `docs/connectors.md` in the repository, describes the shape in
//! full: paging with checkpoints and the pass window, per-record error capture, rate limits
//! and quotas, deletes, reconciliation totals, credentials, simulators, and the test
//! checklist a new connector must pass. It is included below.
//!
#![doc = include_str!("../../docs/connectors.md")]

#[cfg(feature = "fireflies")]
#[cfg_attr(docsrs, doc(cfg(feature = "fireflies")))]
pub mod fireflies;
#[cfg(feature = "google-drive")]
#[cfg_attr(docsrs, doc(cfg(feature = "google-drive")))]
pub mod gdrive;
#[cfg(feature = "gong")]
#[cfg_attr(docsrs, doc(cfg(feature = "gong")))]
pub mod gong;
#[cfg(feature = "hubspot")]
#[cfg_attr(docsrs, doc(cfg(feature = "hubspot")))]
pub mod hubspot;
#[cfg(feature = "monday")]
#[cfg_attr(docsrs, doc(cfg(feature = "monday")))]
pub mod monday;
#[cfg(feature = "salesforce")]
#[cfg_attr(docsrs, doc(cfg(feature = "salesforce")))]
pub mod salesforce;

#[cfg(any(
    feature = "hubspot",
    feature = "gong",
    feature = "fireflies",
    feature = "salesforce",
    feature = "monday",
    feature = "google-drive"
))]
pub(crate) mod page;
#[cfg(feature = "gong")]
pub(crate) mod quota;
#[cfg(any(
    feature = "hubspot",
    feature = "gong",
    feature = "fireflies",
    feature = "salesforce",
    feature = "monday",
    feature = "google-drive"
))]
pub(crate) mod rest;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Reads a connector's non-secret config from JSON: `null` gives the defaults, the
/// connection-level `internal_domains` key is left out, anything else must deserialize (unknown keys are an error when the config type says
/// `deny_unknown_fields`); a failure is an [`Error::Config`] naming the provider.
#[cfg_attr(
    not(any(
        feature = "hubspot",
        feature = "gong",
        feature = "fireflies",
        feature = "salesforce",
        feature = "monday",
        feature = "google-drive"
    )),
    allow(dead_code)
)]
pub(crate) fn config_from_json<T: DeserializeOwned + Default>(
    value: &serde_json::Value,
    provider: &str,
) -> Result<T> {
    if value.is_null() {
        return Ok(T::default());
    }
    let mut value = value.clone();
    // Keys of the connection rather than of its connector (read by the hooks).
    if let Some(map) = value.as_object_mut() {
        map.remove(crate::connector::INTERNAL_DOMAINS_CONFIG_KEY);
    }
    serde_json::from_value(value)
        .map_err(|e| Error::config(format!("invalid {provider} config: {e}")))
}

/// Checks a config's `base_url` (DESIGN 3.4: every connector accepts one): an `http(s)`
/// origin, trailing slashes dropped.
#[cfg_attr(
    not(any(
        feature = "hubspot",
        feature = "gong",
        feature = "fireflies",
        feature = "salesforce",
        feature = "monday",
        feature = "google-drive"
    )),
    allow(dead_code)
)]
pub(crate) fn check_base_url(base_url: &mut Option<String>, provider: &str) -> Result<()> {
    if let Some(url) = base_url {
        let trimmed = url.trim().trim_end_matches('/');
        let valid = reqwest::Url::parse(trimmed)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if !valid {
            return Err(Error::config(format!(
                "invalid {provider} config: base_url {url:?} is not an http(s) origin"
            )));
        }
        *url = trimmed.to_owned();
    }
    Ok(())
}
