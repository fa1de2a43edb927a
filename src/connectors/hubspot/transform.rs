//! HubSpot objects → normalized records, through the shared sanitization.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use uuid::Uuid;

use super::types::{HsObject, Props, raw_id};
use crate::error::{Error, Result};
use crate::model::{Account, ConnectorKind, Contact, CustomFields, Deal, DealContact, RecordMeta};
use crate::sanitize;

const SOURCE: ConnectorKind = ConnectorKind::Hubspot;

/// Company properties mapped to typed columns.
pub(crate) const COMPANY_PROPERTIES: &[&str] = &[
    "name",
    "domain",
    "industry",
    "numberofemployees",
    "annualrevenue",
    "hubspot_owner_id",
    "createdate",
    "hs_lastmodifieddate",
];

/// Contact properties mapped to typed columns.
pub(crate) const CONTACT_PROPERTIES: &[&str] = &[
    "email",
    "firstname",
    "lastname",
    "jobtitle",
    "phone",
    "lifecyclestage",
    "hubspot_owner_id",
    "associatedcompanyid",
    "createdate",
    "lastmodifieddate",
];

/// Deal properties mapped to typed columns.
pub(crate) const DEAL_PROPERTIES: &[&str] = &[
    "dealname",
    "amount",
    "deal_currency_code",
    "dealstage",
    "pipeline",
    "closedate",
    "hs_deal_stage_probability",
    "hubspot_owner_id",
    "hs_is_closed",
    "hs_is_closed_won",
    "hs_manual_forecast_category",
    "createdate",
    "hs_lastmodifieddate",
];

/// Properties that are bookkeeping, neither mapped nor worth keeping as custom fields.
const IGNORED: &[&str] = &["hs_object_id"];

/// Decodes one raw result straight into an [`HsObject`]; a malformed record fails alone,
/// naming its id when it has one (read again from the text only then).
pub(crate) fn decode(raw: &RawValue) -> Result<HsObject> {
    serde_json::from_str(raw.get()).map_err(|e| {
        Error::decode(
            raw_id(raw).as_deref(),
            format!("malformed HubSpot object: {e}"),
        )
    })
}

/// The record's bookkeeping columns; its custom fields are added last, from the properties
/// the typed columns did not take ([`custom_fields`]).
fn meta(workspace_id: Uuid, obj: &HsObject, modified_prop: &str) -> Result<RecordMeta> {
    if obj.id.trim().is_empty() {
        return Err(Error::decode(None, "HubSpot object without an id"));
    }
    let p = &obj.properties;
    let mut m = RecordMeta::new(workspace_id, SOURCE, obj.id.trim());
    m.source_created_at = sanitize::datetime(p.get("createdate"))
        .or_else(|| obj.created_at.as_deref().and_then(sanitize::datetime_str));
    m.source_updated_at = sanitize::datetime(p.get(modified_prop))
        .or_else(|| obj.updated_at.as_deref().and_then(sanitize::datetime_str));
    if obj.archived {
        m.archived_at = obj
            .archived_at
            .as_deref()
            .and_then(sanitize::datetime_str)
            .or(m.source_updated_at)
            .or(Some(archive_fallback()));
    }
    Ok(m)
}

/// Takes a property out of the map for a typed text column (no copy of the string).
fn take_text(p: &mut Props, key: &str) -> Option<String> {
    sanitize::text_owned(p.remove(key))
}

/// An archived record with no usable timestamp is still archived; the epoch marks "when
/// unknown" without inventing a wall-clock time.
fn archive_fallback() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// What is left of the properties once the typed columns took theirs: every property the
/// schema does not map (nor [`IGNORED`]), sanitized.
fn custom_fields(p: Props, mapped: &[&str]) -> CustomFields {
    sanitize::sanitize_properties(p.into_map(|k| !mapped.contains(&k) && !IGNORED.contains(&k)))
}

fn first_association(obj: &HsObject, to: &str) -> Option<String> {
    obj.associations
        .get(to)?
        .results
        .first()
        .map(|r| r.id.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A company → `accounts`.
pub(crate) fn company(workspace_id: Uuid, obj: HsObject) -> Result<Account> {
    let meta = meta(workspace_id, &obj, "hs_lastmodifieddate")?;
    let mut p = obj.properties;
    let mut a = Account {
        name: take_text(&mut p, "name"),
        domain: take_text(&mut p, "domain").map(|d| d.trim().to_lowercase()),
        industry: take_text(&mut p, "industry"),
        employee_count: sanitize::integer(p.get("numberofemployees")),
        annual_revenue: sanitize::number(p.get("annualrevenue")),
        owner_id: take_text(&mut p, "hubspot_owner_id"),
        meta,
    };
    if a.domain.as_deref() == Some("") {
        a.domain = None;
    }
    a.meta.custom_fields = custom_fields(p, COMPANY_PROPERTIES);
    Ok(a)
}

/// A contact → `contacts`. The company comes from the association, else
/// `associatedcompanyid`.
pub(crate) fn contact(workspace_id: Uuid, obj: HsObject) -> Result<Contact> {
    let mut meta = meta(workspace_id, &obj, "lastmodifieddate")?;
    let company = first_association(&obj, "companies");
    let mut p = obj.properties;
    let email = take_text(&mut p, "email").map(|e| {
        let t = e.trim();
        if t.len() == e.len() { e } else { t.to_owned() }
    });
    let first_name = take_text(&mut p, "firstname");
    let last_name = take_text(&mut p, "lastname");
    let title = take_text(&mut p, "jobtitle");
    let phone = take_text(&mut p, "phone");
    // The mapped `associatedcompanyid` is not a custom field either way: read it in place.
    let account_source_id = company.or_else(|| sanitize::text(p.get("associatedcompanyid")));
    let lifecycle_stage = take_text(&mut p, "lifecyclestage");
    let owner_id = take_text(&mut p, "hubspot_owner_id");
    meta.custom_fields = custom_fields(p, CONTACT_PROPERTIES);
    Ok(Contact {
        meta,
        email,
        first_name,
        last_name,
        title,
        phone,
        account_source_id,
        lifecycle_stage,
        owner_id,
    })
}

/// A deal → `deals`, plus its contact links when the object carries them.
pub(crate) fn deal(workspace_id: Uuid, obj: HsObject) -> Result<(Deal, Vec<DealContact>)> {
    let mut meta = meta(workspace_id, &obj, "hs_lastmodifieddate")?;
    let account_source_id = first_association(&obj, "companies");
    let HsObject {
        properties: mut p,
        mut associations,
        ..
    } = obj;
    let name = take_text(&mut p, "dealname");
    let currency = take_text(&mut p, "deal_currency_code");
    let stage = take_text(&mut p, "dealstage");
    let pipeline = take_text(&mut p, "pipeline");
    let owner_id = take_text(&mut p, "hubspot_owner_id");
    let forecast_category = take_text(&mut p, "hs_manual_forecast_category");
    let amount = sanitize::number(p.get("amount"));
    let close_date = sanitize::date(p.get("closedate"));
    let probability = sanitize::number(p.get("hs_deal_stage_probability"));
    let is_closed = sanitize::boolean(p.get("hs_is_closed"));
    let is_won = sanitize::boolean(p.get("hs_is_closed_won"));
    meta.custom_fields = custom_fields(p, DEAL_PROPERTIES);
    let deal = Deal {
        meta,
        name,
        amount,
        currency,
        stage,
        pipeline,
        close_date,
        probability,
        owner_id,
        account_source_id,
        is_closed,
        is_won,
        forecast_category,
        days_open: None,
        days_to_close: None,
    };
    let links = associations
        .remove("contacts")
        .map(|block| {
            block
                .results
                .into_iter()
                .filter(|r| !r.id.trim().is_empty())
                .map(|r| DealContact {
                    workspace_id,
                    source: SOURCE,
                    deal_source_id: deal.meta.source_id.clone(),
                    contact_source_id: r.id.trim().to_owned(),
                    role: None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((deal, links))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use serde_json::{Value, json};

    fn ws() -> Uuid {
        Uuid::from_u128(3)
    }

    fn raw_of(v: Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&v).unwrap()
    }

    #[test]
    fn deal_fields_map_from_string_properties() {
        let raw = json!({
            "id": "512",
            "properties": {
                "dealname": "Acme renewal", "amount": "1500.50", "deal_currency_code": "EUR",
                "dealstage": "closedwon", "pipeline": "default", "closedate": "2024-06-30T00:00:00.000Z",
                "hs_deal_stage_probability": "1", "hubspot_owner_id": "77", "hs_is_closed": "true",
                "hs_is_closed_won": "true", "hs_manual_forecast_category": "COMMIT",
                "createdate": "2024-01-17T19:55:04.281Z", "hs_lastmodifieddate": "2024-09-13T20:23:03.333Z",
                "hs_object_id": "512", "hs_priority": "high", "empty_custom": ""
            },
            "createdAt": "2024-01-17T19:55:04.281Z", "updatedAt": "2024-09-13T20:23:03.333Z",
            "archived": false,
            "associations": {
                "contacts": {"results": [{"id": "201", "type": "deal_to_contact"}, {"id": "202", "type": "deal_to_contact"}]},
                "companies": {"results": [{"id": "9", "type": "deal_to_company"}]}
            }
        });
        let (d, links) = deal(ws(), decode(&raw_of(raw)).unwrap()).unwrap();
        assert_eq!(d.meta.source_id, "512");
        assert_eq!(d.name.as_deref(), Some("Acme renewal"));
        assert_eq!(d.amount, Some(1500.5));
        assert_eq!(d.currency.as_deref(), Some("EUR"));
        assert_eq!(d.stage.as_deref(), Some("closedwon"));
        assert_eq!(d.close_date, NaiveDate::from_ymd_opt(2024, 6, 30));
        assert_eq!(d.probability, Some(1.0));
        assert_eq!(d.is_closed, Some(true));
        assert_eq!(d.is_won, Some(true));
        assert_eq!(d.forecast_category.as_deref(), Some("COMMIT"));
        assert_eq!(d.owner_id.as_deref(), Some("77"));
        assert_eq!(d.account_source_id.as_deref(), Some("9"));
        assert_eq!(
            d.meta.source_updated_at,
            Some(
                Utc.with_ymd_and_hms(2024, 9, 13, 20, 23, 3).unwrap()
                    + chrono::Duration::milliseconds(333)
            )
        );
        assert!(d.meta.source_created_at.is_some());
        assert_eq!(d.meta.archived_at, None);
        assert_eq!(
            d.meta.custom_fields.get("hs_priority"),
            Some(&json!("high"))
        );
        assert_eq!(d.meta.custom_fields.get("empty_custom"), Some(&Value::Null));
        assert!(!d.meta.custom_fields.contains_key("dealname"));
        assert!(!d.meta.custom_fields.contains_key("hs_object_id"));
        let ids: Vec<&str> = links.iter().map(|l| l.contact_source_id.as_str()).collect();
        assert_eq!(ids, ["201", "202"]);
        assert!(
            links
                .iter()
                .all(|l| l.deal_source_id == "512" && l.workspace_id == ws())
        );
    }

    #[test]
    fn contact_uses_lastmodifieddate_and_company_fallback() {
        let raw = json!({
            "id": "201",
            "properties": {"email": "a@x.com", "firstname": "Ada", "lastname": "", "lastmodifieddate": "2024-02-01T00:00:00Z",
                           "hs_lastmodifieddate": "2020-01-01T00:00:00Z", "associatedcompanyid": "9", "phone": ""},
            "archived": false
        });
        let c = contact(ws(), decode(&raw_of(raw)).unwrap()).unwrap();
        assert_eq!(c.email.as_deref(), Some("a@x.com"));
        assert_eq!(c.last_name, None);
        assert_eq!(c.phone, None);
        assert_eq!(c.account_source_id.as_deref(), Some("9"));
        assert_eq!(
            c.meta.source_updated_at,
            Some(Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn archived_company_is_soft_deleted() {
        let raw = json!({
            "id": "9", "properties": {"name": "Acme", "domain": " ACME.com ", "numberofemployees": "50.0", "annualrevenue": ""},
            "archived": true, "archivedAt": "2024-03-03T03:03:03Z", "updatedAt": "2024-03-03T03:03:03Z"
        });
        let a = company(ws(), decode(&raw_of(raw)).unwrap()).unwrap();
        assert_eq!(a.domain.as_deref(), Some("acme.com"));
        assert_eq!(a.employee_count, Some(50));
        assert_eq!(a.annual_revenue, None);
        assert_eq!(
            a.meta.archived_at,
            Some(Utc.with_ymd_and_hms(2024, 3, 3, 3, 3, 3).unwrap())
        );
    }

    #[test]
    fn malformed_objects_fail_with_their_id() {
        let err = decode(&raw_of(
            json!({"id": "77", "properties": "corrupt", "archived": "no"}),
        ))
        .unwrap_err();
        assert!(
            matches!(&err, Error::Decode { record_id: Some(id), .. } if id == "77"),
            "{err}"
        );
        let err = decode(&raw_of(json!({"properties": {}}))).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Decode {
                    record_id: None,
                    ..
                }
            ),
            "{err}"
        );
        let blank = decode(&raw_of(json!({"id": " ", "properties": {}}))).unwrap();
        assert!(company(ws(), blank).is_err());
    }
}
