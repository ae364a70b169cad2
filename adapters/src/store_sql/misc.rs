//! Delivery de-duplication (chat event ids, click ids) and step output chunks in SQL.

use super::{SqlStore, backend_err, db_id, ts};
use chrono::{DateTime, Utc};
use runbot_commands::model::ExecutionId;
use runbot_commands::ports::store::StoreError;
use sqlx::Row;

fn step_no(step: usize) -> Result<i64, StoreError> {
    i64::try_from(step).map_err(|_| StoreError::Backend(format!("step {step} is out of range")))
}

pub(super) async fn first_delivery(store: &SqlStore, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let inserted = sqlx::query("INSERT INTO deliveries (delivery_key, at) VALUES ($1, $2) ON CONFLICT (delivery_key) DO NOTHING")
        .bind(key)
        .bind(ts(now))
        .execute(&store.pool)
        .await
        .map_err(backend_err("recording a delivery"))?
        .rows_affected();
    Ok(inserted == 1)
}

pub(super) async fn append_output(store: &SqlStore, id: ExecutionId, step: usize, text: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO step_output (exec_id, step, chunk) VALUES ($1, $2, $3)")
        .bind(db_id(id)?)
        .bind(step_no(step)?)
        .bind(text)
        .execute(&store.pool)
        .await
        .map_err(backend_err("appending step output"))?;
    Ok(())
}

pub(super) async fn output(store: &SqlStore, id: ExecutionId, step: usize) -> Result<String, StoreError> {
    let rows = sqlx::query("SELECT chunk FROM step_output WHERE exec_id = $1 AND step = $2 ORDER BY id")
        .bind(db_id(id)?)
        .bind(step_no(step)?)
        .fetch_all(&store.pool)
        .await
        .map_err(backend_err("reading step output"))?;
    let mut out = String::new();
    for row in &rows {
        let chunk: String = row.try_get("chunk").map_err(backend_err("reading step output"))?;
        out.push_str(&chunk);
    }
    Ok(out)
}

pub(super) async fn put_artifact(store: &SqlStore, id: ExecutionId, name: &str, content: &str) -> Result<(), StoreError> {
    let exec = db_id(id)?;
    let mut tx = store.begin_write().await?;
    sqlx::query("DELETE FROM artifacts WHERE exec_id = $1 AND name = $2")
        .bind(exec)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(backend_err("keeping an artifact"))?;
    sqlx::query("INSERT INTO artifacts (exec_id, name, content, seq) VALUES ($1, $2, $3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM artifacts WHERE exec_id = $4))")
        .bind(exec)
        .bind(name)
        .bind(content)
        .bind(exec)
        .execute(&mut *tx)
        .await
        .map_err(backend_err("keeping an artifact"))?;
    tx.commit("keeping an artifact").await?;
    Ok(())
}

pub(super) async fn artifacts(store: &SqlStore, id: ExecutionId) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query("SELECT name, content FROM artifacts WHERE exec_id = $1 ORDER BY seq")
        .bind(db_id(id)?)
        .fetch_all(&store.pool)
        .await
        .map_err(backend_err("reading artifacts"))?;
    rows.iter()
        .map(|r| Ok((r.try_get("name").map_err(backend_err("reading artifacts"))?, r.try_get("content").map_err(backend_err("reading artifacts"))?)))
        .collect()
}
