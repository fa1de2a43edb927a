//! The Fireflies sync: one stream, [`STREAM`] (`transcripts`), read newest first by a
//! **date keyset** over `transcripts(fromDate, toDate, limit: 50, skip)`.
//!
//! `skip` is an offset over a list that moves while it is read (a transcript processed or
//! deleted between two pages shifts every later offset), so a pass never steps it over the
//! whole list. Each page is a fresh query bounded above by `toDate` = just past the oldest
//! `date` read so far (`boundary + 1 ms`, whether Fireflies treats `toDate` as inclusive or
//! not), with `skip: 0`, and its rows are de-duplicated by id against the rows already read
//! at that boundary. Only when a whole page lies on the boundary instant (more than a page
//! of transcripts on one `date`) does the pass step `skip` within that bound, by 40 with a
//! page of 50, so consecutive pages overlap by 10 rows: a page that shares no row with what
//! was read shows that the list moved under the offset, and the instant is read again from
//! `skip: 0` (at most [`MAX_TIE_RESTARTS`] times).
//!
//! The stream's checkpoint:
//! - `cursor`: the pass in progress ([`Cursor`]: the boundary instant, the `skip` within
//!   it, and the ids read at the boundary with a hash of their content);
//! - `pass_started_at`: the pass's upper bound (the first page's `toDate`), and
//!   `extra.window_from` its lower bound (`fromDate`, epoch ms; none for the whole
//!   history);
//! - `watermark`: the newest `date` stored (capped at the pass's start minus the lag);
//!   Fireflies has no updated-at, so incremental passes start `overlap_hours` before it;
//! - `extra.recent`: `{id: date}` of the transcripts the last finished pass read inside
//!   the next pass's window, and `extra.pass_seen` the same for the pass in progress. A
//!   transcript of `recent` the next pass no longer lists has been deleted: it is
//!   soft-deleted (`archived_at`), never removed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::FirefliesConfig;
use super::client::{FirefliesClient, graphql_error, list_query, sentences_query};
use super::transform::{self, InternalDomains};
use super::types::{FfSentence, date_ms};
use crate::connector::{Checkpoint, Deletion, RecordSink, SyncContext, SyncReport};
use crate::connectors::page::{capture_page, write_page};
use crate::error::{Error, Result};
use crate::model::{Record, RecordKind};

/// The stream of transcripts.
pub(crate) const STREAM: &str = "transcripts";
/// Transcripts per page: Fireflies' maximum.
pub(crate) const PAGE_LIMIT: u64 = 50;
/// How far `skip` steps inside one instant: pages overlap by `PAGE_LIMIT − TIE_STEP` rows.
pub(crate) const TIE_STEP: u64 = 40;
/// How often one instant may be read again after the list moved under the offset.
pub(crate) const MAX_TIE_RESTARTS: u32 = 3;
/// Transcripts whose sentences one request reads (`include_sentences`).
pub(crate) const SENTENCE_BATCH: usize = 10;

const WINDOW_FROM: &str = "window_from";
const RECENT: &str = "recent";
const PASS_SEEN: &str = "pass_seen";

/// What a sync run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Initial,
    Incremental,
}

/// Where a pass in progress stands (stored as JSON in the stream's `cursor`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// The boundary instant (epoch ms): the next page asks for `toDate = b + 1 ms`.
    pub b: i64,
    /// The offset inside that bound (0 unless a whole page lay on the boundary).
    #[serde(default)]
    pub skip: u64,
    /// The rows read at `b` and `b + 1 ms`: id → (date, content hash).
    #[serde(default)]
    pub near: BTreeMap<String, (i64, u64)>,
    /// How often this boundary was read again from `skip: 0`.
    #[serde(default)]
    pub restarts: u32,
}

impl Cursor {
    pub(crate) fn parse(s: &str) -> Option<Cursor> {
        serde_json::from_str(s).ok()
    }
}

/// The next cursor after a full page whose rows are `rows` (id, date, hash), read with
/// `cursor` (`None`: the pass's first page). `Err` when the list keeps moving under a tie.
pub(crate) fn advance(cursor: Option<&Cursor>, rows: &[(String, i64, u64)]) -> Result<Cursor> {
    let Some(oldest) = rows.iter().map(|r| r.1).min() else {
        return Err(Error::decode(
            None,
            "Fireflies returned a full page without a readable date: stopping instead of looping",
        ));
    };
    let b = cursor.map_or(i64::MAX, |c| c.b);
    let near_of = |map: &mut BTreeMap<String, (i64, u64)>, bound: i64| {
        for (id, d, h) in rows {
            map.insert(id.clone(), (*d, *h));
        }
        map.retain(|_, (d, _)| *d == bound || *d == bound.saturating_add(1));
    };
    let moved_on = match cursor {
        None => rows.iter().any(|r| r.1 > oldest),
        Some(_) => oldest < b,
    };
    if moved_on {
        let mut near = cursor.map(|c| c.near.clone()).unwrap_or_default();
        near_of(&mut near, oldest);
        return Ok(Cursor {
            b: oldest,
            skip: 0,
            near,
            restarts: 0,
        });
    }
    // The whole page lies on the boundary: step the offset inside it.
    let mut next = cursor.cloned().unwrap_or(Cursor {
        b: oldest,
        ..Cursor::default()
    });
    let known = |r: &(String, i64, u64)| next.near.contains_key(&r.0);
    // Past the first page of the instant, a page shares its first rows with the one before
    // and brings new ones; sharing none (rows deleted before the offset) or bringing none
    // (rows deleted, or an offset not honoured) means the list moved under the offset.
    let moved = !rows.iter().any(known) || rows.iter().all(known);
    if next.skip > 0 && moved {
        next.restarts += 1;
        if next.restarts > MAX_TIE_RESTARTS {
            return Err(Error::decode(
                None,
                format!(
                    "Fireflies transcripts on {} keep moving under the offset: stopping instead of looping",
                    fmt_ms(next.b)
                ),
            ));
        }
        next.skip = 0;
    } else {
        next.skip += TIE_STEP;
    }
    let bound = next.b;
    near_of(&mut next.near, bound);
    Ok(next)
}

/// Epoch ms as Fireflies' `DateTime` (`2024-01-01T00:00:00.000Z`).
pub(crate) fn fmt_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or(DateTime::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn content_hash(raw: &Value) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    raw.to_string().hash(&mut h);
    h.finish()
}

fn ms_map(v: Option<&Value>) -> BTreeMap<String, i64> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `t − hours`, never before the epoch, in ms.
fn minus_hours(t: DateTime<Utc>, hours: u32) -> i64 {
    t.timestamp_millis()
        .saturating_sub(i64::from(hours).saturating_mul(3_600_000))
        .max(0)
}

pub(crate) struct Syncer<'a> {
    pub(crate) client: &'a FirefliesClient,
    pub(crate) config: &'a FirefliesConfig,
    pub(crate) ctx: &'a SyncContext,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) report: SyncReport,
    /// The configured internal domains, or `None` to take the team's.
    configured: Option<InternalDomains>,
    /// The domains in force this run.
    pub(crate) internal: InternalDomains,
    /// Whether the team's emails were read this run.
    team_read: bool,
    pub(crate) pages: u64,
    pub(crate) deleted: u64,
    pub(crate) passes: u64,
}

impl<'a> Syncer<'a> {
    pub(crate) fn new(
        client: &'a FirefliesClient,
        config: &'a FirefliesConfig,
        internal_domains: Option<InternalDomains>,
        ctx: &'a SyncContext,
        checkpoint: Checkpoint,
    ) -> Self {
        Syncer {
            client,
            config,
            ctx,
            checkpoint,
            report: SyncReport::default(),
            internal: internal_domains.clone().unwrap_or_default(),
            configured: internal_domains,
            team_read: false,
            pages: 0,
            deleted: 0,
            passes: 0,
        }
    }

    /// Runs the passes the mode needs: the pass in progress (or a new one), then, when that
    /// pass was begun by an earlier run, one follow-up pass for what changed since.
    pub(crate) async fn run(&mut self, mode: Mode, sink: &mut dyn RecordSink) -> Result<()> {
        let mut mode = mode;
        loop {
            let resumed = self.pass(mode, sink).await?;
            self.passes += 1;
            if !resumed {
                return Ok(());
            }
            mode = Mode::Incremental;
        }
    }

    /// The lower bound of a new pass: the lookback for an initial pass (or a stream that
    /// never finished one), else the watermark minus the overlap.
    fn window_from(&self, mode: Mode) -> Option<i64> {
        let lookback = self
            .config
            .lookback_days
            .map(|d| minus_hours(self.ctx.started_at(), d.saturating_mul(24)));
        let watermark = self.checkpoint.watermark(STREAM);
        match (mode, watermark) {
            (Mode::Incremental, Some(w)) => {
                let from = minus_hours(w, self.config.overlap_hours);
                Some(lookback.map_or(from, |l| from.max(l)))
            }
            _ => lookback,
        }
    }

    /// One pass; returns whether it was begun by an earlier run.
    async fn pass(&mut self, mode: Mode, sink: &mut dyn RecordSink) -> Result<bool> {
        let new_from = self.window_from(mode);
        let s = self.checkpoint.stream_mut(STREAM);
        let mut cursor = s.cursor.as_deref().and_then(Cursor::parse);
        if cursor.is_none() {
            // A new pass (or an unreadable stored cursor: start the window again).
            s.cursor = None;
            s.pass_started_at = None;
            s.pass_max_updated_at = None;
            s.extra.remove(PASS_SEEN);
            match new_from {
                Some(f) => s.extra.insert(WINDOW_FROM.into(), json!(f)),
                None => s.extra.remove(WINDOW_FROM),
            };
        }
        let until = s.begin_pass(self.ctx).timestamp_millis();
        let from = s.extra.get(WINDOW_FROM).and_then(Value::as_i64);
        let recent = ms_map(s.extra.get(RECENT));
        let mut seen = ms_map(s.extra.get(PASS_SEEN));
        let overlap = i64::from(self.config.overlap_hours).saturating_mul(3_600_000);
        let old_watermark = s.watermark.map(|w| w.timestamp_millis());
        let cap = self
            .ctx
            .cap_for(s.pass_started_at.unwrap_or(self.ctx.started_at()))
            .timestamp_millis();
        loop {
            self.ctx.check_cancelled()?;
            let (rows, data_users) = self.list_page(from, until, cursor.as_ref()).await?;
            self.pages += 1;
            let full = rows.len() as u64 >= PAGE_LIMIT;
            let listed: Vec<String> = rows.iter().filter_map(transform::transcript_id).collect();
            let keyed: Vec<(String, i64, u64)> = rows
                .iter()
                .filter_map(|r| Some((transform::transcript_id(r)?, date_ms(r)?, content_hash(r))))
                .collect();
            if let Some(users) = data_users {
                self.take_team(&users);
            }
            // Rows already read at the boundary with the same content are left out.
            let near = cursor.as_ref().map(|c| &c.near);
            let fresh: Vec<Value> = rows
                .into_iter()
                .filter(|r| {
                    let (Some(id), Some(n)) = (transform::transcript_id(r), near) else {
                        return true;
                    };
                    n.get(&id).is_none_or(|(_, h)| *h != content_hash(r))
                })
                .collect();
            let sentences = if self.config.include_sentences {
                self.sentences(&fresh).await?
            } else {
                HashMap::new()
            };
            let ws = self.ctx.workspace_id();
            let internal = self.internal.clone();
            let mut dates = Vec::new();
            let mut batch = capture_page(fresh, transform::transcript_id, |raw| {
                let t = transform::decode(raw)?;
                let id = super::types::id_string(Some(&t.id)).unwrap_or_default();
                let c = transform::conversation(
                    ws,
                    &t,
                    &internal,
                    sentences.get(&id).map(Vec::as_slice),
                )?;
                if let Some(d) = c.started_at {
                    dates.push(d);
                }
                Ok([Record::Conversation(c)])
            });
            // Every id listed counts as present (a malformed transcript is not deleted).
            let s = self.checkpoint.stream_mut(STREAM);
            for d in &dates {
                s.observe(*d);
            }
            let pass_max = s.pass_max_updated_at.map(|d| d.timestamp_millis());
            let horizon = old_watermark
                .into_iter()
                .chain(pass_max.map(|m| m.min(cap)))
                .max()
                .map(|w| w.saturating_sub(overlap));
            let keep_from = recent.values().copied().chain(horizon).min();
            for (id, d, _) in &keyed {
                if keep_from.is_some_and(|k| *d >= k) {
                    seen.insert(id.clone(), *d);
                }
            }
            // A transcript listed without a readable date (served malformed) is present.
            for id in &listed {
                if let Some(d) = recent.get(id) {
                    seen.entry(id.clone()).or_insert(*d);
                }
            }
            let next = if full {
                Some(advance(cursor.as_ref(), &keyed)?)
            } else {
                None
            };
            let resumed = match &next {
                Some(c) => {
                    s.cursor = Some(serde_json::to_string(c)?);
                    s.extra.insert(PASS_SEEN.into(), json!(seen));
                    false
                }
                None => {
                    // The pass is complete: what the last one read inside this window and
                    // this one no longer lists was deleted.
                    for (id, d) in &recent {
                        if !seen.contains_key(id) && from.is_none_or(|f| *d >= f) && *d <= until {
                            batch.deletions.push(Deletion {
                                kind: RecordKind::Conversation,
                                source_id: id.clone(),
                                deleted_at: self.ctx.started_at(),
                            });
                        }
                    }
                    self.deleted += batch.deletions.len() as u64;
                    let resumed = s.finish_pass_in(self.ctx);
                    let next_from = s
                        .watermark
                        .map(|w| w.timestamp_millis().saturating_sub(overlap));
                    seen.retain(|_, d| next_from.is_some_and(|f| *d >= f));
                    s.extra.insert(RECENT.into(), json!(seen));
                    s.extra.remove(PASS_SEEN);
                    s.extra.remove(WINDOW_FROM);
                    resumed
                }
            };
            let message = format!(
                "fireflies: {} transcripts",
                self.report.records_fetched + batch.records.len() as u64
            );
            write_page(
                sink,
                batch,
                &self.checkpoint,
                &mut self.report,
                self.ctx,
                &message,
            )
            .await?;
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(resumed),
            }
        }
    }

    /// The team's emails read with the first page: the internal domains unless configured.
    fn take_team(&mut self, users: &[Value]) {
        self.team_read = true;
        if self.configured.is_none() {
            self.internal = InternalDomains::of_team(
                users
                    .iter()
                    .filter_map(|u| u.get("email").and_then(Value::as_str)),
            );
        }
    }

    /// One page of transcripts (and, on the run's first request without configured
    /// domains, the team's users).
    async fn list_page(
        &self,
        from: Option<i64>,
        until: i64,
        cursor: Option<&Cursor>,
    ) -> Result<(Vec<Value>, Option<Vec<Value>>)> {
        let with_users = self.configured.is_none() && !self.team_read;
        let to = cursor.map_or(until, |c| c.b.saturating_add(1));
        let vars = json!({
            "fromDate": from.map(fmt_ms),
            "toDate": fmt_ms(to),
            "limit": PAGE_LIMIT,
            "skip": cursor.map_or(0, |c| c.skip),
        });
        let resp = self.client.query(&list_query(with_users), vars).await?;
        let data = resp.data.unwrap_or(Value::Null);
        let rows = match data.get("transcripts") {
            Some(Value::Array(rows)) => rows.clone(),
            _ => {
                return Err(match resp.errors.as_ref().and_then(|e| e.first()) {
                    Some(e) => graphql_error(e),
                    None => Error::decode(None, "Fireflies answered without a transcripts list"),
                });
            }
        };
        if rows.len() as u64 > PAGE_LIMIT {
            return Err(Error::decode(
                None,
                format!(
                    "Fireflies returned {} transcripts for a limit of {PAGE_LIMIT}",
                    rows.len()
                ),
            ));
        }
        let users = if with_users {
            match data.get("users") {
                Some(Value::Array(u)) => Some(u.clone()),
                _ => {
                    tracing::warn!(
                        "Fireflies did not list the team's users; no participant is marked internal"
                    );
                    Some(Vec::new())
                }
            }
        } else {
            None
        };
        Ok((rows, users))
    }

    /// The sentences of `rows`, [`SENTENCE_BATCH`] transcripts per request.
    async fn sentences(&self, rows: &[Value]) -> Result<HashMap<String, Vec<FfSentence>>> {
        let ids: Vec<String> = rows.iter().filter_map(transform::transcript_id).collect();
        let mut out = HashMap::new();
        for chunk in ids.chunks(SENTENCE_BATCH) {
            self.ctx.check_cancelled()?;
            let vars: serde_json::Map<String, Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| (format!("id{i}"), json!(id)))
                .collect();
            let resp = self
                .client
                .query(&sentences_query(chunk.len()), Value::Object(vars))
                .await?;
            // A transcript deleted since the list answers `object_not_found` alone: it is
            // stored without its text.
            match resp.data {
                Some(d @ Value::Object(_)) => out.extend(transform::sentences_of(&d)),
                _ => {
                    if let Some(e) = resp.errors.as_ref().and_then(|e| e.first()) {
                        return Err(graphql_error(e));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(spec: &[(&str, i64)]) -> Vec<(String, i64, u64)> {
        spec.iter()
            .map(|(id, d)| ((*id).to_owned(), *d, 1))
            .collect()
    }

    #[test]
    fn the_boundary_moves_to_the_oldest_date_with_its_rows() {
        let c = advance(None, &rows(&[("a", 30), ("b", 20), ("c", 10), ("d", 10)])).unwrap();
        assert_eq!((c.b, c.skip), (10, 0));
        assert_eq!(c.near.keys().collect::<Vec<_>>(), ["c", "d"]);
        // The next page re-reads c and d at 10 and moves on; 9 is b + 1 of the next bound.
        let c = advance(Some(&c), &rows(&[("c", 10), ("d", 10), ("e", 9), ("f", 8)])).unwrap();
        assert_eq!((c.b, c.skip), (8, 0));
        assert_eq!(c.near.keys().collect::<Vec<_>>(), ["e", "f"]);
    }

    #[test]
    fn a_page_on_one_instant_steps_the_offset_with_overlap() {
        let tie: Vec<(String, i64, u64)> = (0..50).map(|i| (format!("t{i}"), 5, 1)).collect();
        let c = advance(None, &tie).unwrap();
        assert_eq!((c.b, c.skip, c.near.len()), (5, TIE_STEP, 50));
        let more: Vec<(String, i64, u64)> = (40..90).map(|i| (format!("t{i}"), 5, 1)).collect();
        let c = advance(Some(&c), &more).unwrap();
        assert_eq!((c.b, c.skip, c.near.len()), (5, 2 * TIE_STEP, 90));
        // A page sharing nothing with what was read: the list moved, read the instant again.
        let moved: Vec<(String, i64, u64)> = (200..250).map(|i| (format!("t{i}"), 5, 1)).collect();
        let mut c = advance(Some(&c), &moved).unwrap();
        assert_eq!((c.skip, c.restarts), (0, 1));
        c.skip = TIE_STEP;
        c.restarts = MAX_TIE_RESTARTS;
        let moved: Vec<(String, i64, u64)> = (300..350).map(|i| (format!("t{i}"), 5, 1)).collect();
        assert!(advance(Some(&c), &moved).is_err());
        assert!(advance(None, &[]).is_err());
        // An offset that is not honoured (the same page again) stops instead of looping.
        let mut c = advance(None, &tie).unwrap();
        for _ in 0..=MAX_TIE_RESTARTS * 2 {
            match advance(Some(&c), &tie) {
                Ok(next) => c = next,
                Err(e) => {
                    assert!(e.to_string().contains("keep moving"), "{e}");
                    return;
                }
            }
        }
        panic!("looped on a page that never changes");
    }
}
