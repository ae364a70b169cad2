//! Backup catalog benchmark (not a timed test): the recoverable-window computation over a
//! barman-cloud archive of 10,000 and 100,000 WAL segment objects.
//!
//!     cargo bench -p runbot-tests --bench catalog
//!
//! What runs: the sandbox S3 server with its in-memory backend (ListObjectsV2 pages cost
//! O(page + log n); s3s-fs walks the whole bucket per page), filled directly — not over HTTP —
//! with barman-cloud's layout for one server: WAL segments on 4 timelines (3 `.history`
//! files, the old timeline's `.partial` at each switch), 3 missing segments, 5 base backups
//! (`backup.info`, `data.tar`, the `.backup` file in `wals/`), and another server's objects
//! under the same prefix. Then the real `BarmanS3Catalog` reads it through aws-sdk-s3 over
//! loopback HTTP with SigV4: `snapshot()` (every ListObjectsV2 page, the `backup.info` and
//! history downloads, folding) and `analyze()` (timeline path, gaps, window), timed over
//! several iterations. Target: ≤ 3 s at 100,000 objects.
//!
//! Memory: the catalog phase runs once more in a child process (this binary re-executed with
//! `--catalog-child`), which resets its peak RSS (`/proc/self/clear_refs`), runs snapshot +
//! analyze, and reports `VmHWM − VmRSS before`: the catalog's own peak, without the server,
//! the fixture or the runtime. As a reference that the figure does see per-object memory, a
//! second child lists the same objects and keeps every key and time (what a catalog without
//! folding would hold). The folded index is the `WalRun` list (`runs × size_of::<WalRun>()`).
//!
//! Environment (optional): `RUNBOT_BENCH_CATALOG_SIZES` (default `10000,100000`),
//! `RUNBOT_BENCH_ITERATIONS` (default 5).

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use runbot_adapters::backup::{BarmanS3Catalog, S3Config};
use runbot_commands::ports::backup::{BackupCatalog, CatalogAnalysis, CatalogSnapshot, WalName, WalRun};
use runbot_sandbox::s3;

const SEG: u64 = 16 * 1024 * 1024;
const BUCKET: &str = "backups-bucket";
const SOURCE: &str = "s3://backups-bucket/prod";
const SERVER: &str = "promotions-db";
const ROOT: &str = "prod/promotions-db";
const TIMELINES: u32 = 4;
const BACKUPS: u64 = 5;
/// Missing segments (each splits a run).
const HOLES: [f64; 3] = [0.30, 0.55, 0.80];
/// The first segment number on timeline 1.
const FIRST: u64 = 2;
const CHILD: &str = "--catalog-child";

type Rt = tokio::runtime::Runtime;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD) {
        child(&args[i + 1..]);
        return;
    }
    let sizes: Vec<u64> = std::env::var("RUNBOT_BENCH_CATALOG_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("RUNBOT_BENCH_CATALOG_SIZES: numbers"))
        .collect();
    let iterations: usize = std::env::var("RUNBOT_BENCH_ITERATIONS").ok().map(|s| s.parse().expect("RUNBOT_BENCH_ITERATIONS")).unwrap_or(5).max(1);

    println!("catalog benchmark: BarmanS3Catalog::snapshot() + analyze(), aws-sdk-s3 over loopback HTTP (SigV4)");
    println!("  to the sandbox S3 server, in-memory backend; layout: {TIMELINES} timelines, {} holes, {BACKUPS} base backups", HOLES.len());
    println!();
    println!(
        "{:>8} {:>9} {:>6} {:>7} {:>11} {:>11} {:>11} {:>10} {:>5} {:>7} {:>5}",
        "WAL segs", "objects", "fill", "pages", "min", "median", "(analyze)", "per obj", "runs", "index", "gaps"
    );
    let mut rows = Vec::new();
    for &n in &sizes {
        let layout = Layout::new(n);
        let server = s3::start_in_memory().expect("S3 server");
        server.create_bucket(BUCKET).expect("bucket");
        let t = Instant::now();
        let objects = layout.fill(server.memory().expect("in-memory"));
        let fill = t.elapsed();

        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let catalog = catalog(server.url());
        let pages = rt.block_on(catalog.count_wal_pages()).expect("list") + 1; // + base/
        // Warm-up, and the answer is checked (a broken catalog must not look fast).
        let (snap, analysis) = run(&rt, &catalog);
        layout.check(&snap, &analysis);
        let mut total = Vec::new();
        let mut analyze = Vec::new();
        for _ in 0..iterations {
            let t = Instant::now();
            let snap = rt.block_on(catalog.snapshot()).expect("snapshot");
            let ta = Instant::now();
            let a = snap.analyze();
            analyze.push(ta.elapsed());
            total.push(t.elapsed());
            std::hint::black_box(a);
        }
        total.sort();
        analyze.sort();
        let median = total[total.len() / 2];
        let index = snap.wal_runs.len() * std::mem::size_of::<WalRun>();
        println!(
            "{:>8} {:>9} {:>6} {:>7} {:>11} {:>11} {:>11} {:>10} {:>5} {:>7} {:>5}",
            n,
            objects,
            secs(fill),
            pages,
            secs(total[0]),
            secs(median),
            secs(analyze[analyze.len() / 2]),
            format!("{:.1} µs", median.as_secs_f64() * 1e6 / objects as f64),
            snap.wal_runs.len(),
            format!("{index} B"),
            analysis.gaps.len(),
        );
        let mem = memory(server.url(), n);
        rows.push((n, median, mem, index));
        drop(rt);
        server.stop();
    }

    println!();
    println!("memory, child process, catalog phase only (peak RSS − RSS before; KiB):");
    println!("{:>8} {:>14} {:>14} {:>26}", "WAL segs", "catalog", "peak RSS", "reference: keys kept");
    for (n, _, mem, _) in &rows {
        println!("{:>8} {:>14} {:>14} {:>26}", n, mem.catalog.growth_kib, mem.catalog.hwm_kib, mem.keys.growth_kib);
    }
    println!();
    if let Some((n, median, _, index)) = rows.iter().max_by_key(|r| r.0) {
        let verdict = if median.as_secs_f64() <= 3.0 { "met" } else { "NOT met" };
        println!("target ≤ 3 s at the largest size ({n}): {verdict} (median {}); folded WAL-run index: {index} B", secs(*median));
    }
    if rows.len() >= 2 {
        let (small, large) = (&rows[0], &rows[rows.len() - 1]);
        let grew = large.2.catalog.growth_kib as i64 - small.2.catalog.growth_kib as i64;
        let keys = large.2.keys.growth_kib as i64 - small.2.keys.growth_kib as i64;
        println!("catalog peak growth from {} to {} objects: {grew:+} KiB (keeping every key instead: {keys:+} KiB)", small.0, large.0);
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn config(url: &str) -> S3Config {
    S3Config::new(Some(url), s3::REGION, s3::ACCESS_KEY, s3::SECRET_KEY)
}

fn catalog(url: &str) -> BarmanS3Catalog {
    BarmanS3Catalog::new(&config(url), SOURCE, SERVER).expect("catalog")
}

fn run(rt: &Rt, catalog: &BarmanS3Catalog) -> (CatalogSnapshot, CatalogAnalysis) {
    let snap = rt.block_on(catalog.snapshot()).expect("snapshot");
    let analysis = snap.analyze();
    (snap, analysis)
}

// ---------------------------------------------------------------------------------------------
// The archive.

/// barman-cloud's layout for `segments` WAL segment objects.
struct Layout {
    segments: u64,
    /// Segment numbers FIRST..=last, minus the holes.
    last: u64,
    /// (timeline, first segment number on it), oldest first.
    switches: Vec<(u32, u64)>,
    holes: Vec<u64>,
    /// Begin segments of the base backups.
    backups: Vec<u64>,
    t0: SystemTime,
}

impl Layout {
    fn new(segments: u64) -> Layout {
        assert!(segments >= 1000, "at least 1000 segments");
        let span = segments + HOLES.len() as u64;
        let at = |f: f64| FIRST + (span as f64 * f) as u64;
        let switches = (1..=TIMELINES).map(|t| (t, at(f64::from(t - 1) / f64::from(TIMELINES)))).collect::<Vec<_>>();
        let holes = HOLES.iter().map(|f| at(*f) + 3).collect::<Vec<_>>();
        let backups = (0..BACKUPS).map(|i| at(0.07 + 0.88 * i as f64 / (BACKUPS - 1) as f64)).collect();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        Layout { segments, last: FIRST + span - 1, switches, holes, backups, t0 }
    }

    fn timeline_of(&self, segno: u64) -> u32 {
        self.switches.iter().rev().find(|(_, s)| *s <= segno).map(|(t, _)| *t).unwrap_or(1)
    }

    /// A segment's upload time: one a minute.
    fn uploaded(&self, segno: u64) -> SystemTime {
        self.t0 + Duration::from_secs(60 * (segno - FIRST))
    }

    fn wal_key(w: WalName, suffix: &str) -> String {
        let name = w.file_name(SEG);
        format!("{ROOT}/wals/{}/{name}{suffix}", &name[..16])
    }

    fn lsn(segno: u64) -> String {
        let l = segno * SEG;
        format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)
    }

    fn time(t: SystemTime) -> String {
        DateTime::<Utc>::from(t).format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
    }

    /// Inserts every object; returns how many objects the catalog's listings see.
    fn fill(&self, store: &s3::memory::MemoryStore) -> u64 {
        let mut listed = 0u64;
        let mut put = |key: String, body: Vec<u8>, at: SystemTime, seen: bool| {
            store.insert(BUCKET, &key, body, at).expect("insert");
            listed += u64::from(seen);
        };
        let mut n = 0;
        for segno in FIRST..=self.last {
            if self.holes.contains(&segno) {
                continue;
            }
            n += 1;
            put(Self::wal_key(WalName { timeline: self.timeline_of(segno), segno }, ".gz"), Vec::new(), self.uploaded(segno), true);
        }
        assert_eq!(n, self.segments);
        for pair in self.switches.windows(2) {
            let ((old, _), (new, at)) = (pair[0], pair[1]);
            put(Self::wal_key(WalName { timeline: old, segno: at }, ".partial"), Vec::new(), self.uploaded(at), true);
            let history: String = self.switches[..new as usize]
                .windows(2)
                .map(|w| format!("{}\t{}\tno recovery target specified\n", w[0].0, Self::lsn(w[1].1)))
                .collect();
            put(format!("{ROOT}/wals/{new:08X}.history"), history.into_bytes(), self.uploaded(at), true);
        }
        for &b in &self.backups {
            let tli = self.timeline_of(b);
            let (begin, end) = (WalName { timeline: tli, segno: b }, WalName { timeline: tli, segno: b + 1 });
            let begin_time = self.uploaded(b) - Duration::from_secs(50);
            let end_time = self.uploaded(b + 1) - Duration::from_secs(10);
            let id = DateTime::<Utc>::from(begin_time).format("%Y%m%dT%H%M%S").to_string();
            let info = format!(
                "backup_label=None\nbegin_time={}\nbegin_wal={}\nbegin_xlog={}\nend_time={}\nend_wal={}\nend_xlog={}\n\
                 status=DONE\nsystemid=7300000000000000000\ntimeline={tli}\nversion=150018\nxlog_segment_size={SEG}\n",
                Self::time(begin_time),
                begin.file_name(SEG),
                Self::lsn(b),
                Self::time(end_time),
                end.file_name(SEG),
                Self::lsn(b + 1),
            );
            put(format!("{ROOT}/base/{id}/backup.info"), info.into_bytes(), end_time, true);
            put(format!("{ROOT}/base/{id}/data.tar"), b"tar".to_vec(), end_time, true);
            put(Self::wal_key(begin, ".00000028.backup"), Vec::new(), end_time, true);
        }
        // Another server under the same prefix: not listed by this catalog.
        for segno in FIRST..FIRST + 500 {
            put(
                format!("prod/other-db/wals/0000000100000000/{}.gz", WalName { timeline: 1, segno }.file_name(SEG)),
                Vec::new(),
                self.uploaded(segno),
                false,
            );
        }
        listed
    }

    /// The catalog read what was written.
    fn check(&self, snap: &CatalogSnapshot, a: &CatalogAnalysis) {
        assert_eq!(snap.wal_segments, self.segments, "segments");
        assert_eq!(snap.wal_runs.len(), TIMELINES as usize + self.holes.len(), "runs: {:?}", snap.wal_runs);
        assert_eq!(snap.histories.len(), TIMELINES as usize - 1, "histories");
        assert_eq!(snap.backups.len(), BACKUPS as usize, "backups");
        let path: Vec<(u32, u64)> = self.switches.iter().map(|(t, s)| (*t, if *t == 1 { 0 } else { *s })).collect();
        assert_eq!(a.timeline_path, path, "timeline path");
        assert_eq!(a.gaps.len(), self.holes.len(), "gaps: {:?}", a.gaps);
        let newest = WalName { timeline: TIMELINES, segno: self.last }.file_name(SEG);
        assert_eq!(snap.newest_wal.as_ref().map(|(n, _)| n.as_str()), Some(newest.as_str()), "newest WAL");
        assert!(a.reaches.iter().any(|r| r.usable), "a usable backup: {:?}", a.reaches);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory, measured in a child process.

#[derive(Debug, Default)]
struct Measured {
    growth_kib: u64,
    hwm_kib: u64,
}

struct Memory {
    catalog: Measured,
    keys: Measured,
}

fn memory(url: &str, segments: u64) -> Memory {
    let measure = |mode: &str| -> Measured {
        let exe = std::env::current_exe().expect("current exe");
        let out = Command::new(exe).args([CHILD, mode, url, &segments.to_string()]).output().expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child {mode} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let field = |name: &str| -> u64 {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("child {mode}: no {name} in {stdout:?}"))
        };
        Measured { growth_kib: field("growth_kib"), hwm_kib: field("hwm_kib") }
    };
    Memory { catalog: measure("catalog"), keys: measure("keys") }
}

/// `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// `child <mode> <url> <segments>`: prints `growth_kib=… hwm_kib=…`.
fn child(args: &[String]) {
    let [mode, url, segments] = args else { panic!("usage: {CHILD} catalog|keys URL SEGMENTS") };
    let segments: u64 = segments.parse().expect("segments");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let config = config(url);
    // Warm up everything that is not per object: runtime, client, connection, TLS-less HTTP
    // stack, the catalog's code paths (an empty server).
    let empty = BarmanS3Catalog::new(&config, SOURCE, "no-such-server").expect("catalog");
    let (warm, _) = run(&rt, &empty);
    assert_eq!(warm.wal_segments, 0);
    let client = config.client().expect("client");
    rt.block_on(client.list_objects_v2().bucket(BUCKET).prefix("none/").send()).expect("warm-up listing");

    let before = status_kib("VmRSS");
    // Resets VmHWM to the current RSS (Linux ≥ 4.0).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS (/proc/self/clear_refs)");
    match mode.as_str() {
        "catalog" => {
            let (snap, a) = run(&rt, &catalog(url));
            assert_eq!(snap.wal_segments, segments);
            std::hint::black_box((&snap, &a));
        }
        "keys" => {
            // Reference: what holding one entry per object costs.
            let kept = rt.block_on(all_keys(&client, &format!("{ROOT}/wals/")));
            assert!(kept.len() as u64 >= segments);
            std::hint::black_box(&kept);
        }
        other => panic!("unknown child mode {other}"),
    }
    let hwm = status_kib("VmHWM");
    println!("growth_kib={} hwm_kib={hwm} before_kib={before}", hwm.saturating_sub(before));
}

async fn all_keys(client: &aws_sdk_s3::Client, prefix: &str) -> Vec<(String, DateTime<Utc>)> {
    let mut kept = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = client.list_objects_v2().bucket(BUCKET).prefix(prefix);
        if let Some(t) = token.take() {
            req = req.continuation_token(t);
        }
        let page = req.send().await.expect("list");
        for o in page.contents() {
            let t = o.last_modified().and_then(|d| DateTime::<Utc>::from_timestamp(d.secs(), d.subsec_nanos())).unwrap_or_default();
            kept.push((o.key().unwrap_or_default().to_owned(), t));
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => return kept,
        }
    }
}
