//! A fresh migrated store per test, seen both as a `SyncStore` and as a `JobQueue`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pandora_sync::queue::JobQueue;
use pandora_sync::store::ManualClock;
use pandora_sync::{Store, SyncStore};

pub struct Harness {
    pub store: Arc<dyn SyncStore>,
    pub queue: Arc<dyn JobQueue>,
    pub clock: ManualClock,
    /// A second store and queue over the same database (another process).
    pub other_store: Arc<dyn SyncStore>,
    pub other_queue: Arc<dyn JobQueue>,
}

pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap()
}

#[cfg(feature = "sqlite")]
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    use pandora_sync::SqliteStore;
    let clock = ManualClock::new(start_time());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("queue.db").display()
    );
    let store = SqliteStore::connect(&url)
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .with_lock_ttl(Duration::from_secs(60));
    store.migrate().await.unwrap();
    let other = SqliteStore::connect(&url)
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .with_lock_ttl(Duration::from_secs(60));
    test(Harness {
        store: Arc::new(store.clone()),
        queue: Arc::new(store),
        clock,
        other_store: Arc::new(other.clone()),
        other_queue: Arc::new(other),
    })
    .await;
    drop(dir);
}

#[cfg(feature = "postgres")]
pub mod pg {
    use std::str::FromStr;

    use pandora_sync::PgStore;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{Connection, PgConnection};
    use uuid::Uuid;

    pub fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    pub async fn admin() -> PgConnection {
        let url = database_url();
        PgConnection::connect(&url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is unreachable ({e}); the queue tests need it (they never skip)")
        })
    }

    pub async fn schema_store(schema: &str, max: u32) -> PgStore {
        let options = PgConnectOptions::from_str(&database_url())
            .unwrap()
            .options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await
            .unwrap();
        PgStore::from_pool(pool)
    }

    pub async fn new_schema() -> String {
        let schema = format!("q_{}", Uuid::new_v4().simple());
        let mut admin = admin().await;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        schema
    }

    pub async fn drop_schema(schema: &str) {
        let mut admin = admin().await;
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut admin)
            .await;
    }
}

#[cfg(feature = "postgres")]
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ManualClock::new(start_time());
    let schema = pg::new_schema().await;
    let store = pg::schema_store(&schema, 8)
        .await
        .with_clock(Arc::new(clock.clone()));
    store.migrate().await.unwrap();
    let other = pg::schema_store(&schema, 4)
        .await
        .with_clock(Arc::new(clock.clone()));
    test(Harness {
        store: Arc::new(store.clone()),
        queue: Arc::new(store.clone()),
        clock,
        other_store: Arc::new(other.clone()),
        other_queue: Arc::new(other),
    })
    .await;
    store.close().await;
    pg::drop_schema(&schema).await;
}

/// `PgJobNotifier::wait` returns when a job is enqueued, long before its limit.
#[cfg(feature = "postgres")]
pub async fn notify_wakes_listener() {
    use pandora_sync::queue::{JobNotifier, NewJob, PgJobNotifier};
    let schema = pg::new_schema().await;
    let store = pg::schema_store(&schema, 4).await;
    store.migrate().await.unwrap();
    let notifier = Arc::new(PgJobNotifier::connect(&store).await.unwrap());
    let waiting = {
        let n = notifier.clone();
        tokio::spawn(async move { n.wait(Duration::from_secs(3600)).await })
    };
    // Let the waiter reach `recv` (it holds the listener; the LISTEN is already active).
    tokio::task::yield_now().await;
    store
        .enqueue(NewJob::new(
            uuid::Uuid::new_v4(),
            "noop",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the NOTIFY woke the listener")
        .unwrap();
    // The listener holds a pooled connection: release it before closing the pool.
    drop(notifier);
    store.close().await;
    pg::drop_schema(&schema).await;
}
