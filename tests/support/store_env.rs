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

/// A scratch schema of the PostgreSQL server at `DATABASE_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`); an unreachable server fails the test, it
/// never skips. [`ScratchSchema::drop_schema`] removes it.
#[cfg(feature = "postgres")]
pub struct ScratchSchema {
    admin: sqlx::PgConnection,
    url: String,
    /// The schema's name.
    pub name: String,
}

#[cfg(feature = "postgres")]
impl ScratchSchema {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is unreachable ({e}); these tests need it (they never skip)"
            )
        });
        let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        ScratchSchema { admin, url, name }
    }

    /// A pool of at most `max` connections whose `search_path` is the schema.
    pub async fn pool(&self, max: u32) -> sqlx::PgPool {
        use std::str::FromStr;
        let options = sqlx::postgres::PgConnectOptions::from_str(&self.url)
            .unwrap()
            .options([("search_path", self.name.as_str())]);
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await
            .unwrap()
    }

    /// The server's URL pointed at the schema, for the examples (which connect by URL).
    pub fn database_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.url, self.name)
    }

    pub async fn drop_schema(mut self) {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .execute(&mut self.admin)
            .await;
    }
}

/// Runs `test` against a fresh, migrated scratch schema ([`ScratchSchema`]).
#[cfg(feature = "postgres")]
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    use pandora_sync::PgStore;

    let schema = ScratchSchema::create().await;
    let store = PgStore::from_pool(schema.pool(8).await).with_keyring(keyring());
    store.migrate().await.unwrap();
    test(Env {
        store: Arc::new(store.clone()),
        database_url: schema.database_url(),
    })
    .await;
    store.close().await;
    schema.drop_schema().await;
}
