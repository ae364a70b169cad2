//! The command line end to end: `check-config` names every problem by key path (and accepts the
//! shipped example), secrets must be resolvable references, and `audit verify` / `audit export`
//! on a real SQLite store written by `runbot serve` — including detection of edited, deleted and
//! forged records after tampering with the database file directly.

use crate::common::{BIN, Runbot, button, text, until};
use runbot_commands::audit::{AuditRecord, link};
use sqlx::{Connection, Row, SqliteConnection};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub(crate) fn run(args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> Ran {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUNBOT_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let Output { status, stdout, stderr } = cmd.output().expect("run runbot");
    Ran { ok: status.success(), stdout: String::from_utf8_lossy(&stdout).into(), stderr: String::from_utf8_lossy(&stderr).into() }
}

fn check_config(text: &str, env: &[(&str, &str)], unset: &[&str]) -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("runbot.toml");
    std::fs::write(&path, text).expect("write config");
    run(&["check-config", path.to_str().expect("utf-8 path")], env, unset)
}

#[test]
fn check_config_names_every_problem_by_key_path() {
    let r = check_config(
        r#"
[server]
listen = "127.0.0.1:8080"
colour = "blue"

[store]
url = "mysql://x"

[groups]
sre = ["alice", "console:bob", "console:carol"]

[[approvals]]
approvers = ["nobody"]
expiry = "30 minutes"
"#,
        &[],
        &[],
    );
    assert!(!r.ok, "a bad config must fail:\n{}", r.stdout);
    let problems: Vec<&str> = r.stderr.lines().map(str::trim).collect();
    let named = |path: &str, about: &str| problems.iter().any(|l| l.starts_with(&path.to_string()) && l.contains(about));
    for (path, about) in [
        ("groups.sre[0]", "'alice' is not an identity"),
        ("approvals[0].approvers", "no group named 'nobody'"),
        ("approvals[0].expiry", "'30 minutes' is not a duration"),
        ("server", "colour"),
        ("store.url", "sqlite:"),
    ] {
        assert!(named(path, about), "stderr does not name {path} ({about}):\n{}", r.stderr);
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/runbot.example.toml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Give every environment variable the example refers to (`env:RUNBOT_...`) a value.
    let vars: Vec<String> = text.match_indices("\"env:").filter_map(|(i, m)| text[i + m.len()..].split('"').next()).map(str::to_string).collect();
    let env: Vec<(&str, &str)> = vars.iter().map(|v| (v.as_str(), "example-secret-value")).collect();
    let r = run(&["check-config", path], &env, &[]);
    assert!(r.ok, "check-config {path} failed:\n{}", r.stderr);
    assert!(r.stdout.contains(": ok ("), "{}", r.stdout);
}

#[test]
fn secrets_must_be_references_that_resolve() {
    let unset = check_config("[secrets]\ntoken = \"env:RUNBOT_TEST_TOKEN\"\n", &[], &["RUNBOT_TEST_TOKEN"]);
    assert!(!unset.ok);
    assert!(
        unset.stderr.lines().any(|l| l.trim().starts_with("secrets.token") && l.contains("RUNBOT_TEST_TOKEN")),
        "an unset variable is named with its key path:\n{}",
        unset.stderr
    );

    let set = check_config("[secrets]\ntoken = \"env:RUNBOT_TEST_TOKEN\"\n", &[("RUNBOT_TEST_TOKEN", "s3cr3t-value")], &[]);
    assert!(set.ok, "with the variable set the config is fine:\n{}", set.stderr);
    assert!(!set.stdout.contains("s3cr3t-value") && !set.stderr.contains("s3cr3t-value"));

    let literal = check_config("[secrets]\ntoken = \"hunter2-literal-secret\"\n", &[], &[]);
    assert!(!literal.ok);
    assert!(
        literal.stderr.lines().any(|l| l.trim().starts_with("secrets.token") && l.contains("reference")),
        "a literal secret is refused with a word about references:\n{}",
        literal.stderr
    );
    assert!(!literal.stderr.contains("hunter2-literal-secret"), "the literal value is not echoed:\n{}", literal.stderr);
}

// ---------- audit ----------

/// A config (and runbooks file) in `dir` with its SQLite store at `dir/state.db`.
fn write_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    crate::common::serve_config(dir, port, "audit-test", "", &format!("[services.alpha.environments.prod.vars]\nmarker = \"{d}/alpha.marker\""));
    std::fs::write(dir.join("runbooks.toml"), TOUCH_RUNBOOKS).expect("write runbooks");
    dir.join("runbot.toml")
}

/// `touch`: an approval, then `touch {marker}` (the service's `marker` var).
pub(crate) const TOUCH_RUNBOOKS: &str = r#"
[runbooks.touch]
summary = "create a marker file after approval"
target = "service"
[[runbooks.touch.steps]]
name = "Approval"
kind = "approval"
[[runbooks.touch.steps]]
name = "Touch"
kind = "command"
argv = ["touch", "{marker}"]
"#;

fn audit(args: &[&str], config: &Path) -> Ran {
    let mut all: Vec<&str> = vec!["audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config.to_str().expect("utf-8 path")]);
    run(&all, &[], &[])
}

async fn sqlite(db: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.expect("open the SQLite store")
}

/// A copy of the store in a directory of its own, with a config pointing at it.
fn copy_store(root: &Path, name: &str, db: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("case dir");
    std::fs::copy(db, dir.join("state.db")).expect("copy the store");
    let config = write_config(&dir, 1);
    (config, dir.join("state.db"))
}

/// R-1: alice requests `touch alpha`, bob approves it, it succeeds.
async fn touch_approved_and_run(bot: &Runbot) {
    let r = bot.command("console:alice", "ops", "/ops run touch alpha").await;
    assert!(text(&r).contains("R-1 created"), "{r}");
    until("R-1 offers Approve", 15, async || bot.status("ops", "R-1").await.is_some_and(|m| button(&m, "approve").is_some())).await;
    let m = bot.status("ops", "R-1").await.expect("status");
    let r = bot.click("console:bob", &m, &button(&m, "approve").expect("approve")).await;
    assert!(text(&r).contains("approved"), "{r}");
    until("R-1 succeeded", 15, async || bot.status("ops", "R-1").await.is_some_and(|m| text(&m["message"]).contains("Succeeded"))).await;
}

async fn insert(c: &mut SqliteConnection, rec: &AuditRecord) {
    sqlx::query("INSERT INTO audit (seq, at, kind, actor, execution, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(rec.seq as i64)
        .bind(rec.entry.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bind(rec.entry.kind.clone())
        .bind(rec.entry.actor.clone())
        .bind(rec.entry.execution.clone())
        .bind(rec.entry.detail.to_string())
        .bind(rec.prev_hash.clone())
        .bind(rec.hash.clone())
        .execute(c)
        .await
        .expect("insert a forged record");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_and_export_detect_tampering_with_the_sqlite_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let live = root.path().join("live");
    std::fs::create_dir_all(&live).expect("live dir");
    let port = crate::common::free_port();
    let config = write_config(&live, port);

    // Some history: a dry run, a request, its approval by someone else, the run.
    let bot = Runbot::serve(&config, port, &root.path().join("runbot.log")).await;
    let r = bot.command("console:alice", "ops", "/ops run touch alpha --dry-run").await;
    assert!(text(&r).contains("Dry run"), "{r}");
    touch_approved_and_run(&bot).await;
    assert!(live.join("alpha.marker").exists());
    let status = bot.terminate();
    assert!(status.success(), "runbot stops cleanly on SIGTERM: {status}");

    // Fold the write-ahead log into the database file so a plain copy holds everything.
    let db = live.join("state.db");
    let mut conn = sqlite(&db).await;
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut conn).await.expect("checkpoint");
    assert_eq!(row.get::<i64, _>(0), 0, "checkpoint not blocked");
    conn.close().await.expect("close");

    // Intact: verify passes, export writes the chain as JSON lines.
    let out = root.path().join("audit.jsonl");
    let ex = audit(&["export", "--out", out.to_str().expect("utf-8")], &config);
    assert!(ex.ok, "export failed:\n{}", ex.stderr);
    let records: Vec<AuditRecord> = std::fs::read_to_string(&out)
        .expect("export file")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v.is_object() && v["hash"].is_string() && v["prev_hash"].is_string(), "{l}");
            serde_json::from_value(v).expect("an audit record")
        })
        .collect();
    let n = records.len();
    assert!(n >= 5, "a few records: {n}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "sequence numbers run 1..{n}");
        if i > 0 {
            assert_eq!(r.prev_hash, records[i - 1].hash, "record {} links to the one before", r.seq);
        }
    }
    assert!(ex.stderr.contains(&format!("exported {n} audit records")), "{}", ex.stderr);
    let kinds: Vec<&str> = records.iter().map(|r| r.entry.kind.as_str()).collect();
    assert!(kinds.contains(&"dry_run") && kinds.contains(&"execution"), "{kinds:?}");

    let v = audit(&["verify"], &config);
    assert!(v.ok, "verify failed:\n{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("intact") && v.stdout.contains(&format!("{n} records")), "{}", v.stdout);
    assert!(v.stdout.contains(&records[n - 1].hash), "the head is the last record's hash: {}", v.stdout);
    assert!(v.stdout.contains("UNKEYED: no [audit] key is configured"), "an unkeyed trail is said to be rewritable: {}", v.stdout);

    // Each tampering on a fresh copy; verify must fail and say what it found.
    let mid = (n / 2) as i64;
    let last = records[n - 1].clone();
    let forged = link(Some((last.seq, &last.hash)), records[0].entry.clone());
    let cases: Vec<(&str, &str)> = vec![
        ("edited", "edited"),
        ("deleted-middle", "deleted"),
        ("deleted-last", "deleted at the end"),
        ("forged-append", "head"),
        ("inserted-middle", "inserted"),
    ];
    for (case, expect) in cases {
        let (cfg, copy) = copy_store(root.path(), case, &db);
        let mut c = sqlite(&copy).await;
        match case {
            "edited" => {
                let q = sqlx::query("UPDATE audit SET detail = ? WHERE seq = ?").bind(r#"{"tampered":true}"#).bind(mid);
                assert_eq!(q.execute(&mut c).await.expect("edit").rows_affected(), 1);
            }
            "deleted-middle" => {
                let q = sqlx::query("DELETE FROM audit WHERE seq = ?").bind(mid);
                assert_eq!(q.execute(&mut c).await.expect("delete").rows_affected(), 1);
            }
            "deleted-last" => {
                let q = sqlx::query("DELETE FROM audit WHERE seq = ?").bind(n as i64);
                assert_eq!(q.execute(&mut c).await.expect("delete").rows_affected(), 1);
            }
            "forged-append" => {
                // Correctly chained to the last record — only the untouched head gives it away.
                insert(&mut c, &forged).await;
            }
            "inserted-middle" => {
                // Make room after `mid`, then slip in a record chained to `mid`.
                sqlx::query("UPDATE audit SET seq = seq + 1000 WHERE seq > ?").bind(mid).execute(&mut c).await.expect("shift");
                sqlx::query("UPDATE audit SET seq = seq - 999 WHERE seq > 1000").execute(&mut c).await.expect("shift back");
                let prev = &records[mid as usize - 1];
                let fake = link(Some((prev.seq, &prev.hash)), records[0].entry.clone());
                insert(&mut c, &fake).await;
            }
            other => unreachable!("{other}"),
        }
        c.close().await.expect("close");
        let v = audit(&["verify"], &cfg);
        assert!(!v.ok, "{case}: verify must fail:\n{}", v.stdout);
        assert!(!v.stdout.contains("intact"), "{case}: {}", v.stdout);
        assert!(
            v.stdout.lines().any(|l| l.starts_with("TAMPERED:") && l.contains(expect)),
            "{case}: no problem mentioning {expect:?}:\n{}{}",
            v.stdout,
            v.stderr
        );
        assert!(v.stderr.contains("fails verification"), "{case}: {}", v.stderr);
    }
}

#[test]
fn check_config_says_whether_an_https_api_will_find_root_certificates() {
    // runbot loads the system's roots at its first https:// call, not at start-up; the
    // pre-flight says it. SSL_CERT_FILE/SSL_CERT_DIR point rustls-native-certs elsewhere.
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "xoxb-test").expect("write");
    let slack = format!("[slack]\nbot_token = \"file:{}\"\nsigning_secret = \"file:{}\"\n", token.display(), token.display());
    let empty = dir.path().join("none.pem");
    std::fs::write(&empty, "").expect("write");
    let none = check_config(
        &slack,
        &[("SSL_CERT_FILE", empty.to_str().expect("utf-8")), ("SSL_CERT_DIR", dir.path().join("nothing").to_str().expect("utf-8"))],
        &[],
    );
    assert!(none.ok, "a warning, not a failure: the config may be checked elsewhere\n{}", none.stderr);
    assert!(none.stderr.contains("warning: no TLS root certificates") && none.stderr.contains("[slack] api_url"), "{}", none.stderr);
    // A bundle with one certificate (ISRG Root X1, a public CA root): counted.
    let bundle = dir.path().join("one.pem");
    std::fs::write(&bundle, include_str!("data/isrg-root-x1.pem")).expect("write");
    let one = check_config(
        &slack,
        &[("SSL_CERT_FILE", bundle.to_str().expect("utf-8")), ("SSL_CERT_DIR", dir.path().join("nothing").to_str().expect("utf-8"))],
        &[],
    );
    assert!(one.stdout.contains("TLS: 1 root certificates on this system (for [slack] api_url)"), "{}\n{}", one.stdout, one.stderr);
    // Only plain-http APIs (a local fake): nothing to say.
    let local = check_config(&format!("{slack}api_url = \"http://127.0.0.1:9/api\"\n"), &[], &[]);
    assert!(local.ok && !local.stdout.contains("TLS:") && !local.stderr.contains("TLS"), "{}\n{}", local.stdout, local.stderr);
}

/// The demo binds before it says where it listens: on a port that is taken it prints no
/// banner, and its error names `--listen`.
#[test]
fn the_demo_on_a_taken_port_names_listen_and_prints_no_banner() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let ran = run(&["demo", "--listen", &addr, "--state-dir", state.to_str().expect("utf-8")], &[], &[]);
    assert!(!ran.ok, "the demo cannot listen on a taken port");
    assert!(ran.stderr.contains("already in use") && ran.stderr.contains("--listen 127.0.0.1:PORT"), "{}", ran.stderr);
    assert!(!ran.stdout.contains("console at"), "no banner for an address that does not answer: {}", ran.stdout);
}

/// `audit verify` and `audit export` read only the store: a config whose secrets do not
/// resolve where the auditor runs them still names the store, and both work.
#[tokio::test(flavor = "multi_thread")]
async fn audit_commands_need_only_the_store() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = crate::common::free_port();
    let config = write_config(root.path(), port);
    let bot = Runbot::serve(&config, port, &root.path().join("runbot.log")).await;
    let r = bot.command("console:alice", "ops", "/ops run touch alpha --dry-run").await;
    assert!(text(&r).contains("Dry run"), "{r}");
    bot.terminate();
    // The same config with a secret that does not resolve on this machine.
    let text = std::fs::read_to_string(&config).expect("config");
    let unresolved = root.path().join("elsewhere.toml");
    std::fs::write(&unresolved, format!("{text}\n[secrets]\nmissing = \"env:RUNBOT_TEST_NOT_SET_ANYWHERE\"\n")).expect("write");
    let check = run(&["check-config", unresolved.to_str().expect("utf-8")], &[], &["RUNBOT_TEST_NOT_SET_ANYWHERE"]);
    assert!(!check.ok, "the full config does not load here: {}", check.stdout);
    let v = audit(&["verify"], &unresolved);
    assert!(v.ok && v.stdout.contains("intact"), "verify needs only the store:\n{}{}", v.stdout, v.stderr);
    let out = root.path().join("audit.jsonl");
    let ex = audit(&["export", "--out", out.to_str().expect("utf-8")], &unresolved);
    assert!(ex.ok, "export needs only the store:\n{}", ex.stderr);
    assert!(ex.stderr.contains("exporting the records as stored"), "{}", ex.stderr);
    assert!(std::fs::read_to_string(&out).expect("export").lines().count() >= 2);
}

/// `/ops timeline R-1` answers privately with the execution's timeline from the audit trail,
/// and `runbot audit timeline R-1` prints the same as Markdown or JSON from the store alone:
/// who requested it, the plan, the vote, each step's start and end, the final state, in order.
#[tokio::test(flavor = "multi_thread")]
async fn the_timeline_of_an_execution_reads_the_audit_trail_in_chat_and_on_the_command_line() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = crate::common::free_port();
    let config = write_config(root.path(), port);
    let bot = Runbot::serve(&config, port, &root.path().join("runbot.log")).await;
    touch_approved_and_run(&bot).await;

    let in_order = |md: &str| {
        let mut at = 0;
        for want in [
            "# Timeline of R-1 — touch on service alpha (prod)",
            "Requested by console:alice",
            "1. Approval",
            "2. Touch — ",
            "| console:alice | Requested touch on service:alpha@prod (plan ",
            "| runbot | Execution awaiting approval |",
            "| console:bob | Approved |",
            "| runbot | Step 2 Touch started |",
            "| runbot | Step 2 Touch succeeded",
            "| runbot | Execution succeeded |",
        ] {
            let found = md[at..].find(want).unwrap_or_else(|| panic!("{want:?} after byte {at} in:\n{md}"));
            at += found + want.len();
        }
    };
    // Posted as a file in the execution's thread, with a short reply.
    let timeline_file = async |id: &str| -> String {
        let r = bot.command("console:carol", "ops", &format!("/ops timeline {id}")).await;
        assert!(text(&r).contains(&format!("Posted the timeline of {id} in its thread as timeline-{id}.md")), "{r}");
        let status = bot.status("ops", id).await.expect("the status message");
        let file = bot
            .messages("ops")
            .await
            .into_iter()
            .rfind(|m| m["message"]["title"] == format!("Timeline of {id}"))
            .unwrap_or_else(|| panic!("the timeline file of {id}"));
        assert_eq!(file["thread"], status["id"], "in the execution's thread");
        file["message"]["code"].as_str().unwrap_or_default().to_string()
    };
    let md = timeline_file("R-1").await;
    let chat_r1 = md.clone();
    in_order(&md);
    assert!(md.contains("[output](/console/executions/R-1/steps/2/output)"), "a link to the step's output:\n{md}");
    // The console renders the same timeline, and serves the step output it links to.
    let page = bot.get("/console/executions/R-1/timeline").await;
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap_or_default();
    assert!(html.contains("<h1>Timeline of R-1 — touch on service alpha (prod)</h1>") && html.contains("Step 2 Touch succeeded"), "{html}");
    assert_eq!(bot.get("/console/executions/R-1/steps/2/output").await.status().as_u16(), 200);
    // A second request, cancelled before anyone approved it: the cancel and its author show.
    let r = bot.command("console:alice", "ops", "/ops run touch alpha").await;
    assert!(text(&r).contains("R-2 created"), "{r}");
    until("R-2 offers Approve", 15, async || bot.status("ops", "R-2").await.is_some_and(|m| button(&m, "approve").is_some())).await;
    let r = bot.command("console:alice", "ops", "/ops cancel R-2").await;
    assert!(text(&r).contains("Cancelling R-2"), "{r}");
    until("R-2 cancelled", 15, async || bot.status("ops", "R-2").await.is_some_and(|m| text(&m["message"]).contains("Cancelled"))).await;
    let md = timeline_file("R-2").await;
    let (cancel, end) = (md.find("| console:alice | Cancelled before approval |"), md.find("| runbot | Execution cancelled |"));
    assert!(cancel.is_some() && end.is_some() && cancel < end, "{md}");
    let status = bot.terminate();
    assert!(status.success(), "{status}");

    let ran = audit(&["timeline", "R-1", "--format", "md"], &config);
    assert!(ran.ok, "{}", ran.stderr);
    in_order(&ran.stdout);
    // The command line shows what chat showed: the same links, zone and redaction.
    assert_eq!(ran.stdout.trim_end(), chat_r1.trim_end(), "the command line's timeline is the file posted in chat");
    let ran = audit(&["timeline", "R-1", "--format", "json"], &config);
    assert!(ran.ok, "{}", ran.stderr);
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", ran.stdout));
    let kinds: Vec<&str> = v["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in ["requested", "vote", "step_started", "step_ended", "state"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert!(v["events"].as_array().expect("events").iter().all(|e| e["at"].as_str().is_some_and(|t| t.ends_with('Z'))), "times in UTC");
    let missing = audit(&["timeline", "R-9"], &config);
    assert!(!missing.ok && missing.stderr.contains("there is no execution R-9"), "{}", missing.stderr);
}
