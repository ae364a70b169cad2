//! SQLite's group commit on a thread of runbot's own, through SQLite's C API (rusqlite).
//!
//! The audit writer (`audit.rs`) gathers a batch on the runtime and hands it here in one
//! message; this thread writes it in one transaction on its own connection to the store's file,
//! with statements prepared once and kept, and hands back what was written. Through sqlx a
//! group commit took two calls to sqlx's connection thread plus a hand-off per returned row,
//! and every value was converted twice (Any arguments, then SQLite's) before SQLite copied it.
//! At 64 connections (`scripts/bench-slack-acks.sh`, profiling build) the writer's task fell
//! from ~14 % of runbot's CPU to ~5 %.
//!
//! The connection is WAL-mode SQLite like the pool's (the journal mode is the file's), with
//! `synchronous` at its FULL default, so a commit is durable when it returns. A batch that
//! fails is rolled back and the connection closed; the next batch opens a new one, so nothing
//! of a failed transaction can ride on a later commit.

use super::audit::{self as log, AuditKeyCell, Batch, Written};
use super::ts;
use runbot_commands::audit::AuditKey;
use runbot_commands::ports::store::StoreError;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Where the thread's connection goes.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The database file, as SQLite opened it for the pool.
    pub path: PathBuf,
    /// The store URL asked for `mode=ro`: writes fail as they do through the pool.
    pub read_only: bool,
}

/// How long a write waits for a lock another connection holds (sqlx's default, which the
/// pool's connections use too).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

struct Call {
    batch: Batch,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The thread, started on first use and again after it stopped.
pub(super) struct Thread {
    target: Target,
    /// What the audit records are keyed with, once set.
    key: AuditKeyCell,
    calls: Option<mpsc::Sender<Call>>,
    /// Closed (dropped by the thread) once its connection is closed.
    gone: Option<oneshot::Receiver<()>>,
}

fn stopped() -> StoreError {
    StoreError::Backend("writing to the store: its SQLite writer thread stopped".into())
}

impl Thread {
    pub(super) fn new(target: Target, key: AuditKeyCell) -> Thread {
        Thread { target, key, calls: None, gone: None }
    }

    /// Writes `batch` in one transaction.
    pub(super) async fn write(&mut self, batch: Batch) -> Result<Written, StoreError> {
        let calls = match &self.calls {
            Some(c) => c,
            None => self.start()?,
        };
        let (reply, answer) = oneshot::channel();
        if calls.send(Call { batch, reply }).is_err() {
            self.calls = None;
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| {
            // The thread ended without answering (it panicked): the next batch starts another.
            self.calls = None;
            Err(stopped())
        })
    }

    fn start(&mut self) -> Result<&mpsc::Sender<Call>, StoreError> {
        let (calls, rx) = mpsc::channel();
        let (gone, gone_rx) = oneshot::channel();
        let (target, key) = (self.target.clone(), self.key.clone());
        std::thread::Builder::new()
            .name("runbot-sqlite-writer".into())
            .spawn(move || serve(&target, &key, rx, gone))
            .map_err(|e| StoreError::Backend(format!("starting the SQLite writer thread: {e}")))?;
        self.gone = Some(gone_rx);
        Ok(self.calls.insert(calls))
    }

    /// Stops the thread once it has answered what it was sent, and waits until its connection
    /// is closed (the pool's last connection then checkpoints the WAL when it closes).
    pub(super) async fn stop(&mut self) {
        self.calls = None;
        if let Some(gone) = self.gone.take() {
            let _ = gone.await;
        }
    }
}

fn serve(target: &Target, key: &AuditKeyCell, calls: mpsc::Receiver<Call>, gone: oneshot::Sender<()>) {
    let mut conn: Option<Connection> = None;
    while let Ok(Call { batch, reply }) = calls.recv() {
        let written = match &mut conn {
            Some(c) => write(c, key.get(), batch),
            None => open(target).and_then(|c| write(conn.insert(c), key.get(), batch)),
        };
        if written.is_err()
            && let Some(c) = conn.take()
        {
            // Whatever the failed transaction left open is rolled back, and the connection is
            // not used again.
            let _ = c.execute_batch("ROLLBACK");
            drop(c);
        }
        let _ = reply.send(written);
    }
    drop(conn);
    drop(gone);
}

fn err(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend(format!("{what}: {e}"))
}

fn open(target: &Target) -> Result<Connection, StoreError> {
    let mode = if target.read_only { OpenFlags::SQLITE_OPEN_READ_ONLY } else { OpenFlags::SQLITE_OPEN_READ_WRITE };
    // No CREATE: the pool made the file and its tables; a file that vanished is an error.
    let conn =
        Connection::open_with_flags(&target.path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(err("opening the SQLite store for writing"))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err("opening the SQLite store for writing"))?;
    conn.execute_batch("PRAGMA foreign_keys = ON").map_err(err("opening the SQLite store for writing"))?;
    Ok(conn)
}

/// One group commit: the write lock, the received commands (a key stored already is not
/// written again: `changes()` says which were new), the done marks, the audit records of the
/// new commands and the lone appends linked after the head, the head moved, `COMMIT`.
fn write(conn: &mut Connection, key: Option<&AuditKey>, batch: Batch) -> Result<Written, StoreError> {
    conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map_err(err("starting a write transaction"))?;
    let (seq, hash): (i64, String) = conn
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(err("reading the audit head"))?
        .ok_or_else(|| StoreError::Backend("the audit_head row is missing".into()))?;
    let head = if seq == 0 { None } else { Some((log::seq_from_db(seq)?, hash)) };

    let mut recorded = Vec::with_capacity(batch.inbound.len());
    if !batch.inbound.is_empty() {
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO inbox (inbox_key, platform, received_at, owner, lease_until, payload, done) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (inbox_key) DO NOTHING",
            )
            .map_err(err("recording received commands"))?;
        for i in &batch.inbound {
            let payload = super::inbox::encode_payload(i)?;
            let changed = insert
                .execute(params![i.key, i.platform, ts(i.received_at), i.owner, ts(i.lease_until), payload, i64::from(i.done)])
                .map_err(err("recording received commands"))?;
            recorded.push(changed == 1);
        }
    }
    if !batch.done.is_empty() {
        let mut done =
            conn.prepare_cached("UPDATE inbox SET done = 1 WHERE done = 0 AND inbox_key = ?1").map_err(err("marking received commands done"))?;
        for k in &batch.done {
            done.execute([k]).map_err(err("marking received commands done"))?;
        }
    }

    let (entries, keep) = log::kept(batch.entries, &recorded);
    let (records, details, prev) = log::link_all(key, head, entries)?;
    if let Some((seq, hash)) = prev.filter(|_| !records.is_empty()) {
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO audit (seq, at, kind, actor, execution, detail, prev_hash, hash, key_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(err("appending audit records"))?;
        for (r, detail) in records.iter().zip(&details) {
            insert
                .execute(params![
                    log::seq_to_db(r.seq)?,
                    ts(r.entry.at),
                    r.entry.kind,
                    r.entry.actor,
                    r.entry.execution,
                    detail,
                    r.prev_hash,
                    r.hash,
                    r.key_id
                ])
                .map_err(err("appending audit records"))?;
        }
        let seq = log::seq_to_db(seq)?;
        conn.prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
            .and_then(|mut s| s.execute(params![seq, hash]))
            .map_err(err("moving the audit head"))?;
    }
    conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map_err(err("committing audit records"))?;
    Ok(Written::new(recorded, &keep, records))
}
