//! The conformance tests. Each takes a [`Harness`] on a fresh, migrated database and must
//! pass unchanged on every backend.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use pandora_sync::capture::RecordFailure;
use pandora_sync::connector::{DealContactSet, Deletion, WriteCounts};
use pandora_sync::model::RecordKind;
use pandora_sync::store::{
    Clock, ConnectionStatus, NewConnection, RecordQuery, STALE_SYNC_AFTER, SyncErrors, SyncOutcome,
    SyncStatus,
};
use pandora_sync::{ConnectorKind, Credentials, Error, Keyring, Record, RecordBatch, SyncMode};
use secrecy::ExposeSecret;
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::*;
use crate::harness::Harness;

const HS: ConnectorKind = ConnectorKind::Hubspot;

/// Writes one record of `ws` from HubSpot with a fixed checkpoint.
async fn write_one(h: &Harness, ws: Uuid, record: impl Into<Record>) -> WriteCounts {
    write_all(h, ws, RecordBatch::new(vec![record.into()])).await
}

/// Writes a batch of `ws` from HubSpot with a fixed checkpoint.
async fn write_all(h: &Harness, ws: Uuid, batch: RecordBatch) -> WriteCounts {
    h.store
        .write_batch(ws, HS, &batch, &checkpoint("deals", "c"))
        .await
        .unwrap()
}

fn counts(inserted: u64, updated: u64, unchanged: u64, archived: u64) -> WriteCounts {
    WriteCounts {
        inserted,
        updated,
        unchanged,
        archived,
    }
}

pub async fn migrate_is_idempotent_and_concurrent_safe(h: Harness) {
    assert_eq!(h.store.backend(), h.backend);
    // The harness migrated once already.
    h.store.migrate().await.unwrap();
    h.store.migrate().await.unwrap();
    h.store.ping().await.unwrap();

    // Two "processes" migrating one empty database at the same time.
    let (a, b) = h.fresh_pair().await;
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    a.migrate().await.unwrap();
    let ws = Uuid::new_v4();
    b.create_connection(NewConnection::new(ws, HS, "api_key"))
        .await
        .unwrap();
    assert_eq!(a.list_connections(ws).await.unwrap().len(), 1);
    a.close().await;
    b.close().await;
}

pub async fn same_batch_twice_gives_same_rows(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let batch = RecordBatch::new(one_of_each(ws, 10));
    let cp = checkpoint("deals", "page-2");

    let first = h.store.write_batch(ws, HS, &batch, &cp).await.unwrap();
    assert_eq!(first, counts(7, 0, 0, 0));
    let mut rows_after_first = Vec::new();
    for kind in RecordKind::ALL {
        rows_after_first.push(
            h.store
                .list_records(ws, kind, &RecordQuery::new(100))
                .await
                .unwrap(),
        );
    }

    h.clock.advance(chrono::Duration::minutes(5));
    let second = h.store.write_batch(ws, HS, &batch, &cp).await.unwrap();
    assert_eq!(
        second,
        counts(0, 0, 7, 0),
        "the same batch again changes nothing"
    );
    for (kind, before) in RecordKind::ALL.into_iter().zip(rows_after_first) {
        let after = h
            .store
            .list_records(ws, kind, &RecordQuery::new(100))
            .await
            .unwrap();
        assert_eq!(after, before, "{kind:?} rows changed (synced_at included)");
        assert_eq!(after.len(), 1);
        assert_eq!(h.store.count_records(ws, kind, Some(HS)).await.unwrap(), 1);
    }
    let conn = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(conn.checkpoint().unwrap(), cp);
}

pub async fn every_kind_and_column_round_trips(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let records = one_of_each(ws, 10);
    h.store
        .write_batch(
            ws,
            HS,
            &RecordBatch::new(records.clone()),
            &checkpoint("all", "x"),
        )
        .await
        .unwrap();
    for record in records {
        let back = read(&h, ws, record.kind(), &record.source_id())
            .await
            .unwrap_or_else(|| panic!("{:?} {} missing", record.kind(), record.source_id()));
        if let Some(meta) = back.meta() {
            assert_eq!(
                meta.synced_at,
                Some(h.clock.now()),
                "synced_at is the write time"
            );
        }
        assert_eq!(unsynced(back), record);
    }
}

pub async fn out_of_order_updates_do_not_regress(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let cp = checkpoint("deals", "c");

    assert_eq!(
        write_one(&h, ws, deal(ws, "d", 20)).await,
        counts(1, 0, 0, 0)
    );
    // An older version arrives late: left alone.
    assert_eq!(
        write_one(&h, ws, deal(ws, "d", 10)).await,
        counts(0, 0, 1, 0)
    );
    assert_eq!(
        read_deal(&h, ws, "d").await.unwrap().name.as_deref(),
        Some("Deal d v20")
    );
    // A version without a timestamp does not replace one with.
    let mut undated = deal(ws, "d", 0);
    undated.meta.source_updated_at = None;
    undated.name = Some("undated".into());
    assert_eq!(write_one(&h, ws, undated).await, counts(0, 0, 1, 0));
    // Same version, same content: unchanged; same version, new content: updated.
    assert_eq!(
        write_one(&h, ws, deal(ws, "d", 20)).await,
        counts(0, 0, 1, 0)
    );
    let mut fixed = deal(ws, "d", 20);
    fixed.days_open = Some(13);
    assert_eq!(write_one(&h, ws, fixed).await, counts(0, 1, 0, 0));
    assert_eq!(read_deal(&h, ws, "d").await.unwrap().days_open, Some(13));
    // A newer version wins, and keeps the row id.
    let id_before = read_deal(&h, ws, "d").await.unwrap().meta.id;
    assert_eq!(
        write_one(&h, ws, deal(ws, "d", 30)).await,
        counts(0, 1, 0, 0)
    );
    let now = read_deal(&h, ws, "d").await.unwrap();
    assert_eq!(now.name.as_deref(), Some("Deal d v30"));
    assert_eq!(now.meta.id, id_before);

    // A row stored without a timestamp takes any dated version.
    let mut first = deal(ws, "e", 0);
    first.meta.source_updated_at = None;
    assert_eq!(write_one(&h, ws, first).await, counts(1, 0, 0, 0));
    assert_eq!(
        write_one(&h, ws, deal(ws, "e", 1)).await,
        counts(0, 1, 0, 0)
    );

    // Hook-owned conversation columns survive a connector that does not know them.
    let mut conv = conversation(ws, "v", 1);
    h.store
        .write_batch(ws, HS, &RecordBatch::new(vec![conv.clone().into()]), &cp)
        .await
        .unwrap();
    conv.meta.source_updated_at = Some(t(2));
    conv.linked_account_id = None;
    conv.linked_deal_id = None;
    conv.is_internal = None;
    conv.title = Some("renamed".into());
    h.store
        .write_batch(ws, HS, &RecordBatch::new(vec![conv.into()]), &cp)
        .await
        .unwrap();
    let Some(Record::Conversation(back)) = read(&h, ws, RecordKind::Conversation, "v").await else {
        panic!("conversation missing");
    };
    assert_eq!(back.title.as_deref(), Some("renamed"));
    assert_eq!(back.linked_account_id, Some(Uuid::from_u128(0xa)));
    assert_eq!(back.linked_deal_id, Some(Uuid::from_u128(0xd)));
    assert_eq!(back.is_internal, Some(false));
}

pub async fn duplicates_within_a_batch_keep_the_newest(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let batch = RecordBatch::new(vec![
        deal(ws, "d", 2).into(),
        deal(ws, "d", 5).into(),
        deal(ws, "d", 3).into(),
        deal(ws, "x", 1).into(),
        link(ws, "d", "c", Some("a")).into(),
        link(ws, "d", "c", Some("b")).into(),
    ]);
    let c = h
        .store
        .write_batch(ws, HS, &batch, &checkpoint("deals", "1"))
        .await
        .unwrap();
    assert_eq!(c, counts(3, 0, 3, 0));
    assert_eq!(
        read_deal(&h, ws, "d").await.unwrap().name.as_deref(),
        Some("Deal d v5")
    );
    let Some(Record::DealContact(l)) = read(&h, ws, RecordKind::DealContact, "d:c").await else {
        panic!("link missing");
    };
    assert_eq!(l.role.as_deref(), Some("b"), "the last copy of a link wins");
    // Written again, the batch changes nothing.
    let again = h
        .store
        .write_batch(ws, HS, &batch, &checkpoint("deals", "1"))
        .await
        .unwrap();
    assert_eq!(again, counts(0, 0, 6, 0));
}

pub async fn deletions_archive_and_respect_versions(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let cp = checkpoint("deals", "1");
    let records: Vec<Record> = vec![
        deal(ws, "a", 10).into(),
        deal(ws, "b", 10).into(),
        contact(ws, "c", 10).into(),
    ];
    h.store
        .write_batch(ws, HS, &RecordBatch::new(records), &cp)
        .await
        .unwrap();

    let del = |kind, id: &str, at| Deletion {
        kind,
        source_id: id.into(),
        deleted_at: at,
    };
    let batch = RecordBatch {
        deletions: vec![
            del(RecordKind::Deal, "a", t(20)),
            del(RecordKind::Deal, "a", t(21)), // duplicate: one archive, latest time
            del(RecordKind::Deal, "b", t(5)),  // older than the stored version: ignored
            del(RecordKind::Contact, "c", t(20)),
            del(RecordKind::Deal, "unknown", t(20)),
        ],
        ..Default::default()
    };
    let c = h.store.write_batch(ws, HS, &batch, &cp).await.unwrap();
    assert_eq!(c, counts(0, 0, 0, 2));
    assert_eq!(
        read_deal(&h, ws, "a").await.unwrap().meta.archived_at,
        Some(t(21))
    );
    assert_eq!(read_deal(&h, ws, "b").await.unwrap().meta.archived_at, None);
    let again = h.store.write_batch(ws, HS, &batch, &cp).await.unwrap();
    assert_eq!(again.archived, 0, "archiving twice changes nothing");

    // A stale copy of the record (not newer than the deletion) does not revive it...
    assert_eq!(
        write_one(&h, ws, deal(ws, "a", 15)).await,
        counts(0, 0, 1, 0)
    );
    assert!(
        read_deal(&h, ws, "a")
            .await
            .unwrap()
            .meta
            .archived_at
            .is_some()
    );
    // ...a version newer than the deletion does (restored at the provider).
    assert_eq!(
        write_one(&h, ws, deal(ws, "a", 30)).await,
        counts(0, 1, 0, 0)
    );
    assert_eq!(read_deal(&h, ws, "a").await.unwrap().meta.archived_at, None);

    // A record that arrives archived is stored archived.
    let mut gone = deal(ws, "g", 40);
    gone.meta.archived_at = Some(t(40));
    assert_eq!(write_one(&h, ws, gone).await, counts(1, 0, 0, 0));
    let live = h
        .store
        .list_records(ws, RecordKind::Deal, &RecordQuery::new(10).live_only())
        .await
        .unwrap();
    let ids: Vec<String> = live.iter().map(Record::source_id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&"g".to_owned()));
}

pub async fn failure_mid_batch_changes_nothing(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let cp1 = checkpoint("accounts", "page-1");
    let base: Vec<Record> = vec![account(ws, "a1", 1).into(), deal(ws, "d1", 1).into()];
    h.store
        .write_batch(ws, HS, &RecordBatch::new(base), &cp1)
        .await
        .unwrap();

    // The accounts statement succeeds (one update, one insert); the deals statement then
    // fails: "d2" reuses the row id of "d1" (a primary-key violation inside the database).
    let mut clash = deal(ws, "d2", 2);
    clash.meta.id = read_deal(&h, ws, "d1").await.unwrap().meta.id;
    let batch = RecordBatch::new(vec![
        account(ws, "a1", 2).into(),
        account(ws, "a2", 2).into(),
        clash.into(),
        link(ws, "d2", "c9", None).into(),
    ]);
    let err = h
        .store
        .write_batch(ws, HS, &batch, &checkpoint("accounts", "page-2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");

    let Some(Record::Account(a1)) = read(&h, ws, RecordKind::Account, "a1").await else {
        panic!("a1 missing");
    };
    assert_eq!(
        a1.name.as_deref(),
        Some("Account a1 v1"),
        "the update was rolled back"
    );
    assert!(
        read(&h, ws, RecordKind::Account, "a2").await.is_none(),
        "the insert was rolled back"
    );
    assert!(read(&h, ws, RecordKind::Deal, "d2").await.is_none());
    assert_eq!(
        h.store
            .count_records(ws, RecordKind::DealContact, None)
            .await
            .unwrap(),
        0
    );
    let conn = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(
        conn.checkpoint().unwrap(),
        cp1,
        "the checkpoint did not move"
    );

    // The store is usable afterwards.
    h.store
        .write_batch(
            ws,
            HS,
            &RecordBatch::new(vec![account(ws, "a2", 3).into()]),
            &checkpoint("accounts", "page-2"),
        )
        .await
        .unwrap();
}

pub async fn missing_connection_rolls_back_everything(h: Harness) {
    let ws = Uuid::new_v4();
    // No connection row: the checkpoint (the last statement) fails, and the records written
    // before it in the same transaction disappear with it.
    let err = h
        .store
        .write_batch(
            ws,
            HS,
            &RecordBatch::new(one_of_each(ws, 1)),
            &checkpoint("x", "1"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("no hubspot connection")),
        "{err:?}"
    );
    for kind in RecordKind::ALL {
        assert_eq!(
            h.store.count_records(ws, kind, None).await.unwrap(),
            0,
            "{kind:?}"
        );
    }
}

pub async fn workspaces_are_isolated(h: Harness) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    connect(&h, a, HS).await;
    connect(&h, b, HS).await;
    let mut da = deal(a, "same-id", 1);
    da.name = Some("A's deal".into());
    let mut db = deal(b, "same-id", 1);
    db.name = Some("B's deal".into());
    h.store
        .write_batch(
            a,
            HS,
            &RecordBatch::new(vec![da.into()]),
            &checkpoint("deals", "a"),
        )
        .await
        .unwrap();
    h.store
        .write_batch(
            b,
            HS,
            &RecordBatch::new(vec![db.into()]),
            &checkpoint("deals", "b"),
        )
        .await
        .unwrap();

    assert_eq!(
        read_deal(&h, a, "same-id").await.unwrap().name.as_deref(),
        Some("A's deal")
    );
    assert_eq!(
        read_deal(&h, b, "same-id").await.unwrap().name.as_deref(),
        Some("B's deal")
    );
    let listed = h
        .store
        .list_records(a, RecordKind::Deal, &RecordQuery::new(100))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].workspace_id(), a);
    assert_ne!(
        read_deal(&h, a, "same-id").await.unwrap().meta.id,
        read_deal(&h, b, "same-id").await.unwrap().meta.id
    );

    // A's deletion does not touch B's row.
    let del = RecordBatch {
        deletions: vec![Deletion {
            kind: RecordKind::Deal,
            source_id: "same-id".into(),
            deleted_at: t(50),
        }],
        ..Default::default()
    };
    assert_eq!(
        h.store
            .write_batch(a, HS, &del, &checkpoint("deals", "a"))
            .await
            .unwrap()
            .archived,
        1
    );
    assert!(
        read_deal(&h, b, "same-id")
            .await
            .unwrap()
            .meta
            .archived_at
            .is_none()
    );

    // A batch for A cannot carry B's records.
    let err = h
        .store
        .write_batch(
            a,
            HS,
            &RecordBatch::new(vec![deal(b, "x", 2).into()]),
            &checkpoint("deals", "a"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(read_deal(&h, b, "x").await.is_none());

    // Checkpoints, connections and sync history are per workspace too.
    let ca = h.store.get_connection(a, HS).await.unwrap().unwrap();
    let cb = h.store.get_connection(b, HS).await.unwrap().unwrap();
    assert_eq!(ca.checkpoint().unwrap(), checkpoint("deals", "a"));
    assert_eq!(cb.checkpoint().unwrap(), checkpoint("deals", "b"));
    let sync_b = h.store.create_sync(b, Some(HS), None).await.unwrap();
    assert!(h.store.get_sync(a, sync_b.id).await.unwrap().is_none());
    assert!(h.store.sync_history(a, None, 10).await.unwrap().is_empty());
    assert!(h.store.start_sync(a, sync_b.id, None).await.is_err());
    assert_eq!(h.store.list_connections(a).await.unwrap().len(), 1);
}

pub async fn nul_emoji_huge_strings_and_extreme_numbers(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let cp = checkpoint("x", "1");

    // Unicode beyond the BMP, combining marks, right-to-left text and 1 MB strings.
    let mut conv = conversation(ws, "big", 1);
    conv.title = Some("🚀 Überraschung — 日本語 — עברית — e\u{301} — 𝄞".into());
    conv.transcript = Some("ü".repeat(512 * 1024)); // 1 MiB of UTF-8
    conv.summary = Some("x".repeat(1024 * 1024));
    conv.meta
        .custom_fields
        .insert("emoji 🔑".into(), json!("value 🎉"));
    conv.meta
        .custom_fields
        .insert("big".into(), json!("y".repeat(1024 * 1024)));
    // Extreme numbers.
    let mut acc = account(ws, "nums", 1);
    acc.annual_revenue = Some(f64::MAX);
    acc.employee_count = Some(i64::MIN);
    let mut d1 = deal(ws, "n1", 1);
    d1.amount = Some(f64::MIN);
    d1.probability = Some(f64::MIN_POSITIVE);
    d1.days_open = Some(i64::MAX);
    d1.days_to_close = Some(i64::MIN);
    d1.close_date = Some(date(9999, 12, 31));
    d1.meta.source_created_at = Some(chrono::Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap());
    d1.meta.custom_fields.insert(
        "numbers".into(),
        json!({"u64max": u64::MAX, "i64min": i64::MIN, "big": 1e308, "tiny": 5e-324, "neg": -0.5}),
    );
    let mut d2 = deal(ws, "n2", 1);
    d2.amount = Some(5e-324);
    d2.probability = Some(-0.0);
    d2.close_date = Some(date(1, 1, 1));
    let mut doc = document(ws, "doc", 1);
    doc.size_bytes = Some(i64::MAX);
    let records: Vec<Record> = vec![conv.into(), acc.into(), d1.into(), d2.into(), doc.into()];
    let c = h
        .store
        .write_batch(ws, HS, &RecordBatch::new(records.clone()), &cp)
        .await
        .unwrap();
    assert_eq!(c.inserted, 5);
    for r in &records {
        let back = read(&h, ws, r.kind(), &r.source_id()).await.unwrap();
        assert_eq!(&unsynced(back), r, "{} did not round-trip", r.source_id());
    }

    // What a database cannot store exactly fails clearly, naming the record, and stores
    // nothing of its batch.
    let mut nul_text = deal(ws, "nul-text", 2);
    nul_text.name = Some("a\0b".into());
    let mut nul_json = deal(ws, "nul-json", 2);
    nul_json
        .meta
        .custom_fields
        .insert("k".into(), json!(["fine", "bad\u{0}"]));
    let mut nul_key = deal(ws, "nul-key", 2);
    nul_key.meta.custom_fields.insert("k\0".into(), json!(1));
    let mut nan = deal(ws, "nan", 2);
    nan.amount = Some(f64::NAN);
    let mut inf = account(ws, "inf", 2);
    inf.annual_revenue = Some(f64::INFINITY);
    let mut nul_link = link(ws, "d", "c", None);
    nul_link.role = Some("\0".into());
    let bad: Vec<(Record, &str, &str)> = vec![
        (nul_text.into(), "nul-text", "deals.name"),
        (nul_json.into(), "nul-json", "deals.custom_fields"),
        (nul_key.into(), "nul-key", "deals.custom_fields"),
        (nan.into(), "nan", "deals.amount"),
        (inf.into(), "inf", "accounts.annual_revenue"),
        (nul_link.into(), "d:c", "deal_contacts.role"),
    ];
    for (record, id, column) in bad {
        let batch = RecordBatch::new(vec![deal(ws, "ok-neighbour", 3).into(), record]);
        let err = h
            .store
            .write_batch(ws, HS, &batch, &checkpoint("x", "2"))
            .await
            .unwrap_err();
        match &err {
            Error::Decode {
                record_id: Some(rid),
                message,
            } => {
                assert_eq!(rid, id);
                assert!(message.contains(column), "{message}");
            }
            other => panic!("expected a decode error for {id}, got {other:?}"),
        }
        assert!(read_deal(&h, ws, "ok-neighbour").await.is_none());
        assert!(pandora_sync::store::validate_record(&batch.records[1]).is_err());
    }
    let conn = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(conn.checkpoint().unwrap(), cp);
}

pub async fn concurrent_writers_end_with_the_newest(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    const ROUNDS: i64 = 25;
    let writer = |parity: i64| {
        let store = Arc::clone(&h.store);
        tokio::spawn(async move {
            for i in 0..ROUNDS {
                // Interleave versions: writer 0 writes even versions, writer 1 odd ones, each
                // in a scrambled order, with a neighbour record in every batch.
                let version = ((i * 7) % ROUNDS) * 2 + parity;
                let batch = RecordBatch::new(vec![
                    deal(ws, "hot", version).into(),
                    deal(ws, &format!("own-{parity}-{i}"), version).into(),
                    account(ws, "shared", version).into(),
                ]);
                store
                    .write_batch(
                        ws,
                        HS,
                        &batch,
                        &checkpoint("deals", &format!("{parity}-{i}")),
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let (a, b) = tokio::join!(writer(0), writer(1));
    a.unwrap();
    b.unwrap();
    let newest = (ROUNDS - 1) * 2 + 1;
    let hot = read_deal(&h, ws, "hot").await.unwrap();
    assert_eq!(hot.meta.source_updated_at, Some(t(newest)));
    assert_eq!(
        hot.name.as_deref(),
        Some(format!("Deal hot v{newest}").as_str())
    );
    let Some(Record::Account(shared)) = read(&h, ws, RecordKind::Account, "shared").await else {
        panic!("shared account missing");
    };
    assert_eq!(shared.meta.source_updated_at, Some(t(newest)));
    assert_eq!(
        h.store
            .count_records(ws, RecordKind::Deal, None)
            .await
            .unwrap(),
        u64::try_from(1 + 2 * ROUNDS).unwrap()
    );
}

pub async fn checkpoint_merges_into_sync_cursor(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let mut members = serde_json::Map::new();
    members.insert("lastSyncMode".into(), json!("initial"));
    members.insert("usedExportApi".into(), json!(true));
    h.store.merge_sync_cursor(ws, HS, &members).await.unwrap();

    let cp = checkpoint("deals", "after=500");
    h.store
        .write_batch(ws, HS, &RecordBatch::default(), &cp)
        .await
        .unwrap();
    let cursor = h
        .store
        .get_connection(ws, HS)
        .await
        .unwrap()
        .unwrap()
        .sync_cursor
        .unwrap();
    assert_eq!(cursor["lastSyncMode"], "initial");
    assert_eq!(cursor["usedExportApi"], true);
    assert_eq!(cursor["streams"], cp.to_json()["streams"]);

    // The next checkpoint replaces the streams member; the orchestrator's members stay.
    let mut cp2 = checkpoint("contacts", "p9");
    cp2.stream_mut("deals").watermark = Some(t(99));
    h.store
        .write_batch(ws, HS, &RecordBatch::default(), &cp2)
        .await
        .unwrap();
    let row = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(row.checkpoint().unwrap(), cp2);
    assert_eq!(row.sync_cursor.as_ref().unwrap()["lastSyncMode"], "initial");

    let mut more = serde_json::Map::new();
    more.insert("lastSyncRecords".into(), json!(42));
    h.store.merge_sync_cursor(ws, HS, &more).await.unwrap();
    let row = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(
        row.checkpoint().unwrap(),
        cp2,
        "merging members keeps the streams"
    );
    assert_eq!(row.sync_cursor.as_ref().unwrap()["lastSyncRecords"], 42);

    h.store.set_sync_cursor(ws, HS, None).await.unwrap();
    let row = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(row.sync_cursor, None);
    assert!(row.checkpoint().unwrap().is_empty());
}

pub async fn deal_contact_links(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let cp = checkpoint("links", "1");
    let batch = RecordBatch::new(vec![
        link(ws, "d1", "c1", None).into(),
        link(ws, "d1", "c2", Some("buyer")).into(),
        link(ws, "d2", "c1", None).into(),
    ]);
    assert_eq!(
        h.store.write_batch(ws, HS, &batch, &cp).await.unwrap(),
        counts(3, 0, 0, 0)
    );
    assert_eq!(
        h.store.write_batch(ws, HS, &batch, &cp).await.unwrap(),
        counts(0, 0, 3, 0)
    );
    let changed = RecordBatch::new(vec![link(ws, "d1", "c1", Some("champion")).into()]);
    assert_eq!(
        h.store.write_batch(ws, HS, &changed, &cp).await.unwrap(),
        counts(0, 1, 0, 0)
    );
    let Some(Record::DealContact(l)) = read(&h, ws, RecordKind::DealContact, "d1:c1").await else {
        panic!("link missing");
    };
    assert_eq!(l.role.as_deref(), Some("champion"));

    let removal = RecordBatch {
        deletions: vec![Deletion {
            kind: RecordKind::DealContact,
            source_id: "d1:c2".into(),
            deleted_at: t(1),
        }],
        ..Default::default()
    };
    assert_eq!(
        h.store.write_batch(ws, HS, &removal, &cp).await.unwrap(),
        counts(0, 0, 0, 1)
    );
    let links = h
        .store
        .list_records(ws, RecordKind::DealContact, &RecordQuery::new(10))
        .await
        .unwrap();
    let ids: Vec<String> = links.iter().map(Record::source_id).collect();
    assert_eq!(ids, ["d1:c1", "d2:c1"]);
    assert!(
        h.store
            .get_record(ws, RecordKind::DealContact, HS, "no-colon")
            .await
            .is_err()
    );
    let bad = RecordBatch {
        deletions: vec![Deletion {
            kind: RecordKind::DealContact,
            source_id: "no-colon".into(),
            deleted_at: t(1),
        }],
        ..Default::default()
    };
    assert!(h.store.write_batch(ws, HS, &bad, &cp).await.is_err());
}

/// The set form of a link deletion: a deal's complete contact set removes the deal's other
/// links (same workspace and source only), in the batch's transaction, counted as archived.
pub async fn deal_contact_sets_remove_missing_links(h: Harness) {
    let (ws, other_ws) = (Uuid::new_v4(), Uuid::new_v4());
    let sf = ConnectorKind::Salesforce;
    connect(&h, ws, HS).await;
    connect(&h, ws, sf).await;
    connect(&h, other_ws, HS).await;
    let cp = checkpoint("links", "1");
    let links = |ws, pairs: &[(&str, &str)]| -> RecordBatch {
        RecordBatch::new(
            pairs
                .iter()
                .map(|(d, c)| link(ws, d, c, None).into())
                .collect(),
        )
    };
    let set = |deal: &str, contacts: &[&str]| DealContactSet {
        deal_source_id: deal.into(),
        contact_source_ids: contacts.iter().map(|c| (*c).to_owned()).collect(),
    };
    let base = [
        ("d1", "c1"),
        ("d1", "c2"),
        ("d1", "c3"),
        ("d2", "c1"),
        ("d3", "c1"),
    ];
    h.store
        .write_batch(ws, HS, &links(ws, &base), &cp)
        .await
        .unwrap();
    h.store
        .write_batch(other_ws, HS, &links(other_ws, &base), &cp)
        .await
        .unwrap();
    let mut salesforce = link(ws, "d1", "c9", None);
    salesforce.source = sf;
    h.store
        .write_batch(ws, sf, &RecordBatch::new(vec![salesforce.into()]), &cp)
        .await
        .unwrap();
    let stored = |ws, source| {
        let h = &h;
        async move {
            let mut ids: Vec<String> = h
                .store
                .list_records(ws, RecordKind::DealContact, &RecordQuery::new(100))
                .await
                .unwrap()
                .into_iter()
                .filter_map(|r| match r {
                    Record::DealContact(l) if l.source == source => {
                        Some(format!("{}:{}", l.deal_source_id, l.contact_source_id))
                    }
                    _ => None,
                })
                .collect();
            ids.sort();
            ids
        }
    };

    // A new link of d1 and its set in one batch: the set keeps it (whatever the order of
    // the statements) and removes d1's other links; an empty set removes all of d2's; a
    // set of a deal with no links removes nothing.
    let mut batch = links(ws, &[("d1", "c4")]);
    batch.link_sets = vec![set("d1", &["c1", "c4"]), set("d2", &[]), set("d9", &["x"])];
    let next = checkpoint("links", "2");
    assert_eq!(
        h.store.write_batch(ws, HS, &batch, &next).await.unwrap(),
        counts(1, 0, 0, 3)
    );
    assert_eq!(stored(ws, HS).await, ["d1:c1", "d1:c4", "d3:c1"]);
    assert_eq!(
        stored(ws, sf).await,
        ["d1:c9"],
        "another source is untouched"
    );
    assert_eq!(
        stored(other_ws, HS).await.len(),
        5,
        "another workspace is untouched"
    );
    let row = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(
        row.checkpoint().unwrap(),
        next,
        "committed with its checkpoint"
    );

    // Idempotent; of two sets of one deal in a batch, the last one holds.
    assert_eq!(
        h.store.write_batch(ws, HS, &batch, &next).await.unwrap(),
        counts(0, 0, 1, 0)
    );
    let twice = RecordBatch {
        link_sets: vec![set("d3", &[]), set("d3", &["c1"])],
        ..Default::default()
    };
    assert_eq!(
        h.store.write_batch(ws, HS, &twice, &next).await.unwrap(),
        counts(0, 0, 0, 0)
    );
    assert_eq!(stored(ws, HS).await, ["d1:c1", "d1:c4", "d3:c1"]);

    // A NUL character refuses the whole batch: nothing changes.
    for bad in [set("d1", &["c\0"]), set("d\0", &[])] {
        let batch = RecordBatch {
            records: vec![link(ws, "d7", "c1", None).into()],
            link_sets: vec![set("d3", &[]), bad],
            ..Default::default()
        };
        let err = h
            .store
            .write_batch(ws, HS, &batch, &checkpoint("links", "3"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }
    assert_eq!(stored(ws, HS).await, ["d1:c1", "d1:c4", "d3:c1"]);
    let row = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(row.checkpoint().unwrap(), next);

    // A backfill-sized batch (one statement for all its sets), with ids that JSON escapes.
    let contact = |d: usize, c: usize| format!("c\"{c}\n\u{e9}/{d}");
    let many: Vec<Record> = (0..300)
        .flat_map(|d| (0..4).map(move |c| link(ws, &format!("m{d}"), &contact(d, c), None).into()))
        .collect();
    h.store
        .write_batch(ws, HS, &RecordBatch::new(many), &next)
        .await
        .unwrap();
    let sets = RecordBatch {
        link_sets: (0..300)
            .map(|d| DealContactSet {
                deal_source_id: format!("m{d}"),
                contact_source_ids: (1..4).map(|c| contact(d, c)).collect(),
            })
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        h.store.write_batch(ws, HS, &sets, &next).await.unwrap(),
        counts(0, 0, 0, 300)
    );
    assert_eq!(
        h.store
            .count_records(ws, RecordKind::DealContact, Some(HS))
            .await
            .unwrap(),
        3 + 300 * 3
    );
    let kept = format!("m7:{}", contact(7, 2));
    let gone = format!("m7:{}", contact(7, 0));
    for (id, present) in [(kept, true), (gone, false)] {
        let found = h
            .store
            .get_record(ws, RecordKind::DealContact, HS, &id)
            .await;
        assert_eq!(found.unwrap().is_some(), present, "{id}");
    }
}

pub async fn list_records_pages_and_filters(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    connect(&h, ws, ConnectorKind::Salesforce).await;
    let records: Vec<Record> = (0..25)
        .map(|i| deal(ws, &format!("d{i:02}"), 1).into())
        .collect();
    h.store
        .write_batch(
            ws,
            HS,
            &RecordBatch::new(records),
            &checkpoint("deals", "1"),
        )
        .await
        .unwrap();
    let mut sf = pandora_sync::model::Deal::new(ws, ConnectorKind::Salesforce, "006x");
    sf.meta.source_updated_at = Some(t(1));
    h.store
        .write_batch(
            ws,
            ConnectorKind::Salesforce,
            &RecordBatch::new(vec![sf.into()]),
            &checkpoint("deals", "1"),
        )
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut query = RecordQuery::new(10).source(HS);
    loop {
        let page = h
            .store
            .list_records(ws, RecordKind::Deal, &query)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        let last = page.last().unwrap().meta().unwrap().id;
        seen.extend(page.into_iter().map(|r| r.meta().unwrap().id));
        query = query.after(last);
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in id order");
    sorted.dedup();
    assert_eq!(sorted.len(), 25);

    assert_eq!(
        h.store
            .count_records(ws, RecordKind::Deal, None)
            .await
            .unwrap(),
        26
    );
    assert_eq!(
        h.store
            .count_records(ws, RecordKind::Deal, Some(ConnectorKind::Salesforce))
            .await
            .unwrap(),
        1
    );
    let all = h
        .store
        .list_records(ws, RecordKind::Deal, &RecordQuery::new(100))
        .await
        .unwrap();
    assert_eq!(all.len(), 26);
    let after_only = h
        .store
        .list_records(
            ws,
            RecordKind::Deal,
            &RecordQuery::new(100).after(all[9].meta().unwrap().id),
        )
        .await
        .unwrap();
    assert_eq!(after_only.len(), 16);
}

pub async fn connection_lifecycle(h: Harness) {
    let ws = Uuid::new_v4();
    let created = h
        .store
        .create_connection(
            NewConnection::new(ws, ConnectorKind::Gong, "basic")
                .with_config(json!({"tracked_users": ["u1"]})),
        )
        .await
        .unwrap();
    assert_eq!(created.status, ConnectionStatus::Pending);
    assert_eq!(created.config, json!({"tracked_users": ["u1"]}));
    assert_eq!(created.created_at, h.clock.now());
    assert!(created.credentials.is_none() && created.sync_cursor.is_none());
    connect(&h, ws, HS).await;

    let dup = h
        .store
        .create_connection(NewConnection::new(ws, HS, "oauth2"))
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::Conflict { .. }), "{dup:?}");
    let bad_config = NewConnection::new(Uuid::new_v4(), HS, "x").with_config(json!([1]));
    assert!(matches!(
        h.store.create_connection(bad_config).await,
        Err(Error::Config(_))
    ));

    let listed = h.store.list_connections(ws).await.unwrap();
    let names: Vec<ConnectorKind> = listed.iter().map(|c| c.connector).collect();
    assert_eq!(names, [ConnectorKind::Gong, HS]);

    h.clock.advance(chrono::Duration::seconds(90));
    h.store
        .set_connection_status(
            ws,
            HS,
            ConnectionStatus::Error,
            Some("HTTP 401: {\"access_token\": \"leaked\"}"),
        )
        .await
        .unwrap();
    h.store.set_last_sync_at(ws, HS, t(7)).await.unwrap();
    h.store
        .set_config(ws, HS, &json!({"rate_limit": {"max_requests": 190}}))
        .await
        .unwrap();
    let row = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(row.status, ConnectionStatus::Error);
    let message = row.error_message.unwrap();
    assert!(
        !message.contains("leaked"),
        "error messages are redacted: {message}"
    );
    assert_eq!(row.last_sync_at, Some(t(7)));
    assert_eq!(row.updated_at, h.clock.now());
    assert_eq!(row.config["rate_limit"]["max_requests"], 190);
    h.store
        .set_connection_status(ws, HS, ConnectionStatus::Synced, None)
        .await
        .unwrap();
    let row = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.error_message),
        (ConnectionStatus::Synced, None)
    );

    let ghost = Uuid::new_v4();
    for result in [
        h.store
            .set_connection_status(ghost, HS, ConnectionStatus::Syncing, None)
            .await,
        h.store.set_last_sync_at(ghost, HS, t(1)).await,
        h.store.set_sync_cursor(ghost, HS, None).await,
        h.store
            .merge_sync_cursor(ghost, HS, &serde_json::Map::new())
            .await,
    ] {
        assert!(
            matches!(result, Err(Error::Config(ref m)) if m.contains("no hubspot connection")),
            "{result:?}"
        );
    }

    let other = Uuid::new_v4();
    connect(&h, other, ConnectorKind::Monday).await;
    let workspaces = h.store.workspaces().await.unwrap();
    assert!(workspaces.contains(&ws) && workspaces.contains(&other));

    assert!(
        h.store
            .delete_connection(ws, ConnectorKind::Gong)
            .await
            .unwrap()
    );
    assert!(
        !h.store
            .delete_connection(ws, ConnectorKind::Gong)
            .await
            .unwrap()
    );
    assert!(
        h.store
            .get_connection(ws, ConnectorKind::Gong)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn credentials_are_sealed_and_bound_to_their_row(h: Harness) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let secret = "pat-na1-SUPERSECRET";
    let creds = Credentials::from_json(json!({"access_token": secret})).unwrap();
    let row = h
        .store
        .create_connection(NewConnection::new(a, HS, "api_key").with_credentials(creds.clone()))
        .await
        .unwrap();
    assert!(
        !format!("{row:?}").contains(secret),
        "Debug never shows secrets"
    );
    let raw = h.raw_credentials(a, HS).await.unwrap();
    assert!(raw.starts_with("v1:test-key:"), "{raw}");
    assert!(!raw.contains(secret) && !raw.contains("access_token"));

    let opened = h.store.credentials(&row).unwrap().unwrap();
    assert_eq!(opened.get("access_token").unwrap().expose_secret(), secret);

    // Without the key, or with the wrong key under the same id: a clear error.
    let no_key = h.store_with_keyring(None);
    assert!(matches!(no_key.credentials(&row), Err(Error::Config(_))));
    let err = no_key
        .create_connection(
            NewConnection::new(Uuid::new_v4(), HS, "x").with_credentials(creds.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let wrong = h.store_with_keyring(Some(Keyring::new("test-key", [7u8; 32]).unwrap()));
    let err = wrong.credentials(&row).unwrap_err().to_string();
    assert!(err.contains("could not be decrypted"), "{err}");
    assert!(!err.contains(secret));

    // Copied into another workspace's row, the ciphertext does not open.
    connect(&h, b, HS).await;
    h.set_raw_credentials(b, HS, &raw).await;
    let row_b = h.store.get_connection(b, HS).await.unwrap().unwrap();
    assert!(h.store.credentials(&row_b).is_err());

    // Replacing and removing credentials.
    let refreshed = Credentials::from_json(json!({"access_token": "new-token"})).unwrap();
    h.store
        .set_credentials(a, HS, Some(&refreshed))
        .await
        .unwrap();
    let row = h.store.get_connection(a, HS).await.unwrap().unwrap();
    assert_eq!(
        h.store
            .credentials(&row)
            .unwrap()
            .unwrap()
            .get("access_token")
            .unwrap()
            .expose_secret(),
        "new-token"
    );
    h.store.set_credentials(a, HS, None).await.unwrap();
    let row = h.store.get_connection(a, HS).await.unwrap().unwrap();
    assert!(h.store.credentials(&row).unwrap().is_none());
}

pub async fn credential_key_rotation(h: Harness) {
    let ws = Uuid::new_v4();
    let old = Keyring::new("k1", [1u8; 32]).unwrap();
    let old_store = h.store_with_keyring(Some(old.clone()));
    for connector in [HS, ConnectorKind::Gong] {
        old_store
            .create_connection(
                NewConnection::new(ws, connector, "api_key").with_credentials(
                    Credentials::from_json(json!({"api_key": connector.as_str()})).unwrap(),
                ),
            )
            .await
            .unwrap();
    }
    let rotated = Keyring::new("k2", [2u8; 32])
        .unwrap()
        .with_previous("k1", [1u8; 32])
        .unwrap();
    let new_store = h.store_with_keyring(Some(rotated));
    for row in new_store.list_connections(ws).await.unwrap() {
        let opened = new_store.credentials(&row).unwrap().unwrap();
        assert_eq!(
            opened.get("api_key").unwrap().expose_secret(),
            row.connector.as_str()
        );
    }
    assert_eq!(new_store.reencrypt_credentials(ws).await.unwrap(), 2);
    assert_eq!(
        new_store.reencrypt_credentials(ws).await.unwrap(),
        0,
        "idempotent"
    );
    assert!(
        h.raw_credentials(ws, HS)
            .await
            .unwrap()
            .starts_with("v1:k2:")
    );

    let only_new = h.store_with_keyring(Some(Keyring::new("k2", [2u8; 32]).unwrap()));
    let row = only_new.get_connection(ws, HS).await.unwrap().unwrap();
    assert!(only_new.credentials(&row).is_ok());
    let err = old_store.credentials(&row).unwrap_err().to_string();
    assert!(err.contains("\"k2\""), "an unknown key id is named: {err}");
}

pub async fn sync_log_lifecycle(h: Harness) {
    let ws = Uuid::new_v4();
    let created = h.store.create_sync(ws, Some(HS), None).await.unwrap();
    assert_eq!(created.status, SyncStatus::Pending);
    assert_eq!((created.connector, created.sync_type), (Some(HS), None));
    assert_eq!(created.started_at, h.clock.now());

    h.clock.advance(chrono::Duration::seconds(10));
    h.store
        .start_sync(ws, created.id, Some(SyncMode::Incremental))
        .await
        .unwrap();
    let running = h.store.get_sync(ws, created.id).await.unwrap().unwrap();
    assert_eq!(running.status, SyncStatus::Running);
    assert_eq!(running.sync_type, Some(SyncMode::Incremental));
    assert_eq!(running.started_at, h.clock.now());
    assert_eq!(h.store.active_syncs(ws).await.unwrap().len(), 1);
    let again = h.store.start_sync(ws, created.id, None).await.unwrap_err();
    assert!(
        matches!(again, Error::Conflict { running_id: Some(id), .. } if id == created.id),
        "{again:?}"
    );

    h.clock.advance(chrono::Duration::milliseconds(1500));
    let failures: Vec<RecordFailure> = (0..150)
        .map(|i| {
            RecordFailure::new(
                Some(format!("r{i}")),
                format!("bad record {i}: token=abc{i}"),
            )
        })
        .collect();
    let outcome = SyncOutcome {
        status: SyncStatus::CompletedWithErrors,
        records_synced: 4_850,
        errors: SyncErrors::new(&failures, 150),
        error_message: None,
    };
    h.store.finish_sync(ws, created.id, &outcome).await.unwrap();
    let done = h.store.get_sync(ws, created.id).await.unwrap().unwrap();
    assert_eq!(done.status, SyncStatus::CompletedWithErrors);
    assert_eq!(done.records_synced, 4_850);
    assert_eq!(done.duration_ms, Some(1500));
    assert_eq!(done.completed_at, Some(h.clock.now()));
    let errors = done.errors.unwrap();
    assert_eq!(errors.total, 150);
    assert_eq!(errors.failures.len(), 100);
    assert_eq!(errors.failures[0].record_id.as_deref(), Some("r0"));
    assert!(
        !errors.failures[5].message.contains("abc5"),
        "{}",
        errors.failures[5].message
    );
    assert!(h.store.active_syncs(ws).await.unwrap().is_empty());
    assert!(matches!(
        h.store.finish_sync(ws, created.id, &outcome).await,
        Err(Error::Conflict { .. })
    ));
    let unfinished = SyncOutcome {
        status: SyncStatus::Running,
        ..outcome.clone()
    };
    assert!(matches!(
        h.store.finish_sync(ws, created.id, &unfinished).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        h.store.start_sync(ws, Uuid::new_v4(), None).await,
        Err(Error::Config(_))
    ));

    // A run can fail before it starts.
    let never = h
        .store
        .create_sync(ws, None, Some(SyncMode::Initial))
        .await
        .unwrap();
    h.clock.advance(chrono::Duration::seconds(1));
    let failed = SyncOutcome {
        status: SyncStatus::Failed,
        records_synced: 0,
        errors: SyncErrors::default(),
        error_message: Some("Authorization: Bearer sk-live-123 rejected".into()),
    };
    h.store.finish_sync(ws, never.id, &failed).await.unwrap();
    let never = h.store.get_sync(ws, never.id).await.unwrap().unwrap();
    assert_eq!(never.status, SyncStatus::Failed);
    assert!(!never.error_message.unwrap().contains("sk-live-123"));

    // History: newest first, per connector, limited.
    for connector in [ConnectorKind::Gong, HS, ConnectorKind::Gong] {
        h.clock.advance(chrono::Duration::seconds(1));
        h.store
            .create_sync(ws, Some(connector), None)
            .await
            .unwrap();
    }
    let history = h.store.sync_history(ws, None, 100).await.unwrap();
    assert_eq!(history.len(), 5);
    assert!(
        history
            .windows(2)
            .all(|w| w[0].started_at >= w[1].started_at)
    );
    assert_eq!(history.last().unwrap().id, created.id);
    let gong = h
        .store
        .sync_history(ws, Some(ConnectorKind::Gong), 100)
        .await
        .unwrap();
    assert_eq!(gong.len(), 2);
    assert_eq!(h.store.sync_history(ws, None, 2).await.unwrap().len(), 2);
    assert_eq!(h.store.active_syncs(ws).await.unwrap().len(), 3);
}

pub async fn stale_syncs_are_failed(h: Harness) {
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    let old = h.store.create_sync(ws, Some(HS), None).await.unwrap();
    h.store.start_sync(ws, old.id, None).await.unwrap();
    let old_other = h.store.create_sync(other, Some(HS), None).await.unwrap();
    h.store.start_sync(other, old_other.id, None).await.unwrap();
    let pending = h
        .store
        .create_sync(ws, Some(ConnectorKind::Gong), None)
        .await
        .unwrap();

    h.clock.advance(chrono::Duration::minutes(30));
    let recent = h
        .store
        .create_sync(ws, Some(ConnectorKind::Fireflies), None)
        .await
        .unwrap();
    h.store.start_sync(ws, recent.id, None).await.unwrap();

    h.clock.advance(chrono::Duration::minutes(31));
    let cutoff = h.clock.now() - chrono::Duration::from_std(STALE_SYNC_AFTER).unwrap();
    let failed = h
        .store
        .fail_stale_syncs(Some(ws), cutoff, "stale: running for more than 1 hour")
        .await
        .unwrap();
    // The pending run created as long ago (its job never ran it) is stale too.
    let mut failed = failed;
    failed.sort();
    let mut want = vec![old.id, pending.id];
    want.sort();
    assert_eq!(failed, want);
    let old = h.store.get_sync(ws, old.id).await.unwrap().unwrap();
    assert_eq!(old.status, SyncStatus::Failed);
    assert_eq!(
        old.error_message.as_deref(),
        Some("stale: running for more than 1 hour")
    );
    assert_eq!(old.duration_ms, Some(61 * 60 * 1000));
    assert_eq!(
        h.store
            .get_sync(ws, recent.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        SyncStatus::Running
    );
    assert_eq!(
        h.store
            .get_sync(ws, pending.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        SyncStatus::Failed
    );
    assert_eq!(
        h.store
            .get_sync(other, old_other.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        SyncStatus::Running,
        "a workspace-scoped cleanup leaves other workspaces alone"
    );
    let everywhere = h
        .store
        .fail_stale_syncs(None, cutoff, "stale")
        .await
        .unwrap();
    assert_eq!(everywhere, [old_other.id]);
    assert!(
        h.store
            .fail_stale_syncs(None, cutoff, "stale")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn lock_excludes_a_second_holder(h: Harness) {
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    let lock = h
        .store
        .try_lock_workspace(ws)
        .await
        .unwrap()
        .expect("free lock");
    assert_eq!(lock.workspace_id(), ws);
    assert!(
        h.store.try_lock_workspace(ws).await.unwrap().is_none(),
        "held elsewhere"
    );
    let second_store = h.store_with_keyring(None);
    assert!(
        second_store.try_lock_workspace(ws).await.unwrap().is_none(),
        "held for every store"
    );
    let other_lock = h
        .store
        .try_lock_workspace(other)
        .await
        .unwrap()
        .expect("other workspace is free");
    lock.renew().await.unwrap();
    assert!(!lock.is_lost());

    lock.release().await.unwrap();
    let again = h
        .store
        .try_lock_workspace(ws)
        .await
        .unwrap()
        .expect("released");
    assert_ne!(again.holder(), "");
    again.release().await.unwrap();
    other_lock.release().await.unwrap();
}

/// Polls `try_lock_workspace` until it succeeds (a released lock may take a moment to be
/// seen when it is released in the background).
async fn lock_eventually(h: &Harness, ws: Uuid) -> pandora_sync::store::WorkspaceLock {
    for _ in 0..200 {
        if let Some(lock) = h.store.try_lock_workspace(ws).await.unwrap() {
            return lock;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the workspace lock was never released");
}

pub async fn lock_is_released_on_drop(h: Harness) {
    let ws = Uuid::new_v4();
    let lock = h.store.try_lock_workspace(ws).await.unwrap().unwrap();
    drop(lock);
    let again = lock_eventually(&h, ws).await;
    assert!(h.store.try_lock_workspace(ws).await.unwrap().is_none());
    again.release().await.unwrap();
}

pub async fn lock_is_released_when_the_holder_dies(h: Harness) {
    let ws = Uuid::new_v4();
    let lock = h.store.try_lock_workspace(ws).await.unwrap().unwrap();
    let lost = lock.lost();
    h.kill_lock_holder(&lock).await;
    let successor = lock_eventually(&h, ws).await;

    // The dead holder finds out at its next check, and its token fires.
    let err = lock.renew().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(lock.is_lost() && lost.is_cancelled());
    // Dropping the dead guard must not release the successor's lock.
    drop(lock);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.store.try_lock_workspace(ws).await.unwrap().is_none());
    successor.renew().await.unwrap();
    successor.release().await.unwrap();
}

/// Batches large enough for a backend's bulk path (PostgreSQL loads a table's new rows with
/// `COPY` from 32 on): every kind and extreme values round-trip, and a batch mixing new,
/// newer, older and unchanged rows counts and stores them as small batches do.
pub async fn large_batches_round_trip_and_do_not_regress(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    const N: usize = 80;
    let id = |i: usize| format!("bulk-{i:03}");
    let mut first: Vec<Record> = Vec::new();
    for i in 0..N {
        first.push(account(ws, &id(i), 10).into());
        first.push(contact(ws, &id(i), 10).into());
        first.push(deal(ws, &id(i), 10).into());
        first.push(conversation(ws, &id(i), 10).into());
        first.push(task(ws, &id(i), 10).into());
        first.push(document(ws, &id(i), 10).into());
    }
    let mut d = deal(ws, "bulk-extreme", 10);
    d.name = Some("tab\there\nnew line, back\\slash, \"quotes\" 🚀 e\u{301}".into());
    d.amount = Some(f64::MIN);
    d.probability = Some(-0.0);
    d.days_open = Some(i64::MAX);
    d.days_to_close = Some(i64::MIN);
    d.close_date = Some(date(1, 1, 1));
    d.meta.source_created_at = Some(chrono::Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap());
    d.meta.custom_fields.insert(
        "numbers".into(),
        json!({"big": 1e308, "tiny": 5e-324, "text": "a\"b\\c\td"}),
    );
    first.push(d.into());
    let mut a = account(ws, "bulk-extreme", 10);
    a.annual_revenue = Some(f64::MAX);
    a.employee_count = Some(i64::MIN);
    first.push(a.into());
    let c = h
        .store
        .write_batch(
            ws,
            HS,
            &RecordBatch::new(first.clone()),
            &checkpoint("bulk", "1"),
        )
        .await
        .unwrap();
    assert_eq!(c, counts(6 * 80 + 2, 0, 0, 0));
    for r in &first {
        let back = read(&h, ws, r.kind(), &r.source_id()).await.unwrap();
        assert_eq!(&unsynced(back), r, "{} did not round-trip", r.source_id());
    }

    // Newer, older, unchanged and new rows in one batch.
    let mut second: Vec<Record> = Vec::new();
    for i in 0..30 {
        second.push(deal(ws, &id(i), 11).into());
    }
    for i in 30..50 {
        second.push(deal(ws, &id(i), 9).into());
    }
    for i in 50..N {
        second.push(deal(ws, &id(i), 10).into());
    }
    for i in 0..40 {
        second.push(deal(ws, &format!("new-{i:03}"), 10).into());
    }
    let c = h
        .store
        .write_batch(ws, HS, &RecordBatch::new(second), &checkpoint("bulk", "2"))
        .await
        .unwrap();
    assert_eq!(c, counts(40, 30, 50, 0));
    assert_eq!(
        read_deal(&h, ws, &id(0)).await.map(|d| unsynced(d.into())),
        Some(deal(ws, &id(0), 11).into())
    );
    assert_eq!(
        read_deal(&h, ws, &id(30)).await.map(|d| unsynced(d.into())),
        Some(deal(ws, &id(30), 10).into())
    );
    assert_eq!(
        read_deal(&h, ws, &id(79)).await.map(|d| unsynced(d.into())),
        Some(deal(ws, &id(79), 10).into())
    );
    assert_eq!(
        read_deal(&h, ws, "new-039")
            .await
            .map(|d| unsynced(d.into())),
        Some(deal(ws, "new-039", 10).into())
    );
    assert_eq!(
        h.store
            .count_records(ws, RecordKind::Deal, Some(HS))
            .await
            .unwrap(),
        u64::try_from(N + 1 + 40).unwrap()
    );
    let conn = h.store.get_connection(ws, HS).await.unwrap().unwrap();
    assert_eq!(conn.checkpoint().unwrap(), checkpoint("bulk", "2"));
}

/// Bulk batches whose ids lie past, before, between and at the edge of the stored ones
/// (PostgreSQL skips its per-id probe when one range probe of the key finds no stored id
/// between the batch's smallest and largest): every batch counts its new and changed rows
/// exactly, and another workspace's rows never count as stored.
pub async fn key_ranges_tell_new_batches_from_mixed_ones(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h, ws, HS).await;
    let batch = |ids: Vec<String>, day: i64| -> RecordBatch {
        RecordBatch::new(ids.iter().map(|id| deal(ws, id, day).into()).collect())
    };
    let ids = |r: std::ops::Range<usize>, step: usize| -> Vec<String> {
        r.step_by(step).map(|i| format!("r-{i:03}")).collect()
    };
    let write = |b: RecordBatch| write_all(&h, ws, b);
    // Even ids into an empty table, then a batch past them.
    assert_eq!(write(batch(ids(0..80, 2), 10)).await, counts(40, 0, 0, 0));
    assert_eq!(
        write(batch(ids(100..140, 1), 10)).await,
        counts(40, 0, 0, 0)
    );
    // New ids between stored ones.
    assert_eq!(write(batch(ids(1..80, 2), 10)).await, counts(40, 0, 0, 0));
    // New ids past the stored ones, with the last stored one (newer) at the edge.
    let mut edge = ids(139..180, 1);
    edge.sort();
    assert_eq!(write(batch(edge, 11)).await, counts(40, 1, 0, 0));
    // Before every stored id.
    let before: Vec<String> = (0..40).map(|i| format!("q-{i:03}")).collect();
    assert_eq!(write(batch(before, 10)).await, counts(40, 0, 0, 0));
    // The same batch again: nothing new.
    assert_eq!(
        write(batch(ids(100..140, 1), 10)).await,
        counts(0, 0, 40, 0)
    );
    assert_eq!(
        h.store
            .count_records(ws, RecordKind::Deal, Some(HS))
            .await
            .unwrap(),
        200
    );
    // Links the same way (PostgreSQL: by the range of their deals): past, between, again.
    let links = |deals: std::ops::Range<usize>, role: Option<&str>| -> RecordBatch {
        RecordBatch::new(
            deals
                .flat_map(|d| {
                    let deal = format!("d-{:03}", d * 2);
                    [
                        link(ws, &deal, "c-1", role).into(),
                        link(ws, &deal, "c-2", None).into(),
                    ]
                })
                .collect(),
        )
    };
    assert_eq!(
        write(links(0..20, Some("buyer"))).await,
        counts(40, 0, 0, 0)
    );
    assert_eq!(write(links(20..40, None)).await, counts(40, 0, 0, 0));
    assert_eq!(
        write(links(0..20, Some("champion"))).await,
        counts(0, 20, 20, 0)
    );
    let between = RecordBatch::new(
        (0..20)
            .map(|d| link(ws, &format!("d-{:03}", d * 2 + 1), "c-1", None).into())
            .collect(),
    );
    assert_eq!(write(between).await, counts(20, 0, 0, 0));
    let Some(Record::DealContact(l)) = read(&h, ws, RecordKind::DealContact, "d-000:c-1").await
    else {
        panic!("link missing");
    };
    assert_eq!(l.role.as_deref(), Some("champion"));
    let Some(Record::DealContact(l)) = read(&h, ws, RecordKind::DealContact, "d-040:c-1").await
    else {
        panic!("link missing");
    };
    assert_eq!(l.role, None);
    assert_eq!(
        h.store
            .count_records(ws, RecordKind::DealContact, Some(HS))
            .await
            .unwrap(),
        100
    );

    // Another workspace with the same ids: all new there.
    let other = Uuid::new_v4();
    connect(&h, other, HS).await;
    let theirs = RecordBatch::new(
        ids(100..140, 1)
            .iter()
            .map(|id| deal(other, id, 10).into())
            .collect(),
    );
    let c = h
        .store
        .write_batch(other, HS, &theirs, &checkpoint("ranges", "x"))
        .await
        .unwrap();
    assert_eq!(c, counts(40, 0, 0, 0));
}

/// Reconciliation's count: live rows of one workspace, source and kind, and those updated
/// at or after a time, in one call; archived rows, other kinds, sources and workspaces are
/// not counted; links are all live and none counts as updated.
pub async fn live_counts_cover_one_stream(h: Harness) {
    let (ws, other_ws) = (Uuid::new_v4(), Uuid::new_v4());
    connect(&h, ws, HS).await;
    connect(&h, other_ws, HS).await;
    let batch = RecordBatch {
        records: vec![
            contact(ws, "1", 10).into(),
            contact(ws, "2", 20).into(),
            contact(ws, "3", 30).into(),
            contact(ws, "4", 30).into(),
            deal(ws, "5", 40).into(),
            link(ws, "5", "1", None).into(),
            link(ws, "5", "2", None).into(),
        ],
        deletions: vec![Deletion {
            kind: RecordKind::Contact,
            source_id: "4".into(),
            deleted_at: t(40),
        }],
        ..Default::default()
    };
    write_all(&h, ws, batch).await;
    write_one(&h, other_ws, contact(other_ws, "1", 50)).await;

    let count = |kind, since| h.store.count_live_records(ws, kind, HS, since);
    let c = count(RecordKind::Contact, t(20)).await.unwrap();
    assert_eq!((c.live, c.updated_since), (3, 2));
    let c = count(RecordKind::Contact, t(31)).await.unwrap();
    assert_eq!((c.live, c.updated_since), (3, 0));
    let c = count(RecordKind::Deal, t(0)).await.unwrap();
    assert_eq!((c.live, c.updated_since), (1, 1));
    let c = count(RecordKind::DealContact, t(0)).await.unwrap();
    assert_eq!((c.live, c.updated_since), (2, 0));
    let c = h
        .store
        .count_live_records(ws, RecordKind::Contact, ConnectorKind::Salesforce, t(0))
        .await
        .unwrap();
    assert_eq!((c.live, c.updated_since), (0, 0));
}
