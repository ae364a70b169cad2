//! Engine benchmark (not a timed test): engine overhead per step and executions per second on
//! the embedded default store, SQLite in a file.
//!
//!     cargo bench -p runbot-tests --bench engine
//!
//! What runs: the real `Engine` with the real `SqlStore` on a SQLite file in a fresh temporary
//! directory, `SystemClock`, a chat fake that only hands out message ids, and a bench-only
//! `noop` step kind that returns at once — so what is measured is the engine's own work per
//! step (lease renewal, intent save, result save, audit records, status publishing) and per
//! command (quota, parsing, authorization, planning, create, status post).
//!
//! A thin pass-through around the store counts and times each call (a few atomics per call), to
//! show where the time goes and to learn when an execution reaches its final state without
//! polling the database.
//!
//! Environment (all optional):
//! - `RUNBOT_BENCH_SCALE` (default 1): multiplies every iteration count and time budget.
//! - `RUNBOT_BENCH_INTERVAL_MS` (default 1000, the shipped default): `engine.update_interval_ms`.
//! - `RUNBOT_BENCH_CONCURRENCY` (default 16): executions in flight in the concurrent run.
//! - `RUNBOT_BENCH_DIR` (default the system temporary directory): where the temporary directory
//!   holding the database file is created — e.g. `/dev/shm` to take the disk out of the picture.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::audit::{AuditEntry, AuditRecord};
use runbot_commands::config::Settings;
use runbot_commands::engine::{Engine, Request};
use runbot_commands::message::Message;
use runbot_commands::model::{Execution, ExecutionId, Identity, Origin};
use runbot_commands::ports::{
    Chat, ChatError, Chats, Fence, Inbound, InboxClaim, ListFilter, PostedAlert, Store, StoreError, SystemClock, Versioned,
};
use runbot_commands::steps::{Prepared, StepContext, StepKind, StepKinds, StepOutcome};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Steps per execution when measuring overhead per step.
const LONG_STEPS: usize = 50;
/// Steps per execution when measuring executions per second.
const SHORT_STEPS: usize = 3;
const WHO: &str = "console:alice";
const CHANNEL: &str = "ops";

// ---------------------------------------------------------------------------------------------
// Bench-only ports and step kind.

/// A chat that does nothing but hand out message ids (and count calls).
#[derive(Default)]
struct NullChat {
    posts: AtomicU64,
    edits: AtomicU64,
    privates: AtomicU64,
}

#[async_trait]
impl Chat for NullChat {
    fn platform(&self) -> &'static str {
        "console"
    }
    async fn post(&self, _channel: &str, _thread: Option<&str>, _msg: &Message) -> Result<String, ChatError> {
        let n = self.posts.fetch_add(1, Ordering::Relaxed);
        Ok(format!("m-{n}"))
    }
    async fn update(&self, _channel: &str, _id: &str, _msg: &Message) -> Result<(), ChatError> {
        self.edits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn ephemeral(&self, _channel: &str, _to: &Identity, _msg: &Message) -> Result<(), ChatError> {
        self.privates.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// `noop`: a BENCH-ONLY step kind that succeeds at once.
struct Noop;

#[async_trait]
impl StepKind for Noop {
    fn kind(&self) -> &'static str {
        "noop"
    }
    fn default_idempotent(&self) -> bool {
        true
    }
    fn prepare(&self, _params: &toml::Table, _vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        Ok(Prepared { action: "no-op".into(), params: serde_json::json!({}) })
    }
    async fn run(&self, _params: &serde_json::Value, _ctx: StepContext) -> StepOutcome {
        StepOutcome::Succeeded("done".into())
    }
}

// ---------------------------------------------------------------------------------------------
// The store, counted and timed.

const OPS: [&str; 14] = [
    "next_id",
    "create",
    "load",
    "save",
    "list",
    "claim",
    "orphans",
    "append_audit",
    "audit_log",
    "first_delivery",
    "append_output",
    "output",
    "ping",
    "save_audited",
];

#[derive(Default)]
struct OpStat {
    calls: AtomicU64,
    nanos: AtomicU64,
}

/// Per-operation (calls, total time) snapshot.
type Snapshot = Vec<(u64, u64)>;

/// The real store behind a pass-through that counts and times calls and notes final states.
struct Timed {
    inner: SqlStore,
    stats: Vec<OpStat>,
    /// Executions saved in a terminal state, and those whose final status edit was delivered.
    finished: Mutex<(HashSet<ExecutionId>, HashSet<ExecutionId>)>,
    /// Bumped on every terminal save, to wake waiters.
    bell: watch::Sender<u64>,
}

impl Timed {
    fn new(inner: SqlStore) -> Self {
        Timed {
            inner,
            stats: OPS.iter().map(|_| OpStat::default()).collect(),
            finished: Mutex::new((HashSet::new(), HashSet::new())),
            bell: watch::channel(0).0,
        }
    }

    async fn timed<T>(&self, op: usize, f: impl Future<Output = T>) -> T {
        let t = Instant::now();
        let out = f.await;
        let s = &self.stats[op];
        s.calls.fetch_add(1, Ordering::Relaxed);
        s.nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    /// Notes an execution saved in its final state (to wake the waiters).
    fn saved(&self, exec: &Execution, out: &Result<i64, StoreError>) {
        if out.is_ok() && exec.state.is_terminal() {
            {
                let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
                f.0.insert(exec.id);
                if !exec.messages.is_empty() && exec.messages.iter().all(|m| m.final_sent) {
                    f.1.insert(exec.id);
                }
            }
            self.bell.send_modify(|n| *n += 1);
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.stats.iter().map(|s| (s.calls.load(Ordering::Relaxed), s.nanos.load(Ordering::Relaxed))).collect()
    }

    fn counts(&self) -> (usize, usize) {
        let f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        (f.0.len(), f.1.len())
    }

    /// Waits until `id` is saved in a terminal state.
    async fn wait_final(&self, id: ExecutionId) {
        let mut rx = self.bell.subscribe();
        loop {
            rx.borrow_and_update();
            if self.finished.lock().unwrap_or_else(|p| p.into_inner()).0.contains(&id) {
                return;
            }
            if tokio::time::timeout(Duration::from_secs(60), rx.changed()).await.is_err() {
                panic!("{id} did not reach a final state within 60 s");
            }
        }
    }

    /// Waits until every finished execution also had its final status edit delivered (the
    /// coalescing publisher does that in the background, up to one update interval later).
    async fn drain(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let mut rx = self.bell.subscribe();
        loop {
            rx.borrow_and_update();
            let (terminal, delivered) = self.counts();
            if delivered >= terminal {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return false;
            }
        }
    }
}

#[async_trait]
impl Store for Timed {
    async fn next_id(&self) -> Result<ExecutionId, StoreError> {
        self.timed(0, self.inner.next_id()).await
    }
    async fn create(&self, exec: &Execution, lock_key: Option<&str>) -> Result<(), StoreError> {
        self.timed(1, self.inner.create(exec, lock_key)).await
    }
    async fn load(&self, id: ExecutionId) -> Result<Option<Versioned<Execution>>, StoreError> {
        self.timed(2, self.inner.load(id)).await
    }
    async fn save(&self, exec: &Execution, expected: i64) -> Result<i64, StoreError> {
        let out = self.timed(3, self.inner.save(exec, expected)).await;
        self.saved(exec, &out);
        out
    }
    async fn save_audited(&self, exec: &Execution, expected: i64, entries: &[AuditEntry]) -> Result<i64, StoreError> {
        let out = self.timed(13, self.inner.save_audited(exec, expected, entries)).await;
        self.saved(exec, &out);
        out
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Execution>, StoreError> {
        self.timed(4, self.inner.list(filter)).await
    }
    async fn save_fenced(&self, exec: &Execution, expected: i64, entries: &[AuditEntry], fence: &Fence) -> Result<i64, StoreError> {
        let out = self.timed(13, self.inner.save_fenced(exec, expected, entries, fence)).await;
        self.saved(exec, &out);
        out
    }
    async fn claim(&self, id: ExecutionId, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        self.timed(5, self.inner.claim(id, owner, until, now)).await
    }
    async fn release(&self, id: ExecutionId, owner: &str) -> Result<(), StoreError> {
        self.timed(5, self.inner.release(id, owner)).await
    }
    async fn claim_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
        self.timed(2, self.inner.claim_edit(id, message, version)).await
    }
    async fn confirm_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
        self.timed(2, self.inner.confirm_edit(id, message, version)).await
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    async fn take_quota(&self, key: &str, per_minute: u32, now: DateTime<Utc>) -> Result<Option<Duration>, StoreError> {
        self.timed(9, self.inner.take_quota(key, per_minute, now)).await
    }
    async fn take_slot(&self, key: &str, interval: Duration, now: DateTime<Utc>) -> Result<Duration, StoreError> {
        self.timed(9, self.inner.take_slot(key, interval, now)).await
    }
    async fn lead(&self, role: &str, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.timed(6, self.inner.lead(role, owner, until, now)).await
    }
    async fn orphans(&self, owner: &str, now: DateTime<Utc>) -> Result<Vec<ExecutionId>, StoreError> {
        self.timed(6, self.inner.orphans(owner, now)).await
    }
    async fn put_artifact(&self, id: ExecutionId, name: &str, content: &str) -> Result<(), StoreError> {
        self.inner.put_artifact(id, name, content).await
    }
    async fn artifacts(&self, id: ExecutionId) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.artifacts(id).await
    }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        self.timed(7, self.inner.append_audit(entry)).await
    }
    async fn audit_log(&self) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError> {
        self.timed(8, self.inner.audit_log()).await
    }
    async fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.timed(9, self.inner.first_delivery(key, now)).await
    }
    async fn alert(&self, fingerprint: &str) -> Result<Option<PostedAlert>, StoreError> {
        self.inner.alert(fingerprint).await
    }
    async fn insert_alert(&self, alert: &PostedAlert) -> Result<bool, StoreError> {
        self.inner.insert_alert(alert).await
    }
    async fn save_alert(&self, alert: &PostedAlert) -> Result<(), StoreError> {
        self.inner.save_alert(alert).await
    }
    async fn forget_alert(&self, fingerprint: &str, resolved_before: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.forget_alert(fingerprint, resolved_before).await
    }
    async fn create_audited(&self, exec: &Execution, lock_key: Option<&str>, entries: &[AuditEntry]) -> Result<(), StoreError> {
        self.timed(1, self.inner.create_audited(exec, lock_key, entries)).await
    }
    async fn record_inbound(&self, item: Inbound, audit: AuditEntry) -> Result<bool, StoreError> {
        self.inner.record_inbound(item, audit).await
    }
    async fn inbound_done(&self, keys: &[String]) -> Result<(), StoreError> {
        self.inner.inbound_done(keys).await
    }
    async fn claim_inbound(&self, c: &InboxClaim) -> Result<Vec<Inbound>, StoreError> {
        self.inner.claim_inbound(c).await
    }
    async fn append_output(&self, id: ExecutionId, step: usize, text: &str) -> Result<(), StoreError> {
        self.timed(10, self.inner.append_output(id, step, text)).await
    }
    async fn output(&self, id: ExecutionId, step: usize) -> Result<String, StoreError> {
        self.timed(11, self.inner.output(id, step)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(12, self.inner.ping()).await
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up.

struct Knobs {
    scale: f64,
    interval_ms: u64,
    concurrency: usize,
    dir: Option<String>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let scale = var("RUNBOT_BENCH_SCALE").map(|v| v.trim().parse::<f64>().expect("RUNBOT_BENCH_SCALE must be a number"));
        let interval = var("RUNBOT_BENCH_INTERVAL_MS").map(|v| v.trim().parse::<u64>().expect("RUNBOT_BENCH_INTERVAL_MS must be a whole number"));
        let conc = var("RUNBOT_BENCH_CONCURRENCY").map(|v| v.trim().parse::<usize>().expect("RUNBOT_BENCH_CONCURRENCY must be a whole number"));
        Knobs {
            scale: scale.unwrap_or(1.0).max(0.01),
            interval_ms: interval.unwrap_or(1000).max(1),
            concurrency: conc.unwrap_or(16).max(1),
            dir: var("RUNBOT_BENCH_DIR"),
        }
    }
    fn n(&self, base: usize) -> usize {
        ((base as f64 * self.scale).round() as usize).max(1)
    }
    fn budget(&self, secs: f64) -> Duration {
        Duration::from_secs_f64(secs * self.scale)
    }
}

fn config(interval_ms: u64) -> String {
    format!(
        r#"
[engine]
instance = "bench-1"
runbooks = "runbooks.toml"
update_interval_ms = {interval_ms}
lease_secs = 30

[limits]
per_identity_per_minute = 100000000
per_channel_per_minute = 100000000

[groups]
sre = ["{WHO}"]

[environments.prod]

[services.svc]
[services.svc.environments.prod]
"#
    )
}

fn runbook(name: &str, steps: usize) -> String {
    let mut s = format!("\n[runbooks.{name}]\nsummary = \"{steps} no-op steps\"\ntarget = \"service\"\nmutating = false\n");
    for i in 1..=steps {
        s.push_str(&format!("\n[[runbooks.{name}.steps]]\nname = \"step-{i}\"\nkind = \"noop\"\n"));
    }
    s
}

struct Bench {
    engine: Engine,
    store: Arc<Timed>,
    chat: Arc<NullChat>,
}

impl Bench {
    /// Types `/ops run <runbook> svc` and waits until the execution is in a final state.
    async fn run(&self, runbook: &str) -> Duration {
        let t = Instant::now();
        let req = Request {
            identity: Identity::new(WHO),
            origin: Origin { platform: "console".into(), channel: CHANNEL.into(), thread: None },
            text: format!("/ops run {runbook} svc"),
            roles: Vec::new(),
        };
        let reply = self.engine.handle_command(req).await;
        let text = &reply.message.text;
        let id: ExecutionId = text
            .split_whitespace()
            .next()
            .filter(|_| text.contains(" created"))
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("expected an execution to be created, got: {text}"));
        self.store.wait_final(id).await;
        t.elapsed()
    }

    /// Runs executions of `runbook`, `concurrency` at a time, until `n` are done or `budget`
    /// has passed (then finishes those in flight). Returns each one's latency and the wall time.
    async fn batch(&self, runbook: &'static str, n: usize, concurrency: usize, budget: Duration) -> (Vec<Duration>, Duration) {
        let started = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let deadline = t + budget;
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let engine = self.engine.clone();
            let store = self.store.clone();
            let chat = self.chat.clone();
            let started = started.clone();
            workers.push(tokio::spawn(async move {
                let me = Bench { engine, store, chat };
                let mut lat = Vec::new();
                while Instant::now() < deadline && (started.fetch_add(1, Ordering::Relaxed) as usize) < n {
                    lat.push(me.run(runbook).await);
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.expect("a bench worker panicked"));
        }
        (all, t.elapsed())
    }
}

// ---------------------------------------------------------------------------------------------
// Figures.

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Lat {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn lat(v: &[Duration]) -> Lat {
    let mut s = v.to_vec();
    s.sort();
    let mean = if s.is_empty() { Duration::ZERO } else { s.iter().sum::<Duration>() / s.len() as u32 };
    Lat { mean, p50: percentile(&s, 0.50), p99: percentile(&s, 0.99) }
}

/// Store calls per unit and mean time per call, between two snapshots.
fn store_table(before: &Snapshot, after: &Snapshot, units: f64, unit: &str, wall: Duration) {
    let mut total_calls = 0.0;
    let mut total_ns = 0u64;
    let mut rows = Vec::new();
    for (i, name) in OPS.iter().enumerate() {
        let calls = after[i].0 - before[i].0;
        let ns = after[i].1 - before[i].1;
        if calls == 0 {
            continue;
        }
        total_calls += calls as f64;
        total_ns += ns;
        rows.push((name, calls, ns));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    println!("    {:<14} {:>10} {:>12} {:>14}", "store call", format!("per {unit}"), "mean", format!("ms per {unit}"));
    for (name, calls, ns) in rows {
        println!("    {:<14} {:>10.2} {:>9.3} ms {:>11.3} ms", name, calls as f64 / units, ns as f64 / calls as f64 / 1e6, ns as f64 / units / 1e6);
    }
    println!(
        "    {:<14} {:>10.2} {:>12} {:>11.3} ms   (store time / wall time: {:.0}%)",
        "all",
        total_calls / units,
        "",
        total_ns as f64 / units / 1e6,
        100.0 * total_ns as f64 / wall.as_nanos().max(1) as f64
    );
}

/// Median time of writing 4 KiB and `fdatasync`ing it in `dir`: the cost of one durable commit.
fn fsync_cost(dir: &Path) -> Duration {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("create the fsync probe file");
    let block = [7u8; 4096];
    let mut v = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        f.write_all(&block).expect("write the fsync probe");
        f.sync_data().expect("fdatasync");
        v.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    v.sort();
    percentile(&v, 0.5)
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let knobs = Knobs::from_env();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("a tokio runtime");
    rt.block_on(bench(knobs, workers));
}

async fn bench(knobs: Knobs, workers: usize) {
    let total = Instant::now();
    let dir = match &knobs.dir {
        Some(parent) => tempfile::tempdir_in(parent).expect("a temporary directory in RUNBOT_BENCH_DIR"),
        None => tempfile::tempdir().expect("a temporary directory"),
    };
    let long = "noop50";
    let short = "noop3";
    std::fs::write(dir.path().join("runbooks.toml"), runbook(long, LONG_STEPS) + &runbook(short, SHORT_STEPS)).expect("write runbooks.toml");
    let kinds = StepKinds::shipped().with(Arc::new(Noop));
    let settings = Settings::from_toml(&config(knobs.interval_ms), dir.path(), &kinds).unwrap_or_else(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        panic!("the bench config does not validate:\n{}", lines.join("\n"))
    });
    let db = dir.path().join("runbot.db");
    let url = format!("sqlite://{}", db.display());
    let sql = SqlStore::connect(&url).await.expect("connect the SQLite store");
    let store = Arc::new(Timed::new(sql));
    let chat = Arc::new(NullChat::default());
    let engine = Engine::new(settings, store.clone(), Chats::new().with(chat.clone() as Arc<dyn Chat>), Arc::new(SystemClock), kinds);
    let b = Bench { engine, store: store.clone(), chat: chat.clone() };
    let patience = Duration::from_millis(knobs.interval_ms) * 3 + Duration::from_secs(10);

    let fsync = fsync_cost(dir.path());
    let wal = dir.path().join("runbot.db-wal").exists();
    println!();
    println!("runbot engine benchmark");
    println!(
        "  machine:  {workers} CPUs (available_parallelism, = nproc); tokio multi-thread runtime, {workers} workers; {} build",
        if cfg!(debug_assertions) { "DEBUG" } else { "release" }
    );
    println!("  store:    SqlStore, SQLite file {} (WAL: {}; synchronous: sqlx/SQLite default FULL)", db.display(), if wal { "yes" } else { "NO" });
    println!("  disk:     write 4 KiB + fdatasync in that directory: median {:.3} ms", ms(fsync));
    println!("  ports:    chat fake that only returns ids; SystemClock; bench-only `noop` step kind");
    println!("  engine:   update_interval_ms = {} (status edits coalesced, sent by background tasks); lease_secs = 30", knobs.interval_ms);
    println!("  scale:    {} (RUNBOT_BENCH_SCALE), concurrency {} (RUNBOT_BENCH_CONCURRENCY)", knobs.scale, knobs.concurrency);

    // Warm-up: connections, caches, first allocations.
    for _ in 0..3 {
        b.run(short).await;
    }
    b.run(long).await;
    store.drain(patience).await;

    // (a) Engine overhead per step: long executions, one at a time.
    let before = store.snapshot();
    let (a_lat, a_wall) = b.batch(long, knobs.n(100), 1, knobs.budget(20.0)).await;
    let after = store.snapshot();
    let a_steps = a_lat.len() * LONG_STEPS;
    let per_step = a_wall / a_steps.max(1) as u32;
    let a = lat(&a_lat);
    let drained_a = store.drain(patience).await;

    // (b1) Executions per second, one at a time.
    let b1_before = store.snapshot();
    let (b1_lat, b1_wall) = b.batch(short, knobs.n(1000), 1, knobs.budget(10.0)).await;
    let b1_after = store.snapshot();
    let drained_b1 = store.drain(patience).await;

    // (b2) Executions per second, `concurrency` in flight.
    let b2_before = store.snapshot();
    let (b2_lat, b2_wall) = b.batch(short, knobs.n(2000), knobs.concurrency, knobs.budget(10.0)).await;
    let b2_after = store.snapshot();
    let drained_b2 = store.drain(patience).await;

    let b1 = lat(&b1_lat);
    let b2 = lat(&b2_lat);
    let eps1 = b1_lat.len() as f64 / b1_wall.as_secs_f64();
    let eps2 = b2_lat.len() as f64 / b2_wall.as_secs_f64();
    let marginal = (a.mean.as_secs_f64() - b1.mean.as_secs_f64()) / (LONG_STEPS - SHORT_STEPS) as f64;
    let verdict = if per_step <= Duration::from_millis(1) { "meets the target" } else { "ABOVE the target" };

    println!();
    println!("== figures ==");
    println!(
        "engine overhead per step: {:.3} ms (target ≤ 1 ms; {verdict}) over {a_steps} steps ({} executions × {LONG_STEPS} no-op steps, sequential)",
        ms(per_step),
        a_lat.len()
    );
    println!(
        "executions/s: sequential {eps1:.0}, {} concurrent {eps2:.0} ({SHORT_STEPS} no-op steps each, through handle_command)",
        knobs.concurrency
    );
    println!();
    println!("(a) {} executions × {LONG_STEPS} steps in {:.2} s", a_lat.len(), a_wall.as_secs_f64());
    println!("    per execution: mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms  (command typed → final state saved)", ms(a.mean), ms(a.p50), ms(a.p99));
    println!(
        "    marginal cost of one more step: {:.3} ms  ((mean {LONG_STEPS}-step − mean {SHORT_STEPS}-step execution) / {})",
        marginal * 1e3,
        LONG_STEPS - SHORT_STEPS
    );
    store_table(&before, &after, a_steps as f64, "step", a_wall);
    println!(
        "(b) sequential: {} executions in {:.2} s; latency mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
        b1_lat.len(),
        b1_wall.as_secs_f64(),
        ms(b1.mean),
        ms(b1.p50),
        ms(b1.p99)
    );
    store_table(&b1_before, &b1_after, b1_lat.len() as f64, "exec", b1_wall);
    println!(
        "    {} concurrent: {} executions in {:.2} s; latency mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
        knobs.concurrency,
        b2_lat.len(),
        b2_wall.as_secs_f64(),
        ms(b2.mean),
        ms(b2.p50),
        ms(b2.p99)
    );
    store_table(&b2_before, &b2_after, b2_lat.len() as f64, "exec", b2_wall);
    let (terminal, delivered) = store.counts();
    println!(
        "    chat: {} posts, {} status edits, {} private replies; final status delivered for {delivered} of {terminal} executions{}",
        chat.posts.load(Ordering::Relaxed),
        chat.edits.load(Ordering::Relaxed),
        chat.privates.load(Ordering::Relaxed),
        if drained_a && drained_b1 && drained_b2 { "" } else { " (NOT all within the drain time)" }
    );
    println!("    timed from command typed to final state saved; final status edits follow within one update interval, outside the timing");
    println!("total bench time {:.1} s", total.elapsed().as_secs_f64());
}
