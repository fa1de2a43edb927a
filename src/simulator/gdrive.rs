//! The Google Drive v3 simulator (`reference/provider-apis.md` sections 6, 7 and 10).
//!
//! - `POST /token`: the OAuth refresh grant (form body); `invalid_client` (401) for an
//!   unknown client, `invalid_grant` (400, "Token has been expired or revoked.") for a
//!   revoked or unknown refresh token. Access tokens expire after
//!   [`GDriveSimConfig::token_lifetime_requests`] API requests (401 `authError` after).
//! - `GET /drive/v3/files`: `q` (the subset connectors use: `trashed = true|false`,
//!   `'<id>' in parents`, `mimeType = '…'` / `!=`, joined by `and`), `fields`
//!   (`nextPageToken`, `files(…)`; without it only `kind,id,name,mimeType`), `pageSize`
//!   (1–1000, default 100), `pageToken`, `corpora` (`user`, `allDrives`) with
//!   `includeItemsFromAllDrives` / `supportsAllDrives`. Trashed files are listed unless
//!   filtered. With [`GDriveSimConfig::short_pages`] pages come partial, and some empty,
//!   before the end; only a missing `nextPageToken` ends a list.
//! - `GET /drive/v3/files/{id}` (metadata, `fields`), `?alt=media` (403
//!   `fileNotDownloadable` on Google-native files), `GET /drive/v3/files/{id}/export`
//!   (`text/plain` for Docs and Slides, with the UTF-8 BOM Docs exports carry; `text/csv`
//!   for Sheets; 403 `exportSizeLimitExceeded` over 10 MB).
//! - `GET /drive/v3/changes/startPageToken` and `GET /drive/v3/changes` (`pageToken`
//!   required, `pageSize`, `fields`; `fields=*` caps pages at 50 as Drive does; only the
//!   last page carries `newStartPageToken`; `removed` changes carry no `file`).
//! - Faults through [`FaultConfig`]: 5xx, rate limits answered alternately as 403
//!   `userRateLimitExceeded` (no `Retry-After`) and 429 `rateLimitExceeded`, dropped
//!   connections; with Google's real error bodies.
//! - Mutations (create, edit content, rename, move, trash with folder cascade, untrash,
//!   delete permanently) append to the changes journal; a hook after each `files.list`
//!   page lets a test change the corpus while a scan runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Response, StatusCode, header};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{
    Common, FaultConfig, Injected, RequestCounters, SimServer, decide, dropped_response, lock, mix,
};

/// Drive's export cap: 10 MB.
pub const GDRIVE_EXPORT_LIMIT: u64 = 10 * 1024 * 1024;
/// The mime type of folders.
pub const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
/// Google Docs.
pub const DOC_MIME: &str = "application/vnd.google-apps.document";
/// Google Sheets.
pub const SHEET_MIME: &str = "application/vnd.google-apps.spreadsheet";
/// Google Slides.
pub const SLIDES_MIME: &str = "application/vnd.google-apps.presentation";
/// The id of the user's My Drive root folder in the simulator.
pub const ROOT_ID: &str = "0AsimRootFolder";
/// The id of the simulator's shared drive.
pub const SHARED_DRIVE_ID: &str = "0AsimSharedDrive";

/// How the simulated corpus is built.
#[derive(Debug, Clone)]
pub struct GDriveSimConfig {
    /// Seed of the generated corpus and of fault decisions.
    pub seed: u64,
    /// Folders in My Drive (a tree: folder `i` sits in folder `(i - 1) / 2`, folder 0 in the root).
    pub folders: u64,
    /// Google Docs.
    pub docs: u64,
    /// Google Sheets.
    pub sheets: u64,
    /// Google Slides.
    pub slides: u64,
    /// PDFs (binary, no text).
    pub pdfs: u64,
    /// `text/plain` files.
    pub texts: u64,
    /// Of the files above, how many are trashed (the last ones).
    pub trashed: u64,
    /// Extra Docs shared with the user (no `parents`, another owner).
    pub shared_with_me: u64,
    /// Extra Docs in the shared drive (no `owners`).
    pub shared_drive_files: u64,
    /// Extra Docs whose export is over 10 MB.
    pub oversize_docs: u64,
    /// Serve partial and empty pages before the end of lists and change feeds.
    pub short_pages: bool,
    /// The OAuth client.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// The refresh token the simulator accepts.
    pub refresh_token: String,
    /// An access token accepted as is (for `{"access_token"}` credentials), never expiring.
    pub static_access_token: String,
    /// API requests an access token from `/token` serves before it expires (401).
    pub token_lifetime_requests: Option<u64>,
    /// The owner of the user's files.
    pub owner_email: String,
    /// Faults.
    pub faults: FaultConfig,
    /// The corpus's base time.
    pub now: DateTime<Utc>,
}

impl Default for GDriveSimConfig {
    fn default() -> Self {
        let now = Utc::now();
        GDriveSimConfig {
            seed: 11,
            folders: 6,
            docs: 20,
            sheets: 5,
            slides: 3,
            pdfs: 5,
            texts: 8,
            trashed: 3,
            shared_with_me: 3,
            shared_drive_files: 3,
            oversize_docs: 0,
            short_pages: false,
            client_id: "sim-client.apps.googleusercontent.com".into(),
            client_secret: "sim-gdrive-client-secret".into(),
            refresh_token: "1//sim-gdrive-refresh-token".into(),
            static_access_token: "ya29.sim-static-access-token".into(),
            token_lifetime_requests: None,
            owner_email: "owner@pandora-demo.example".into(),
            faults: FaultConfig::default(),
            now: DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
        }
    }
}

/// One file of the simulated Drive.
#[derive(Debug, Clone, PartialEq)]
pub struct GDriveSimFile {
    /// File id.
    pub id: String,
    /// Name.
    pub name: String,
    /// MIME type.
    pub mime_type: String,
    /// Parent folder ids (empty for shared-with-me files).
    pub parents: Vec<String>,
    /// The shared drive it lives in.
    pub drive_id: Option<String>,
    /// The owner's email (`None` in shared drives).
    pub owner_email: Option<String>,
    /// Created.
    pub created_time: DateTime<Utc>,
    /// Modified (content edits; renames, moves and trash leave it alone).
    pub modified_time: DateTime<Utc>,
    /// Trashed (explicitly or through a trashed folder).
    pub trashed: bool,
    /// Trashed itself rather than through a folder.
    pub explicitly_trashed: bool,
    /// The text content (Docs, Slides, Sheets as CSV, text files); binary files hold bytes.
    pub content: Vec<u8>,
    /// The export is over 10 MB.
    pub oversize: bool,
}

impl GDriveSimFile {
    /// Whether the file is a Google-native type (exported, never downloaded).
    pub fn is_google_native(&self) -> bool {
        self.mime_type.starts_with("application/vnd.google-apps.")
    }

    /// Whether it is a folder.
    pub fn is_folder(&self) -> bool {
        self.mime_type == FOLDER_MIME
    }

    /// `size`: bytes of binary and text files; Google-native files have none.
    pub fn size(&self) -> Option<i64> {
        (!self.is_google_native()).then(|| i64::try_from(self.content.len()).unwrap_or(i64::MAX))
    }

    /// The link Drive reports.
    pub fn web_view_link(&self) -> String {
        match self.mime_type.as_str() {
            DOC_MIME => format!("https://docs.google.com/document/d/{}/edit", self.id),
            SHEET_MIME => format!("https://docs.google.com/spreadsheets/d/{}/edit", self.id),
            SLIDES_MIME => format!("https://docs.google.com/presentation/d/{}/edit", self.id),
            FOLDER_MIME => format!("https://drive.google.com/drive/folders/{}", self.id),
            _ => format!("https://drive.google.com/file/d/{}/view", self.id),
        }
    }

    /// The text a connector should store: Docs without BOM, Sheets as CSV, Slides and text
    /// files as is; `None` for binaries, folders and oversize exports.
    pub fn text(&self) -> Option<String> {
        if self.oversize || self.is_folder() {
            return None;
        }
        let textual = self.is_google_native() || self.mime_type.starts_with("text/");
        textual.then(|| String::from_utf8_lossy(&self.content).into_owned())
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "parents": self.parents,
            "createdTime": ts(self.created_time),
            "modifiedTime": ts(self.modified_time),
            "trashed": self.trashed,
            "explicitlyTrashed": self.explicitly_trashed,
            "webViewLink": self.web_view_link(),
        });
        if self.parents.is_empty()
            && let Some(m) = v.as_object_mut()
        {
            m.remove("parents");
        }
        if let Some(m) = v.as_object_mut() {
            if let Some(d) = &self.drive_id {
                m.insert("driveId".into(), json!(d));
            }
            if let Some(o) = &self.owner_email {
                m.insert(
                    "owners".into(),
                    json!([{"kind": "drive#user", "emailAddress": o, "displayName": o}]),
                );
            }
            if let Some(s) = self.size() {
                m.insert("size".into(), json!(s.to_string()));
            }
        }
        v
    }
}

/// A new file for [`GDriveSimHandle::create`].
#[derive(Debug, Clone)]
pub struct NewGDriveFile {
    /// Name.
    pub name: String,
    /// MIME type.
    pub mime_type: String,
    /// Parent folder (`None`: shared with me, no parent).
    pub parent: Option<String>,
    /// Content.
    pub content: Vec<u8>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Default)]
struct Data {
    files: BTreeMap<String, GDriveSimFile>,
    /// The changes journal: (file id, time, removed). Token `n` reads entries `n - 1..`.
    journal: Vec<(String, DateTime<Utc>, bool)>,
    /// Access tokens issued by `/token` and the API requests each has served.
    tokens: HashMap<String, u64>,
    revoked: bool,
    next_id: u64,
    clock: DateTime<Utc>,
}

impl Data {
    /// The next instant, at Drive's millisecond precision, strictly after the last.
    fn tick(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let real = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        self.clock = if real > self.clock {
            real
        } else {
            self.clock + ChronoDuration::milliseconds(1)
        };
        self.clock
    }

    fn journal(&mut self, id: &str, removed: bool) {
        let t = self.tick();
        self.journal.push((id.to_owned(), t, removed));
    }

    fn descendants(&self, folder: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut queue = vec![folder.to_owned()];
        while let Some(f) = queue.pop() {
            for file in self.files.values() {
                if file.parents.contains(&f) {
                    out.push(file.id.clone());
                    if file.is_folder() {
                        queue.push(file.id.clone());
                    }
                }
            }
        }
        out
    }
}

type ListHook = Box<dyn Fn(&GDriveSimHandle, u64) + Send + Sync>;

struct Inner {
    cfg: GDriveSimConfig,
    common: Arc<Common>,
    data: Mutex<Data>,
    list_pages: AtomicU64,
    token_seq: AtomicU64,
    rate_flip: AtomicU64,
    after_list_page: Mutex<Option<Arc<ListHook>>>,
    content_bytes: AtomicU64,
}

/// A running Google Drive simulator.
pub struct GDriveSim {
    handle: GDriveSimHandle,
    server: SimServer,
}

impl std::fmt::Debug for GDriveSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GDriveSim")
            .field("base_url", &self.server.base_url())
            .finish_non_exhaustive()
    }
}

/// The mutation and truth API of a [`GDriveSim`] (cloneable; what the list hook gets).
#[derive(Clone)]
pub struct GDriveSimHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GDriveSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GDriveSimHandle")
    }
}

fn lorem(seed: u64, i: u64, words: u64) -> String {
    const W: [&str; 12] = [
        "pipeline", "revenue", "quarter", "renewal", "Zürich", "naïve", "plan", "forecast", "€uro",
        "meeting", "résumé", "東京",
    ];
    (0..words)
        .map(|k| W[usize::try_from(mix(seed, i, k) % 12).unwrap_or(0)])
        .collect::<Vec<_>>()
        .join(" ")
}

fn build_corpus(cfg: &GDriveSimConfig) -> Data {
    let mut d = Data {
        clock: cfg.now,
        ..Data::default()
    };
    let base = cfg.now - ChronoDuration::days(30);
    let mut n = 0u64;
    let add = |d: &mut Data, f: GDriveSimFile| {
        d.files.insert(f.id.clone(), f);
    };
    let mut file = |kind: &str, mime: &str, parent: Option<String>, content: Vec<u8>| {
        n += 1;
        let created = base + ChronoDuration::minutes(i64::try_from(n).unwrap_or(0) * 7);
        GDriveSimFile {
            id: format!("1{kind}{n:05}{:x}", mix(cfg.seed, n, 1) % 0xffff),
            name: format!("{kind} {n}"),
            mime_type: mime.to_owned(),
            parents: parent.into_iter().collect(),
            drive_id: None,
            owner_email: Some(cfg.owner_email.clone()),
            created_time: created,
            modified_time: created
                + ChronoDuration::minutes(i64::try_from(mix(cfg.seed, n, 2) % 600).unwrap_or(0)),
            trashed: false,
            explicitly_trashed: false,
            content,
            oversize: false,
        }
    };
    let mut folders: Vec<String> = Vec::new();
    for i in 0..cfg.folders {
        let parent = if i == 0 {
            ROOT_ID.to_owned()
        } else {
            folders[usize::try_from((i - 1) / 2).unwrap_or(0)].clone()
        };
        let f = file("Folder", FOLDER_MIME, Some(parent), Vec::new());
        folders.push(f.id.clone());
        add(&mut d, f);
    }
    let parent_of = |i: u64| {
        if folders.is_empty() || i.is_multiple_of(4) {
            ROOT_ID.to_owned()
        } else {
            folders[usize::try_from(i % folders.len() as u64).unwrap_or(0)].clone()
        }
    };
    let mut owned = Vec::new();
    for i in 0..cfg.docs {
        let text = format!("Doc {i}\r\n{}", lorem(cfg.seed, i, 40 + i % 50));
        owned.push(file("Doc", DOC_MIME, Some(parent_of(i)), text.into_bytes()));
    }
    for i in 0..cfg.sheets {
        let text = format!(
            "a,b,c\r\n{i},{},\"{}\"\r\n",
            i * 2,
            lorem(cfg.seed, 100 + i, 3)
        );
        owned.push(file(
            "Sheet",
            SHEET_MIME,
            Some(parent_of(i + 1)),
            text.into_bytes(),
        ));
    }
    for i in 0..cfg.slides {
        let text = format!("Slide deck {i}\n\n{}", lorem(cfg.seed, 200 + i, 12));
        owned.push(file(
            "Slides",
            SLIDES_MIME,
            Some(parent_of(i + 2)),
            text.into_bytes(),
        ));
    }
    for i in 0..cfg.pdfs {
        let mut bytes = b"%PDF-1.7\n".to_vec();
        bytes.extend((0..200 + i).map(|k| u8::try_from(mix(cfg.seed, i, k) % 256).unwrap_or(0)));
        owned.push(file(
            "Pdf",
            "application/pdf",
            Some(parent_of(i + 3)),
            bytes,
        ));
    }
    for i in 0..cfg.texts {
        let text = format!("notes {i}: {}\n", lorem(cfg.seed, 300 + i, 20 + i * 3));
        owned.push(file(
            "Text",
            "text/plain",
            Some(parent_of(i)),
            text.into_bytes(),
        ));
    }
    let trashed = usize::try_from(cfg.trashed).unwrap_or(0).min(owned.len());
    let first_trashed = owned.len() - trashed;
    for (k, mut f) in owned.into_iter().enumerate() {
        if k >= first_trashed {
            f.trashed = true;
            f.explicitly_trashed = true;
        }
        add(&mut d, f);
    }
    for i in 0..cfg.shared_with_me {
        let mut f = file(
            "Shared",
            DOC_MIME,
            None,
            format!("Shared {i}\n{}", lorem(cfg.seed, 400 + i, 15)).into_bytes(),
        );
        f.owner_email = Some(format!("partner{i}@external.example"));
        add(&mut d, f);
    }
    for i in 0..cfg.shared_drive_files {
        let mut f = file(
            "Team",
            if i % 2 == 0 { DOC_MIME } else { "text/plain" },
            Some(SHARED_DRIVE_ID.to_owned()),
            format!("Team file {i}\n{}", lorem(cfg.seed, 500 + i, 10)).into_bytes(),
        );
        f.drive_id = Some(SHARED_DRIVE_ID.to_owned());
        f.owner_email = None;
        add(&mut d, f);
    }
    for i in 0..cfg.oversize_docs {
        let mut f = file("Huge", DOC_MIME, Some(ROOT_ID.to_owned()), b"big".to_vec());
        f.name = format!("Huge doc {i}");
        f.oversize = true;
        add(&mut d, f);
    }
    d.next_id = n + 1;
    d
}

fn google_error(status: StatusCode, reason: &str, message: &str, domain: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }}),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    resp
}

fn bytes_response(mime: &str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    if let Ok(v) = header::HeaderValue::from_str(mime) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn bad_request(message: &str) -> Response<Body> {
    google_error(StatusCode::BAD_REQUEST, "badRequest", message, "global")
}

fn invalid_param(name: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"code": 400, "message": message, "errors": [
            {"message": message, "domain": "global", "reason": "invalidParameter",
             "location": name, "locationType": "parameter"}]}}),
    )
}

/// One clause of the `q` subset.
#[derive(Debug, Clone, PartialEq)]
enum Clause {
    Trashed(bool),
    InParents(String),
    Mime(String, bool),
}

fn parse_q(q: &str) -> Result<Vec<Clause>, String> {
    let mut out = Vec::new();
    for part in q.split(" and ") {
        let p = part.trim();
        let quoted = |s: &str| -> Option<String> {
            let s = s.trim();
            let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
            (!inner.contains('\'')).then(|| inner.to_owned())
        };
        if let Some(rest) = p.strip_prefix("trashed") {
            match rest.trim().trim_start_matches('=').trim() {
                "true" if rest.trim().starts_with('=') => out.push(Clause::Trashed(true)),
                "false" if rest.trim().starts_with('=') => out.push(Clause::Trashed(false)),
                _ => return Err(format!("Invalid Value: {p}")),
            }
        } else if let Some(id) = p.strip_suffix(" in parents").and_then(quoted) {
            out.push(Clause::InParents(id));
        } else if let Some(rest) = p.strip_prefix("mimeType") {
            let rest = rest.trim();
            if let Some(v) = rest.strip_prefix("!=").and_then(quoted) {
                out.push(Clause::Mime(v, false));
            } else if let Some(v) = rest.strip_prefix('=').and_then(quoted) {
                out.push(Clause::Mime(v, true));
            } else {
                return Err(format!("Invalid Value: {p}"));
            }
        } else {
            return Err(format!("Invalid Value: {p}"));
        }
    }
    Ok(out)
}

fn matches(f: &GDriveSimFile, q: &[Clause]) -> bool {
    q.iter().all(|c| match c {
        Clause::Trashed(t) => f.trashed == *t,
        Clause::InParents(p) => f.parents.iter().any(|x| x == p),
        Clause::Mime(m, eq) => (f.mime_type == *m) == *eq,
    })
}

/// `fields` as a filter of file members: `None` for all, `Some` for the listed ones.
fn file_fields(fields: Option<&str>, list_key: &str) -> Option<BTreeSet<String>> {
    let fields = fields?;
    if fields.trim() == "*" {
        return None;
    }
    let mut out = BTreeSet::new();
    // `files(a,b)` / `changes(fileId,file(a,b))`: take the innermost member lists.
    let needle = format!("{list_key}(");
    let start = fields.find(&needle).map(|i| i + needle.len());
    let inner = match start {
        Some(s) => {
            let mut depth = 1;
            let mut end = s;
            for (k, ch) in fields[s..].char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = s + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            &fields[s..end]
        }
        None => fields,
    };
    for f in inner.split(',') {
        let f = f.trim();
        let name = f.split('(').next().unwrap_or(f).trim();
        if !name.is_empty() {
            out.insert(name.to_owned());
        }
    }
    out.insert("kind".into());
    Some(out)
}

fn project(file: &Value, keep: Option<&BTreeSet<String>>) -> Value {
    match (keep, file) {
        (Some(keep), Value::Object(m)) => Value::Object(
            m.iter()
                .filter(|(k, _)| keep.contains(k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => file.clone(),
    }
}

fn param_true(p: &HashMap<String, String>, k: &str) -> bool {
    p.get(k).is_some_and(|v| v == "true")
}

#[allow(clippy::result_large_err)] // the answer itself, as the handlers return it
fn page_size(p: &HashMap<String, String>) -> Result<usize, Response<Body>> {
    match p.get("pageSize") {
        None => Ok(100),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(invalid_param(
                "pageSize",
                &format!("Invalid value '{s}'. Values must be within the range: [1, 1000]"),
            )),
        },
    }
}

impl Inner {
    fn is_malformed(&self, id: &str) -> bool {
        let h = id.bytes().fold(0u64, |a, b| mix(a, u64::from(b), 3));
        self.common.is_malformed(0x6764, h)
    }

    /// Auth and faults: `Err` is the answer instead.
    async fn admit(&self, headers: &HeaderMap) -> Result<(), Response<Body>> {
        let (injected, latency) = decide(&self.common);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        let valid = if token == self.cfg.static_access_token {
            true
        } else {
            let mut d = lock(&self.data);
            match d.tokens.get_mut(&token) {
                Some(used) => {
                    *used += 1;
                    self.cfg.token_lifetime_requests.is_none_or(|l| *used <= l)
                }
                None => false,
            }
        };
        if !valid {
            return Err(json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": {"code": 401,
                    "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                    "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                                "location": "Authorization", "locationType": "header"}],
                    "status": "UNAUTHENTICATED"}}),
            ));
        }
        match injected {
            Injected::ServerError(code) => Err(google_error(
                code,
                "backendError",
                "Backend Error",
                "global",
            )),
            Injected::RateLimited => {
                if self
                    .rate_flip
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(2)
                {
                    Err(json_response(
                        StatusCode::FORBIDDEN,
                        &json!({"error": {"code": 403, "message": "User Rate Limit Exceeded. Rate of requests for user exceed configured project quota.",
                            "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded",
                                "message": "User Rate Limit Exceeded. Rate of requests for user exceed configured project quota.",
                                "extendedHelp": "https://console.developers.google.com/apis/api/drive.googleapis.com/quotas?project=000000000000"}]}}),
                    ))
                } else {
                    Err(google_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rateLimitExceeded",
                        "Too many requests",
                        "usageLimits",
                    ))
                }
            }
            Injected::Drop => Err(dropped_response()),
            Injected::None => Ok(()),
        }
    }

    fn visible(&self, f: &GDriveSimFile, all_drives: bool) -> bool {
        f.drive_id.is_none() || all_drives
    }
}

async fn token(State(inner): State<Arc<Inner>>, body: Bytes) -> Response<Body> {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type: "}),
        );
    }
    if form.get("client_id") != Some(&inner.cfg.client_id)
        || form.get("client_secret") != Some(&inner.cfg.client_secret)
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "The OAuth client was not found."}),
        );
    }
    let mut d = lock(&inner.data);
    if d.revoked || form.get("refresh_token") != Some(&inner.cfg.refresh_token) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
        );
    }
    let n = inner.token_seq.fetch_add(1, Ordering::Relaxed) + 1;
    let access = format!("ya29.sim-{n}-{:x}", mix(inner.common.seed, n, 9));
    d.tokens.insert(access.clone(), 0);
    json_response(
        StatusCode::OK,
        &json!({"access_token": access, "expires_in": 3599,
                "scope": "https://www.googleapis.com/auth/drive.readonly", "token_type": "Bearer"}),
    )
}

async fn list_files(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Response<Body> {
    if let Err(r) = inner.admit(&headers).await {
        return r;
    }
    let size = match page_size(&p) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let q = match p.get("q").map(|q| parse_q(q)).transpose() {
        Ok(q) => q.unwrap_or_default(),
        Err(m) => return invalid_param("q", &m),
    };
    let corpora = p.get("corpora").map_or("user", String::as_str);
    let all_drives = match corpora {
        "user" => false,
        "allDrives" => {
            if !param_true(&p, "includeItemsFromAllDrives") || !param_true(&p, "supportsAllDrives")
            {
                return invalid_param(
                    "corpora",
                    "The includeItemsFromAllDrives parameter must be set to true when corpora is allDrives.",
                );
            }
            true
        }
        other => return invalid_param("corpora", &format!("Invalid Value: {other}")),
    };
    let keep = file_fields(p.get("fields").map(String::as_str), "files").or_else(|| {
        (!p.contains_key("fields"))
            .then(|| ["kind", "id", "name", "mimeType"].map(String::from).into())
    });
    // `fl~<last id>`; `~e` marks the token an empty page gave (no empty page again).
    let (after, again) = match p.get("pageToken") {
        None => (None, false),
        Some(t) => match t.strip_prefix("fl~") {
            Some(rest) => match rest.strip_suffix("~e") {
                Some(id) => (Some(id.to_owned()).filter(|i| !i.is_empty()), true),
                None => (Some(rest.to_owned()).filter(|i| !i.is_empty()), false),
            },
            None => return invalid_param("pageToken", "Invalid Value"),
        },
    };
    let page_no = inner.list_pages.fetch_add(1, Ordering::Relaxed) + 1;
    // Partial pages: a page may hold fewer than asked (every third page half, every seventh empty).
    let take = if inner.cfg.short_pages {
        match page_no % 7 {
            0 if !again => 0,
            3 | 5 => size.div_ceil(2),
            _ => size,
        }
    } else {
        size
    };
    let body = {
        let d = lock(&inner.data);
        let mut it = d
            .files
            .range::<String, _>((
                after
                    .as_ref()
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, f)| f)
            .filter(|f| inner.visible(f, all_drives) && matches(f, &q));
        let page: Vec<&GDriveSimFile> = it.by_ref().take(take).collect();
        let more = it.next().is_some();
        let files: Vec<Value> = page
            .iter()
            .map(|f| {
                if inner.is_malformed(&f.id) {
                    json!({"kind": "drive#file", "id": f.id, "name": 42, "modifiedTime": "not a time", "mimeType": f.mime_type})
                } else {
                    project(&f.json(), keep.as_ref())
                }
            })
            .collect();
        let mut body = json!({"kind": "drive#fileList", "incompleteSearch": false, "files": files});
        let last_id = page
            .last()
            .map(|f| f.id.clone())
            .or(after.clone())
            .unwrap_or_default();
        let empty_before_end = take == 0 && has_any(&d, &inner, all_drives, &q, after.as_deref());
        if let Some(m) = body.as_object_mut() {
            if more {
                m.insert("nextPageToken".into(), json!(format!("fl~{last_id}")));
            } else if empty_before_end {
                m.insert("nextPageToken".into(), json!(format!("fl~{last_id}~e")));
            }
        }
        body
    };
    let hook = lock(&inner.after_list_page).clone();
    if let Some(h) = hook {
        h(
            &GDriveSimHandle {
                inner: inner.clone(),
            },
            page_no,
        );
    }
    json_response(StatusCode::OK, &body)
}

fn has_any(d: &Data, inner: &Inner, all: bool, q: &[Clause], after: Option<&str>) -> bool {
    d.files
        .values()
        .any(|f| after.is_none_or(|a| f.id.as_str() > a) && inner.visible(f, all) && matches(f, q))
}

async fn get_file(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> Response<Body> {
    if let Err(r) = inner.admit(&headers).await {
        return r;
    }
    let file = lock(&inner.data).files.get(&id).cloned();
    let Some(f) = file.filter(|f| f.drive_id.is_none() || param_true(&p, "supportsAllDrives"))
    else {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("File not found: {id}."),
            "global",
        );
    };
    if p.get("alt").map(String::as_str) == Some("media") {
        if f.is_google_native() {
            return google_error(
                StatusCode::FORBIDDEN,
                "fileNotDownloadable",
                "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
                "global",
            );
        }
        inner
            .content_bytes
            .fetch_add(f.content.len() as u64, Ordering::Relaxed);
        return bytes_response(&f.mime_type, f.content);
    }
    let keep = file_fields(p.get("fields").map(String::as_str), "files").or_else(|| {
        (!p.contains_key("fields"))
            .then(|| ["kind", "id", "name", "mimeType"].map(String::from).into())
    });
    json_response(StatusCode::OK, &project(&f.json(), keep.as_ref()))
}

async fn export_file(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> Response<Body> {
    if let Err(r) = inner.admit(&headers).await {
        return r;
    }
    let Some(mime) = p.get("mimeType") else {
        return invalid_param("mimeType", "Required parameter: mimeType");
    };
    let file = lock(&inner.data).files.get(&id).cloned();
    let Some(f) = file.filter(|f| f.drive_id.is_none() || param_true(&p, "supportsAllDrives"))
    else {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("File not found: {id}."),
            "global",
        );
    };
    let supported = match f.mime_type.as_str() {
        DOC_MIME | SLIDES_MIME => mime == "text/plain",
        SHEET_MIME => mime == "text/csv",
        _ => false,
    };
    if !f.is_google_native() {
        return google_error(
            StatusCode::FORBIDDEN,
            "fileNotExportable",
            "Export only supports Docs Editors files.",
            "global",
        );
    }
    if !supported {
        return bad_request("The requested conversion is not supported.");
    }
    if f.oversize {
        return google_error(
            StatusCode::FORBIDDEN,
            "exportSizeLimitExceeded",
            "This file is too large to be exported.",
            "global",
        );
    }
    let mut body = Vec::new();
    if f.mime_type == DOC_MIME {
        body.extend_from_slice(b"\xEF\xBB\xBF");
    }
    body.extend_from_slice(&f.content);
    inner
        .content_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    bytes_response(&format!("{mime}; charset=utf-8"), body)
}

async fn start_page_token(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = inner.admit(&headers).await {
        return r;
    }
    let n = lock(&inner.data).journal.len() + 1;
    json_response(
        StatusCode::OK,
        &json!({"kind": "drive#startPageToken", "startPageToken": n.to_string()}),
    )
}

async fn changes(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Response<Body> {
    if let Err(r) = inner.admit(&headers).await {
        return r;
    }
    let Some(token) = p.get("pageToken") else {
        return invalid_param("pageToken", "Required parameter: pageToken");
    };
    let mut size = match page_size(&p) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let star = p.get("fields").is_some_and(|f| f.trim() == "*");
    if star {
        // Drive silently caps `fields=*` change pages at 50 (dust-tt/dust#18714).
        size = size.min(50);
    }
    let keep = file_fields(p.get("fields").map(String::as_str), "file");
    let all_drives =
        param_true(&p, "includeItemsFromAllDrives") && param_true(&p, "supportsAllDrives");
    let include_removed = p.get("includeRemoved").is_none_or(|v| v != "false");
    let d = lock(&inner.data);
    let len = d.journal.len();
    // `<n>`; `<n>~e` is the token an empty page gave (no empty page again).
    let (num, again) = match token.strip_suffix("~e") {
        Some(n) => (n, true),
        None => (token.as_str(), false),
    };
    let start = match num.parse::<usize>() {
        Ok(n) if (1..=len + 1).contains(&n) => n - 1,
        _ => return invalid_param("pageToken", "Invalid Value"),
    };
    let page_no = inner.list_pages.fetch_add(1, Ordering::Relaxed) + 1;
    let take = if inner.cfg.short_pages && !again && page_no % 5 == 0 {
        0
    } else if inner.cfg.short_pages && page_no % 3 == 0 {
        size.div_ceil(2)
    } else {
        size
    };
    let mut out = Vec::new();
    let mut pos = start;
    while pos < len && out.len() < take {
        let (id, time, removed) = &d.journal[pos];
        pos += 1;
        // A later entry of the same file supersedes this one (Drive lists the latest change).
        if d.journal[pos..].iter().any(|(j, _, _)| j == id) {
            continue;
        }
        let file = d.files.get(id);
        if file.is_some_and(|f| !inner.visible(f, all_drives)) {
            continue;
        }
        if *removed || file.is_none() {
            if include_removed {
                out.push(
                    json!({"kind": "drive#change", "changeType": "file", "time": ts(*time),
                                "removed": true, "fileId": id}),
                );
            }
            continue;
        }
        if let Some(f) = file {
            let fj = if inner.is_malformed(&f.id) {
                json!({"kind": "drive#file", "id": f.id, "name": [1], "mimeType": f.mime_type, "modifiedTime": 5})
            } else {
                project(&f.json(), keep.as_ref())
            };
            out.push(
                json!({"kind": "drive#change", "changeType": "file", "time": ts(*time),
                            "removed": false, "fileId": id, "file": fj}),
            );
        }
    }
    // Skip superseded entries at the end so the last page is recognised.
    while pos < len
        && d.journal[pos + 1..]
            .iter()
            .any(|(j, _, _)| *j == d.journal[pos].0)
    {
        pos += 1;
    }
    let mut body = json!({"kind": "drive#changeList", "changes": out});
    if let Some(m) = body.as_object_mut() {
        if take == 0 && start < len {
            m.insert("nextPageToken".into(), json!(format!("{}~e", pos + 1)));
        } else if pos < len {
            m.insert("nextPageToken".into(), json!((pos + 1).to_string()));
        } else {
            m.insert("newStartPageToken".into(), json!((len + 1).to_string()));
        }
    }
    json_response(StatusCode::OK, &body)
}

impl GDriveSim {
    /// Starts the simulator on an ephemeral loopback port.
    pub async fn start(cfg: GDriveSimConfig) -> std::io::Result<GDriveSim> {
        let common = Arc::new(Common::new(cfg.seed, cfg.faults.clone()));
        let data = build_corpus(&cfg);
        let inner = Arc::new(Inner {
            data: Mutex::new(data),
            common: common.clone(),
            list_pages: AtomicU64::new(0),
            token_seq: AtomicU64::new(0),
            rate_flip: AtomicU64::new(0),
            after_list_page: Mutex::new(None),
            content_bytes: AtomicU64::new(0),
            cfg,
        });
        let router = Router::new()
            .route("/token", post(token))
            .route("/drive/v3/files", get(list_files))
            .route("/drive/v3/files/{id}", get(get_file))
            .route("/drive/v3/files/{id}/export", get(export_file))
            .route("/drive/v3/changes/startPageToken", get(start_page_token))
            .route("/drive/v3/changes", get(changes))
            .with_state(inner.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                common,
                super::count_requests,
            ));
        let server = SimServer::serve(router).await?;
        Ok(GDriveSim {
            handle: GDriveSimHandle { inner },
            server,
        })
    }

    /// `http://127.0.0.1:<port>`: the API, and the token endpoint at `/token`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// The mutation and truth API.
    pub fn handle(&self) -> &GDriveSimHandle {
        &self.handle
    }
}

impl std::ops::Deref for GDriveSim {
    type Target = GDriveSimHandle;
    fn deref(&self) -> &GDriveSimHandle {
        &self.handle
    }
}

impl GDriveSimHandle {
    /// The configuration.
    pub fn config(&self) -> &GDriveSimConfig {
        &self.inner.cfg
    }

    /// Requests per route (`GET /drive/v3/files`, `POST /token`, …).
    pub fn counters(&self) -> &RequestCounters {
        &self.inner.common.counters
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: FaultConfig) {
        *lock(&self.inner.common.faults) = faults;
    }

    /// The next `n` API requests are rate limited (403 `userRateLimitExceeded` and 429
    /// `rateLimitExceeded`, alternately).
    pub fn burst_429(&self, n: u64) {
        self.inner.common.burst_429.store(n, Ordering::Relaxed);
    }

    /// Whether a file is served malformed (per the fault settings).
    pub fn is_malformed(&self, id: &str) -> bool {
        self.inner.is_malformed(id)
    }

    /// Content bytes served by downloads and exports so far.
    pub fn content_bytes_served(&self) -> u64 {
        self.inner.content_bytes.load(Ordering::Relaxed)
    }

    /// Revokes the refresh token: `/token` answers `invalid_grant` from now on.
    pub fn revoke_refresh_token(&self) {
        lock(&self.inner.data).revoked = true;
    }

    /// Runs `hook(handle, page number)` after each `files.list` page is computed (before it
    /// is sent): changes made there happen while a scan runs. `None` removes it.
    pub fn set_after_list_page(
        &self,
        hook: Option<impl Fn(&GDriveSimHandle, u64) + Send + Sync + 'static>,
    ) {
        *lock(&self.inner.after_list_page) = hook.map(|h| Arc::new(Box::new(h) as ListHook));
    }

    /// Every file (trashed ones too).
    pub fn files(&self) -> Vec<GDriveSimFile> {
        lock(&self.inner.data).files.values().cloned().collect()
    }

    /// One file.
    pub fn file(&self, id: &str) -> Option<GDriveSimFile> {
        lock(&self.inner.data).files.get(id).cloned()
    }

    /// Entries in the changes journal (every mutation appends one per file it touches).
    pub fn journal_len(&self) -> usize {
        lock(&self.inner.data).journal.len()
    }

    /// Creates a file; returns its id.
    pub fn create(&self, new: NewGDriveFile) -> String {
        let mut d = lock(&self.inner.data);
        let n = d.next_id;
        d.next_id += 1;
        let t = d.tick();
        let id = format!("1New{n:05}{:x}", mix(self.inner.cfg.seed, n, 7) % 0xffff);
        let f = GDriveSimFile {
            id: id.clone(),
            name: new.name,
            mime_type: new.mime_type,
            parents: new.parent.into_iter().collect(),
            drive_id: None,
            owner_email: Some(self.inner.cfg.owner_email.clone()),
            created_time: t,
            modified_time: t,
            trashed: false,
            explicitly_trashed: false,
            content: new.content,
            oversize: false,
        };
        d.files.insert(id.clone(), f);
        d.journal(&id, false);
        id
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut GDriveSimFile, DateTime<Utc>)) -> bool {
        let mut d = lock(&self.inner.data);
        let t = d.tick();
        let Some(f) = d.files.get_mut(id) else {
            return false;
        };
        change(f, t);
        d.journal(id, false);
        true
    }

    /// Replaces a file's content (moves `modifiedTime`).
    pub fn edit_content(&self, id: &str, content: impl Into<Vec<u8>>) -> bool {
        let content = content.into();
        self.update(id, |f, t| {
            f.content = content;
            f.modified_time = t;
        })
    }

    /// Renames a file (`modifiedTime` unchanged).
    pub fn rename(&self, id: &str, name: &str) -> bool {
        self.update(id, |f, _| f.name = name.to_owned())
    }

    /// Moves a file to another folder (`modifiedTime` unchanged).
    pub fn move_to(&self, id: &str, parent: &str) -> bool {
        self.update(id, |f, _| f.parents = vec![parent.to_owned()])
    }

    /// Trashes a file; a folder's descendants are trashed with it (implicitly: the journal
    /// holds only the folder's change, as a trashed folder's contents need not be reported).
    pub fn trash(&self, id: &str) -> bool {
        let mut d = lock(&self.inner.data);
        if !d.files.contains_key(id) {
            return false;
        }
        for c in d.descendants(id) {
            if let Some(f) = d.files.get_mut(&c) {
                f.trashed = true;
            }
        }
        if let Some(f) = d.files.get_mut(id) {
            f.trashed = true;
            f.explicitly_trashed = true;
        }
        d.journal(id, false);
        true
    }

    /// Restores a trashed file; a folder's implicitly trashed descendants come back too.
    pub fn untrash(&self, id: &str) -> bool {
        let mut d = lock(&self.inner.data);
        if !d.files.contains_key(id) {
            return false;
        }
        for c in d.descendants(id) {
            if let Some(f) = d.files.get_mut(&c)
                && !f.explicitly_trashed
            {
                f.trashed = false;
            }
        }
        if let Some(f) = d.files.get_mut(id) {
            f.trashed = false;
            f.explicitly_trashed = false;
        }
        d.journal(id, false);
        true
    }

    /// Deletes a file for good (a folder with everything in it): `removed` changes.
    pub fn delete(&self, id: &str) -> bool {
        let mut d = lock(&self.inner.data);
        if !d.files.contains_key(id) {
            return false;
        }
        let mut gone = d.descendants(id);
        gone.push(id.to_owned());
        for g in gone {
            d.files.remove(&g);
            d.journal(&g, true);
        }
        true
    }

    /// Marks a file's export as over 10 MB (or not).
    pub fn set_oversize(&self, id: &str, oversize: bool) -> bool {
        self.update(id, |f, t| {
            f.oversize = oversize;
            f.modified_time = t;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_subset_parses_and_rejects() {
        assert_eq!(
            parse_q("'abc' in parents and trashed = false").unwrap(),
            vec![Clause::InParents("abc".into()), Clause::Trashed(false)]
        );
        assert_eq!(
            parse_q("mimeType != 'application/vnd.google-apps.folder'").unwrap(),
            vec![Clause::Mime(FOLDER_MIME.into(), false)]
        );
        assert!(parse_q("name contains 'x'").is_err());
        assert!(parse_q("trashed = maybe").is_err());
    }

    #[test]
    fn fields_select_members() {
        let k = file_fields(
            Some("nextPageToken,files(id,name,owners(emailAddress))"),
            "files",
        )
        .unwrap();
        assert!(k.contains("owners") && k.contains("id") && !k.contains("nextPageToken"));
        let c = file_fields(
            Some("nextPageToken,newStartPageToken,changes(fileId,removed,time,file(id,trashed))"),
            "file",
        )
        .unwrap();
        assert!(c.contains("trashed") && !c.contains("removed"));
        assert!(file_fields(Some("*"), "files").is_none());
    }

    #[test]
    fn corpus_has_every_kind() {
        let cfg = GDriveSimConfig::default();
        let d = build_corpus(&cfg);
        let n = |m: &str| d.files.values().filter(|f| f.mime_type == m).count() as u64;
        assert_eq!(n(FOLDER_MIME), cfg.folders);
        assert_eq!(n(SHEET_MIME), cfg.sheets);
        assert_eq!(
            d.files.values().filter(|f| f.trashed).count() as u64,
            cfg.trashed
        );
        assert!(d.files.values().any(|f| f.parents.is_empty()));
        assert!(
            d.files
                .values()
                .any(|f| f.drive_id.is_some() && f.owner_email.is_none())
        );
    }
}
