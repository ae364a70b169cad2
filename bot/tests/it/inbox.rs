//! Exactly once with a real kill: bursts of 200 signed Slack `/ops run …` commands into the
//! real `runbot serve`, the process killed (SIGKILL) or stopped (SIGTERM) in the middle, then
//! started again. For every command Slack got a 2xx acknowledgement for: exactly one
//! execution, or exactly one explicit "nothing was done" answer — none twice, none lost. A
//! command whose request was cut off before its acknowledgement has at most one of them.

use crate::common::{Runbot, free_port};
use runbot_sandbox::slack::FakeSlack;
use serde_json::Value;
use sqlx::{Connection, Row, SqliteConnection};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "inbox-test-signing-secret";
const BOT: &str = "xoxb-inbox-test";
const USER: &str = "U0BURST01";
const CHANNEL: &str = "C0BURST01";
const BURST: usize = 200;
const RESTARTED: &str = "runbot restarted before acting on your command; nothing was done.";

fn write_config(dir: &Path, port: u16, api: &str, max_age: u64) -> PathBuf {
    let d = dir.display();
    let path = dir.join("runbot.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{d}/state.db"
[engine]
instance = "inbox-test"
runbooks = "runbooks.toml"
lease_secs = 3
inbox_max_age_secs = {max_age}
[limits]
per_identity_per_minute = 100000
per_channel_per_minute = 100000
[groups]
sre = ["slack:{USER}"]
[console]
enabled = false
[slack]
bot_token = "env:RUNBOT_TEST_SLACK_BOT"
signing_secret = "env:RUNBOT_TEST_SLACK_SIGNING"
api_url = "{api}"
post_interval_ms = 0
edits_per_minute = 0
[services.svc.environments.prod.vars]
marker = "{d}/marker.log"
"#
        ),
    )
    .expect("write config");
    std::fs::write(
        dir.join("runbooks.toml"),
        r#"
[runbooks.mark]
summary = "append a line to the marker"
target = "service"
mutating = false
[[runbooks.mark.steps]]
name = "Mark"
kind = "command"
argv = ["sh", "-c", "echo ran >> {marker}"]
"#,
    )
    .expect("write runbooks");
    path
}

async fn start(config: &Path, port: u16, log: &Path) -> Runbot {
    let args = vec!["serve".into(), "--config".into(), config.into()];
    Runbot::spawn_with(args, &[("RUNBOT_TEST_SLACK_BOT", BOT), ("RUNBOT_TEST_SLACK_SIGNING", SECRET)], port, log).await
}

/// One command of the burst: its response_url, its inbox key, and whether it was acknowledged.
#[derive(Debug, Clone)]
struct Sent {
    url: String,
    key: String,
    acked: bool,
}

/// Sends `BURST` signed commands over 16 connections; `stop` runs once `after` are acked.
async fn burst(slack: &FakeSlack, base: &str, after: usize, stop: impl FnOnce() + Send + 'static) -> Vec<Sent> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let forms: Vec<(String, String, String)> = (0..BURST)
        .map(|_| {
            let (body, url) = slack.command_form(USER, CHANNEL, "/ops", "run mark svc");
            // The fake's triggers are letters, digits and dots: the same encoded or not.
            let trigger = body.split('&').find_map(|kv| kv.strip_prefix("trigger_id=")).expect("a trigger_id").to_string();
            (body, url, format!("slack:command:{trigger}"))
        })
        .collect();
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::Mutex::new(Some(stop)));
    let queue = Arc::new(std::sync::Mutex::new(forms.into_iter().collect::<std::collections::VecDeque<_>>()));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, queue, acked, stop, base) = (http.clone(), queue.clone(), acked.clone(), stop.clone(), base.to_string());
        workers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            loop {
                let next = queue.lock().expect("queue").pop_front();
                let Some((body, url, key)) = next else { break };
                let ts = chrono::Utc::now().timestamp();
                let r = http
                    .post(format!("{base}/slack/commands"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header("x-slack-signature", runbot_sandbox::slack::sign(SECRET, ts, &body))
                    .body(body)
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok && acked.fetch_add(1, Ordering::SeqCst) + 1 == after {
                    let f = stop.lock().expect("stop").take();
                    if let Some(f) = f {
                        f();
                    }
                }
                sent.push(Sent { url, key, acked: ok });
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    all
}

/// Each execution's inbox key, as stored.
async fn executions_by_key(db: &Path) -> BTreeMap<String, usize> {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.expect("open the store");
    let rows = sqlx::query("SELECT doc FROM executions").fetch_all(&mut conn).await.expect("read executions");
    let mut by_key = BTreeMap::new();
    for row in rows {
        let doc: String = row.try_get("doc").expect("doc");
        let doc: Value = serde_json::from_str(&doc).expect("json");
        let key = doc["inbox"].as_str().unwrap_or("(none)").to_string();
        *by_key.entry(key).or_insert(0) += 1;
    }
    by_key
}

/// What each command's response_url received: creations and "nothing was done" answers.
fn answers(slack: &FakeSlack, url: &str) -> (usize, usize, usize) {
    let bodies = slack.responses_to(url);
    let text = |b: &Value| runbot_sandbox::slack::content_text(b);
    let created = bodies.iter().filter(|b| text(b).contains(" created — follow it")).count();
    let not_done = bodies.iter().filter(|b| text(b).contains(RESTARTED)).count();
    (bodies.len(), created, not_done)
}

/// Waits until every acknowledged command has its execution or its "nothing was done" answer,
/// then a little longer for any second one, and checks the exactly-once rule: at most one
/// execution and at most one answer per command, never both an execution and "not done", and
/// for each acknowledged command exactly one of the two. (The "R-n created" answer itself may
/// be missing for a command whose execution was created just before the kill: its result is
/// the execution and its status message.) Returns (executions, "not done" answers).
async fn settle_and_check(slack: &FakeSlack, db: &Path, sent: &[Sent]) -> (usize, usize) {
    let t = Instant::now();
    loop {
        let execs = executions_by_key(db).await;
        let missing: Vec<&Sent> = sent.iter().filter(|s| s.acked && !execs.contains_key(&s.key) && answers(slack, &s.url).2 == 0).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} acknowledged commands were neither acted on nor answered, e.g. {:?}",
            missing.len(),
            missing[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let execs = executions_by_key(db).await;
    let (mut made_total, mut not_done_total) = (0, 0);
    for s in sent {
        let (bodies, created, not_done) = answers(slack, &s.url);
        let made = execs.get(&s.key).copied().unwrap_or(0);
        assert!(made <= 1, "{} made {made} executions", s.key);
        assert!(bodies <= 1, "{} was answered {bodies} times: {:?}", s.key, slack.responses_to(&s.url));
        assert!(created <= made, "{}: answered created without an execution", s.key);
        assert!(made + not_done <= 1, "{} was acted on and also said not done", s.key);
        if s.acked {
            assert_eq!(made + not_done, 1, "acknowledged {} has exactly one execution or one not-done answer", s.key);
        }
        made_total += made;
        not_done_total += not_done;
    }
    assert!(!execs.contains_key("(none)"), "every execution comes from a received command");
    (made_total, not_done_total)
}

/// One case: a burst, `sig` after 60 acknowledgements, a restart with `max_age`. Returns
/// (acknowledged, executions before the restart, executions, "not done" answers).
async fn case(sig: &'static str, max_age: u64) -> (usize, usize, usize, usize) {
    let slack = FakeSlack::start(BOT, "xapp-unused").await.expect("fake Slack");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, &slack.api_url(), 300);
    let mut bot = start(&config, port, &dir.path().join("runbot.log")).await;
    let pid = bot.pid();
    let sent = burst(&slack, &bot.base, 60, move || {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    })
    .await;
    bot.wait_exit(Duration::from_secs(20)).await;
    let acked = sent.iter().filter(|s| s.acked).count();
    assert!((60..BURST).contains(&acked), "the signal came mid-burst: {acked} of {BURST} acknowledged");
    let db = dir.path().join("state.db");
    let before = executions_by_key(&db).await.values().sum::<usize>();
    let config = write_config(dir.path(), port, &slack.api_url(), max_age);
    let _bot = start(&config, port, &dir.path().join("runbot-2.log")).await;
    let (created, not_done) = settle_and_check(&slack, &db, &sent).await;
    eprintln!(
        "{sig} mid-burst, restart with inbox_max_age_secs = {max_age}: {acked} of {BURST} acknowledged; executions {before} before the restart, {created} after; {not_done} answered not done"
    );
    (acked, before, created, not_done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_in_a_burst_leaves_every_acknowledged_command_acted_on_exactly_once_after_restart() {
    let (acked, _, created, not_done) = case("-KILL", 300).await;
    assert_eq!(not_done, 0, "within inbox_max_age_secs every recorded command is acted on");
    assert!(created >= acked, "every acknowledged command made its execution: {created} for {acked} acks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_in_a_burst_and_a_restart_past_the_maximum_age_answers_each_unacted_command_not_done() {
    let (acked, before, created, not_done) = case("-KILL", 0).await;
    assert_eq!(created, before, "nothing recorded before the kill is acted on late");
    assert!(not_done > 0, "commands acknowledged but not acted on when killed are answered not done");
    assert!(created + not_done >= acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_in_a_burst_leaves_every_acknowledged_command_acted_on_exactly_once() {
    let (acked, _, created, not_done) = case("-TERM", 300).await;
    assert_eq!(not_done, 0);
    assert!(created >= acked, "{created} executions for {acked} acks");
}
