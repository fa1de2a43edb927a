//! Job queue benchmark on PostgreSQL (standalone: `harness = false`, prints its figures).
//!
//! ```text
//! cargo bench --bench queue --features postgres
//! ```
//!
//! 1. Throughput: 4 workers (each running up to 16 jobs at once, woken by `NOTIFY`) claim
//!    and complete 10,000 no-op jobs, one per workspace as sync jobs are (the unique running
//!    index allows one running job per workspace and type). Reported as jobs per second, from
//!    the first claim to the last completion.
//! 2. Latency from `enqueue` returning to the handler starting, with one idle worker woken by
//!    `NOTIFY`, and with the same worker polling (the default 1 s interval, jittered).
//!    Reported as median and p99.
//!
//! The jobs table is analyzed after the enqueue, as autovacuum would have done on a live
//! queue. Each run uses its own scratch schema in `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped at the end.

// A measurement program: it prints its figures, converts counts to rates, and stops on any
// setup failure.
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

#[cfg(feature = "postgres")]
mod common;

#[cfg(feature = "postgres")]
mod bench {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use async_trait::async_trait;
    use pandora_sync::Store;
    use pandora_sync::queue::{
        Job, JobContext, JobHandler, JobQueue, NewJob, PgJobNotifier, Worker, WorkerConfig,
    };
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    use crate::common::{admin, store};

    const JOBS: usize = 10_000;
    const WORKERS: usize = 4;
    const PER_WORKER: usize = 16;
    const NOTIFY_SAMPLES: usize = 200;
    const POLL_SAMPLES: usize = 30;

    /// Counts completions and signals when all jobs ran.
    struct Count {
        done: AtomicUsize,
        all: tokio::sync::Notify,
        first: std::sync::Mutex<Option<Instant>>,
    }

    #[async_trait]
    impl JobHandler for Count {
        async fn run(
            &self,
            _job: Job,
            _ctx: JobContext,
        ) -> pandora_sync::Result<serde_json::Value> {
            self.first
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(Instant::now);
            if self.done.fetch_add(1, Ordering::SeqCst) + 1 == JOBS {
                self.all.notify_one();
            }
            Ok(serde_json::Value::Null)
        }
    }

    /// Reports when a job started.
    struct Started(mpsc::UnboundedSender<Instant>);

    #[async_trait]
    impl JobHandler for Started {
        async fn run(
            &self,
            _job: Job,
            _ctx: JobContext,
        ) -> pandora_sync::Result<serde_json::Value> {
            let _ = self.0.send(Instant::now());
            Ok(serde_json::Value::Null)
        }
    }

    fn config(id: String, concurrency: usize) -> WorkerConfig {
        WorkerConfig {
            worker_id: id,
            concurrency,
            ..WorkerConfig::default()
        }
    }

    async fn throughput(schema: &str) -> f64 {
        let queue = store(schema, 4).await;
        // Enqueue in parallel (not measured).
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in 0..8 {
            let q = queue.clone();
            tasks.spawn(async move {
                for _ in 0..JOBS / 8 {
                    q.enqueue(NewJob::new(Uuid::new_v4(), "noop", serde_json::Value::Null))
                        .await
                        .expect("enqueue");
                }
                chunk
            });
        }
        while tasks.join_next().await.is_some() {}
        // Steady state: a live queue table has planner statistics (autovacuum analyzes it
        // within a minute; migration 0002 makes that more eager). Without them the claim
        // sorts every pending row instead of walking the poll index.
        sqlx::query("ANALYZE jobs")
            .execute(queue.pool())
            .await
            .expect("analyze");

        let count = Arc::new(Count {
            done: AtomicUsize::new(0),
            all: tokio::sync::Notify::new(),
            first: std::sync::Mutex::new(None),
        });
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let s = store(schema, 4).await;
            let notifier = Arc::new(PgJobNotifier::connect(&s).await.expect("listen"));
            let worker = Worker::new(Arc::new(s))
                .register("noop", count.clone())
                .notifier(notifier)
                .config(config(format!("w{w}"), PER_WORKER));
            workers.push(tokio::spawn(worker.run(stop.clone())));
        }
        count.all.notified().await;
        let end = Instant::now();
        stop.cancel();
        for w in workers {
            w.await.expect("worker task").expect("worker");
        }
        let first = count
            .first
            .lock()
            .expect("not poisoned")
            .expect("a job ran");
        // The last completion's UPDATE happens after the handler returned; count it in.
        let pending: i64 = {
            let s = store(schema, 1).await;
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status <> 'completed'")
                .fetch_one(s.pool())
                .await
                .expect("count")
        };
        assert_eq!(pending, 0, "every job completed");
        JOBS as f64 / (end - first).as_secs_f64()
    }

    async fn latency(schema: &str, notify: bool, samples: usize) -> (Duration, Duration) {
        let queue = store(schema, 2).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = store(schema, 4).await;
        let mut worker = Worker::new(Arc::new(s.clone()))
            .register("ping", Arc::new(Started(tx)))
            .config(config("latency".into(), 1));
        if notify {
            worker = worker.notifier(Arc::new(PgJobNotifier::connect(&s).await.expect("listen")));
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await; // let it go idle
        let mut lat = Vec::with_capacity(samples);
        for i in 0..samples {
            queue
                .enqueue(NewJob::new(Uuid::new_v4(), "ping", serde_json::Value::Null))
                .await
                .expect("enqueue");
            let sent = Instant::now();
            let started = rx.recv().await.expect("job ran");
            lat.push(started.saturating_duration_since(sent));
            // Let the worker finish the job and go idle again; vary the phase against the poll.
            tokio::time::sleep(Duration::from_millis(20 + (i as u64 * 37) % 100)).await;
        }
        stop.cancel();
        task.await.expect("worker task").expect("worker");
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
        (p(0.5), p(0.99))
    }

    pub fn main() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let schema = format!("qbench_{}", Uuid::new_v4().simple());
            admin(format!("CREATE SCHEMA {schema}")).await;
            store(&schema, 1).await.migrate().await.expect("migrate");

            let jobs_per_s = throughput(&schema).await;
            admin(format!("TRUNCATE {schema}.jobs")).await;
            let (n50, n99) = latency(&schema, true, NOTIFY_SAMPLES).await;
            let (p50, p99) = latency(&schema, false, POLL_SAMPLES).await;
            admin(format!("DROP SCHEMA {schema} CASCADE")).await;

            println!("queue/postgres: {WORKERS} workers x {PER_WORKER} slots, {JOBS} no-op jobs");
            println!("  claim-and-complete throughput: {jobs_per_s:.0} jobs/s");
            println!(
                "  enqueue-to-start with NOTIFY:  median {:.2} ms, p99 {:.2} ms ({NOTIFY_SAMPLES} samples)",
                n50.as_secs_f64() * 1e3,
                n99.as_secs_f64() * 1e3
            );
            println!(
                "  enqueue-to-start polling 1 s:  median {:.0} ms, p99 {:.0} ms ({POLL_SAMPLES} samples)",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        });
    }
}

#[cfg(feature = "postgres")]
fn main() {
    bench::main();
}

#[cfg(not(feature = "postgres"))]
fn main() {
    eprintln!(
        "the queue bench needs the `postgres` feature: cargo bench --bench queue --features postgres"
    );
}
