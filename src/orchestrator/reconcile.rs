//! Reconciliation: the provider's totals against the live rows stored (see the
//! [module docs](super)).

use chrono::Utc;

use super::Orchestrator;
use crate::connector::{Checkpoint, SyncReport};
use crate::store::{ConnectionRow, Reconciliation, SyncErrors};

impl Orchestrator {
    /// Compares the provider's totals (streams read in full) with the live rows stored,
    /// records both in `errors.reconciliation`, and on a gap beyond the changes made during
    /// the pass (see [`Reconciliation`]) adds a warning and flags the stream for a
    /// repairing full pass (`repair` in the stored checkpoint). Never fails the run: a
    /// store error here becomes a warning.
    pub(super) async fn reconcile(
        &self,
        row: &ConnectionRow,
        report: &SyncReport,
        previous: &Checkpoint,
        run_started: chrono::DateTime<Utc>,
        failed: u64,
        errors: &mut SyncErrors,
    ) {
        if report.source_totals.is_empty() {
            return;
        }
        let (ws, source) = (row.workspace_id, row.connector);
        let mut repair = Vec::new();
        for t in &report.source_totals {
            // A resumed pass began in an earlier run: its changes count from then.
            let pass_start = previous
                .stream(&t.stream)
                .and_then(|s| s.pass_started_at)
                .map_or(run_started, |p| p.min(run_started));
            let (stored, in_flight) = match self
                .store
                .count_live_records(ws, t.kind, source, pass_start)
                .await
            {
                Ok(c) => (c.live, c.updated_since),
                Err(e) => {
                    errors
                        .warnings
                        .push(format!("{}: reconciliation failed: {e}", t.stream));
                    continue;
                }
            };
            let gap = t.total.saturating_sub(stored);
            let needs_repair = gap > in_flight.saturating_add(failed);
            if needs_repair {
                tracing::warn!(stream = %t.stream, total = t.total, stored, in_flight, "reconciliation gap; a repairing pass runs next sync");
                errors.warnings.push(format!(
                    "{}: the provider reports {} live {} records, {} are stored ({} changed \
                     during the pass); a repairing full pass runs at the next sync",
                    t.stream,
                    t.total,
                    t.kind.table(),
                    stored,
                    in_flight
                ));
                repair.push(t.stream.clone());
            }
            errors.reconciliation.push(Reconciliation {
                stream: t.stream.clone(),
                kind: t.kind,
                source_total: t.total,
                stored,
                in_flight,
                failed,
                repair: needs_repair,
            });
        }
        if repair.is_empty() {
            return;
        }
        let flagged = async {
            let mut checkpoint = self
                .store
                .get_connection(ws, source)
                .await?
                .map(|c| c.checkpoint())
                .transpose()?
                .unwrap_or_default();
            for stream in &repair {
                checkpoint.stream_mut(stream).repair = true;
            }
            let mut members = serde_json::Map::new();
            members.insert("streams".into(), serde_json::to_value(&checkpoint.streams)?);
            self.store.merge_sync_cursor(ws, source, &members).await
        };
        if let Err(e) = flagged.await {
            errors
                .warnings
                .push(format!("scheduling the repairing pass failed: {e}"));
        }
    }
}
