//! `/ops backup status <db>` against a barman-cloud layout in the sandbox's S3 server, read by
//! the real catalog (aws-sdk-s3 over loopback, SigV4): the newest full backup, the newest WAL,
//! the window, gaps, retention — and staleness against the configured limits.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use runbot_adapters::backup::{BarmanS3Catalog, S3Config, S3Credentials};
use runbot_commands::message::Message;
use runbot_commands::ports::backup::WalName;
use runbot_commands::ports::Catalogs;
use runbot_sandbox::s3;
use runbot_tests::harness::{Options, World};
use std::sync::Arc;

const SEG: u64 = 16 * 1024 * 1024;
const BUCKET: &str = "backups-bucket";
const ROOT: &str = "prod/promotions-db";

struct Archive {
    _dir: tempfile::TempDir,
    server: s3::S3Server,
    client: aws_sdk_s3::Client,
}

fn s3_config(server: &s3::S3Server) -> S3Config {
    S3Config {
        endpoint_url: Some(server.url().to_owned()),
        region: s3::REGION.into(),
        force_path_style: true,
        credentials: S3Credentials { access_key_id: s3::ACCESS_KEY.into(), secret_access_key: s3::SECRET_KEY.into(), session_token: None },
    }
}

impl Archive {
    fn new() -> Archive {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("s3")).expect("s3 root");
        let server = s3::start(&dir.path().join("s3")).expect("sandbox S3");
        server.create_bucket(BUCKET).expect("bucket");
        let client = s3_config(&server).client().expect("client");
        Archive { _dir: dir, server, client }
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        self.client.put_object().bucket(BUCKET).key(key).body(body.into()).send().await.unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    /// A completed base backup on timeline 1 spanning segments `begin..=end`, ended at `end_time`.
    async fn backup(&self, id: &str, begin: u64, end: u64, end_time: DateTime<Utc>) {
        let wal = |n: u64| WalName { timeline: 1, segno: n }.file_name(SEG);
        let info = format!(
            "begin_time={}\nbegin_wal={}\nend_time={}\nend_wal={}\nstatus=DONE\ntimeline=1\nversion=150018\nxlog_segment_size={SEG}\n",
            (end_time - TimeDelta::minutes(5)).format("%Y-%m-%d %H:%M:%S%.6f+00:00"),
            wal(begin),
            end_time.format("%Y-%m-%d %H:%M:%S%.6f+00:00"),
            wal(end),
        );
        self.put(&format!("{ROOT}/base/{id}/backup.info"), info.into_bytes()).await;
    }

    /// WAL segments on timeline 1, uploaded now, in this order.
    async fn wal(&self, segments: &[u64]) {
        for n in segments {
            let name = WalName { timeline: 1, segno: *n }.file_name(SEG);
            self.put(&format!("{ROOT}/wals/{}/{name}.gz", &name[..16]), b"wal".to_vec()).await;
        }
    }

    /// A world whose promotions-db reads this archive.
    async fn world(&self) -> World {
        let dir = self._dir.path();
        let key = dir.join("s3-key");
        let secret = dir.join("s3-secret");
        std::fs::write(&key, s3::ACCESS_KEY).expect("key");
        std::fs::write(&secret, s3::SECRET_KEY).expect("secret");
        let extra = format!(
            r#"
[secrets]
s3_key = "file:{}"
s3_secret = "file:{}"

[databases.promotions-db.backup]
source = "s3://{BUCKET}/prod"
endpoint = "{}"
access_key_secret = "s3_key"
secret_key_secret = "s3_secret"
"#,
            key.display(),
            secret.display(),
            self.server.url()
        );
        let world = World::with(Options { extra_config: extra, ..Options::default() }).await;
        // As `runbot serve` does from that section.
        let catalog = BarmanS3Catalog::new(&s3_config(&self.server), &format!("s3://{BUCKET}/prod"), "promotions-db").expect("catalog");
        world.engine.set_catalogs(Catalogs::new().with("promotions-db", Arc::new(catalog)));
        world
    }
}

fn field<'a>(m: &'a Message, k: &str) -> &'a str {
    m.fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no field {k}: {m:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_backup_wal_window_and_a_gap() {
    let archive = Archive::new();
    let ended = Utc::now() - TimeDelta::hours(2);
    archive.backup("20261129T080000", 2, 2, ended).await;
    archive.wal(&[2, 3, 5, 6]).await; // segment 4 is missing
    let world = archive.world().await;

    let reply = world.cmd("console:dave", "/ops backup status promotions-db").await;
    let m = &reply.message;
    assert!(reply.ephemeral);
    assert!(field(m, "Last full backup").starts_with("20261129T080000 — ended") && field(m, "Last full backup").contains("2h ago"), "{m:#?}");
    assert!(field(m, "Newest WAL").starts_with("000000010000000000000006"), "{m:#?}");
    assert_eq!(field(m, "WAL gaps"), "000000010000000000000004..000000010000000000000004");
    assert!(field(m, "Restorable").contains(" → "), "{m:#?}");
    assert!(field(m, "Archive").starts_with("s3://backups-bucket/prod/promotions-db"), "{m:#?}");
    assert!(field(m, "Retention").contains("30d kept; 0 full backup(s) past it"), "{m:#?}");
    assert!(m.text.starts_with("⚠") && m.text.contains("1 WAL gap(s)"), "{}", m.text);
    assert!(!m.text.contains("full backup is"), "the backup is fresh: {}", m.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_backups_are_called_out_and_a_healthy_archive_says_so() {
    let archive = Archive::new();
    archive.backup("20261128T000000", 2, 2, Utc::now() - TimeDelta::hours(30)).await;
    archive.wal(&[2, 3, 4]).await;
    let world = archive.world().await;
    let m = world.cmd("console:dave", "/ops backup status promotions-db").await.message;
    assert!(m.text.contains("the newest full backup is 1d 6h old (limit 1d 2h)"), "{}", m.text);
    assert!(!m.text.contains("WAL is"), "the WAL is fresh: {}", m.text);

    // A fresh backup: all well.
    archive.backup("20261129T090000", 4, 4, Utc::now() - TimeDelta::minutes(10)).await;
    archive.wal(&[5]).await;
    let m = world.cmd("console:dave", "/ops backup status promotions-db").await.message;
    assert_eq!(m.text, "✅ Backups are fresh and the window has no gap.", "{m:#?}");
    assert!(field(&m, "Last full backup").starts_with("20261129T090000"), "{m:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_or_unconfigured_databases_are_explained() {
    let world = World::new().await;
    let m = world.cmd("console:dave", "/ops backup status nope-db").await.message;
    assert!(m.text.contains("'nope-db' is not a configured database"), "{}", m.text);
    let m = world.cmd("console:dave", "/ops backup status promotions-db").await.message;
    assert!(m.text.contains("no backup archive configured"), "{}", m.text);
}
