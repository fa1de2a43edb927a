//! Drive files → [`Document`] records, and the text helpers (BOM, UTF-8 cap). Pure.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::types::{DriveFile, FOLDER_MIME};
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, Document};
use crate::sanitize;

/// How a file's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextSource {
    /// `files/{id}/export?mimeType=…`.
    Export(&'static str),
    /// `files/{id}?alt=media`.
    Download,
}

/// Where a file's text comes from, or `None` for files without a text form.
pub(crate) fn text_source(mime: Option<&str>) -> Option<TextSource> {
    match mime? {
        "application/vnd.google-apps.document" | "application/vnd.google-apps.presentation" => {
            Some(TextSource::Export("text/plain"))
        }
        "application/vnd.google-apps.spreadsheet" => Some(TextSource::Export("text/csv")),
        m if m.starts_with("text/") => Some(TextSource::Download),
        _ => None,
    }
}

/// A file's raw JSON as a [`DriveFile`]; the error names the id when it can be read.
pub(crate) fn decode(raw: Value) -> Result<DriveFile> {
    let id = file_id(&raw);
    let f: DriveFile = serde_json::from_value(raw)
        .map_err(|e| Error::decode(id.as_deref(), format!("unreadable Drive file: {e}")))?;
    if f.id.trim().is_empty() {
        return Err(Error::decode(None, "Drive file without an id"));
    }
    if let Some(m) = &f.modified_time
        && sanitize::datetime_str(m).is_none()
    {
        return Err(Error::decode(
            Some(&f.id),
            format!("Drive file with an unreadable modifiedTime {m:?}"),
        ));
    }
    Ok(f)
}

/// The id of a raw file, for failure capture.
pub(crate) fn file_id(raw: &Value) -> Option<String> {
    raw.get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// `modifiedTime`.
pub(crate) fn modified(f: &DriveFile) -> Option<DateTime<Utc>> {
    f.modified_time.as_deref().and_then(sanitize::datetime_str)
}

/// `modifiedTime` of a raw file.
pub(crate) fn modified_raw(raw: &Value) -> Option<DateTime<Utc>> {
    raw.get("modifiedTime")
        .and_then(Value::as_str)
        .and_then(sanitize::datetime_str)
}

/// The instant a trashed or moved-out file is archived at: just before its last
/// modification. Drive does not say when a My Drive file was trashed, and the store
/// un-archives a row only with a newer version: the same version coming back (untrash,
/// moved back in, whose `modifiedTime` need not move) must be newer than its archive time.
pub(crate) fn archive_time(f: &DriveFile, fallback: DateTime<Utc>) -> DateTime<Utc> {
    modified(f).map_or(fallback, |m| m - chrono::Duration::milliseconds(1))
}

/// The document of a (non-folder) file, with its text when read.
pub(crate) fn document(ws: Uuid, f: &DriveFile, content: Option<String>) -> Result<Document> {
    if f.mime_type.as_deref() == Some(FOLDER_MIME) {
        return Err(Error::decode(Some(&f.id), "a folder is not a document"));
    }
    let mut d = Document::new(ws, ConnectorKind::GoogleDrive, f.id.clone());
    d.title = f.name.as_deref().map(sanitize::strip_nul);
    d.mime_type = f.mime_type.clone();
    d.url = f.web_view_link.clone();
    d.owner_email = f
        .owners
        .iter()
        .find_map(|o| o.email_address.as_deref())
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty());
    d.size_bytes = sanitize::integer(f.size.as_ref());
    d.parent_id = f.parents.first().cloned();
    d.content_text = content.map(|c| sanitize::strip_nul(&c));
    d.meta.source_created_at = f.created_time.as_deref().and_then(sanitize::datetime_str);
    d.meta.source_updated_at = modified(f);
    if let Some(drive) = &f.drive_id {
        d.meta.custom_fields.insert("drive_id".into(), json!(drive));
    }
    Ok(d)
}

/// Drops the UTF-8 byte-order mark Docs exports start with.
pub(crate) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Bytes as text capped at `max` bytes, cut at a UTF-8 boundary (invalid sequences
/// replaced).
pub(crate) fn capped_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(strip_bom(bytes));
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_and_cap() {
        assert_eq!(capped_text(b"\xEF\xBB\xBFhello", 100), "hello");
        // "é" is two bytes: a cap inside it cuts before it.
        assert_eq!(capped_text("aé".as_bytes(), 2), "a");
        assert_eq!(capped_text("aé".as_bytes(), 3), "aé");
        assert_eq!(capped_text("東京".as_bytes(), 5), "東");
        assert_eq!(capped_text(b"", 0), "");
    }

    #[test]
    fn a_file_becomes_a_document() {
        let raw = json!({"id": "f1", "name": "Plan", "mimeType": "text/plain", "parents": ["p"],
            "owners": [{"emailAddress": "A@X.example"}], "size": "12",
            "createdTime": "2024-01-01T00:00:00.000Z", "modifiedTime": "2024-01-02T00:00:00.000Z",
            "webViewLink": "https://drive.google.com/file/d/f1/view", "driveId": "d"});
        let f = decode(raw).unwrap();
        let d = document(Uuid::nil(), &f, Some("x".into())).unwrap();
        assert_eq!(d.owner_email.as_deref(), Some("a@x.example"));
        assert_eq!(
            (d.size_bytes, d.parent_id.as_deref()),
            (Some(12), Some("p"))
        );
        assert_eq!(d.meta.custom_fields["drive_id"], "d");
        assert!(decode(json!({"id": "f2", "name": 4})).is_err());
        let e = decode(json!({"id": "f3", "modifiedTime": "nope"})).unwrap_err();
        assert!(e.to_string().contains("f3") || format!("{e:?}").contains("f3"));
        assert_eq!(text_source(Some("application/pdf")), None);
        assert_eq!(
            text_source(Some("application/vnd.google-apps.spreadsheet")),
            Some(TextSource::Export("text/csv"))
        );
    }
}
