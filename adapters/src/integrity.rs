//! Integrity checks on a PostgreSQL database with sqlx, in one read-only transaction: row
//! counts of critical tables (names validated and quoted) and SQL checks that must return true.

use async_trait::async_trait;
use runbot_commands::ports::integrity::{CheckResult, DbCheckError, DbChecker, SqlCheck, TableCheck};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

pub struct PgChecker;

/// `"schema"."table"` from `table` or `schema.table`, refusing anything that is not a plain
/// identifier.
fn quoted(table: &str) -> Result<String, String> {
    let parts: Vec<&str> = table.split('.').collect();
    let ident = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.len() > 2 || !parts.iter().all(|p| ident(p)) {
        return Err(format!("'{table}' is not a table name (table or schema.table)"));
    }
    Ok(parts.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join("."))
}

/// A connection to `url`; the URL carries credentials, so an error never echoes it.
async fn connect(url: &str) -> Result<PgConnection, DbCheckError> {
    // The URL carries credentials: never echo it.
    PgConnection::connect(url).await.map_err(|e| DbCheckError::Connect(e.to_string().replace(url, "***")))
}

/// A read-only transaction on `conn`.
async fn read_only(conn: &mut PgConnection) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, DbCheckError> {
    let mut tx = conn.begin().await.map_err(|e| DbCheckError::Transaction(format!("cannot start a transaction: {e}")))?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| DbCheckError::Transaction(format!("cannot make the transaction read-only: {e}")))?;
    Ok(tx)
}

#[async_trait]
impl DbChecker for PgChecker {
    async fn run(&self, url: &str, tables: &[TableCheck], checks: &[SqlCheck]) -> Result<Vec<CheckResult>, DbCheckError> {
        let mut conn = connect(url).await?;
        let mut tx = read_only(&mut conn).await?;
        let mut out = Vec::new();
        for t in tables {
            let name = format!("rows in {}", t.table);
            let result = match quoted(&t.table) {
                Err(e) => CheckResult { name, ok: false, detail: e },
                Ok(q) => match sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {q}"))).fetch_one(&mut *tx).await {
                    Ok(row) => {
                        let n: i64 = row.try_get(0).unwrap_or(-1);
                        CheckResult { name, ok: n >= t.min_rows, detail: format!("{n} rows (expected ≥ {})", t.min_rows) }
                    }
                    Err(e) => CheckResult { name, ok: false, detail: format!("{e}") },
                },
            };
            out.push(result);
            // A failed statement aborts a PostgreSQL transaction: start a fresh one.
            if !out.last().is_some_and(|r| r.ok) {
                drop(tx);
                tx = read_only(&mut conn).await?;
            }
        }
        for c in checks {
            let result = match sqlx::query(AssertSqlSafe(c.sql.clone())).fetch_one(&mut *tx).await {
                Ok(row) => match row.try_get::<bool, _>(0) {
                    Ok(v) => CheckResult { name: c.name.clone(), ok: v, detail: v.to_string() },
                    Err(e) => CheckResult { name: c.name.clone(), ok: false, detail: format!("the query must return one boolean: {e}") },
                },
                Err(e) => CheckResult { name: c.name.clone(), ok: false, detail: format!("{e}") },
            };
            let failed = !result.ok;
            out.push(result);
            if failed {
                drop(tx);
                tx = read_only(&mut conn).await?;
            }
        }
        let _ = tx.rollback().await;
        let _ = conn.close().await;
        Ok(out)
    }

    async fn counts(&self, url: &str, tables: &[String]) -> Result<Vec<(String, Option<i64>)>, DbCheckError> {
        let mut conn = connect(url).await?;
        let mut tx = read_only(&mut conn).await?;
        let mut out = Vec::new();
        for t in tables {
            let q = quoted(t).map_err(DbCheckError::Query)?;
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&q)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| DbCheckError::Query(format!("cannot look up {t}: {e}")))?;
            let n = if exists {
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {q}")))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| DbCheckError::Query(format!("cannot count the rows of {t}: {e}")))?;
                Some(n)
            } else {
                None
            };
            out.push((t.clone(), n));
        }
        let _ = tx.rollback().await;
        let _ = conn.close().await;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn table_names_are_validated_and_quoted() {
        assert_eq!(quoted("orders").as_deref(), Ok("\"orders\""));
        assert_eq!(quoted("sales.orders").as_deref(), Ok("\"sales\".\"orders\""));
        for bad in ["", "a.b.c", "orders; DROP TABLE x", "\"x\"", "1abc", "a-b"] {
            assert!(quoted(bad).is_err(), "{bad}");
        }
    }
}
