//! The Drive sync: one stream, [`STREAM`] (`files`).
//!
//! **Initial scan.** The changes feed's start token is taken *before* the scan
//! (`extra.scan_token`), so what changes while the scan runs is read by the next
//! incremental sync. The scan is `files.list` with `trashed = false` (or, with `folders`,
//! `'<folder>' in parents and trashed = false` for each folder of those subtrees, breadth
//! first, the folders still to list in `extra.queue` and the folders in scope in
//! `extra.scope`), 1000 files a page, explicit `fields`. The stream's `cursor` is the page
//! in progress (`{"folder", "page"}`); a rejected page token restarts that listing from its
//! first page, as Drive asks. On the last page the trashed folders are listed once
//! (`extra.trashed_folders`, so an untrashed folder brings its contents back) and the scan
//! token becomes `extra.start_token`.
//!
//! **Incremental sync** reads the changes feed only, from `extra.start_token` (a token Drive
//! rejects on the first page, 400/404/410, is dropped and the corpus scanned again); each page's
//! records commit with the token of the next page (`nextPageToken`, or on the last page
//! `newStartPageToken`). Per change:
//! - `removed` → the document is archived (`archived_at` = the change's time);
//! - a trashed file → stored as an archived document (its metadata; no text is sent, the
//!   store keeps the stored text) with
//!   `archived_at` just before its `modifiedTime`: Drive reports no trash time for My Drive
//!   files, and the store restores an archived row only with a version newer than its
//!   archive time, which the same version coming back untrashed then is;
//! - a trashed folder → every file of its subtree archived (listed with `'<id>' in
//!   parents`, trashed included: Drive need not report a trashed folder's contents); an
//!   untrashed folder lists its subtree again and stores it;
//! - with `folders`: a folder that enters the scope (created, moved in) brings its subtree
//!   in; one that leaves it archives its subtree; a file outside the scope is archived;
//! - any other file is stored; its text is read only when its content may have changed
//!   since the previous run: `modifiedTime` at or after the instant the stored token was
//!   taken (`extra.token_time`, less [`CLOCK_SKEW`]; Drive moves `modifiedTime` on content
//!   edits, not on renames or moves), or the file was trashed when last seen
//!   (`extra.trashed_files`: a file trashed before the scan has no stored text), or it comes
//!   from a listed subtree, or `folders` is set (a file moved into the scope has no row).
//!   Otherwise the record carries no text and the store keeps the stored one.

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::GoogleDriveConfig;
use super::client::DriveClient;
use super::transform::{self, TextSource, archive_time, text_source};
use super::types::{Change, DriveFile, FOLDER_MIME};
use crate::capture::RecordFailure;
use crate::connector::{Checkpoint, Deletion, RecordBatch, RecordSink, SyncContext, SyncReport};
use crate::connectors::page::{capture_page, write_page};
use crate::error::{Error, Result};
use crate::model::{Record, RecordKind};

/// The stream of files.
pub(crate) const STREAM: &str = "files";
/// The changes token incremental syncs read from.
pub(crate) const START_TOKEN: &str = "start_token";
/// The changes token taken before the scan in progress.
pub(crate) const SCAN_TOKEN: &str = "scan_token";
const SCAN_TOKEN_TIME: &str = "scan_token_time";
const QUEUE: &str = "queue";
const SCOPE: &str = "scope";
const TRASHED_FOLDERS: &str = "trashed_folders";
/// The trashed (non-folder) files last seen, read with their text when they come back.
const TRASHED_FILES: &str = "trashed_files";
/// When the stored changes token was taken (RFC 3339, this machine's clock).
const TOKEN_TIME: &str = "token_time";
/// The margin for the difference between this machine's clock and Drive's: a file modified
/// up to this long before the token was taken is read again.
pub(crate) const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(1);
/// Content requests in flight at once (each still passes the throttle).
const CONTENT_CONCURRENCY: usize = 8;

/// What a sync run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Initial,
    Incremental,
}

/// The page of the scan in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScanCursor {
    /// The folder being listed (`folders` config), `None` for the whole corpus.
    #[serde(default)]
    pub folder: Option<String>,
    /// The next page's token.
    #[serde(default)]
    pub page: Option<String>,
}

/// Whether an error ends the whole sync rather than one file.
pub(crate) fn stops_the_sync(e: &Error) -> bool {
    match e {
        Error::Api { status, .. } => matches!(status, 401 | 408 | 429 | 500..=599),
        Error::Decode { .. } => false,
        _ => true,
    }
}

fn string_set(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A folder id as a `q` literal (`'` and `\` escaped).
pub(crate) fn q_literal(id: &str) -> String {
    format!("'{}'", id.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub(crate) struct Syncer<'a> {
    pub(crate) client: &'a DriveClient,
    pub(crate) config: &'a GoogleDriveConfig,
    pub(crate) ctx: &'a SyncContext,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) report: SyncReport,
    pub(crate) list_pages: u64,
    pub(crate) change_pages: u64,
    pub(crate) content_fetches: u64,
    pub(crate) archived: u64,
}

impl<'a> Syncer<'a> {
    pub(crate) fn new(
        client: &'a DriveClient,
        config: &'a GoogleDriveConfig,
        ctx: &'a SyncContext,
        checkpoint: Checkpoint,
    ) -> Self {
        Syncer {
            client,
            config,
            ctx,
            checkpoint,
            report: SyncReport::default(),
            list_pages: 0,
            change_pages: 0,
            content_fetches: 0,
            archived: 0,
        }
    }

    fn folder_mode(&self) -> bool {
        !self.config.folders.is_empty()
    }

    /// Initial: the scan. Incremental: finishes a scan in progress (or makes the first),
    /// then reads the changes feed.
    pub(crate) async fn run(&mut self, mode: Mode, sink: &mut dyn RecordSink) -> Result<()> {
        let s = self.checkpoint.stream(STREAM);
        let scanning = s.is_some_and(|s| s.extra.contains_key(SCAN_TOKEN));
        let has_token = s.is_some_and(|s| s.extra.contains_key(START_TOKEN));
        match mode {
            Mode::Initial => self.scan(sink).await,
            Mode::Incremental => {
                if scanning || !has_token {
                    self.scan(sink).await?;
                }
                match self.changes(sink).await {
                    // A stored token Drive no longer accepts: scan again (idempotent
                    // upserts) from a new token rather than fail every run from now on.
                    Err(Error::Api {
                        status: 400 | 404 | 410,
                        ..
                    }) if self.change_pages == 0 => {
                        tracing::warn!("Drive rejected the stored changes token; scanning again");
                        self.checkpoint.stream_mut(STREAM).extra.remove(START_TOKEN);
                        self.scan(sink).await?;
                        self.changes(sink).await
                    }
                    r => r,
                }
            }
        }
    }

    async fn write(&mut self, sink: &mut dyn RecordSink, batch: RecordBatch) -> Result<()> {
        self.archived += batch.deletions.len() as u64;
        let message = format!(
            "google-drive: {} documents",
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
        .await
    }

    /// The initial scan (see the module docs).
    async fn scan(&mut self, sink: &mut dyn RecordSink) -> Result<()> {
        let folder_mode = self.folder_mode();
        if !self
            .checkpoint
            .stream(STREAM)
            .is_some_and(|s| s.extra.contains_key(SCAN_TOKEN))
        {
            // The start token first: changes made during the scan are read next time.
            let taken = Utc::now();
            let token = self.client.start_page_token().await?;
            let roots = self.config.folders.clone();
            let s = self.checkpoint.stream_mut(STREAM);
            s.cursor = None;
            s.pass_started_at = None;
            s.pass_max_updated_at = None;
            s.extra.insert(SCAN_TOKEN.into(), json!(token));
            s.extra.insert(SCAN_TOKEN_TIME.into(), json!(taken));
            if folder_mode {
                s.extra.insert(QUEUE.into(), json!(roots));
                s.extra.insert(SCOPE.into(), json!(roots));
            } else {
                s.extra.remove(QUEUE);
                s.extra.remove(SCOPE);
            }
        }
        let s = self.checkpoint.stream_mut(STREAM);
        s.begin_pass(self.ctx);
        let mut cursor: ScanCursor = s
            .cursor
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default();
        let mut queue: VecDeque<String> = s
            .extra
            .get(QUEUE)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut scope = string_set(s.extra.get(SCOPE));
        if folder_mode && cursor.folder.is_none() {
            cursor.folder = queue.pop_front();
        }
        loop {
            self.ctx.check_cancelled()?;
            let mut files = Vec::new();
            let mut next_page = None;
            if !folder_mode || cursor.folder.is_some() {
                let q = match &cursor.folder {
                    Some(f) => format!("{} in parents and trashed = false", q_literal(f)),
                    None => "trashed = false".to_owned(),
                };
                let page = match self.client.list_files(&q, cursor.page.as_deref()).await {
                    Err(Error::Api { status: 400, .. }) if cursor.page.is_some() => {
                        // "If the token is rejected for any reason, it should be discarded,
                        // and pagination should be restarted from the first page."
                        tracing::warn!("Drive rejected a files.list page token; listing again");
                        cursor.page = None;
                        continue;
                    }
                    r => r?,
                };
                self.list_pages += 1;
                if page.incomplete_search {
                    tracing::warn!("Drive reported an incomplete search for this listing");
                }
                if page.next_page_token.is_some() && page.next_page_token == cursor.page {
                    return Err(Error::decode(
                        None,
                        "Drive returned the same page token twice: stopping instead of looping",
                    ));
                }
                next_page = page.next_page_token;
                for raw in page.files {
                    if raw.get("mimeType").and_then(Value::as_str) == Some(FOLDER_MIME) {
                        if folder_mode
                            && let Some(id) = transform::file_id(&raw)
                            && scope.insert(id.clone())
                        {
                            queue.push_back(id);
                        }
                    } else {
                        files.push(raw);
                    }
                }
            }
            let batch = self.documents(files, |_| true).await?;
            let done = match next_page {
                Some(t) => {
                    cursor.page = Some(t);
                    false
                }
                None => {
                    cursor.page = None;
                    if folder_mode {
                        cursor.folder = queue.pop_front();
                        cursor.folder.is_none()
                    } else {
                        true
                    }
                }
            };
            let trashed_folders = if done {
                Some(self.trashed_folders().await?)
            } else {
                None
            };
            let s = self.checkpoint.stream_mut(STREAM);
            s.observe_records(&batch.records);
            if folder_mode {
                s.extra.insert(QUEUE.into(), json!(queue));
                s.extra.insert(SCOPE.into(), json!(scope));
            }
            if let Some((trashed, trashed_files)) = trashed_folders {
                let token = s.extra.remove(SCAN_TOKEN).unwrap_or(Value::Null);
                let taken = s.extra.remove(SCAN_TOKEN_TIME).unwrap_or(Value::Null);
                s.extra.insert(START_TOKEN.into(), token);
                s.extra.insert(TOKEN_TIME.into(), taken);
                s.extra.insert(TRASHED_FOLDERS.into(), json!(trashed));
                s.extra.insert(TRASHED_FILES.into(), json!(trashed_files));
                s.extra.remove(QUEUE);
                s.finish_pass_in(self.ctx);
            } else {
                s.cursor = Some(serde_json::to_string(&cursor)?);
            }
            self.write(sink, batch).await?;
            if done {
                return Ok(());
            }
        }
    }

    /// The ids of the trashed folders (so an untrashed one brings its contents back) and of
    /// the trashed files (so an untrashed one is read with its text: the scan skipped it).
    async fn trashed_folders(&mut self) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
        let q = "trashed = true";
        let mut folders = BTreeSet::new();
        let mut files = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.client.list_files(q, token.as_deref()).await?;
            self.list_pages += 1;
            for raw in &page.files {
                let Some(id) = transform::file_id(raw) else {
                    continue;
                };
                if raw.get("mimeType").and_then(Value::as_str) == Some(FOLDER_MIME) {
                    folders.insert(id);
                } else {
                    files.insert(id);
                }
            }
            match page.next_page_token {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok((folders, files)),
            }
        }
    }

    /// Every folder and file below `folder` (`live`: not trashed), breadth first.
    async fn subtree(&mut self, folder: &str, live: bool) -> Result<(Vec<String>, Vec<Value>)> {
        let mut folders = Vec::new();
        let mut files = Vec::new();
        let mut queue = VecDeque::from([folder.to_owned()]);
        let mut seen = BTreeSet::from([folder.to_owned()]);
        while let Some(f) = queue.pop_front() {
            let mut q = format!("{} in parents", q_literal(&f));
            if live {
                q.push_str(" and trashed = false");
            }
            let mut token: Option<String> = None;
            loop {
                self.ctx.check_cancelled()?;
                let page = self.client.list_files(&q, token.as_deref()).await?;
                self.list_pages += 1;
                for raw in page.files {
                    if raw.get("mimeType").and_then(Value::as_str) == Some(FOLDER_MIME) {
                        if let Some(id) = transform::file_id(&raw)
                            && seen.insert(id.clone())
                        {
                            folders.push(id.clone());
                            queue.push_back(id);
                        }
                    } else {
                        files.push(raw);
                    }
                }
                match page.next_page_token {
                    Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                    _ => break,
                }
            }
        }
        Ok((folders, files))
    }

    /// Raw files → a batch of documents with their text; a file that does not decode, or
    /// whose text Drive refuses (too large, not exportable), is captured with its id. Only
    /// the files `read_text` accepts are read; the others carry no text (the store keeps it).
    async fn documents(
        &mut self,
        raws: Vec<Value>,
        read_text: impl Fn(&Value) -> bool,
    ) -> Result<RecordBatch> {
        let wanted: Vec<(String, TextSource)> = raws
            .iter()
            .filter(|raw| read_text(raw))
            .filter_map(|raw| {
                let id = transform::file_id(raw)?;
                let source = text_source(raw.get("mimeType").and_then(Value::as_str))?;
                Some((id, source))
            })
            .collect();
        let mut texts: HashMap<String, Option<String>> = HashMap::new();
        let mut failures = Vec::new();
        let max = self.config.max_content_bytes;
        for chunk in wanted.chunks(CONTENT_CONCURRENCY) {
            self.ctx.check_cancelled()?;
            let results = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|(id, source)| self.client.text(id, *source, max)),
            )
            .await;
            self.content_fetches += chunk.len() as u64;
            for ((id, _), r) in chunk.iter().zip(results) {
                match r {
                    Ok(t) => {
                        texts.insert(id.clone(), Some(t));
                    }
                    Err(e) if stops_the_sync(&e) => return Err(e),
                    // Deleted since it was listed: the changes feed will say so.
                    Err(Error::Api { status: 404, .. }) => {}
                    Err(e) => failures.push(RecordFailure::new(
                        Some(id.clone()),
                        format!("text not read: {e}"),
                    )),
                }
            }
        }
        let ws = self.ctx.workspace_id();
        let mut batch = capture_page(raws, transform::file_id, |raw| {
            let f = transform::decode(raw)?;
            let text = texts.remove(&f.id).flatten();
            Ok([Record::Document(transform::document(ws, &f, text)?)])
        });
        batch.failures.extend(failures);
        Ok(batch)
    }

    fn archive(batch: &mut RecordBatch, id: String, at: DateTime<Utc>) {
        batch.deletions.push(Deletion {
            kind: RecordKind::Document,
            source_id: id,
            deleted_at: at,
        });
    }

    /// The changes feed (see the module docs).
    async fn changes(&mut self, sink: &mut dyn RecordSink) -> Result<()> {
        let folder_mode = self.folder_mode();
        let s = self.checkpoint.stream_mut(STREAM);
        let Some(mut token) = s
            .extra
            .get(START_TOKEN)
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Err(Error::decode(
                None,
                "the Drive checkpoint holds no changes token",
            ));
        };
        s.begin_pass(self.ctx);
        let mut scope = string_set(s.extra.get(SCOPE));
        let mut trashed_folders = string_set(s.extra.get(TRASHED_FOLDERS));
        let mut trashed_files = string_set(s.extra.get(TRASHED_FILES));
        // Files modified before this were read by an earlier run (None: read them all).
        let unchanged_before: Option<DateTime<Utc>> = s
            .extra
            .get(TOKEN_TIME)
            .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok())
            .filter(|_| !folder_mode)
            .map(|t| t - CLOCK_SKEW);
        let roots: BTreeSet<String> = self.config.folders.iter().cloned().collect();
        loop {
            self.ctx.check_cancelled()?;
            let asked = Utc::now();
            let page = self.client.changes(&token).await?;
            self.change_pages += 1;
            let last = page.next_page_token.is_none();
            let Some(next) = page
                .next_page_token
                .clone()
                .or(page.new_start_page_token.clone())
            else {
                return Err(Error::decode(
                    None,
                    "Drive changes page without nextPageToken or newStartPageToken",
                ));
            };
            if !last && next == token {
                return Err(Error::decode(
                    None,
                    "Drive returned the same changes token twice: stopping instead of looping",
                ));
            }
            let mut batch = RecordBatch::default();
            let mut live: Vec<Value> = Vec::new();
            // Files read with their text whatever their modifiedTime.
            let mut read: BTreeSet<String> = BTreeSet::new();
            for raw in page.changes {
                let change: Change = match serde_json::from_value(raw) {
                    Ok(c) => c,
                    Err(e) => {
                        batch.failures.push(RecordFailure::new(
                            None,
                            format!("unreadable Drive change: {e}"),
                        ));
                        continue;
                    }
                };
                if change.change_type.as_deref() == Some("drive") {
                    continue;
                }
                let at = change
                    .time
                    .as_deref()
                    .and_then(crate::sanitize::datetime_str)
                    .unwrap_or(self.ctx.started_at());
                let id = change
                    .file_id
                    .clone()
                    .or_else(|| change.file.as_ref().and_then(transform::file_id));
                let Some(id) = id else {
                    batch
                        .failures
                        .push(RecordFailure::new(None, "Drive change without a file id"));
                    continue;
                };
                let raw = match change.file {
                    Some(raw) if !change.removed => raw,
                    _ => {
                        scope.remove(&id);
                        trashed_folders.remove(&id);
                        trashed_files.remove(&id);
                        Self::archive(&mut batch, id, at);
                        continue;
                    }
                };
                let f: DriveFile = match transform::decode(raw.clone()) {
                    Ok(f) => f,
                    Err(e) => {
                        batch
                            .failures
                            .push(RecordFailure::new(Some(id), e.to_string()));
                        continue;
                    }
                };
                if f.is_folder() {
                    if f.trashed {
                        trashed_folders.insert(id.clone());
                        let (_, files) = self.subtree(&id, false).await?;
                        self.archive_files(&mut batch, files, at);
                        continue;
                    }
                    let was_trashed = trashed_folders.remove(&id);
                    if folder_mode {
                        let parent_in =
                            roots.contains(&id) || f.parents.iter().any(|p| scope.contains(p));
                        let in_scope = scope.contains(&id);
                        if parent_in && (!in_scope || was_trashed) {
                            scope.insert(id.clone());
                            let (folders, files) = self.subtree(&id, true).await?;
                            scope.extend(folders);
                            read.extend(files.iter().filter_map(transform::file_id));
                            live.extend(files);
                        } else if !parent_in && in_scope {
                            let (folders, files) = self.subtree(&id, false).await?;
                            scope.remove(&id);
                            for fo in folders {
                                scope.remove(&fo);
                            }
                            self.archive_files(&mut batch, files, at);
                        }
                    } else if was_trashed {
                        let (_, files) = self.subtree(&id, true).await?;
                        read.extend(files.iter().filter_map(transform::file_id));
                        live.extend(files);
                    }
                    continue;
                }
                let out_of_scope = folder_mode && !f.parents.iter().any(|p| scope.contains(p));
                if f.trashed || out_of_scope {
                    if f.trashed {
                        trashed_files.insert(id);
                    }
                    self.archived_record(&mut batch, &f, at);
                } else {
                    if trashed_files.remove(&id) {
                        read.insert(id);
                    }
                    live.push(raw);
                }
            }
            let docs = self
                .documents(live, |raw| {
                    let changed = match (unchanged_before, transform::modified_raw(raw)) {
                        (Some(before), Some(m)) => m >= before,
                        _ => true,
                    };
                    changed || transform::file_id(raw).is_some_and(|id| read.contains(&id))
                })
                .await?;
            // A file archived and stored live in one page (a trashed folder listed, then
            // one of its files restored): the live record, written last, decides.
            let stored: BTreeSet<String> = docs
                .records
                .iter()
                .filter_map(|r| r.meta().map(|m| m.source_id.clone()))
                .collect();
            batch
                .deletions
                .retain(|d| !stored.contains(d.source_id.as_str()));
            batch.records.retain(|r| {
                r.meta()
                    .is_none_or(|m| !stored.contains(m.source_id.as_str()))
            });
            batch.records.extend(docs.records);
            batch.failures.extend(docs.failures);
            let s = self.checkpoint.stream_mut(STREAM);
            s.observe_records(&batch.records);
            s.extra.insert(START_TOKEN.into(), json!(next));
            if folder_mode {
                s.extra.insert(SCOPE.into(), json!(scope));
            }
            s.extra
                .insert(TRASHED_FOLDERS.into(), json!(trashed_folders));
            s.extra.insert(TRASHED_FILES.into(), json!(trashed_files));
            if last {
                s.extra.insert(TOKEN_TIME.into(), json!(asked));
                s.finish_pass_in(self.ctx);
            }
            self.write(sink, batch).await?;
            if last {
                return Ok(());
            }
            token = next;
        }
    }

    fn archive_files(&mut self, batch: &mut RecordBatch, files: Vec<Value>, at: DateTime<Utc>) {
        for raw in files {
            let id = transform::file_id(&raw);
            match transform::decode(raw) {
                Ok(f) => self.archived_record(batch, &f, at),
                Err(e) => batch.failures.push(RecordFailure::new(id, e.to_string())),
            }
        }
    }

    /// A trashed (or out-of-scope) file as an archived document: its metadata as Drive
    /// reports it, no text (the store keeps the stored text), `archived_at` just before its `modifiedTime` (see
    /// [`archive_time`]). A record rather than a [`Deletion`]: the store archives by id only
    /// rows not newer than the deletion time, and restores an archived row only with a
    /// version newer than its archive time; the same version coming back untrashed is.
    fn archived_record(&mut self, batch: &mut RecordBatch, f: &DriveFile, at: DateTime<Utc>) {
        match transform::document(self.ctx.workspace_id(), f, None) {
            Ok(mut d) => {
                d.meta.archived_at = Some(archive_time(f, at));
                self.archived += 1;
                batch.records.push(Record::Document(d));
            }
            Err(e) => batch
                .failures
                .push(RecordFailure::new(Some(f.id.clone()), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_stop_rules() {
        assert_eq!(q_literal("a'b\\c"), "'a\\'b\\\\c'");
        assert!(stops_the_sync(&Error::api("google-drive", 401, "x")));
        assert!(stops_the_sync(&Error::api("google-drive", 503, "x")));
        assert!(!stops_the_sync(&Error::api(
            "google-drive",
            403,
            "exportSizeLimitExceeded"
        )));
        assert!(stops_the_sync(&Error::Cancelled));
        let c = ScanCursor {
            folder: Some("f".into()),
            page: None,
        };
        let back: ScanCursor = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
