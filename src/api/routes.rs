//! The handlers of the sync and connection routes (DESIGN 3.5).

use std::sync::Arc;

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, Inner, validate};
use crate::model::{ConnectorKind, RecordKind, SyncMode};
use crate::queue::{Job, JobStatus};
use crate::store::{ConnectionRow, ConnectionStatus, Credentials, NewConnection, SyncLogEntry};

type ApiResult<T> = std::result::Result<T, ApiError>;

/// Default page of `GET /sync/jobs`.
const DEFAULT_JOBS_LIMIT: u32 = 20;
/// Largest page of `GET /sync/jobs`.
const MAX_JOBS_LIMIT: u32 = 100;
/// Entries of `GET /sync/history`.
const HISTORY_LIMIT: u32 = 100;

/// A workspace exists once it has a connection or a job (DESIGN 3.5).
async fn require_workspace(inner: &Inner, ws: Uuid) -> ApiResult<Vec<ConnectionRow>> {
    let connections = inner.store.list_connections(ws).await?;
    if connections.is_empty() && inner.store.list_jobs(ws, 1, 0).await?.is_empty() {
        return Err(ApiError::workspace_not_found());
    }
    Ok(connections)
}

fn parse_connector(name: &str) -> ApiResult<ConnectorKind> {
    name.parse::<ConnectorKind>()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TriggerBody {
    connector_type: Option<String>,
    mode: Option<String>,
}

/// `POST /{workspace_id}/sync`.
pub(crate) async fn trigger(
    State(inner): State<Arc<Inner>>,
    ApiPath(ws): ApiPath<Uuid>,
    OriginalUri(uri): OriginalUri,
    ApiJson(body): ApiJson<Option<TriggerBody>>,
) -> ApiResult<Response> {
    let body = body.unwrap_or_default();
    let connector = body
        .connector_type
        .as_deref()
        .map(parse_connector)
        .transpose()?;
    let mode = match body.mode.as_deref() {
        None | Some("auto") => None,
        Some(m) => Some(m.parse::<SyncMode>().map_err(|_| {
            ApiError::bad_request(format!(
                "unknown mode {m:?}; valid modes are: auto, initial, incremental, backfill"
            ))
        })?),
    };
    require_workspace(&inner, ws).await?;
    let triggered = inner.scheduler.trigger_sync(ws, connector, mode).await?;
    let base = uri.path().trim_end_matches('/');
    let status_url = format!("{base}/jobs/{}", triggered.job_id);
    tracing::info!(workspace_id = %ws, job_id = %triggered.job_id, "sync triggered over HTTP");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "syncId": triggered.sync_id,
            "jobId": triggered.job_id,
            "status": "pending",
            "statusUrl": status_url,
        })),
    )
        .into_response())
}

/// A job as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView {
    job_id: Uuid,
    status: JobStatus,
    progress: Value,
    result: Option<Value>,
    error: Option<String>,
    attempts: u32,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

fn job_view(job: Job) -> JobView {
    let progress = job.progress.unwrap_or_default();
    JobView {
        job_id: job.id,
        status: job.status,
        progress: json!({
            "current": progress.current,
            "total": progress.total,
            "message": progress.message,
        }),
        result: job.result,
        error: job.error.or(job.last_error),
        attempts: job.attempts,
        created_at: job.created_at,
        started_at: job.started_at,
        completed_at: job.completed_at,
    }
}

/// `GET /{workspace_id}/sync/jobs/{job_id}`.
pub(crate) async fn get_job(
    State(inner): State<Arc<Inner>>,
    ApiPath((ws, job_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    let job = inner
        .store
        .get_job(ws, job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such job"))?;
    Ok(axum::Json(job_view(job)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsQuery {
    limit: Option<u32>,
    before: Option<Uuid>,
}

/// `GET /{workspace_id}/sync/jobs?limit=1..100&before=<jobId>`: newest first, keyset on
/// `(created_at, id)`: the page holds the jobs older than `before`, so jobs enqueued
/// meanwhile never shift it.
pub(crate) async fn list_jobs(
    State(inner): State<Arc<Inner>>,
    ApiPath(ws): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(DEFAULT_JOBS_LIMIT);
    if !(1..=MAX_JOBS_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_JOBS_LIMIT}"
        )));
    }
    require_workspace(&inner, ws).await?;
    let cursor = match q.before {
        None => None,
        Some(id) => {
            let job =
                inner.store.get_job(ws, id).await?.ok_or_else(|| {
                    ApiError::bad_request("before: no such job in this workspace")
                })?;
            Some((job.created_at, job.id))
        }
    };
    let page = inner.store.list_jobs_before(ws, limit, cursor).await?;
    // A full page has a next one when a job lies beyond its last.
    let next = match page.last() {
        Some(last) if page.len() >= usize::try_from(limit).unwrap_or(usize::MAX) => {
            let beyond = inner
                .store
                .list_jobs_before(ws, 1, Some((last.created_at, last.id)))
                .await?;
            (!beyond.is_empty()).then_some(last.id)
        }
        _ => None,
    };
    let jobs: Vec<JobView> = page.into_iter().map(job_view).collect();
    Ok(axum::Json(json!({ "jobs": jobs, "nextCursor": next })).into_response())
}

/// `GET /{workspace_id}/sync/status`.
pub(crate) async fn status(
    State(inner): State<Arc<Inner>>,
    ApiPath(ws): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let connections = require_workspace(&inner, ws).await?;
    let mut connectors = Vec::with_capacity(connections.len());
    for c in &connections {
        let mut records = 0u64;
        for kind in RecordKind::ALL {
            if kind != RecordKind::DealContact {
                records += inner
                    .store
                    .count_records(ws, kind, Some(c.connector))
                    .await?;
            }
        }
        connectors.push(json!({
            "connector": c.connector,
            "enabled": c.status != ConnectionStatus::Disabled,
            "status": c.status,
            "lastSyncAt": c.last_sync_at,
            "records": records,
            "error": c.error_message,
        }));
    }
    let current = inner
        .store
        .list_jobs(ws, MAX_JOBS_LIMIT, 0)
        .await?
        .into_iter()
        .filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Running))
        .min_by_key(|j| {
            (
                j.status != JobStatus::Running,
                std::cmp::Reverse(j.created_at),
            )
        })
        .map(job_view);
    Ok(axum::Json(json!({
        "workspaceId": ws,
        "connectors": connectors,
        "currentJob": current,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    connector: Option<String>,
}

fn history_entry(e: SyncLogEntry) -> Value {
    json!({
        "id": e.id,
        "connector": e.connector,
        "syncType": e.sync_type,
        "status": e.status,
        "recordsSynced": e.records_synced,
        "errors": e.errors,
        "durationMs": e.duration_ms,
        "startedAt": e.started_at,
        "completedAt": e.completed_at,
    })
}

/// `GET /{workspace_id}/sync/history?connector=`.
pub(crate) async fn history(
    State(inner): State<Arc<Inner>>,
    ApiPath(ws): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Response> {
    let connector = q
        .connector
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(parse_connector)
        .transpose()?;
    require_workspace(&inner, ws).await?;
    let entries: Vec<Value> = inner
        .store
        .sync_history(ws, connector, HISTORY_LIMIT)
        .await?
        .into_iter()
        .map(history_entry)
        .collect();
    Ok(axum::Json(json!({ "entries": entries })).into_response())
}

/// A connection as the API shows it: never its credentials.
fn connection_view(c: &ConnectionRow) -> Value {
    json!({
        "connector": c.connector,
        "enabled": c.status != ConnectionStatus::Disabled,
        "status": c.status,
        "authMethod": c.auth_method,
        "config": c.config,
        "lastSyncAt": c.last_sync_at,
        "error": c.error_message,
        "createdAt": c.created_at,
        "updatedAt": c.updated_at,
    })
}

/// `GET /{workspace_id}/connections`.
pub(crate) async fn list_connections(
    State(inner): State<Arc<Inner>>,
    ApiPath(ws): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let connections = require_workspace(&inner, ws).await?;
    let views: Vec<Value> = connections.iter().map(connection_view).collect();
    Ok(axum::Json(json!({ "connections": views })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutBody {
    /// Taken as a whole value so that no parse error can quote a secret.
    credentials: Value,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// `PUT /{workspace_id}/connections/{connector}`: 201 created, 200 replaced.
pub(crate) async fn put_connection(
    State(inner): State<Arc<Inner>>,
    ApiPath((ws, connector)): ApiPath<(Uuid, String)>,
    ApiJson(body): ApiJson<Option<PutBody>>,
) -> ApiResult<Response> {
    let kind = parse_connector(&connector)?;
    let body =
        body.ok_or_else(|| ApiError::bad_request("a body with `credentials` is required"))?;
    let credentials = Credentials::from_json(body.credentials)?;
    let config = match body.config {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(c) => c,
    };
    validate::validate_connection(kind, &config, &credentials)?;
    let enabled = body.enabled.unwrap_or(true);
    let store = &inner.store;
    let existing = store.get_connection(ws, kind).await?;
    let created = if existing.is_none() {
        let new = NewConnection::new(ws, kind, validate::auth_method(&credentials))
            .with_credentials(credentials.clone())
            .with_config(config.clone());
        match store.create_connection(new).await {
            Ok(_) => true,
            // Created meanwhile by another request: replace it.
            Err(crate::Error::Conflict { .. }) => false,
            Err(e) => return Err(e.into()),
        }
    } else {
        false
    };
    if !created {
        store.set_credentials(ws, kind, Some(&credentials)).await?;
        store.set_config(ws, kind, &config).await?;
    }
    let current = store.get_connection(ws, kind).await?;
    let status = current.as_ref().map(|c| c.status);
    if !enabled && status != Some(ConnectionStatus::Disabled) {
        store
            .set_connection_status(ws, kind, ConnectionStatus::Disabled, None)
            .await?;
    } else if enabled && status == Some(ConnectionStatus::Disabled) {
        store
            .set_connection_status(ws, kind, ConnectionStatus::Pending, None)
            .await?;
    }
    let row = store
        .get_connection(ws, kind)
        .await?
        .ok_or_else(ApiError::internal)?;
    tracing::info!(workspace_id = %ws, connector = %kind, created, "connection stored");
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(connection_view(&row))).into_response())
}

/// `DELETE /{workspace_id}/connections/{connector}`: disables it; its data stays.
pub(crate) async fn delete_connection(
    State(inner): State<Arc<Inner>>,
    ApiPath((ws, connector)): ApiPath<(Uuid, String)>,
) -> ApiResult<Response> {
    let kind = parse_connector(&connector)?;
    require_workspace(&inner, ws).await?;
    if inner.store.get_connection(ws, kind).await?.is_none() {
        return Err(ApiError::not_found(format!("no {kind} connection")));
    }
    inner
        .store
        .set_connection_status(ws, kind, ConnectionStatus::Disabled, None)
        .await?;
    let row = inner
        .store
        .get_connection(ws, kind)
        .await?
        .ok_or_else(ApiError::internal)?;
    Ok(axum::Json(connection_view(&row)).into_response())
}
