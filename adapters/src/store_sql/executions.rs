//! Executions in SQL: id allocation, create-with-lock, versioned save (releasing the lock on a
//! terminal state, fenced for a lease holder) and listing.

use super::{SqlStore, backend_err, db_id, exec_id, ts};
use runbot_commands::audit::AuditEntry;
use runbot_commands::model::{Execution, ExecutionId};
use runbot_commands::ports::store::{Fence, ListFilter, StoreError, Versioned};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

/// How often `create` retries taking a lock whose holder vanished between the conflict and
/// reading the holder (it was released concurrently).
const LOCK_ATTEMPTS: usize = 5;

/// The indexed columns derived from the document.
struct Columns {
    state: &'static str,
    terminal: i64,
    final_pending: i64,
    doc: String,
}

impl Columns {
    fn of(exec: &Execution) -> Result<Self, StoreError> {
        let terminal = exec.state.is_terminal();
        let final_pending = terminal && exec.messages.iter().any(|m| !m.final_sent);
        let doc = serde_json::to_string(exec).map_err(|e| StoreError::Backend(format!("encoding execution {}: {e}", exec.id)))?;
        Ok(Columns { state: exec.state.as_str(), terminal: i64::from(terminal), final_pending: i64::from(final_pending), doc })
    }
}

fn decode_doc(row: &AnyRow) -> Result<Execution, StoreError> {
    let doc: String = row.try_get("doc").map_err(backend_err("reading an execution"))?;
    serde_json::from_str(&doc).map_err(|e| StoreError::Backend(format!("stored execution is unreadable: {e}")))
}

pub(super) async fn next_id(store: &SqlStore) -> Result<ExecutionId, StoreError> {
    // fetch_all, not fetch_optional: SQLite hands out the RETURNING row before its implicit
    // commit, and fetch_optional stops there — a commit that failed (a full disk) went unseen
    // and the same number was handed out again.
    let row = sqlx::query("UPDATE id_seq SET n = n + 1 WHERE id = 1 RETURNING n")
        .fetch_all(&store.pool)
        .await
        .map_err(backend_err("allocating an execution number"))?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Backend("the id_seq row is missing".into()))?;
    let n: i64 = row.try_get("n").map_err(backend_err("reading the execution number"))?;
    exec_id(n)
}

pub(super) async fn create(store: &SqlStore, exec: &Execution, lock_key: Option<&str>, entries: &[AuditEntry]) -> Result<(), StoreError> {
    let id = db_id(exec.id)?;
    let cols = Columns::of(exec)?;
    let mut tx = store.begin_write().await?;
    if let Some(key) = lock_key {
        let mut taken = false;
        for _ in 0..LOCK_ATTEMPTS {
            // On PostgreSQL this waits for a concurrent holder's transaction to finish.
            let inserted = sqlx::query("INSERT INTO locks (lock_key, exec_id) VALUES ($1, $2) ON CONFLICT (lock_key) DO NOTHING")
                .bind(key)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend_err("taking a target lock"))?
                .rows_affected();
            if inserted == 1 {
                taken = true;
                break;
            }
            let holder = sqlx::query("SELECT exec_id FROM locks WHERE lock_key = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend_err("reading a lock holder"))?;
            if let Some(row) = holder {
                let holder: i64 = row.try_get("exec_id").map_err(backend_err("reading a lock holder"))?;
                return Err(StoreError::Locked { key: key.to_string(), holder: exec_id(holder)? });
            }
        }
        if !taken {
            return Err(StoreError::Backend(format!("could not take lock {key}: it keeps changing hands")));
        }
    }
    let result = sqlx::query(
        "INSERT INTO executions (id, version, state, runbook, target_name, terminal, final_pending, \
         created_at, doc) VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(cols.state)
    .bind(&exec.runbook)
    .bind(&exec.target.name)
    .bind(cols.terminal)
    .bind(cols.final_pending)
    .bind(ts(exec.created_at))
    .bind(cols.doc)
    .execute(&mut *tx)
    .await;
    match result {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(StoreError::Backend(format!("execution {} already exists", exec.id)));
        }
        Err(e) => return Err(backend_err("storing an execution")(e)),
    }
    if let Some(key) = &exec.inbox {
        super::inbox::consume_in(&mut tx, key).await?;
    }
    super::audit::append_in(store.backend, store.audit_key.get(), &mut tx, entries).await?;
    tx.commit("committing a new execution").await
}

pub(super) async fn load(store: &SqlStore, id: ExecutionId) -> Result<Option<Versioned<Execution>>, StoreError> {
    let row = sqlx::query("SELECT version, doc FROM executions WHERE id = $1")
        .bind(db_id(id)?)
        .fetch_optional(&store.pool)
        .await
        .map_err(backend_err("loading an execution"))?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = row.try_get("version").map_err(backend_err("reading an execution's version"))?;
    Ok(Some(Versioned { value: decode_doc(&row)?, version }))
}

/// Saves a new version; with a `fence`, only while the lease is still that owner's with that
/// epoch (checked by the same statement).
pub(super) async fn save(
    store: &SqlStore,
    exec: &Execution,
    expected: i64,
    entries: &[AuditEntry],
    fence: Option<&Fence>,
) -> Result<i64, StoreError> {
    let id = db_id(exec.id)?;
    let cols = Columns::of(exec)?;
    let mut tx = store.begin_write().await?;
    let sql = if fence.is_some() {
        "UPDATE executions SET version = version + 1, state = $1, runbook = $2, target_name = $3, \
         terminal = $4, final_pending = $5, doc = $6 WHERE id = $7 AND version = $8 AND lease_owner = $9 AND lease_epoch = $10"
    } else {
        "UPDATE executions SET version = version + 1, state = $1, runbook = $2, target_name = $3, \
         terminal = $4, final_pending = $5, doc = $6 WHERE id = $7 AND version = $8"
    };
    let query = sqlx::query(sql)
        .bind(cols.state)
        .bind(&exec.runbook)
        .bind(&exec.target.name)
        .bind(cols.terminal)
        .bind(cols.final_pending)
        .bind(cols.doc)
        .bind(id)
        .bind(expected);
    let query = match fence {
        Some(f) => query.bind(f.owner.clone()).bind(f.epoch),
        None => query,
    };
    let updated = query.execute(&mut *tx).await.map_err(backend_err("saving an execution"))?.rows_affected();
    if updated == 0 {
        drop(tx);
        return Err(match super::replicas::lease_of(store, id).await? {
            None => StoreError::NotFound(exec.id),
            Some((owner, epoch)) if fence.is_some_and(|f| owner.as_deref() != Some(f.owner.as_str()) || epoch != f.epoch) => {
                StoreError::Fenced(exec.id)
            }
            Some(_) => StoreError::Conflict(exec.id),
        });
    }
    if cols.terminal == 1 {
        sqlx::query("DELETE FROM locks WHERE exec_id = $1").bind(id).execute(&mut *tx).await.map_err(backend_err("releasing a target lock"))?;
    }
    super::audit::append_in(store.backend, store.audit_key.get(), &mut tx, entries).await?;
    tx.commit("committing an execution").await?;
    Ok(expected + 1)
}

pub(super) async fn list(store: &SqlStore, filter: &ListFilter) -> Result<Vec<Execution>, StoreError> {
    let mut conditions = Vec::new();
    if filter.active_only {
        conditions.push("terminal = 0");
    }
    if filter.target.is_some() {
        conditions.push("target_name = $1");
    }
    let mut sql = String::from("SELECT doc FROM executions");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY id DESC");
    if filter.limit > 0 {
        // A u32 rendered as digits: nothing from the caller reaches the SQL text.
        sql.push_str(&format!(" LIMIT {}", filter.limit));
    }
    let mut query = sqlx::query(AssertSqlSafe(sql));
    if let Some(target) = &filter.target {
        query = query.bind(target.clone());
    }
    let rows = query.fetch_all(&store.pool).await.map_err(backend_err("listing executions"))?;
    rows.iter().map(decode_doc).collect()
}
