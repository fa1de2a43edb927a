//! The reqwest-backed bottom of every stack.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use tower::Service;

use super::context::provider_of;
use crate::{Error, Result};

/// The default cap on a response body: 64 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Settings of the [`Transport`]'s connection pool.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportConfig {
    /// The largest response body accepted; a bigger one is an [`Error::Decode`] and is
    /// never buffered whole (default [`DEFAULT_BODY_LIMIT`]).
    pub body_limit: usize,
    /// Time allowed to open a connection (TCP and TLS), default 10 s. The whole attempt is
    /// bounded by the stack's per-attempt timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept, default 90 s.
    pub pool_idle_timeout: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            user_agent: concat!("pandora_sync/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl TransportConfig {
    /// Sets the response body cap.
    pub fn with_body_limit(mut self, body_limit: usize) -> Self {
        self.body_limit = body_limit;
        self
    }
}

/// A `tower::Service<http::Request<Bytes>>` over a pooled [`reqwest::Client`] (rustls,
/// gzip), answering with the whole body as [`Bytes`].
///
/// Every status is an `Ok` response; judging statuses is the retry layer's job. Errors:
/// [`Error::Transport`] when no response arrived (connection refused or reset, DNS, TLS),
/// [`Error::Decode`] when the body exceeds the cap. Error messages never contain the URL
/// (query strings can carry secrets). The body is read chunk by chunk and the read stops as
/// soon as it passes the cap, so an oversized or decompression-bomb answer cannot exhaust
/// memory.
///
/// Clones share the connection pool.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    body_limit: usize,
}

impl Transport {
    /// A transport with its own connection pool.
    pub fn new(config: TransportConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .user_agent(config.user_agent)
            .build()
            .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self::from_client(client, config.body_limit))
    }

    /// A transport over an existing client (to share one pool between stacks).
    pub fn from_client(client: reqwest::Client, body_limit: usize) -> Self {
        Self { client, body_limit }
    }

    /// The response body cap.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// The response future of [`Transport`].
#[must_use = "futures do nothing unless polled"]
pub struct TransportFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<Bytes>>> + Send>>,
}

impl fmt::Debug for TransportFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportFuture")
    }
}

impl Future for TransportFuture {
    type Output = Result<Response<Bytes>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl Service<Request<Bytes>> for Transport {
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = TransportFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        TransportFuture {
            inner: Box::pin(send(self.client.clone(), self.body_limit, req)),
        }
    }
}

const FALLBACK_PROVIDER: Cow<'static, str> = Cow::Borrowed("http");

fn transport_error(provider: &Cow<'static, str>, what: &str, e: reqwest::Error) -> Error {
    let e = e.without_url();
    Error::Transport {
        provider: provider.clone(),
        message: format!("{what}: {e}"),
        source: Some(Box::new(e)),
    }
}

fn too_large(provider: &Cow<'static, str>, limit: usize) -> Error {
    Error::decode(
        None,
        format!("{provider} response body exceeds the limit of {limit} bytes"),
    )
}

async fn send(
    client: reqwest::Client,
    limit: usize,
    req: Request<Bytes>,
) -> Result<Response<Bytes>> {
    let provider = provider_of(&req, &FALLBACK_PROVIDER);
    let req = reqwest::Request::try_from(req)
        .map_err(|e| transport_error(&provider, "invalid request", e))?;
    let mut response = client
        .execute(req)
        .await
        .map_err(|e| transport_error(&provider, "request failed", e))?;

    if response
        .content_length()
        .is_some_and(|len| u64::try_from(limit).is_ok_and(|limit| len > limit))
    {
        return Err(too_large(&provider, limit));
    }
    let hint = response
        .content_length()
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(0)
        .min(limit)
        .min(1024 * 1024);
    let mut body = BytesMut::with_capacity(hint);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(&provider, "reading the response body failed", e))?
    {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(too_large(&provider, limit));
        }
        body.extend_from_slice(&chunk);
    }

    let mut out = Response::new(body.freeze());
    *out.status_mut() = response.status();
    *out.version_mut() = response.version();
    *out.headers_mut() = std::mem::take(response.headers_mut());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tower::ServiceExt;

    /// Serves one raw HTTP/1.1 answer per connection; returns the base URL.
    async fn serve(answer: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock.write_all(&answer).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn get(url: &str) -> Request<Bytes> {
        Request::get(url).body(Bytes::new()).unwrap()
    }

    #[tokio::test]
    async fn returns_status_headers_and_body() {
        let url = serve(
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 5\r\n\r\nhello"
                .to_vec(),
        )
        .await;
        let t = Transport::new(TransportConfig::default()).unwrap();
        let resp = t.oneshot(get(&url)).await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "7");
        assert_eq!(resp.body().as_ref(), b"hello");
    }

    #[tokio::test]
    async fn declared_oversized_body_is_an_error() {
        let url = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec()).await;
        let t = Transport::new(TransportConfig::default().with_body_limit(10)).unwrap();
        let err = t.oneshot(get(&url)).await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn chunked_body_is_cut_off_at_the_limit() {
        // No content-length: 3 chunks of 8 bytes, limit 20.
        let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            answer.extend_from_slice(b"8\r\n12345678\r\n");
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        let url = serve(answer.clone()).await;
        let t = Transport::new(TransportConfig::default().with_body_limit(20)).unwrap();
        let err = t.oneshot(get(&url)).await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        // The same body under a larger cap goes through whole.
        let t = Transport::new(TransportConfig::default().with_body_limit(24)).unwrap();
        let ok = t.oneshot(get(&url)).await.unwrap();
        assert_eq!(ok.body().len(), 24);
    }

    #[tokio::test]
    async fn refused_connection_is_a_transport_error_without_the_url() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let t = Transport::new(TransportConfig::default()).unwrap();
        let err = t
            .oneshot(get(&format!("http://{addr}/x?api_key=sekrit")))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert!(!err.to_string().contains("sekrit"), "{err}");
        assert!(!format!("{err:?}").contains("sekrit"), "{err:?}");
    }
}
