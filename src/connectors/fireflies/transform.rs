//! Fireflies transcripts → `conversations`, through the shared sanitization.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};
use uuid::Uuid;

use super::types::{FfSentence, FfTranscript, id_string};
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, Conversation, PUBLIC_EMAIL_DOMAINS, Participant, RecordMeta};
use crate::sanitize;

const SOURCE: ConnectorKind = ConnectorKind::Fireflies;

/// The workspace's internal email domains (lower case, no `@`), compared exactly and
/// case-insensitively: a subdomain is another domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InternalDomains(BTreeSet<String>);

/// A domain as compared: trimmed, lower case, without a leading `@`; `None` when it is not
/// a plausible domain.
pub(crate) fn normalize_domain(d: &str) -> Option<String> {
    let d = d
        .trim()
        .trim_start_matches('@')
        .trim_end_matches('.')
        .to_lowercase();
    (d.contains('.') && !d.contains(char::is_whitespace) && !d.contains('@')).then_some(d)
}

/// The domain of an email address, normalized.
fn email_domain(email: &str) -> Option<String> {
    email
        .rsplit_once('@')
        .and_then(|(_, d)| normalize_domain(d))
}

impl InternalDomains {
    /// The configured domains (entries that are not domains are dropped).
    pub(crate) fn configured<'a>(domains: impl IntoIterator<Item = &'a str>) -> Self {
        InternalDomains(domains.into_iter().filter_map(normalize_domain).collect())
    }

    /// The domains of the team's users, except public mail providers.
    pub(crate) fn of_team<'a>(emails: impl IntoIterator<Item = &'a str>) -> Self {
        InternalDomains(
            emails
                .into_iter()
                .filter_map(email_domain)
                .filter(|d| !PUBLIC_EMAIL_DOMAINS.contains(&d.as_str()))
                .collect(),
        )
    }

    /// Whether `email` is on one of the domains.
    pub(crate) fn contains_email(&self, email: &str) -> bool {
        email_domain(email).is_some_and(|d| self.0.contains(&d))
    }

    /// The domains, sorted.
    pub(crate) fn list(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

/// Decodes one raw transcript; a malformed one fails alone, naming its id when it has one.
pub(crate) fn decode(raw: Value) -> Result<FfTranscript> {
    let id = transcript_id(&raw);
    if !raw.is_object() {
        return Err(Error::decode(
            None,
            "malformed Fireflies transcript: not an object",
        ));
    }
    serde_json::from_value(raw).map_err(|e| {
        Error::decode(
            id.as_deref(),
            format!("malformed Fireflies transcript: {e}"),
        )
    })
}

/// `id` of a raw transcript, when it has one.
pub(crate) fn transcript_id(raw: &Value) -> Option<String> {
    id_string(raw.get("id"))
}

fn email(v: Option<&Value>) -> Option<String> {
    sanitize::text(v).map(|e| e.trim().to_owned())
}

/// Minutes (fractional) → whole seconds, rounded; negative or absurd values give `None`.
fn seconds(minutes: Option<&Value>) -> Option<i64> {
    let m = sanitize::number(minutes)?;
    let s = (m * 60.0).round();
    // Whole seconds as a JSON number: `sanitize::integer` converts it exactly or refuses.
    sanitize::integer(Some(&serde_json::json!(s))).filter(|s| *s >= 0)
}

/// Sentences → `Speaker: text` lines.
pub(crate) fn transcript_text(sentences: &[FfSentence]) -> Option<String> {
    let lines: Vec<String> = sentences
        .iter()
        .filter_map(|s| {
            let text = sanitize::text(s.text.as_ref())?;
            Some(match sanitize::text(s.speaker_name.as_ref()) {
                Some(who) => format!("{}: {}", who.trim(), text.trim()),
                None => text.trim().to_owned(),
            })
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// A transcript → `conversations`.
///
/// - `source_id` ← `id`; `title`; `started_at` ← `date` (epoch ms); `duration_seconds` ←
///   `duration` (minutes, fractional) × 60, rounded; `url` ← `transcript_url`;
/// - `host_email` ← `organizer_email`, else the deprecated `host_email`;
/// - `participants` ← `meeting_attendees[]` with an email or a name (`name`, else
///   `displayName`), then every `participants[]` email not among them (the only source
///   when the meeting has no attendee list), once per email (case-insensitive);
///   `is_internal` ← the email's domain is one of the workspace's internal domains;
/// - `summary` ← `summary.overview` (else `short_summary`; `NULL` while processing);
/// - `transcript` ← the sentences, when they were read (`include_sentences`);
/// - `custom_fields` ← `keywords`, `action_items` (the summary's unmapped parts);
/// - `is_internal` stays `None` for the internal-filter hook.
///
/// A transcript without a readable `date` fails: the date is its place in the list.
/// Fireflies has no modification time: `source_updated_at` stays `None`, so the store
/// replaces a row whenever a re-read transcript differs and leaves it alone otherwise.
pub(crate) fn conversation(
    workspace_id: Uuid,
    t: &FfTranscript,
    internal: &InternalDomains,
    sentences: Option<&[FfSentence]>,
) -> Result<Conversation> {
    let Some(id) = id_string(Some(&t.id)) else {
        return Err(Error::decode(None, "Fireflies transcript without an id"));
    };
    let Some(started_at) = sanitize::datetime(t.date.as_ref()) else {
        return Err(Error::decode(
            Some(&id),
            "Fireflies transcript without a readable date",
        ));
    };
    let mut seen = BTreeSet::new();
    let mut participants = Vec::new();
    let mut add = |email: Option<String>, name: Option<String>| {
        if email.is_none() && name.is_none() {
            return;
        }
        if let Some(e) = &email
            && !seen.insert(e.to_lowercase())
        {
            return;
        }
        let is_internal = email.as_deref().is_some_and(|e| internal.contains_email(e));
        participants.push(Participant {
            email,
            name,
            is_internal,
        });
    };
    for a in t.meeting_attendees.as_deref().unwrap_or(&[]) {
        let name = sanitize::text(a.name.as_ref())
            .or_else(|| sanitize::text(a.display_name.as_ref()))
            .map(|n| n.trim().to_owned());
        add(email(a.email.as_ref()), name);
    }
    for p in t.participants.as_deref().unwrap_or(&[]) {
        if let Some(e) = email(Some(p)) {
            add(Some(e), None);
        }
    }
    let summary = t.summary.as_ref().and_then(|s| {
        sanitize::text(s.overview.as_ref()).or_else(|| sanitize::text(s.short_summary.as_ref()))
    });
    let mut custom = Map::new();
    if let Some(s) = &t.summary {
        for (k, v) in [("keywords", &s.keywords), ("action_items", &s.action_items)] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_null()) {
                custom.insert(k.to_owned(), v.clone());
            }
        }
    }
    let mut meta = RecordMeta::new(workspace_id, SOURCE, id);
    meta.custom_fields = sanitize::sanitize_properties(custom);
    Ok(Conversation {
        meta,
        title: sanitize::text(t.title.as_ref()),
        started_at: Some(started_at),
        duration_seconds: seconds(t.duration.as_ref()),
        url: sanitize::text(t.transcript_url.as_ref()).map(|u| u.trim().to_owned()),
        host_email: email(t.organizer_email.as_ref()).or_else(|| email(t.host_email.as_ref())),
        participants,
        summary,
        transcript: sentences.and_then(transcript_text),
        is_internal: None,
        linked_account_id: None,
        linked_deal_id: None,
    })
}

/// Decodes the sentences of `transcript(id)` answers, keyed by id; a malformed list is
/// dropped (the transcript is stored without its text).
pub(crate) fn sentences_of(data: &Value) -> HashMap<String, Vec<FfSentence>> {
    let mut out = HashMap::new();
    if let Some(map) = data.as_object() {
        for t in map.values() {
            let Some(id) = transcript_id(t) else { continue };
            if let Some(list) = t.get("sentences")
                && let Ok(s) = serde_json::from_value::<Vec<FfSentence>>(list.clone())
            {
                out.insert(id, s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn ws() -> Uuid {
        Uuid::from_u128(15)
    }

    fn sample() -> Value {
        json!({
            "id": "01HXYZABCDEFGHJKMNPQRSTVWX", "title": "Weekly sync", "date": 1_717_000_000_000.0_f64,
            "duration": 31.5, "host_email": "old@us.com", "organizer_email": "ada@us.com",
            "participants": ["ada@us.com", "b@them.com", "C@Them.com", "carol@US.COM"],
            "meeting_attendees": [
                {"displayName": "Ada L", "email": "ada@us.com", "phoneNumber": null, "name": "Ada", "location": null},
                {"displayName": "Bob", "email": "b@them.com", "name": null},
                {"displayName": null, "email": null, "name": null}
            ],
            "transcript_url": "https://app.fireflies.ai/view/x::01HXYZ",
            "summary": {"overview": "We talked.", "short_summary": "Talk", "keywords": ["a", "b"], "action_items": "Do it"}
        })
    }

    #[test]
    fn transcript_fields_map_to_the_conversation() {
        let internal = InternalDomains::configured(["US.com", "@other.org", "not a domain"]);
        assert_eq!(internal.list(), ["other.org", "us.com"]);
        let c = conversation(ws(), &decode(sample()).unwrap(), &internal, None).unwrap();
        assert_eq!(c.meta.source_id, "01HXYZABCDEFGHJKMNPQRSTVWX");
        assert_eq!(c.meta.source, ConnectorKind::Fireflies);
        assert_eq!(c.title.as_deref(), Some("Weekly sync"));
        assert_eq!(
            c.started_at,
            Some(Utc.timestamp_millis_opt(1_717_000_000_000).unwrap())
        );
        assert_eq!(c.duration_seconds, Some(1890));
        assert_eq!(c.host_email.as_deref(), Some("ada@us.com"));
        assert_eq!(
            c.url.as_deref(),
            Some("https://app.fireflies.ai/view/x::01HXYZ")
        );
        assert_eq!(c.summary.as_deref(), Some("We talked."));
        let p: Vec<_> = c
            .participants
            .iter()
            .map(|p| (p.email.as_deref(), p.name.as_deref(), p.is_internal))
            .collect();
        assert_eq!(
            p,
            [
                (Some("ada@us.com"), Some("Ada"), true),
                (Some("b@them.com"), Some("Bob"), false),
                (Some("C@Them.com"), None, false),
                (Some("carol@US.COM"), None, true),
            ]
        );
        assert_eq!(c.is_internal, None);
        assert_eq!(
            c.meta.custom_fields.get("keywords"),
            Some(&json!(["a", "b"]))
        );
        assert_eq!(
            c.meta.custom_fields.get("action_items"),
            Some(&json!("Do it"))
        );
        assert_eq!(c.transcript, None);
    }

    #[test]
    fn processing_summaries_fallbacks_and_sentences() {
        let mut raw = sample();
        raw["summary"] = json!({"overview": null, "short_summary": null, "keywords": null, "action_items": null});
        raw["organizer_email"] = Value::Null;
        raw["meeting_attendees"] = json!([]);
        let sentences = vec![
            FfSentence {
                speaker_name: Some(json!("Ada")),
                text: Some(json!("Hi")),
            },
            FfSentence {
                speaker_name: None,
                text: Some(json!("Hello")),
            },
            FfSentence {
                speaker_name: Some(json!("X")),
                text: None,
            },
        ];
        let c = conversation(
            ws(),
            &decode(raw).unwrap(),
            &InternalDomains::default(),
            Some(&sentences),
        )
        .unwrap();
        assert_eq!(c.summary, None);
        assert!(c.meta.custom_fields.is_empty());
        assert_eq!(c.host_email.as_deref(), Some("old@us.com"));
        assert_eq!(c.participants.len(), 4);
        assert!(
            c.participants
                .iter()
                .all(|p| p.name.is_none() && !p.is_internal)
        );
        assert_eq!(c.transcript.as_deref(), Some("Ada: Hi\nHello"));
    }

    #[test]
    fn team_domains_skip_public_providers() {
        let d = InternalDomains::of_team(["a@Us.com", "b@gmail.com", "nobody"]);
        assert_eq!(d.list(), ["us.com"]);
        assert!(d.contains_email("X@US.COM") && !d.contains_email("x@sub.us.com"));
    }

    #[test]
    fn malformed_transcripts_fail_with_their_id() {
        let err = decode(json!({"id": "T1", "meeting_attendees": "corrupt"})).unwrap_err();
        assert!(
            matches!(&err, Error::Decode { record_id: Some(id), .. } if id == "T1"),
            "{err}"
        );
        let no_date = decode(json!({"id": "T2", "date": "yesterday"})).unwrap();
        let err = conversation(ws(), &no_date, &InternalDomains::default(), None).unwrap_err();
        assert!(
            matches!(&err, Error::Decode { record_id: Some(id), .. } if id == "T2"),
            "{err}"
        );
        assert!(decode(json!([1])).is_err());
        let no_id = decode(json!({"id": null})).unwrap();
        assert!(conversation(ws(), &no_id, &InternalDomains::default(), None).is_err());
        assert_eq!(seconds(Some(&json!(-1))), None);
        assert_eq!(seconds(Some(&json!("0.5"))), Some(30));
    }
}
