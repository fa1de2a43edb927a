//! Builds a fresh, migrated store per test for each backend, plus the few backend-specific
//! operations the suite needs (raw column access, killing a lock holder, fresh databases).

use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use pandora_sync::store::{Backend, ManualClock, WorkspaceLock};
use pandora_sync::{ConnectorKind, Keyring, Store, SyncStore};
use uuid::Uuid;

/// The lease of SQLite locks in the suite.
#[cfg(feature = "sqlite")]
pub const LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The suite's clock starts here.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap()
}

/// The keyring every suite store uses unless a test asks for another.
pub fn test_keyring() -> Keyring {
    Keyring::new("test-key", [42u8; 32]).unwrap()
}

/// What a test gets: a migrated store on a fresh database, its manual clock, and hooks.
pub struct Harness {
    pub store: Arc<dyn SyncStore>,
    pub clock: ManualClock,
    pub backend: Backend,
    ops: Box<dyn BackendOps>,
}

impl Harness {
    /// Another store over the same database with another keyring (or none).
    pub fn store_with_keyring(&self, keyring: Option<Keyring>) -> Arc<dyn SyncStore> {
        self.ops.with_keyring(keyring)
    }

    /// The raw `connections.credentials` value.
    pub async fn raw_credentials(&self, ws: Uuid, connector: ConnectorKind) -> Option<String> {
        self.ops.raw_credentials(ws, connector).await
    }

    /// Overwrites `connections.credentials` with a raw value.
    pub async fn set_raw_credentials(&self, ws: Uuid, connector: ConnectorKind, value: &str) {
        self.ops.set_raw_credentials(ws, connector, value).await;
    }

    /// Makes the holder of `lock` die as a crashed process would: PostgreSQL terminates its
    /// session; SQLite lets its lease run out (the clock jumps past the lease).
    pub async fn kill_lock_holder(&self, lock: &WorkspaceLock) {
        self.ops.kill_lock_holder(lock, &self.clock).await;
    }

    /// Two stores, not migrated, over one new empty database.
    pub async fn fresh_pair(&self) -> (Arc<dyn SyncStore>, Arc<dyn SyncStore>) {
        self.ops.fresh_pair().await
    }
}

#[async_trait]
trait BackendOps: Send + Sync {
    fn with_keyring(&self, keyring: Option<Keyring>) -> Arc<dyn SyncStore>;
    async fn raw_credentials(&self, ws: Uuid, connector: ConnectorKind) -> Option<String>;
    async fn set_raw_credentials(&self, ws: Uuid, connector: ConnectorKind, value: &str);
    async fn kill_lock_holder(&self, lock: &WorkspaceLock, clock: &ManualClock);
    async fn fresh_pair(&self) -> (Arc<dyn SyncStore>, Arc<dyn SyncStore>);
}

#[cfg(feature = "sqlite")]
mod sqlite_ops {
    use super::*;
    use pandora_sync::SqliteStore;

    pub struct SqliteOps {
        pub store: SqliteStore,
        pub clock: ManualClock,
        pub dirs: Mutex<Vec<tempfile::TempDir>>,
    }

    #[async_trait]
    impl BackendOps for SqliteOps {
        fn with_keyring(&self, keyring: Option<Keyring>) -> Arc<dyn SyncStore> {
            let base = SqliteStore::from_pool(self.store.pool().clone())
                .with_clock(Arc::new(self.clock.clone()))
                .with_lock_ttl(LOCK_TTL);
            Arc::new(match keyring {
                Some(k) => base.with_keyring(k),
                None => base,
            })
        }

        async fn raw_credentials(&self, ws: Uuid, connector: ConnectorKind) -> Option<String> {
            sqlx::query_scalar(
                "SELECT credentials FROM connections WHERE workspace_id = ?1 AND connector_name = ?2",
            )
            .bind(ws.hyphenated().to_string())
            .bind(connector.as_str())
            .fetch_one(self.store.pool())
            .await
            .unwrap()
        }

        async fn set_raw_credentials(&self, ws: Uuid, connector: ConnectorKind, value: &str) {
            sqlx::query(
                "UPDATE connections SET credentials = ?3 WHERE workspace_id = ?1 AND connector_name = ?2",
            )
            .bind(ws.hyphenated().to_string())
            .bind(connector.as_str())
            .bind(value)
            .execute(self.store.pool())
            .await
            .unwrap();
        }

        async fn kill_lock_holder(&self, _lock: &WorkspaceLock, clock: &ManualClock) {
            // A dead process stops renewing: its lease runs out.
            clock.advance(
                chrono::Duration::from_std(LOCK_TTL).unwrap() + chrono::Duration::seconds(1),
            );
        }

        async fn fresh_pair(&self) -> (Arc<dyn SyncStore>, Arc<dyn SyncStore>) {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("pair.db").display());
            let a = SqliteStore::connect(&url).await.unwrap();
            let b = SqliteStore::connect(&url).await.unwrap();
            self.dirs.lock().unwrap().push(dir);
            (Arc::new(a), Arc::new(b))
        }
    }
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
        .with_clock(Arc::new(clock.clone()))
        .with_keyring(test_keyring())
        .with_lock_ttl(LOCK_TTL);
    store.migrate().await.unwrap();
    let clock_for_ops = clock.clone();
    let harness = Harness {
        store: Arc::new(store.clone()),
        clock,
        backend: Backend::Sqlite,
        ops: Box::new(sqlite_ops::SqliteOps {
            store,
            clock: clock_for_ops,
            dirs: Mutex::new(Vec::new()),
        }),
    };
    test(harness).await;
}

#[cfg(feature = "postgres")]
mod pg_ops {
    use std::str::FromStr;

    use super::*;
    use pandora_sync::PgStore;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{Connection, PgConnection};

    pub fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    pub async fn admin() -> PgConnection {
        let url = database_url();
        PgConnection::connect(&url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is unreachable ({e}). The storage conformance suite needs it: \
                 start PostgreSQL or point DATABASE_URL at a server (the tests never skip)."
            )
        })
    }

    /// Creates a schema and returns a pool whose connections use it.
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

    pub async fn drop_schemas(schemas: &[String]) {
        let mut admin = admin().await;
        for schema in schemas {
            if let Err(e) = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&mut admin)
                .await
            {
                eprintln!("could not drop test schema {schema}: {e}");
            }
        }
        let _ = admin.close().await;
    }

    pub fn new_schema() -> String {
        format!("t_{}", Uuid::new_v4().simple())
    }

    pub struct PgOps {
        pub store: PgStore,
        pub clock: ManualClock,
        pub schemas: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl BackendOps for PgOps {
        fn with_keyring(&self, keyring: Option<Keyring>) -> Arc<dyn SyncStore> {
            let base = PgStore::from_pool(self.store.pool().clone())
                .with_clock(Arc::new(self.clock.clone()));
            Arc::new(match keyring {
                Some(k) => base.with_keyring(k),
                None => base,
            })
        }

        async fn raw_credentials(&self, ws: Uuid, connector: ConnectorKind) -> Option<String> {
            sqlx::query_scalar(
                "SELECT credentials FROM connections WHERE workspace_id = $1 AND connector_name = $2",
            )
            .bind(ws)
            .bind(connector.as_str())
            .fetch_one(self.store.pool())
            .await
            .unwrap()
        }

        async fn set_raw_credentials(&self, ws: Uuid, connector: ConnectorKind, value: &str) {
            sqlx::query(
                "UPDATE connections SET credentials = $3 WHERE workspace_id = $1 AND connector_name = $2",
            )
            .bind(ws)
            .bind(connector.as_str())
            .bind(value)
            .execute(self.store.pool())
            .await
            .unwrap();
        }

        async fn kill_lock_holder(&self, lock: &WorkspaceLock, _clock: &ManualClock) {
            let key = PgStore::workspace_lock_key(lock.workspace_id());
            let mut admin = admin().await;
            let pid: i32 = sqlx::query_scalar(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
                 AND ((classid::bigint << 32) | objid::bigint) = $1",
            )
            .bind(key)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            assert!(killed, "could not terminate the lock holder's session");
            admin.close().await.unwrap();
        }

        async fn fresh_pair(&self) -> (Arc<dyn SyncStore>, Arc<dyn SyncStore>) {
            let schema = new_schema();
            self.schemas.lock().unwrap().push(schema.clone());
            let a = schema_store(&schema).await;
            let b = PgStore::from_pool({
                let options = PgConnectOptions::from_str(&database_url())
                    .unwrap()
                    .options([("search_path", schema.as_str())]);
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with(options)
                    .await
                    .unwrap()
            });
            (Arc::new(a), Arc::new(b))
        }
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

    let schema = pg_ops::new_schema();
    let schemas = Arc::new(Mutex::new(vec![schema.clone()]));
    let clock = ManualClock::new(start_time());
    let store = pg_ops::schema_store(&schema)
        .await
        .with_clock(Arc::new(clock.clone()))
        .with_keyring(test_keyring());
    store.migrate().await.unwrap();
    let clock_for_ops = clock.clone();
    let harness = Harness {
        store: Arc::new(store.clone()),
        clock,
        backend: Backend::Postgres,
        ops: Box::new(pg_ops::PgOps {
            store: store.clone(),
            clock: clock_for_ops,
            schemas: Arc::clone(&schemas),
        }),
    };
    let outcome = AssertUnwindSafe(test(harness)).catch_unwind().await;
    store.close().await;
    let to_drop = schemas.lock().unwrap().clone();
    pg_ops::drop_schemas(&to_drop).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
