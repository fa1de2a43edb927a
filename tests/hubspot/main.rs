//! The HubSpot connector against the HubSpot simulator, into an in-memory sink.
#![cfg(all(feature = "simulator", feature = "hubspot"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod e2e;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[path = "../support/store_env.rs"]
mod store_env;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[path = "../support/example.rs"]
mod support_example;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! e2e_suite {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::e2e::run_sqlite(crate::e2e::$name).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::e2e::run_postgres(crate::e2e::$name).await;
                }
            )*
        }
    };
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
e2e_suite!(
    initial_sync_of_a_seeded_portal,
    identical_timestamps_past_the_search_cap,
    faults_lose_nothing,
    killed_between_pages_resumes,
    sync_example_reports_what_the_database_holds,
    changes_during_a_search_pass_are_not_lost,
    resumed_list_pass_is_followed_up,
    resumed_search_pass_is_followed_up,
    custom_properties_land_in_custom_fields,
    archived_record_keeps_its_association_columns,
    removed_association_is_unlinked,
    the_portal_id_is_recorded_for_webhooks,
);

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use pandora_sync::connector::MemorySink;
use pandora_sync::connectors::hubspot::{HubSpotConfig, HubSpotConnector, HubSpotCredentials};
use pandora_sync::simulator::{FaultConfig, HubSpotObject, HubSpotSim, HubSpotSimConfig};
use pandora_sync::{Checkpoint, Record, SyncCapable, SyncContext, SyncMode};
use secrecy::SecretString;
use uuid::Uuid;

fn fast_config() -> HubSpotConfig {
    HubSpotConfig::from_json(&serde_json::json!({
        "rate_limit": {"max_requests": 100000, "window_ms": 1000},
        "search_rate_limit": {"max_requests": 100000, "window_ms": 1000},
        "properties": {"companies": ["hs_custom_tier"]}
    }))
    .unwrap()
}

fn connector(sim: &HubSpotSim) -> HubSpotConnector {
    HubSpotConnector::new(
        &sim.base_url(),
        HubSpotCredentials::AccessToken(SecretString::from(sim.config().access_token.clone())),
        fast_config(),
    )
    .unwrap()
}

fn ws() -> Uuid {
    Uuid::from_u128(99)
}

/// Latest version of every record by (kind, id), as a store would keep it.
fn latest(sink: &MemorySink) -> BTreeMap<(String, String), Record> {
    let mut out = BTreeMap::new();
    for r in sink.records() {
        out.insert((format!("{:?}", r.kind()), r.source_id()), r.clone());
    }
    out
}

#[tokio::test]
async fn initial_then_incremental() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 40,
        contacts: 300,
        deals: 150,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.archive(HubSpotObject::Deals, 5);
    let c = connector(&sim);
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    let rows = latest(&sink);
    let count = |k: &str| rows.keys().filter(|(kind, _)| kind == k).count();
    assert_eq!(count("Account"), 40);
    assert_eq!(count("Contact"), 300);
    assert_eq!(count("Deal"), 150, "149 live + 1 archived");
    let links: usize = (1..=150)
        .map(|d| {
            sim.record(HubSpotObject::Deals, d)
                .unwrap()
                .contact_ids
                .len()
        })
        .sum::<usize>()
        - sim
            .record(HubSpotObject::Deals, 5)
            .unwrap()
            .contact_ids
            .len();
    assert_eq!(count("DealContact"), links);
    assert_eq!(report.records_fetched, 490);

    // Field mapping spot checks against the simulator's truth.
    let Record::Deal(d) = &rows[&("Deal".into(), "7".into())] else {
        panic!()
    };
    let truth = sim.record(HubSpotObject::Deals, 7).unwrap();
    assert_eq!(d.name.as_deref(), truth.properties["dealname"].as_deref());
    assert_eq!(
        d.amount,
        truth.properties["amount"]
            .as_deref()
            .map(|a| a.parse().unwrap())
    );
    assert_eq!(d.account_source_id, truth.company_id.map(|c| c.to_string()));
    assert_eq!(d.meta.source_updated_at, Some(truth.updated_at));
    let Record::Deal(archived) = &rows[&("Deal".into(), "5".into())] else {
        panic!()
    };
    assert!(archived.meta.archived_at.is_some());
    let Record::Account(a) = &rows[&("Account".into(), "3".into())] else {
        panic!()
    };
    assert_eq!(
        a.domain.as_deref(),
        sim.record(HubSpotObject::Companies, 3).unwrap().properties["domain"].as_deref()
    );
    assert!(a.meta.custom_fields.contains_key("hs_custom_tier"));
    let Record::Contact(p) = &rows[&("Contact".into(), "12".into())] else {
        panic!()
    };
    assert_eq!(p.account_source_id.as_deref(), Some("12"));

    // Incremental: modify 5, archive 2, create 1.
    let first_rows = rows;
    let checkpoint = sink.last_checkpoint().unwrap().clone();
    for id in [3, 30, 90, 200, 250] {
        sim.modify(HubSpotObject::Contacts, id, [("jobtitle", "Changed")]);
    }
    sim.archive(HubSpotObject::Companies, 8);
    sim.archive(HubSpotObject::Contacts, 9);
    let new_deal = sim.create(HubSpotObject::Deals, [("dealname", "Fresh")]);
    sim.counters().reset();
    let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(checkpoint);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    let rows = latest(&sink);
    let ids = |k: &str| {
        rows.keys()
            .filter(|(kind, _)| kind == k)
            .map(|(_, id)| id.clone())
            .collect::<BTreeSet<_>>()
    };
    // Everything changed arrives; anything else is the lookback overlap re-reading records
    // at the watermark, unchanged (the store counts those as unchanged, not written).
    let changed_contacts: BTreeSet<String> = ["200", "250", "3", "30", "9", "90"]
        .map(String::from)
        .into();
    assert!(ids("Contact").is_superset(&changed_contacts));
    assert!(ids("Account").contains("8"));
    assert!(ids("Deal").contains(&new_deal.to_string()));
    for ((kind, id), r) in &rows {
        let changed = (kind == "Contact" && changed_contacts.contains(id))
            || (kind == "Account" && id == "8")
            || (kind == "Deal" && *id == new_deal.to_string())
            || kind == "DealContact";
        if !changed {
            assert_eq!(
                Some(r),
                first_rows.get(&(kind.clone(), id.clone())),
                "{kind} {id} re-read but changed"
            );
        }
    }
    let Record::Contact(changed) = &rows[&("Contact".into(), "30".into())] else {
        panic!()
    };
    assert_ne!(
        Some(&rows[&("Contact".into(), "30".into())]),
        first_rows.get(&("Contact".into(), "30".into()))
    );
    assert_eq!(changed.title.as_deref(), Some("Changed"));
    // One search page per object, one archived list per object, two association reads
    // for the page with a deal: nothing else.
    let counts = sim.counters().snapshot();
    assert_eq!(
        counts.get("POST /crm/v3/objects/{object_type}/search"),
        Some(&3)
    );
    assert_eq!(counts.get("GET /crm/v3/objects/{object_type}"), Some(&3));
    assert_eq!(
        counts.get("POST /crm/v4/associations/{from}/{to}/batch/read"),
        Some(&2)
    );
}

#[tokio::test]
async fn twelve_thousand_identical_timestamps_all_arrive() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 10,
        contacts: 12_500,
        deals: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim);
    let base = sim.config().base_time;
    let mut previous = Checkpoint::default();
    for stream in ["companies", "contacts", "deals"] {
        previous.stream_mut(stream).watermark = Some(base);
    }
    let at = Utc.with_ymd_and_hms(2025, 1, 31, 23, 59, 59).unwrap();
    sim.stamp(HubSpotObject::Contacts, 1..=12_000, at);
    let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(previous);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    let ids: BTreeSet<String> = sink
        .records()
        .filter(|r| matches!(r, Record::Contact(_)))
        .map(Record::source_id)
        .collect();
    assert_eq!(ids.len(), 12_000);
    let dupes = sink
        .records()
        .filter(|r| matches!(r, Record::Contact(_)))
        .count();
    assert_eq!(dupes, 12_000, "no contact delivered twice");
}

#[tokio::test]
async fn faults_lose_nothing() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 20,
        contacts: 1_000,
        deals: 300,
        rate_limits: false,
        faults: FaultConfig {
            server_error_rate: 0.1,
            rate_limit_rate: 0.1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim);
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    let rows = latest(&sink);
    assert_eq!(rows.keys().filter(|(k, _)| k == "Contact").count(), 1_000);
    assert_eq!(rows.keys().filter(|(k, _)| k == "Deal").count(), 300);
    assert!(c.http_stats().snapshot().retries > 0);
}

#[tokio::test]
async fn malformed_records_are_captured_with_ids() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 50,
        contacts: 0,
        deals: 0,
        rate_limits: false,
        faults: FaultConfig {
            malformed_rate: 0.1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim);
    let mut sink = MemorySink::new();
    let report = c
        .sync(&SyncContext::new(ws(), SyncMode::Initial), &mut sink)
        .await
        .unwrap();
    let bad: BTreeSet<String> = (1..=50)
        .filter(|i| sim.is_malformed(HubSpotObject::Companies, *i))
        .map(|i| i.to_string())
        .collect();
    assert!(!bad.is_empty());
    let failed: BTreeSet<String> = sink
        .batches
        .iter()
        .flat_map(|(b, _)| b.failures.iter())
        .map(|f| f.record_id.clone().unwrap())
        .collect();
    assert_eq!(failed, bad);
    assert_eq!(report.records_failed, bad.len() as u64);
    assert_eq!(report.records_fetched, 50 - bad.len() as u64);
}

/// Issue 11, case 5: HubSpot's `DAILY` 429 stops the sync with the reset at the next
/// midnight in the account's time zone (read once, lazily, from the account details).
#[tokio::test]
async fn daily_quota_stops_until_the_accounts_midnight() {
    use chrono::{FixedOffset, NaiveTime};
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 30,
        contacts: 50,
        deals: 0,
        rate_limits: false,
        // The three property discoveries, the companies page and its total.
        daily_limit: Some(5),
        time_zone: "US/Eastern".into(),
        utc_offset_ms: -5 * 3_600_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim);
    let ny = FixedOffset::west_opt(5 * 3600).unwrap();
    for run in 0..2 {
        let mut sink = MemorySink::new();
        let before = Utc::now();
        let err = c
            .sync(&SyncContext::new(ws(), SyncMode::Initial), &mut sink)
            .await
            .unwrap_err();
        let pandora_sync::Error::QuotaExhausted {
            resets_at: Some(at),
            ..
        } = err
        else {
            panic!("run {run}: expected a quota stop with its reset, got {err}");
        };
        assert_eq!(at.with_timezone(&ny).time(), NaiveTime::MIN, "{at}");
        assert!(
            at > before && at - before <= chrono::Duration::days(1),
            "{at}"
        );
        if run == 0 {
            // The companies page and its total were served before the quota ran out;
            // what was read is in the sink with its checkpoint.
            assert_eq!(
                sink.records()
                    .filter(|r| matches!(r, Record::Account(_)))
                    .count(),
                30
            );
        }
    }
    // One account lookup for the connector, not one per stop.
    assert_eq!(sim.counters().get("GET /account-info/v3/details"), 1);
    // No retry of a daily stop, and the second run is refused locally until the reset:
    // the companies page and the one contacts request answered with the 429.
    assert_eq!(
        sim.counters().get("GET /crm/v3/objects/{object_type}"),
        2,
        "{:?}",
        sim.counters().snapshot()
    );
}

/// Issue 11, case 8: search's `paging.next.after` is an offset, but the connector pages by
/// `hs_object_id` and never adds to it: a huge cursor cannot overflow anything, and one that
/// is not a number is an error value, never "last page" (which would end the pass early and
/// move the watermark past unread records).
#[tokio::test]
async fn absurd_search_cursors_are_errors_not_panics() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 5,
        contacts: 500,
        deals: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim);
    let base = sim.config().base_time;
    let mut previous = Checkpoint::default();
    for stream in ["companies", "contacts", "deals"] {
        previous.stream_mut(stream).watermark = Some(base);
    }
    let at = Utc.with_ymd_and_hms(2025, 1, 31, 23, 59, 59).unwrap();
    sim.stamp(HubSpotObject::Contacts, 1..=450, at);

    sim.set_search_paging_after(Some(u64::MAX.to_string()));
    let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(previous.clone());
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    let ids: BTreeSet<String> = sink
        .records()
        .filter(|r| matches!(r, Record::Contact(_)))
        .map(Record::source_id)
        .collect();
    assert_eq!(ids.len(), 450);
    assert_eq!(
        sink.last_checkpoint().unwrap().watermark("contacts"),
        Some(at)
    );

    for bad in [
        "NTI1Cg%3D%3D",
        "-5",
        "",
        "1e3",
        "99999999999999999999999999",
    ] {
        sim.set_search_paging_after(Some(bad.to_owned()));
        let mut sink = MemorySink::new();
        let err = c.sync(&ctx, &mut sink).await.unwrap_err();
        assert!(
            matches!(&err, pandora_sync::Error::Decode { .. }),
            "{bad:?}: {err}"
        );
        // The pass did not finish: its watermark did not move.
        let last = sink.last_checkpoint().unwrap();
        assert_eq!(last.watermark("contacts"), Some(base), "{bad:?}");
    }
}

/// Reconciliation: after each full pass the report carries the provider's count of live
/// records (search without filters, one request per object), under the checkpoint's stream
/// names and the tables' record kinds; incremental passes ask for no totals.
#[tokio::test]
async fn full_passes_report_source_totals() {
    use pandora_sync::connector::SourceTotal;
    use pandora_sync::model::RecordKind;
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 40,
        contacts: 300,
        deals: 150,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.archive(HubSpotObject::Deals, 5);
    sim.archive(HubSpotObject::Contacts, 9);
    sim.archive(HubSpotObject::Contacts, 10);
    let c = connector(&sim);
    let mut sink = MemorySink::new();
    let report = c
        .sync(&SyncContext::new(ws(), SyncMode::Initial), &mut sink)
        .await
        .unwrap();
    let expected: Vec<SourceTotal> = [
        (HubSpotObject::Companies, RecordKind::Account),
        (HubSpotObject::Contacts, RecordKind::Contact),
        (HubSpotObject::Deals, RecordKind::Deal),
    ]
    .into_iter()
    .map(|(obj, kind)| SourceTotal {
        stream: obj.as_str().to_owned(),
        kind,
        total: sim.truth_count(obj, false),
    })
    .collect();
    assert_eq!(report.source_totals, expected);
    assert_eq!(expected[1].total, 298);
    let checkpoint = sink.last_checkpoint().unwrap().clone();
    for t in &report.source_totals {
        assert!(checkpoint.stream(&t.stream).is_some(), "{}", t.stream);
    }
    assert_eq!(
        sim.counters()
            .get("POST /crm/v3/objects/{object_type}/search"),
        3
    );

    sim.modify(HubSpotObject::Contacts, 3, [("jobtitle", "CTO")]);
    sim.counters().reset();
    let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(checkpoint);
    let report = c.sync(&ctx, &mut MemorySink::new()).await.unwrap();
    assert!(
        report.source_totals.is_empty(),
        "{:?}",
        report.source_totals
    );
}

/// A stream flagged for repair is read in full by the next sync, even with a search pass in
/// progress; the flag is cleared when that pass ends and the total is reported.
#[tokio::test]
async fn repair_flag_reads_the_stream_in_full() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 10,
        contacts: 250,
        deals: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim);
    let mut sink = MemorySink::new();
    c.sync(&SyncContext::new(ws(), SyncMode::Initial), &mut sink)
        .await
        .unwrap();
    let mut checkpoint = sink.last_checkpoint().unwrap().clone();
    let watermark = checkpoint.watermark("contacts");
    {
        let s = checkpoint.stream_mut("contacts");
        s.repair = true;
        // An unfinished search pass: the repair replaces it.
        s.cursor = Some("120".into());
        s.extra.insert("pass".into(), serde_json::json!("search"));
    }
    let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(checkpoint);
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    let contacts: BTreeSet<String> = sink
        .records()
        .filter(|r| matches!(r, Record::Contact(_)))
        .map(Record::source_id)
        .collect();
    assert_eq!(contacts.len(), 250, "every contact re-read");
    let last = sink.last_checkpoint().unwrap();
    let s = last.stream("contacts").unwrap();
    assert!(
        !s.repair && s.cursor.is_none() && !s.extra.contains_key("pass"),
        "{s:?}"
    );
    assert!(s.watermark >= watermark);
    let streams: Vec<&str> = report
        .source_totals
        .iter()
        .map(|t| t.stream.as_str())
        .collect();
    assert_eq!(streams, ["contacts"]);
    assert_eq!(report.source_totals[0].total, 250);
}

/// Issue 11, case 2, checkpoint by checkpoint: after an interrupted list pass, a change below
/// the stored cursor (contact 5) and then one above it (contact 290) are made. No checkpoint
/// of the resuming run may carry a contacts watermark at or past contact 5's change before
/// the batch that stores that change.
#[tokio::test]
async fn watermark_never_passes_an_unread_change() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 5,
        contacts: 300,
        deals: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let config = HubSpotConfig::from_json(&serde_json::json!({
        "rate_limit": {"max_requests": 100000, "window_ms": 1000},
        "search_rate_limit": {"max_requests": 100000, "window_ms": 1000},
        "lookback_minutes": 0
    }))
    .unwrap();
    let c = HubSpotConnector::new(
        &sim.base_url(),
        HubSpotCredentials::AccessToken(SecretString::from(sim.config().access_token.clone())),
        config,
    )
    .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    sim.after_served(
        pandora_sync::simulator::HubSpotEndpoint::List(HubSpotObject::Contacts),
        1,
        {
            let cancel = cancel.clone();
            move |_| cancel.cancel()
        },
    );
    let ctx = SyncContext::new(ws(), SyncMode::Initial)
        .with_lag(std::time::Duration::ZERO)
        .with_cancel(cancel);
    let mut sink = MemorySink::new();
    let err = c.sync(&ctx, &mut sink).await.unwrap_err();
    assert!(matches!(err, pandora_sync::Error::Cancelled), "{err}");
    let previous = sink.last_checkpoint().unwrap().clone();
    assert!(previous.stream("contacts").unwrap().cursor.is_some());

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    sim.modify(
        HubSpotObject::Contacts,
        5,
        [("jobtitle", "below the cursor")],
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    sim.modify(
        HubSpotObject::Contacts,
        290,
        [("jobtitle", "above the cursor")],
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let t5 = sim.record(HubSpotObject::Contacts, 5).unwrap().updated_at;

    let ctx = SyncContext::new(ws(), SyncMode::Incremental)
        .with_lag(std::time::Duration::ZERO)
        .with_previous(previous);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    let mut stored = false;
    for (batch, checkpoint) in &sink.batches {
        stored |= batch.records.iter().any(|r| {
            matches!(r, Record::Contact(c) if c.meta.source_id == "5" && c.title.as_deref() == Some("below the cursor"))
        });
        if !stored {
            let w = checkpoint.watermark("contacts");
            assert!(
                w.is_none_or(|w| w < t5),
                "watermark {w:?} passed the unread change at {t5}"
            );
        }
    }
    assert!(stored, "the change below the resumed cursor was read");
}

/// Issue 11, case 2 for the archived list: an interrupted archived pass resumes; a record
/// archived before the resume below the stored cursor is soft-deleted by the follow-up pass
/// (the archived watermark does not jump past it to a later archive above the cursor).
#[tokio::test]
async fn resumed_archived_pass_is_followed_up() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 2,
        contacts: 260,
        deals: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    for id in 11..=260 {
        sim.archive(HubSpotObject::Contacts, id);
    }
    let config = HubSpotConfig::from_json(&serde_json::json!({
        "rate_limit": {"max_requests": 100000, "window_ms": 1000},
        "search_rate_limit": {"max_requests": 100000, "window_ms": 1000},
        "lookback_minutes": 0
    }))
    .unwrap();
    let c = HubSpotConnector::new(
        &sim.base_url(),
        HubSpotCredentials::AccessToken(SecretString::from(sim.config().access_token.clone())),
        config,
    )
    .unwrap();
    // The live contacts list is one page; the archived one has three: stop after its first.
    let cancel = tokio_util::sync::CancellationToken::new();
    sim.after_served(
        pandora_sync::simulator::HubSpotEndpoint::List(HubSpotObject::Contacts),
        2,
        {
            let cancel = cancel.clone();
            move |_| cancel.cancel()
        },
    );
    let ctx = SyncContext::new(ws(), SyncMode::Initial)
        .with_lag(std::time::Duration::ZERO)
        .with_cancel(cancel);
    let mut sink = MemorySink::new();
    let err = c.sync(&ctx, &mut sink).await.unwrap_err();
    assert!(matches!(err, pandora_sync::Error::Cancelled), "{err}");
    let previous = sink.last_checkpoint().unwrap().clone();
    assert!(
        previous
            .stream("contacts_archived")
            .unwrap()
            .cursor
            .is_some(),
        "{previous:?}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    sim.archive(HubSpotObject::Contacts, 5); // below the archived cursor
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    sim.archive(HubSpotObject::Contacts, 200); // above it, archived again later
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let ctx = SyncContext::new(ws(), SyncMode::Incremental)
        .with_lag(std::time::Duration::ZERO)
        .with_previous(previous);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    let archived_5 = sink.records().any(|r| {
        matches!(r, Record::Contact(c) if c.meta.source_id == "5" && c.meta.archived_at.is_some())
    });
    assert!(archived_5, "contact 5's archiving was read");
}

/// Issue 13: the archived list can be neither filtered nor sorted by time, so an
/// incremental run reads a bounded number of archived pages per object and goes on from
/// the stored cursor next run; an archiving is still read within a few runs.
#[tokio::test]
async fn archived_pass_is_bounded_per_incremental_run() {
    const BOUND: usize = 10; // archived pages per object and incremental run
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 5,
        contacts: 5_200,
        deals: 5,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    // 5,000 archived contacts: 50 archived pages.
    for id in 101..=5_100 {
        sim.archive(HubSpotObject::Contacts, id);
    }
    let c = connector(&sim);
    let mut sink = MemorySink::new();
    c.sync(&SyncContext::new(ws(), SyncMode::Initial), &mut sink)
        .await
        .unwrap();
    let archived_read = sink
        .records()
        .filter(|r| matches!(r, Record::Contact(c) if c.meta.archived_at.is_some()))
        .count();
    assert_eq!(
        archived_read, 5_000,
        "an initial sync reads the whole archived list"
    );
    let mut previous = sink.last_checkpoint().unwrap().clone();

    // No change at all: each incremental run reads at most BOUND archived contact pages
    // (before: all 50, on every run), plus one (empty) archived page for companies and deals.
    for run in 0..3 {
        sim.counters().reset();
        let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(previous.clone());
        let mut sink = MemorySink::new();
        c.sync(&ctx, &mut sink).await.unwrap();
        let lists = sim.counters().get("GET /crm/v3/objects/{object_type}");
        assert_eq!(
            lists,
            BOUND as u64 + 2,
            "run {run}: {:?}",
            sim.counters().snapshot()
        );
        previous = sink.last_checkpoint().unwrap().clone();
    }

    // A contact archived now is read within the runs the list takes at the bound.
    sim.archive(HubSpotObject::Contacts, 5_150);
    let mut seen = false;
    for _ in 0..(50 / BOUND + 1) {
        let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(previous.clone());
        let mut sink = MemorySink::new();
        c.sync(&ctx, &mut sink).await.unwrap();
        seen |= sink.records().any(|r| {
            matches!(r, Record::Contact(c) if c.meta.source_id == "5150" && c.meta.archived_at.is_some())
        });
        previous = sink.last_checkpoint().unwrap().clone();
    }
    assert!(seen, "contact 5150's archiving was read");
}

/// A deal's contact set is sent only when its whole contact list was read: uncut inline
/// blocks of a list pass (no block: no contacts), never a cut-off block; every deal the v4
/// batch read covers, with every page of it followed.
#[tokio::test]
async fn contact_sets_only_from_complete_association_lists() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 10,
        contacts: 40,
        deals: 60,
        assoc_page_size: 2,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim);
    let mut sink = MemorySink::new();
    c.sync(&SyncContext::new(ws(), SyncMode::Initial), &mut sink)
        .await
        .unwrap();
    let truth = |d: u64| -> Vec<String> {
        sim.record(HubSpotObject::Deals, d)
            .unwrap()
            .contact_ids
            .iter()
            .map(u64::to_string)
            .collect()
    };
    let sets: BTreeMap<String, Vec<String>> = sink
        .batches
        .iter()
        .flat_map(|(b, _)| b.link_sets.iter())
        .map(|s| (s.deal_source_id.clone(), s.contact_source_ids.clone()))
        .collect();
    let mut cut = 0;
    for d in 1..=60u64 {
        let contacts = truth(d);
        if contacts.len() > 2 {
            cut += 1;
            assert!(
                !sets.contains_key(&d.to_string()),
                "deal {d}: cut-off block"
            );
        } else {
            assert_eq!(sets[&d.to_string()], contacts, "deal {d}");
        }
    }
    assert!(cut > 0, "the seed has deals with cut-off blocks");

    // The backfill reads every deal's contacts to the end.
    let checkpoint = sink.last_checkpoint().unwrap().clone();
    let mut sink = MemorySink::new();
    c.sync(
        &SyncContext::new(ws(), SyncMode::Backfill).with_previous(checkpoint),
        &mut sink,
    )
    .await
    .unwrap();
    let sets: BTreeMap<String, Vec<String>> = sink
        .batches
        .iter()
        .flat_map(|(b, _)| b.link_sets.iter())
        .map(|s| (s.deal_source_id.clone(), s.contact_source_ids.clone()))
        .collect();
    assert_eq!(sets.len(), 60);
    for d in 1..=60u64 {
        assert_eq!(sets[&d.to_string()], truth(d), "deal {d}");
    }
}

/// A wrong private-app token: the sync fails on the first answer (a 401 is not retried),
/// writes nothing, and the token appears in neither the error nor its `Debug` form.
#[tokio::test]
async fn a_bad_access_token_fails_at_once_and_is_never_shown() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 5,
        contacts: 20,
        deals: 5,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let secret = "pat-na1-not-the-right-token-0123456789";
    let c = HubSpotConnector::new(
        &sim.base_url(),
        HubSpotCredentials::AccessToken(SecretString::from(secret.to_owned())),
        fast_config(),
    )
    .unwrap();
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let err = c.sync(&ctx, &mut sink).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert_eq!(sink.records().count(), 0);
    assert!(!format!("{c:?}").contains(secret));
    assert_eq!(sim.counters().total(), 1, "{:?}", sim.counters().snapshot());
}

/// OAuth access tokens that expire every second during a paced sync are refreshed from the
/// refresh token as they age: the sync completes with every record, and the token endpoint
/// was asked more than once.
#[tokio::test]
async fn oauth_tokens_expiring_during_the_sync_are_refreshed() {
    use pandora_sync::simulator::HubSpotOAuthApp;
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 20,
        contacts: 400,
        deals: 20,
        rate_limits: false,
        oauth: Some(HubSpotOAuthApp {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            refresh_token: "rt".into(),
            expires_in: 1,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    // About ten requests a second: the sync outlives several tokens.
    let config = HubSpotConfig::from_json(&serde_json::json!({
        "rate_limit": {"max_requests": 10, "window_ms": 1000},
    }))
    .unwrap();
    let c = HubSpotConnector::new(
        &sim.base_url(),
        HubSpotCredentials::OAuth {
            client_id: "cid".into(),
            client_secret: SecretString::from("csecret".to_owned()),
            refresh_token: SecretString::from("rt".to_owned()),
        },
        config,
    )
    .unwrap();
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    let rows = latest(&sink);
    let count = |k: &str| rows.keys().filter(|(kind, _)| kind == k).count();
    assert_eq!(count("Account"), 20);
    assert_eq!(count("Contact"), 400);
    assert_eq!(count("Deal"), 20);
    let refreshes = sim.counters().get("POST /oauth/v1/token");
    assert!(refreshes >= 2, "{:?}", sim.counters().snapshot());
}
