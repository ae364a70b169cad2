//! The hash-chained audit log in SQL.
//!
//! Every append reads the head under the write lock, links, inserts and moves the head in the
//! same transaction, so appenders in several processes (and the store's other write
//! transactions, which append inside their own, [`append_in`]) chain correctly.
//!
//! Lone appends ([`Writer::append`], i.e. `Store::append_audit`) are **group-committed**: one
//! writer task takes every entry waiting, links them in arrival order after the head it reads
//! in its transaction, inserts them, moves the head once, commits (one fsync on SQLite, whose
//! default `synchronous` is FULL), and only then answers each caller. A SQLite file's commits
//! run on a thread of their own through SQLite's C API (`sqlite_writer.rs`); PostgreSQL's and
//! an in-memory SQLite's go through the pool, with multi-row `INSERT`s. Under load many appends
//! share one commit; alone, an append costs one commit plus the commit already in progress at
//! most. An append is answered only once its record is durable.

use super::{Backend, backend_err, parse_ts, ts};
use chrono::SubsecRound;
use runbot_commands::audit::{self, AuditEntry, AuditRecord};
use runbot_commands::ports::store::{Inbound, StoreError};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Row};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The key records are keyed with: set once at start-up ([`super::SqlStore::set_audit_key`]),
/// shared by the writer task and the store's own transactions. Unset: unkeyed.
pub(super) type AuditKeyCell = std::sync::Arc<OnceLock<audit::AuditKey>>;

/// The most entries one group commit takes: bounds a transaction's size and duration.
const MAX_BATCH: usize = 512;
/// A connection the writer kept that has been idle this long is handed back before use.
const HOLD_IDLE: Duration = Duration::from_secs(10);
/// How often the writer lets ready tasks run before a commit, while they keep queueing.
const MAX_YIELDS: usize = 8;
/// After a commit of at least [`ECHO_MIN`] entries, the next one waits up to this long for as
/// many as half of them to queue. Under load the callers a commit answered send their next
/// requests at once: without the wait the first of them would be committed alone (an fsync
/// for one entry) while the rest queue behind it — alternating commits of 1 and of 64 were
/// measured at 64 connections. Never at light load: a commit of fewer entries waits for none.
const ECHO_WAIT: Duration = Duration::from_millis(1);
const ECHO_MIN: usize = 16;
/// Appends that may wait for the writer before callers wait to queue (back-pressure).
const QUEUE: usize = 4096;
/// The largest multi-row `INSERT` (9 parameters a row); smaller ones are powers of two, so a
/// connection caches at most 7 prepared statements for them.
const INSERT_ROWS: usize = 64;
// Audit inserts are split by the inbox's chunking.
const _: () = assert!(INSERT_ROWS == super::inbox::CHUNK);

pub(super) fn seq_from_db(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Backend(format!("stored audit sequence {n} is negative")))
}

pub(super) fn seq_to_db(n: u64) -> Result<i64, StoreError> {
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
        detail: serde_json::from_str(&detail).map_err(|e| StoreError::Backend(format!("audit record {seq}: detail is unreadable: {e}")))?,
    };
    Ok(AuditRecord { seq: seq_from_db(seq)?, entry, prev_hash: col(row, "prev_hash")?, hash: col(row, "hash")?, key_id: col(row, "key_id")? })
}

/// An entry made ready to store: its time at the stored precision (so what is linked is what
/// is read back) and its detail encoded.
pub(super) struct Prepared {
    entry: AuditEntry,
    detail: String,
}

fn prepare(mut entry: AuditEntry) -> Result<Prepared, StoreError> {
    entry.at = entry.at.trunc_subsecs(6);
    let detail = serde_json::to_string(&entry.detail).map_err(|e| StoreError::Backend(format!("encoding an audit detail: {e}")))?;
    Ok(Prepared { entry, detail })
}

/// The head move.
const MOVE_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";

/// `INSERT … VALUES (…), (…)` for `rows` rows, `rows` a power of two ≤ [`INSERT_ROWS`].
/// PostgreSQL numbers its parameters (`$1`…); SQLite gets anonymous `?`s, bound in order:
/// sqlx looks a numbered parameter's name up in SQLite for each one it binds, a linear search
/// that made binding a 512-parameter statement quadratic. Anonymous ones also let SQLite's
/// group commit put several statements in one text, the parameters bound across them.
fn insert_sql(backend: Backend, rows: usize) -> &'static str {
    static PG: OnceLock<Vec<&'static str>> = OnceLock::new();
    static SQLITE: OnceLock<Vec<&'static str>> = OnceLock::new();
    let (cell, numbered) = match backend {
        Backend::Postgres => (&PG, true),
        Backend::Sqlite => (&SQLITE, false),
    };
    let all = cell.get_or_init(|| {
        (0..=INSERT_ROWS.trailing_zeros())
            .map(|p| {
                let mut s = String::from("INSERT INTO audit (seq, at, kind, actor, execution, detail, prev_hash, hash, key_id) VALUES ");
                for r in 0..1usize << p {
                    s.push_str(if r > 0 { ", (" } else { "(" });
                    for c in 1..=9 {
                        if c > 1 {
                            s.push_str(", ");
                        }
                        if numbered {
                            s.push_str(&format!("${}", r * 9 + c));
                        } else {
                            s.push('?');
                        }
                    }
                    s.push(')');
                }
                &*s.leak()
            })
            .collect()
    });
    all[rows.trailing_zeros() as usize]
}

/// Links `entries` after the head and writes them, inside the caller's write transaction
/// (which holds the write lock on SQLite; the head row is locked here on PostgreSQL): one
/// head read, one multi-row insert per chunk, one head update. `key`: what records are keyed with.
async fn write_in(
    backend: Backend,
    key: Option<&audit::AuditKey>,
    conn: &mut AnyConnection,
    entries: Vec<Prepared>,
) -> Result<Vec<AuditRecord>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let head_sql = match backend {
        Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        // The caller's BEGIN IMMEDIATE holds SQLite's single write lock.
        Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    };
    let head = sqlx::query(head_sql)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend_err("locking the audit head"))?
        .ok_or_else(|| StoreError::Backend("the audit_head row is missing".into()))?;
    let (records, details, prev) = link_all(key, decode_head(&head)?, entries)?;
    let (seq, hash) = prev.unwrap_or_default();
    for (start, rows) in super::inbox::chunks(records.len()) {
        let mut q = sqlx::query(AssertSqlSafe(insert_sql(backend, rows)));
        for (r, detail) in records[start..start + rows].iter().zip(&details[start..start + rows]) {
            q = bind_record(q, r, detail)?;
        }
        q.execute(&mut *conn).await.map_err(backend_err("appending audit records"))?;
    }
    sqlx::query(MOVE_HEAD).bind(seq_to_db(seq)?).bind(hash).execute(&mut *conn).await.map_err(backend_err("moving the audit head"))?;
    Ok(records)
}

/// Linked entries: their records, their encoded details, and the new head.
pub(super) type Linked = (Vec<AuditRecord>, Vec<String>, Option<(u64, String)>);

/// Links `entries` in order after `head`.
pub(super) fn link_all(key: Option<&audit::AuditKey>, mut head: Option<(u64, String)>, entries: Vec<Prepared>) -> Result<Linked, StoreError> {
    let mut records = Vec::with_capacity(entries.len());
    let mut details = Vec::with_capacity(entries.len());
    for p in entries {
        let record = audit::link_encoded(key, head.as_ref().map(|(s, h)| (*s, h.as_str())), p.entry, &p.detail);
        seq_to_db(record.seq)?;
        head = Some((record.seq, record.hash.clone()));
        records.push(record);
        details.push(p.detail);
    }
    Ok((records, details, head))
}

/// Appends `entries`, in order, inside the caller's write transaction.
pub(super) async fn append_in(
    backend: Backend,
    key: Option<&audit::AuditKey>,
    conn: &mut AnyConnection,
    entries: &[AuditEntry],
) -> Result<Vec<AuditRecord>, StoreError> {
    let prepared = entries.iter().cloned().map(prepare).collect::<Result<Vec<_>, _>>()?;
    write_in(backend, key, conn, prepared).await
}

type Reply = oneshot::Sender<Result<AuditRecord, StoreError>>;

enum Job {
    Append(AuditEntry, Reply),
    /// A received command and its audit record: both written, unless its key is stored
    /// already (then neither; the answer is `false`).
    Inbound(Box<Inbound>, AuditEntry, oneshot::Sender<Result<bool, StoreError>>),
    /// Received commands acted on.
    Done(Vec<String>, oneshot::Sender<Result<(), StoreError>>),
    /// Commit everything queued before, then stop.
    Close(oneshot::Sender<()>),
}

fn closed() -> StoreError {
    StoreError::Backend("writing to the store: it is closed".into())
}

/// The group-committing audit writer (see the module docs). Cheap to share; the task stops
/// when the store is closed or dropped.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer. A SQLite file (`file`) is written by a thread of its own
    /// (`sqlite_writer.rs`). Otherwise commits go through the pool: on PostgreSQL the writer
    /// keeps one of its connections between commits (no pool round trips per commit; a
    /// connection that failed is handed back and another taken); an in-memory SQLite's only
    /// connection is taken for each commit and handed back.
    pub(super) fn spawn(pool: AnyPool, backend: Backend, file: Option<super::sqlite_writer::Target>, key: AuditKeyCell) -> Writer {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let thread = file.map(|f| super::sqlite_writer::Thread::new(f, key.clone()));
        tokio::spawn(run(Conn { pool, backend, held: None, key, thread }, rx));
        Writer { jobs }
    }

    /// Appends one entry; returns once its record is committed.
    pub(super) async fn append(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Append(entry.clone(), reply)).await.map_err(|_| closed())?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Records a received command with its audit record; returns once committed, `false` when
    /// its key was recorded before (nothing written).
    pub(super) async fn record_inbound(&self, item: Inbound, entry: AuditEntry) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Inbound(Box::new(item), entry, reply)).await.map_err(|_| closed())?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Marks received commands done, in the next group commit.
    pub(super) async fn inbound_done(&self, keys: &[String]) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Done(keys.to_vec(), reply)).await.map_err(|_| closed())?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Commits what is queued, then stops the writer; later appends fail.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// The writer's connection.
struct Conn {
    pool: AnyPool,
    backend: Backend,
    /// The connection kept since its last commit, and when that was.
    held: Option<(PoolConnection<Any>, Instant)>,
    /// The key records are keyed with, once set.
    key: AuditKeyCell,
    /// A SQLite file's writer thread: every commit goes through it instead of the pool.
    thread: Option<super::sqlite_writer::Thread>,
}

/// What one group commit writes.
#[derive(Default)]
pub(super) struct Batch {
    /// Received commands to record; `entries` holds each one's audit record.
    pub inbound: Vec<Inbound>,
    /// Received commands acted on.
    pub done: Vec<String>,
    /// Audit records in arrival order; `Some(i)`: `inbound[i]`'s, written only with it.
    pub entries: Vec<(Prepared, Option<usize>)>,
}

/// What one group commit wrote: whether each received command was new, and each audit
/// entry's record (`None`: it belonged to a repeated command and was not written).
pub(super) struct Written {
    pub recorded: Vec<bool>,
    pub records: Vec<Option<AuditRecord>>,
}

impl Written {
    /// What a commit wrote: `records` are those of the entries [`kept`] left in, in order;
    /// `keep` says, for each entry of the batch, whether it was.
    pub(super) fn new(recorded: Vec<bool>, keep: &[bool], records: Vec<AuditRecord>) -> Written {
        let mut records = records.into_iter();
        let records = keep.iter().map(|k| if *k { records.next() } else { None }).collect();
        Written { recorded, records }
    }
}

impl Conn {
    /// One group commit's transaction: records the received commands, marks the done ones,
    /// links and writes the audit entries (those of repeated commands left out), commits.
    async fn write(&mut self, batch: Batch) -> Result<Written, StoreError> {
        if let Some(thread) = &mut self.thread {
            return thread.write(batch).await;
        }
        // A connection kept busy is used as it is; one that sat idle goes back to the pool,
        // which checks it on the next acquire (a server may have closed it meanwhile).
        let held = self.held.take().filter(|(_, since)| since.elapsed() < HOLD_IDLE).map(|(c, _)| c);
        let mut conn = match held {
            Some(c) => c,
            None => self.pool.acquire().await.map_err(backend_err("starting a write transaction"))?,
        };
        // The transaction is begun and committed by runbot's own statements; sqlx does not
        // track it, so a failure — the commit's too — is rolled back here and the connection
        // is not reused.
        let written = match write_pooled(self.backend, self.key.get(), &mut conn, batch).await {
            Ok(w) => w,
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                conn.close_on_drop();
                return Err(e);
            }
        };
        // Kept only after a commit that went through: after a failure the connection goes
        // back to the pool, which checks it (and closes it when broken).
        if self.backend == Backend::Postgres {
            self.held = Some((conn, Instant::now()));
        }
        Ok(written)
    }
}

/// The group commit through the pool (PostgreSQL, an in-memory SQLite): the received commands
/// (`RETURNING` says which were new), the done marks, then the audit records after the locked
/// head, and `COMMIT`.
async fn write_pooled(backend: Backend, key: Option<&audit::AuditKey>, conn: &mut AnyConnection, batch: Batch) -> Result<Written, StoreError> {
    let begin = match backend {
        Backend::Postgres => "BEGIN",
        Backend::Sqlite => "BEGIN IMMEDIATE",
    };
    sqlx::query(begin).execute(&mut *conn).await.map_err(backend_err("starting a write transaction"))?;
    let recorded = super::inbox::record_in(backend, conn, &batch.inbound).await?;
    super::inbox::done_in(backend, conn, &batch.done).await?;
    let (entries, keep) = kept(batch.entries, &recorded);
    let records = write_in(backend, key, conn, entries).await?;
    sqlx::query("COMMIT").execute(&mut *conn).await.map_err(backend_err("committing audit records"))?;
    Ok(Written::new(recorded, &keep, records))
}

/// The audit entries to write — those of repeated commands left out — and which were kept.
pub(super) fn kept(entries: Vec<(Prepared, Option<usize>)>, recorded: &[bool]) -> (Vec<Prepared>, Vec<bool>) {
    let keep: Vec<bool> = entries.iter().map(|(_, of)| of.is_none_or(|i| recorded[i])).collect();
    let entries = entries.into_iter().zip(&keep).filter(|(_, k)| **k).map(|((p, _), _)| p).collect();
    (entries, keep)
}

/// Binds a record's columns, in the audit insert's order.
fn bind_record<'q>(q: super::inbox::AnyQuery<'q>, r: &'q AuditRecord, detail: &'q str) -> Result<super::inbox::AnyQuery<'q>, StoreError> {
    Ok(q.bind(seq_to_db(r.seq)?)
        .bind(ts(r.entry.at))
        .bind(r.entry.kind.as_str())
        .bind(r.entry.actor.as_deref())
        .bind(r.entry.execution.as_deref())
        .bind(detail)
        .bind(r.prev_hash.as_str())
        .bind(r.hash.as_str())
        .bind(r.key_id.as_str()))
}

/// Who waits for an entry of a group commit.
enum Waiter {
    Append(Reply),
    Inbound(oneshot::Sender<Result<bool, StoreError>>),
}

async fn run(mut conn: Conn, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(64);
    // How many entries the last commit wrote.
    let mut last = 0;
    loop {
        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return; // the store was dropped
        }
        if last >= ECHO_MIN {
            let until = tokio::time::Instant::now() + ECHO_WAIT;
            while jobs.len() < last / 2 && !jobs.iter().any(|j| matches!(j, Job::Close(_))) {
                match tokio::time::timeout_at(until, rx.recv_many(&mut jobs, MAX_BATCH)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        // Let the tasks that are ready run first: they queue their records in time for this
        // commit (fewer, larger commits: less CPU per record, and less waiting behind a commit
        // in progress). When nothing else is ready this returns at once.
        for _ in 0..MAX_YIELDS {
            let queued = rx.len();
            tokio::task::yield_now().await;
            if rx.len() == queued {
                break;
            }
        }
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut closing = None;
        let mut batch = Batch::default();
        let mut waiters = Vec::with_capacity(jobs.len());
        let mut done_waiters = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Close(done) => closing = Some(done),
                job if closing.is_some() => refuse(job),
                Job::Append(entry, reply) => match prepare(entry) {
                    Ok(p) => {
                        batch.entries.push((p, None));
                        waiters.push(Waiter::Append(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Job::Inbound(item, entry, reply) => match prepare(entry) {
                    Ok(p) => {
                        batch.entries.push((p, Some(batch.inbound.len())));
                        batch.inbound.push(*item);
                        waiters.push(Waiter::Inbound(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Job::Done(keys, reply) => {
                    batch.done.extend(keys);
                    done_waiters.push(reply);
                }
            }
        }
        last = waiters.len();
        if !waiters.is_empty() || !done_waiters.is_empty() {
            commit(&mut conn, batch, waiters, done_waiters).await;
        }
        if let Some(done) = closing {
            conn.held = None;
            if let Some(thread) = &mut conn.thread {
                thread.stop().await;
            }
            rx.close();
            while let Ok(job) = rx.try_recv() {
                refuse(job);
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Answers a job that arrived after the store began closing.
fn refuse(job: Job) {
    match job {
        Job::Append(_, reply) => {
            let _ = reply.send(Err(closed()));
        }
        Job::Inbound(_, _, reply) => {
            let _ = reply.send(Err(closed()));
        }
        Job::Done(_, reply) => {
            let _ = reply.send(Err(closed()));
        }
        Job::Close(done) => {
            let _ = done.send(());
        }
    }
}

type DoneReply = oneshot::Sender<Result<(), StoreError>>;

/// One group commit: the whole batch in one transaction, then every waiter answered.
async fn commit(conn: &mut Conn, batch: Batch, waiters: Vec<Waiter>, done_waiters: Vec<DoneReply>) {
    let started = Instant::now();
    match conn.write(batch).await {
        Ok(Written { recorded, records }) => {
            tracing::trace!(entries = records.len(), us = started.elapsed().as_micros() as u64, "audit records group-committed");
            let mut recorded = recorded.into_iter();
            for (record, waiter) in records.into_iter().zip(waiters) {
                match waiter {
                    Waiter::Append(reply) => {
                        let _ = reply.send(record.ok_or_else(|| StoreError::Backend("an audit record was not written".into())));
                    }
                    Waiter::Inbound(reply) => {
                        let _ = reply.send(Ok(recorded.next().unwrap_or(false)));
                    }
                }
            }
            for reply in done_waiters {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) => {
            let why = match e {
                StoreError::Backend(why) => why,
                other => other.to_string(),
            };
            tracing::error!(error = %why, entries = waiters.len(), "could not commit audit records");
            for waiter in waiters {
                let _ = match waiter {
                    Waiter::Append(reply) => reply.send(Err(StoreError::Backend(why.clone()))).is_ok(),
                    Waiter::Inbound(reply) => reply.send(Err(StoreError::Backend(why.clone()))).is_ok(),
                };
            }
            for reply in done_waiters {
                let _ = reply.send(Err(StoreError::Backend(why.clone())));
            }
        }
    }
}

pub(super) async fn log(store: &super::SqlStore) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError> {
    // One snapshot, so the head and the records agree even while others append.
    let mut tx = store.begin_snapshot().await?;
    let rows = sqlx::query("SELECT seq, at, kind, actor, execution, detail, prev_hash, hash, key_id FROM audit ORDER BY seq")
        .fetch_all(&mut *tx)
        .await
        .map_err(backend_err("reading the audit log"))?;
    let head =
        sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_optional(&mut *tx).await.map_err(backend_err("reading the audit head"))?;
    tx.commit().await.map_err(backend_err("finishing the audit read"))?;
    let records = rows.iter().map(decode_record).collect::<Result<Vec<_>, _>>()?;
    let head = match head {
        Some(row) => decode_head(&row)?,
        None => None,
    };
    Ok((records, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_inserts_number_postgres_parameters_and_leave_sqlite_ones_anonymous() {
        let head = "INSERT INTO audit (seq, at, kind, actor, execution, detail, prev_hash, hash, key_id) VALUES ";
        assert_eq!(
            insert_sql(Backend::Postgres, 2),
            format!("{head}($1, $2, $3, $4, $5, $6, $7, $8, $9), ($10, $11, $12, $13, $14, $15, $16, $17, $18)")
        );
        assert_eq!(insert_sql(Backend::Sqlite, 2), format!("{head}(?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
        for rows in [1, 4, INSERT_ROWS] {
            assert_eq!(insert_sql(Backend::Sqlite, rows).matches('?').count(), rows * 9);
            assert!(insert_sql(Backend::Postgres, rows).ends_with(&format!("${})", rows * 9)));
        }
    }
}
