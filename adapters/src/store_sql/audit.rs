//! The hash-chained audit log in SQL: appends read the head under a write lock, link, insert
//! and move the head in one transaction, so appenders in several processes chain correctly.

use super::{Backend, SqlStore, backend_err, parse_ts, ts};
use chrono::SubsecRound;
use runbot_commands::audit::{self, AuditEntry, AuditRecord};
use runbot_commands::ports::store::StoreError;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

fn seq_from_db(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Backend(format!("stored audit sequence {n} is negative")))
}

fn seq_to_db(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Backend(format!("audit sequence {n} is out of range")))
}

/// The head as stored: `None` for the seeded row (seq 0, the genesis hash).
fn decode_head(row: &AnyRow) -> Result<Option<(u64, String)>, StoreError> {
    let seq: i64 = col(row, "seq")?;
    let hash: String = col(row, "hash")?;
    Ok(if seq == 0 { None } else { Some((seq_from_db(seq)?, hash)) })
}

/// One column of an audit row.
fn col<T>(row: &AnyRow, name: &str) -> Result<T, StoreError>
where
    T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(name).map_err(|e| StoreError::Backend(format!("reading audit column {name}: {e}")))
}

fn decode_record(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let seq: i64 = col(row, "seq")?;
    let at: String = col(row, "at")?;
    let detail: String = col(row, "detail")?;
    let entry = AuditEntry {
        at: parse_ts(&at)?,
        kind: col(row, "kind")?,
        actor: col(row, "actor")?,
        execution: col(row, "execution")?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| StoreError::Backend(format!("audit record {seq}: detail is unreadable: {e}")))?,
    };
    Ok(AuditRecord { seq: seq_from_db(seq)?, entry, prev_hash: col(row, "prev_hash")?, hash: col(row, "hash")? })
}

pub(super) async fn append(store: &SqlStore, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
    let mut tx = store.begin_write().await?;
    let record = append_in(store, &mut tx, entry).await?;
    tx.commit().await.map_err(backend_err("committing an audit record"))?;
    Ok(record)
}

/// Appends inside the caller's write transaction (which holds the write lock on SQLite).
pub(super) async fn append_in(
    store: &SqlStore,
    tx: &mut sqlx::Transaction<'static, Any>,
    entry: &AuditEntry,
) -> Result<AuditRecord, StoreError> {
    // Stored times have microsecond precision; link what will be read back.
    let mut entry = entry.clone();
    entry.at = entry.at.trunc_subsecs(6);
    let detail = serde_json::to_string(&entry.detail)
        .map_err(|e| StoreError::Backend(format!("encoding an audit detail: {e}")))?;

    let head_sql = match store.backend {
        Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        // BEGIN IMMEDIATE already holds SQLite's single write lock.
        Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    };
    let head = sqlx::query(head_sql)
        .fetch_optional(&mut **tx)
        .await
        .map_err(backend_err("locking the audit head"))?
        .ok_or_else(|| StoreError::Backend("the audit_head row is missing".into()))?;
    let head = decode_head(&head)?;
    let record = audit::link(head.as_ref().map(|(s, h)| (*s, h.as_str())), entry);
    let seq = seq_to_db(record.seq)?;

    sqlx::query(
        "INSERT INTO audit (seq, at, kind, actor, execution, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(ts(record.entry.at))
    .bind(&record.entry.kind)
    .bind(record.entry.actor.clone())
    .bind(record.entry.execution.clone())
    .bind(detail)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut **tx)
    .await
    .map_err(backend_err("appending an audit record"))?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&record.hash)
        .execute(&mut **tx)
        .await
        .map_err(backend_err("moving the audit head"))?;
    Ok(record)
}

pub(super) async fn log(store: &SqlStore) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError> {
    // One snapshot, so the head and the records agree even while others append.
    let mut tx = store.begin_snapshot().await?;
    let rows = sqlx::query("SELECT seq, at, kind, actor, execution, detail, prev_hash, hash FROM audit ORDER BY seq")
        .fetch_all(&mut *tx)
        .await
        .map_err(backend_err("reading the audit log"))?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend_err("reading the audit head"))?;
    tx.commit().await.map_err(backend_err("finishing the audit read"))?;
    let records = rows.iter().map(decode_record).collect::<Result<Vec<_>, _>>()?;
    let head = match head {
        Some(row) => decode_head(&row)?,
        None => None,
    };
    Ok((records, head))
}
