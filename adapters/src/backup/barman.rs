//! barman-cloud's layout in S3 (`s3://BUCKET/PREFIX`, server `SRV`):
//! ```text
//! PREFIX/SRV/base/<backup_id>/backup.info          key=value text
//! PREFIX/SRV/base/<backup_id>/data.tar[.gz]        (not read)
//! PREFIX/SRV/wals/<TTTTTTTTLLLLLLLL>/<24 hex>[.gz|.bz2|…]            WAL segment
//! PREFIX/SRV/wals/<TTTTTTTTLLLLLLLL>/<24 hex>.<8 hex>.backup[.gz]    backup history (skipped)
//! PREFIX/SRV/wals/<TTTTTTTT>.history[.gz]                           timeline history
//! ```

use std::collections::BTreeMap;
use std::io::Read;

use async_trait::async_trait;
use aws_sdk_s3::error::DisplayErrorContext;
use chrono::{DateTime, Utc};
use runbot_commands::ports::backup::{
    BackupCatalog, BaseBackup, CatalogError, CatalogSnapshot, DEFAULT_WAL_SEGMENT_SIZE, PrunePlan, TimelineHistory, WalName, WalRunsBuilder,
};

use super::{S3Config, parse_s3_url, storage_error};

/// Largest `backup.info` / history file read (they are a few hundred bytes).
const MAX_SMALL_OBJECT: usize = 1024 * 1024;

/// The barman-cloud catalog of one server in one S3 location.
#[derive(Clone)]
pub struct BarmanS3Catalog {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// `PREFIX/SRV/` (or `SRV/` without a prefix).
    root: String,
    location: String,
    page_size: Option<i32>,
}

impl std::fmt::Debug for BarmanS3Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarmanS3Catalog").field("location", &self.location).finish()
    }
}

impl BarmanS3Catalog {
    /// `source` is barman-cloud's `s3://bucket/prefix`, `server_name` its server name.
    pub fn new(config: &S3Config, source: &str, server_name: &str) -> Result<Self, CatalogError> {
        let location = format!("{}/{server_name} (barman-cloud)", source.trim_end_matches('/'));
        let (bucket, prefix) = parse_s3_url(source).map_err(|m| storage_error(&location, m))?;
        if server_name.is_empty() || server_name.contains('/') {
            return Err(storage_error(&location, format!("invalid barman server name {server_name:?}")));
        }
        let client = config.client().map_err(|m| storage_error(&location, m))?;
        let root = if prefix.is_empty() { format!("{server_name}/") } else { format!("{prefix}/{server_name}/") };
        Ok(BarmanS3Catalog { client, bucket, root, location, page_size: None })
    }

    /// Objects per ListObjectsV2 page (S3's default and maximum is 1000).
    pub fn with_page_size(mut self, n: i32) -> Self {
        self.page_size = Some(n.clamp(1, 1000));
        self
    }

    /// Lists every object under `prefix`, page by page, calling `each(key, last_modified)`.
    /// Lists every object under `prefix`, page by page: `each(key, last modified, size)`.
    async fn list(&self, prefix: &str, mut each: impl FnMut(&str, DateTime<Utc>, u64)) -> Result<u64, CatalogError> {
        let mut token: Option<String> = None;
        let mut pages = 0u64;
        loop {
            let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix);
            if let Some(n) = self.page_size {
                req = req.max_keys(n);
            }
            if let Some(t) = token.take() {
                req = req.continuation_token(t);
            }
            let page = req
                .send()
                .await
                .map_err(|e| storage_error(&self.location, format!("listing s3://{}/{prefix}: {}", self.bucket, DisplayErrorContext(&e))))?;
            pages += 1;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let modified = o
                    .last_modified()
                    .and_then(|d| DateTime::<Utc>::from_timestamp(d.secs(), d.subsec_nanos()))
                    .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                each(key, modified, o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0));
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) if !t.is_empty() => token = Some(t.to_owned()),
                (Some(true), _) => {
                    return Err(storage_error(
                        &self.location,
                        format!("listing s3://{}/{prefix}: truncated page without a continuation token", self.bucket),
                    ));
                }
                _ => return Ok(pages),
            }
        }
    }

    /// Downloads a small object, refusing more than [`MAX_SMALL_OBJECT`] bytes.
    async fn get_small(&self, key: &str) -> Result<Vec<u8>, CatalogError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| storage_error(&self.location, format!("reading s3://{}/{key}: {}", self.bucket, DisplayErrorContext(&e))))?;
        let mut body = out.body;
        let mut buf = Vec::new();
        while let Some(chunk) =
            body.try_next().await.map_err(|e| storage_error(&self.location, format!("reading s3://{}/{key}: {e}", self.bucket)))?
        {
            if buf.len() + chunk.len() > MAX_SMALL_OBJECT {
                return Err(self.malformed(key, format!("larger than {MAX_SMALL_OBJECT} bytes")));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    fn malformed(&self, key: &str, message: impl Into<String>) -> CatalogError {
        CatalogError::Malformed { location: self.location.clone(), key: key.to_owned(), message: message.into() }
    }

    async fn delete_key(&self, key: &str) -> Result<(), CatalogError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| storage_error(&self.location, format!("deleting s3://{}/{key}: {}", self.bucket, DisplayErrorContext(&e))))
    }

    /// Lists the WAL area and returns how many ListObjectsV2 pages it took (diagnostics, tests).
    pub async fn count_wal_pages(&self) -> Result<u64, CatalogError> {
        self.list(&format!("{}wals/", self.root), |_, _, _| {}).await
    }
}

#[async_trait]
impl BackupCatalog for BarmanS3Catalog {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn snapshot(&self) -> Result<CatalogSnapshot, CatalogError> {
        // 1. Base backups: the backup.info keys, and each backup's stored bytes, are kept from
        //    the listing (one entry per backup, not per object).
        let base = format!("{}base/", self.root);
        let mut infos = Vec::new();
        let mut stored: BTreeMap<String, u64> = BTreeMap::new();
        self.list(&base, |key, _, size| {
            if let Some(rest) = key.strip_prefix(&base)
                && let Some((id, file)) = rest.split_once('/')
                && !id.is_empty()
            {
                if file == "backup.info" {
                    infos.push((id.to_owned(), key.to_owned()));
                }
                *stored.entry(id.to_owned()).or_default() += size;
            }
        })
        .await?;
        let mut raw = Vec::new();
        let mut seg_size: Option<u64> = None;
        for (id, key) in infos {
            let bytes = self.get_small(&key).await?;
            let text = String::from_utf8(bytes).map_err(|_| self.malformed(&key, "not UTF-8"))?;
            let fields = parse_key_values(&text);
            if let Some(s) = fields.get("xlog_segment_size").filter(|s| *s != "None") {
                let s: u64 = s.parse().map_err(|_| self.malformed(&key, format!("xlog_segment_size {s:?}")))?;
                if !s.is_power_of_two() {
                    return Err(self.malformed(&key, format!("xlog_segment_size {s} is not a power of two")));
                }
                match seg_size {
                    Some(prev) if prev != s => {
                        return Err(self.malformed(&key, format!("xlog_segment_size {s} differs from other backups' {prev}")));
                    }
                    _ => seg_size = Some(s),
                }
            }
            raw.push((id, key, fields));
        }
        let seg = seg_size.unwrap_or(DEFAULT_WAL_SEGMENT_SIZE);
        let mut backups = Vec::new();
        for (id, key, f) in raw {
            let size = stored.get(&id).copied();
            backups.push(BaseBackup { stored_bytes: size, ..self.backup_from_info(id, &key, &f, seg)? });
        }
        backups.sort_by(|a, b| a.id.cmp(&b.id));

        // 2. WAL segments (folded into runs) and history files.
        let wals = format!("{}wals/", self.root);
        let mut runs = WalRunsBuilder::new();
        let mut histories_keys: Vec<(u32, String)> = Vec::new();
        // Per object only fixed-size values are kept (no key, no name): the runs, the newest.
        let mut newest: Option<(WalName, DateTime<Utc>)> = None;
        self.list(&wals, |key, modified, _| {
            let Some(rest) = key.strip_prefix(&wals) else { return };
            match classify_wal_key(rest, seg) {
                WalKey::Segment(w) => {
                    runs.add(w, modified);
                    // Ties (same upload second) go to the later name, so the answer does not
                    // depend on the order the store lists keys in. WalName orders as its file
                    // name does (timeline, then segment number).
                    if newest.is_none_or(|(n, t)| (modified, w) > (t, n)) {
                        newest = Some((w, modified));
                    }
                }
                WalKey::History(tli) => histories_keys.push((tli, key.to_owned())),
                WalKey::Other => {}
            }
        })
        .await?;
        let mut histories = Vec::new();
        for (tli, key) in histories_keys {
            let bytes = self.get_small(&key).await?;
            let bytes = decompress(&key, bytes).map_err(|m| self.malformed(&key, m))?;
            let text = String::from_utf8(bytes).map_err(|_| self.malformed(&key, "not UTF-8"))?;
            histories.push(TimelineHistory::parse(tli, &text).map_err(|m| self.malformed(&key, m))?);
        }
        histories.sort_by_key(|h| h.timeline);

        let wal_segments = runs.segments();
        Ok(CatalogSnapshot {
            location: self.location.clone(),
            wal_segment_size: seg,
            backups,
            wal_runs: runs.finish(),
            wal_segments,
            histories,
            newest_wal: newest.map(|(w, t)| (w.file_name(seg), t)),
        })
    }

    async fn prune(&self, plan: &PrunePlan) -> Result<u64, CatalogError> {
        let mut keys = Vec::new();
        // Base backups: everything under base/<id>/.
        for id in &plan.backups {
            if id.is_empty() || id.contains('/') {
                return Err(self.malformed(id, "not a backup id"));
            }
            let prefix = format!("{}base/{id}/", self.root);
            self.list(&prefix, |key, _, _| keys.push(key.to_owned())).await?;
        }
        // WAL segments (and their .backup/.partial companions) before the boundary, on its
        // timeline or an older one. History files stay.
        if let Some(before) = plan.wal_before {
            let wals = format!("{}wals/", self.root);
            let seg = plan.wal_segment_size;
            self.list(&wals, |key, _, _| {
                let Some(name) = key.strip_prefix(&wals).and_then(|r| r.rsplit('/').next()) else { return };
                if name.len() >= 24
                    && !name.contains(".history")
                    && let Some(w) = WalName::parse(name, seg)
                    && w.timeline <= before.timeline
                    && w.segno < before.segno
                {
                    keys.push(key.to_owned());
                }
            })
            .await?;
        }
        for k in &keys {
            self.delete_key(k).await?;
        }
        Ok(keys.len() as u64)
    }
}

impl BarmanS3Catalog {
    fn backup_from_info(&self, id: String, key: &str, f: &BTreeMap<String, String>, seg: u64) -> Result<BaseBackup, CatalogError> {
        let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty() && *v != "None");
        let time = |k: &str| -> Result<Option<DateTime<Utc>>, CatalogError> {
            get(k).map(|v| parse_barman_time(v).ok_or_else(|| self.malformed(key, format!("{k} {v:?} is not a time with an offset")))).transpose()
        };
        let wal = |k: &str| -> Result<Option<WalName>, CatalogError> {
            get(k).map(|v| WalName::parse(v, seg).ok_or_else(|| self.malformed(key, format!("{k} {v:?} is not a WAL name")))).transpose()
        };
        let status = get("status").ok_or_else(|| self.malformed(key, "no status"))?.to_owned();
        let begin_wal = wal("begin_wal")?;
        let timeline = match get("timeline") {
            Some(v) => v.parse().map_err(|_| self.malformed(key, format!("timeline {v:?}")))?,
            None => begin_wal.map(|w| w.timeline).unwrap_or(0),
        };
        Ok(BaseBackup {
            id,
            status,
            begin_time: time("begin_time")?,
            end_time: time("end_time")?,
            timeline,
            begin_wal,
            end_wal: wal("end_wal")?,
            stored_bytes: None,
        })
    }
}

fn parse_key_values(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect()
}

/// barman writes `2026-11-27 18:10:51.755441+00:00` (fraction optional).
fn parse_barman_time(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f%:z").or_else(|_| DateTime::parse_from_rfc3339(v)).ok().map(|d| d.with_timezone(&Utc))
}

enum WalKey {
    Segment(WalName),
    History(u32),
    Other,
}

/// `rest` is the key below `wals/`.
fn classify_wal_key(rest: &str, seg: u64) -> WalKey {
    match rest.split_once('/') {
        None => {
            // 00000002.history[.gz]
            let Some((tli, suffix)) = rest.split_once('.') else { return WalKey::Other };
            let is_hist = suffix == "history" || suffix.strip_prefix("history.").is_some_and(is_compression_suffix);
            match (tli.len() == 8 && tli.bytes().all(|b| b.is_ascii_hexdigit()), is_hist) {
                (true, true) => u32::from_str_radix(tli, 16).map(WalKey::History).unwrap_or(WalKey::Other),
                _ => WalKey::Other,
            }
        }
        Some((dir, name)) => {
            if dir.len() != 16 || name.len() < 24 || !name.is_char_boundary(24) {
                return WalKey::Other;
            }
            let suffix = &name[24..];
            // Plain or compressed segment; not `.partial`, not `.XXXXXXXX.backup`.
            let plain = suffix.is_empty() || suffix.strip_prefix('.').is_some_and(is_compression_suffix);
            if !plain || !name[..16].eq_ignore_ascii_case(dir) {
                return WalKey::Other;
            }
            WalName::parse(name, seg).map(WalKey::Segment).unwrap_or(WalKey::Other)
        }
    }
}

fn is_compression_suffix(s: &str) -> bool {
    matches!(s, "gz" | "bz2" | "xz" | "snappy" | "zst" | "lz4")
}

fn decompress(key: &str, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if key.ends_with(".history") {
        return Ok(bytes);
    }
    if key.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice()).take(MAX_SMALL_OBJECT as u64 + 1).read_to_end(&mut out).map_err(|e| format!("gzip: {e}"))?;
        if out.len() > MAX_SMALL_OBJECT {
            return Err(format!("larger than {MAX_SMALL_OBJECT} bytes uncompressed"));
        }
        return Ok(out);
    }
    Err("unsupported compression (the catalog reads plain and gzip history files; archive with -z or none)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_keys_are_classified() {
        let seg = DEFAULT_WAL_SEGMENT_SIZE;
        let w = |k| match classify_wal_key(k, seg) {
            WalKey::Segment(w) => Some(w),
            _ => None,
        };
        assert_eq!(w("0000000100000000/000000010000000000000002.gz"), Some(WalName { timeline: 1, segno: 2 }));
        assert_eq!(w("0000000200000001/000000020000000100000003"), Some(WalName { timeline: 2, segno: 259 }));
        assert_eq!(w("0000000100000000/000000010000000000000002.00000028.backup.gz"), None);
        assert_eq!(w("0000000100000000/000000010000000000000002.partial"), None);
        assert_eq!(w("0000000100000001/000000010000000000000002"), None, "wrong directory");
        assert!(matches!(classify_wal_key("00000002.history.gz", seg), WalKey::History(2)));
        assert!(matches!(classify_wal_key("0000000A.history", seg), WalKey::History(10)));
        assert!(matches!(classify_wal_key("0000000A.history.tmp", seg), WalKey::Other));
        assert!(matches!(classify_wal_key("notes.txt", seg), WalKey::Other));
    }

    #[test]
    fn barman_times_carry_an_offset() {
        let t = parse_barman_time("2026-11-27 18:10:51.755441+00:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-27T18:10:51.755441+00:00");
        assert_eq!(parse_barman_time("2026-11-27 20:10:51+02:00").unwrap().to_rfc3339(), "2026-11-27T18:10:51+00:00");
        assert!(parse_barman_time("2026-11-27 18:10:51").is_none(), "no offset: ambiguous");
    }
}
