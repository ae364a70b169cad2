//! An audit trail an administrator cannot rewrite unseen (issue 18 item 3), tried from outside
//! with the real binary on a real SQLite file and a real PostgreSQL database, anchoring to the
//! sandbox S3 server (s3s-fs) and the console's audit channel: `runbot serve` keys every record
//! with `[audit] key` and anchors the head at start, at an interval and at SIGTERM; then the
//! database is rewritten the three ways an administrator can — the tail deleted and the head
//! reset, everything wiped, a row edited and the rest re-hashed (without the key, and with a
//! wrong one) — and `runbot audit verify` must fail each time, naming the first record that
//! differs. A clean chain verifies; a missing anchor is reported as such; a rotated-out key
//! verifies its records only while it is listed in `previous_keys`; of two replicas only the
//! holder of the `audit-anchor` role anchors; no key ever appears in a log, an anchor, the
//! console history or an exported record.

use crate::cli::{Ran, TOUCH_RUNBOOKS, run};
use crate::common::{Runbot, free_port, serve_config, text};
use runbot_commands::audit::{ANCHOR_PREFIX, Anchor, AuditKey, AuditRecord, GENESIS, link, link_with};
use runbot_commands::config::SecretRef;
use runbot_sandbox::s3;
use sqlx::{AnyConnection, Connection};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

const INSTANCE: &str = "audit-anchor-test";
const BUCKET: &str = "audit-anchors";
const KEY_1: &str = "first-audit-key-0123456789abcdef0123456789";
const KEY_2: &str = "second-audit-key-fedcba9876543210fedcba98";
const WRONG: &str = "an-attackers-guess-0123456789abcdef01234567";

fn verify(config: &Path, extra: &[&str]) -> Ran {
    let mut args = vec!["audit", "verify", "--config", config.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    run(&args, &[], &[])
}

/// The test's world: the S3 server, the key files, the store.
struct World {
    dir: PathBuf,
    s3: s3::S3Server,
    store_url: String,
}

/// Which key a config gives, and what else it has.
struct Keys<'a> {
    current: (&'a str, &'a str),
    previous: Option<(&'a str, &'a str)>,
    s3: bool,
}

impl World {
    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, content).expect("write file");
        p.display().to_string()
    }

    /// A serve config in `dir/<name>/` on `port`, keyed and anchored as `keys` says.
    fn config(&self, name: &str, port: u16, keys: &Keys) -> PathBuf {
        self.config_as(name, port, keys, INSTANCE)
    }

    /// [`World::config`] for a replica named `instance`.
    fn config_as(&self, name: &str, port: u16, keys: &Keys, instance: &str) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).expect("config dir");
        let key = |secret: &str| self.file(&format!("key-{}", &secret[..5]), secret);
        let mut rest = format!(
            "[services.alpha.environments.prod.vars]\nmarker = \"{}/alpha.marker\"\n\n[secrets]\ns3_access = \"file:{}\"\ns3_secret = \"file:{}\"\n\n[audit]\nkey_id = \"{}\"\nkey = \"file:{}\"\nanchor_interval_secs = 10\n\
             anchor_channels = {{ console = \"audit\" }}\n",
            dir.display(),
            self.file("s3-access", s3::ACCESS_KEY),
            self.file("s3-secret", s3::SECRET_KEY),
            keys.current.0,
            key(keys.current.1),
        );
        if let Some((id, secret)) = keys.previous {
            rest.push_str(&format!("[[audit.previous_keys]]\nid = \"{id}\"\nkey = \"file:{}\"\n", key(secret)));
        }
        if keys.s3 {
            rest.push_str(&format!(
                "[audit.s3]\nurl = \"s3://{BUCKET}/runbot-audit\"\nendpoint = \"{}\"\naccess_key_secret = \"s3_access\"\nsecret_key_secret = \"s3_secret\"\nobject_lock_days = 1\n",
                self.s3.url()
            ));
        }
        let path = serve_config(&dir, port, instance, "", &rest);
        let text = std::fs::read_to_string(&path).expect("config");
        let sqlite = format!("url = \"sqlite://{}/state.db\"", dir.display());
        std::fs::write(&path, text.replace(&sqlite, &format!("url = \"{}\"", self.store_url))).expect("config");
        std::fs::write(dir.join("runbooks.toml"), TOUCH_RUNBOOKS).expect("runbooks");
        path
    }

    /// Where s3s-fs keeps this instance's anchors.
    fn anchors_dir(&self) -> PathBuf {
        self.anchors_of(INSTANCE)
    }

    fn anchors_of(&self, instance: &str) -> PathBuf {
        self.dir.join("s3").join(BUCKET).join("runbot-audit/anchors").join(instance)
    }

    /// Waits (at most 15 s) until an anchor of record `seq` by this instance is in S3.
    async fn anchored(&self, seq: usize) -> bool {
        let file = self.anchors_dir().join(format!("{seq:020}.json"));
        for _ in 0..150 {
            if file.exists() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    }
}

/// Serves `config` for a few audited commands, then stops it with SIGTERM; returns its log.
/// `w`: wait for the head to be anchored while serving (the interval) before stopping.
async fn serve_a_while(config: &Path, port: u16, commands: usize, w: Option<&World>) -> String {
    let log = config.with_file_name("runbot.log");
    let bot = Runbot::serve(config, port, &log).await;
    dry_runs(&bot, commands).await;
    if let Some(w) = w {
        let n = export(config).len();
        assert!(w.anchored(n).await, "the head (record {n}) is anchored while serving, at the interval:\n{}", bot.log_text());
    }
    let status = bot.terminate();
    assert!(status.success(), "runbot stops cleanly on SIGTERM: {status}");
    std::fs::read_to_string(&log).expect("log")
}

async fn dry_runs(bot: &Runbot, n: usize) {
    for _ in 0..n {
        let r = bot.command("console:alice", "ops", "/ops run touch alpha --dry-run").await;
        assert!(text(&r).contains("Dry run"), "{r}");
    }
}

fn export(config: &Path) -> Vec<AuditRecord> {
    let out = config.with_file_name("audit.jsonl");
    let r = run(&["audit", "export", "--config", config.to_str().expect("utf-8"), "--out", out.to_str().expect("utf-8")], &[], &[]);
    assert!(r.ok, "export: {}", r.stderr);
    std::fs::read_to_string(&out).expect("export").lines().map(|l| serde_json::from_str(l).expect("a record")).collect()
}

async fn db(url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(url).await.expect("open the store")
}

/// Replaces the whole stored chain with `records` and points the head at the last one.
async fn write_chain(url: &str, records: &[AuditRecord]) {
    let mut c = db(url).await;
    sqlx::query("DELETE FROM audit").execute(&mut c).await.expect("delete");
    for r in records {
        sqlx::query(
            "INSERT INTO audit (seq, at, kind, actor, execution, detail, prev_hash, hash, key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.seq as i64)
        .bind(r.entry.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bind(r.entry.kind.clone())
        .bind(r.entry.actor.clone())
        .bind(r.entry.execution.clone())
        .bind(r.entry.detail.to_string())
        .bind(r.prev_hash.clone())
        .bind(r.hash.clone())
        .bind(r.key_id.clone())
        .execute(&mut c)
        .await
        .expect("insert");
    }
    let (seq, hash) = records.last().map(|r| (r.seq as i64, r.hash.clone())).unwrap_or((0, GENESIS.to_string()));
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1").bind(seq).bind(hash).execute(&mut c).await.expect("head");
    c.close().await.expect("close");
}

/// `records` with record `at` edited and every record from it re-linked with `key` (`None`:
/// the unkeyed algorithm) — what an administrator without the real key can produce.
fn rehashed(records: &[AuditRecord], at: usize, key: Option<&AuditKey>) -> Vec<AuditRecord> {
    let mut out = records[..at].to_vec();
    for r in &records[at..] {
        let mut e = r.entry.clone();
        if out.len() == at {
            e.detail = serde_json::json!({"text": "/ops run touch beta --dry-run", "rewritten": true});
        }
        let prev = out.last().map(|p| (p.seq, p.hash.as_str()));
        out.push(match key {
            Some(k) => link_with(Some(k), prev, e),
            None => link(prev, e),
        });
    }
    out
}

fn key(id: &str, dir: &Path, secret: &str) -> AuditKey {
    let path = dir.join(format!("attacker-{id}"));
    std::fs::write(&path, secret).expect("key file");
    AuditKey::new(id, &SecretRef::File(path.display().to_string()).resolve().expect("key"))
}

/// The anchor line of a console history entry: the message text starting with the prefix.
fn posted_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if s.starts_with(ANCHOR_PREFIX) => Some(s.clone()),
        serde_json::Value::Object(m) => m.values().find_map(posted_text),
        serde_json::Value::Array(a) => a.iter().find_map(posted_text),
        _ => None,
    }
}

/// Every file under `dir`, read as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()));
        }
    }
    out
}

fn assert_fails(v: &Ran, case: &str, first: &str) {
    assert!(!v.ok, "{case}: verify must fail:\n{}{}", v.stdout, v.stderr);
    assert!(!v.stdout.contains("intact"), "{case}: {}", v.stdout);
    let line = v.stdout.lines().find(|l| l.starts_with("TAMPERED:") || l.starts_with("NO ANCHOR")).unwrap_or("");
    assert!(line.contains(first), "{case}: the first problem does not say {first:?}:\n{}{}", v.stdout, v.stderr);
}

async fn attack_and_verify(w: &World) {
    let port = free_port();
    let first = Keys { current: ("k1", KEY_1), previous: None, s3: true };
    let config = w.config("first", port, &first);

    // Keyed from the first record; anchored at start, every 10 s, and at SIGTERM.
    let log1 = serve_a_while(&config, port, 3, Some(w)).await;
    assert!(
        log1.contains("object_lock_days is set but bucket") && log1.contains("anchors are written without a lock"),
        "the test S3 server has no Object Lock: said, not faked:\n{log1}"
    );
    let records = export(&config);
    let n = records.len();
    assert!(n >= 6, "a few records: {n}");
    assert!(records.iter().all(|r| r.key_id == "k1"), "every record is keyed with k1");
    let latest: Anchor = serde_json::from_slice(&std::fs::read(w.anchors_dir().join("latest.json")).expect("latest.json")).expect("an anchor");
    assert_eq!(
        (latest.seq, latest.hash.as_str(), latest.key_id.as_str(), latest.instance.as_str()),
        (n as u64, records[n - 1].hash.as_str(), "k1", INSTANCE)
    );
    assert!(w.anchors_dir().join(format!("{n:020}.json")).exists(), "the numbered anchor is kept beside latest.json");

    // A clean chain verifies against the newest anchor.
    let v = verify(&config, &[]);
    assert!(v.ok, "a clean chain verifies:\n{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(&format!("audit trail intact: {n} records")) && v.stdout.contains(&format!("anchored: record {n}")), "{}", v.stdout);

    // The three rewrites.
    let head = n - 2;
    let wrong = key("k1", &w.dir, WRONG);
    let cases: Vec<(&str, Vec<AuditRecord>, String)> = vec![
        ("tail deleted, head reset", records[..head].to_vec(), format!("record {}: missing — the stored chain ends at record {head}", head + 1)),
        ("everything wiped", Vec::new(), "record 1: missing — the store holds no audit records".into()),
        ("row 3 edited, rest re-hashed unkeyed", rehashed(&records, 2, None), "record 3: has an unkeyed hash after keyed records".into()),
        (
            "row 3 edited, rest re-hashed with a wrong key",
            rehashed(&records, 2, Some(&wrong)),
            "record 3: contents do not match its hash under key 'k1'".into(),
        ),
        ("everything re-hashed unkeyed", rehashed(&records, 0, None), format!("record {n}: its hash differs from the one in the anchor")),
    ];
    for (case, chain, first) in cases {
        write_chain(&w.store_url, &chain).await;
        assert_fails(&verify(&config, &[]), case, &first);
    }
    write_chain(&w.store_url, &records).await;
    assert!(verify(&config, &[]).ok, "the original chain, restored, verifies again");

    // No anchor where it is looked for, or nowhere to look: said so, and a failure.
    let missing = verify(&config, &["--anchor", &format!("s3://{BUCKET}/nowhere")]);
    assert_fails(&missing, "no anchor", &format!("NO ANCHOR FOUND: s3://{BUCKET}/nowhere/anchors/ holds no audit anchor"));
    let unanchored = w.config("unanchored", 1, &Keys { current: ("k1", KEY_1), previous: None, s3: false });
    assert_fails(&verify(&unanchored, &[]), "no anchor location", "NO ANCHOR FOUND: no anchor location");

    // The anchor posted in the audit channel, as a file; a forged one is refused.
    let history = std::fs::read_to_string(config.with_file_name("console.jsonl")).expect("console history");
    let posted: Vec<String> =
        history.lines().filter_map(|l| serde_json::from_str(l).ok()).filter_map(|v: serde_json::Value| posted_text(&v)).collect();
    let posted = Anchor::parse(posted.last().expect("an anchor posted in the audit channel")).expect("the posted anchor");
    assert_eq!(posted.seq, n as u64);
    let file = w.file("posted-anchor.txt", &posted.line());
    let v = verify(&unanchored, &["--anchor", &file]);
    assert!(v.ok && v.stdout.contains(&format!("anchored: record {n}")), "{}{}", v.stdout, v.stderr);
    let mut forged = posted.clone();
    forged.seq = 2;
    forged.hash = records[1].hash.clone();
    let file = w.file("forged-anchor.json", &serde_json::to_string(&forged).expect("json"));
    assert_fails(&verify(&unanchored, &["--anchor", &file]), "forged anchor", "altered or forged");

    // Rotation: k2 current, k1 kept for the records written under it.
    let port = free_port();
    let rotated_keys = Keys { current: ("k2", KEY_2), previous: Some(("k1", KEY_1)), s3: true };
    let rotated = w.config("rotated", port, &rotated_keys);
    let log2 = serve_a_while(&rotated, port, 1, None).await;
    assert!(log2.contains("audit head anchored at shutdown"), "the record written since the start is anchored at SIGTERM:\n{log2}");
    let after = export(&rotated);
    assert!(after.len() > n && after[n..].iter().all(|r| r.key_id == "k2") && after[..n].iter().all(|r| r.key_id == "k1"));
    let v = verify(&rotated, &[]);
    assert!(v.ok, "records under the rotated-out key verify while it is listed:\n{}{}", v.stdout, v.stderr);
    let dropped = w.config("dropped", 1, &Keys { current: ("k2", KEY_2), previous: None, s3: true });
    assert_fails(&verify(&dropped, &[]), "k1 dropped", "record 1: is keyed with key 'k1', which is not configured");

    // No key anywhere it could leak.
    // Two replicas on the one store: only the holder of the audit-anchor role anchors.
    let (pa, pb) = (free_port(), free_port());
    let ca = w.config_as("replica-a", pa, &rotated_keys, INSTANCE);
    let cb = w.config_as("replica-b", pb, &rotated_keys, "replica-b");
    let a = Runbot::serve(&ca, pa, &ca.with_file_name("runbot.log")).await;
    for _ in 0..100 {
        if a.log_text().contains("audit head anchored in S3") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(a.log_text().contains("audit head anchored in S3"), "replica A anchors at start:\n{}", a.log_text());
    let b = Runbot::serve(&cb, pb, &cb.with_file_name("runbot.log")).await;
    dry_runs(&b, 1).await;
    let m = export(&cb).len();
    assert!(w.anchored(m).await, "the role holder anchors the other replica's records too:\n{}", a.log_text());
    let logs = format!("{}{}", a.log_text(), b.log_text());
    assert!(b.terminate().success() && a.terminate().success());
    assert!(!w.anchors_of("replica-b").exists(), "the replica without the role wrote no anchor");
    assert!(verify(&rotated, &[]).ok);

    let mut seen = format!("{log1}{log2}{logs}{}", all_text(&w.dir.join("s3")));
    for name in ["first", "rotated", "replica-a", "replica-b"] {
        seen.push_str(&std::fs::read_to_string(w.dir.join(name).join("console.jsonl")).unwrap_or_default());
        seen.push_str(&std::fs::read_to_string(w.dir.join(name).join("audit.jsonl")).unwrap_or_default());
    }
    for secret in [KEY_1, KEY_2] {
        for part in [secret, &secret[..16], &secret[secret.len() - 16..]] {
            assert!(!seen.contains(part), "a key leaked into a log, anchor, console message or record");
        }
    }
}

fn world(dir: &Path, store_url: String) -> World {
    std::fs::create_dir_all(dir.join("s3")).expect("S3 root");
    let s3 = s3::start(&dir.join("s3")).expect("sandbox S3");
    s3.create_bucket(BUCKET).expect("bucket");
    World { dir: dir.to_path_buf(), s3, store_url }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_audit_rewrites_are_caught_by_keys_and_anchors() {
    let root = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/state.db", root.path().display());
    attack_and_verify(&world(root.path(), url)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_audit_rewrites_are_caught_by_keys_and_anchors() {
    let Ok(server) = std::env::var("RUNBOT_TEST_PG_URL") else {
        panic!("RUNBOT_TEST_PG_URL is not set: run the tests with ./scripts/test.sh (or eval \"$(RUNBOT_TEST_ONLY_PG=1 ./scripts/test.sh)\")");
    };
    let name = format!("runbot_audit_{:016x}", std::collections::hash_map::RandomState::new().hash_one(std::process::id()));
    let url = runbot_adapters::store_sql::create_database(&server, &name).await.expect("a scratch database");
    let root = tempfile::tempdir().expect("tempdir");
    let w = world(root.path(), url);
    let result = tokio::spawn(async move { attack_and_verify(&w).await }).await;
    let dropped = runbot_adapters::store_sql::drop_database(&server, &name).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
    dropped.expect("drop the scratch database");
}
