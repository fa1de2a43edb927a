//! A fresh, migrated store per test for each backend (the approach of the storage
//! conformance harness): SQLite in memory; PostgreSQL at `DATABASE_URL` in a new schema,
//! dropped afterwards. When PostgreSQL is unreachable its tests fail: they never skip.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use pandora_sync::store::{Backend, ManualClock};
use pandora_sync::{Store, SyncStore};

/// The harness clock starts here.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 10, 15, 0, 0).unwrap()
}

/// What a test gets: a migrated store on a fresh database and its manual clock.
pub struct Harness {
    pub store: Arc<dyn SyncStore>,
    pub clock: ManualClock,
    #[allow(dead_code)]
    pub backend: Backend,
}

/// Runs `test` on a fresh in-memory SQLite store.
#[cfg(feature = "sqlite")]
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    use pandora_sync::SqliteStore;
    let clock = ManualClock::new(start_time());
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    store.migrate().await.unwrap();
    test(Harness {
        store: Arc::new(store),
        clock,
        backend: Backend::Sqlite,
    })
    .await;
}

#[cfg(feature = "postgres")]
mod pg {
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
            panic!(
                "PostgreSQL at {url} is unreachable ({e}). The hooks suite needs it: start \
                 PostgreSQL or point DATABASE_URL at a server (the tests never skip)."
            )
        })
    }

    pub fn new_schema() -> String {
        format!("t_{}", Uuid::new_v4().simple())
    }

    /// Creates a schema and returns a store whose connections use it.
    pub async fn schema_store(schema: &str) -> PgStore {
        let mut admin = admin().await;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let options = PgConnectOptions::from_str(&database_url())
            .unwrap()
            .options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap();
        PgStore::from_pool(pool)
    }

    pub async fn drop_schema(schema: &str) {
        let mut admin = admin().await;
        if let Err(e) = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut admin)
            .await
        {
            eprintln!("could not drop test schema {schema}: {e}");
        }
        let _ = admin.close().await;
    }
}

/// Runs `test` on a fresh PostgreSQL schema, dropped afterwards (also when the test fails).
#[cfg(feature = "postgres")]
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;

    let schema = pg::new_schema();
    let clock = ManualClock::new(start_time());
    let store = pg::schema_store(&schema)
        .await
        .with_clock(Arc::new(clock.clone()));
    store.migrate().await.unwrap();
    let harness = Harness {
        store: Arc::new(store.clone()),
        clock,
        backend: Backend::Postgres,
    };
    let outcome = AssertUnwindSafe(test(harness)).catch_unwind().await;
    store.close().await;
    pg::drop_schema(&schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
