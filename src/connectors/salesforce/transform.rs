//! Salesforce rows → normalized records, field selection from `describe`, Bulk CSV
//! parsing, and the keyset position of a row. Pure: no I/O, no clock.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::types::Describe;
use crate::connector::Deletion;
use crate::error::{Error, Result};
use crate::model::{
    Account, ConnectorKind, Contact, CustomFields, Deal, DealContact, Record, RecordKind,
    RecordMeta,
};
use crate::sanitize;

const SOURCE: ConnectorKind = ConnectorKind::Salesforce;

/// The sObjects the connector syncs, in dependency order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Object {
    Account,
    Contact,
    Opportunity,
    ContactRole,
}

impl Object {
    pub(crate) const ALL: [Object; 4] = [
        Object::Account,
        Object::Contact,
        Object::Opportunity,
        Object::ContactRole,
    ];

    /// The sObject's API name.
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            Object::Account => "Account",
            Object::Contact => "Contact",
            Object::Opportunity => "Opportunity",
            Object::ContactRole => "OpportunityContactRole",
        }
    }

    /// The checkpoint stream (named after the table).
    pub(crate) fn stream(self) -> &'static str {
        match self {
            Object::Account => "accounts",
            Object::Contact => "contacts",
            Object::Opportunity => "deals",
            Object::ContactRole => "deal_contacts",
        }
    }

    pub(crate) fn kind(self) -> RecordKind {
        match self {
            Object::Account => RecordKind::Account,
            Object::Contact => RecordKind::Contact,
            Object::Opportunity => RecordKind::Deal,
            Object::ContactRole => RecordKind::DealContact,
        }
    }

    /// Standard fields mapped to columns (read when the org has them).
    pub(crate) fn mapped(self) -> &'static [&'static str] {
        match self {
            Object::Account => &[
                "Name",
                "Website",
                "Industry",
                "NumberOfEmployees",
                "AnnualRevenue",
                "OwnerId",
            ],
            Object::Contact => &[
                "Email",
                "FirstName",
                "LastName",
                "Title",
                "Phone",
                "AccountId",
                "OwnerId",
            ],
            Object::Opportunity => &[
                "Name",
                "Amount",
                "CurrencyIsoCode",
                "StageName",
                "CloseDate",
                "Probability",
                "ForecastCategoryName",
                "IsClosed",
                "IsWon",
                "OwnerId",
                "AccountId",
            ],
            Object::ContactRole => &["OpportunityId", "ContactId", "Role"],
        }
    }

    /// Fields without which a row cannot be synced.
    fn required(self) -> &'static [&'static str] {
        match self {
            Object::ContactRole => &["OpportunityId", "ContactId"],
            _ => &[],
        }
    }
}

/// Fields every query reads: the id, the replication key, the delete flag, creation.
const BOOKKEEPING: [&str; 4] = ["Id", "SystemModstamp", "IsDeleted", "CreatedDate"];

/// How a field's CSV text becomes JSON (Bulk results are untyped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    Text,
    Number,
    Bool,
}

/// A field the connector selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) kind: FieldType,
    pub(crate) custom: bool,
}

/// Field types that can be selected in REST and Bulk queries (compound `address` and
/// `location`, `base64` and `anyType` cannot, or not in Bulk).
fn selectable(kind: &str) -> Option<FieldType> {
    Some(match kind {
        "double" | "int" | "long" | "currency" | "percent" => FieldType::Number,
        "boolean" => FieldType::Bool,
        "id" | "string" | "picklist" | "multipicklist" | "textarea" | "email" | "phone" | "url"
        | "date" | "datetime" | "time" | "reference" | "combobox" | "encryptedstring" => {
            FieldType::Text
        }
        _ => return None,
    })
}

/// The fields to read from `describe`: bookkeeping, the mapped fields the org has
/// (`CurrencyIsoCode` only in multi-currency orgs), and every custom `__c` field of a
/// selectable type.
pub(crate) fn select_fields(obj: Object, describe: &Describe) -> Result<Vec<Field>> {
    let find = |name: &str| describe.fields.iter().find(|f| f.name == name);
    let mut out: Vec<Field> = Vec::new();
    for name in BOOKKEEPING.iter().chain(obj.required()).chain(obj.mapped()) {
        if out.iter().any(|f| f.name == *name) {
            continue;
        }
        match find(name).and_then(|f| selectable(&f.kind)) {
            Some(kind) => out.push(Field {
                name: (*name).to_owned(),
                kind,
                custom: false,
            }),
            None if BOOKKEEPING.contains(name) || obj.required().contains(name) => {
                return Err(Error::config(format!(
                    "the Salesforce org's {} has no readable {name} field",
                    obj.api_name()
                )));
            }
            None => {}
        }
    }
    for f in &describe.fields {
        if f.custom
            && f.name.ends_with("__c")
            && !out.iter().any(|o| o.name == f.name)
            && let Some(kind) = selectable(&f.kind)
        {
            out.push(Field {
                name: f.name.clone(),
                kind,
                custom: true,
            });
        }
    }
    Ok(out)
}

/// A SOQL date-time literal: UTC, whole seconds, `Z`, unquoted.
pub(crate) fn soql_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A SOQL string literal.
pub(crate) fn soql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A keyset position: the `(SystemModstamp, Id)` of the last row committed. The next read
/// starts strictly after it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Keyset {
    pub(crate) at: DateTime<Utc>,
    pub(crate) id: String,
}

impl Keyset {
    /// `2024-05-01T09:30:00Z|001…` (the stored cursor).
    pub(crate) fn encode(&self) -> String {
        format!("{}|{}", soql_time(self.at), self.id)
    }

    /// Reads a stored cursor; `None` for anything else (the pass then restarts from the
    /// watermark).
    pub(crate) fn decode(s: &str) -> Option<Keyset> {
        let (at, id) = s.split_once('|')?;
        let at = sanitize::datetime_str(at)?;
        let id = id.trim();
        let valid =
            !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then(|| Keyset {
            at,
            id: id.to_owned(),
        })
    }

    /// The position of a raw row, when it has a usable id and `SystemModstamp`.
    pub(crate) fn of(raw: &Value) -> Option<Keyset> {
        let id = row_id(raw)?;
        let at = sanitize::datetime(raw.get("SystemModstamp"))?;
        Some(Keyset { at, id })
    }
}

/// A row's `Id` (for failure capture and the keyset).
pub(crate) fn row_id(raw: &Value) -> Option<String> {
    raw.get("Id")?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// What one row becomes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// Live: records to upsert.
    Record(Box<Record>),
    /// In the recycle bin (`IsDeleted = true`): a soft delete.
    Deleted(Deletion),
}

fn row_map(raw: Value) -> Result<Map<String, Value>> {
    match raw {
        Value::Object(m) => Ok(m),
        other => Err(Error::decode(
            None,
            format!("a Salesforce row is not an object: {}", kind_of(&other)),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn text(row: &Map<String, Value>, field: &str) -> Option<String> {
    sanitize::text(row.get(field))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn meta(ws: Uuid, row: &Map<String, Value>, id: &str, fields: &[Field]) -> RecordMeta {
    let mut m = RecordMeta::new(ws, SOURCE, id);
    m.source_created_at = sanitize::datetime(row.get("CreatedDate"));
    m.source_updated_at = sanitize::datetime(row.get("SystemModstamp"));
    m.custom_fields = custom_fields(row, fields);
    m
}

/// Custom `__c` fields with a value.
fn custom_fields(row: &Map<String, Value>, fields: &[Field]) -> CustomFields {
    sanitize::sanitize_properties(
        fields
            .iter()
            .filter(|f| f.custom)
            .filter_map(|f| {
                row.get(&f.name)
                    .filter(|v| !v.is_null())
                    .map(|v| (f.name.clone(), v.clone()))
            })
            .collect(),
    )
}

/// The host of a website, lowercase, without `www.`.
pub(crate) fn domain_of(website: &str) -> Option<String> {
    let w = website.trim();
    if w.is_empty() {
        return None;
    }
    let with_scheme = if w.contains("://") {
        w.to_owned()
    } else {
        format!("http://{w}")
    };
    let host = reqwest::Url::parse(&with_scheme)
        .ok()?
        .host_str()?
        .to_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_owned();
    (!host.is_empty()).then_some(host)
}

/// Transforms one row of `obj`: a live row into its record, a deleted one into a
/// [`Deletion`]. Fails (alone) on a row without an id or a readable `SystemModstamp`.
pub(crate) fn transform(ws: Uuid, obj: Object, fields: &[Field], raw: Value) -> Result<Item> {
    let row = row_map(raw)?;
    let id = row
        .get("Id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::decode(None, format!("{} row without an Id", obj.api_name())))?
        .to_owned();
    let modstamp = sanitize::datetime(row.get("SystemModstamp")).ok_or_else(|| {
        Error::decode(
            Some(&id),
            format!("{} row without a readable SystemModstamp", obj.api_name()),
        )
    })?;
    let deleted = sanitize::boolean(row.get("IsDeleted")).unwrap_or(false);
    if obj == Object::ContactRole {
        let (Some(deal), Some(contact)) = (text(&row, "OpportunityId"), text(&row, "ContactId"))
        else {
            return Err(Error::decode(
                Some(&id),
                "OpportunityContactRole without OpportunityId or ContactId",
            ));
        };
        if deleted {
            return Ok(Item::Deleted(Deletion {
                kind: RecordKind::DealContact,
                source_id: format!("{deal}:{contact}"),
                deleted_at: modstamp,
            }));
        }
        return Ok(Item::Record(Box::new(Record::from(DealContact {
            workspace_id: ws,
            source: SOURCE,
            deal_source_id: deal,
            contact_source_id: contact,
            role: text(&row, "Role"),
        }))));
    }
    if deleted {
        return Ok(Item::Deleted(Deletion {
            kind: obj.kind(),
            source_id: id,
            deleted_at: modstamp,
        }));
    }
    let meta = meta(ws, &row, &id, fields);
    let record = match obj {
        Object::Account => Record::from(Account {
            meta,
            name: text(&row, "Name"),
            domain: text(&row, "Website").as_deref().and_then(domain_of),
            industry: text(&row, "Industry"),
            employee_count: sanitize::integer(row.get("NumberOfEmployees")),
            annual_revenue: sanitize::number(row.get("AnnualRevenue")),
            owner_id: text(&row, "OwnerId"),
        }),
        Object::Contact => Record::from(Contact {
            meta,
            email: text(&row, "Email"),
            first_name: text(&row, "FirstName"),
            last_name: text(&row, "LastName"),
            title: text(&row, "Title"),
            phone: text(&row, "Phone"),
            account_source_id: text(&row, "AccountId"),
            lifecycle_stage: None,
            owner_id: text(&row, "OwnerId"),
        }),
        Object::Opportunity => Record::from(Deal {
            meta,
            name: text(&row, "Name"),
            amount: sanitize::number(row.get("Amount")),
            currency: text(&row, "CurrencyIsoCode"),
            stage: text(&row, "StageName"),
            pipeline: None,
            close_date: sanitize::date(row.get("CloseDate")),
            // Salesforce's Probability is a percentage; the schema's is a share (0–1), as
            // HubSpot's `hs_deal_stage_probability`.
            probability: sanitize::number(row.get("Probability")).map(|p| p / 100.0),
            owner_id: text(&row, "OwnerId"),
            account_source_id: text(&row, "AccountId"),
            is_closed: sanitize::boolean(row.get("IsClosed")),
            is_won: sanitize::boolean(row.get("IsWon")),
            forecast_category: text(&row, "ForecastCategoryName"),
            days_open: None,
            days_to_close: None,
        }),
        Object::ContactRole => {
            return Err(Error::decode(Some(&id), "unreachable contact-role branch"));
        }
    };
    Ok(Item::Record(Box::new(record)))
}

/// Parses one page of Bulk 2.0 CSV results (RFC 4180: `"` quoting, `""` escapes, quoted
/// line breaks; LF or CRLF line endings) into JSON rows typed by `fields` (an empty cell
/// is `null`: Salesforce stores no empty strings). The header row names the columns; unknown columns are kept as text.
pub(crate) fn parse_csv(body: &[u8], fields: &[Field]) -> Result<Vec<Value>> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::decode(None, "Salesforce Bulk results are not UTF-8"))?;
    let mut rows = csv_records(text)?.into_iter();
    let Some(header) = rows.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<String> = header.into_iter().map(|c| c.unwrap_or_default()).collect();
    let kinds: Vec<FieldType> = header
        .iter()
        .map(|h| {
            fields
                .iter()
                .find(|f| f.name == *h)
                .map_or(FieldType::Text, |f| f.kind)
        })
        .collect();
    let mut out = Vec::new();
    for cells in rows {
        if cells.len() == 1 && cells[0].is_none() {
            continue; // a blank line
        }
        if cells.len() != header.len() {
            return Err(Error::decode(
                None,
                format!(
                    "Salesforce Bulk CSV row has {} cells for {} columns",
                    cells.len(),
                    header.len()
                ),
            ));
        }
        let mut m = Map::new();
        for ((name, kind), cell) in header.iter().zip(&kinds).zip(cells) {
            let v = match cell.filter(|c| !c.is_empty()) {
                None => Value::Null,
                Some(c) => match kind {
                    FieldType::Text => Value::String(c),
                    FieldType::Bool => match c.as_str() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        _ => Value::String(c),
                    },
                    FieldType::Number => c
                        .parse::<i64>()
                        .map(Value::from)
                        .ok()
                        .or_else(|| {
                            c.parse::<f64>()
                                .ok()
                                .and_then(serde_json::Number::from_f64)
                                .map(Value::Number)
                        })
                        .unwrap_or(Value::String(c)),
                },
            };
            m.insert(name.clone(), v);
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

/// CSV records; a cell is `None` when empty and unquoted.
fn csv_records(text: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut records = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    let end_cell = |cell: &mut String, was_quoted: &mut bool, row: &mut Vec<Option<String>>| {
        let c = std::mem::take(cell);
        row.push(if c.is_empty() && !*was_quoted {
            None
        } else {
            Some(c)
        });
        *was_quoted = false;
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                c => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() => {
                quoted = true;
                was_quoted = true;
            }
            ',' => end_cell(&mut cell, &mut was_quoted, &mut row),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_cell(&mut cell, &mut was_quoted, &mut row);
                records.push(std::mem::take(&mut row));
            }
            c => cell.push(c),
        }
    }
    if quoted {
        return Err(Error::decode(
            None,
            "Salesforce Bulk CSV ends inside a quoted cell",
        ));
    }
    if !cell.is_empty() || was_quoted || !row.is_empty() {
        end_cell(&mut cell, &mut was_quoted, &mut row);
        records.push(row);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(obj: Object) -> Vec<Field> {
        let d: Describe = serde_json::from_value(json!({"fields": [
            {"name": "Id", "type": "id"}, {"name": "IsDeleted", "type": "boolean"},
            {"name": "SystemModstamp", "type": "datetime"}, {"name": "CreatedDate", "type": "datetime"},
            {"name": "Name", "type": "string"}, {"name": "Amount", "type": "currency"},
            {"name": "Probability", "type": "percent"}, {"name": "IsWon", "type": "boolean"},
            {"name": "BillingAddress", "type": "address"},
            {"name": "Tier__c", "type": "picklist", "custom": true},
            {"name": "Geo__c", "type": "location", "custom": true},
            {"name": "OpportunityId", "type": "reference"}, {"name": "ContactId", "type": "reference"},
        ]}))
        .unwrap();
        select_fields(obj, &d).unwrap()
    }

    #[test]
    fn fields_come_from_describe() {
        let names: Vec<String> = fields(Object::Opportunity)
            .into_iter()
            .map(|f| f.name)
            .collect();
        // No CurrencyIsoCode (not multi-currency), no compound fields, the custom picklist.
        assert_eq!(
            names,
            [
                "Id",
                "SystemModstamp",
                "IsDeleted",
                "CreatedDate",
                "Name",
                "Amount",
                "Probability",
                "IsWon",
                "Tier__c"
            ]
        );
        let d: Describe =
            serde_json::from_value(json!({"fields": [{"name": "Id", "type": "id"}]})).unwrap();
        assert!(select_fields(Object::Account, &d).is_err());
    }

    #[test]
    fn rows_become_records_and_deletions() {
        let ws = Uuid::nil();
        let f = fields(Object::Opportunity);
        let row = json!({"attributes": {"type": "Opportunity"}, "Id": "0065g0000000001AAA", "IsDeleted": false,
            "SystemModstamp": "2024-05-07T22:07:19.000+0000", "CreatedDate": "2024-05-01T00:00:00.000+0000",
            "Name": "Big", "Amount": 1200.5, "Probability": 90, "IsWon": false, "Tier__c": "Gold"});
        let Item::Record(rec) = transform(ws, Object::Opportunity, &f, row).unwrap() else {
            panic!("not a record");
        };
        let Record::Deal(d) = *rec else {
            panic!("not a deal");
        };
        assert_eq!(d.amount, Some(1200.5));
        assert_eq!(d.probability, Some(0.9));
        assert_eq!(d.currency, None);
        assert_eq!(d.meta.custom_fields["Tier__c"], "Gold");
        assert_eq!(
            d.meta.source_updated_at.unwrap().to_rfc3339(),
            "2024-05-07T22:07:19+00:00"
        );
        let gone = json!({"Id": "00K5g0000000001AAA", "IsDeleted": true, "SystemModstamp": "2024-05-08T00:00:00.000+0000",
            "OpportunityId": "0065g0000000001AAA", "ContactId": "0035g0000000002AAA"});
        let Item::Deleted(del) = transform(ws, Object::ContactRole, &f, gone).unwrap() else {
            panic!("not a deletion");
        };
        assert_eq!(del.source_id, "0065g0000000001AAA:0035g0000000002AAA");
        assert_eq!(del.kind, RecordKind::DealContact);
        let bad = json!({"Id": "0065g0000000003AAA", "SystemModstamp": {"x": 1}});
        let err = transform(ws, Object::Opportunity, &f, bad).unwrap_err();
        assert!(
            matches!(err, Error::Decode { record_id: Some(ref id), .. } if id == "0065g0000000003AAA")
        );
    }

    #[test]
    fn csv_is_parsed_and_typed() {
        let f = fields(Object::Opportunity);
        let csv = b"\"Id\",\"Name\",\"Amount\",\"IsWon\",\"Tier__c\"\n\"0065g1\",\"A \"\"quoted\"\", multi\nline\",\"10.5\",\"true\",\n\"0065g2\",\"\",\"3\",\"false\",\"Gold\"\n";
        let rows = parse_csv(csv, &f).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["Name"], "A \"quoted\", multi\nline");
        assert_eq!(rows[0]["Amount"], 10.5);
        assert_eq!(rows[0]["IsWon"], true);
        assert_eq!(rows[0]["Tier__c"], Value::Null);
        // Salesforce stores no empty strings: an empty cell, quoted or not, is null.
        assert_eq!(rows[1]["Name"], Value::Null);
        assert_eq!(rows[1]["Amount"], 3);
        assert!(parse_csv(b"\"Id\",\"Name\"\n\"x\"\n", &f).is_err());
        assert!(parse_csv(b"\"Id\"\n\"open", &f).is_err());
        assert!(parse_csv(b"", &f).unwrap().is_empty());
    }

    #[test]
    fn keyset_round_trips_and_literals_are_safe() {
        let k = Keyset {
            at: sanitize::datetime_str("2024-05-07T22:07:19.000+0000").unwrap(),
            id: "0035g0000000001AAA".into(),
        };
        assert_eq!(k.encode(), "2024-05-07T22:07:19Z|0035g0000000001AAA");
        assert_eq!(Keyset::decode(&k.encode()), Some(k));
        assert_eq!(Keyset::decode("2024-05-07T22:07:19Z|x' OR Id != '"), None);
        assert_eq!(soql_string("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(
            domain_of("https://www.Acme.example.com/path").as_deref(),
            Some("acme.example.com")
        );
        assert_eq!(domain_of("acme.io").as_deref(), Some("acme.io"));
        assert_eq!(domain_of(" "), None);
    }
}
