//! The store contract against every backend: in memory, SQLite in a temporary directory, and
//! PostgreSQL in a throwaway database on the server `RUNBOT_TEST_PG_URL` points at.

use runbot_adapters::store_sql::{self, SqlStore};
use runbot_commands::ports::Store;
use runbot_commands::store_memory::MemoryStore;
use runbot_tests::store_contract;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn memory() {
    store_contract::run_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("runbot.db").display());
    let store = SqlStore::connect(&url).await.expect("connect to a new SQLite file");
    assert_eq!(store.backend_name(), "sqlite");
    assert!(store.migrations_applied().await.expect("migrations_applied"));
    let store = Arc::new(store);
    store_contract::run_all(store.clone()).await;
    // The WAL file exists while connections are open.
    assert!(dir.path().join("runbot.db-wal").exists(), "the SQLite file uses write-ahead logging");
    drop(store);

    // Reopening the file keeps everything and does not re-run migrations destructively.
    let again = SqlStore::connect(&url).await.expect("reconnect");
    assert!(again.migrations_applied().await.expect("migrations_applied"));
    let (records, head) = again.audit_log().await.expect("audit_log");
    // 50 from the concurrent appenders, 2 from the audited save, 10 from the inbox contract
    // (in-1, in-race, in-create and its execution's, in-own, in-other, in-done and
    // in-answered twice each).
    assert_eq!(records.len(), 62);
    assert_eq!(head.map(|(seq, _)| seq), Some(62));
}

/// The `i`th of a test's audit entries.
fn entry(i: u64) -> runbot_commands::audit::AuditEntry {
    runbot_commands::audit::AuditEntry {
        at: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
        kind: "command".into(),
        actor: Some("console:alice".into()),
        execution: None,
        detail: serde_json::json!({ "i": i }),
    }
}

/// Closing the store commits the audit records already queued for the group commit; later
/// appends fail instead of being lost silently.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_close_commits_queued_audit_records() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("runbot.db").display());
    let store = SqlStore::connect(&url).await.expect("connect to a new SQLite file");
    let entries: Vec<_> = (0..20).map(entry).collect();
    // Polled in order: the twenty appends are queued before the close.
    let (appended, ()) = tokio::join!(futures::future::join_all(entries.iter().map(|e| store.append_audit(e))), store.close());
    let seqs: Vec<u64> = appended.into_iter().map(|r| r.expect("a queued append commits").seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "appended in the order queued");
    assert!(store.append_audit(&entry(20)).await.is_err(), "an append after close fails");
    drop(store);

    let again = SqlStore::connect(&url).await.expect("reconnect");
    let (records, head) = again.audit_log().await.expect("audit_log");
    let head_ref = head.as_ref().map(|(s, h)| (*s, h.as_str()));
    assert_eq!(runbot_commands::audit::verify(&records, head_ref), Ok(20));
}

/// A group commit that fails half-way (here: the head moved back under it, so its insert hits
/// an existing sequence number) is rolled back whole: nothing of it is stored, SQLite's write
/// lock is free for others at once, and appends work again once the cause is gone.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_failed_group_commit_rolls_back_and_frees_the_lock() {
    use sqlx::{Connection, Row};
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("runbot.db");
    let store = SqlStore::connect(&format!("sqlite://{}", path.display())).await.expect("connect to a new SQLite file");
    let first = store.append_audit(&entry(0)).await.expect("append");
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).busy_timeout(std::time::Duration::from_millis(200));
    let mut other = sqlx::SqliteConnection::connect_with(&opts).await.expect("a second connection");
    sqlx::query("UPDATE audit_head SET seq = 0 WHERE id = 1").execute(&mut other).await.expect("move the head back");

    let failed = store.append_audit(&entry(1)).await;
    assert!(failed.is_err(), "seq 1 exists: the insert must fail: {failed:?}");
    // Not left inside an open transaction: another writer gets the lock within 200 ms.
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.expect("the write lock is free after the failure");
    sqlx::query("ROLLBACK").execute(&mut other).await.expect("rollback");
    let rows: i64 = sqlx::query("SELECT count(*) FROM audit").fetch_one(&mut other).await.expect("count").get(0);
    assert_eq!(rows, 1, "nothing of the failed commit is stored");

    sqlx::query("UPDATE audit_head SET seq = 1, hash = $1 WHERE id = 1").bind(&first.hash).execute(&mut other).await.expect("restore the head");
    let next = store.append_audit(&entry(2)).await.expect("appends work again");
    assert_eq!(next.seq, 2);
    let (records, head) = store.audit_log().await.expect("audit_log");
    let head_ref = head.as_ref().map(|(s, h)| (*s, h.as_str()));
    assert_eq!(runbot_commands::audit::verify(&records, head_ref), Ok(2));
}

/// A SQLite file's WAL is checkpointed while appends go on: beside the group commit's own
/// connection (`sqlite_writer.rs`) a checkpointer thread copies the WAL into the database file
/// 250 ms after a commit — the writer copying the rest when commits left the checkpointer no
/// gap to copy all of it — and the next commit starts it over instead of growing with every
/// commit.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_wal_stays_bounded_under_sustained_appends() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("runbot.db");
    let store = SqlStore::connect(&format!("sqlite://{}", db.display())).await.expect("connect to a new SQLite file");
    // One commit each: 3,000 commits of 2-3 pages write ~30 MB of WAL frames; a checkpoint
    // starts past 1,000 pages (4 MB).
    let mut largest = 0;
    for i in 0..3000 {
        store.append_audit(&entry(i)).await.expect("append");
        if i % 100 == 99 {
            largest = largest.max(std::fs::metadata(dir.path().join("runbot.db-wal")).expect("the WAL").len());
        }
    }
    println!("largest WAL seen: {largest} bytes");
    assert!(largest < 12 << 20, "the WAL grew to {largest} bytes");
    let (records, head) = store.audit_log().await.expect("audit_log");
    assert_eq!(runbot_commands::audit::verify(&records, head.as_ref().map(|(s, h)| (*s, h.as_str()))), Ok(3000));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_in_memory() {
    let store = SqlStore::connect("sqlite::memory:").await.expect("connect to an in-memory SQLite");
    assert_eq!(store.backend_name(), "sqlite");
    store_contract::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres() {
    let server = std::env::var("RUNBOT_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "RUNBOT_TEST_PG_URL is not set: run the tests with ./scripts/test.sh, which starts a \
             throwaway PostgreSQL and sets it (or: eval \"$(RUNBOT_TEST_ONLY_PG=1 ./scripts/test.sh)\")"
        )
    });
    let name = format!("runbot_store_{:016x}", RandomState::new().hash_one(std::process::id()));
    let url = store_sql::create_database(&server, &name).await.expect("create a scratch database");

    let suite = tokio::spawn(async move {
        let store = SqlStore::connect(&url).await.expect("connect to the scratch database");
        assert_eq!(store.backend_name(), "postgres");
        assert!(store.migrations_applied().await.expect("migrations_applied"));
        let store: Arc<dyn Store> = Arc::new(store);
        store_contract::run_all(store).await;
    })
    .await;

    let dropped = store_sql::drop_database(&server, &name).await;
    if let Err(panic) = suite {
        std::panic::resume_unwind(panic.into_panic());
    }
    dropped.expect("drop the scratch database");
}

/// A small tmpfs holding a SQLite store, unmounted on drop. Needs root (as CI runs): the
/// store's disk really fills up, as it would in production.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount(size: &str) -> TinyDisk {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (the test command runs as root in CI)");
        TinyDisk { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path("filler")).expect("filler");
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).expect("remove the filler");
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The store's disk fills up in the middle of writes, then is freed: every write that
/// reported a failure left nothing behind (no execution, no lock, no audit record), no
/// connection is left inside a failed transaction, and writes work again afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_on_a_full_disk_fails_whole_writes_and_recovers() {
    use runbot_commands::model::ExecState;
    let disk = TinyDisk::mount("4m");
    let url = format!("sqlite://{}", disk.path("runbot.db").display());
    let sql = Arc::new(SqlStore::connect(&url).await.expect("connect"));
    let store: Arc<dyn Store> = sql.clone();
    let kept = store_contract::create_sample(&store, "kept", ExecState::Running, Some("service:kept@prod")).await;

    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(store.next_id().await.expect("next_id"));
    }
    disk.fill();
    assert!(store.next_id().await.is_err(), "a number whose allocation was not committed is not handed out");
    let mut failed = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let i = i as u64;
        let mut exec = store_contract::sample(id, &format!("svc-{i}"), ExecState::Running);
        exec.notes.push("x".repeat(8000));
        if store.create(&exec, Some(&format!("service:svc-{i}@prod"))).await.is_err() {
            failed.push(exec);
        }
        let _ = store.append_audit(&entry(i)).await;
    }
    assert!(!failed.is_empty(), "the full disk refused some creates");
    disk.free();

    // Afterwards: what failed is not there, and every connection of the pool works.
    let stored = |target: String| {
        let store = store.clone();
        async move { store.list(&runbot_commands::ports::ListFilter { target: Some(target), ..Default::default() }).await.expect("list") }
    };
    for exec in &failed {
        assert!(stored(exec.target.name.clone()).await.is_empty(), "{} was reported failed but is stored", exec.target.name);
    }
    for i in 0..20 {
        let id = store.next_id().await.expect("next_id after the disk was freed");
        let exec = store_contract::sample(id, &format!("after-{i}"), ExecState::Running);
        store.create(&exec, Some(&format!("service:after-{i}@prod"))).await.expect("create after the disk was freed");
        let (_, v) = store_contract::must_load(&store, id).await;
        store.save(&exec, v).await.expect("save after the disk was freed");
        store.append_audit(&entry(100 + i)).await.expect("append after the disk was freed");
    }
    for exec in &failed {
        let later = stored(exec.target.name.clone()).await;
        assert!(later.is_empty(), "{} appeared later: a failed transaction was committed by a later one", exec.target.name);
        let lock = format!("service:{}@prod", exec.target.name);
        let probe = store_contract::sample(store.next_id().await.expect("id"), &exec.target.name, ExecState::Running);
        store.create(&probe, Some(&lock)).await.unwrap_or_else(|e| panic!("{lock} is still held after its create failed: {e}"));
    }
    assert!(store.load(kept.id).await.expect("load").is_some());
    let (records, head) = store.audit_log().await.expect("audit_log");
    assert_eq!(runbot_commands::audit::verify(&records, head.as_ref().map(|(s, h)| (*s, h.as_str()))).map(|_| ()), Ok(()));
    // Every connection closed before the tmpfs is unmounted.
    sql.close().await;
}

/// PostgreSQL: a replica's leases end with its process. While it lives (its liveness lock is
/// held), another replica cannot take its execution; once its connection drops, as when the
/// process is SIGKILLed, the other takes it over long before the stored lease expires — the
/// time is measured and printed. A second process with the same instance name is refused. A
/// wake-up one replica sends reaches another's listener.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_leases_end_with_their_owners_connection() {
    use runbot_commands::model::ExecState;
    let server = std::env::var("RUNBOT_TEST_PG_URL").expect("RUNBOT_TEST_PG_URL is set by ./scripts/test.sh");
    let name = format!("runbot_live_{:016x}", RandomState::new().hash_one(std::process::id()));
    let url = store_sql::create_database(&server, &name).await.expect("create a scratch database");
    let suite = tokio::spawn(async move {
        let owner = Arc::new(SqlStore::connect(&url).await.expect("connect"));
        owner.hold_liveness("replica-a").await.expect("take the liveness lock");
        let other = Arc::new(SqlStore::connect(&url).await.expect("connect"));
        other.hold_liveness("replica-b").await.expect("take the liveness lock");
        let twin = Arc::new(SqlStore::connect(&url).await.expect("connect"));
        let refused = twin.hold_liveness("replica-a").await.expect_err("the same instance name twice");
        assert!(refused.to_string().contains("instance name 'replica-a'"), "{refused}");
        drop(twin);

        let exec = store_contract::create_sample(&(owner.clone() as Arc<dyn Store>), "live-svc", ExecState::Running, None).await;
        let now = chrono::Utc::now();
        let lease = chrono::TimeDelta::seconds(300);
        assert!(owner.claim(exec.id, "replica-a", now + lease, now).await.expect("claim").is_some());
        assert_eq!(owner.owner_alive("replica-a").await.expect("owner_alive"), Some(true));
        assert_eq!(
            other.owner_alive("nobody-registered").await.expect("owner_alive"),
            None,
            "an owner without a liveness lock: only its lease counts"
        );
        assert!(other.claim(exec.id, "replica-b", now + lease, now).await.expect("claim").is_none(), "a live owner keeps its lease");
        assert!(other.orphans("replica-b", now).await.expect("orphans").is_empty(), "a live owner's execution is no orphan");
        assert!(other.lead("failover-role", "replica-a", now + lease, now).await.is_ok());
        assert!(owner.lead("failover-role-a", "replica-a", now + lease, now).await.expect("lead"));
        assert!(!other.lead("failover-role-a", "replica-b", now + lease, now).await.expect("lead"));

        // The owner's process dies: its connections close with it.
        let died = std::time::Instant::now();
        drop(owner);
        let taken = loop {
            let now = chrono::Utc::now();
            if let Some(epoch) = other.claim(exec.id, "replica-b", now + lease, now).await.expect("claim") {
                break epoch;
            }
            assert!(died.elapsed() < std::time::Duration::from_secs(5), "no takeover within 5 s of the owner's death");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let took = died.elapsed();
        println!("takeover after the owner's connection dropped: {} ms (stored lease: 300 s)", took.as_millis());
        assert!(taken >= 2, "a takeover gets a new fencing epoch");
        assert_eq!(other.owner_alive("replica-a").await.expect("owner_alive"), Some(false));
        let now = chrono::Utc::now();
        assert!(other.lead("failover-role-a", "replica-b", now + lease, now).await.expect("lead"), "periodic work moves on with the owner's death");

        // A wake-up sent by one replica reaches the others' listeners (LISTEN/NOTIFY).
        let third = Arc::new(SqlStore::connect(&url).await.expect("connect"));
        let mut wakes = third.wakes().expect("PostgreSQL carries wake-ups");
        let sent = std::time::Instant::now();
        let got = loop {
            other.wake(exec.id).await.expect("wake");
            if let Ok(Some(id)) = tokio::time::timeout(std::time::Duration::from_millis(200), wakes.recv()).await {
                break id;
            }
            assert!(sent.elapsed() < std::time::Duration::from_secs(5), "no wake-up arrived within 5 s");
        };
        assert_eq!(got, exec.id);
        println!("wake-up from one replica to another: {} ms (including the listener's start)", sent.elapsed().as_millis());
    })
    .await;
    let dropped = store_sql::drop_database(&server, &name).await;
    if let Err(panic) = suite {
        std::panic::resume_unwind(panic.into_panic());
    }
    dropped.expect("drop the scratch database");
}
