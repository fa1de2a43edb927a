//! Credentials: static headers ([`StaticAuth`]) and OAuth refresh tokens ([`OAuthTokens`]),
//! applied by [`AuthLayer`].
//!
//! Secrets are [`secrecy::SecretString`]s; header values built from them are marked
//! sensitive; no `Debug`, log line or error of this module contains one.

mod future;
mod layer;
mod oauth;
mod service;
mod static_auth;

pub use future::AuthFuture;
pub use layer::{Auth, AuthLayer};
pub use oauth::{
    ClientAuth, HttpTokenEndpoint, OAuthTokens, OAuthTokensBuilder, RotationCallback,
    TokenEndpoint, TokenResponse,
};
pub use service::Authenticate;
pub use static_auth::StaticAuth;
