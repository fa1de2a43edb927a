//! One folder per provider: `mod` (the connector and its config), `client` (requests through
//! the HTTP presets), `sync` (passes and checkpoints), `transform` (provider JSON → records),
//! `types` (wire shapes).

#[cfg(feature = "gong")]
pub mod gong;
#[cfg(feature = "hubspot")]
pub mod hubspot;
