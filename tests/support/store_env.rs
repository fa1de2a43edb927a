//! The store every connector end-to-end suite runs against: a migrated SQLite file in a
//! temporary directory, or a scratch schema of the PostgreSQL server at `DATABASE_URL`
//! (dropped afterwards). Included with `#[path]` by each suite that needs it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use pandora_sync::{Keyring, Store, SyncStore};

/// What a test gets: the store, and the URL the examples connect to for the same data.
pub struct Env {
    pub store: Arc<dyn SyncStore>,
    /// The store's URL; for PostgreSQL it selects the scratch schema.
    pub database_url: String,
}

/// The key that seals the suites' connection credentials.
pub fn keyring() -> Keyring {
    Keyring::new("e2e", [9u8; 32]).unwrap()
}

/// Runs `test` against a fresh, migrated SQLite file.
#[cfg(feature = "sqlite")]
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    use pandora_sync::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("e2e.db").display());
    let store = SqliteStore::connect(&url)
        .await
        .unwrap()
        .with_keyring(keyring());
    store.migrate().await.unwrap();
    test(Env {
        store: Arc::new(store),
        database_url: url,
    })
    .await;
    drop(dir);
}

/// Runs `test` against a fresh, migrated schema of the PostgreSQL server at `DATABASE_URL`
/// (default `postgres://postgres@127.0.0.1:5432/test`); an unreachable server fails the
/// test, it never skips.
#[cfg(feature = "postgres")]
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    use std::str::FromStr;

    use pandora_sync::PgStore;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{Connection, PgConnection};

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut admin = PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is unreachable ({e}); these tests need it (they never skip)")
    });
    let schema = format!("e2e_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    let store = PgStore::from_pool(pool).with_keyring(keyring());
    store.migrate().await.unwrap();
    // The examples connect by URL: point them at the same schema.
    let sep = if url.contains('?') { '&' } else { '?' };
    let database_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    test(Env {
        store: Arc::new(store.clone()),
        database_url,
    })
    .await;
    store.close().await;
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut admin)
        .await;
}
