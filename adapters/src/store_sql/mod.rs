//! The SQL state store: one [`Store`] implementation over sqlx's Any driver for SQLite (the
//! embedded default) and PostgreSQL, with one embedded migration directory per backend.
//!
//! Only primitive types cross the Any driver, so times are stored as fixed-width UTC RFC 3339
//! text with microseconds (text order is time order) and flags as 0/1 integers.

mod admin;
mod alerts;
mod audit;
mod executions;
mod inbox;
mod misc;
mod replicas;
mod sqlite_writer;

pub use admin::{create_database, drop_database, with_database};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use runbot_commands::audit::{AuditEntry, AuditRecord};
use runbot_commands::model::{Execution, ExecutionId};
use runbot_commands::ports::store::{Fence, Inbound, InboxClaim, ListFilter, PostedAlert, Store, StoreError, Versioned};
use runbot_commands::setup::{Doing, SetupError};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, Row, Transaction};
use std::collections::HashSet;
use std::time::Duration;

static PG_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Which database the pool talks to; the few places where the SQL differs match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &PG_MIGRATIONS,
        }
    }

    /// The name sqlx's Any driver reports for this backend.
    fn driver_name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// `sqlite::memory:`: one connection that is the whole database.
    in_memory: bool,
    /// Group-commits `append_audit` (see `audit.rs`).
    audit: audit::Writer,
    /// The key audit records are keyed with, once set (`[audit] key`).
    audit_key: audit::AuditKeyCell,
    /// The URL connected to (PostgreSQL: the wake-up listener opens its own connection).
    url: String,
    /// PostgreSQL: the connection holding this process's liveness lock (see `replicas.rs`).
    liveness: replicas::Liveness,
}

/// A write transaction begun and ended by runbot's own `BEGIN`/`COMMIT` statements, so that
/// a failure can never leave a pooled connection inside it: a commit that fails, and a
/// transaction dropped before its commit (an error returned half way), are rolled back, and
/// the connection is closed unless the rollback is known to have worked. (sqlx's own
/// `Transaction` kept counting a transaction that SQLite had already rolled back after
/// SQLITE_FULL; the connection then refused every later `BEGIN` — or, reused, committed the
/// failed write with the next one.)
struct WriteTx {
    conn: Option<sqlx::pool::PoolConnection<Any>>,
    /// An in-memory SQLite's only connection is the database: never closed.
    keep: bool,
}

impl WriteTx {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        // Only `commit` and `drop` take the connection, and both consume the transaction.
        self.conn.as_deref_mut().expect("a write transaction holds its connection until it ends")
    }

    async fn commit(mut self, what: &'static str) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else { return Err(StoreError::Backend(format!("{what}: no connection"))) };
        match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => {
                Self::discard(conn, self.keep).await;
                Err(backend_err(what)(e))
            }
        }
    }

    /// Rolls back whatever the connection still has open; a connection whose rollback failed
    /// for another reason than "nothing to roll back" is closed instead of reused.
    async fn discard(mut conn: sqlx::pool::PoolConnection<Any>, keep: bool) {
        if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
            let nothing_open = e.to_string().contains("no transaction is active");
            if !nothing_open && !keep {
                tracing::warn!(error = %e, "store: rollback failed; closing the connection");
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let keep = self.keep;
        match tokio::runtime::Handle::try_current() {
            // The connection returns to the pool only once rolled back.
            Ok(rt) => {
                rt.spawn(WriteTx::discard(conn, keep));
            }
            Err(_) if keep => {}
            Err(_) => conn.close_on_drop(),
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        self.conn.as_deref().expect("a write transaction holds its connection until it ends")
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        self.conn()
    }
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Connects to `sqlite:<path>` (the file is created if missing), `sqlite::memory:`, or
    /// `postgres://…`, and applies the backend's migrations.
    pub async fn connect(url: &str) -> Result<SqlStore, SetupError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(SetupError("unsupported store URL: expected sqlite:<path> or postgres://…".into()));
        };
        let (url, in_memory) = match backend {
            Backend::Sqlite => sqlite_url(url),
            Backend::Postgres => (url.to_string(), false),
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        let options = match backend {
            // Every connection to `sqlite::memory:` is its own database: keep exactly one, forever.
            Backend::Sqlite if in_memory => options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None),
            // Writers are serialised by SQLite anyway; a few connections let reads overlap. A
            // local file connection does not drop like a network one: no ping before each use.
            Backend::Sqlite => options.max_connections(4).test_before_acquire(false),
            Backend::Postgres => options.max_connections(10),
        };
        let pool = options.connect(&url).await.doing(format_args!("connecting to the {} store", backend.name()))?;
        let reported = pool.acquire().await.doing("acquiring a store connection")?.backend_name().to_string();
        if reported != backend.driver_name() {
            return Err(SetupError(format!("store URL selected {} but the driver reports {reported}", backend.driver_name())));
        }
        if backend == Backend::Sqlite && !in_memory {
            enable_wal(&pool).await;
        }
        backend.migrator().run(&pool).await.doing(format_args!("applying the {} store migrations", backend.name()))?;
        let file = match backend {
            Backend::Sqlite if !in_memory => Some(sqlite_file(&pool, &url).await?),
            _ => None,
        };
        let audit_key = audit::AuditKeyCell::default();
        let audit = audit::Writer::spawn(pool.clone(), backend, file, audit_key.clone());
        Ok(SqlStore { pool, backend, in_memory, audit, audit_key, url, liveness: replicas::Liveness::default() })
    }

    /// Commits the audit records already queued and stops taking new ones, then closes the
    /// pool: waits for connections in use to be returned (their writes committed or rolled
    /// back), then closes every connection (SQLite checkpoints its WAL). For shutdown.
    pub async fn close(&self) {
        self.audit.close().await;
        self.pool.close().await;
    }

    /// Keys every audit record appended from now on with `key` (`[audit] key`). Set once, at
    /// start-up before anything is appended; a second call is refused.
    pub fn set_audit_key(&self, key: runbot_commands::audit::AuditKey) -> Result<(), SetupError> {
        self.audit_key.set(key).map_err(|k| SetupError(format!("the audit key is already set (tried to set '{}')", k.id)))
    }

    /// The chain head: `(seq, hash)` of the newest record, `(0, GENESIS)` when there is none.
    pub async fn audit_head(&self) -> Result<(u64, String), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_err("reading the audit head"))?
            .ok_or_else(|| StoreError::Backend("the audit_head row is missing".into()))?;
        let seq: i64 = row.try_get("seq").map_err(backend_err("reading the audit head"))?;
        let hash: String = row.try_get("hash").map_err(backend_err("reading the audit head"))?;
        Ok((u64::try_from(seq).map_err(|_| StoreError::Backend(format!("stored audit sequence {seq} is negative")))?, hash))
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Whether the store takes a write now, within `within`: one committed update of the id
    /// counter that leaves it as it is — a real write, which a full disk, a read-only file or
    /// database, or a lock held elsewhere makes fail (for `/readyz`).
    pub async fn write_probe(&self, within: Duration) -> Result<(), SetupError> {
        let write = sqlx::query("UPDATE id_seq SET n = n WHERE id = 1").execute(&self.pool);
        match tokio::time::timeout(within, write).await {
            Ok(Ok(r)) if r.rows_affected() == 1 => Ok(()),
            Ok(Ok(_)) => Err(SetupError("the id counter row is missing".into())),
            Ok(Err(e)) => Err(e).doing("a test write failed"),
            Err(_) => Err(SetupError(format!("a test write did not finish within {} ms", within.as_millis()))),
        }
    }

    /// Whether every embedded migration for this backend has been applied successfully.
    pub async fn migrations_applied(&self) -> Result<bool, SetupError> {
        let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_all(&self.pool)
            .await
            .doing("reading the applied migrations")?;
        let applied =
            rows.iter().map(|r| r.try_get::<i64, _>("version")).collect::<Result<HashSet<i64>, _>>().doing("decoding the applied migrations")?;
        Ok(self.backend.migrator().iter().filter(|m| !m.migration_type.is_down_migration()).all(|m| applied.contains(&m.version)))
    }

    /// Starts a transaction that may write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so a read-then-write never fails half way with SQLITE_BUSY.
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend_err("starting a write transaction"))?;
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        match sqlx::query(begin).execute(&mut *conn).await {
            Ok(_) => Ok(WriteTx { conn: Some(conn), keep: self.in_memory }),
            Err(e) => {
                WriteTx::discard(conn, self.in_memory).await;
                Err(backend_err("starting a write transaction")(e))
            }
        }
    }

    /// Starts a read-only transaction that sees one consistent snapshot.
    async fn begin_snapshot(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin().await,
            Backend::Postgres => self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await,
        };
        tx.map_err(backend_err("starting a read transaction"))
    }
}

/// Adds `mode=rwc` to a SQLite file URL that does not choose a mode, so a missing file is
/// created. Returns the URL and whether it names an in-memory database.
fn sqlite_url(url: &str) -> (String, bool) {
    let has_mode = url_params(url).any(|kv| kv.starts_with("mode="));
    let in_memory = url.contains(":memory:") || url_params(url).any(|kv| kv == "mode=memory");
    if in_memory || has_mode {
        return (url.to_string(), in_memory);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}mode=rwc"), false)
}

/// The file a SQLite pool opened (as SQLite resolved the URL's path), for the group commit's
/// own connection; read-only when the URL asked for `mode=ro`.
async fn sqlite_file(pool: &AnyPool, url: &str) -> Result<sqlite_writer::Target, SetupError> {
    let row = sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'")
        .fetch_optional(pool)
        .await
        .doing("finding the SQLite store's file")?;
    let path: String = row.map(|r| r.try_get::<String, _>(0)).transpose().doing("finding the SQLite store's file")?.unwrap_or_default();
    if path.is_empty() {
        return Err(SetupError("the SQLite store has no file (an in-memory or temporary database under a file URL)".into()));
    }
    let read_only = url_params(url).any(|kv| kv == "mode=ro");
    Ok(sqlite_writer::Target { path: path.into(), read_only })
}

/// A store URL's query parameters, `key=value` each.
fn url_params(url: &str) -> impl Iterator<Item = &str> {
    url.split_once('?').map(|(_, q)| q).unwrap_or("").split('&')
}

/// Switches a SQLite file to write-ahead logging (persistent; readers never block writers).
/// Connections already wait up to 5 s on a locked database (sqlx's default `busy_timeout`).
async fn enable_wal(pool: &AnyPool) {
    let mode = sqlx::query("PRAGMA journal_mode = WAL").fetch_optional(pool).await;
    match mode.map(|row| row.and_then(|r| r.try_get::<String, _>(0).ok())) {
        Ok(Some(m)) if m.eq_ignore_ascii_case("wal") => {}
        Ok(other) => tracing::warn!(mode = ?other, "sqlite store: could not switch to WAL journal mode"),
        Err(e) => tracing::warn!(error = %e, "sqlite store: could not switch to WAL journal mode"),
    }
}

/// Maps a sqlx error to [`StoreError::Backend`] with what was being done.
fn backend_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Backend(format!("{context}: {e}"))
}

/// A time as stored: UTC RFC 3339 with microseconds and `Z`, fixed width.
fn ts(t: DateTime<Utc>) -> String {
    runbot_commands::audit::rfc3339_micros(t)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| StoreError::Backend(format!("stored time '{s}' is unreadable: {e}")))
}

fn db_id(id: ExecutionId) -> Result<i64, StoreError> {
    i64::try_from(id.0).map_err(|_| StoreError::Backend(format!("execution {id} is out of range")))
}

fn exec_id(n: i64) -> Result<ExecutionId, StoreError> {
    u64::try_from(n).map(ExecutionId).map_err(|_| StoreError::Backend(format!("stored execution number {n} is negative")))
}

#[async_trait]
impl Store for SqlStore {
    async fn next_id(&self) -> Result<ExecutionId, StoreError> {
        executions::next_id(self).await
    }

    async fn create(&self, exec: &Execution, lock_key: Option<&str>) -> Result<(), StoreError> {
        executions::create(self, exec, lock_key, &[]).await
    }

    async fn create_audited(&self, exec: &Execution, lock_key: Option<&str>, entries: &[AuditEntry]) -> Result<(), StoreError> {
        executions::create(self, exec, lock_key, entries).await
    }

    async fn load(&self, id: ExecutionId) -> Result<Option<Versioned<Execution>>, StoreError> {
        executions::load(self, id).await
    }

    async fn save(&self, exec: &Execution, expected: i64) -> Result<i64, StoreError> {
        executions::save(self, exec, expected, &[], None).await
    }

    async fn save_audited(&self, exec: &Execution, expected: i64, entries: &[AuditEntry]) -> Result<i64, StoreError> {
        executions::save(self, exec, expected, entries, None).await
    }

    async fn save_fenced(&self, exec: &Execution, expected: i64, entries: &[AuditEntry], fence: &Fence) -> Result<i64, StoreError> {
        executions::save(self, exec, expected, entries, Some(fence)).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Execution>, StoreError> {
        executions::list(self, filter).await
    }

    async fn claim(&self, id: ExecutionId, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        replicas::claim(self, id, owner, until, now).await
    }

    async fn release(&self, id: ExecutionId, owner: &str) -> Result<(), StoreError> {
        replicas::release(self, id, owner).await
    }

    async fn owner_alive(&self, owner: &str) -> Result<Option<bool>, StoreError> {
        replicas::owner_alive(self, owner).await
    }

    async fn claim_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
        replicas::claim_edit(self, id, message, version).await
    }

    async fn confirm_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
        replicas::confirm_edit(self, id, message, version).await
    }

    async fn lead(&self, role: &str, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, StoreError> {
        replicas::lead(self, role, owner, until, now).await
    }

    fn shared(&self) -> bool {
        // PostgreSQL is for several replicas; a SQLite file belongs to one process.
        self.backend == Backend::Postgres
    }

    async fn take_quota(&self, key: &str, per_minute: u32, now: DateTime<Utc>) -> Result<Option<Duration>, StoreError> {
        replicas::take_quota(self, key, per_minute, now).await
    }

    async fn take_slot(&self, key: &str, interval: Duration, now: DateTime<Utc>) -> Result<Duration, StoreError> {
        replicas::take_slot(self, key, interval, now).await
    }

    async fn wake(&self, id: ExecutionId) -> Result<(), StoreError> {
        replicas::wake(self, id).await
    }

    fn wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExecutionId>> {
        replicas::wakes(self)
    }

    async fn orphans(&self, owner: &str, now: DateTime<Utc>) -> Result<Vec<ExecutionId>, StoreError> {
        replicas::orphans(self, owner, now).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        self.audit.append(entry).await
    }

    async fn audit_log(&self) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError> {
        audit::log(self).await
    }

    async fn alert(&self, fingerprint: &str) -> Result<Option<PostedAlert>, StoreError> {
        alerts::get(self, fingerprint).await
    }

    async fn insert_alert(&self, alert: &PostedAlert) -> Result<bool, StoreError> {
        alerts::insert(self, alert).await
    }

    async fn save_alert(&self, alert: &PostedAlert) -> Result<(), StoreError> {
        alerts::save(self, alert).await
    }

    async fn forget_alert(&self, fingerprint: &str, resolved_before: DateTime<Utc>) -> Result<(), StoreError> {
        alerts::forget(self, fingerprint, resolved_before).await
    }

    async fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        misc::first_delivery(self, key, now).await
    }

    async fn record_inbound(&self, item: Inbound, audit: AuditEntry) -> Result<bool, StoreError> {
        self.audit.record_inbound(item, audit).await
    }

    async fn inbound_done(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.audit.inbound_done(keys).await
    }

    async fn claim_inbound(&self, c: &InboxClaim) -> Result<Vec<Inbound>, StoreError> {
        inbox::claim(self, c).await
    }

    async fn put_artifact(&self, id: ExecutionId, name: &str, content: &str) -> Result<(), StoreError> {
        misc::put_artifact(self, id, name, content).await
    }

    async fn artifacts(&self, id: ExecutionId) -> Result<Vec<(String, String)>, StoreError> {
        misc::artifacts(self, id).await
    }

    async fn append_output(&self, id: ExecutionId, step: usize, text: &str) -> Result<(), StoreError> {
        misc::append_output(self, id, step, text).await
    }

    async fn output(&self, id: ExecutionId, step: usize) -> Result<String, StoreError> {
        misc::output(self, id, step).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(backend_err("ping")).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode_unless_chosen() {
        assert_eq!(sqlite_url("sqlite:///tmp/a.db"), ("sqlite:///tmp/a.db?mode=rwc".into(), false));
        assert_eq!(sqlite_url("sqlite:a.db?cache=shared"), ("sqlite:a.db?cache=shared&mode=rwc".into(), false));
        assert_eq!(sqlite_url("sqlite:a.db?mode=ro"), ("sqlite:a.db?mode=ro".into(), false));
        assert_eq!(sqlite_url("sqlite::memory:"), ("sqlite::memory:".into(), true));
    }

    #[test]
    fn stored_times_are_fixed_width_and_ordered() {
        let a = DateTime::from_timestamp(1_700_000_000, 0).map(ts);
        let b = DateTime::from_timestamp(1_700_000_000, 5_000).map(ts);
        assert_eq!(a.as_deref(), Some("2023-11-14T22:13:20.000000Z"));
        assert!(a < b);
        assert_eq!(a.map(|s| s.len()), b.map(|s| s.len()));
    }
}
