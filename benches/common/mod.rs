//! PostgreSQL helpers shared by the benches: the server URL, one-off admin statements, and a
//! store confined to a scratch schema.

use std::str::FromStr;

use pandora_sync::PgStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

/// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
pub fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Runs one statement on its own connection (schema creation and cleanup).
#[allow(dead_code)]
pub async fn admin(sql: String) {
    admin_at(&url(), sql).await;
}

/// Runs one statement on its own connection to the server at `url`.
pub async fn admin_at(url: &str, sql: String) {
    let mut conn = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is unreachable: {e}"));
    sqlx::query(&sql)
        .execute(&mut conn)
        .await
        .expect("admin statement");
}

/// A store whose connections (at most `max`) work in `schema`.
#[allow(dead_code)]
pub async fn store(schema: &str, max: u32) -> PgStore {
    store_at(&url(), schema, max).await
}

/// A store on the server at `url` whose connections (at most `max`) work in `schema`.
pub async fn store_at(url: &str, schema: &str, max: u32) -> PgStore {
    let options = PgConnectOptions::from_str(url)
        .expect("DATABASE_URL")
        .options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .connect_with(options)
        .await
        .expect("pool");
    PgStore::from_pool(pool)
}
