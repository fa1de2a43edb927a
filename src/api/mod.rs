//! The HTTP API (feature `http-api`): a mountable axum [`Router`] with the sync and
//! connection routes of DESIGN 3.5, and the webhook receivers ([`Webhooks`]).
//!
//! ```text
//! POST   /{workspace_id}/sync                      202 {syncId, jobId, status, statusUrl} | 409
//! GET    /{workspace_id}/sync/status               per-connector status, currentJob
//! GET    /{workspace_id}/sync/jobs/{job_id}        a job
//! GET    /{workspace_id}/sync/jobs?limit&before    {jobs, nextCursor}
//! GET    /{workspace_id}/sync/history?connector=   {entries}
//! PUT    /{workspace_id}/connections/{connector}   201 created | 200 replaced
//! GET    /{workspace_id}/connections               {connections} (never credentials)
//! DELETE /{workspace_id}/connections/{connector}   disables it; data stays
//! ```
//!
//! Every request goes through the host's [`Authorizer`] before a handler touches the
//! workspace; every error, the framework's own rejections included, is
//! `{"error": code, "message": text}`; bodies are limited to [`BODY_LIMIT`] (413 over it).
//! Triggers go through [`Scheduler::trigger_sync`] onto the job queue the workers claim
//! from (Postgres wakes them with `NOTIFY`), so the API adds no second mechanism.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn pandora_sync::SyncStore>) -> pandora_sync::Result<()> {
//! use std::sync::Arc;
//! use pandora_sync::api::{Access, BearerTokens, SyncApi};
//! use pandora_sync::{Scheduler, SchedulerConfig};
//!
//! let scheduler = Arc::new(Scheduler::new(store.clone(), SchedulerConfig::default())?);
//! let tokens = BearerTokens::new().allow(&"s3cret".to_owned().into(), Access::All);
//! let api = SyncApi::new(store, scheduler, Arc::new(tokens));
//! let app = axum::Router::new().nest("/api/workspaces", api.router());
//! # drop(app);
//! # Ok(())
//! # }
//! ```

mod auth;
mod error;
mod routes;
mod validate;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use uuid::Uuid;

pub use auth::{Access, Authorizer, BearerTokens, bearer_token};
pub use error::ApiError;
pub use validate::validate_connection;
pub use webhooks::{
    DriveChannel, WEBHOOK_ACCOUNT_KEY, WebhookConfig, WebhookEvent, Webhooks, hubspot_signature,
    register_drive_channel, register_webhook_account,
};

use crate::Scheduler;
use crate::store::SyncStore;

/// The largest request body: 1 MiB (413 over it).
pub const BODY_LIMIT: usize = 1 << 20;

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn SyncStore>,
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
}

/// The sync and connection routes, scoped by the host's [`Authorizer`].
#[derive(Clone)]
pub struct SyncApi {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SyncApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncApi").finish_non_exhaustive()
    }
}

impl SyncApi {
    /// The API over `store` (connections, sync log, the job queue), triggering through
    /// `scheduler`, letting a request at a workspace only when `authorizer` says so.
    pub fn new(
        store: Arc<dyn SyncStore>,
        scheduler: Arc<Scheduler>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        SyncApi {
            inner: Arc::new(Inner {
                store,
                scheduler,
                authorizer,
            }),
        }
    }

    /// The routes, relative to where the host mounts them (e.g. `/api/workspaces`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/{workspace_id}/sync", post(routes::trigger))
            .route("/{workspace_id}/sync/status", get(routes::status))
            .route("/{workspace_id}/sync/jobs", get(routes::list_jobs))
            .route("/{workspace_id}/sync/jobs/{job_id}", get(routes::get_job))
            .route("/{workspace_id}/sync/history", get(routes::history))
            .route("/{workspace_id}/connections", get(routes::list_connections))
            .route(
                "/{workspace_id}/connections/{connector}",
                put(routes::put_connection).delete(routes::delete_connection),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                self.inner.clone(),
                authorize,
            ))
            .with_state(self.inner.clone())
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
    }
}

/// Answers 404 in the API's shape.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Answers 405 in the API's shape.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Runs the authorizer on the route's `workspace_id` before the handler (and before its
/// body is read).
async fn authorize(
    State(inner): State<Arc<Inner>>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let raw = params
        .iter()
        .find(|(k, _)| *k == "workspace_id")
        .map(|(_, v)| v.to_owned());
    let (parts, body) = req.into_parts();
    let Some(workspace) = raw.and_then(|v| Uuid::parse_str(&v).ok()) else {
        // Authenticate first when possible: a stranger learns nothing from the shape of ids.
        if let Err(e) = inner.authorizer.authorize(&parts, Uuid::nil()).await
            && e.status() == axum::http::StatusCode::UNAUTHORIZED
        {
            return e.into_response();
        }
        return ApiError::bad_request("the workspace id is not a UUID").into_response();
    };
    if let Err(e) = inner.authorizer.authorize(&parts, workspace).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}
