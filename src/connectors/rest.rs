//! The JSON-over-HTTP plumbing every connector client shares: build a request against the
//! provider's base URL, send it through the connector's [`HttpStack`], and read a 2xx body
//! as JSON or turn anything else into an [`Error::Api`] (the provider's own error body,
//! redacted by [`Error::api`]).

use bytes::Bytes;
use http::{Method, Request, Response};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::http::HttpStack;

/// One provider's JSON API at one base URL.
#[derive(Debug, Clone)]
pub(crate) struct JsonApi {
    base: String,
    /// The provider id errors carry (`"hubspot"`).
    provider: &'static str,
    /// The provider's name in messages (`"HubSpot"`).
    name: &'static str,
}

impl JsonApi {
    /// The API at `base` (scheme and host, no trailing slash: the client normalizes it).
    pub(crate) fn new(base: String, provider: &'static str, name: &'static str) -> Self {
        JsonApi {
            base,
            provider,
            name,
        }
    }

    /// A request for `path_and_query` accepting JSON, with a JSON `body` when given.
    pub(crate) fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Bytes>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base))
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        req.body(body.map(Bytes::from).unwrap_or_default())
            .map_err(|e| Error::config(format!("invalid {} request: {e}", self.name)))
    }

    /// The [`Error::Api`] for an answer the stack did not turn into an error itself.
    pub(crate) fn status_error(&self, resp: &Response<Bytes>) -> Error {
        Error::api(
            self.provider,
            resp.status().as_u16(),
            &String::from_utf8_lossy(resp.body()),
        )
    }

    /// A 2xx body as `T`; any other status is an [`Error::Api`], an unreadable body an
    /// [`Error::Decode`].
    pub(crate) fn read<T: DeserializeOwned>(&self, resp: &Response<Bytes>) -> Result<T> {
        if !resp.status().is_success() {
            return Err(self.status_error(resp));
        }
        self.parse(resp.body())
    }

    /// A 2xx body (already checked) as `T`, or an [`Error::Decode`].
    pub(crate) fn parse<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body)
            .map_err(|e| Error::decode(None, format!("unreadable {} response: {e}", self.name)))
    }

    #[cfg_attr(not(any(feature = "hubspot", feature = "gong")), allow(dead_code))]
    /// Sends a request through `stack`; the answer is whatever the stack's classifier let
    /// through (read it with [`JsonApi::read`]).
    pub(crate) async fn send_raw(
        &self,
        stack: &HttpStack,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Bytes>> {
        stack
            .send(self.request(method, path_and_query, body)?)
            .await
    }

    #[cfg_attr(not(any(feature = "hubspot", feature = "gong")), allow(dead_code))]
    /// Sends a request through `stack` and reads its answer (see [`JsonApi::read`]).
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        stack: &HttpStack,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let resp = self.send_raw(stack, method, path_and_query, body).await?;
        self.read(&resp)
    }
}
