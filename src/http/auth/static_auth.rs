//! Fixed credentials sent as a header.

use std::fmt;

use base64::Engine;
use http::{HeaderName, HeaderValue, header::AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString, zeroize::Zeroizing};

use crate::{Error, Result};

/// A credential header that never changes: a bearer token, HTTP basic credentials, or an
/// API key in a header of the provider's choosing.
///
/// The header value is marked sensitive (so `http` redacts it from `Debug`) and `Debug` on
/// this type prints only the header name.
///
/// ```
/// use secrecy::SecretString;
/// use pandora_sync::http::StaticAuth;
///
/// let hubspot = StaticAuth::bearer(&SecretString::from("pat-na1-123"))?;
/// let gong = StaticAuth::basic("access-key", &SecretString::from("key-secret"))?;
/// // monday.com takes the raw token in `Authorization`.
/// let monday = StaticAuth::header(http::header::AUTHORIZATION, &SecretString::from("eyJ…"))?;
/// assert!(!format!("{hubspot:?}{gong:?}{monday:?}").contains("123"));
/// # Ok::<(), pandora_sync::Error>(())
/// ```
#[derive(Clone)]
pub struct StaticAuth {
    name: HeaderName,
    value: HeaderValue,
}

impl StaticAuth {
    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &SecretString) -> Result<Self> {
        Ok(Self {
            name: AUTHORIZATION,
            value: bearer_value(token)?,
        })
    }

    /// `Authorization: Basic base64(<user>:<password>)`.
    pub fn basic(user: &str, password: &SecretString) -> Result<Self> {
        let joined = Zeroizing::new(format!("{user}:{}", password.expose_secret()));
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*joined));
        let value = Zeroizing::new(format!("Basic {}", encoded.as_str()));
        Ok(Self {
            name: AUTHORIZATION,
            value: sensitive(&value)?,
        })
    }

    /// `<name>: <value>` (an API key header such as `X-Api-Key`, or a raw `Authorization`).
    pub fn header(name: HeaderName, value: &SecretString) -> Result<Self> {
        Ok(Self {
            name,
            value: sensitive(value.expose_secret())?,
        })
    }

    /// The header this credential is sent in.
    pub fn header_name(&self) -> &HeaderName {
        &self.name
    }

    pub(crate) fn apply(&self, headers: &mut http::HeaderMap) {
        headers.insert(self.name.clone(), self.value.clone());
    }
}

impl fmt::Debug for StaticAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticAuth")
            .field("header", &self.name)
            .field("value", &"[REDACTED]")
            .finish()
    }
}

/// A sensitive header value; the error never contains the value.
pub(crate) fn sensitive(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| Error::config("credential contains characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// `Bearer <token>` as a sensitive header value.
pub(crate) fn bearer_value(token: &SecretString) -> Result<HeaderValue> {
    let value = Zeroizing::new(format!("Bearer {}", token.expose_secret()));
    sensitive(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_headers_and_hides_them() {
        let mut h = http::HeaderMap::new();
        StaticAuth::bearer(&SecretString::from("tok"))
            .unwrap()
            .apply(&mut h);
        assert_eq!(h[AUTHORIZATION], "Bearer tok");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert!(!format!("{h:?}").contains("tok"));

        StaticAuth::basic("Aladdin", &SecretString::from("open sesame"))
            .unwrap()
            .apply(&mut h);
        assert_eq!(h[AUTHORIZATION], "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");

        let key = StaticAuth::header(
            HeaderName::from_static("x-api-key"),
            &SecretString::from("k-1"),
        )
        .unwrap();
        key.apply(&mut h);
        assert_eq!(h["x-api-key"], "k-1");
        assert!(!format!("{key:?}").contains("k-1"));
    }

    #[test]
    fn rejects_bad_characters_without_echoing_them() {
        let err = StaticAuth::bearer(&SecretString::from("line\nbreak-secret")).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(!err.to_string().contains("secret"));
    }
}
