//! The hooks suite: one function per behaviour, run on every backend by `main.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, NaiveTime};
use pandora_sync::connector::{SyncReport, WriteCounts};
use pandora_sync::hooks::{
    BuiltinHooksConfig, ComputedFields, EntityLinker, InternalFilter, PostSyncHook, SyncCompleted,
    apply_computed_fields,
};
use pandora_sync::model::{Account, Conversation, Deal};
use pandora_sync::orchestrator::ConnectorResult;
use pandora_sync::store::{ConnectionStatus, InternalCounts, LinkCounts, SyncStatus};
use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Error, Orchestrator, Record, RecordBatch, RecordSink, Result,
    SyncCapable, SyncContext, SyncMode, SyncOptions, SyncStore,
};
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::*;
use crate::harness::Harness;

/// (account, deal) a conversation is linked to, by fixture source ids.
async fn links(
    store: &dyn SyncStore,
    ws: Uuid,
    conversation: &str,
) -> (Option<Uuid>, Option<Uuid>) {
    let c = conv(store, ws, conversation).await;
    (c.linked_account_id, c.linked_deal_id)
}

fn flags(c: &Conversation) -> Vec<(Option<&str>, bool)> {
    c.participants
        .iter()
        .map(|p| (p.email.as_deref(), p.is_internal))
        .collect()
}

fn event(ws: Uuid, connectors: &[ConnectorKind]) -> SyncCompleted {
    SyncCompleted {
        workspace_id: ws,
        results: connectors
            .iter()
            .map(|&connector| ConnectorResult {
                connector,
                sync_id: Uuid::new_v4(),
                status: SyncStatus::Completed,
                mode: SyncMode::Incremental,
                counts: WriteCounts::default(),
                records_by_table: BTreeMap::new(),
                errors: Default::default(),
                error: None,
                requests: 0,
                retries: 0,
                backfilled: false,
                rate_limited: false,
                retry_after_ms: None,
                duration_ms: 0,
            })
            .collect(),
    }
}

pub async fn linker_links_by_contact_then_domain_then_deal(h: Harness) {
    let store = h.store.as_ref();
    let ws = Uuid::new_v4();
    seed(store, ws).await;

    let counts = store.link_conversations(ws).await.unwrap();
    assert_eq!(
        counts,
        LinkCounts {
            conversations: 14,
            linked_accounts: 8,
            linked_deals: 7,
            changed: 9,
        }
    );

    let hs = |sid: &str| Some(id(ws, HS, sid));
    let sf = |sid: &str| Some(id(ws, SF, sid));
    let expected: &[(&str, Option<Uuid>, Option<Uuid>)] = &[
        // Contact (case and spaces ignored) → Acme; its open deal closing last.
        ("v1", hs("a1"), hs("d2")),
        // The contact says Globex although the domain says Acme: the contact wins; Globex
        // has only closed deals: the latest closed one.
        ("v2", hs("a2"), hs("d6")),
        // A contact on a public mail domain.
        ("v3", hs("a2"), hs("d6")),
        // Two accounts with the domain (one upper-case): the lowest source id; no deals.
        ("v4", hs("a0"), None),
        // Only internal participants: all of them count, and nothing matches.
        ("v5", None, None),
        // Only the external participant counts (the internal one would match Umbrella).
        ("v6", None, None),
        // No participants.
        ("v7", None, None),
        // By domain (the matching contact is archived) → the Salesforce account; its open
        // deal with a close date beats the one without.
        ("v8", sf("s1"), sf("sd2")),
        // A stale link to an archived account is cleared.
        ("v9", None, None),
        // Archived conversations are not touched.
        ("v10", None, None),
        // A participant without email is ignored; "www." and case of the account domain too.
        ("v11", hs("a2"), hs("d6")),
        // The contact's account is archived: falls back to the domain.
        ("v12", hs("a1"), hs("d2")),
        // Acme matches two participants, Hooli one: Acme.
        ("v13", hs("a1"), hs("d2")),
        ("v14", None, None),
        ("v15", None, None),
    ];
    for (c, account, deal) in expected {
        assert_eq!(
            links(store, ws, c).await,
            (*account, *deal),
            "links of conversation {c}"
        );
    }
}

pub async fn internal_filter_marks_conversations_and_participants(h: Harness) {
    let store = h.store.as_ref();
    let ws = Uuid::new_v4();
    seed(store, ws).await;
    let before_v1 = conv(store, ws, "v1").await;

    // An empty list changes nothing.
    let none = store.mark_internal_conversations(ws, &[]).await.unwrap();
    assert_eq!(none.changed, 0);
    assert_eq!(none.internal, 0);

    let domains = vec![" @Pandora.IO".to_owned()];
    let counts = store
        .mark_internal_conversations(ws, &domains)
        .await
        .unwrap();
    assert_eq!(
        counts,
        InternalCounts {
            conversations: 13,
            internal: 2,
            changed: 13,
        }
    );

    let expected: &[(&str, Option<bool>)] = &[
        ("v1", Some(false)),
        ("v2", Some(false)),
        ("v3", Some(false)),
        ("v4", Some(false)),
        ("v5", Some(true)),
        ("v6", Some(false)),
        ("v7", Some(true)), // no participants: the connector's value stays
        ("v8", Some(false)),
        ("v9", Some(false)),
        ("v10", None),        // archived: untouched
        ("v11", Some(false)), // a participant without email is not known to be internal
        ("v12", Some(false)),
        ("v13", Some(false)),
        ("v14", Some(true)),  // domain case-insensitive
        ("v15", Some(false)), // gmail.com is not internal
    ];
    for (c, internal) in expected {
        assert_eq!(
            conv(store, ws, c).await.is_internal,
            *internal,
            "is_internal of {c}"
        );
    }

    // One owner per column: the participants' flags stay the connector's (where they
    // disagree with the domains too), names and order with them; only is_internal is set.
    let v6 = conv(store, ws, "v6").await;
    assert_eq!(
        flags(&v6),
        [
            (Some("ops@umbrella.com"), true),
            (Some("y@unknown.org"), false)
        ]
    );
    let v14 = conv(store, ws, "v14").await;
    assert_eq!(
        flags(&v14),
        [
            (Some("Boss@PANDORA.io"), false),
            (Some("cto@pandora.io"), true)
        ]
    );
    assert_eq!(v14.participants[0].name.as_deref(), Some("Boss"));
    let v11 = conv(store, ws, "v11").await;
    assert_eq!(flags(&v11), [(None, false), (Some("q@globex.com"), false)]);
    assert_eq!(v11.participants[0].name.as_deref(), Some("Dial-in"));
    let v15 = conv(store, ws, "v15").await;
    assert_eq!(
        flags(&v15),
        [
            (Some("founder@gmail.com"), true),
            (Some("me@pandora.io"), true)
        ]
    );
    let v1 = conv(store, ws, "v1").await;
    assert_eq!(v1.participants, before_v1.participants);
    assert_eq!(v1.meta.synced_at, before_v1.meta.synced_at);

    // A conversation that became internal by a list change goes back to external.
    let counts = store
        .mark_internal_conversations(ws, &["unrelated.example".to_owned()])
        .await
        .unwrap();
    assert_eq!(counts.internal, 0);
    assert_eq!(conv(store, ws, "v5").await.is_internal, Some(false));
    assert_eq!(conv(store, ws, "v7").await.is_internal, Some(true));
}

pub async fn internal_domains_default_to_configured_and_flagged_ones(h: Harness) {
    let store = h.store.as_ref();
    let ws = Uuid::new_v4();
    seed(store, ws).await;
    assert_eq!(
        store.flagged_internal_domains(ws).await.unwrap(),
        ["gmail.com", "pandora.io", "umbrella.com"]
    );
    store
        .set_config(
            ws,
            GONG,
            &json!({"internal_domains": ["Subsidiary.example", "not a domain", 7]}),
        )
        .await
        .unwrap();
    let derived = InternalFilter::new()
        .internal_domains(store, ws)
        .await
        .unwrap();
    // gmail.com is a public mail provider: never derived.
    assert_eq!(
        derived,
        ["pandora.io", "subsidiary.example", "umbrella.com"]
    );
    let fixed = InternalFilter::with_domains(["Example.com"])
        .internal_domains(store, ws)
        .await
        .unwrap();
    assert_eq!(fixed, ["example.com"]);

    // Through the hook, with derived domains: umbrella.com is internal by the connector's
    // flag, so v6's external participant (unknown.org) still keeps it external.
    InternalFilter::new()
        .after_sync(store, &event(ws, &[GONG]))
        .await
        .unwrap();
    assert_eq!(conv(store, ws, "v5").await.is_internal, Some(true));
    assert_eq!(conv(store, ws, "v6").await.is_internal, Some(false));
    let v8 = conv(store, ws, "v8").await;
    assert_eq!(
        v8.is_internal,
        Some(true),
        "umbrella.com was derived internal"
    );
    // Another workspace derives nothing and changes nothing.
    let other = Uuid::new_v4();
    seed_other(store, other).await;
    let before = snapshot(store, other).await;
    assert_eq!(
        InternalFilter::new()
            .internal_domains(store, Uuid::new_v4())
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    InternalFilter::new()
        .after_sync(store, &event(Uuid::new_v4(), &[GONG]))
        .await
        .unwrap();
    assert_eq!(snapshot(store, other).await, before);
}

pub async fn computed_fields_match_apply_computed_fields(h: Harness) {
    let store = h.store.as_ref();
    let ws = Uuid::new_v4();
    seed(store, ws).await;

    let counts = store.refresh_deal_fields(ws, today()).await.unwrap();
    assert_eq!(counts.deals, 8, "live deals of both CRM sources");
    assert_eq!(counts.changed, 8);

    let now = today()
        .and_time(NaiveTime::from_hms_opt(15, 0, 0).unwrap())
        .and_utc();
    let all: Vec<(ConnectorKind, String)> = hubspot_deals()
        .iter()
        .map(|d| (HS, d.id.to_owned()))
        .chain(salesforce_deals().iter().map(|d| (SF, d.id.to_owned())))
        .collect();
    for (source, sid) in &all {
        let stored = get_deal(store, ws, *source, sid).await;
        if sid == "d4" {
            // Archived: not refreshed.
            assert_eq!((stored.days_open, stored.days_to_close), (None, None));
            continue;
        }
        let mut expected = Record::Deal(stored.clone());
        apply_computed_fields(&mut expected, now);
        let Record::Deal(expected) = expected else {
            unreachable!()
        };
        assert_eq!(
            (stored.days_open, stored.days_to_close),
            (expected.days_open, expected.days_to_close),
            "computed fields of {source} deal {sid}"
        );
    }
    // A few by hand.
    let days = |d: Deal| (d.days_open, d.days_to_close);
    assert_eq!(
        days(get_deal(store, ws, HS, "d1").await),
        (Some(9), Some(21))
    );
    assert_eq!(
        days(get_deal(store, ws, HS, "d5").await),
        (Some(60), Some(-101))
    );
    assert_eq!(
        days(get_deal(store, ws, HS, "d6").await),
        (Some(153), Some(-40))
    );
    assert_eq!(days(get_deal(store, ws, HS, "d7").await), (None, Some(91)));
    assert_eq!(days(get_deal(store, ws, SF, "sd1").await), (Some(0), None));

    // The next day: open deals age, every close date comes a day closer.
    let next = store
        .refresh_deal_fields(ws, today() + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        next.changed, 7,
        "every deal with a close date changes; sd1 (created after today, no close date) does not"
    );
    assert_eq!(days(get_deal(store, ws, SF, "sd1").await), (Some(0), None));
    assert_eq!(
        days(get_deal(store, ws, HS, "d1").await),
        (Some(10), Some(20))
    );
    assert_eq!(
        days(get_deal(store, ws, HS, "d5").await),
        (Some(60), Some(-102))
    );

    // The hook takes "today" from its clock.
    h.clock.set(now);
    ComputedFields::new()
        .with_clock(Arc::new(h.clock.clone()))
        .after_sync(store, &event(ws, &[]))
        .await
        .unwrap();
    assert_eq!(
        days(get_deal(store, ws, HS, "d1").await),
        (Some(9), Some(21))
    );
}

pub async fn hooks_are_idempotent_and_leave_other_workspaces_alone(h: Harness) {
    let store = h.store.as_ref();
    let ws = Uuid::new_v4();
    let other = Uuid::new_v4();
    seed(store, ws).await;
    seed_other(store, other).await;
    let other_before = snapshot(store, other).await;
    let domains = vec!["pandora.io".to_owned()];

    let first = (
        store
            .mark_internal_conversations(ws, &domains)
            .await
            .unwrap(),
        store.link_conversations(ws).await.unwrap(),
        store.refresh_deal_fields(ws, today()).await.unwrap(),
    );
    assert!(first.0.changed > 0 && first.1.changed > 0 && first.2.changed > 0);
    let after_first = snapshot(store, ws).await;

    let second = (
        store
            .mark_internal_conversations(ws, &domains)
            .await
            .unwrap(),
        store.link_conversations(ws).await.unwrap(),
        store.refresh_deal_fields(ws, today()).await.unwrap(),
    );
    assert_eq!(second.0.changed, 0, "internal filter rerun");
    assert_eq!(second.1.changed, 0, "linker rerun");
    assert_eq!(second.2.changed, 0, "computed fields rerun");
    assert_eq!(
        (second.0.internal, second.1.linked_accounts),
        (first.0.internal, first.1.linked_accounts)
    );
    assert_eq!(
        snapshot(store, ws).await,
        after_first,
        "a rerun changes no row"
    );

    // The same through the hooks.
    let hooks = pandora_sync::hooks::builtin_hooks(&BuiltinHooksConfig {
        internal_domains: Some(domains.clone()),
        clock: Arc::new(h.clock.clone()),
        ..BuiltinHooksConfig::default()
    });
    let ev = event(ws, &[HS, GONG]);
    for hook in &hooks {
        hook.after_sync(store, &ev).await.unwrap();
    }
    assert_eq!(
        snapshot(store, ws).await,
        after_first,
        "the hooks rerun change nothing"
    );

    // v6's umbrella participant stays internal as its connector flagged it (the internal
    // filter no longer rewrites participants' flags), so the linker counts only the
    // external unknown.org participant, which matches nothing.
    assert_eq!(links(store, ws, "v6").await, (None, None));

    assert_eq!(
        snapshot(store, other).await,
        other_before,
        "the other workspace is untouched"
    );
}

pub async fn builtin_hooks_skip_when_nothing_relevant_synced(h: Harness) {
    let store = h.store.as_ref();
    let ws = Uuid::new_v4();
    seed(store, ws).await;
    let before = snapshot(store, ws).await;
    let monday = event(ws, &[ConnectorKind::Monday]);
    EntityLinker::new()
        .after_sync(store, &monday)
        .await
        .unwrap();
    InternalFilter::with_domains(["pandora.io"])
        .after_sync(store, &monday)
        .await
        .unwrap();
    assert_eq!(snapshot(store, ws).await, before);

    // A CRM sync triggers the linker (not the internal filter).
    let hubspot = event(ws, &[HS]);
    EntityLinker::new()
        .after_sync(store, &hubspot)
        .await
        .unwrap();
    InternalFilter::with_domains(["pandora.io"])
        .after_sync(store, &hubspot)
        .await
        .unwrap();
    assert_eq!(links(store, ws, "v1").await.0, Some(id(ws, HS, "a1")));
    assert_eq!(conv(store, ws, "v5").await.is_internal, None);
}

// ---------------------------------------------------------------------------------------
// Orchestrator: built-ins plus host hooks, one of which fails.
// ---------------------------------------------------------------------------------------

/// A CRM that serves one account with one open deal.
struct FakeCrm;

/// A call recorder that serves one call with an internal and an external participant.
struct FakeCalls;

async fn serve(
    ctx: &SyncContext,
    sink: &mut dyn RecordSink,
    records: Vec<Record>,
) -> Result<SyncReport> {
    let mut checkpoint = ctx.previous().clone();
    let stream = checkpoint.stream_mut("all");
    stream.observe_records(&records);
    stream.finish_pass(ctx.watermark_cap());
    let fetched = records.len() as u64;
    sink.write(RecordBatch::new(records), &checkpoint).await?;
    let mut report = SyncReport::default();
    report.records_fetched = fetched;
    Ok(report)
}

#[async_trait]
impl SyncCapable for FakeCrm {
    fn kind(&self) -> ConnectorKind {
        HS
    }

    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        let ws = ctx.workspace_id();
        let mut acme = Account::new(ws, HS, "acme");
        acme.domain = Some("acme.com".into());
        acme.meta.source_updated_at = Some(at(2024, 6, 2, 10, 0));
        let mut deal = deal(
            ws,
            HS,
            &DealSpec {
                id: "deal-1",
                account: "acme",
                closed: Some(false),
                close: Some(date(2024, 7, 1)),
                created: Some(at(2024, 6, 1, 9, 0)),
            },
        );
        deal.meta.source_updated_at = Some(at(2024, 6, 2, 10, 0));
        serve(ctx, sink, vec![acme.into(), deal.into()]).await
    }

    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.initial_sync(ctx, sink).await
    }
}

#[async_trait]
impl SyncCapable for FakeCalls {
    fn kind(&self) -> ConnectorKind {
        GONG
    }

    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        let ws = ctx.workspace_id();
        let mut call = conversation(
            ws,
            "call-1",
            &[
                (Some("rep@pandora.io"), true),
                (Some("buyer@acme.com"), false),
            ],
        );
        call.meta.source_updated_at = Some(at(2024, 6, 2, 10, 0));
        let mut standup = conversation(
            ws,
            "call-2",
            &[
                (Some("rep@pandora.io"), true),
                (Some("lead@pandora.io"), false),
            ],
        );
        standup.meta.source_updated_at = Some(at(2024, 6, 2, 10, 0));
        serve(ctx, sink, vec![call.into(), standup.into()]).await
    }

    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.initial_sync(ctx, sink).await
    }
}

/// A host hook that always fails.
struct Failing;

#[async_trait]
impl PostSyncHook for Failing {
    fn name(&self) -> &str {
        "failing-skill"
    }

    async fn after_sync(&self, _store: &dyn SyncStore, _event: &SyncCompleted) -> Result<()> {
        Err(Error::config("the skill broke"))
    }
}

/// A host hook that records what it saw: the conversation's links, after the built-ins.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(Option<Uuid>, Option<bool>)>>,
}

#[async_trait]
impl PostSyncHook for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn after_sync(&self, store: &dyn SyncStore, event: &SyncCompleted) -> Result<()> {
        let c = conv(store, event.workspace_id, "call-1").await;
        self.seen
            .lock()
            .unwrap()
            .push((c.linked_account_id, c.is_internal));
        Ok(())
    }
}

pub async fn failing_host_hook_is_recorded_and_the_sync_completes(h: Harness) {
    let ws = Uuid::new_v4();
    let store = h.store.as_ref();
    connect(store, ws, HS, json!({})).await;
    connect(store, ws, GONG, json!({"internal_domains": ["pandora.io"]})).await;
    let registry = ConnectorRegistry::new()
        .register(HS, |_, _| Ok(Box::new(FakeCrm)))
        .register(GONG, |_, _| Ok(Box::new(FakeCalls)));
    let recorder = Arc::new(Recorder::default());
    let orchestrator = Orchestrator::new(Arc::clone(&h.store), registry)
        .with_builtin_hooks(BuiltinHooksConfig {
            clock: Arc::new(h.clock.clone()),
            ..BuiltinHooksConfig::default()
        })
        .with_hook(Arc::new(Failing))
        .with_hook(Arc::clone(&recorder) as Arc<dyn PostSyncHook>);

    let result = orchestrator
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(result.status(), SyncStatus::Completed);
    assert_eq!(result.connectors.len(), 2);
    let hooks: Vec<(&str, Option<&str>)> = result
        .hooks
        .iter()
        .map(|o| (o.name.as_str(), o.error.as_deref()))
        .collect();
    assert_eq!(
        hooks[..3],
        [
            (InternalFilter::NAME, None),
            (EntityLinker::NAME, None),
            (ComputedFields::NAME, None),
        ]
    );
    assert_eq!(hooks[3].0, "failing-skill");
    assert!(
        hooks[3].1.is_some_and(|e| e.contains("the skill broke")),
        "{hooks:?}"
    );
    assert_eq!(
        hooks[4],
        ("recorder", None),
        "hooks after a failing one still run"
    );

    // The built-ins did their work before the host hooks ran.
    let acme = id(ws, HS, "acme");
    assert_eq!(*recorder.seen.lock().unwrap(), [(Some(acme), Some(false))]);
    let call = conv(store, ws, "call-1").await;
    assert_eq!(call.linked_deal_id, Some(id(ws, HS, "deal-1")));
    let standup = conv(store, ws, "call-2").await;
    assert_eq!(standup.is_internal, Some(true));
    assert_eq!(
        flags(&standup),
        [
            (Some("rep@pandora.io"), true),
            (Some("lead@pandora.io"), false)
        ],
        "the participants' flags stay the connector's"
    );
    let deal = get_deal(store, ws, HS, "deal-1").await;
    assert_eq!((deal.days_open, deal.days_to_close), (Some(9), Some(21)));

    // The sync itself is recorded as completed.
    for r in &result.connectors {
        assert_eq!(r.status, SyncStatus::Completed, "{r:?}");
        let log = store.get_sync(ws, r.sync_id).await.unwrap().unwrap();
        assert_eq!(log.status, SyncStatus::Completed);
        let row = store
            .get_connection(ws, r.connector)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, ConnectionStatus::Synced);
    }

    // A second sync: the same outcome, nothing for the built-ins to change.
    let before = snapshot(store, ws).await;
    let again = orchestrator
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(again.status(), SyncStatus::Completed);
    assert_eq!(again.hooks.iter().filter(|o| o.error.is_some()).count(), 1);
    let after = snapshot(store, ws).await;
    let strip = |rs: Vec<Record>| -> Vec<Record> {
        rs.into_iter()
            .map(|mut r| {
                // synced_at moves when a sync rewrites a row; compare the content.
                match &mut r {
                    Record::Account(a) => a.meta.synced_at = None,
                    Record::Deal(d) => d.meta.synced_at = None,
                    Record::Conversation(c) => c.meta.synced_at = None,
                    Record::Contact(c) => c.meta.synced_at = None,
                    _ => {}
                }
                r
            })
            .collect()
    };
    assert_eq!(strip(after), strip(before));
}

/// The linker on a workspace of realistic size (the quickstart's: 1,000 accounts, 8,000
/// contacts, 1,000 deals, 1,500 conversations): every conversation gets the link the rules
/// give. Set-based statements must stay set-based here (a nested-loop plan over the
/// participants would take minutes).
pub async fn linker_links_a_full_size_workspace(h: Harness) {
    const ACCOUNTS: usize = 1_000;
    const CONTACTS: usize = 8_000;
    const CONVERSATIONS: usize = 1_500;
    let store = h.store.as_ref();
    let ws = Uuid::new_v4();
    let domain = |a: usize| format!("acme{a}.example");
    let accounts: Vec<Record> = (0..ACCOUNTS)
        .map(|a| account(ws, HS, &format!("a{a}"), &domain(a)))
        .collect();
    let contacts: Vec<Record> = (0..CONTACTS)
        .map(|c| {
            // Personal mailboxes: only the contact's account id links them.
            let email = format!("person{c}@mail{}.example", c % 50);
            contact(
                ws,
                HS,
                &format!("c{c}"),
                &email,
                &format!("a{}", c % ACCOUNTS),
            )
        })
        .collect();
    let deals: Vec<Record> = (0..ACCOUNTS)
        .map(|a| {
            let mut d = Deal::new(ws, HS, format!("d{a}"));
            d.meta.source_updated_at = Some(at(2024, 6, 1, 8, 0));
            d.account_source_id = Some(format!("a{a}"));
            d.is_closed = Some(false);
            d.close_date = Some(date(2024, 9, 30));
            d.into()
        })
        .collect();
    // Expected account of each conversation (None: only internal people, nobody matches).
    let expected = |n: usize| -> Option<usize> {
        if n % 10 == 9 {
            None
        } else if n.is_multiple_of(3) {
            Some(n % ACCOUNTS)
        } else {
            Some((n * 5 % CONTACTS) % ACCOUNTS)
        }
    };
    let conversations: Vec<Record> = (0..CONVERSATIONS)
        .map(|n| {
            let rep = "rep@ours.example".to_owned();
            let people: Vec<(String, bool)> = if n % 10 == 9 {
                vec![(rep, true), ("manager@ours.example".to_owned(), true)]
            } else if n.is_multiple_of(3) {
                vec![
                    (rep, true),
                    (format!("buyer{n}@{}", domain(n % ACCOUNTS)), false),
                    (format!("guest{n}@nowhere.example"), false),
                ]
            } else {
                vec![
                    (rep, true),
                    (format!("guest{n}@nowhere.example"), false),
                    (
                        format!(
                            "person{}@mail{}.example",
                            n * 5 % CONTACTS,
                            n * 5 % CONTACTS % 50
                        ),
                        false,
                    ),
                ]
            };
            let refs: Vec<(Option<&str>, bool)> =
                people.iter().map(|(e, i)| (Some(e.as_str()), *i)).collect();
            conversation(ws, &format!("call{n}"), &refs).into()
        })
        .collect();
    connect(store, ws, HS, json!({})).await;
    connect(store, ws, GONG, json!({})).await;
    for chunk in accounts.chunks(500) {
        write(store, ws, HS, chunk.to_vec()).await;
    }
    for chunk in contacts.chunks(500) {
        write(store, ws, HS, chunk.to_vec()).await;
    }
    for chunk in deals.chunks(500) {
        write(store, ws, HS, chunk.to_vec()).await;
    }
    for chunk in conversations.chunks(500) {
        write(store, ws, GONG, chunk.to_vec()).await;
    }

    let counts = store.link_conversations(ws).await.unwrap();
    let linked = (0..CONVERSATIONS)
        .filter(|&n| expected(n).is_some())
        .count() as u64;
    assert_eq!(
        counts,
        LinkCounts {
            conversations: CONVERSATIONS as u64,
            linked_accounts: linked,
            linked_deals: linked,
            changed: linked,
        }
    );
    for n in (0..CONVERSATIONS).step_by(37).chain([3, 9, 10]) {
        let want =
            expected(n).map(|a| (id(ws, HS, &format!("a{a}")), id(ws, HS, &format!("d{a}"))));
        let got = links(store, ws, &format!("call{n}")).await;
        assert_eq!(
            got,
            (want.map(|w| w.0), want.map(|w| w.1)),
            "conversation call{n}"
        );
    }
    // Running it again changes nothing.
    assert_eq!(store.link_conversations(ws).await.unwrap().changed, 0);
}
