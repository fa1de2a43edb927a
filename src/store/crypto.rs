//! Credentials at rest: XChaCha20-Poly1305 under a host-supplied 32-byte key, with key ids
//! so keys can rotate.
//!
//! The stored form of a connection's credentials is
//! `v1:<key id>:<base64(24-byte nonce || ciphertext || 16-byte tag)>`. The associated data
//! binds the ciphertext to its row, `(workspace_id, connector_name)`, and to the key id, so
//! a value copied into another workspace's row (or relabelled with another key id) fails to
//! decrypt instead of handing one tenant's tokens to another.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::ConnectorKind;

/// Format version prefix of sealed credentials.
const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const MAX_KEY_ID_LEN: usize = 64;

/// A connector's credentials in memory: a JSON object of secrets (`access_token`,
/// `client_secret`, `refresh_token`, ...), held in a [`SecretString`] that is zeroed on drop.
///
/// `Debug` prints `Credentials([REDACTED])`; there is no `Display` and no `Serialize`.
///
/// ```
/// use pandora_sync::Credentials;
/// use secrecy::ExposeSecret;
///
/// let creds = Credentials::from_json(serde_json::json!({"access_token": "pat-123"}))?;
/// assert_eq!(creds.get("access_token").unwrap().expose_secret(), "pat-123");
/// assert_eq!(format!("{creds:?}"), "Credentials([REDACTED])");
/// # Ok::<(), pandora_sync::Error>(())
/// ```
#[derive(Clone)]
pub struct Credentials {
    json: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials([REDACTED])")
    }
}

impl Credentials {
    /// Credentials from a JSON object.
    ///
    /// # Errors
    /// [`Error::Config`] when `value` is not an object.
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        if !value.is_object() {
            return Err(Error::config("credentials must be a JSON object"));
        }
        let text = Zeroizing::new(value.to_string());
        drop(value);
        Ok(Credentials {
            json: SecretString::from(text.as_str()),
        })
    }

    /// Credentials from the text of a JSON object.
    ///
    /// # Errors
    /// [`Error::Config`] when `text` is not a JSON object (the message never quotes it).
    pub fn parse(text: &str) -> Result<Self> {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) if value.is_object() => Ok(Credentials {
                json: SecretString::from(text),
            }),
            _ => Err(Error::config("credentials must be a JSON object")),
        }
    }

    /// One top-level string member, e.g. `access_token`.
    pub fn get(&self, key: &str) -> Option<SecretString> {
        let value: serde_json::Value = serde_json::from_str(self.json.expose_secret()).ok()?;
        value.get(key)?.as_str().map(SecretString::from)
    }

    /// The whole JSON object. Handle the result as a secret: do not log or store it.
    ///
    /// # Errors
    /// Never in practice: the text was checked to be a JSON object when it was created.
    pub fn expose_json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(self.json.expose_secret())
            .map_err(|_| Error::config("credentials are not valid JSON"))
    }

    fn expose_text(&self) -> &str {
        self.json.expose_secret()
    }
}

/// Credentials as stored in `connections.credentials`: sealed, opaque without the key.
///
/// `Debug` shows only the key id.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredentials {
    text: String,
}

impl fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedCredentials")
            .field("key_id", &self.key_id().unwrap_or("?"))
            .finish_non_exhaustive()
    }
}

impl SealedCredentials {
    /// Wraps a stored value (as read from the database).
    pub fn from_stored(text: impl Into<String>) -> Self {
        SealedCredentials { text: text.into() }
    }

    /// The stored text, `v1:<key id>:<base64>`.
    pub fn as_stored(&self) -> &str {
        &self.text
    }

    /// The id of the key that sealed these credentials, when the value is well formed.
    pub fn key_id(&self) -> Option<&str> {
        self.parts().ok().map(|(key_id, _)| key_id)
    }

    fn parts(&self) -> Result<(&str, &str)> {
        let mut it = self.text.splitn(3, ':');
        match (it.next(), it.next(), it.next()) {
            (Some(VERSION), Some(key_id), Some(body)) if valid_key_id(key_id) => Ok((key_id, body)),
            (Some(v), Some(_), Some(_)) if v != VERSION => Err(Error::config(format!(
                "stored credentials use an unknown format version {v:?}"
            ))),
            _ => Err(Error::config("stored credentials are malformed")),
        }
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

struct Key {
    id: String,
    bytes: SecretBox<[u8; 32]>,
}

impl Key {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.expose_secret().into())
    }
}

/// The keys that seal and open stored credentials: one current key (used to seal) and any
/// number of previous keys (still accepted for opening) while rows are re-encrypted.
///
/// Cloning is cheap (the keys are shared). `Debug` lists key ids only.
///
/// ```
/// use pandora_sync::{ConnectorKind, Credentials, Keyring};
///
/// let ws = uuid::Uuid::new_v4();
/// let old = Keyring::new("2024", [7u8; 32])?;
/// let sealed = old.seal(ws, ConnectorKind::Hubspot, &Credentials::parse(r#"{"access_token":"t"}"#)?)?;
///
/// // Rotate: seal with the new key, keep opening what the old one sealed.
/// let rotated = Keyring::new("2025", [9u8; 32])?.with_previous("2024", [7u8; 32])?;
/// assert!(rotated.open(ws, ConnectorKind::Hubspot, &sealed).is_ok());
/// assert!(rotated.needs_reseal(&sealed));
/// // The same value is useless under another workspace.
/// assert!(rotated.open(uuid::Uuid::new_v4(), ConnectorKind::Hubspot, &sealed).is_err());
/// # Ok::<(), pandora_sync::Error>(())
/// ```
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<Vec<Key>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("current", &ids.first())
            .field("previous", &ids.get(1..).unwrap_or_default())
            .finish()
    }
}

impl Keyring {
    /// A keyring whose current key is `key`, named `key_id`.
    ///
    /// # Errors
    /// [`Error::Config`] when `key_id` is empty, longer than 64 bytes, or has characters
    /// other than ASCII letters, digits, `-`, `_` and `.`.
    pub fn new(key_id: &str, key: [u8; 32]) -> Result<Self> {
        let key = Self::make_key(key_id, key)?;
        Ok(Keyring {
            keys: Arc::new(vec![key]),
        })
    }

    /// A keyring whose current key is given in standard base64 (44 characters).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad key id, or a value that is not base64 of 32 bytes.
    pub fn from_base64(key_id: &str, key_base64: &str) -> Result<Self> {
        Self::new(key_id, decode_key(key_base64)?)
    }

    /// Adds a previous key, accepted for opening but never used for sealing.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad or duplicate key id.
    pub fn with_previous(self, key_id: &str, key: [u8; 32]) -> Result<Self> {
        if self.keys.iter().any(|k| k.id == key_id) {
            return Err(Error::config(format!(
                "the keyring already holds a key with id {key_id:?}"
            )));
        }
        let key = Self::make_key(key_id, key)?;
        let mut keys: Vec<Key> = Vec::with_capacity(self.keys.len() + 1);
        for k in self.keys.iter() {
            keys.push(Key {
                id: k.id.clone(),
                bytes: SecretBox::new(Box::new(*k.bytes.expose_secret())),
            });
        }
        keys.push(key);
        Ok(Keyring {
            keys: Arc::new(keys),
        })
    }

    /// Adds a previous key given in standard base64.
    ///
    /// # Errors
    /// As [`Keyring::with_previous`] and [`Keyring::from_base64`].
    pub fn with_previous_base64(self, key_id: &str, key_base64: &str) -> Result<Self> {
        let key = decode_key(key_base64)?;
        self.with_previous(key_id, key)
    }

    /// The id of the key used for sealing.
    pub fn current_key_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    fn make_key(key_id: &str, key: [u8; 32]) -> Result<Key> {
        if !valid_key_id(key_id) {
            return Err(Error::config(format!(
                "invalid credential key id {key_id:?}: use 1 to {MAX_KEY_ID_LEN} ASCII letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Key {
            id: key_id.to_owned(),
            bytes: SecretBox::new(Box::new(key)),
        })
    }

    fn current(&self) -> Result<&Key> {
        self.keys
            .first()
            .ok_or_else(|| Error::config("the keyring holds no key"))
    }

    /// Seals credentials for the row `(workspace_id, connector)` under the current key.
    ///
    /// # Errors
    /// [`Error::Config`] if encryption fails (it does not for valid keys).
    pub fn seal(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        credentials: &Credentials,
    ) -> Result<SealedCredentials> {
        let key = self.current()?;
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let aad = aad(&key.id, workspace_id, connector);
        let ciphertext = key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce_bytes),
                Payload {
                    msg: credentials.expose_text().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::config("credential encryption failed"))?;
        let mut body = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        body.extend_from_slice(&nonce_bytes);
        body.extend_from_slice(&ciphertext);
        Ok(SealedCredentials {
            text: format!("{VERSION}:{}:{}", key.id, BASE64.encode(body)),
        })
    }

    /// Opens credentials sealed for the row `(workspace_id, connector)`.
    ///
    /// # Errors
    /// [`Error::Config`] when the value is malformed, was sealed with a key id this keyring
    /// does not hold, or fails authentication (wrong key bytes, tampered value, or a value
    /// sealed for another row). The message names the key id and the row, never a secret.
    pub fn open(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        sealed: &SealedCredentials,
    ) -> Result<Credentials> {
        let (key_id, body) = sealed.parts()?;
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            return Err(Error::config(format!(
                "the {connector} credentials of workspace {workspace_id} are sealed with key id {key_id:?}, which the keyring does not hold (it holds {:?})",
                self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>()
            )));
        };
        let body = BASE64
            .decode(body)
            .map_err(|_| Error::config("stored credentials are malformed (bad base64)"))?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::config(
                "stored credentials are malformed (too short)",
            ));
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let aad = aad(key_id, workspace_id, connector);
        let plain = Zeroizing::new(
            key.cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| {
                    Error::config(format!(
                        "the {connector} credentials of workspace {workspace_id} could not be decrypted with key {key_id:?}: wrong key, or the value was tampered with or copied from another connection"
                    ))
                })?,
        );
        let text = std::str::from_utf8(&plain)
            .map_err(|_| Error::config("decrypted credentials are not UTF-8"))?;
        Credentials::parse(text)
    }

    /// Whether `sealed` was sealed with a key other than the current one (so re-sealing
    /// it completes a rotation).
    pub fn needs_reseal(&self, sealed: &SealedCredentials) -> bool {
        sealed.key_id() != Some(self.current_key_id())
    }
}

fn decode_key(key_base64: &str) -> Result<[u8; 32]> {
    let bytes = Zeroizing::new(
        BASE64
            .decode(key_base64.trim())
            .map_err(|_| Error::config("the credential key is not valid base64"))?,
    );
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| Error::config("the credential key must be exactly 32 bytes"))
}

fn aad(key_id: &str, workspace_id: Uuid, connector: ConnectorKind) -> String {
    format!(
        "pandora_sync/credentials/{VERSION}/{key_id}/{}/{}",
        workspace_id.hyphenated(),
        connector.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::from_json(serde_json::json!({"access_token": "tok-secret", "n": 1})).unwrap()
    }

    #[test]
    fn round_trip_and_redaction() {
        let ws = Uuid::new_v4();
        let ring = Keyring::new("k1", [1; 32]).unwrap();
        let sealed = ring.seal(ws, ConnectorKind::Gong, &creds()).unwrap();
        assert!(sealed.as_stored().starts_with("v1:k1:"));
        assert!(!sealed.as_stored().contains("tok-secret"));
        assert_eq!(sealed.key_id(), Some("k1"));
        let open = ring.open(ws, ConnectorKind::Gong, &sealed).unwrap();
        assert_eq!(
            open.get("access_token").unwrap().expose_secret(),
            "tok-secret"
        );
        assert_eq!(open.get("n").map(|_| ()), None);
        assert!(!format!("{open:?}").contains("tok"));
        assert!(!format!("{ring:?}").contains("[1"));
        assert!(format!("{sealed:?}").contains("k1"));
        // A fresh nonce every time.
        assert_ne!(
            ring.seal(ws, ConnectorKind::Gong, &creds()).unwrap(),
            sealed
        );
    }

    #[test]
    fn wrong_key_row_or_tampering_is_an_error() {
        let ws = Uuid::new_v4();
        let ring = Keyring::new("k1", [1; 32]).unwrap();
        let sealed = ring.seal(ws, ConnectorKind::Gong, &creds()).unwrap();

        let wrong = Keyring::new("k1", [2; 32]).unwrap();
        let msg = wrong
            .open(ws, ConnectorKind::Gong, &sealed)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("could not be decrypted"), "{msg}");

        let unknown = Keyring::new("k2", [1; 32]).unwrap();
        let msg = unknown
            .open(ws, ConnectorKind::Gong, &sealed)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"k1\""), "{msg}");

        assert!(
            ring.open(Uuid::new_v4(), ConnectorKind::Gong, &sealed)
                .is_err()
        );
        assert!(ring.open(ws, ConnectorKind::Fireflies, &sealed).is_err());

        // Relabelling the key id breaks authentication too.
        let relabelled =
            SealedCredentials::from_stored(sealed.as_stored().replace("v1:k1:", "v1:k2:"));
        let both = Keyring::new("k2", [1; 32])
            .unwrap()
            .with_previous("k1", [1; 32])
            .unwrap();
        assert!(both.open(ws, ConnectorKind::Gong, &relabelled).is_err());

        for bad in [
            "",
            "v1:k1",
            "v2:k1:AAAA",
            "v1:k1:!!!",
            "v1:k1:AAAA",
            "v1:bad id:AAAA",
        ] {
            assert!(
                ring.open(
                    ws,
                    ConnectorKind::Gong,
                    &SealedCredentials::from_stored(bad)
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rotation() {
        let ws = Uuid::new_v4();
        let old = Keyring::new("old", [1; 32]).unwrap();
        let sealed = old.seal(ws, ConnectorKind::Hubspot, &creds()).unwrap();
        let ring = Keyring::new("new", [2; 32])
            .unwrap()
            .with_previous("old", [1; 32])
            .unwrap();
        assert_eq!(ring.current_key_id(), "new");
        assert!(ring.needs_reseal(&sealed));
        let open = ring.open(ws, ConnectorKind::Hubspot, &sealed).unwrap();
        let resealed = ring.seal(ws, ConnectorKind::Hubspot, &open).unwrap();
        assert!(!ring.needs_reseal(&resealed));
        assert!(old.open(ws, ConnectorKind::Hubspot, &resealed).is_err());
        assert!(ring.clone().with_previous("new", [3; 32]).is_err());
    }

    #[test]
    fn key_and_credential_validation() {
        assert!(Keyring::new("", [0; 32]).is_err());
        assert!(Keyring::new("a:b", [0; 32]).is_err());
        assert!(Keyring::new(&"x".repeat(65), [0; 32]).is_err());
        let b64 = BASE64.encode([5u8; 32]);
        assert!(Keyring::from_base64("k", &b64).is_ok());
        assert!(Keyring::from_base64("k", &BASE64.encode([5u8; 31])).is_err());
        assert!(Keyring::from_base64("k", "not base64!").is_err());
        assert!(Credentials::parse("[1]").is_err());
        assert!(Credentials::parse("{\"a\":").is_err());
        let err = Credentials::parse("{\"token\": \"abc\"")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("abc"), "{err}");
        assert!(Credentials::from_json(serde_json::json!("x")).is_err());
        assert_eq!(creds().expose_json().unwrap()["access_token"], "tok-secret");
    }
}
