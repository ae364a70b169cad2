//! Crash safety with a real kill: start `runbot serve`, get two executions into a slow
//! `command` step, SIGKILL the process mid-step, start it again. The idempotent step resumes
//! by itself; the non-idempotent one waits for [Resume] in the same status message and runs
//! again only after that click. Marker files count how often each step really ran.
//!
//! And the step's processes die with runbot: a step whose side effect comes after a sleep
//! (in a child of the step's shell) is cut off with runbot, its whole process group — found by
//! the pid recorded in the execution — is gone, and [Resume] makes the side effect happen
//! exactly once.

use serde_json::{Value, json};
use sqlx::{Connection, Row, SqliteConnection};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Bot {
    child: Child,
    base: String,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    crate::common::serve_config(
        dir,
        port,
        "crash-test",
        "lease_secs = 3",
        &format!(
            "[services.alpha.environments.prod.vars]\nmarker = \"{d}/alpha.log\"\n[services.beta.environments.prod.vars]\nmarker = \"{d}/beta.log\"\n[services.gamma.environments.prod.vars]\nmarker = \"{d}/gamma.log\""
        ),
    );
    let step = |name: &str, idem: bool| {
        format!(
            r#"
[runbooks.{name}]
summary = "append a line to the marker, then work for a while"
target = "service"
[[runbooks.{name}.steps]]
name = "Approval"
kind = "approval"
[[runbooks.{name}.steps]]
name = "Slow work"
kind = "command"
idempotent = {idem}
argv = ["sh", "-c", "echo ran >> {{marker}}; sleep 4"]
"#
        )
    };
    let after = r#"
[runbooks.slow-then-write]
summary = "work for a while, then append a line to the marker"
target = "service"
[[runbooks.slow-then-write.steps]]
name = "Approval"
kind = "approval"
[[runbooks.slow-then-write.steps]]
name = "Write after work"
kind = "command"
idempotent = false
argv = ["sh", "-c", "sleep 3; echo ran >> {marker}"]
"#;
    // Ignores SIGTERM (so does its `sleep`): outlives runbot by the supervisor's grace.
    let stubborn = r#"
[runbooks.stubborn]
summary = "append a line to the marker, then work for a while, deaf to SIGTERM"
target = "service"
[[runbooks.stubborn.steps]]
name = "Approval"
kind = "approval"
[[runbooks.stubborn.steps]]
name = "Stubborn work"
kind = "command"
idempotent = true
argv = ["sh", "-c", "trap '' TERM; echo ran >> {marker}; sleep 8"]
"#;
    std::fs::write(dir.join("runbooks.toml"), step("slow-idem", true) + &step("slow-once", false) + after + stubborn).expect("write runbooks");
    dir.join("runbot.toml")
}

impl Bot {
    async fn start(config: &Path, port: u16) -> Bot {
        let child = Command::new(env!("CARGO_BIN_EXE_runbot"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start runbot");
        let bot = Bot { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        let t = Instant::now();
        while bot.http.get(format!("{}/healthz", bot.base)).send().await.is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "runbot did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bot
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        // The test is the console's trusted authenticating proxy: it names the user in a header.
        let user = body["identity"].as_str().and_then(|i| i.strip_prefix("console:")).unwrap_or_default().to_string();
        let r = self.http.post(format!("{}/console/api/{path}", self.base)).header("X-Forwarded-User", user).json(&body).send().await.expect("post");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("json")
    }

    /// The status message of an execution in the channel (the one whose title starts with its id).
    async fn status(&self, exec: &str) -> Value {
        let url = format!("{}/console/api/messages?channel=ops", self.base);
        let v: Value = self.http.get(url).header("X-Forwarded-User", "observer").send().await.expect("get").json().await.expect("json");
        let all: Vec<Value> = v["messages"].as_array().cloned().unwrap_or_default();
        let mine: Vec<Value> = all
            .into_iter()
            .filter(|m| m["thread"].is_null() && m["message"]["title"].as_str().is_some_and(|t| t.starts_with(&format!("{exec} "))))
            .collect();
        assert_eq!(mine.len(), 1, "exactly one status message for {exec}");
        mine[0].clone()
    }

    /// Clicks `action` on the execution's status message, once the runner has put it there
    /// (the first post may come before the approval step starts waiting).
    async fn click(&self, who: &str, exec: &str, action: &str) -> String {
        let t = std::time::Instant::now();
        let (m, value) = loop {
            let m = self.status(exec).await;
            let value = m["message"]["buttons"]
                .as_array()
                .and_then(|b| b.iter().find(|b| b["action_id"] == action))
                .map(|b| b["value"].as_str().unwrap_or("").to_string());
            match value {
                Some(v) => break (m, v),
                None if t.elapsed() < Duration::from_secs(10) => tokio::time::sleep(Duration::from_millis(50)).await,
                None => panic!("no {action} button on {exec} within 10 s: {m}"),
            }
        };
        let r = self.post("action", json!({"identity": who, "channel": "ops", "message_id": m["id"], "action_id": action, "value": value})).await;
        r["reply"]["text"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        // A failed assertion must not leave a runbot running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0)
}

async fn until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_step_resumes_idempotent_and_asks_before_repeating_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let (alpha, beta) = (dir.path().join("alpha.log"), dir.path().join("beta.log"));

    let mut bot = Bot::start(&config, port).await;
    for text in ["/ops run slow-idem alpha", "/ops run slow-once beta"] {
        let r = bot.post("command", json!({"identity": "console:alice", "channel": "ops", "text": text})).await;
        assert!(r["reply"]["text"].as_str().unwrap_or("").contains("created"), "{r}");
    }
    assert!(bot.click("console:bob", "R-1", "approve").await.contains("running"));
    assert!(bot.click("console:bob", "R-2", "approve").await.contains("running"));
    until("both steps started", 20, async || lines(&alpha) == 1 && lines(&beta) == 1).await;
    let ids_before = (bot.status("R-1").await["id"].clone(), bot.status("R-2").await["id"].clone());

    // SIGKILL: no shutdown hook runs, the steps are cut off mid-flight.
    bot.child.kill().expect("kill");
    bot.child.wait().expect("reap");

    let bot = Bot::start(&config, port).await;
    // The idempotent step is resumed by itself and finishes, in the same message.
    until("R-1 succeeded", 30, async || bot.status("R-1").await["message"]["text"].as_str().is_some_and(|t| t.contains("Succeeded"))).await;
    let r1 = bot.status("R-1").await;
    assert_eq!(r1["id"], ids_before.0, "R-1's status message id survived the restart");
    assert!(r1["message"]["text"].as_str().unwrap_or("").contains("safe to repeat and was resumed"), "{r1}");
    assert_eq!(lines(&alpha), 2, "the idempotent step ran again exactly once");

    // The non-idempotent step waits for a person; it has not run again on its own.
    until("R-2 offers Resume", 20, async || {
        bot.status("R-2").await["message"]["buttons"].as_array().is_some_and(|b| b.iter().any(|b| b["action_id"] == "resume"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lines(&beta), 1, "the non-idempotent step did not run again without consent");
    let r2 = bot.status("R-2").await;
    assert_eq!(r2["id"], ids_before.1, "R-2's status message id survived the restart");
    assert!(r2["message"]["text"].as_str().unwrap_or("").contains("Resume or Abort"), "{r2}");

    assert!(bot.click("console:bob", "R-2", "resume").await.contains("Resuming"));
    until("R-2 succeeded", 30, async || bot.status("R-2").await["message"]["text"].as_str().is_some_and(|t| t.contains("Succeeded"))).await;
    assert_eq!(lines(&beta), 2, "resumed once, ran once more");
}

/// The live (not zombie) processes of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        // After the command name: state (field 3), ppid (4), pgrp (5).
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) && fields.first().is_some_and(|s| *s != "Z") {
            found.push(pid);
        }
    }
    found
}

/// The process recorded for step `step` of execution `id` (the leader of its process group).
async fn recorded_process(db: &Path, id: i64, step: usize) -> Option<Value> {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.expect("open the store");
    let row = sqlx::query("SELECT doc FROM executions WHERE id = ?").bind(id).fetch_optional(&mut conn).await.expect("read the execution")?;
    let doc: Value = serde_json::from_str(&row.get::<String, _>("doc")).expect("execution JSON");
    let p = doc["steps"][step]["process"].clone();
    (!p.is_null()).then_some(p)
}

/// A runbot with execution R-1 (`text`, requested by alice) approved by bob, so running.
async fn started_and_approved(config: &Path, port: u16, text: &str) -> Bot {
    let bot = Bot::start(config, port).await;
    let r = bot.post("command", json!({"identity": "console:alice", "channel": "ops", "text": text})).await;
    assert!(r["reply"]["text"].as_str().unwrap_or("").contains("created"), "{r}");
    assert!(bot.click("console:bob", "R-1", "approve").await.contains("running"));
    bot
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_step_ends_the_steps_whole_process_group_and_resume_makes_the_side_effect_happen_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let marker = dir.path().join("gamma.log");

    let mut bot = started_and_approved(&config, port, "/ops run slow-then-write gamma").await;

    // The pid and start time are in the execution before the program runs; the program's shell
    // and its `sleep` child are in that process group.
    let db = dir.path().join("state.db");
    let mut process = None;
    until("the step's process is recorded", 20, async || {
        process = recorded_process(&db, 1, 1).await;
        process.is_some()
    })
    .await;
    let process = process.expect("recorded");
    let pgid = process["pid"].as_u64().expect("pid") as u32;
    assert!(process["start_ticks"].as_u64().is_some_and(|t| t > 0), "{process}");
    until("the step's shell and its sleep run in the recorded group", 10, async || group_members(pgid).len() >= 2).await;

    bot.child.kill().expect("kill");
    bot.child.wait().expect("reap");
    let t = Instant::now();
    until("the step's process group is gone after runbot was killed", 2, async || group_members(pgid).is_empty()).await;
    eprintln!("step group gone {} ms after the SIGKILL", t.elapsed().as_millis());
    // Past the moment the cut-off step would have written.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(lines(&marker), 0, "the killed step's side effect did not happen behind runbot's back");

    let bot = Bot::start(&config, port).await;
    until("R-1 offers Resume", 20, async || {
        bot.status("R-1").await["message"]["buttons"].as_array().is_some_and(|b| b.iter().any(|b| b["action_id"] == "resume"))
    })
    .await;
    assert!(bot.click("console:bob", "R-1", "resume").await.contains("Resuming"));
    until("R-1 succeeded", 30, async || bot.status("R-1").await["message"]["text"].as_str().is_some_and(|t| t.contains("Succeeded"))).await;
    assert_eq!(lines(&marker), 1, "the side effect happened exactly once");
    let again = recorded_process(&db, 1, 1).await.expect("the resumed attempt is recorded");
    assert_ne!(again["pid"], process["pid"], "the resumed attempt recorded its own process");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_step_is_not_resumed_beside_its_earlier_process_which_is_stopped_first_and_the_message_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let marker = dir.path().join("gamma.log");

    let mut bot = started_and_approved(&config, port, "/ops run stubborn gamma").await;
    let db = dir.path().join("state.db");
    until("the step ran and its process is recorded", 20, async || lines(&marker) == 1 && recorded_process(&db, 1, 1).await.is_some()).await;
    let first = recorded_process(&db, 1, 1).await.expect("recorded")["pid"].as_u64().expect("pid") as u32;

    // Killed: the step's group ignores the supervisor's SIGTERM and is still there (for the
    // supervisor's 5 s grace) when runbot is back and resumes the idempotent step.
    bot.child.kill().expect("kill");
    bot.child.wait().expect("reap");
    assert!(!group_members(first).is_empty(), "the earlier attempt outlives SIGTERM for now");
    let bot = Bot::start(&config, port).await;
    until("the step ran again", 30, async || lines(&marker) == 2).await;
    assert!(group_members(first).is_empty(), "the earlier attempt was gone before the step ran again");
    let text = bot.status("R-1").await["message"]["text"].as_str().unwrap_or("").to_string();
    assert!(text.contains(&format!("earlier process (pid {first} on")) && text.contains("was still running; it was stopped"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_step_ends_the_steps_whole_process_group_not_just_its_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let marker = dir.path().join("gamma.log");

    let mut bot = started_and_approved(&config, port, "/ops run slow-then-write gamma").await;
    let db = dir.path().join("state.db");
    until("the step's process is recorded", 20, async || recorded_process(&db, 1, 1).await.is_some()).await;
    let pgid = recorded_process(&db, 1, 1).await.expect("recorded")["pid"].as_u64().expect("pid") as u32;
    until("the step's shell and its sleep run in the recorded group", 10, async || group_members(pgid).len() >= 2).await;

    let term = Command::new("kill").args(["-TERM", &bot.child.id().to_string()]).status().expect("kill -TERM");
    assert!(term.success());
    let t = Instant::now();
    while bot.child.try_wait().expect("wait").is_none() {
        assert!(t.elapsed() < Duration::from_secs(15), "runbot did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The shell's `sleep` child too, not only the group's leader.
    until("the step's whole process group is gone after runbot stopped", 1, async || group_members(pgid).is_empty()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(lines(&marker), 0, "the stopped step's side effect did not happen after runbot stopped");
}
