//! The integrity port: checks a (restored) database — critical tables with a minimum row
//! count, and SQL checks that must return true. The sqlx implementation lives in `adapters/`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A table that must hold at least `min_rows` rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCheck {
    /// `table` or `schema.table`.
    pub table: String,
    pub min_rows: i64,
}

/// A query returning one boolean: true means the check passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlCheck {
    pub name: String,
    pub sql: String,
}

/// One line of the result table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    /// e.g. `1204 rows (≥ 1000)`, `true`, or the error.
    pub detail: String,
}

/// Why the checks could not run at all (a failing check is a [`CheckResult`], not an error).
/// The texts never hold the database URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbCheckError {
    /// The database cannot be reached or refused the login.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// A read-only transaction could not be started.
    #[error("{0}")]
    Transaction(String),
    /// A table could not be looked up or counted.
    #[error("{0}")]
    Query(String),
}

#[async_trait]
pub trait DbChecker: Send + Sync + 'static {
    /// Runs every check (read-only) against the database at `url`; `Err` only when the
    /// database cannot be reached at all.
    async fn run(&self, url: &str, tables: &[TableCheck], checks: &[SqlCheck]) -> Result<Vec<CheckResult>, DbCheckError>;

    /// The row count of each table (read-only), `None` for a table that does not exist; `Err`
    /// only when the database cannot be reached at all or a count fails otherwise.
    async fn counts(&self, url: &str, tables: &[String]) -> Result<Vec<(String, Option<i64>)>, DbCheckError>;
}
