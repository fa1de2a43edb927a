//! The queue's sync job handler: runs a [`SYNC_JOB`](crate::queue::SYNC_JOB) through the
//! orchestrator and maps the result to the job's outcome.

use std::time::Duration;

use async_trait::async_trait;

use super::{Orchestrator, SyncOptions};
use crate::error::{Error, Result};
use crate::outcome::WorkspaceSyncResult;
use crate::queue::{Job, JobContext, JobHandler};
use crate::scheduler::SyncJobPayload;
use crate::store::SyncStatus;

/// Runs [`SYNC_JOB`](crate::queue::SYNC_JOB)s from the worker through the orchestrator.
///
/// Progress goes to the job. A sync with a failed connector returns
/// [`Error::SyncFailed`], so the attempt fails and is retried with backoff; a sync stopped
/// by a rate limit or a daily quota is returned as that error, so the worker snoozes the job
/// (to the quota's reset) instead of failing it; a workspace already syncing is a snooze too
/// (the lock frees up soon). Only a completed (or completed-with-errors) sync completes the
/// job. Each attempt records its own `sync_log` rows: the first uses the trigger's pending
/// row, a retry records fresh ones.
#[derive(Debug, Clone)]
pub struct SyncJobHandler {
    orchestrator: Orchestrator,
}

impl SyncJobHandler {
    /// A handler running syncs on `orchestrator`.
    pub fn new(orchestrator: Orchestrator) -> Self {
        SyncJobHandler { orchestrator }
    }
}

#[async_trait]
impl JobHandler for SyncJobHandler {
    async fn run(&self, job: Job, ctx: JobContext) -> Result<serde_json::Value> {
        let payload: SyncJobPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| Error::config(format!("invalid sync job payload: {e}")))?;
        // A retried job (snoozed, rescued) finds its run already finished: it then records
        // fresh per-connector runs.
        let sync_id = match self
            .orchestrator
            .store()
            .get_sync(job.workspace_id, payload.sync_id)
            .await?
        {
            Some(s) if s.status == SyncStatus::Pending => Some(s.id),
            _ => None,
        };
        let options = SyncOptions {
            connectors: payload.connector.map(|c| vec![c]),
            mode: payload.mode,
            sync_id,
            cancel: ctx.cancel_token().clone(),
            progress: Some(ctx.progress().clone()),
        };
        let result = match self
            .orchestrator
            .sync_workspace(job.workspace_id, options)
            .await
        {
            Ok(r) => r,
            Err(Error::Conflict { message, .. }) => {
                tracing::info!(%message, "workspace busy; snoozing the job");
                return Err(Error::RateLimited {
                    provider: "pandora_sync".into(),
                    retry_after: Some(Duration::from_secs(60)),
                });
            }
            Err(e) => return Err(e),
        };
        job_outcome(result)
    }
}

/// What a finished workspace sync means for its job (DESIGN 4.9): a failed connector fails
/// the attempt (retried with backoff while attempts remain); otherwise a connector stopped
/// by an exhausted quota snoozes the job until the reset, one stopped by a rate limit for
/// its `retry_after` (no attempt spent; the checkpoint is committed, so the next attempt
/// resumes where it stopped); only a completed run completes the job.
fn job_outcome(result: WorkspaceSyncResult) -> Result<serde_json::Value> {
    let failed: Vec<String> = result
        .connectors
        .iter()
        .filter(|c| c.status == SyncStatus::Failed)
        .map(|c| {
            format!(
                "{}: {}",
                c.connector,
                c.error.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(Error::SyncFailed {
            message: failed.join("; "),
        });
    }
    let limited = result.connectors.iter().filter(|c| c.rate_limited);
    let quota = limited
        .clone()
        .filter_map(|c| {
            c.errors
                .rate_limited
                .as_ref()
                .filter(|r| r.quota)
                .map(|r| (c, r))
        })
        // The latest known reset; an unknown one (next midnight at the latest) wins.
        .max_by_key(|(_, r)| r.resets_at.map_or((1, None), |at| (0, Some(at))));
    if let Some((c, stop)) = quota {
        return Err(Error::QuotaExhausted {
            provider: c.connector.to_string().into(),
            resets_at: stop.resets_at,
        });
    }
    if let Some(c) = limited.max_by_key(|c| c.retry_after_ms) {
        return Err(Error::RateLimited {
            provider: c.connector.to_string().into(),
            retry_after: c.retry_after_ms.map(Duration::from_millis),
        });
    }
    Ok(serde_json::to_value(&result)?)
}
