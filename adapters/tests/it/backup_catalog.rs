//! `BarmanS3Catalog` against the sandbox S3 server (s3s-fs on loopback, SigV4 checked) with
//! synthetic barman-cloud layouts: a WAL gap and a timeline switch (history file, gzip), noise
//! objects barman also writes (`.backup`, `.partial`), listings that need several
//! ListObjectsV2 pages (> 1000 objects), and credentials the server refuses.
//! The real barman-cloud output is read in `tests/pitr.rs`.

use std::io::Write;

use futures::StreamExt;
use runbot_adapters::backup::{BarmanS3Catalog, S3Config};
use runbot_commands::ports::backup::{BackupCatalog, CatalogError, Unreachable, WalName};
use runbot_sandbox::s3;

const SEG: u64 = 16 * 1024 * 1024;

fn config(server: &s3::S3Server, secret: &str) -> S3Config {
    S3Config::new(Some(server.url()), s3::REGION, s3::ACCESS_KEY, secret)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    server: s3::S3Server,
    client: aws_sdk_s3::Client,
}

fn fixture(bucket: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let server = s3::start(tmp.path()).unwrap();
    server.create_bucket(bucket).unwrap();
    let client = config(&server, s3::SECRET_KEY).client().unwrap();
    Fixture { _tmp: tmp, server, client }
}

impl Fixture {
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.client.put_object().bucket(bucket).key(key).body(body.into()).send().await.unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    async fn put_many(&self, bucket: &str, keys: Vec<String>) {
        futures::stream::iter(keys)
            .map(|k| async move { self.put(bucket, &k, b"wal".to_vec()).await })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }
}

fn wal_key(root: &str, tli: u32, segno: u64, suffix: &str) -> String {
    let name = WalName { timeline: tli, segno }.file_name(SEG);
    format!("{root}/wals/{}/{name}{suffix}", &name[..16])
}

fn backup_info(status: &str, tli: u32, begin: u64, end: u64, end_time: &str) -> Vec<u8> {
    format!(
        "backup_label='START WAL LOCATION'\nbegin_time=2026-01-01 00:00:00.000000+00:00\nbegin_wal={}\n\
         begin_xlog=0/2000028\nend_time={end_time}\nend_wal={}\nend_xlog=0/2000100\nstatus={status}\n\
         systemid=7300000000000000000\ntimeline={tli}\nversion=150018\nxlog_segment_size={SEG}\n",
        WalName { timeline: tli, segno: begin }.file_name(SEG),
        WalName { timeline: tli, segno: end }.file_name(SEG),
    )
    .into_bytes()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

#[tokio::test]
async fn a_gap_and_a_timeline_switch_are_found_in_a_barman_layout() {
    let f = fixture("backups-bucket");
    let root = "prod/promotions-db";
    f.put("backups-bucket", &format!("{root}/base/20260101T000000/backup.info"), backup_info("DONE", 1, 2, 2, "2026-01-01 00:00:10.500000+00:00"))
        .await;
    f.put("backups-bucket", &format!("{root}/base/20260101T000000/data.tar.gz"), b"tar".to_vec()).await;
    f.put("backups-bucket", &format!("{root}/base/20260101T010000/backup.info"), backup_info("DONE", 2, 7, 7, "2026-01-01 01:00:05+00:00")).await;
    f.put("backups-bucket", &format!("{root}/base/20260101T020000/backup.info"), backup_info("FAILED", 2, 8, 8, "None")).await;
    // Timeline 1: 2, 3, (4 missing), 5, 6; timeline 2 branched at 0/6000000 (segment 6): 6, 7, 8.
    let mut keys: Vec<String> = [2u64, 3, 5, 6].iter().map(|n| wal_key(root, 1, *n, ".gz")).collect();
    keys.extend((6..=7).map(|n| wal_key(root, 2, n, ".gz")));
    keys.push(wal_key(root, 1, 2, ".00000028.backup.gz"));
    keys.push(wal_key(root, 1, 6, ".partial"));
    f.put_many("backups-bucket", keys).await;
    // The newest upload, last (the others went up concurrently, in any order).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    f.put("backups-bucket", &wal_key(root, 2, 8, ".gz"), b"wal".to_vec()).await;
    f.put("backups-bucket", &format!("{root}/wals/00000002.history.gz"), gzip("1\t0/6000000\tbefore 2026-01-01 00:30:00+00\n")).await;
    // Another server under the same prefix is not mixed in.
    f.put("backups-bucket", &format!("prod/other-db/wals/0000000100000000/{}.gz", WalName { timeline: 1, segno: 4 }.file_name(SEG)), b"x".to_vec())
        .await;

    let catalog = BarmanS3Catalog::new(&config(&f.server, s3::SECRET_KEY), "s3://backups-bucket/prod/", "promotions-db").unwrap();
    assert_eq!(catalog.location(), "s3://backups-bucket/prod/promotions-db (barman-cloud)");
    let snap = catalog.snapshot().await.unwrap();
    assert_eq!(snap.backups.len(), 3);
    assert_eq!(snap.wal_segments, 7, "the .backup and .partial objects are not segments");
    assert_eq!(snap.histories.len(), 1);
    assert_eq!(snap.histories[0].switches[0].switch_lsn, 0x6000000);
    assert_eq!(snap.newest_wal.as_ref().map(|(n, _)| n.as_str()), Some("000000020000000000000008"));

    let a = snap.analyze();
    assert_eq!(a.timeline_path, vec![(1, 0), (2, 6)]);
    assert_eq!(a.gaps.len(), 1, "{:?}", a.gaps);
    assert_eq!(a.gaps[0].first_name, "000000010000000000000004");
    let b1 = a.reaches.iter().find(|r| r.backup_id == "20260101T000000").unwrap();
    assert!(b1.usable);
    assert_eq!(b1.reached, Some(WalName { timeline: 1, segno: 3 }), "stops before the hole");
    let b2 = a.reaches.iter().find(|r| r.backup_id == "20260101T010000").unwrap();
    assert!(b2.usable);
    assert_eq!(b2.reached, Some(WalName { timeline: 2, segno: 8 }));
    assert!(a.reaches.iter().all(|r| r.backup_id != "20260101T020000"), "FAILED backups are not candidates");
    assert_eq!(a.earliest(), Some(time("2026-01-01T00:00:10.5Z")));
    assert_eq!(a.newest_backup.as_ref().map(|b| b.id.as_str()), Some("20260101T010000"));

    assert_eq!(a.restore_point(time("2026-01-01T00:30:00Z")).unwrap().backup_id, "20260101T000000");
    assert_eq!(a.restore_point(time("2026-01-01T01:00:06Z")).unwrap().backup_id, "20260101T010000");
    let e = a.restore_point(time("2026-01-01T00:00:05Z")).unwrap_err();
    assert!(matches!(e, Unreachable::BeforeFirstBackup { .. }), "{e:?}");
}

#[tokio::test]
async fn listings_longer_than_a_page_are_followed() {
    let f = fixture("big");
    let root = "srv";
    f.put("big", &format!("{root}/base/20260101T000000/backup.info"), backup_info("DONE", 1, 1, 1, "2026-01-01 00:00:10+00:00")).await;
    // 1100 segments: more than one default page (1000), and across log ids (256 per log id).
    f.put_many("big", (1..=1100).map(|n| wal_key(root, 1, n, "")).collect()).await;

    let config = config(&f.server, s3::SECRET_KEY);
    let catalog = BarmanS3Catalog::new(&config, "s3://big", "srv").unwrap();
    assert_eq!(catalog.count_wal_pages().await.unwrap(), 2);
    let snap = catalog.snapshot().await.unwrap();
    assert_eq!(snap.wal_segments, 1100);
    assert_eq!(snap.wal_runs.len(), 1, "one contiguous run, not 1100 entries");
    assert_eq!((snap.wal_runs[0].first, snap.wal_runs[0].last), (1, 1100));
    let a = snap.analyze();
    assert!(a.gaps.is_empty());
    assert_eq!(a.reaches[0].reached, Some(WalName { timeline: 1, segno: 1100 }));
    assert_eq!(snap.newest_wal.as_ref().map(|(n, _)| n.len()), Some(24));

    let small = BarmanS3Catalog::new(&config, "s3://big", "srv").unwrap().with_page_size(250);
    assert_eq!(small.count_wal_pages().await.unwrap(), 5);
    let snap_small = small.snapshot().await.unwrap();
    assert_eq!(snap_small.wal_runs, snap.wal_runs);

    // A hole in the middle of page 2 is found.
    f.client.delete_object().bucket("big").key(wal_key(root, 1, 1050, "")).send().await.unwrap();
    let a = small.snapshot().await.unwrap().analyze();
    assert_eq!(a.gaps.len(), 1);
    assert_eq!(a.gaps[0].first_name, WalName { timeline: 1, segno: 1050 }.file_name(SEG));
    assert_eq!(a.gaps[0].first_name, "00000001000000040000001A");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_server_and_not_shown() {
    let f = fixture("locked");
    f.put("locked", "srv/wals/00000002.history", b"1\t0/6000000\tx\n".to_vec()).await;
    let catalog = BarmanS3Catalog::new(&config(&f.server, "not-the-secret-xyz"), "s3://locked", "srv").unwrap();
    let e = catalog.snapshot().await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, CatalogError::Storage { .. }), "{e:?}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(!text.contains("not-the-secret-xyz"), "{text}");
    let debug = format!("{:?}", config(&f.server, "not-the-secret-xyz"));
    assert!(!debug.contains("not-the-secret-xyz") && debug.contains("***"), "{debug}");

    // A missing bucket is a storage error naming the location.
    let e = BarmanS3Catalog::new(&config(&f.server, s3::SECRET_KEY), "s3://nobucket/x", "srv").unwrap().snapshot().await.unwrap_err();
    assert!(e.to_string().contains("s3://nobucket/x/srv") && e.to_string().contains("NoSuchBucket"), "{e}");
    // Bad source URLs are refused up front.
    let e = BarmanS3Catalog::new(&config(&f.server, s3::SECRET_KEY), "https://x/y", "srv").unwrap_err();
    assert!(e.to_string().contains("not an s3://bucket/prefix URL"), "{e}");
}
