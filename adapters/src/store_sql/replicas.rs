//! What replicas share in SQL: leases with fencing epochs, orphan discovery, the monotonic
//! record of status-message edits, roles for periodic work, and — on PostgreSQL — liveness
//! (a session advisory lock per process, released by the server when its connection drops)
//! and wake-ups (`NOTIFY runbot_wake`, received with sqlx's `PgListener`).

use super::{Backend, SqlStore, backend_err, db_id, exec_id, ts};
use chrono::{DateTime, Utc};
use runbot_commands::model::ExecutionId;
use runbot_commands::ports::store::StoreError;
use runbot_commands::setup::{Doing, SetupError, ensure};
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use std::time::Duration;

/// The first key of every liveness advisory lock ("rbot"); the second is `hashtext(owner)`.
const LOCK_SPACE: i32 = 0x7262_6f74;

/// The notification channel of wake-ups.
const WAKE_CHANNEL: &str = "runbot_wake";

/// How often the liveness connection is checked (and re-made with its lock if it dropped).
const LIVENESS_CHECK: Duration = Duration::from_secs(2);

/// The connection holding this process's liveness lock, once [`SqlStore::hold_liveness`] ran.
#[derive(Default)]
pub(super) struct Liveness {
    conn: tokio::sync::Mutex<Option<AnyConnection>>,
    keeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Liveness {
    fn drop(&mut self) {
        if let Ok(Some(k)) = self.keeper.lock().map(|mut k| k.take()) {
            k.abort();
        }
    }
}

/// SQL that is true when the process named by column `col` is known to be gone: it registered
/// a liveness lock ([`SqlStore::hold_liveness`]) and no session holds that lock now. Empty on
/// SQLite, whose replicas (one host) rely on the stored lease alone.
fn gone(backend: Backend, col: &str) -> String {
    match backend {
        Backend::Sqlite => String::new(),
        Backend::Postgres => format!(
            " OR ({col} IS NOT NULL AND EXISTS (SELECT 1 FROM live_owners lo WHERE lo.owner = {col}) AND NOT EXISTS (\
             SELECT 1 FROM pg_locks pl WHERE pl.locktype = 'advisory' AND pl.granted \
             AND pl.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND pl.classid = {LOCK_SPACE} AND pl.objid = hashtext({col})::oid AND pl.objsubid = 2))"
        ),
    }
}

impl SqlStore {
    /// PostgreSQL: takes this process's liveness lock for `owner` on a connection of its own
    /// and keeps it (re-taken if that connection drops). While it is held, the leases `owner`
    /// holds stay its own until they expire; once the process dies (its connection closes),
    /// any other replica may take them at once. Refuses when another live process already
    /// holds the lock: two replicas must not share an instance name. No-op on SQLite.
    pub async fn hold_liveness(self: &std::sync::Arc<Self>, owner: &str) -> Result<(), SetupError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let conn = liveness_conn(self, owner).await?;
        *self.liveness.conn.lock().await = Some(conn);
        let store = std::sync::Arc::downgrade(self);
        let owner = owner.to_string();
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LIVENESS_CHECK).await;
                let Some(store) = store.upgrade() else { return };
                let mut slot = store.liveness.conn.lock().await;
                let alive = match slot.as_mut() {
                    Some(c) => sqlx::query("SELECT 1").execute(&mut *c).await.is_ok(),
                    None => false,
                };
                if alive {
                    continue;
                }
                tracing::warn!(owner, "store: the liveness connection dropped; taking the lock again");
                match liveness_conn(&store, &owner).await {
                    Ok(c) => *slot = Some(c),
                    Err(e) => tracing::error!(owner, error = %format!("{e:#}"), "store: cannot take the liveness lock again"),
                }
            }
        });
        if let Ok(mut k) = self.liveness.keeper.lock() {
            *k = Some(keeper);
        }
        Ok(())
    }
}

/// A connection out of the pool holding the liveness lock of `owner`, registered in
/// `live_owners`.
async fn liveness_conn(store: &SqlStore, owner: &str) -> Result<AnyConnection, SetupError> {
    let mut conn = store.pool.acquire().await.doing("acquiring the liveness connection")?.detach();
    let row = sqlx::query("SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok")
        .bind(LOCK_SPACE)
        .bind(owner)
        .fetch_one(&mut conn)
        .await
        .doing("taking the liveness lock")?;
    let ok: bool = row.try_get("ok").doing("reading the liveness lock")?;
    ensure(ok, || format!("another runbot process holds the instance name '{owner}' on this store; every replica needs its own [engine] instance"))?;
    sqlx::query("INSERT INTO live_owners (owner) VALUES ($1) ON CONFLICT (owner) DO NOTHING")
        .bind(owner)
        .execute(&mut conn)
        .await
        .doing("registering the liveness lock")?;
    Ok(conn)
}

pub(super) async fn owner_alive(store: &SqlStore, owner: &str) -> Result<Option<bool>, StoreError> {
    if store.backend != Backend::Postgres {
        return Ok(None);
    }
    let registered = sqlx::query("SELECT owner FROM live_owners WHERE owner = $1")
        .bind(owner)
        .fetch_optional(&store.pool)
        .await
        .map_err(backend_err("reading live owners"))?;
    if registered.is_none() {
        return Ok(None);
    }
    let sql = format!("SELECT CASE WHEN (FALSE{}) THEN 0 ELSE 1 END AS alive", gone(store.backend, "$1"));
    let row = sqlx::query(AssertSqlSafe(sql)).bind(owner).fetch_one(&store.pool).await.map_err(backend_err("checking an owner's liveness"))?;
    let alive: i32 = row.try_get("alive").map_err(backend_err("checking an owner's liveness"))?;
    Ok(Some(alive == 1))
}

/// The lease owner and epoch of an execution (`None`: no such execution).
pub(super) async fn lease_of(store: &SqlStore, id: i64) -> Result<Option<(Option<String>, i64)>, StoreError> {
    let row = sqlx::query("SELECT lease_owner, lease_epoch FROM executions WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await
        .map_err(backend_err("reading a lease"))?;
    row.map(|r| {
        Ok((r.try_get("lease_owner").map_err(backend_err("reading a lease"))?, r.try_get("lease_epoch").map_err(backend_err("reading a lease"))?))
    })
    .transpose()
}

pub(super) async fn claim(
    store: &SqlStore,
    id: ExecutionId,
    owner: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    let n = db_id(id)?;
    // Every right-hand side sees the row as it was: the epoch rises when the lease changes hands.
    let sql = format!(
        "UPDATE executions SET lease_epoch = CASE WHEN lease_owner = $1 THEN lease_epoch ELSE lease_epoch + 1 END, \
         lease_owner = $1, lease_until = $2 WHERE id = $3 \
         AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4{}) RETURNING lease_epoch",
        gone(store.backend, "lease_owner")
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(owner)
        .bind(ts(until))
        .bind(n)
        .bind(ts(now))
        .fetch_all(&store.pool)
        .await
        .map_err(backend_err("claiming an execution"))?;
    if let Some(row) = rows.first() {
        return Ok(Some(row.try_get("lease_epoch").map_err(backend_err("reading a lease epoch"))?));
    }
    match lease_of(store, n).await? {
        Some(_) => Ok(None),
        None => Err(StoreError::NotFound(id)),
    }
}

pub(super) async fn release(store: &SqlStore, id: ExecutionId, owner: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE executions SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2")
        .bind(db_id(id)?)
        .bind(owner)
        .execute(&store.pool)
        .await
        .map_err(backend_err("releasing a lease"))?;
    Ok(())
}

pub(super) async fn orphans(store: &SqlStore, owner: &str, now: DateTime<Utc>) -> Result<Vec<ExecutionId>, StoreError> {
    let sql = format!(
        "SELECT id FROM executions WHERE (terminal = 0 AND (lease_owner IS NULL OR lease_owner = $1 \
         OR lease_until < $2{})) OR final_pending = 1 ORDER BY id",
        gone(store.backend, "lease_owner")
    );
    let rows =
        sqlx::query(AssertSqlSafe(sql)).bind(owner).bind(ts(now)).fetch_all(&store.pool).await.map_err(backend_err("finding orphaned executions"))?;
    rows.iter().map(|r| r.try_get::<i64, _>("id").map_err(backend_err("reading an execution id")).and_then(exec_id)).collect()
}

fn message_no(message: usize) -> Result<i64, StoreError> {
    i64::try_from(message).map_err(|_| StoreError::Backend(format!("message {message} is out of range")))
}

pub(super) async fn claim_edit(store: &SqlStore, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
    // One statement: the decision is made from the row as it was and kept in `last_ok`.
    let rows = sqlx::query(
        "INSERT INTO published (exec_id, message, claimed, delivered, last_ok) VALUES ($1, $2, $3, 0, 1) \
         ON CONFLICT (exec_id, message) DO UPDATE SET \
         last_ok = CASE WHEN $3 > published.claimed OR ($3 = published.claimed AND published.delivered < $3) THEN 1 ELSE 0 END, \
         claimed = CASE WHEN $3 > published.claimed THEN $3 ELSE published.claimed END \
         RETURNING last_ok",
    )
    .bind(db_id(id)?)
    .bind(message_no(message)?)
    .bind(version)
    .fetch_all(&store.pool)
    .await
    .map_err(backend_err("claiming a status edit"))?;
    let ok: i64 = rows
        .first()
        .ok_or_else(|| StoreError::Backend("claiming a status edit: no row".into()))?
        .try_get("last_ok")
        .map_err(backend_err("claiming a status edit"))?;
    Ok(ok == 1)
}

pub(super) async fn confirm_edit(store: &SqlStore, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
    let rows = sqlx::query(
        "INSERT INTO published (exec_id, message, claimed, delivered, last_ok) VALUES ($1, $2, $3, $3, 1) \
         ON CONFLICT (exec_id, message) DO UPDATE SET \
         delivered = CASE WHEN $3 > published.delivered THEN $3 ELSE published.delivered END, \
         claimed = CASE WHEN $3 > published.claimed THEN $3 ELSE published.claimed END \
         RETURNING claimed",
    )
    .bind(db_id(id)?)
    .bind(message_no(message)?)
    .bind(version)
    .fetch_all(&store.pool)
    .await
    .map_err(backend_err("confirming a status edit"))?;
    let claimed: i64 = rows
        .first()
        .ok_or_else(|| StoreError::Backend("confirming a status edit: no row".into()))?
        .try_get("claimed")
        .map_err(backend_err("confirming a status edit"))?;
    Ok(claimed == version)
}

pub(super) async fn lead(store: &SqlStore, role: &str, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO roles (role, owner, until) VALUES ($1, $2, $3) ON CONFLICT (role) DO UPDATE SET \
         owner = excluded.owner, until = excluded.until WHERE roles.owner = excluded.owner OR roles.until < $4{} \
         RETURNING owner",
        gone(store.backend, "roles.owner")
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(role)
        .bind(owner)
        .bind(ts(until))
        .bind(ts(now))
        .fetch_all(&store.pool)
        .await
        .map_err(backend_err("taking a role"))?;
    Ok(!rows.is_empty())
}

pub(super) async fn take_quota(store: &SqlStore, key: &str, per_minute: u32, now: DateTime<Utc>) -> Result<Option<Duration>, StoreError> {
    let (interval, tolerance) = runbot_commands::limits::gcra(per_minute);
    let now = now.timestamp_micros();
    // One statement; `ok` keeps the decision made from the row as it was.
    let rows = sqlx::query(
        "INSERT INTO quotas (quota_key, tat, ok) VALUES ($1, $2 + $3, 1) ON CONFLICT (quota_key) DO UPDATE SET \
         ok = CASE WHEN (CASE WHEN quotas.tat > $2 THEN quotas.tat ELSE $2 END) - $2 <= $4 THEN 1 ELSE 0 END, \
         tat = CASE WHEN (CASE WHEN quotas.tat > $2 THEN quotas.tat ELSE $2 END) - $2 <= $4 \
         THEN (CASE WHEN quotas.tat > $2 THEN quotas.tat ELSE $2 END) + $3 ELSE quotas.tat END \
         RETURNING ok, tat",
    )
    .bind(key)
    .bind(now)
    .bind(interval)
    .bind(tolerance)
    .fetch_all(&store.pool)
    .await
    .map_err(backend_err("counting a command against its quota"))?;
    let row = rows.first().ok_or_else(|| StoreError::Backend("counting a command against its quota: no row".into()))?;
    let ok: i64 = row.try_get("ok").map_err(backend_err("reading a quota"))?;
    let tat: i64 = row.try_get("tat").map_err(backend_err("reading a quota"))?;
    Ok(if ok == 1 { None } else { Some(runbot_commands::limits::wait_micros(tat - tolerance - now)) })
}

pub(super) async fn take_slot(store: &SqlStore, key: &str, interval: Duration, now: DateTime<Utc>) -> Result<Duration, StoreError> {
    let now = now.timestamp_micros();
    let step = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX / 2);
    let rows = sqlx::query(
        "INSERT INTO pacing (pace_key, next_at) VALUES ($1, $2 + $3) ON CONFLICT (pace_key) DO UPDATE SET \
         next_at = (CASE WHEN pacing.next_at > $2 THEN pacing.next_at ELSE $2 END) + $3 RETURNING next_at",
    )
    .bind(key)
    .bind(now)
    .bind(step)
    .fetch_all(&store.pool)
    .await
    .map_err(backend_err("reserving a write slot"))?;
    let next: i64 = rows
        .first()
        .ok_or_else(|| StoreError::Backend("reserving a write slot: no row".into()))?
        .try_get("next_at")
        .map_err(backend_err("reading a write slot"))?;
    Ok(runbot_commands::limits::wait_micros(next - step - now))
}

pub(super) async fn wake(store: &SqlStore, id: ExecutionId) -> Result<(), StoreError> {
    if store.backend != Backend::Postgres {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(WAKE_CHANNEL)
        .bind(id.to_string())
        .execute(&store.pool)
        .await
        .map_err(backend_err("sending a wake-up"))?;
    Ok(())
}

/// PostgreSQL: a task listening on [`WAKE_CHANNEL`] with its own connection (sqlx's
/// `PgListener` reconnects by itself; a wake-up sent while it is away is found by the sweep).
pub(super) fn wakes(store: &SqlStore) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExecutionId>> {
    if store.backend != Backend::Postgres {
        return None;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let url = store.url.clone();
    tokio::spawn(async move {
        loop {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect(&url).await?;
                l.listen(WAKE_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "store: cannot listen for wake-ups; retrying");
                    tokio::time::sleep(LIVENESS_CHECK).await;
                    continue;
                }
            };
            loop {
                match listener.recv().await {
                    Ok(n) => match n.payload().parse::<ExecutionId>() {
                        Ok(id) => {
                            if tx.send(id).is_err() {
                                return;
                            }
                        }
                        Err(_) => tracing::warn!(payload = n.payload(), "store: an unreadable wake-up"),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "store: wake-up listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    });
    Some(rx)
}
