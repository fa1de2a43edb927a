//! Who may see which workspace: the host's [`Authorizer`], and a ready bearer-token one.

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;
use axum::http::request::Parts;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::ApiError;
use crate::error::{Error, Result};

/// Decides whether a request may touch a workspace; checked before any handler does.
///
/// Answer [`ApiError::unauthorized`] (401) for a request that is not authenticated, and
/// [`ApiError::workspace_not_found`] (404) for a workspace the caller may not see, exactly
/// as for one that does not exist.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok(())` when the request may act on `workspace`.
    async fn authorize(&self, parts: &Parts, workspace: Uuid) -> std::result::Result<(), ApiError>;
}

/// Which workspaces a token sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every workspace (`"*"`).
    All,
    /// Only these.
    Only(BTreeSet<Uuid>),
}

impl Access {
    /// Whether `workspace` is visible.
    pub fn allows(&self, workspace: Uuid) -> bool {
        match self {
            Access::All => true,
            Access::Only(set) => set.contains(&workspace),
        }
    }
}

struct TokenEntry {
    /// SHA-256 of the token: equal lengths for the constant-time comparison, and the token
    /// itself is not kept.
    digest: [u8; 32],
    access: Access,
}

/// Bearer tokens mapped to the workspaces they may see (`Authorization: Bearer <token>`).
///
/// Every presented token is compared with every known one in constant time (their
/// SHA-256 digests, so lengths do not leak either). No or an unknown token is a 401; a
/// known token and a workspace it may not see is a 404.
#[derive(Default)]
pub struct BearerTokens {
    tokens: Vec<TokenEntry>,
}

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokens")
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl BearerTokens {
    /// No tokens (every request is a 401).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token (an empty token is ignored: it could never be presented).
    pub fn allow(mut self, token: &SecretString, access: Access) -> Self {
        if !token.expose_secret().is_empty() {
            self.tokens.push(TokenEntry {
                digest: digest(token.expose_secret()),
                access,
            });
        }
        self
    }

    /// Reads `{"<token>": ["<uuid>", …] | "*"}`.
    ///
    /// # Errors
    /// [`Error::Config`] for another shape or a value that is not a UUID (the message
    /// never contains a token).
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| {
            Error::config("tokens: expected an object {\"<token>\": [ids] | \"*\"}")
        })?;
        let mut out = BearerTokens::new();
        for (token, access) in map {
            let access = match access {
                serde_json::Value::String(s) if s == "*" => Access::All,
                serde_json::Value::Array(ids) => Access::Only(
                    ids.iter()
                        .map(|id| {
                            id.as_str()
                                .and_then(|s| Uuid::parse_str(s).ok())
                                .ok_or_else(|| {
                                    Error::config(format!("tokens: {id} is not a workspace id"))
                                })
                        })
                        .collect::<Result<_>>()?,
                ),
                _ => {
                    return Err(Error::config(
                        "tokens: each token maps to a list of workspace ids or \"*\"",
                    ));
                }
            };
            out = out.allow(&SecretString::from(token.clone()), access);
        }
        Ok(out)
    }

    /// The access of a presented token, `None` when it is unknown.
    pub fn access(&self, token: &str) -> Option<&Access> {
        let presented = digest(token);
        let mut found = None;
        // No early exit: every entry is compared.
        for entry in &self.tokens {
            if bool::from(entry.digest.ct_eq(&presented)) && found.is_none() {
                found = Some(&entry.access);
            }
        }
        found
    }

    /// The access of the request's bearer token, `None` when it has none or an unknown one.
    pub fn access_of(&self, parts: &Parts) -> Option<&Access> {
        bearer_token(parts).and_then(|t| self.access(t))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[async_trait]
impl Authorizer for BearerTokens {
    async fn authorize(&self, parts: &Parts, workspace: Uuid) -> std::result::Result<(), ApiError> {
        match self.access_of(parts) {
            None => Err(ApiError::unauthorized(
                "a valid bearer token is required (Authorization: Bearer <token>)",
            )),
            Some(access) if access.allows(workspace) => Ok(()),
            Some(_) => Err(ApiError::workspace_not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = axum::http::Request::builder().uri("/x");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn tokens_grant_their_workspaces_only() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let tokens = BearerTokens::from_json(&serde_json::json!({
            "t-one": [a.to_string()],
            "t-admin": "*",
        }))
        .unwrap();
        assert!(
            tokens
                .authorize(&parts(Some("Bearer t-one")), a)
                .await
                .is_ok()
        );
        let e = tokens
            .authorize(&parts(Some("Bearer t-one")), b)
            .await
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 404);
        assert!(
            tokens
                .authorize(&parts(Some("bearer t-admin")), b)
                .await
                .is_ok()
        );
        for bad in [
            None,
            Some("Bearer t-on"),
            Some("Basic t-one"),
            Some("Bearer "),
        ] {
            let e = tokens.authorize(&parts(bad), a).await.unwrap_err();
            assert_eq!(e.status().as_u16(), 401, "{bad:?}");
        }
        assert!(format!("{tokens:?}").contains("tokens: 2"));
        assert!(!format!("{tokens:?}").contains("t-one"));
        let err = BearerTokens::from_json(&serde_json::json!({"secret-tok": ["nope"]}))
            .err()
            .unwrap();
        assert!(!err.to_string().contains("secret-tok"));
    }
}
