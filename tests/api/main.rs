//! The HTTP API through a real HTTP client against a bound listener: the sync and
//! connection routes, the authorizer, the webhook receivers, and the `server` example as a
//! process.
#![cfg(all(feature = "http-api", feature = "sqlite", feature = "hubspot"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod router;
#[cfg(feature = "simulator")]
mod server;
#[cfg(feature = "simulator")]
mod webhooks;

use std::sync::Arc;

use pandora_sync::api::{Access, BearerTokens, SyncApi, WebhookConfig, Webhooks};
use pandora_sync::{Keyring, Scheduler, SchedulerConfig, SyncStore, connect_store};
use uuid::Uuid;

/// A served API: `/api/workspaces` and `/webhooks` on an ephemeral port.
pub(crate) struct Served {
    pub(crate) base: String,
    pub(crate) store: Arc<dyn SyncStore>,
    pub(crate) http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Served {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub(crate) async fn sqlite_store() -> Arc<dyn SyncStore> {
    let store = connect_store(
        "sqlite::memory:",
        Some(Keyring::new("test", [7u8; 32]).unwrap()),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

/// Serves the API over `store` with `tokens` (token → workspaces).
pub(crate) async fn serve(
    store: Arc<dyn SyncStore>,
    tokens: &[(&str, Access)],
    webhook_config: WebhookConfig,
) -> Served {
    let scheduler = Arc::new(Scheduler::new(store.clone(), SchedulerConfig::default()).unwrap());
    let mut auth = BearerTokens::new();
    for (t, a) in tokens {
        auth = auth.allow(&(*t).to_owned().into(), a.clone());
    }
    let api = SyncApi::new(store.clone(), scheduler.clone(), Arc::new(auth));
    let webhooks = Webhooks::new(store.clone(), scheduler, webhook_config);
    let app = axum::Router::new()
        .nest("/api/workspaces", api.router())
        .nest("/webhooks", webhooks.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Served {
        base: format!("http://{addr}"),
        store,
        http: reqwest::Client::new(),
        task,
    }
}

pub(crate) fn only(ws: Uuid) -> Access {
    Access::Only([ws].into())
}
