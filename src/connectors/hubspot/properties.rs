//! Custom properties: which properties the connector reads, and reading long property lists
//! within HubSpot's request size limits.
//!
//! **Discovery.** Once per run and object type (all three before the run's first page),
//! `GET /crm/v3/properties/{object}` lists
//! every property the portal defines (HubSpot's own and the portal's custom ones). The
//! connector reads the mapped properties (reference section 9), the configured extras and
//! every discovered one; whatever the schema does not map lands in `custom_fields`. A portal
//! that refuses the listing (403: the app lacks the schema scope) is read with the mapped
//! properties and the configured extras only, with a warning.
//!
//! **Request size limits.** Properties are named in the request, and a large portal defines
//! hundreds of them:
//! - the list endpoint takes them in the URL (`properties=a,b,…`); HubSpot answers 414 for
//!   URLs over about 16,000 characters (measured by other connectors: Airbyte ~16,300,
//!   PostHog ~16,200), so one request names at most [`LIST_PROPERTIES_MAX_CHARS`]
//!   characters of (encoded) property names;
//! - search takes them in the JSON body, which may be at most [`SEARCH_BODY_MAX_CHARS`]
//!   characters (reference 1.3), filters and sort included.
//!
//! A list that fits is read in one request, as before. A longer one is split: the first
//! request carries the mapped properties (and the associations), each further request the
//! same page (same cursor, or the same keyset query) with the next slice of properties, and
//! the slices are merged by record id. The trade-off: a page then costs one request per
//! slice (search slices use the scarcer search budget), and the slices are not one
//! snapshot. A record whose version differs between the slices, or that is missing from a
//! later slice (archived, or modified past the search pass's upper bound, between the
//! requests), is left out of the page: it was changed after the pass began, so the archived
//! pass or the next incremental pass reads it whole. Records a later slice has beyond the
//! first slice's page are ignored (the first slice's cursor decides what comes next).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::client::{HubSpotClient, encode};
use super::sync::{Object, Syncer};
use super::types::{Page, SearchRequest};
use crate::error::{Error, Result};

/// The longest `properties=` value (encoded) one list request carries.
pub(crate) const LIST_PROPERTIES_MAX_CHARS: usize = 12_000;
/// The longest search request body HubSpot accepts (reference 1.3).
pub(crate) const SEARCH_BODY_MAX_CHARS: usize = 3_000;

/// The properties read per object type in this run (discovered once, then reused).
#[derive(Debug, Default)]
pub(crate) struct Discovered(HashMap<&'static str, Vec<String>>);

/// The properties to read: the mapped ones first (they must be in the first slice), then
/// the configured extras and the discovered ones, each once.
pub(crate) fn wanted(mapped: &[&str], extras: &[String], discovered: &[String]) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    for p in mapped
        .iter()
        .copied()
        .chain(extras.iter().map(String::as_str))
        .chain(discovered.iter().map(String::as_str))
    {
        if seen.insert(p) {
            out.push(p.to_owned());
        }
    }
    out
}

/// Splits `props` in order into slices whose summed `cost` stays within `budget` (a single
/// property over the budget gets a slice of its own).
fn split(props: &[String], budget: usize, cost: impl Fn(&str) -> usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut used = 0;
    for p in props {
        let c = cost(p);
        if !current.is_empty() && used + c > budget {
            out.push(std::mem::take(&mut current));
            used = 0;
        }
        used += c;
        current.push(p.clone());
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

/// The list request slices for `props`.
pub(crate) fn list_slices(props: &[String]) -> Vec<Vec<String>> {
    // Each name, encoded, plus its comma.
    split(props, LIST_PROPERTIES_MAX_CHARS, |p| encode(p).len() + 1)
}

/// The search request slices for `req.properties`, given the rest of `req`.
pub(crate) fn search_slices(req: &SearchRequest) -> Result<Vec<Vec<String>>> {
    let bare = SearchRequest {
        properties: Vec::new(),
        ..req.clone()
    };
    let base = serde_json::to_vec(&bare)?.len();
    let budget = SEARCH_BODY_MAX_CHARS.saturating_sub(base);
    // Each name as a JSON string, plus its comma.
    Ok(split(&req.properties, budget, |p| {
        serde_json::to_string(p).map_or(p.len() + 3, |s| s.len() + 1)
    }))
}

fn result_id(raw: &Value) -> Option<String> {
    match raw.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Merges the properties of later slices' pages into the first slice's page, by record id.
/// A record missing from a later slice, or at another version there (`updatedAt`), is left
/// out (see the module docs); a later slice's malformed properties make the record
/// malformed (captured as a failure with its id). Only pages read in several slices come
/// here, so the results are parsed into trees for the merge and written back as text.
pub(crate) fn merge(mut first: Page, rest: Vec<Page>) -> Page {
    let later: Vec<HashMap<String, Value>> = rest
        .into_iter()
        .map(|p| {
            p.results
                .iter()
                .filter_map(|r| serde_json::from_str::<Value>(r.get()).ok())
                .filter_map(|v| Some((result_id(&v)?, v)))
                .collect()
        })
        .collect();
    let before = first.results.len();
    first.results = std::mem::take(&mut first.results)
        .into_iter()
        .filter_map(|text| {
            let Ok(mut raw) = serde_json::from_str::<Value>(text.get()) else {
                return Some(text); // fails decoding alone
            };
            let Some(id) = result_id(&raw) else {
                return Some(text); // fails decoding alone
            };
            for slice in &later {
                let other = slice.get(&id)?;
                if other.get("updatedAt") != raw.get("updatedAt") {
                    return None;
                }
                match (raw.get_mut("properties"), other.get("properties")) {
                    (Some(Value::Object(mine)), Some(Value::Object(theirs))) => {
                        for (k, v) in theirs {
                            mine.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    (Some(Value::Object(_)), theirs) => {
                        raw["properties"] = theirs.cloned().unwrap_or(Value::Null);
                    }
                    _ => {}
                }
            }
            // A `Value` always serializes; the original text is the fallback regardless.
            Some(serde_json::value::to_raw_value(&raw).unwrap_or(text))
        })
        .collect();
    let dropped = before - first.results.len();
    if dropped > 0 {
        tracing::debug!(
            dropped,
            "HubSpot records changed between the property slices of a page; read again later"
        );
    }
    first
}

/// One list page with every property in `props`, in as many requests as the URL limit needs
/// (associations come with the first).
pub(crate) async fn list_page(
    client: &HubSpotClient,
    object: &str,
    props: &[String],
    associations: &[&str],
    after: Option<&str>,
    archived: bool,
) -> Result<Page> {
    let slices = list_slices(props);
    let none = Vec::new();
    let (first, rest) = slices.split_first().unwrap_or((&none, &[]));
    let page = client
        .list_page(object, first, associations, after, archived)
        .await?;
    if rest.is_empty() || page.results.is_empty() {
        return Ok(page);
    }
    let mut others = Vec::with_capacity(rest.len());
    for slice in rest {
        others.push(
            client
                .list_page(object, slice, &[], after, archived)
                .await?,
        );
    }
    Ok(merge(page, others))
}

/// What [`list_page_or_body`] read: the body of the one request a page needed (parsed
/// later, by the thread that uses it), or the page merged from several.
pub(crate) enum ListRead {
    Body(bytes::Bytes),
    Page(Page),
}

/// [`list_page`], leaving the body unparsed when one request reads the whole page.
pub(crate) async fn list_page_or_body(
    client: &HubSpotClient,
    object: &str,
    props: &[String],
    associations: &[&str],
    after: Option<&str>,
    archived: bool,
) -> Result<ListRead> {
    if list_slices(props).len() <= 1 {
        let body = client
            .list_page_body(object, props, associations, after, archived)
            .await?;
        return Ok(ListRead::Body(body));
    }
    list_page(client, object, props, associations, after, archived)
        .await
        .map(ListRead::Page)
}

/// One search page with every property of `req`, in as many requests as the body limit
/// needs (the same query each time).
pub(crate) async fn search_page(
    client: &HubSpotClient,
    object: &str,
    req: &SearchRequest,
) -> Result<Page> {
    let slices = search_slices(req)?;
    if slices.len() <= 1 {
        return client.search_page(object, req).await;
    }
    let mut requests = slices.into_iter().map(|properties| SearchRequest {
        properties,
        ..req.clone()
    });
    let Some(first) = requests.next() else {
        return client.search_page(object, req).await;
    };
    let page = client.search_page(object, &first).await?;
    if page.results.is_empty() {
        return Ok(page);
    }
    let mut others = Vec::new();
    for r in requests {
        others.push(client.search_page(object, &r).await?);
    }
    Ok(merge(page, others))
}

impl Syncer<'_> {
    /// Every property to read for `obj` in this run: mapped, configured and discovered. The
    /// first call of a run discovers every object type's properties (one request each), so
    /// a run asks once per type, before its first page.
    pub(crate) async fn wanted_properties(&mut self, obj: Object) -> Result<Vec<String>> {
        if self.discovered.0.is_empty() {
            for o in Object::ALL {
                let discovered = match self.client.property_names(o.path()).await {
                    Ok(names) => names,
                    Err(Error::Api { status: 403, .. }) => {
                        tracing::warn!(
                            object = o.path(),
                            "HubSpot refused the property listing (scope); custom properties are not discovered"
                        );
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                };
                let props = wanted(
                    o.mapped(),
                    self.config.extra_properties(o.path()),
                    &discovered,
                );
                self.discovered.0.insert(o.path(), props);
            }
        }
        Ok(self
            .discovered
            .0
            .get(obj.path())
            .cloned()
            .unwrap_or_else(|| wanted(obj.mapped(), self.config.extra_properties(obj.path()), &[])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::connectors::hubspot::types::{Filter, FilterGroup, Sort};

    fn names(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0len$}")).collect()
    }

    #[test]
    fn mapped_first_then_extras_then_discovered_once() {
        let w = wanted(
            &["name", "domain"],
            &["tier".to_owned(), "name".to_owned()],
            &["domain".to_owned(), "x".to_owned(), "tier".to_owned()],
        );
        assert_eq!(w, ["name", "domain", "tier", "x"]);
    }

    #[test]
    fn list_slices_stay_under_the_url_budget() {
        let props = names(1_000, 29);
        let slices = list_slices(&props);
        assert_eq!(slices.len(), 3);
        assert_eq!(slices.concat(), props);
        for s in &slices {
            assert!(encode(&s.join(",")).len() <= LIST_PROPERTIES_MAX_CHARS);
        }
        assert_eq!(list_slices(&names(10, 5)).len(), 1);
        assert_eq!(list_slices(&[]), vec![Vec::<String>::new()]);
    }

    #[test]
    fn search_slices_keep_each_body_under_the_limit() {
        let req = SearchRequest {
            filter_groups: vec![FilterGroup {
                filters: vec![Filter {
                    property_name: "hs_object_id".into(),
                    operator: "GT",
                    value: "123456789".into(),
                }],
            }],
            sorts: vec![Sort {
                property_name: "hs_object_id".into(),
                direction: "ASCENDING",
            }],
            properties: names(300, 30),
            limit: 200,
            after: None,
        };
        let slices = search_slices(&req).unwrap();
        assert!(slices.len() > 3, "{}", slices.len());
        assert_eq!(slices.concat(), req.properties);
        for s in slices {
            let body = serde_json::to_vec(&SearchRequest {
                properties: s,
                ..req.clone()
            })
            .unwrap();
            assert!(body.len() <= SEARCH_BODY_MAX_CHARS, "{}", body.len());
        }
    }

    fn page(results: Value) -> Page {
        let text = json!({"results": results, "paging": {"next": {"after": "7"}}}).to_string();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn merge_joins_by_id_and_drops_records_changed_between_slices() {
        let first = page(json!([
            {"id": "1", "updatedAt": "a", "properties": {"name": "x"}},
            {"id": "2", "updatedAt": "a", "properties": {"name": "y"}},
            {"id": "3", "updatedAt": "a", "properties": {"name": "z"}},
            {"id": "4", "updatedAt": "a", "properties": {"name": "w"}},
        ]));
        let second = page(json!([
            {"id": "1", "updatedAt": "a", "properties": {"c1": "1", "name": "ignored"}},
            {"id": "3", "updatedAt": "b", "properties": {"c1": "3"}},
            {"id": "4", "updatedAt": "a", "properties": "corrupt"},
            {"id": "5", "updatedAt": "a", "properties": {"c1": "5"}},
        ]));
        let merged = merge(first, vec![second]);
        assert_eq!(merged.next_after(), Some("7"));
        let results: Vec<Value> = merged
            .results
            .iter()
            .map(|r| serde_json::from_str(r.get()).unwrap())
            .collect();
        let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["1", "4"]);
        assert_eq!(results[0]["properties"], json!({"name": "x", "c1": "1"}));
        assert_eq!(results[1]["properties"], json!("corrupt"));
    }
}
