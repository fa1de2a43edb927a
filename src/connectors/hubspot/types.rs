//! HubSpot CRM v3/v4 wire types (only what the connector reads).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One CRM object as the list and search endpoints return it. Property values are strings
/// (or null) in the real API.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HsObject {
    pub id: String,
    #[serde(default)]
    pub properties: Props,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    #[serde(default)]
    pub archived: bool,
    pub archived_at: Option<String>,
    #[serde(default)]
    pub associations: HashMap<String, AssocBlock>,
}

/// An object's properties as the API sent them: a short list of (name, value) pairs. A
/// record has tens of properties, so a lookup is a short scan; building the list and taking
/// values out of it costs a fraction of a tree map's node allocations and rebalancing, which
/// were the largest part of decoding a record. A name sent twice keeps its last value, as
/// in a map.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Props(Vec<(String, Value)>);

impl Props {
    /// The value of property `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Takes property `name` out (no copy of its value).
    pub(crate) fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.swap_remove(i).1)
    }

    /// The properties whose names `keep` accepts, as a map.
    pub(crate) fn into_map(self, keep: impl Fn(&str) -> bool) -> Map<String, Value> {
        self.0.into_iter().filter(|(k, _)| keep(k)).collect()
    }

    /// Sets `name` to `value`, replacing an earlier value of the same name.
    pub(crate) fn insert(&mut self, name: String, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl<'de> Deserialize<'de> for Props {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PropsVisitor;
        impl<'de> serde::de::Visitor<'de> for PropsVisitor {
            type Value = Props;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of properties")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Props, A::Error> {
                let mut props = Props(Vec::with_capacity(map.size_hint().unwrap_or(16)));
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    props.insert(k, v);
                }
                Ok(props)
            }
        }
        d.deserialize_map(PropsVisitor)
    }
}

/// An inline association block: `{results: [{id, type}], paging?}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct AssocBlock {
    #[serde(default)]
    pub results: Vec<AssocRef>,
    pub paging: Option<Paging>,
}

/// One inline association.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AssocRef {
    pub id: String,
}

/// `paging.next.after`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Paging {
    pub next: Option<PagingNext>,
}

impl Paging {
    /// The next page's cursor; `None` when there is none or it is empty.
    fn after(&self) -> Option<&str> {
        self.next
            .as_ref()?
            .after
            .as_deref()
            .filter(|a| !a.is_empty())
    }
}

/// The next page's cursor (a string in every HubSpot answer; a number is read as its
/// decimal string, anything else fails the page).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PagingNext {
    #[serde(default, deserialize_with = "string_or_number")]
    pub after: Option<String>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "paging cursor is neither a string nor a number: {}",
            crate::error::body_excerpt(&other.to_string())
        ))),
    }
}

/// A list or search page. By default each result stays raw JSON text, checked for syntax
/// only, so a malformed record fails alone when it is decoded (straight into [`HsObject`],
/// without an intermediate `Value` tree); a [`DecodedPage`] reads its results as objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(bound(deserialize = "R: Deserialize<'de>"))]
pub(crate) struct Page<R = Box<RawValue>> {
    #[serde(default)]
    pub results: Vec<R>,
    pub paging: Option<Paging>,
    /// Search only: how many records match the query.
    #[serde(default)]
    pub total: Option<Value>,
}

/// A list page decoded in one scan of its body, straight into its objects: the common case,
/// where every record reads. A body where one does not is read again as a [`Page`], so that
/// the bad record fails alone (see [`Results`]).
pub(crate) type DecodedPage = Page<HsObject>;

/// A page's results on their way to the transform: decoded already, or raw text that each
/// record is decoded from on its own.
#[derive(Debug)]
pub(crate) enum Results {
    /// Every record of the page decoded (one scan of the body).
    Decoded(Vec<HsObject>),
    /// Records checked for syntax only; each is decoded, and may fail, alone.
    Raw(Vec<Box<RawValue>>),
}

/// A list page as the connector takes it: its results and its next cursor.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub results: Results,
    pub next_after: Option<String>,
}

impl ListPage {
    /// A list page body: decoded in one scan when every record reads, else kept raw per
    /// record (`parse` reads it so, and fails only on a body that is not a page at all).
    /// The body's UTF-8 is checked once, up front, rather than string by string.
    pub(crate) fn from_body(
        body: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<Page>,
    ) -> Result<Self> {
        let decoded = std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_json::from_str::<DecodedPage>(text).ok());
        match decoded {
            Some(p) => Ok(ListPage {
                next_after: p.next_after().map(str::to_owned),
                results: Results::Decoded(p.results),
            }),
            None => Ok(ListPage::from(parse(body)?)),
        }
    }
}

impl From<Page> for ListPage {
    fn from(p: Page) -> Self {
        ListPage {
            next_after: p.next_after().map(str::to_owned),
            results: Results::Raw(p.results),
        }
    }
}

/// A list page's cursor alone, read without keeping (or checking the records of) its
/// results: what a reader needs to request the next page before the page is parsed.
#[derive(Debug, Deserialize)]
pub(crate) struct PageHead {
    #[serde(default)]
    #[allow(dead_code)] // skipped over, never read
    results: serde::de::IgnoredAny,
    paging: Option<Paging>,
}

impl PageHead {
    /// The next page's cursor (see [`Page::next_after`]).
    pub(crate) fn next_after(&self) -> Option<&str> {
        self.paging.as_ref()?.after()
    }
}

/// The next page's cursor of a list page body, for the reader that requests the next page
/// before this one is parsed; `None` on the last page or a body that is not a page.
///
/// HubSpot puts `paging` after `results`, so the cursor is found without scanning the
/// records: from the body's last `"paging"` token, the rest of the body, opened with `{`,
/// must read as one whole JSON object. Only the top-level member can: a token nested in a
/// record leaves its enclosing brackets unclosed, a string's escaped quote is skipped, and
/// any other text fails to parse. When the token is not found so, or the rest is long (a
/// body whose members come in another order), the whole body is read. For a valid JSON body
/// both reads give the same answer; text that is not JSON but ends like a page may still
/// yield a cursor, and then fails when the page itself is parsed.
pub(crate) fn next_list_cursor(body: &[u8]) -> Option<String> {
    /// Longer than any `paging` member and the few members that may follow it.
    const MAX_TAIL: usize = 4096;
    const TOKEN: &[u8] = b"\"paging\"";
    #[derive(Deserialize)]
    struct Tail {
        paging: Option<Paging>,
    }
    let tail = memchr::memmem::rfind(body, TOKEN).and_then(|at| {
        let escapes = body[..at].iter().rev().take_while(|b| **b == b'\\').count();
        let rest = &body[at..];
        (escapes % 2 == 0 && rest.len() <= MAX_TAIL).then_some(rest)
    });
    if let Some(rest) = tail {
        let mut text = Vec::with_capacity(rest.len() + 1);
        text.push(b'{');
        text.extend_from_slice(rest);
        if let Ok(t) = serde_json::from_slice::<Tail>(&text) {
            return t.paging.as_ref()?.after().map(str::to_owned);
        }
    }
    serde_json::from_slice::<PageHead>(body)
        .ok()?
        .next_after()
        .map(str::to_owned)
}

/// A raw result's `id`: a string as is, a number as its decimal text, `None` when it is
/// missing, null or the result is not an object. Reads only what it needs; for the rare
/// places that want an id without decoding the whole record (and for failure capture).
pub(crate) fn raw_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<Value>,
    }
    match serde_json::from_str::<IdOnly>(raw.get()).ok()?.id? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

impl<R> Page<R> {
    /// The next page's cursor; `None` on the last page.
    pub(crate) fn next_after(&self) -> Option<&str> {
        self.paging.as_ref()?.after()
    }

    /// Whether a search page says more results follow. Search's `paging.next.after` is a
    /// numeric offset; a cursor that is not one means the API answered something the
    /// connector does not understand: an error, never "last page".
    pub(crate) fn search_has_more(&self) -> Result<bool> {
        let Some(next) = self.paging.as_ref().and_then(|p| p.next.as_ref()) else {
            return Ok(false);
        };
        match next.after.as_deref() {
            Some(a) if a.trim().parse::<u64>().is_ok() => Ok(true),
            other => Err(Error::decode(
                None,
                format!(
                    "HubSpot search answered a non-numeric paging cursor {:?}",
                    other.map(crate::error::body_excerpt)
                ),
            )),
        }
    }

    /// Search's `total`: the number of records matching the query.
    pub(crate) fn total(&self) -> Result<u64> {
        self.total.as_ref().and_then(Value::as_u64).ok_or_else(|| {
            Error::decode(
                None,
                format!(
                    "HubSpot search total is not a count: {:?}",
                    self.total
                        .as_ref()
                        .map(|t| crate::error::body_excerpt(&t.to_string()))
                ),
            )
        })
    }
}

/// Body of `POST /crm/v3/objects/{type}/search`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchRequest {
    pub filter_groups: Vec<FilterGroup>,
    pub sorts: Vec<Sort>,
    pub properties: Vec<String>,
    pub limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// Filters ANDed together.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FilterGroup {
    pub filters: Vec<Filter>,
}

/// One search filter.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Filter {
    pub property_name: String,
    pub operator: &'static str,
    pub value: String,
}

/// The one sort rule search allows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sort {
    pub property_name: String,
    pub direction: &'static str,
}

/// Body of `POST /crm/v4/associations/{from}/{to}/batch/read`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AssocBatchRequest {
    pub inputs: Vec<AssocInput>,
}

/// One input of a batch read: the record and, for later pages, its cursor.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AssocInput {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// Reply of the v4 batch read.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AssocBatchResponse {
    #[serde(default)]
    pub results: Vec<AssocResult>,
    #[serde(default)]
    pub errors: Vec<Value>,
}

/// Associations of one input record.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AssocResult {
    pub from: AssocFrom,
    #[serde(default)]
    pub to: Vec<AssocTo>,
    pub paging: Option<Paging>,
}

/// The input record.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AssocFrom {
    pub id: String,
}

/// One associated record (`toObjectId` is a number in v4).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AssocTo {
    pub to_object_id: Value,
}

impl AssocTo {
    pub(crate) fn id(&self) -> Option<String> {
        match &self.to_object_id {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
}

/// Reply of `GET /crm/v3/properties/{object}`: every property the portal defines for the
/// object type (not paged).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PropertiesResponse {
    #[serde(default)]
    pub results: Vec<PropertyDefinition>,
}

/// One property definition (only what the connector reads; the API sends `label`, `type`,
/// `fieldType`, `groupName`, `calculated`, `hubspotDefined` for HubSpot's own, and more).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PropertyDefinition {
    pub name: String,
    /// Archived definitions are only listed with `archived=true`; skipped if one shows up.
    #[serde(default)]
    pub archived: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn properties_read_as_a_map_would() {
        let mut p: Props =
            serde_json::from_str(r#"{"a":"1","b":null,"c":{"x":[1]},"a":"2","d":7}"#).unwrap();
        // A name sent twice keeps its last value, once.
        assert_eq!(p.get("a"), Some(&json!("2")));
        assert_eq!(p.get("b"), Some(&Value::Null));
        assert_eq!(p.get("zz"), None);
        assert_eq!(p.remove("a"), Some(json!("2")));
        assert_eq!(p.remove("a"), None, "taken once");
        assert_eq!(p.get("c"), Some(&json!({"x": [1]})));
        let kept = p.into_map(|k| k != "b");
        assert_eq!(Value::Object(kept), json!({"c": {"x": [1]}, "d": 7}));
        let empty: Props = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Props::default());
        for bad in ["null", "[]", r#""corrupt""#, "7", r#"{"a":}"#] {
            assert!(serde_json::from_str::<Props>(bad).is_err(), "{bad}");
        }
    }

    /// The cursor as a whole-body read finds it, the reference for the fast path.
    fn full_read(body: &str) -> Option<String> {
        serde_json::from_str::<PageHead>(body)
            .ok()?
            .next_after()
            .map(str::to_owned)
    }

    #[test]
    fn the_list_cursor_is_the_top_level_one_whatever_the_records_hold() {
        let page = |records: &str, paging: &str| format!(r#"{{"results":[{records}]{paging}}}"#);
        let next = r#","paging":{"next":{"after":"MTAx","link":"?after=MTAx"}}"#;
        let nested = r#"{"id":"1","associations":{"contacts":{"results":[{"id":"7"}],"paging":{"next":{"after":"9"}}}}}"#;
        let cases = [
            // HubSpot's order: the member after the records.
            (page(r#"{"id":"1"}"#, next), Some("MTAx")),
            // The last page: a cut-off association block's cursor is not the page's.
            (page(nested, ""), None),
            (page(nested, next), Some("MTAx")),
            // A property named paging, and property values that spell the token.
            (
                page(
                    r#"{"id":"1","properties":{"paging":{"next":{"after":"6"}}}}"#,
                    "",
                ),
                None,
            ),
            (
                page(
                    r#"{"id":"1","properties":{"x":"\"paging\":{\"next\":{\"after\":\"6\"}}}"}}"#,
                    "",
                ),
                None,
            ),
            (
                page(r#"{"id":"1","properties":{"x":"a\"paging"}}"#, ""),
                None,
            ),
            (
                page(r#"{"id":"1","properties":{"x":"a\\"}}"#, next),
                Some("MTAx"),
            ),
            // Another member order (the records after the cursor) and members after it.
            (
                r#"{"paging":{"next":{"after":"5"}},"results":[{"id":"1"}]}"#.to_owned(),
                Some("5"),
            ),
            (
                page(
                    r#"{"id":"1"}"#,
                    r#","paging":{"next":{"after":7}},"total":3"#,
                ),
                Some("7"),
            ),
            // Not a page, or cut short: no cursor.
            (
                r#"{"results":[{"id":"1"}],"paging":{"next":{"after":"5"}}"#.to_owned(),
                None,
            ),
            // Text that is not JSON but ends like a page: its cursor is read (the page
            // itself fails when it is parsed, so the page read with it is never used).
            (
                r#"[{"id":"1"}],"paging":{"next":{"after":"5"}}}"#.to_owned(),
                Some("5"),
            ),
            ("<html>".to_owned(), None),
            (page(r#"{"id":"1"}"#, r#","paging":{"next":{}}"#), None),
        ];
        for (body, want) in &cases {
            let got = next_list_cursor(body.as_bytes());
            assert_eq!(got.as_deref(), *want, "{body}");
            if serde_json::from_str::<Value>(body).is_ok() {
                assert_eq!(got, full_read(body), "fast and full reads agree on {body}");
            }
        }
        // A long tail (records after the cursor) is read whole, with the same answer.
        let records = vec![r#"{"id":"1","properties":{"x":"paging"}}"#; 200].join(",");
        let body = format!(r#"{{"paging":{{"next":{{"after":"8"}}}},"results":[{records}]}}"#);
        assert_eq!(next_list_cursor(body.as_bytes()).as_deref(), Some("8"));
    }

    #[test]
    fn an_object_without_properties_has_none() {
        let o: HsObject = serde_json::from_str(r#"{"id":"1"}"#).unwrap();
        assert_eq!(o.properties, Props::default());
        let o: HsObject =
            serde_json::from_str(r#"{"id":"1","properties":{"email":"a@x.io"}}"#).unwrap();
        assert_eq!(o.properties.get("email"), Some(&json!("a@x.io")));
    }

    fn raw_parse(body: &[u8]) -> Result<Page> {
        serde_json::from_slice(body).map_err(|e| Error::decode(None, e.to_string()))
    }

    #[test]
    fn a_list_page_decodes_in_one_scan_when_every_record_reads() {
        let body = br#"{"results":[{"id":"1","properties":{"email":"a@x.io"}},{"id":"2"}],
            "paging":{"next":{"after":"3"}}}"#;
        let page = ListPage::from_body(body, |_| panic!("no second read")).unwrap();
        assert_eq!(page.next_after.as_deref(), Some("3"));
        match page.results {
            Results::Decoded(o) => {
                assert_eq!(o.len(), 2);
                assert_eq!(o[0].properties.get("email"), Some(&json!("a@x.io")));
                assert_eq!(o[1].id, "2");
            }
            Results::Raw(_) => panic!("decoded expected"),
        }
    }

    #[test]
    fn a_list_page_with_a_bad_record_keeps_its_records_raw_so_it_fails_alone() {
        // The second record's properties are not an object: the typed read of the whole
        // page fails, and the page is read again with each record raw.
        let body = br#"{"results":[{"id":"1"},{"id":"2","properties":[1]},{"id":"3"}],
            "paging":{"next":{"after":"4"}}}"#;
        let page = ListPage::from_body(body, raw_parse).unwrap();
        assert_eq!(page.next_after.as_deref(), Some("4"));
        let Results::Raw(raw) = page.results else {
            panic!("raw results expected")
        };
        assert_eq!(raw.len(), 3);
        assert!(serde_json::from_str::<HsObject>(raw[1].get()).is_err());
        assert_eq!(raw_id(&raw[2]).as_deref(), Some("3"));
    }

    #[test]
    fn a_body_that_is_no_page_is_an_error() {
        for body in [
            &b"{\"results\":[{\"id\":\"1\"}"[..],
            b"<html>",
            b"{\"results\":7}",
        ] {
            assert!(ListPage::from_body(body, raw_parse).is_err(), "{body:?}");
        }
    }
}
