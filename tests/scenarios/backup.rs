//! `/ops backup status <db>` against a barman-cloud layout in the sandbox's S3 server, read by
//! the real catalog (aws-sdk-s3 over loopback, SigV4): the newest full backup, the newest WAL,
//! the window, gaps, retention — and staleness against the configured limits.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use runbot_adapters::backup::{BarmanS3Catalog, S3Config};
use runbot_adapters::kubernetes::KubeCluster;
use runbot_commands::message::Message;
use runbot_commands::ports::backup::WalName;
use runbot_commands::ports::{Catalogs, Clusters};
use runbot_sandbox::kube::{FakeCluster, Timing};
use runbot_sandbox::s3;
use runbot_tests::harness::writers::{ready_pods, start_cluster};
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
    S3Config::new(Some(server.url()), s3::REGION, s3::ACCESS_KEY, s3::SECRET_KEY)
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
        self.world_with(RESTORE, None).await
    }

    /// … with these team runbooks and, optionally, the sandbox cluster its writers run on.
    async fn world_with(&self, team: &str, cluster: Option<&FakeCluster>) -> World {
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
alert_channels = {{ console = "dba-alerts" }}
"#,
            key.display(),
            secret.display(),
            self.server.url()
        );
        // As `runbot serve` does from that section.
        let catalog = BarmanS3Catalog::new(&s3_config(&self.server), &format!("s3://{BUCKET}/prod"), "promotions-db").expect("catalog");
        let catalogs = Catalogs::new().with("promotions-db", Arc::new(catalog));
        let runbooks = format!("{}\n{team}", runbot_tests::harness::RUNBOOKS);
        let mut opts = Options { catalogs, runbooks, ..Options::default() };
        let mut extra = extra;
        if let Some(c) = cluster {
            extra.push_str(&format!("\n[clusters.sandbox]\nurl = \"{}\"\n", c.url()));
            let driver = KubeCluster::from_url(&c.url(), std::time::Duration::from_secs(5)).expect("kube client");
            opts.clusters = Clusters::new().with("sandbox", Arc::new(driver));
        }
        opts.extra_config = extra;
        World::with(opts).await
    }
}

/// A team's restore runbook: the restore point proven before approval, then the change (a
/// test probe standing in for the restore command).
const RESTORE: &str = r#"
[runbooks.restore]
summary = "Restore a database to a point in time"
target = "database"

[[runbooks.restore.steps]]
name = "Restore point"
kind = "backup-restore-point"

[[runbooks.restore.steps]]
name = "Approval"
kind = "approval"

[[runbooks.restore.steps]]
name = "Restore"
kind = "probe"
counter = "restore-apply"
"#;

fn field<'a>(m: &'a Message, k: &str) -> &'a str {
    m.fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no field {k}: {m:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_backup_wal_window_and_a_gap() {
    let archive = Archive::new();
    let ended = Utc::now() - TimeDelta::hours(2);
    archive.backup("20261129T080000", 2, 2, ended).await;
    // Its data: 3 MiB in the archive (with backup.info, a little more).
    archive.put(&format!("{ROOT}/base/20261129T080000/data.tar"), vec![0u8; 3 << 20]).await;
    archive.wal(&[2, 3, 5, 6]).await; // segment 4 is missing
    let world = archive.world().await;

    let reply = world.cmd("console:dave", "/ops backup status promotions-db").await;
    let m = &reply.message;
    assert!(reply.ephemeral);
    let last = field(m, "Last full backup");
    assert!(last.starts_with("20261129T080000 — ended") && last.contains("2h ago") && last.ends_with(", 3.0 MiB"), "{m:#?}");
    assert!(field(m, "Newest WAL").starts_with("000000010000000000000006"), "{m:#?}");
    assert_eq!(field(m, "WAL gaps"), "000000010000000000000004..000000010000000000000004");
    // The window to the second: its start is the backup's end, as a restore's --date needs it.
    let window = field(m, "Restorable");
    let from = ended.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    assert!(window.starts_with(&format!("{from} → ")) && window.ends_with(" UTC"), "{window} should start at {from}");
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

#[tokio::test(flavor = "multi_thread")]
async fn restore_point_is_proven_before_anyone_is_asked() {
    let archive = Archive::new();
    let ended = Utc::now() - TimeDelta::hours(2);
    archive.backup("20261129T080000", 2, 2, ended).await;
    archive.wal(&[2, 3]).await;
    let before_gap = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    archive.wal(&[5, 6]).await; // segment 4 never made it
    let world = archive.world().await;
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    // Inside the window: the plan names the base backup, the approvers see what they approve.
    let ok = ended + TimeDelta::minutes(30);
    let id = world.request("console:alice", &format!("/ops restore promotions-db --date {}", fmt(ok))).await;
    let plan = world.wait_text(id, "Waiting for approval").await;
    let text = plan.all_text();
    assert!(text.contains("is restorable from base backup 20261129T080000"), "{text}");
    assert!(field(&plan, "Acts on").contains("promotions-db at") && field(&plan, "Acts on").contains("20261129T080000"), "{plan:#?}");
    world.click("console:bob", id, "reject").await;
    world.wait_state(id, "rejected").await;

    // `--date latest`: the newest point the archive reaches (here cut by the gap), proven the
    // same way, from the same base backup.
    let id = world.request("console:alice", "/ops restore promotions-db --date latest").await;
    let plan = world.wait_text(id, "Waiting for approval").await;
    let text = plan.all_text();
    assert!(text.contains("latest: the end of the archive, WAL uploaded up to") && text.contains("from base backup 20261129T080000"), "{text}");
    assert!(field(&plan, "Acts on").contains("promotions-db at the end of its archive"), "{plan:#?}");
    world.click("console:bob", id, "reject").await;
    world.wait_state(id, "rejected").await;

    // Refused before any approval, with the reason, for a time before the first backup, behind
    // the gap, and for another archive than the configured one.
    for (date, source, why) in [
        (ended - TimeDelta::hours(1), None, "before the end of the oldest usable base backup"),
        (before_gap + TimeDelta::milliseconds(700), None, "behind a WAL gap"),
        (ok, Some("s3://other-bucket/prod"), "is not promotions-db's configured archive"),
    ] {
        let src = source.map(|s| format!(" --source {s}")).unwrap_or_default();
        let id = world.request("console:alice", &format!("/ops restore promotions-db --date {}{src}", fmt(date))).await;
        let failed = world.wait_state(id, "failed").await;
        let summary = failed.steps[0].summary.clone().unwrap_or_default();
        assert!(summary.contains(why), "{date}: {summary}");
        assert!(failed.approvals.is_empty() && failed.steps[1].status == runbot_commands::model::StepStatus::Pending, "{:?}", failed.steps);
        let msg = world.wait_text(id, "Failed at step 1").await;
        assert!(msg.buttons.is_empty(), "nobody is asked to approve an impossible restore");
    }
    assert_eq!(world.probes.count("restore-apply"), 0, "nothing was restored");
}

/// The restore runbook's writer handling around a restore: counts recorded before approval,
/// writers scaled to 0 (no pod left) before the restore, back to their counts after; a failed
/// restore leaves them at 0 and says so.
const RESTORE_WITH_WRITERS: &str = r#"
[runbooks.restore]
summary = "Restore a database to a point in time"
target = "database"

[[runbooks.restore.steps]]
name = "Restore point"
kind = "backup-restore-point"

[[runbooks.restore.steps]]
name = "Record writers"
kind = "k8s-writers"

[[runbooks.restore.steps]]
name = "Approval"
kind = "approval"

[[runbooks.restore.steps]]
name = "Stop writers"
kind = "k8s-stop-writers"
timeout = "20s"

[[runbooks.restore.steps]]
name = "Restore"
kind = "probe"
counter = "restore-apply"
outcome = "{outcome}"

[[runbooks.restore.steps]]
name = "Restart writers"
kind = "k8s-start-writers"
timeout = "20s"

[runbooks.restore.on_failure]
label = "Restart writers"
runbook = "restart-writers"
after = "Stop writers"
unless = "Restart writers"
carry = "writer "
"#;

async fn writers_world(outcome: &str) -> (Archive, FakeCluster, World, String) {
    let archive = Archive::new();
    let ended = Utc::now() - TimeDelta::hours(1);
    archive.backup("20261129T080000", 2, 2, ended).await;
    archive.wal(&[2, 3, 4]).await;
    let cluster = start_cluster().await;
    let world = archive.world_with(&RESTORE_WITH_WRITERS.replace("{outcome}", outcome), Some(&cluster)).await;
    let date = (ended + TimeDelta::minutes(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (archive, cluster, world, date)
}

fn scales(cluster: &FakeCluster) -> Vec<String> {
    cluster.requests().into_iter().filter(|(m, p)| (m == "PATCH" || m == "PUT") && p.contains("/scale")).map(|(_, p)| p).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_are_recorded_stopped_and_restarted_around_the_restore() {
    let (_archive, cluster, world, date) = writers_world("ok").await;
    let id = world.request("console:alice", &format!("/ops restore promotions-db --date {date}")).await;
    let plan = world.wait_text(id, "Waiting for approval").await;
    let acts = field(&plan, "Acts on").to_string();
    assert!(acts.contains("writer promotions-ns/promotions-api=3") && acts.contains("writer promotions-ns/promotions-worker=2"), "{acts}");
    assert!(scales(&cluster).is_empty(), "nothing scaled before the approval");

    world.click("console:bob", id, "approve").await;
    let done = world.wait_state(id, "succeeded").await;
    assert_eq!(world.probes.count("restore-apply"), 1);
    let s = scales(&cluster);
    assert_eq!(s.len(), 4, "each writer to 0, then back: {s:?}");
    assert!(done.steps[3].summary.clone().unwrap_or_default().contains("promotions-ns/promotions-api → 0"), "{:?}", done.steps[3]);
    assert!(done.steps[5].summary.clone().unwrap_or_default().contains("promotions-ns/promotions-api → 3"), "{:?}", done.steps[5]);
    assert_eq!((ready_pods(&cluster, "promotions-api"), ready_pods(&cluster, "promotions-worker")), (3, 2), "back at the recorded counts");
    let thread = world.chat.thread(&world.status_message_id(id).await).iter().map(|p| p.message.all_text()).collect::<Vec<_>>().join("\n");
    assert!(thread.contains("promotions-ns/promotions-api: no pods left"), "the restore ran with no writer pod left:\n{thread}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_restore_leaves_the_writers_stopped_and_says_so() {
    let (_archive, cluster, world, date) = writers_world("fail").await;
    let id = world.request("console:alice", &format!("/ops restore promotions-db --date {date}")).await;
    world.wait_text(id, "Waiting for approval").await;
    world.click("console:bob", id, "approve").await;
    let failed = world.wait_state(id, "failed").await;
    assert_eq!(failed.steps[5].status, runbot_commands::model::StepStatus::Pending, "writers not restarted");
    assert_eq!((ready_pods(&cluster, "promotions-api"), ready_pods(&cluster, "promotions-worker")), (0, 0));
    let msg = world.wait_text(id, "Failed at step 5").await;
    assert!(msg.all_text().contains("Already applied before the failure: Stop writers"), "{}", msg.all_text());

    // [Restart writers]: a new execution with the recorded counts, approved by someone else.
    let labels: Vec<&str> = msg.buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Restart writers"]);
    let button = world.button(id, "follow_up").await;
    let reply = world.click("console:bob", id, "follow_up").await;
    let again = runbot_tests::harness::created(&reply);
    // A second click (a double press, or a late one) creates nothing: the button is spent, and
    // gone from the message. It would otherwise hold the database's lock until cancelled.
    let r = world.click_value("console:carol", &button, Some("second-press")).await;
    assert!(r.message.text.contains(&format!("was used by {again}")), "{}", r.message.text);
    assert_eq!(world.executions().await.len(), 2, "one restore, one restart-writers");
    world.wait_message(id, "the used button removed", |m| m.buttons.is_empty()).await;
    let plan = world.wait_text(again, "Waiting for approval").await;
    let acts = field(&plan, "Acts on").to_string();
    assert!(acts.contains("writer promotions-ns/promotions-api=3") && acts.contains("writer promotions-ns/promotions-worker=2"), "{acts}");
    assert_eq!((ready_pods(&cluster, "promotions-api"), ready_pods(&cluster, "promotions-worker")), (0, 0), "nothing before the approval");
    world.click("console:alice", again, "approve").await;
    world.wait_state(again, "succeeded").await;
    assert_eq!((ready_pods(&cluster, "promotions-api"), ready_pods(&cluster, "promotions-worker")), (3, 2), "back at the recorded counts");
    cluster.shutdown().await;
}

/// [Restart writers] is recomputed before it creates anything: once the writers run again at
/// their recorded counts (restarted by hand), there is nothing to restart — the button says so,
/// creates nothing, and is removed.
#[tokio::test(flavor = "multi_thread")]
async fn restart_writers_is_refused_once_the_writers_run_again() {
    let (_archive, cluster, world, date) = writers_world("fail").await;
    let id = world.request("console:alice", &format!("/ops restore promotions-db --date {date}")).await;
    world.wait_text(id, "Waiting for approval").await;
    world.click("console:bob", id, "approve").await;
    world.wait_state(id, "failed").await;
    let button = world.button(id, "follow_up").await;
    let kube = KubeCluster::from_url(&cluster.url(), std::time::Duration::from_secs(5)).expect("driver");
    use runbot_commands::ports::Cluster;
    kube.scale("promotions-ns", "promotions-api", 3).await.expect("scale");
    kube.scale("promotions-ns", "promotions-worker", 2).await.expect("scale");

    let r = world.click_value("console:bob", &button, Some("by-hand")).await;
    let t = &r.message.text;
    assert!(t.contains("no longer applies") && t.contains("already run at their recorded counts"), "{t}");
    assert_eq!(world.executions().await.len(), 1, "nothing was created");
    world.wait_message(id, "the stale button removed", |m| m.buttons.is_empty()).await;
    cluster.shutdown().await;
}

/// The monitor posts once when the archive turns stale, not again while it stays so, and once
/// when it is healthy again.
#[tokio::test(flavor = "multi_thread")]
async fn the_monitor_alerts_once_and_says_once_when_it_recovers() {
    let archive = Archive::new();
    archive.backup("20261128T000000", 2, 2, Utc::now() - TimeDelta::hours(30)).await;
    archive.wal(&[2, 3]).await;
    let world = archive.world().await;
    let alerts = |w: &World| w.chat.posts().into_iter().filter(|p| p.channel == "dba-alerts").map(|p| p.message.text).collect::<Vec<_>>();
    let monitor = world.engine.spawn_backup_monitor(std::time::Duration::from_millis(100));

    let t = std::time::Instant::now();
    while alerts(&world).is_empty() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "no alert");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // WAL keeps arriving while the full backup stays stale: still the same problem, no new alert.
    archive.wal(&[4]).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await; // several more checks
    let a = alerts(&world);
    assert_eq!(a.len(), 1, "one alert while it stays stale: {a:?}");
    assert!(a[0].contains("Backups of promotions-db need attention") && a[0].contains("1d 6h old"), "{a:?}");

    // A fresh backup: one recovery message.
    archive.backup("20261129T090000", 5, 5, Utc::now() - TimeDelta::minutes(5)).await;
    archive.wal(&[5]).await;
    while alerts(&world).len() < 2 {
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "no recovery message: {:?}", alerts(&world));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let a = alerts(&world);
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(a[1].contains("healthy again"), "{a:?}");
    monitor.abort();
    let kinds: Vec<String> = world.audit().await.into_iter().map(|r| r.entry.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "backup_alert").count(), 2, "both are in the audit log");
}

/// The monitor moves to another replica while an alert is open (the leader died): the new
/// leader knows the alert from the store, does not post it again, and when the archive
/// recovers it resolves that same message (edited to say so) and says once that it is healthy.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_monitor_leader_resolves_the_alert_its_predecessor_posted() {
    use runbot_commands::ports::Store;
    let archive = Archive::new();
    archive.backup("20261128T000000", 2, 2, Utc::now() - TimeDelta::hours(30)).await;
    archive.wal(&[2, 3]).await;
    let mut world = archive.world().await;
    let alerts = |w: &World| w.chat.posts().into_iter().filter(|p| p.channel == "dba-alerts").collect::<Vec<_>>();
    let first = world.engine.spawn_backup_monitor(std::time::Duration::from_millis(100));
    let t = std::time::Instant::now();
    while alerts(&world).is_empty() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "no alert");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let alert = alerts(&world)[0].clone();
    assert!(alert.message.text.contains("need attention"), "{:?}", alert.message.text);
    // Recorded (the alert and where it was posted) right after it was posted.
    while !world.store.audit_log().await.expect("audit").0.iter().any(|r| r.entry.kind == "backup_alert") {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "the alert is not in the audit trail");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The leader dies; its role expires and another replica (test-2) takes the monitor over.
    first.abort();
    world.restart_as("test-2").await;
    let later = Utc::now() + TimeDelta::seconds(120);
    assert!(world.store.lead("backup-monitor", "test-2", later, later - TimeDelta::seconds(1)).await.expect("lead"), "the role moves on");
    let second = world.engine.spawn_backup_monitor(std::time::Duration::from_millis(100));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await; // several checks
    assert!(alerts(&world).is_empty(), "the new leader posted the open alert again: {:?}", alerts(&world));

    // A fresh backup: the same alert message is resolved, and one message says so.
    archive.wal(&[4]).await;
    archive.backup("20261129T090000", 5, 5, Utc::now() - TimeDelta::minutes(5)).await;
    archive.wal(&[5]).await;
    while !world.chat.latest(&alert.id).is_some_and(|m| m.text.contains("Resolved")) {
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "the alert was not resolved: {:?}", world.chat.latest(&alert.id));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let a: Vec<String> = alerts(&world).into_iter().map(|p| p.message.text).collect();
    assert_eq!(a.len(), 1, "one recovery message: {a:?}");
    assert!(a[0].contains("healthy again"), "{a:?}");
    second.abort();
}

/// `/ops backup now`: a Job from the database's backup CronJob, its log in the thread, the
/// outcome of the Job.
#[tokio::test(flavor = "multi_thread")]
async fn backup_now_runs_the_cronjob_as_a_job_and_follows_it() {
    let archive = Archive::new();
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox cluster");
    let cronjob = |image: &str| {
        serde_json::json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "promotions-db-backup", "namespace": "promotions-ns"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "backup", "image": image}]
            }}}}}
        })
    };
    cluster.put_object(cronjob("registry.local/barman-backup:3.19"));
    let world = archive.world_with("", Some(&cluster)).await;

    let id = world.request("console:alice", "/ops backup now promotions-db").await;
    let done = world.wait_state(id, "succeeded").await;
    let summary = done.steps[0].summary.clone().unwrap_or_default();
    assert!(summary.starts_with("job promotions-db-backup-manual-r-1 succeeded"), "{summary}");
    let job = cluster.object("batch/v1", "Job", "promotions-ns", "promotions-db-backup-manual-r-1").expect("the Job exists");
    assert_eq!(job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual");
    let log = world.output(id, 0).await;
    assert!(log.contains("created from cronjob promotions-db-backup") && log.contains("done"), "{log}");

    // A backup that fails: the step fails with the Job, its log in the thread.
    cluster.behave_image(
        "registry.local/barman-backup:broken",
        runbot_sandbox::kube::Behavior::CrashLoop { exit_code: 2, logs: vec!["ERROR: upload to s3 failed".into()] },
    );
    cluster.put_object(cronjob("registry.local/barman-backup:broken"));
    let id = world.request("console:alice", "/ops backup now promotions-db").await;
    let failed = world.wait_state(id, "failed").await;
    assert!(failed.steps[0].summary.clone().unwrap_or_default().contains("failed"), "{:?}", failed.steps[0]);
    assert!(world.output(id, 0).await.contains("ERROR: upload to s3 failed"));
    cluster.shutdown().await;
}

/// `/ops backup prune`: past retention and not needed by a restore inside the window — shown,
/// approved, deleted; the base backup a restore to the window's start needs, and its WAL, stay.
#[tokio::test(flavor = "multi_thread")]
async fn prune_deletes_only_what_no_restore_inside_the_window_needs() {
    let archive = Archive::new();
    let days = |d: i64| Utc::now() - TimeDelta::days(d);
    archive.backup("20261020T000000", 2, 2, days(40)).await;
    archive.backup("20261025T000000", 5, 5, days(35)).await;
    archive.backup("20261109T000000", 8, 8, days(20)).await;
    archive.backup("20261128T000000", 10, 10, days(1)).await;
    archive.wal(&[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).await;
    let world = archive.world().await;

    let id = world.request("console:alice", "/ops backup prune promotions-db").await;
    let plan = world.wait_text(id, "Waiting for approval").await;
    let acts = field(&plan, "Acts on").to_string();
    assert_eq!(acts, "delete base backup 20261020T000000, delete WAL before 000000010000000000000005", "{plan:#?}");
    assert!(plan.all_text().contains("keeps 20261025T000000"), "{}", plan.all_text());
    world.click("console:bob", id, "approve").await;
    let done = world.wait_state(id, "succeeded").await;
    assert!(done.steps[2].summary.clone().unwrap_or_default().starts_with("deleted 4 objects"), "{:?}", done.steps[2]);

    let catalog = BarmanS3Catalog::new(&s3_config(&archive.server), &format!("s3://{BUCKET}/prod"), "promotions-db").expect("catalog");
    let snap = runbot_commands::ports::BackupCatalog::snapshot(&catalog).await.expect("snapshot");
    let ids: Vec<&str> = snap.backups.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["20261025T000000", "20261109T000000", "20261128T000000"]);
    assert_eq!(snap.wal_runs.iter().map(|r| r.first).min(), Some(5), "WAL from the kept backup on stays");
    let a = snap.analyze();
    assert!(a.restore_point(days(30) + TimeDelta::hours(1)).is_ok(), "the start of the window is still restorable: {:?}", a.window);

    // Again: nothing is past retention any more.
    let id = world.request("console:alice", "/ops backup prune promotions-db").await;
    world.wait_state(id, "succeeded").await;
    world.wait_text(id, "Nothing in promotions-db's archive is past its retention").await;
}
