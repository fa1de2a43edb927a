//! Throughput of the sanitizers on a HubSpot-like property map.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use pandora_sync::sanitize;
use serde_json::json;
use std::hint::black_box;

fn props() -> serde_json::Value {
    json!({
        "dealname": "Acme renewal 2024", "amount": "125000.50", "closedate": "2024-06-30T00:00:00.000Z",
        "createdate": "1704448800000", "hs_lastmodifieddate": "2024-05-01T09:30:00.000+0000",
        "hs_is_closed": "false", "hs_is_closed_won": "", "hs_deal_stage_probability": "0.4",
        "pipeline": "default", "dealstage": "contractsent", "hubspot_owner_id": "123456",
        "notes": "call\u{0}back", "empty": "", "custom_multi": ["a", "", "b"]
    })
}

fn bench(c: &mut Criterion) {
    let p = props();
    c.bench_function("typed fields of one deal", |b| {
        b.iter(|| {
            let p = black_box(&p);
            (
                sanitize::text(p.get("dealname")),
                sanitize::number(p.get("amount")),
                sanitize::date(p.get("closedate")),
                sanitize::datetime(p.get("createdate")),
                sanitize::datetime(p.get("hs_lastmodifieddate")),
                sanitize::boolean(p.get("hs_is_closed")),
                sanitize::number(p.get("hs_deal_stage_probability")),
            )
        })
    });
    let map = p.as_object().unwrap().clone();
    c.bench_function("sanitize_properties (14 keys)", |b| {
        b.iter(|| sanitize::sanitize_properties(black_box(map.clone())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
