//! One connector's run: its `sync_log` row, the connector's sync (and backfill) into a
//! [`StoreSink`], the run's status and result, then the row and the connection updated.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::guard::RunGuard;
use super::sink::StoreSink;
use super::{Orchestrator, SyncOptions, millis};
use crate::connector::{Checkpoint, SyncContext, SyncReport, WriteCounts};
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, SyncMode};
use crate::outcome::ConnectorResult;
use crate::store::{
    ConnectionRow, ConnectionStatus, RateLimitStop, SyncErrors, SyncOutcome, SyncStatus,
};

/// The `rate_limited` outcome of a run stopped by `e` (a snooze error).
fn rate_limit_stop(kind: ConnectorKind, e: &Error) -> RateLimitStop {
    let provider = match e {
        Error::RateLimited { provider, .. }
        | Error::QuotaExhausted { provider, .. }
        | Error::Api { provider, .. } => provider.to_string(),
        _ => kind.to_string(),
    };
    let quota = matches!(e, Error::QuotaExhausted { .. });
    RateLimitStop {
        provider,
        quota,
        retry_after_ms: if quota {
            None
        } else {
            e.retry_after().map(millis)
        },
        resets_at: e.resets_at(),
    }
}

/// A counter of the report's HTTP stats (`details.http.<key>`), 0 when absent.
fn http_number(report: &SyncReport, key: &str) -> u64 {
    report
        .details
        .get("http")
        .and_then(|h| h.get(key))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

impl Orchestrator {
    /// Runs one connector of the workspace and records its outcome; never fails (a failure
    /// is in the result).
    pub(super) async fn run_connector(
        &self,
        row: ConnectionRow,
        options: &SyncOptions,
        sync_id: Option<Uuid>,
        cancel: CancellationToken,
    ) -> ConnectorResult {
        let kind = row.connector;
        let span = tracing::info_span!("connector", connector = %kind);
        async move {
            let started = Instant::now();
            let workspace_id = row.workspace_id;
            let checkpoint = row.checkpoint();
            let mode = options.mode.unwrap_or(match &checkpoint {
                Ok(c) if !c.is_empty() => SyncMode::Incremental,
                _ => SyncMode::Initial,
            });
            let sync_id = match self.open_log(workspace_id, kind, mode, sync_id).await {
                Ok(id) => id,
                Err(e) => {
                    return ConnectorResult {
                        connector: kind,
                        sync_id: Uuid::nil(),
                        status: SyncStatus::Failed,
                        mode,
                        counts: WriteCounts::default(),
                        records_by_table: BTreeMap::new(),
                        errors: SyncErrors::default(),
                        error: Some(format!("could not record the sync: {e}")),
                        requests: 0,
                        retries: 0,
                        backfilled: false,
                        rate_limited: false,
                        retry_after_ms: None,
                        duration_ms: millis(started.elapsed()),
                    };
                }
            };
            let mut guard = RunGuard::new(self.store.clone(), workspace_id, sync_id, Some(kind));
            let previous = checkpoint.as_ref().cloned().unwrap_or_default();
            let run_started = Utc::now();
            let mut sink = StoreSink::new(
                self.store.clone(),
                workspace_id,
                kind,
                self.config.batch_size,
                previous.clone(),
                options.progress.clone(),
            );
            let mut run = self
                .run_connector_sync(&row, checkpoint, mode, &cancel, &mut sink, options)
                .await;
            // The last page may still be in flight: the result counts it, and a store error
            // there fails the run (the connector's own error, if any, stays the reported one).
            if let Err(e) = sink.settle().await {
                if run.is_ok() {
                    run = Err(e);
                } else {
                    tracing::warn!(error = %e, "writing the last page failed too");
                }
            }
            let (report, error, backfilled) = match run {
                Ok((report, backfilled)) => (Some(report), None, backfilled),
                Err(e) => (None, Some(e), false),
            };
            let mut errors = SyncErrors::new(&sink.failures.failures, sink.failures.failed);
            let acceptable = sink.failures.is_acceptable(self.config.success_threshold);
            // A rate limit or an exhausted quota stops the run cleanly (DESIGN 4.6): its
            // checkpoint is committed, and the job resumes it after the limit.
            let stopped = error.as_ref().filter(|e| e.is_snooze());
            errors.rate_limited = stopped.map(|e| rate_limit_stop(kind, e));
            let status = match (&error, acceptable, sink.failures.failed) {
                (Some(e), true, _) if e.is_snooze() => SyncStatus::CompletedWithErrors,
                (Some(_), _, _) | (None, false, _) => SyncStatus::Failed,
                (None, true, 0) => SyncStatus::Completed,
                (None, true, _) => SyncStatus::CompletedWithErrors,
            };
            if let (None, Some(report)) = (&error, &report) {
                let failed = sink.failures.failed;
                self.reconcile(&row, report, &previous, run_started, failed, &mut errors)
                    .await;
            }
            let error_message = match (&error, acceptable) {
                (Some(e), true) if e.is_snooze() => Some(format!(
                    "stopped by {e}; the checkpoint is kept and the sync resumes after the limit"
                )),
                (Some(e), _) => Some(e.to_string()),
                (None, false) => Some(format!(
                    "{} of {} records failed (success rate below {:.0} %)",
                    sink.failures.failed,
                    sink.failures.failed + sink.failures.succeeded,
                    self.config.success_threshold * 100.0
                )),
                (None, true) => None,
            };
            let (requests, retries) = report.as_ref().map_or((0, 0), |r| {
                (http_number(r, "requests"), http_number(r, "retries"))
            });
            let result = ConnectorResult {
                connector: kind,
                sync_id,
                status,
                mode,
                counts: sink.counts,
                records_by_table: sink.by_table,
                errors,
                error: error_message.clone(),
                requests,
                retries,
                backfilled,
                rate_limited: error.as_ref().is_some_and(Error::is_snooze),
                retry_after_ms: error.as_ref().and_then(Error::retry_after).map(millis),
                duration_ms: millis(started.elapsed()),
            };
            self.close_log(&row, &result, report.as_ref(), error.as_ref())
                .await;
            guard.disarm();
            tracing::info!(status = %status, written = result.counts.written(), failed = result.errors.total, "connector sync finished");
            result
        }
        .instrument(span)
        .await
    }
    async fn open_log(
        &self,
        workspace_id: Uuid,
        kind: ConnectorKind,
        mode: SyncMode,
        existing: Option<Uuid>,
    ) -> Result<Uuid> {
        let id = match existing {
            Some(id) => id,
            None => {
                self.store
                    .create_sync(workspace_id, Some(kind), Some(mode))
                    .await?
                    .id
            }
        };
        self.store.start_sync(workspace_id, id, Some(mode)).await?;
        self.store
            .set_connection_status(workspace_id, kind, ConnectionStatus::Syncing, None)
            .await?;
        Ok(id)
    }

    async fn run_connector_sync(
        &self,
        row: &ConnectionRow,
        checkpoint: Result<Checkpoint>,
        mode: SyncMode,
        cancel: &CancellationToken,
        sink: &mut StoreSink,
        options: &SyncOptions,
    ) -> Result<(SyncReport, bool)> {
        let checkpoint = checkpoint?;
        let credentials = self.store.credentials(row)?;
        let connector = self.registry.build(row, credentials.as_ref())?;
        let updater = {
            let (store, ws, kind) = (self.store.clone(), row.workspace_id, row.connector);
            let base = credentials.clone();
            crate::connector::CredentialUpdater::new(move |updates| {
                let (store, base) = (store.clone(), base.clone());
                Box::pin(async move {
                    persist_credentials(store.as_ref(), ws, kind, base.as_ref(), &updates).await
                })
            })
        };
        let ctx = SyncContext::new(row.workspace_id, mode)
            .with_previous(checkpoint)
            .with_lag(self.config.watermark_lag)
            .with_cancel(cancel.clone())
            .with_progress(options.progress.clone().unwrap_or_default())
            .with_credential_updater(updater);
        let outcome = connector.sync(&ctx, sink).await;
        self.store_credential_updates(row, connector.as_ref(), credentials.as_ref())
            .await;
        let report = outcome?;
        self.record_webhook_account(row, connector.as_ref()).await;
        let needs_backfill = mode != SyncMode::Backfill
            && report
                .details
                .get("needs_backfill")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
        if needs_backfill {
            // The backfill starts from the durable checkpoint: the main sync's last page first.
            sink.settle().await?;
            let ctx = SyncContext::new(row.workspace_id, SyncMode::Backfill)
                .with_previous(sink.durable.clone())
                .with_lag(self.config.watermark_lag)
                .with_cancel(cancel.clone());
            match connector.backfill_sync(&ctx, sink).await {
                Ok(_) => return Ok((report, true)),
                Err(e) => {
                    tracing::warn!(error = %e, "post-sync backfill failed; it runs again next time")
                }
            }
        }
        Ok((report, false))
    }

    /// Records the provider account the connection's webhooks name
    /// ([`SyncCapable::webhook_account`](crate::connector::SyncCapable::webhook_account)),
    /// once: when the connection has none stored yet. A failure is logged: webhooks are an
    /// optimisation over polling, never the only way changes arrive.
    async fn record_webhook_account(
        &self,
        row: &ConnectionRow,
        connector: &dyn crate::connector::SyncCapable,
    ) {
        use crate::connector::WEBHOOK_ACCOUNT_KEY;
        let known = row
            .sync_cursor
            .as_ref()
            .and_then(|c| c.get(WEBHOOK_ACCOUNT_KEY))
            .is_some_and(serde_json::Value::is_object);
        if known {
            return;
        }
        let account = match connector.webhook_account().await {
            Ok(Some(account)) => account,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(connector = %row.connector, error = %e, "reading the webhook account failed; the next sync tries again");
                return;
            }
        };
        let mut members = serde_json::Map::new();
        members.insert(
            WEBHOOK_ACCOUNT_KEY.into(),
            serde_json::json!({ "account": account }),
        );
        if let Err(e) = self
            .store
            .merge_sync_cursor(row.workspace_id, row.connector, &members)
            .await
        {
            tracing::warn!(connector = %row.connector, error = %e, "storing the webhook account failed");
        }
    }

    /// Stores the credential values the connector replaced (a rotated refresh token) with
    /// the connection. A failure is logged (without the values): the run's data is safe,
    /// and the next run may have to be re-authorized.
    async fn store_credential_updates(
        &self,
        row: &ConnectionRow,
        connector: &dyn crate::connector::SyncCapable,
        credentials: Option<&crate::store::Credentials>,
    ) {
        let updates = connector.credential_updates();
        if updates.is_empty() {
            return;
        }
        let stored = persist_credentials(
            self.store.as_ref(),
            row.workspace_id,
            row.connector,
            credentials,
            &updates,
        );
        match stored.await {
            Ok(()) => tracing::info!(
                connector = %row.connector,
                keys = ?updates.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
                "stored credentials the provider rotated"
            ),
            Err(e) => tracing::error!(
                connector = %row.connector,
                error = %e,
                "storing rotated credentials failed; the connection may need re-authorization"
            ),
        }
    }

    async fn close_log(
        &self,
        row: &ConnectionRow,
        result: &ConnectorResult,
        report: Option<&SyncReport>,
        error: Option<&Error>,
    ) {
        let ws = row.workspace_id;
        let kind = row.connector;
        let now = Utc::now();
        let outcome = SyncOutcome {
            status: result.status,
            records_synced: result.counts.written(),
            errors: result.errors.clone(),
            error_message: result.error.clone(),
        };
        let mut cursor = serde_json::Map::new();
        cursor.insert("lastSyncMode".into(), serde_json::json!(result.mode));
        cursor.insert("lastSyncAt".into(), serde_json::json!(now));
        cursor.insert(
            "lastSyncRecords".into(),
            serde_json::json!(result.counts.written()),
        );
        cursor.insert(
            "usedExportApi".into(),
            serde_json::json!(report.is_some_and(|r| r.used_export_api)),
        );
        // A rate-limited stop is not failed, so the connection is not in error either.
        let (status, message) = if result.status == SyncStatus::Failed {
            (ConnectionStatus::Error, result.error.as_deref())
        } else {
            (ConnectionStatus::Synced, None)
        };
        let steps = async {
            self.store.finish_sync(ws, result.sync_id, &outcome).await?;
            self.store.merge_sync_cursor(ws, kind, &cursor).await?;
            if error.is_none() {
                self.store.set_last_sync_at(ws, kind, now).await?;
            }
            self.store
                .set_connection_status(ws, kind, status, message)
                .await
        };
        if let Err(e) = steps.await {
            tracing::error!(error = %e, "recording the sync's outcome failed");
        }
    }
}

/// Stores `updates` over the connection's credentials `base` (sealed with the store's key).
async fn persist_credentials(
    store: &dyn crate::store::SyncStore,
    workspace_id: uuid::Uuid,
    connector: crate::model::ConnectorKind,
    base: Option<&crate::store::Credentials>,
    updates: &[(String, secrecy::SecretString)],
) -> Result<()> {
    let mut json = match base {
        Some(c) => c.expose_json()?,
        None => serde_json::json!({}),
    };
    if let Some(map) = json.as_object_mut() {
        for (key, value) in updates {
            map.insert(
                key.clone(),
                serde_json::Value::String(secrecy::ExposeSecret::expose_secret(value).to_owned()),
            );
        }
    }
    let sealed = crate::store::Credentials::from_json(json)?;
    store
        .set_credentials(workspace_id, connector, Some(&sealed))
        .await
}
