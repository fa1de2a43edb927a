//! Storage throughput: upsert 100,000 deals in batches of 500 (`STORE_BENCH_BATCH` to
//! change it; one `write_batch`, i.e. one transaction with the checkpoint, per batch) into SQLite (a file in a temporary directory)
//! and PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`, in a
//! scratch schema), and on PostgreSQL also load the same rows with one `COPY` as the ceiling.
//!
//! Run with `cargo bench --bench store --all-features`. Criterion reports `thrpt` in
//! records per second; a summary with the upsert/COPY ratio is printed at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    missing_docs
)]

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod imp {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use chrono::{NaiveDate, TimeZone, Utc};
    use criterion::{Criterion, SamplingMode, Throughput};
    use pandora_sync::model::Deal;
    use pandora_sync::{Checkpoint, ConnectorKind, Record, RecordBatch};
    use serde_json::json;
    use uuid::Uuid;

    const TOTAL: usize = 100_000;
    /// Records per `write_batch`: 500 (an unthrottled connector's pages of 100, grouped
    /// five at a time), or `STORE_BENCH_BATCH` (e.g. 5000, the sink's largest group).
    static BATCH: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        std::env::var("STORE_BENCH_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(500)
    });

    /// The same 100,000 deals for every backend: realistic widths, every column filled.
    fn deals(ws: Uuid, version_minutes: i64) -> Vec<Record> {
        let base = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        (0..TOTAL)
            .map(|i| {
                let n = i64::try_from(i).unwrap();
                let mut d = Deal::new(ws, ConnectorKind::Hubspot, format!("{}", 10_000_000 + i));
                d.meta.source_created_at = Some(base + chrono::Duration::minutes(n));
                d.meta.source_updated_at =
                    Some(base + chrono::Duration::minutes(n + version_minutes));
                d.meta.custom_fields.insert(
                    "hs_priority".into(),
                    json!(["low", "medium", "high"][i % 3]),
                );
                d.meta
                    .custom_fields
                    .insert("hs_num_associated_contacts".into(), json!(i % 7));
                d.name = Some(format!("Acme Corp renewal #{i}"));
                d.amount = Some(1000.0 + f64::from(u32::try_from(i % 997).unwrap()) * 12.5);
                d.currency = Some("USD".into());
                d.stage =
                    Some(["appointmentscheduled", "qualifiedtobuy", "closedwon"][i % 3].into());
                d.pipeline = Some("default".into());
                d.close_date =
                    NaiveDate::from_ymd_opt(2024, 1 + u32::try_from(i % 12).unwrap(), 15);
                d.probability = Some(0.2 + f64::from(u32::try_from(i % 5).unwrap()) * 0.1);
                d.owner_id = Some(format!("{}", 5000 + i % 40));
                d.account_source_id = Some(format!("{}", 900_000 + i % 5000));
                d.is_closed = Some(i % 3 == 2);
                d.is_won = Some(i % 6 == 2);
                d.forecast_category = Some("pipeline".into());
                d.days_open = Some(n % 365);
                d.days_to_close = Some(30 - n % 60);
                d.into()
            })
            .collect()
    }

    fn checkpoint(i: usize) -> Checkpoint {
        let mut c = Checkpoint::default();
        c.stream_mut("deals").cursor = Some(format!("after={}", i * *BATCH));
        c
    }

    /// Writes every record in batches; returns the elapsed time.
    async fn upsert_all(
        store: &dyn pandora_sync::SyncStore,
        ws: Uuid,
        records: &[Record],
    ) -> Duration {
        let start = Instant::now();
        for (i, chunk) in records.chunks(*BATCH).enumerate() {
            let counts = store
                .write_batch(
                    ws,
                    ConnectorKind::Hubspot,
                    &RecordBatch::new(chunk.to_vec()),
                    &checkpoint(i),
                )
                .await
                .unwrap();
            assert_eq!(counts.written(), u64::try_from(chunk.len()).unwrap());
        }
        start.elapsed()
    }

    type Results = Arc<Mutex<BTreeMap<&'static str, Vec<f64>>>>;

    fn record(results: &Results, name: &'static str, elapsed: Duration) {
        let rate = f64::from(u32::try_from(TOTAL).unwrap()) / elapsed.as_secs_f64();
        results.lock().unwrap().entry(name).or_default().push(rate);
    }

    #[cfg(feature = "sqlite")]
    fn bench_sqlite(c: &mut Criterion, rt: &tokio::runtime::Runtime, results: &Results) {
        use pandora_sync::store::{ConnectionStore, NewConnection};
        use pandora_sync::{SqliteStore, Store};

        let mut group = c.benchmark_group("store");
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(20));
        group.throughput(Throughput::Elements(u64::try_from(TOTAL).unwrap()));
        group.bench_function("sqlite_upsert_100k_deals", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir().unwrap();
                        let url = format!(
                            "sqlite://{}?mode=rwc",
                            dir.path().join("bench.db").display()
                        );
                        let store = SqliteStore::connect(&url).await.unwrap();
                        store.migrate().await.unwrap();
                        let ws = Uuid::new_v4();
                        store
                            .create_connection(NewConnection::new(
                                ws,
                                ConnectorKind::Hubspot,
                                "api_key",
                            ))
                            .await
                            .unwrap();
                        let records = deals(ws, 0);
                        let elapsed = upsert_all(&store, ws, &records).await;
                        record(results, "sqlite upsert", elapsed);
                        total += elapsed;
                        store.close().await;
                    }
                    total
                })
            });
        });
        group.finish();
    }

    #[cfg(feature = "postgres")]
    mod pg {
        use std::str::FromStr;

        use super::*;
        use pandora_sync::store::{ConnectionStore, NewConnection};
        use pandora_sync::{PgStore, Store};
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        use sqlx::{Connection, PgConnection};

        fn url() -> String {
            std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
        }

        pub struct Scratch {
            pub store: PgStore,
            pub schema: String,
            pub ws: Uuid,
        }

        pub async fn scratch() -> Scratch {
            let schema = format!("bench_{}", Uuid::new_v4().simple());
            let mut admin = PgConnection::connect(&url())
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {} is unreachable: {e}", url()));
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut admin)
                .await
                .unwrap();
            let options = PgConnectOptions::from_str(&url())
                .unwrap()
                .options([("search_path", schema.as_str())]);
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .unwrap();
            let store = PgStore::from_pool(pool);
            store.migrate().await.unwrap();
            let ws = Uuid::new_v4();
            store
                .create_connection(NewConnection::new(ws, ConnectorKind::Hubspot, "api_key"))
                .await
                .unwrap();
            Scratch { store, schema, ws }
        }

        impl Scratch {
            pub async fn reset(&self) {
                sqlx::query("TRUNCATE deals")
                    .execute(self.store.pool())
                    .await
                    .unwrap();
                sqlx::query("VACUUM ANALYZE deals")
                    .execute(self.store.pool())
                    .await
                    .unwrap();
            }

            pub async fn drop(self) {
                self.store.close().await;
                let mut admin = PgConnection::connect(&url()).await.unwrap();
                sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
        }

        fn text(v: Option<&str>, out: &mut String) {
            match v {
                // The bench data holds no tab, newline or backslash, which COPY text would escape.
                Some(s) => out.push_str(s),
                None => out.push_str("\\N"),
            }
        }

        fn opt<T: ToString>(v: Option<T>, out: &mut String) {
            match v {
                Some(x) => out.push_str(&x.to_string()),
                None => out.push_str("\\N"),
            }
        }

        /// The COPY text-format line of a deal, in the table's column order.
        fn copy_line(d: &Deal, synced_at: &str, out: &mut String) {
            let m = &d.meta;
            out.push_str(&m.id.to_string());
            out.push('\t');
            out.push_str(&m.workspace_id.to_string());
            out.push_str("\thubspot\t");
            out.push_str(&m.source_id);
            out.push('\t');
            out.push_str(&serde_json::to_string(&m.custom_fields).unwrap());
            for ts in [m.source_created_at, m.source_updated_at, m.archived_at] {
                out.push('\t');
                opt(ts.map(|t| t.to_rfc3339()), out);
            }
            out.push('\t');
            out.push_str(synced_at);
            out.push('\t');
            text(d.name.as_deref(), out);
            out.push('\t');
            opt(d.amount, out);
            out.push('\t');
            text(d.currency.as_deref(), out);
            out.push('\t');
            text(d.stage.as_deref(), out);
            out.push('\t');
            text(d.pipeline.as_deref(), out);
            out.push('\t');
            opt(d.close_date, out);
            out.push('\t');
            opt(d.probability, out);
            out.push('\t');
            text(d.owner_id.as_deref(), out);
            out.push('\t');
            text(d.account_source_id.as_deref(), out);
            out.push('\t');
            opt(d.is_closed, out);
            out.push('\t');
            opt(d.is_won, out);
            out.push('\t');
            text(d.forecast_category.as_deref(), out);
            out.push('\t');
            opt(d.days_open, out);
            out.push('\t');
            opt(d.days_to_close, out);
            out.push('\n');
        }

        /// Loads every deal with one `COPY ... FROM STDIN`; returns the elapsed time.
        pub async fn copy_all(s: &Scratch, records: &[Record]) -> Duration {
            let start = Instant::now();
            let mut conn = s.store.pool().acquire().await.unwrap();
            let mut copy = conn
                .copy_in_raw(
                    "COPY deals (id, workspace_id, source, source_id, custom_fields, source_created_at, \
                     source_updated_at, archived_at, synced_at, name, amount, currency, stage, pipeline, \
                     close_date, probability, owner_id, account_source_id, is_closed, is_won, \
                     forecast_category, days_open, days_to_close) FROM STDIN",
                )
                .await
                .unwrap();
            let synced_at = Utc::now().to_rfc3339();
            for chunk in records.chunks(*BATCH) {
                let mut buf = String::with_capacity(chunk.len() * 400);
                for r in chunk {
                    let Record::Deal(d) = r else { unreachable!() };
                    copy_line(d, &synced_at, &mut buf);
                }
                copy.send(buf.into_bytes()).await.unwrap();
            }
            let rows = copy.finish().await.unwrap();
            assert_eq!(rows, u64::try_from(records.len()).unwrap());
            start.elapsed()
        }
    }

    #[cfg(feature = "postgres")]
    fn bench_postgres(c: &mut Criterion, rt: &tokio::runtime::Runtime, results: &Results) {
        let scratch = rt.block_on(pg::scratch());
        let ws = scratch.ws;
        let fresh = deals(ws, 0);
        let newer = deals(ws, 1);

        let mut group = c.benchmark_group("store");
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(20));
        group.throughput(Throughput::Elements(u64::try_from(TOTAL).unwrap()));

        group.bench_function("postgres_upsert_100k_deals", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        scratch.reset().await;
                        let elapsed = upsert_all(&scratch.store, ws, &fresh).await;
                        record(results, "postgres upsert (insert)", elapsed);
                        total += elapsed;
                    }
                    total
                })
            });
        });

        group.bench_function("postgres_upsert_update_100k_deals", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        scratch.reset().await;
                        upsert_all(&scratch.store, ws, &fresh).await;
                        sqlx::query("VACUUM ANALYZE deals")
                            .execute(scratch.store.pool())
                            .await
                            .unwrap();
                        let elapsed = upsert_all(&scratch.store, ws, &newer).await;
                        record(results, "postgres upsert (update, newer versions)", elapsed);
                        total += elapsed;
                    }
                    total
                })
            });
        });

        group.bench_function("postgres_copy_100k_deals", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        scratch.reset().await;
                        let elapsed = pg::copy_all(&scratch, &fresh).await;
                        record(results, "postgres COPY (ceiling)", elapsed);
                        total += elapsed;
                    }
                    total
                })
            });
        });
        group.finish();
        rt.block_on(scratch.drop());
    }

    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    pub fn main() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let results: Results = Arc::default();
        let mut c = Criterion::default().configure_from_args();
        #[cfg(feature = "sqlite")]
        bench_sqlite(&mut c, &rt, &results);
        #[cfg(feature = "postgres")]
        bench_postgres(&mut c, &rt, &results);
        c.final_summary();

        let results = results.lock().unwrap();
        if results.is_empty() {
            return;
        }
        println!(
            "\nrecords/s (median over every timed run, {TOTAL} deals in batches of {}):",
            *BATCH
        );
        for (name, rates) in results.iter() {
            println!(
                "  {name:<42} {:>10.0}  ({} runs)",
                median(rates),
                rates.len()
            );
        }
        if let (Some(up), Some(copy)) = (
            results.get("postgres upsert (insert)"),
            results.get("postgres COPY (ceiling)"),
        ) {
            println!(
                "  postgres upsert / COPY ratio: {:.2}",
                median(up) / median(copy)
            );
        }
    }
}

fn main() {
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    imp::main();
}
