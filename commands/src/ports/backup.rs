//! The backup catalog port: what a point-in-time-recovery archive holds (base backups, WAL
//! segments, timeline history files), read by an adapter (barman-cloud over S3 today;
//! pgBackRest could implement the same trait), and the pure analysis the bot needs on top:
//! the recoverable window, WAL gaps along the timeline path, and whether a requested restore
//! time is reachable and from which base backup.
//!
//! Memory stays bounded whatever the archive size: WAL segments are kept as contiguous runs
//! per timeline ([`WalRunsBuilder`]), not one entry per object.
//!
//! Rules (verified against PostgreSQL 15 + barman-cloud, see the PITR notes):
//! - a segment number is `logid × (2^32 / seg_size) + seg`; the size comes from the backups;
//! - for segment n, recovery reads the file of the newest timeline on the path whose first
//!   segment is ≤ n (the branch segment exists on both; the new timeline wins);
//! - a backup is usable only if the WAL from its `begin_wal` is contiguous past its `end_wal`;
//!   its window is `[end_time, upload time of the last contiguous segment]` — an upper bound:
//!   a time target is reached only if the archive holds a commit after it;
//! - a target before the chosen backup's end is silently wrong with barman, so it is refused.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// PostgreSQL's default WAL segment size (used only when no backup says otherwise).
pub const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The storage could not be read (network, permissions, missing bucket); the message is
    /// the storage's, without credentials.
    #[error("backup catalog {location}: {message}")]
    Storage { location: String, message: String },
    /// An object was read but its content is not what the tool writes.
    #[error("backup catalog {location}: {key}: {message}")]
    Malformed { location: String, key: String, message: String },
}

/// Reads one catalog (one database's archive).
#[async_trait]
pub trait BackupCatalog: Send + Sync {
    /// Where the catalog lives, for messages (`s3://bucket/prefix/server (barman-cloud)`).
    fn location(&self) -> String;
    /// Lists and reads the catalog now.
    async fn snapshot(&self) -> Result<CatalogSnapshot, CatalogError>;
    /// Deletes what `plan` names — the base backups and the WAL segments before its boundary —
    /// and nothing else; returns how many objects were deleted.
    async fn prune(&self, plan: &PrunePlan) -> Result<u64, CatalogError>;
}

/// What a prune deletes: base backups past retention that no restore inside the window needs,
/// and the WAL before the oldest kept backup's first segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrunePlan {
    pub backups: Vec<String>,
    /// WAL segments before this one go (on its timeline and its ancestors); `None`: no WAL.
    pub wal_before: Option<WalName>,
    /// The oldest backup kept: a restore to the start of the window starts from it.
    pub keeps: Option<String>,
    /// The archive's WAL segment size, to read its WAL file names.
    pub wal_segment_size: u64,
}

impl PrunePlan {
    pub fn is_empty(&self) -> bool {
        self.backups.is_empty() && self.wal_before.is_none()
    }
}

/// The configured databases' catalogs by database name (`[databases.NAME.backup]`).
#[derive(Clone, Default)]
pub struct Catalogs {
    by_db: BTreeMap<String, std::sync::Arc<dyn BackupCatalog>>,
}

impl fmt::Debug for Catalogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Catalogs").field(&self.by_db.keys().collect::<Vec<_>>()).finish()
    }
}

impl Catalogs {
    pub fn new() -> Self {
        Catalogs::default()
    }
    pub fn with(mut self, database: impl Into<String>, catalog: std::sync::Arc<dyn BackupCatalog>) -> Self {
        self.by_db.insert(database.into(), catalog);
        self
    }
    pub fn get(&self, database: &str) -> Option<&std::sync::Arc<dyn BackupCatalog>> {
        self.by_db.get(database)
    }
}

/// A WAL file name's parts: `TTTTTTTTLLLLLLLLSSSSSSSS` (timeline, log id, segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct WalName {
    pub timeline: u32,
    pub segno: u64,
}

impl WalName {
    /// Parses the first 24 hex characters of a WAL file name (suffixes are the caller's).
    pub fn parse(name: &str, seg_size: u64) -> Option<WalName> {
        let hex = name.get(..24)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(&hex[..8], 16).ok()?;
        let log = u64::from_str_radix(&hex[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&hex[16..24], 16).ok()?;
        let per_log = segments_per_log(seg_size)?;
        if seg >= per_log {
            return None;
        }
        Some(WalName { timeline, segno: log * per_log + seg })
    }

    /// The 24-character file name.
    pub fn file_name(&self, seg_size: u64) -> String {
        let per_log = segments_per_log(seg_size).unwrap_or(256);
        format!("{:08X}{:08X}{:08X}", self.timeline, self.segno / per_log, self.segno % per_log)
    }
}

fn segments_per_log(seg_size: u64) -> Option<u64> {
    if seg_size == 0 || !seg_size.is_power_of_two() || seg_size > 0x1_0000_0000 {
        return None;
    }
    Some(0x1_0000_0000 / seg_size)
}

/// Parses an LSN written `X/Y` (hex).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

/// One base backup as the tool recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackup {
    pub id: String,
    /// `DONE` when complete (barman-cloud's word; other tools map to it).
    pub status: String,
    pub begin_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub timeline: u32,
    pub begin_wal: Option<WalName>,
    pub end_wal: Option<WalName>,
    /// What the backup occupies in the archive (its objects' sizes), when the layout tells.
    pub stored_bytes: Option<u64>,
}

impl BaseBackup {
    pub fn is_done(&self) -> bool {
        self.status == "DONE"
    }
}

/// A run of consecutive WAL segments `first..=last` on one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRun {
    pub timeline: u32,
    pub first: u64,
    pub last: u64,
    /// The newest upload time among the run's objects.
    pub newest_upload: DateTime<Utc>,
}

/// Collects WAL segments, in any order, into runs: memory grows with the number of holes,
/// not with the number of segments.
#[derive(Debug, Default)]
pub struct WalRunsBuilder {
    // timeline -> first segno -> run
    runs: BTreeMap<u32, BTreeMap<u64, WalRun>>,
    segments: u64,
}

impl WalRunsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, wal: WalName, uploaded: DateTime<Utc>) {
        let runs = self.runs.entry(wal.timeline).or_default();
        let n = wal.segno;
        // The run starting at or before n.
        let before = runs.range(..=n).next_back().map(|(k, r)| (*k, r.last));
        if let Some((start, last)) = before
            && last >= n
        {
            if let Some(r) = runs.get_mut(&start) {
                r.newest_upload = r.newest_upload.max(uploaded); // duplicate object name
            }
            return;
        }
        self.segments += 1;
        let mut run = WalRun { timeline: wal.timeline, first: n, last: n, newest_upload: uploaded };
        if let Some((start, last)) = before
            && last + 1 == n
            && let Some(prev) = runs.remove(&start)
        {
            run.first = prev.first;
            run.newest_upload = run.newest_upload.max(prev.newest_upload);
        }
        if let Some(next) = runs.remove(&(n + 1)) {
            run.last = next.last;
            run.newest_upload = run.newest_upload.max(next.newest_upload);
        }
        runs.insert(run.first, run);
    }

    /// Number of distinct segments added.
    pub fn segments(&self) -> u64 {
        self.segments
    }

    pub fn finish(self) -> Vec<WalRun> {
        self.runs.into_values().flat_map(|m| m.into_values()).collect()
    }
}

/// One line of a timeline history file: the parent timeline and where the child branched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineSwitch {
    pub parent: u32,
    pub switch_lsn: u64,
    pub reason: String,
}

/// `<TLI>.history`: the ancestry of timeline `timeline`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    pub timeline: u32,
    pub switches: Vec<TimelineSwitch>,
}

impl TimelineHistory {
    /// Parses the content of a history file (`parent<TAB>X/Y<TAB>reason` lines, `#` comments).
    pub fn parse(timeline: u32, content: &str) -> Result<TimelineHistory, String> {
        let mut switches = Vec::new();
        for (i, line) in content.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, char::is_whitespace);
            let parent = parts.next().unwrap_or("");
            let lsn = parts.next().unwrap_or("").trim();
            let reason = parts.next().unwrap_or("").trim().to_owned();
            let parent: u32 = parent.parse().map_err(|_| format!("line {}: bad parent timeline {parent:?}", i + 1))?;
            let switch_lsn = parse_lsn(lsn).ok_or_else(|| format!("line {}: bad switch LSN {lsn:?}", i + 1))?;
            switches.push(TimelineSwitch { parent, switch_lsn, reason });
        }
        Ok(TimelineHistory { timeline, switches })
    }
}

/// Everything read from a catalog at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogSnapshot {
    pub location: String,
    /// Bytes per WAL segment (from the backups; the default when there is none).
    pub wal_segment_size: u64,
    pub backups: Vec<BaseBackup>,
    pub wal_runs: Vec<WalRun>,
    /// Number of WAL segment objects seen.
    pub wal_segments: u64,
    pub histories: Vec<TimelineHistory>,
    /// Newest WAL segment object by upload time: name and upload time.
    pub newest_wal: Option<(String, DateTime<Utc>)>,
}

/// A stretch of the timeline path missing from the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalGap {
    pub timeline: u32,
    pub first_missing: WalName,
    pub last_missing: WalName,
    /// `first..=last` as WAL file names.
    pub first_name: String,
    pub last_name: String,
}

/// What one base backup allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReach {
    pub backup_id: String,
    pub end_time: DateTime<Utc>,
    /// Usable: its WAL is contiguous past `end_wal`.
    pub usable: bool,
    /// The last segment reachable from `begin_wal` without a hole.
    pub reached: Option<WalName>,
    /// Upload time of that segment: the upper bound of this backup's window.
    pub reach_time: Option<DateTime<Utc>>,
    /// Why it is not usable.
    pub problem: Option<String>,
}

/// A contiguous range of restorable times, from one or more backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverableRange {
    pub from: DateTime<Utc>,
    /// Upper bound (newest upload of the last contiguous segment).
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogAnalysis {
    /// `(timeline, first segment)` from the oldest ancestor to the newest timeline.
    pub timeline_path: Vec<(u32, u64)>,
    pub reaches: Vec<BackupReach>,
    pub gaps: Vec<WalGap>,
    /// The restorable times, sorted, non-overlapping. Empty: nothing is restorable.
    pub window: Vec<RecoverableRange>,
    pub newest_backup: Option<BaseBackup>,
    pub newest_wal: Option<(String, DateTime<Utc>)>,
}

impl CatalogAnalysis {
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.window.first().map(|r| r.from)
    }

    pub fn latest(&self) -> Option<DateTime<Utc>> {
        self.window.last().map(|r| r.to)
    }
}

/// A target time the catalog can reach, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub target: DateTime<Utc>,
    pub backup_id: String,
    pub backup_end: DateTime<Utc>,
    pub reach_time: DateTime<Utc>,
}

/// Why a target time cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    NoBackup,
    BeforeFirstBackup { target: DateTime<Utc>, earliest: DateTime<Utc> },
    InGap { target: DateTime<Utc>, gap: Option<WalGap>, resumes: Option<DateTime<Utc>>, reach_before: DateTime<Utc> },
    AfterLatest { target: DateTime<Utc>, latest: DateTime<Utc> },
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |d: &DateTime<Utc>| d.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
        match self {
            Unreachable::NoBackup => write!(f, "no usable base backup in the catalog"),
            Unreachable::BeforeFirstBackup { target, earliest } => {
                write!(f, "{} is before the end of the oldest usable base backup; the earliest restorable time is {}", t(target), t(earliest))
            }
            Unreachable::InGap { target, gap, resumes, reach_before } => {
                write!(f, "{} is behind a WAL gap: the archive is contiguous only up to {}", t(target), t(reach_before))?;
                if let Some(g) = gap {
                    write!(f, " (missing {}..{})", g.first_name, g.last_name)?;
                }
                if let Some(r) = resumes {
                    write!(f, "; restorable again from {}", t(r))?;
                }
                Ok(())
            }
            Unreachable::AfterLatest { target, latest } => {
                write!(f, "{} is after the newest archived WAL (uploaded {}); use --date latest for the newest archived point", t(target), t(latest))
            }
        }
    }
}

/// A backup that cannot start a restore, and why.
fn unusable(b: &BaseBackup, end_time: DateTime<Utc>, problem: String) -> BackupReach {
    BackupReach { backup_id: b.id.clone(), end_time, usable: false, reached: None, reach_time: None, problem: Some(problem) }
}

impl CatalogSnapshot {
    /// What is past `retention` at `now` and safe to delete: every base backup older than the
    /// newest one that ended before the window's start (that one is kept: restoring to the
    /// start of the window needs it), and the WAL before the kept backup's first segment.
    /// Failed backups that ended (or began) before the window go too.
    pub fn prune_plan(&self, now: DateTime<Utc>, retention: chrono::Duration) -> PrunePlan {
        let cutoff = now - retention;
        let mut done: Vec<&BaseBackup> = self.backups.iter().filter(|b| b.is_done() && b.end_time.is_some()).collect();
        done.sort_by_key(|b| b.end_time);
        let anchor = done.iter().rev().find(|b| b.end_time.is_some_and(|t| t < cutoff)).copied();
        let Some(anchor) = anchor else {
            let keeps = done.first().map(|b| b.id.clone());
            return PrunePlan { backups: Vec::new(), wal_before: None, keeps, wal_segment_size: self.wal_segment_size };
        };
        let anchor_end = anchor.end_time.unwrap_or(cutoff);
        let mut backups: Vec<String> = self
            .backups
            .iter()
            .filter(|b| b.id != anchor.id)
            .filter(|b| match (b.is_done(), b.end_time.or(b.begin_time)) {
                (true, Some(t)) => t < anchor_end,
                (false, Some(t)) => t < cutoff,
                _ => false,
            })
            .map(|b| b.id.clone())
            .collect();
        backups.sort();
        let wal_before = anchor.begin_wal.filter(|w| self.wal_runs.iter().any(|r| r.first < w.segno));
        PrunePlan { backups, wal_before, keeps: Some(anchor.id.clone()), wal_segment_size: self.wal_segment_size }
    }

    /// The timeline path to the newest timeline: `(timeline, first segment)`, oldest first.
    pub fn timeline_path(&self) -> Vec<(u32, u64)> {
        let newest_wal_tli = self.wal_runs.iter().map(|r| r.timeline).max();
        let newest_hist = self.histories.iter().max_by_key(|h| h.timeline);
        let newest = newest_wal_tli.into_iter().chain(newest_hist.map(|h| h.timeline)).max();
        let Some(newest) = newest else { return Vec::new() };
        let mut path = Vec::new();
        match self.histories.iter().find(|h| h.timeline == newest) {
            Some(h) => {
                let mut begin = 0;
                for s in &h.switches {
                    path.push((s.parent, begin));
                    begin = s.switch_lsn / self.wal_segment_size;
                }
                path.push((newest, begin));
            }
            None => path.push((newest, 0)),
        }
        path
    }

    pub fn analyze(&self) -> CatalogAnalysis {
        let path = self.timeline_path();
        let runs = RunIndex::new(&self.wal_runs);
        let seg = self.wal_segment_size;

        let mut reaches = Vec::new();
        for b in self.backups.iter().filter(|b| b.is_done()) {
            let Some(end_time) = b.end_time else { continue };
            let (Some(begin), Some(end)) = (b.begin_wal, b.end_wal) else {
                reaches.push(unusable(b, end_time, "backup.info has no begin_wal/end_wal".into()));
                continue;
            };
            if !on_path(&path, begin) {
                reaches.push(unusable(
                    b,
                    end_time,
                    format!(
                        "taken on timeline {} which is not an ancestor of the newest timeline {}",
                        b.timeline,
                        path.last().map(|p| p.0).unwrap_or(b.timeline)
                    ),
                ));
                continue;
            }
            let walked = walk(&path, &runs, begin.segno);
            let (usable, problem) = match walked {
                Some((last, _)) if last.segno >= end.segno => (true, None),
                Some((last, _)) => (
                    false,
                    Some(format!(
                        "WAL is missing before the backup's end: contiguous only up to {} (needs {})",
                        last.file_name(seg),
                        end.file_name(seg)
                    )),
                ),
                None => (false, Some(format!("its first WAL segment {} is missing", begin.file_name(seg)))),
            };
            reaches.push(BackupReach {
                backup_id: b.id.clone(),
                end_time,
                usable,
                reached: walked.map(|w| w.0),
                reach_time: walked.map(|w| w.1),
                problem,
            });
        }
        reaches.sort_by(|a, b| a.end_time.cmp(&b.end_time).then_with(|| a.backup_id.cmp(&b.backup_id)));

        // Gaps: holes on the path from the oldest backup's begin to the newest segment.
        let mut gaps = Vec::new();
        let start = self.backups.iter().filter(|b| b.is_done()).filter_map(|b| b.begin_wal).filter(|w| on_path(&path, *w)).map(|w| w.segno).min();
        let newest_on_path = path_end(&path, &self.wal_runs);
        if let (Some(mut n), Some(end)) = (start, newest_on_path) {
            while n <= end {
                match runs.covering(&path, n) {
                    Some(run_end) => n = run_end + 1,
                    None => {
                        let tli = timeline_at(&path, n);
                        // The hole lasts until the next segment present on the path.
                        let next = runs.next_present(&path, n, end).unwrap_or(end + 1);
                        let last = next - 1;
                        let (first_missing, last_missing) =
                            (WalName { timeline: tli, segno: n }, WalName { timeline: timeline_at(&path, last), segno: last });
                        gaps.push(WalGap {
                            timeline: tli,
                            first_missing,
                            last_missing,
                            first_name: first_missing.file_name(seg),
                            last_name: last_missing.file_name(seg),
                        });
                        n = next;
                    }
                }
            }
        }

        // Window: union of [end_time, reach_time] of usable backups.
        let mut ranges: Vec<RecoverableRange> = reaches
            .iter()
            .filter(|r| r.usable)
            .filter_map(|r| r.reach_time.map(|to| RecoverableRange { from: r.end_time, to: to.max(r.end_time) }))
            .collect();
        ranges.sort_by_key(|r| r.from);
        let mut window: Vec<RecoverableRange> = Vec::new();
        for r in ranges {
            match window.last_mut() {
                Some(last) if r.from <= last.to => last.to = last.to.max(r.to),
                _ => window.push(r),
            }
        }

        let newest_backup = self.backups.iter().filter(|b| b.is_done() && b.end_time.is_some()).max_by_key(|b| b.end_time).cloned();
        CatalogAnalysis { timeline_path: path, reaches, gaps, window, newest_backup, newest_wal: self.newest_wal.clone() }
    }
}

impl CatalogAnalysis {
    /// Can the archive be restored to `target`? The newest usable backup that ended before
    /// it and whose contiguous WAL reaches it.
    pub fn restore_point(&self, target: DateTime<Utc>) -> Result<RestorePoint, Unreachable> {
        let usable: Vec<&BackupReach> = self.reaches.iter().filter(|r| r.usable).collect();
        if usable.is_empty() {
            return Err(Unreachable::NoBackup);
        }
        let best = usable.iter().filter(|r| r.end_time < target && r.reach_time.is_some_and(|t| target <= t)).max_by_key(|r| r.end_time);
        if let Some(r) = best {
            return Ok(RestorePoint {
                target,
                backup_id: r.backup_id.clone(),
                backup_end: r.end_time,
                reach_time: r.reach_time.unwrap_or(r.end_time),
            });
        }
        let earliest = usable.iter().map(|r| r.end_time).min().unwrap_or(target);
        if target <= earliest {
            return Err(Unreachable::BeforeFirstBackup { target, earliest });
        }
        let latest = self.latest().unwrap_or(earliest);
        if target > latest {
            // The archive goes on after a hole: that hole is the reason, not the archive's end.
            let gap = self.gap_after(latest);
            return Err(match gap {
                Some(gap) => Unreachable::InGap { target, gap: Some(gap), resumes: None, reach_before: latest },
                None => Unreachable::AfterLatest { target, latest },
            });
        }
        // Between two ranges: a hole in the WAL.
        let reach_before = self.window.iter().filter(|w| w.to < target).map(|w| w.to).max().unwrap_or(earliest);
        let resumes = self.window.iter().filter(|w| w.from >= target).map(|w| w.from).min();
        let gap = self.gap_after(reach_before);
        Err(Unreachable::InGap { target, gap, resumes, reach_before })
    }

    /// `--date latest`: the newest archived point (the end of the newest restorable range)
    /// and the base backup a restore to the end of the archive starts from.
    pub fn latest_point(&self) -> Result<RestorePoint, Unreachable> {
        match self.latest() {
            Some(t) => self.restore_point(t),
            None => Err(Unreachable::NoBackup),
        }
    }

    /// The gap right after the segment a usable backup reaches at `reach_time`.
    fn gap_after(&self, reach_time: DateTime<Utc>) -> Option<WalGap> {
        self.reaches
            .iter()
            .filter(|r| r.usable && r.reach_time == Some(reach_time))
            .filter_map(|r| r.reached)
            .find_map(|w| self.gaps.iter().find(|g| g.first_missing.segno == w.segno + 1))
            .cloned()
    }
}

fn timeline_at(path: &[(u32, u64)], segno: u64) -> u32 {
    path.iter().rev().find(|(_, begin)| *begin <= segno).map(|p| p.0).unwrap_or(0)
}

fn on_path(path: &[(u32, u64)], w: WalName) -> bool {
    // The segment belongs to the path if the path reads it from this timeline, or it is the
    // branch segment of an older timeline on the path (read from the child instead).
    path.iter()
        .enumerate()
        .any(|(i, (tli, begin))| *tli == w.timeline && w.segno >= *begin && path.get(i + 1).is_none_or(|(_, next)| w.segno <= *next))
}

/// The highest segment present on the path.
fn path_end(path: &[(u32, u64)], runs: &[WalRun]) -> Option<u64> {
    runs.iter()
        .filter(|r| {
            path.iter()
                .enumerate()
                .any(|(i, (tli, begin))| *tli == r.timeline && r.last >= *begin && path.get(i + 1).is_none_or(|(_, next)| r.first < *next))
        })
        .map(|r| {
            // Clip to the part the path reads from that timeline.
            let idx = path.iter().position(|(t, _)| *t == r.timeline).unwrap_or(0);
            match path.get(idx + 1) {
                Some((_, next)) => r.last.min(next - 1),
                None => r.last,
            }
        })
        .max()
}

/// Walks from `start` along the path while segments exist: the last one reached and the
/// upload time bound of the run it is in.
fn walk(path: &[(u32, u64)], runs: &RunIndex, start: u64) -> Option<(WalName, DateTime<Utc>)> {
    let mut n = start;
    let mut reached = None;
    while let Some(end) = runs.covering(path, n) {
        let tli = timeline_at(path, end);
        let up = runs.run(tli, end).map(|r| r.newest_upload);
        if let Some(up) = up {
            reached = Some((WalName { timeline: tli, segno: end }, up));
        }
        n = end + 1;
    }
    reached
}

struct RunIndex<'a> {
    by_tli: BTreeMap<u32, BTreeMap<u64, &'a WalRun>>,
}

impl<'a> RunIndex<'a> {
    fn new(runs: &'a [WalRun]) -> Self {
        let mut by_tli: BTreeMap<u32, BTreeMap<u64, &WalRun>> = BTreeMap::new();
        for r in runs {
            by_tli.entry(r.timeline).or_default().insert(r.first, r);
        }
        RunIndex { by_tli }
    }

    fn run(&self, tli: u32, n: u64) -> Option<&'a WalRun> {
        let (_, r) = self.by_tli.get(&tli)?.range(..=n).next_back()?;
        (r.last >= n).then_some(*r)
    }

    /// If segment `n` is present on the path: the last segment of the contiguous stretch
    /// starting at n that is read from the same timeline.
    fn covering(&self, path: &[(u32, u64)], n: u64) -> Option<u64> {
        let idx = path.iter().rposition(|(_, begin)| *begin <= n)?;
        let tli = path[idx].0;
        let r = self.run(tli, n)?;
        Some(match path.get(idx + 1) {
            Some((_, next)) => r.last.min(next - 1),
            None => r.last,
        })
    }

    /// The first segment in `from..=to` present on the path.
    fn next_present(&self, path: &[(u32, u64)], from: u64, to: u64) -> Option<u64> {
        let mut best: Option<u64> = None;
        for (i, (tli, begin)) in path.iter().enumerate() {
            let seg_end = path.get(i + 1).map(|(_, next)| next - 1).unwrap_or(u64::MAX);
            let lo = from.max(*begin);
            let hi = to.min(seg_end);
            if lo > hi {
                continue;
            }
            let Some(runs) = self.by_tli.get(tli) else { continue };
            // A run containing lo, or the first run starting after lo.
            let candidate = runs
                .range(..=lo)
                .next_back()
                .filter(|(_, r)| r.last >= lo)
                .map(|_| lo)
                .or_else(|| runs.range(lo..).next().map(|(k, _)| *k).filter(|k| *k <= hi));
            if let Some(c) = candidate {
                best = Some(best.map_or(c, |b| b.min(c)));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests;
