//! The workspace lock at the store level: taking over a dead holder's lock ends that
//! holder's `running` runs, at once.

use std::time::Duration;

use pandora_sync::ConnectorKind;
use pandora_sync::store::{Backend, ConnectionStatus, NewConnection, SyncStatus};
use uuid::Uuid;

use crate::Env;

/// Makes the holder of the workspace's lock die as a SIGKILLed process would, without
/// touching its lease: on SQLite the lease's pid becomes one that has exited; on
/// PostgreSQL the lock's session is terminated.
async fn kill_holder(env: &Env, ws: Uuid) {
    match env.store.backend() {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            let pool = sqlx::SqlitePool::connect(&env.database_url).await.unwrap();
            let done = sqlx::query("UPDATE sync_locks SET holder_pid = ?2 WHERE workspace_id = ?1")
                .bind(ws.hyphenated().to_string())
                .bind(i64::from(pid))
                .execute(&pool)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 1);
            pool.close().await;
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            use sqlx::Connection as _;
            let key = pandora_sync::PgStore::workspace_lock_key(ws);
            let mut admin = sqlx::PgConnection::connect(&env.database_url)
                .await
                .unwrap();
            let pid: i32 = sqlx::query_scalar(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
                 AND ((classid::bigint << 32) | objid::bigint) = $1",
            )
            .bind(key)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
                .bind(pid)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            assert!(killed);
            admin.close().await.unwrap();
        }
        #[allow(unreachable_patterns)]
        other => panic!("no way to kill a lock holder on {other:?}"),
    }
}

pub async fn a_dead_holders_runs_are_interrupted(env: Env) {
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    let store = &env.store;
    for w in [ws, other] {
        store
            .create_connection(NewConnection::new(w, ConnectorKind::Hubspot, "api"))
            .await
            .unwrap();
    }
    let start = |w: Uuid| async move {
        let id = store
            .create_sync(w, Some(ConnectorKind::Hubspot), None)
            .await
            .unwrap()
            .id;
        store.start_sync(w, id, None).await.unwrap();
        store
            .set_connection_status(w, ConnectorKind::Hubspot, ConnectionStatus::Syncing, None)
            .await
            .unwrap();
        id
    };
    // Another workspace's run, and (SQLite) a run of this workspace started by nobody
    // holding the lock: neither belongs to the holder that dies.
    let elsewhere = start(other).await;
    let unowned = match store.backend() {
        Backend::Sqlite => Some(start(ws).await),
        _ => None,
    };

    let holder = store.try_lock_workspace(ws).await.unwrap().unwrap();
    let run = start(ws).await;
    // A live holder keeps its lock and its run.
    assert!(store.try_lock_workspace(ws).await.unwrap().is_none());
    assert_eq!(
        store.get_sync(ws, run).await.unwrap().unwrap().status,
        SyncStatus::Running
    );

    kill_holder(&env, ws).await;
    // Taken over at once (the SQLite lease of 60 s has not run out; PostgreSQL may take a
    // moment to end the terminated session).
    let mut successor = None;
    for _ in 0..100 {
        successor = store.try_lock_workspace(ws).await.unwrap();
        if successor.is_some() || store.backend() == Backend::Sqlite {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let successor = successor.expect("the dead holder's lock is taken over at once");

    let ended = store.get_sync(ws, run).await.unwrap().unwrap();
    assert_eq!(ended.status, SyncStatus::Failed, "{ended:?}");
    assert!(
        ended
            .error_message
            .as_deref()
            .is_some_and(|m| m.starts_with("interrupted")),
        "{ended:?}"
    );
    assert!(ended.completed_at.is_some() && ended.duration_ms.is_some());
    let conn = store
        .get_connection(ws, ConnectorKind::Hubspot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.status, ConnectionStatus::Error);
    assert!(conn.error_message.unwrap().contains("interrupted"));

    assert_eq!(
        store
            .get_sync(other, elsewhere)
            .await
            .unwrap()
            .unwrap()
            .status,
        SyncStatus::Running
    );
    if let Some(unowned) = unowned {
        assert_eq!(
            store.get_sync(ws, unowned).await.unwrap().unwrap().status,
            SyncStatus::Running,
            "only the dead holder's runs are ended"
        );
    }
    // The dead guard finds out it lost the lock.
    assert!(holder.renew().await.is_err());
    drop(holder);
    successor.renew().await.unwrap();
    successor.release().await.unwrap();
}
