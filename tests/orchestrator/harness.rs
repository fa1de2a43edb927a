//! A fresh migrated store per test.

use std::future::Future;
use std::sync::Arc;

use chrono::SubsecRound;
use pandora_sync::queue::JobQueue;
use pandora_sync::store::ManualClock;
use pandora_sync::{Keyring, Store, SyncStore};

pub struct Harness {
    pub store: Arc<dyn SyncStore>,
    pub queue: Arc<dyn JobQueue>,
    /// The store's clock, when the test runs with `*_clocked` (else unused).
    pub clock: ManualClock,
}

fn manual_clock() -> ManualClock {
    ManualClock::new(chrono::Utc::now().trunc_subsecs(0))
}

fn keyring() -> Keyring {
    Keyring::new("test", [7u8; 32]).unwrap()
}

#[cfg(feature = "sqlite")]
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    sqlite(test, false).await;
}

/// On SQLite with the store on a [`ManualClock`] the test drives.
#[cfg(feature = "sqlite")]
pub async fn run_sqlite_clocked<F, Fut>(test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    sqlite(test, true).await;
}

#[cfg(feature = "sqlite")]
async fn sqlite<F, Fut>(test: F, clocked: bool)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    use pandora_sync::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
    let clock = manual_clock();
    let mut store = SqliteStore::connect(&url)
        .await
        .unwrap()
        .with_keyring(keyring());
    if clocked {
        store = store.with_clock(Arc::new(clock.clone()));
    }
    store.migrate().await.unwrap();
    test(Harness {
        store: Arc::new(store.clone()),
        queue: Arc::new(store),
        clock,
    })
    .await;
    drop(dir);
}

#[cfg(feature = "postgres")]
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    postgres(test, false).await;
}

/// On Postgres with the store on a [`ManualClock`] the test drives.
#[cfg(feature = "postgres")]
pub async fn run_postgres_clocked<F, Fut>(test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    postgres(test, true).await;
}

#[cfg(feature = "postgres")]
async fn postgres<F, Fut>(test: F, clocked: bool)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    use pandora_sync::PgStore;

    let schema = crate::store_env::ScratchSchema::create().await;
    let pool = schema.pool(8).await;
    let clock = manual_clock();
    let mut store = PgStore::from_pool(pool).with_keyring(keyring());
    if clocked {
        store = store.with_clock(Arc::new(clock.clone()));
    }
    store.migrate().await.unwrap();
    test(Harness {
        store: Arc::new(store.clone()),
        queue: Arc::new(store.clone()),
        clock,
    })
    .await;
    store.close().await;
    schema.drop_schema().await;
}
