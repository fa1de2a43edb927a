//! Drive v3 wire types: only the members the connector asks for in `fields`.

use serde::Deserialize;
use serde_json::Value;

/// A file as `files.list`, `files.get` and `changes.list` return it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DriveFile {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub parents: Vec<String>,
    #[serde(default)]
    pub drive_id: Option<String>,
    #[serde(default)]
    pub owners: Vec<Owner>,
    #[serde(default)]
    pub created_time: Option<String>,
    #[serde(default)]
    pub modified_time: Option<String>,
    /// A decimal string (int64 in JSON form); absent for Google-native files.
    #[serde(default)]
    pub size: Option<Value>,
    #[serde(default)]
    pub web_view_link: Option<String>,
    #[serde(default)]
    pub trashed: bool,
}

/// An owner (only the email is read).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Owner {
    #[serde(default)]
    pub email_address: Option<String>,
}

/// The MIME type of folders.
pub(crate) const FOLDER_MIME: &str = "application/vnd.google-apps.folder";

impl DriveFile {
    pub(crate) fn is_folder(&self) -> bool {
        self.mime_type.as_deref() == Some(FOLDER_MIME)
    }
}

/// A `files.list` page; files stay raw so one malformed file is captured, not fatal.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileList {
    #[serde(default)]
    pub next_page_token: Option<String>,
    #[serde(default)]
    pub incomplete_search: bool,
    #[serde(default)]
    pub files: Vec<Value>,
}

/// A `changes.list` page.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChangeList {
    #[serde(default)]
    pub next_page_token: Option<String>,
    #[serde(default)]
    pub new_start_page_token: Option<String>,
    #[serde(default)]
    pub changes: Vec<Value>,
}

/// One change, read leniently: `file` stays raw.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Change {
    #[serde(default)]
    pub change_type: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub removed: bool,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub file: Option<Value>,
}

/// `{"startPageToken": "…"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartPageToken {
    pub start_page_token: String,
}
