//! Gong calls → `conversations`, through the shared sanitization.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use uuid::Uuid;

use super::types::{GongCall, GongParty, id_string};
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, Conversation, CustomFields, Participant, RecordMeta};
use crate::sanitize;

const SOURCE: ConnectorKind = ConnectorKind::Gong;

/// `metaData` keys mapped to typed columns; every other key goes to `custom_fields`.
const MAPPED: &[&str] = &["id", "title", "started", "duration", "url"];

/// Decodes one raw call; a malformed call fails alone, naming its id when it has one.
pub(crate) fn decode(raw: Value) -> Result<GongCall> {
    let id = call_id(&raw);
    // serde would also read a struct from an array (`[{…metaData…}, …]`): a call is an
    // object or malformed.
    if !raw.is_object() {
        return Err(Error::decode(None, "malformed Gong call: not an object"));
    }
    serde_json::from_value(raw)
        .map_err(|e| Error::decode(id.as_deref(), format!("malformed Gong call: {e}")))
}

/// `metaData.id` of a raw call, when it has one.
pub(crate) fn call_id(raw: &Value) -> Option<String> {
    id_string(raw.get("metaData").and_then(|m| m.get("id")))
}

/// Whether a party's `affiliation` is `Internal`.
fn is_internal(p: &GongParty) -> bool {
    p.affiliation
        .as_ref()
        .and_then(Value::as_str)
        .is_some_and(|a| a.trim().eq_ignore_ascii_case("internal"))
}

fn email(v: Option<&Value>) -> Option<String> {
    sanitize::text(v).map(|e| e.trim().to_owned())
}

/// A call → `conversations`.
///
/// - `source_id` ← `metaData.id`; `title`, `url` ← `metaData`; `started_at` ←
///   `metaData.started`; `duration_seconds` ← `metaData.duration` (seconds);
/// - `host_email` ← the party whose `userId` is `metaData.primaryUserId`, else the host's
///   address from `/v2/users` (`user_emails`);
/// - `participants` ← `parties[]` with an email or a name (`is_internal` ←
///   `affiliation == "Internal"`), once per email;
/// - `is_internal` stays `None` for the internal-filter hook;
/// - every other `metaData` key goes to `custom_fields`.
///
/// Gong has no modification time for calls: `source_updated_at` stays `None`, so the store
/// replaces a row whenever a re-read call differs and leaves it alone otherwise.
pub(crate) fn conversation(
    workspace_id: Uuid,
    call: &GongCall,
    user_emails: &HashMap<String, String>,
) -> Result<Conversation> {
    let m = &call.meta_data;
    let Some(id) = id_string(m.get("id")) else {
        return Err(Error::decode(None, "Gong call without metaData.id"));
    };
    let parties: &[GongParty] = call.parties.as_deref().unwrap_or(&[]);
    let host_id = id_string(m.get("primaryUserId"));
    let host_email = host_id.as_deref().and_then(|host| {
        parties
            .iter()
            .find(|p| id_string(p.user_id.as_ref()).as_deref() == Some(host))
            .and_then(|p| email(p.email_address.as_ref()))
            .or_else(|| user_emails.get(host).cloned())
    });
    let mut seen = BTreeSet::new();
    let participants = parties
        .iter()
        .filter_map(|p| {
            let email = email(p.email_address.as_ref());
            let name = sanitize::text(p.name.as_ref()).map(|n| n.trim().to_owned());
            if email.is_none() && name.is_none() {
                return None;
            }
            if let Some(e) = &email
                && !seen.insert(e.to_lowercase())
            {
                return None;
            }
            Some(Participant {
                email,
                name,
                is_internal: is_internal(p),
            })
        })
        .collect();
    let mut meta = RecordMeta::new(workspace_id, SOURCE, id);
    meta.custom_fields = custom_fields(m);
    Ok(Conversation {
        meta,
        title: sanitize::text(m.get("title")),
        started_at: sanitize::datetime(m.get("started")),
        duration_seconds: sanitize::integer(m.get("duration")).filter(|d| *d >= 0),
        url: sanitize::text(m.get("url")).map(|u| u.trim().to_owned()),
        host_email,
        participants,
        summary: None,
        transcript: None,
        is_internal: None,
        linked_account_id: None,
        linked_deal_id: None,
    })
}

fn custom_fields(m: &serde_json::Map<String, Value>) -> CustomFields {
    sanitize::sanitize_properties(
        m.iter()
            .filter(|(k, _)| !MAPPED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn ws() -> Uuid {
        Uuid::from_u128(8)
    }

    fn sample() -> Value {
        json!({
            "metaData": {
                "id": "7782342274025937895", "url": "https://app.gong.io/call?id=7782342274025937895",
                "title": "Intro", "scheduled": "2018-02-18T02:30:00-07:00", "started": "2018-02-18T01:00:00-07:00",
                "duration": 1800, "primaryUserId": "234599484848423", "direction": "Conference", "system": "Zoom",
                "scope": "External", "media": "Video", "language": "eng", "workspaceId": "55", "sdrDisposition": null,
                "purpose": "", "isPrivate": false
            },
            "context": [],
            "parties": [
                {"id": "1", "emailAddress": "ae@us.com", "name": "Ada", "userId": "234599484848423", "affiliation": "Internal", "methods": ["Invitee"]},
                {"id": "2", "emailAddress": "buyer@them.com", "name": "Bob", "affiliation": "External"},
                {"id": "3", "emailAddress": "BUYER@them.com", "name": "Bob again", "affiliation": "External"},
                {"id": "4", "phoneNumber": "+1 555 0100", "affiliation": "Unknown"},
                {"id": "5", "name": "Dial-in", "affiliation": "Unknown"}
            ]
        })
    }

    #[test]
    fn call_fields_map_to_the_conversation() {
        let c = conversation(ws(), &decode(sample()).unwrap(), &HashMap::new()).unwrap();
        assert_eq!(c.meta.source_id, "7782342274025937895");
        assert_eq!(c.meta.source, ConnectorKind::Gong);
        assert_eq!(c.title.as_deref(), Some("Intro"));
        assert_eq!(
            c.started_at,
            Some(Utc.with_ymd_and_hms(2018, 2, 18, 8, 0, 0).unwrap())
        );
        assert_eq!(c.duration_seconds, Some(1800));
        assert_eq!(
            c.url.as_deref(),
            Some("https://app.gong.io/call?id=7782342274025937895")
        );
        assert_eq!(c.host_email.as_deref(), Some("ae@us.com"));
        assert_eq!(
            c.participants,
            vec![
                Participant {
                    email: Some("ae@us.com".into()),
                    name: Some("Ada".into()),
                    is_internal: true
                },
                Participant {
                    email: Some("buyer@them.com".into()),
                    name: Some("Bob".into()),
                    is_internal: false
                },
                Participant {
                    email: None,
                    name: Some("Dial-in".into()),
                    is_internal: false
                },
            ]
        );
        assert_eq!(c.is_internal, None);
        assert_eq!(c.meta.source_updated_at, None);
        let cf = &c.meta.custom_fields;
        assert_eq!(cf.get("primaryUserId"), Some(&json!("234599484848423")));
        assert_eq!(cf.get("system"), Some(&json!("Zoom")));
        assert_eq!(cf.get("purpose"), Some(&Value::Null));
        assert!(!cf.contains_key("title") && !cf.contains_key("id"));
    }

    #[test]
    fn host_email_falls_back_to_the_user_list() {
        let mut raw = sample();
        raw["parties"] = json!([]);
        let users = HashMap::from([("234599484848423".to_owned(), "ae@us.com".to_owned())]);
        let c = conversation(ws(), &decode(raw.clone()).unwrap(), &users).unwrap();
        assert_eq!(c.host_email.as_deref(), Some("ae@us.com"));
        assert!(c.participants.is_empty());
        raw["parties"] = Value::Null;
        let c = conversation(ws(), &decode(raw).unwrap(), &HashMap::new()).unwrap();
        assert_eq!(c.host_email, None);
    }

    #[test]
    fn odd_values_become_none() {
        let raw = json!({"metaData": {"id": 77, "started": "", "duration": "-5", "title": "  ", "url": null}});
        let c = conversation(ws(), &decode(raw).unwrap(), &HashMap::new()).unwrap();
        assert_eq!(c.meta.source_id, "77");
        assert_eq!(
            (c.started_at, c.duration_seconds, c.title, c.url),
            (None, None, None, None)
        );
    }

    #[test]
    fn malformed_calls_fail_with_their_id() {
        let err = decode(json!({"metaData": {"id": "9", "started": "x"}, "parties": "corrupt"}))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Decode { record_id: Some(id), .. } if id == "9"),
            "{err}"
        );
        let err = decode(json!({"metaData": "corrupt"})).unwrap_err();
        assert!(matches!(
            &err,
            Error::Decode {
                record_id: None,
                ..
            }
        ));
        // Found by fuzzing: serde reads a struct from an array too.
        assert!(decode(json!([{"id": "1"}])).is_err());
        assert!(decode(json!("call")).is_err());
        let no_id = decode(json!({"metaData": {"title": "x"}})).unwrap();
        assert!(conversation(ws(), &no_id, &HashMap::new()).is_err());
    }
}
