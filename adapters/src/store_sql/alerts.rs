//! The alerts posted (`Store::alert` and friends) in SQL: one row per fingerprint, so a repeat
//! or a `resolved` reaching any replica edits the message the first one posted.

use super::{SqlStore, backend_err, parse_ts, ts};
use chrono::{DateTime, Utc};
use runbot_commands::ports::store::{PostedAlert, StoreError};
use sqlx::{AssertSqlSafe, Row};

pub(super) async fn get(store: &SqlStore, fingerprint: &str) -> Result<Option<PostedAlert>, StoreError> {
    let row = sqlx::query("SELECT fingerprint, message, firing, doc, updated_at FROM alerts WHERE fingerprint = $1")
        .bind(fingerprint)
        .fetch_optional(&store.pool)
        .await
        .map_err(backend_err("reading an alert"))?;
    let Some(row) = row else { return Ok(None) };
    let err = backend_err("reading an alert");
    let doc: String = row.try_get("doc").map_err(backend_err("reading an alert"))?;
    let updated: String = row.try_get("updated_at").map_err(backend_err("reading an alert"))?;
    let firing: i64 = row.try_get("firing").map_err(backend_err("reading an alert"))?;
    Ok(Some(PostedAlert {
        fingerprint: row.try_get("fingerprint").map_err(err)?,
        message: row.try_get("message").map_err(backend_err("reading an alert"))?,
        firing: firing != 0,
        doc: serde_json::from_str(&doc).map_err(|e| StoreError::Backend(format!("stored alert {fingerprint} is unreadable: {e}")))?,
        updated_at: parse_ts(&updated)?,
    }))
}

fn doc(a: &PostedAlert) -> String {
    a.doc.to_string()
}

/// Writes `a` as a new row; on a stored fingerprint, does `on_conflict`. Rows written.
async fn write(store: &SqlStore, a: &PostedAlert, on_conflict: &'static str, doing: &'static str) -> Result<u64, StoreError> {
    let sql = format!(
        "INSERT INTO alerts (fingerprint, message, firing, doc, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (fingerprint) {on_conflict}"
    );
    Ok(sqlx::query(AssertSqlSafe(sql))
        .bind(&a.fingerprint)
        .bind(&a.message)
        .bind(i64::from(a.firing))
        .bind(doc(a))
        .bind(ts(a.updated_at))
        .execute(&store.pool)
        .await
        .map_err(backend_err(doing))?
        .rows_affected())
}

pub(super) async fn insert(store: &SqlStore, a: &PostedAlert) -> Result<bool, StoreError> {
    Ok(write(store, a, "DO NOTHING", "recording an alert").await? == 1)
}

pub(super) async fn save(store: &SqlStore, a: &PostedAlert) -> Result<(), StoreError> {
    let update = "DO UPDATE SET message = excluded.message, firing = excluded.firing, doc = excluded.doc, updated_at = excluded.updated_at";
    write(store, a, update, "saving an alert").await?;
    Ok(())
}

pub(super) async fn forget(store: &SqlStore, fingerprint: &str, resolved_before: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM alerts WHERE fingerprint = $1 OR (firing = 0 AND updated_at < $2)")
        .bind(fingerprint)
        .bind(ts(resolved_before))
        .execute(&store.pool)
        .await
        .map_err(backend_err("forgetting an alert"))?;
    Ok(())
}
