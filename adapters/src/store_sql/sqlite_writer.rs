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
//!
//! The WAL is copied into the database file by a second thread, the checkpointer, on a
//! connection of its own, not inside a commit. SQLite's autocheckpoint runs in the commit that
//! took the WAL past 1,000 frames: that commit wrote ~100 pages into the database file and
//! fsynced it before it returned, ~1.2 ms more than the ~0.25 ms of a commit at 1,000
//! commands/s, every ~0.27 s — and every command that arrived meanwhile waited behind it
//! (measured with timers in this thread: those were the periodic commits over 1 ms; README,
//! Benchmark). The checkpointer copies what was committed [`CHECKPOINT_AFTER`] after a commit,
//! while later commits go on. SQLite starts the WAL over only at a transaction that begins
//! after a checkpoint copied all of it, which a checkpoint beside the writer cannot know (a
//! transaction may be open): the writer copies the rest, what was committed during the
//! checkpointer's, after its next commit and its answer — a few pages instead of ~100 — and
//! the WAL stays bounded.

use super::audit::{self as log, AuditKeyCell, Batch, Written};
use super::ts;
use runbot_commands::audit::AuditKey;
use runbot_commands::ports::store::StoreError;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How long after a commit the checkpointer copies the WAL into the database file: at 1,000
/// commands/s, about as often as SQLite's autocheckpoint did (every 1,000 frames).
const CHECKPOINT_AFTER: Duration = Duration::from_millis(250);

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
    let mut checkpointer = Checkpointer::new(target);
    while let Ok(Call { batch, reply }) = calls.recv() {
        let written = match &mut conn {
            Some(c) => write(c, key.get(), batch),
            None => open(target).and_then(|c| write(conn.insert(c), key.get(), batch)),
        };
        let committed = written.is_ok();
        if !committed && let Some(c) = conn.take() {
            // Whatever the failed transaction left open is rolled back, and the connection is
            // not used again.
            let _ = c.execute_batch("ROLLBACK");
            drop(c);
        }
        let _ = reply.send(written);
        // After the answer: not even the writer's own checkpoint delays the callers it answers.
        if committed && let Some(c) = &conn {
            checkpointer.after_commit(c);
        }
    }
    drop(conn);
    checkpointer.stop();
    drop(gone);
}

/// The checkpointer thread, started after the first commit. A read-only store has none.
struct Checkpointer {
    target: Option<Target>,
    running: Option<Running>,
    /// The thread could not start, or ended: SQLite checkpoints inside the commits, on every
    /// connection the writer opens from then on.
    inside_commits: bool,
    /// Set by the checkpointer after its checkpoint: the writer copies the rest (what was
    /// committed meanwhile) after its next commit, and the WAL stays bounded. The checkpointer
    /// starts none meanwhile, so that the writer's (which does not wait for another one) gets
    /// its turn.
    writers_turn: Arc<AtomicBool>,
}

/// The checkpointer thread while it runs.
struct Running {
    /// Holds at most one request: asking again while one waits changes nothing, and wakes
    /// nobody.
    ask: mpsc::SyncSender<()>,
    /// Dropped to stop the thread at once, even while it waits out [`CHECKPOINT_AFTER`].
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Runs a passive checkpoint (it waits for no reader or writer) on `conn`: `None` when another
/// one was running, else the WAL's frames and how many of them are copied.
fn checkpoint(conn: &Connection) -> Result<Option<(i64, i64)>, StoreError> {
    let (busy, log, copied): (i64, i64, i64) = conn
        .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .map_err(err("checkpointing the WAL"))?;
    Ok((busy == 0).then_some((log, copied)))
}

impl Checkpointer {
    fn new(target: &Target) -> Checkpointer {
        Checkpointer { target: (!target.read_only).then(|| target.clone()), running: None, inside_commits: false, writers_turn: Arc::default() }
    }

    fn after_commit(&mut self, conn: &Connection) {
        if self.inside_commits {
            // The connection may be a new one, opened without SQLite's autocheckpoint.
            let _ = conn.execute_batch("PRAGMA wal_autocheckpoint = 1000");
            return;
        }
        if self.target.is_none() {
            return;
        }
        if self.writers_turn.load(Ordering::Relaxed) {
            match checkpoint(conn) {
                // The whole WAL: no transaction is open, so the next commit starts it over.
                Ok(Some((log, copied))) if log == copied => self.writers_turn.store(false, Ordering::Relaxed),
                // Another connection's checkpoint running, or a reader still on older frames:
                // again after the next commit.
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "checkpointing the SQLite store's WAL"),
            }
            return;
        }
        if self.running.is_none()
            && let Err(e) = self.start()
        {
            self.without_thread(conn, &format!("starting the SQLite checkpointer thread: {e}"));
            return;
        }
        if let Some(running) = &self.running
            && let Err(mpsc::TrySendError::Disconnected(())) = running.ask.try_send(())
        {
            // The thread ended (it panicked).
            self.without_thread(conn, "the SQLite checkpointer thread ended");
        }
    }

    fn start(&mut self) -> std::io::Result<()> {
        let Some(target) = self.target.clone() else { return Ok(()) };
        let (ask, asked) = mpsc::sync_channel(1);
        let (stop, stopped) = mpsc::channel();
        let writers_turn = self.writers_turn.clone();
        let thread =
            std::thread::Builder::new().name("runbot-sqlite-ckpt".into()).spawn(move || checkpoints(&target, &asked, &stopped, &writers_turn))?;
        self.running = Some(Running { ask, stop, thread });
        Ok(())
    }

    /// Without a thread, SQLite checkpoints inside the commits, as it did before.
    fn without_thread(&mut self, conn: &Connection, why: &str) {
        tracing::warn!("{why}; the SQLite store's WAL is checkpointed inside commits from now on");
        let _ = conn.execute_batch("PRAGMA wal_autocheckpoint = 1000");
        self.inside_commits = true;
        self.stop();
    }

    /// Ends the thread once its checkpoint in progress is done; its connection is closed then.
    fn stop(&mut self) {
        if let Some(Running { ask, stop, thread }) = self.running.take() {
            drop((ask, stop));
            let _ = thread.join();
        }
    }
}

/// The checkpointer thread: asked after a commit, it waits [`CHECKPOINT_AFTER`] (the commits
/// meanwhile ask again without waking it), copies the WAL into the database file, and leaves
/// the rest to the writer.
fn checkpoints(target: &Target, asked: &mpsc::Receiver<()>, stopped: &mpsc::Receiver<()>, writers_turn: &AtomicBool) {
    let mut conn: Option<Connection> = None;
    while asked.recv().is_ok() {
        if let Err(mpsc::RecvTimeoutError::Disconnected) = stopped.recv_timeout(CHECKPOINT_AFTER) {
            return;
        }
        if writers_turn.load(Ordering::Relaxed) {
            continue;
        }
        let done = match &conn {
            Some(c) => checkpoint(c),
            None => open(target).and_then(|c| checkpoint(conn.insert(c))),
        };
        match done {
            // What was committed while this one ran is the writer's to copy: only a checkpoint
            // that ends with no transaction open lets the next commit start the WAL over, and
            // only the writer knows when none is.
            Ok(Some((log, _))) if log > 0 => writers_turn.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "checkpointing the SQLite store's WAL");
                conn = None;
            }
        }
    }
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
    // No checkpoint inside a commit: the checkpointer's (module doc).
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0").map_err(err("opening the SQLite store for writing"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL-mode file with one table, and the writer's connection to it; the test's commits
    /// skip the fsync (`synchronous = OFF`), which checkpointing does not depend on.
    fn writer_on_a_new_file(dir: &std::path::Path) -> (Target, Connection) {
        let path = dir.join("runbot.db");
        let setup = Connection::open(&path).expect("create the file");
        setup.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE pages (body BLOB NOT NULL)").expect("set up the file");
        drop(setup);
        let target = Target { path, read_only: false };
        let conn = open(&target).expect("the writer's connection");
        conn.execute_batch("PRAGMA synchronous = OFF").expect("synchronous = OFF");
        (target, conn)
    }

    /// One commit of a row of about a page.
    fn commit_a_page(conn: &Connection) {
        conn.execute("INSERT INTO pages (body) VALUES (zeroblob(4000))", []).expect("commit");
    }

    /// `n` such commits: more than SQLite's 1,000-frame autocheckpoint threshold.
    fn commit_pages(conn: &Connection, n: usize) {
        for _ in 0..n {
            commit_a_page(conn);
        }
    }

    /// The writer's connection to a new file whose WAL holds 1,500 commits, and a checkpointer
    /// for it, not started.
    fn a_full_wal_and_its_checkpointer(dir: &std::path::Path) -> (Target, Connection, Checkpointer) {
        let (target, conn) = writer_on_a_new_file(dir);
        let checkpointer = Checkpointer::new(&target);
        commit_pages(&conn, 1500);
        (target, conn, checkpointer)
    }

    fn db_size(target: &Target) -> u64 {
        std::fs::metadata(&target.path).expect("the database file").len()
    }

    /// The WAL's frames, from another connection (whose checkpoint copies them; the number
    /// is what was there before).
    fn wal_frames(target: &Target) -> i64 {
        let other = Connection::open(&target.path).expect("another connection");
        other.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).expect("checkpoint")
    }

    #[test]
    fn the_writers_commits_never_checkpoint() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (target, conn) = writer_on_a_new_file(dir.path());
        let before = db_size(&target);
        // SQLite's autocheckpoint would copy the WAL into the file inside the commit that
        // took it past 1,000 frames, and the next commit would start the WAL over.
        commit_pages(&conn, 1500);
        assert_eq!(db_size(&target), before, "nothing was copied into the database file");
        let frames = wal_frames(&target);
        assert!(frames >= 1500, "the WAL was started over: {frames} frames");
    }

    #[test]
    fn the_writer_copies_the_rest_after_its_commit() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (target, conn, mut checkpointer) = a_full_wal_and_its_checkpointer(dir.path());
        // As the checkpointer leaves it after its checkpoint.
        checkpointer.writers_turn.store(true, Ordering::Relaxed);
        checkpointer.after_commit(&conn);
        assert!(checkpointer.running.is_none(), "the checkpointer thread was not asked");
        assert!(!checkpointer.writers_turn.load(Ordering::Relaxed), "the whole WAL was copied: the checkpointer's turn again");
        // So the next commit starts the WAL over.
        commit_a_page(&conn);
        let frames = wal_frames(&target);
        assert!(frames < 10, "the WAL was not started over: {frames} frames");
        checkpointer.after_commit(&conn);
        assert!(checkpointer.running.is_some(), "the checkpointer thread was asked");
        checkpointer.stop();
    }

    #[test]
    fn the_checkpointer_copies_the_wal_soon_after_a_commit_and_stops_at_once() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (target, conn, mut checkpointer) = a_full_wal_and_its_checkpointer(dir.path());
        let before = db_size(&target);
        let asked = std::time::Instant::now();
        checkpointer.after_commit(&conn);
        // Copied by the thread: the file grows by the WAL's pages (its size is set once every
        // page is written, before the checkpoint ends).
        while db_size(&target) == before {
            assert!(asked.elapsed() < Duration::from_secs(30), "no checkpoint 30 s after a commit");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(asked.elapsed() >= CHECKPOINT_AFTER, "copied after {:?}", asked.elapsed());
        checkpointer.stop();
        assert!(checkpointer.writers_turn.load(Ordering::Relaxed), "the rest is the writer's");
        checkpointer.after_commit(&conn);
        commit_a_page(&conn);
        let frames = wal_frames(&target);
        assert!(frames < 10, "the WAL was not started over: {frames} frames");
        // Asked again, it is waiting out CHECKPOINT_AFTER: stopping does not wait for it.
        checkpointer.start().expect("start the thread again");
        checkpointer.after_commit(&conn);
        let stopping = std::time::Instant::now();
        checkpointer.stop();
        assert!(stopping.elapsed() < CHECKPOINT_AFTER, "stopping took {:?}", stopping.elapsed());
    }

    #[test]
    fn without_the_thread_every_connection_of_the_writer_checkpoints_inside_its_commits() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (target, conn) = writer_on_a_new_file(dir.path());
        let autocheckpoint = |c: &Connection| -> i64 { c.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).expect("read the pragma") };
        let mut checkpointer = Checkpointer::new(&target);
        checkpointer.without_thread(&conn, "a test");
        assert_eq!(autocheckpoint(&conn), 1000);
        // A failed write closes the writer's connection; the next one is opened without.
        drop(conn);
        let again = open(&target).expect("the writer's next connection");
        assert_eq!(autocheckpoint(&again), 0);
        commit_a_page(&again);
        checkpointer.after_commit(&again);
        assert_eq!(autocheckpoint(&again), 1000, "the new connection checkpoints inside its commits");
        assert!(checkpointer.running.is_none());
    }
}
