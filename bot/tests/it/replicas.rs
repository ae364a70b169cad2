//! Three `runbot serve` replicas on the test PostgreSQL (`RUNBOT_TEST_PG_URL`), signed Slack
//! requests spread round-robin over them (the fake Slack of `runbot-sandbox`), and the owner
//! SIGKILLed: during the approval wait, and in the middle of the first and of the second
//! step. Each case ends with one status message in its final state, each step's side effect
//! once (a step writes its line after its work, so a step cut off by the kill — its process
//! group ends with runbot — writes nothing), and `runbot audit verify` intact. The takeovers
//! are measured and must come within 5 s of the kill (the stored lease is 30 s); a waiting
//! message is not edited while its content does not change.

use crate::common::{Runbot, free_port};
use runbot_sandbox::slack::{FakeSlack, Posted, sign};
use serde_json::Value;
use sqlx::{Connection, Row};
use std::ffi::OsString;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BOT: &str = "xoxb-replicas";
const SECRET: &str = "replicas-signing-secret";
const OPS: &str = "C0OPS";
const ALICE: &str = "U0ALICE";
const BOB: &str = "U0BOB";
/// The takeover bound the test holds the replicas to (`failover_secs = 1`, lease 30 s).
const BOUND: Duration = Duration::from_secs(5);

const RUNBOOKS: &str = r#"
[runbooks.three]
summary = "three steps, each writing its line after its work"
target = "service"
[[runbooks.three.steps]]
name = "Approval"
kind = "approval"
[[runbooks.three.steps]]
name = "One"
kind = "command"
idempotent = true
argv = ["sh", "-c", "sleep 2; echo one >> {marker}"]
[[runbooks.three.steps]]
name = "Two"
kind = "command"
idempotent = true
argv = ["sh", "-c", "sleep 2; echo two >> {marker}"]
[[runbooks.three.steps]]
name = "Three"
kind = "command"
idempotent = true
argv = ["sh", "-c", "sleep 2; echo three >> {marker}"]

[runbooks.long]
summary = "one long read-only step, writing its line after its work"
target = "service"
mutating = false
[[runbooks.long.steps]]
name = "Long"
kind = "command"
idempotent = true
argv = ["sh", "-c", "sleep 8; echo long >> {marker}"]
"#;

struct Cluster {
    /// Appended to every replica's config (the benchmark's services and limits).
    extra: String,
    /// `[slack] post_interval_ms`: runbot's own pacing of posts into one channel.
    pacing_ms: u64,
    /// `[engine] lease_secs`.
    lease_secs: u64,
    dir: PathBuf,
    db: String,
    slack: FakeSlack,
    bots: Vec<Option<Runbot>>,
    ports: Vec<u16>,
    http: reqwest::Client,
    next: usize,
}

/// How a test's replicas are set up.
struct Setup {
    runbooks: &'static str,
    /// Appended to every replica's config, in its `[slack]` section.
    extra: String,
    pacing_ms: u64,
    lease_secs: u64,
    replicas: usize,
}

impl Cluster {
    /// Writes the runbooks and configs, and starts `setup.replicas` replicas.
    async fn launch(dir: &std::path::Path, db: &str, slack: FakeSlack, setup: Setup) -> Cluster {
        std::fs::write(dir.join("runbooks.toml"), setup.runbooks).expect("runbooks");
        let n = setup.replicas;
        let mut c = Cluster {
            extra: setup.extra,
            pacing_ms: setup.pacing_ms,
            lease_secs: setup.lease_secs,
            dir: dir.to_path_buf(),
            db: db.to_string(),
            slack,
            bots: (0..n).map(|_| None).collect(),
            ports: (0..n).map(|_| free_port()).collect(),
            http: reqwest::Client::new(),
            next: 0,
        };
        for i in 0..n {
            c.write_config(i);
            c.start(i).await;
        }
        c
    }

    fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("r{i}.toml"))
    }

    fn write_config(&self, i: usize) {
        let d = self.dir.display();
        let services: String = ["alpha", "beta", "gamma", "delta"]
            .iter()
            .map(|s| format!("[services.{s}.environments.prod.vars]\nmarker = \"{d}/{s}.log\"\n"))
            .collect();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "{db}"
[engine]
instance = "r{i}"
runbooks = "runbooks.toml"
update_interval_ms = 100
lease_secs = {lease}
failover_secs = 1
[groups]
sre = ["slack:{ALICE}", "slack:{BOB}"]
[[approvals]]
approvers = ["sre"]
required = 1
[environments.prod]
{services}
[console]
enabled = false
[slack]
bot_token = "env:RUNBOT_TEST_SLACK_BOT"
signing_secret = "env:RUNBOT_TEST_SLACK_SIGNING"
api_url = "{api}"
post_interval_ms = {pacing}
{extra}
"#,
            pacing = self.pacing_ms,
            lease = self.lease_secs,
            extra = self.extra,
            port = self.ports[i],
            db = self.db,
            api = self.slack.api_url(),
        );
        std::fs::write(self.config(i), text).expect("write config");
    }

    async fn start(&mut self, i: usize) {
        let args: Vec<OsString> = vec!["serve".into(), "--config".into(), self.config(i).into()];
        let env = [("RUNBOT_TEST_SLACK_BOT", BOT), ("RUNBOT_TEST_SLACK_SIGNING", SECRET)];
        let log = self.dir.join(format!("r{i}.log"));
        // Appends: a restarted replica keeps the log of its earlier life for a failing test.
        let earlier = std::fs::read_to_string(&log).unwrap_or_default();
        let bot = Runbot::spawn_with(args, &env, self.ports[i], &log).await;
        if !earlier.is_empty() {
            std::fs::write(self.dir.join(format!("r{i}.earlier.log")), earlier).expect("keep the earlier log");
        }
        self.bots[i] = Some(bot);
    }

    /// SIGKILLs replica `i` (dropping a `Runbot` kills it) and returns when.
    fn kill(&mut self, i: usize) -> Instant {
        let bot = self.bots[i].take().expect("a running replica");
        drop(bot);
        Instant::now()
    }

    /// The next live replica, round-robin.
    fn pick(&mut self) -> usize {
        loop {
            let i = self.next % self.bots.len();
            self.next += 1;
            if self.bots[i].is_some() {
                return i;
            }
        }
    }

    async fn signed(&mut self, path: &str, body: &str) -> u16 {
        let i = self.pick();
        let ts = chrono::Utc::now().timestamp();
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}{path}", self.ports[i]))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(SECRET, ts, body))
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("signed request");
        r.status().as_u16()
    }

    /// Types a command; returns the replica that received it.
    async fn command(&mut self, text: &str) -> usize {
        let (body, _) = self.slack.command_form(ALICE, OPS, "/ops", text);
        let i = self.next_live();
        assert_eq!(self.signed("/slack/commands", &body).await, 200);
        i
    }

    /// The replica [`Cluster::pick`] will choose next.
    fn next_live(&self) -> usize {
        (self.next..).map(|n| n % self.bots.len()).find(|i| self.bots[*i].is_some()).unwrap_or(0)
    }

    async fn click(&mut self, msg: &Posted, action: &str) -> Instant {
        let value = msg.buttons().into_iter().find(|(a, _)| a == action).map(|(_, v)| v).expect("the button");
        let (payload, _) = self.slack.block_actions(BOB, msg, action, &value);
        let body = format!("payload={}", form_encode(&payload.to_string()));
        let at = Instant::now();
        assert_eq!(self.signed("/slack/interactions", &body).await, 200);
        at
    }

    /// The status messages of `service`'s executions.
    fn status_messages(&self, service: &str) -> Vec<Posted> {
        self.slack.top_level(OPS).into_iter().filter(|m| m.text().contains(&format!("three {service}"))).collect()
    }

    async fn status_message(&self, service: &str, what: &str, pred: impl Fn(&Posted) -> bool) -> Posted {
        self.status_message_of(&format!("three {service}"), what, pred).await
    }

    /// The status message whose text contains `title` (`three alpha`, `long delta`).
    async fn status_message_of(&self, title: &str, what: &str, pred: impl Fn(&Posted) -> bool) -> Posted {
        let t = Instant::now();
        loop {
            let msgs: Vec<Posted> = self.slack.top_level(OPS).into_iter().filter(|m| m.text().contains(title)).collect();
            if let Some(m) = msgs.iter().find(|m| pred(m)) {
                return m.clone();
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{title}: waited 60 s for {what}; messages: {:?}",
                msgs.iter().map(|m| m.text()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stored execution document of the one execution on `service`, and its lease owner.
    async fn exec(&self, service: &str) -> (Value, Option<String>) {
        let mut c = sqlx::PgConnection::connect(&self.db).await.expect("connect to the test database");
        let row = sqlx::query("SELECT doc, lease_owner FROM executions WHERE target_name = $1")
            .bind(service)
            .fetch_one(&mut c)
            .await
            .expect("the execution");
        let doc: String = row.try_get("doc").expect("doc");
        (serde_json::from_str(&doc).expect("a JSON document"), row.try_get("lease_owner").expect("lease_owner"))
    }

    /// Waits until `pred` holds for the stored execution; returns how long that took.
    async fn until_exec(&self, service: &str, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Duration {
        let t = Instant::now();
        loop {
            let (doc, _) = self.exec(service).await;
            if pred(&doc) {
                return t.elapsed();
            }
            assert!(t.elapsed() < within, "{service}: waited {within:?} for {what}; it is {}", doc);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The replica driving `service`'s execution now.
    async fn owner(&self, service: &str) -> usize {
        let (_, owner) = self.exec(service).await;
        let owner = owner.unwrap_or_else(|| panic!("{service}: nobody holds the lease"));
        owner.trim_start_matches('r').parse().expect("an owner r<i>")
    }

    /// Each case's end: one status message, in its final state; each step's line once.
    async fn finished(&self, service: &str) {
        self.until_exec(service, "success", Duration::from_secs(60), |d| d["state"] == "succeeded").await;
        self.status_message(service, "the final state", |m| m.text().contains("Succeeded")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let msgs = self.status_messages(service);
        assert_eq!(msgs.len(), 1, "{service}: one status message");
        assert!(msgs[0].text().contains("Succeeded"), "{service}: the message ends on the final state: {}", msgs[0].text());
        let lines = std::fs::read_to_string(self.dir.join(format!("{service}.log"))).unwrap_or_default();
        assert_eq!(lines, "one\ntwo\nthree\n", "{service}: each step's side effect once");
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn step_status(d: &Value, i: usize) -> &str {
    d["steps"][i]["status"].as_str().unwrap_or("")
}

/// Runs `case` on a scratch database of the test PostgreSQL (`RUNBOT_TEST_PG_URL`), in a
/// temporary directory; the database is dropped afterwards, also when the case panics.
async fn on_scratch_db<F>(prefix: &str, case: impl FnOnce(PathBuf, String) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(server) = std::env::var("RUNBOT_TEST_PG_URL") else {
        panic!("RUNBOT_TEST_PG_URL is not set: run the tests with ./scripts/test.sh (or eval \"$(RUNBOT_TEST_ONLY_PG=1 ./scripts/test.sh)\")");
    };
    let name = format!("{prefix}_{:016x}", RandomState::new().hash_one(std::process::id()));
    let db = runbot_adapters::store_sql::create_database(&server, &name).await.expect("a scratch database");
    let root = tempfile::tempdir().expect("tempdir");
    let result = tokio::spawn(case(root.path().to_path_buf(), db)).await;
    let dropped = runbot_adapters::store_sql::drop_database(&server, &name).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
    dropped.expect("drop the scratch database");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_survive_their_owner_being_killed_at_every_stage() {
    on_scratch_db("runbot_replicas", run).await;
}

async fn run(dir: PathBuf, db: String) {
    let slack = FakeSlack::start(BOT, "xapp-unused").await.expect("fake Slack");
    let mut c = Cluster::launch(
        &dir,
        &db,
        slack,
        Setup { runbooks: RUNBOOKS, extra: "edits_per_minute = 2400\n".into(), pacing_ms: 20, lease_secs: 30, replicas: 3 },
    )
    .await;

    // alpha: the replica that posted it dies during the approval wait; the click lands on a
    // live replica, which starts the step at once.
    let poster = c.command("run three alpha").await;
    let msg = c.status_message("alpha", "the Approve button", |m| m.buttons().iter().any(|(a, _)| a == "approve")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let versions = c.status_messages("alpha")[0].versions.len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(c.status_messages("alpha")[0].versions.len(), versions, "4 s of sweeps by 3 replicas re-edited an unchanged waiting message");
    c.kill(poster);
    c.click(&msg, "approve").await;
    let started = c.until_exec("alpha", "step One running", BOUND, |d| step_status(d, 1) == "running" || step_status(d, 1) == "succeeded").await;
    println!("alpha: approval clicked on a live replica after the poster died → step One started after {} ms", started.as_millis());
    c.start(poster).await;
    c.finished("alpha").await;

    // beta and gamma: the owner dies in the middle of step One, then of step Two.
    for (service, step) in [("beta", 1usize), ("gamma", 2usize)] {
        c.command(&format!("run three {service}")).await;
        let msg = c.status_message(service, "the Approve button", |m| m.buttons().iter().any(|(a, _)| a == "approve")).await;
        c.click(&msg, "approve").await;
        c.until_exec(service, "the step running", Duration::from_secs(30), |d| {
            step_status(d, step) == "running" && d["steps"][step]["process"].is_object()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let owner = c.owner(service).await;
        let killed = c.kill(owner);
        c.until_exec(service, "the step taken over", BOUND, |d| d["steps"][step]["attempts"].as_u64() == Some(2)).await;
        let took = killed.elapsed();
        println!("{service}: owner r{owner} SIGKILLed mid-step {step}; another replica resumed the step after {} ms", took.as_millis());
        assert!(took < BOUND, "{service}: takeover took {took:?}");
        c.start(owner).await;
        c.finished(service).await;
    }

    let out =
        std::process::Command::new(crate::common::BIN).args(["audit", "verify", "--config"]).arg(c.config(0)).output().expect("runbot audit verify");
    assert!(out.status.success(), "audit verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let violations = c.slack.violations();
    assert!(violations.is_empty(), "Slack limits: {violations:?}");
}

/// A paused owner (SIGSTOP, not dead: it keeps its PostgreSQL connection and advisory lock)
/// mid-step: another replica takes the execution over once the stored lease (3 s here) runs
/// out, stopping the step's leftover process first, and finishes it. Resumed (SIGCONT), the
/// paused replica's writes are fenced out: the step's side effect happened once, the message
/// ends on the final state and no older state is edited in after it, `runbot audit verify`
/// is intact.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_owner_is_taken_over_and_fenced_out_when_it_resumes() {
    on_scratch_db("runbot_paused", paused).await;
}

/// Sends `signal` (`-STOP`, `-CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
    assert!(sent.success(), "kill {signal} {pid} failed");
}

async fn paused(dir: PathBuf, db: String) {
    const LEASE: u64 = 3;
    let slack = FakeSlack::start(BOT, "xapp-unused").await.expect("fake Slack");
    let mut c = Cluster::launch(
        &dir,
        &db,
        slack,
        Setup { runbooks: RUNBOOKS, extra: "edits_per_minute = 2400\n".into(), pacing_ms: 20, lease_secs: LEASE, replicas: 3 },
    )
    .await;
    c.command("run long delta").await;
    // The command is acted on after its acknowledgement: the execution exists once its
    // message is posted.
    c.status_message_of("long delta", "the status message", |_| true).await;
    c.until_exec("delta", "the step running", Duration::from_secs(30), |d| step_status(d, 0) == "running" && d["steps"][0]["process"].is_object())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let owner = c.owner("delta").await;
    let pid = c.bots[owner].as_ref().expect("the owner runs").pid();
    signal(pid, "-STOP");
    let stopped = Instant::now();
    c.until_exec("delta", "the step taken over", Duration::from_secs(LEASE + 10), |d| d["steps"][0]["attempts"].as_u64() == Some(2)).await;
    let took = stopped.elapsed();
    println!("delta: owner r{owner} SIGSTOPped mid-step; another replica resumed the step after {} ms (lease {LEASE} s)", took.as_millis());
    c.until_exec("delta", "success", Duration::from_secs(60), |d| d["state"] == "succeeded").await;
    let msg = c.status_message_of("long delta", "the final state", |m| m.text().contains("Succeeded")).await;
    let versions = msg.versions.len();

    // The paused owner wakes up: its step's process was stopped by the new owner, and whatever
    // it still tries to record or edit is refused.
    signal(pid, "-CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (doc, _) = c.exec("delta").await;
    assert_eq!(doc["state"], "succeeded", "the paused owner changed the finished execution: {doc}");
    let lines = std::fs::read_to_string(dir.join("delta.log")).unwrap_or_default();
    assert_eq!(lines, "long\n", "the step's side effect once");
    let now = c.slack.top_level(OPS).into_iter().find(|m| m.ts == msg.ts).expect("the status message");
    for v in &now.versions[versions..] {
        assert!(v.to_string().contains("Succeeded"), "an older state was edited in after the final one: {v}");
    }
    assert!(now.text().contains("Succeeded"), "the message ends on the final state: {}", now.text());
    let out =
        std::process::Command::new(crate::common::BIN).args(["audit", "verify", "--config"]).arg(c.config(0)).output().expect("runbot audit verify");
    assert!(out.status.success(), "audit verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Slack pacing holds across replicas: three replicas, each pacing a channel at one post per
/// 25 ms and the workspace's edits at 40 a second, write thirty executions' messages into one
/// channel whose Slack allows 50 posts and 50 edits a second. Paced together (slots reserved
/// in PostgreSQL) they stay under it: no 429. Paced each for itself they would write up to
/// three times as fast.
#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_pace_one_channel_together() {
    on_scratch_db("runbot_pacing", pacing).await;
}

async fn pacing(dir: PathBuf, db: String) {
    let slack = FakeSlack::start(BOT, "xapp-unused").await.expect("fake Slack");
    slack.limit("chat.postMessage", 50, Duration::from_secs(1));
    slack.limit("chat.update", 50, Duration::from_secs(1));
    let services: String = (0..30).map(|i| format!("[services.s{i}.environments.prod]\n")).collect();
    // 40 edits a second for the workspace, each replica's own budget: together 120 a second
    // unless they share it.
    let extra = format!("edits_per_minute = 2400\n[limits]\nper_identity_per_minute = 1000\nper_channel_per_minute = 1000\n{services}");
    let mut c = Cluster::launch(&dir, &db, slack, Setup { runbooks: BENCH_RUNBOOKS, extra, pacing_ms: 25, lease_secs: 30, replicas: 3 }).await;
    for i in 0..30 {
        c.command(&format!("run quick s{i}")).await;
    }
    let t = Instant::now();
    while count_state(&db, "succeeded").await < 30 {
        assert!(t.elapsed() < Duration::from_secs(120), "30 quick executions did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = Instant::now();
    while c.slack.top_level(OPS).iter().filter(|m| m.text().contains("Succeeded")).count() < 30 {
        assert!(done.elapsed() < Duration::from_secs(60), "not every message reached its final state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = c.slack.calls();
    let writes = calls.iter().filter(|x| x.method == "chat.postMessage" || x.method == "chat.update").count();
    let refused = calls.iter().filter(|x| x.status == 429).count();
    println!("30 executions by 3 replicas into one channel: {writes} writes, {refused} × 429");
    assert!(writes >= 60, "a post and at least one edit per execution: {writes}");
    assert_eq!(refused, 0, "the replicas wrote faster into the channel than its pacing allows");
}

// ---------------------------------------------------------------------------------------------
// The benchmark (scripts/bench-replicas.sh runs it with 1 and with 3 replicas).

const BENCH_RUNBOOKS: &str = r#"
[runbooks.quick]
summary = "one quick read-only step"
target = "service"
mutating = false
[[runbooks.quick.steps]]
name = "Look"
kind = "command"
idempotent = true
argv = ["true"]

[runbooks.storm]
summary = "one read-only step of a second"
target = "service"
mutating = false
[[runbooks.storm.steps]]
name = "Look"
kind = "command"
idempotent = true
argv = ["sleep", "1"]

[runbooks.gated]
summary = "an approval, then one quick step"
target = "service"
[[runbooks.gated.steps]]
name = "Approval"
kind = "approval"
[[runbooks.gated.steps]]
name = "Apply"
kind = "command"
argv = ["true"]
"#;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Executions in `state`, counted in the store.
async fn count_state(db: &str, state: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(db).await.expect("connect");
    sqlx::query("SELECT COUNT(*) AS n FROM executions WHERE state = $1").bind(state).fetch_one(&mut c).await.expect("count").try_get("n").expect("n")
}

/// `BENCH_REPLICAS` (default 3) replicas on one PostgreSQL behind the fake Slack, on loopback:
/// signed commands per second, full executions per second, click-to-step-start and
/// click-to-first-edit latency, and the live-update lag in a storm of 100 executions against
/// a rate-limited Slack. Prints the figures; run by `scripts/bench-replicas.sh`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: scripts/bench-replicas.sh"]
async fn benchmark_replicas() {
    let n: usize = std::env::var("BENCH_REPLICAS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    on_scratch_db("runbot_bench", move |dir, db| bench(dir, db, n)).await;
}

async fn bench(dir: PathBuf, db: String, n: usize) {
    let slack = FakeSlack::start(BOT, "xapp-unused").await.expect("fake Slack");
    let services: String = (0..400).map(|i| format!("[services.s{i}.environments.prod]\n")).collect();
    // The workspace's chat.update budget: under the fake Slack's 50 a second (storm, below).
    let edits = std::env::var("BENCH_EDITS_PER_MINUTE").ok().and_then(|v| v.parse().ok()).unwrap_or(2700u32);
    let extra = format!("edits_per_minute = {edits}\n[limits]\nper_identity_per_minute = 10000000\nper_channel_per_minute = 10000000\n{services}");
    let pacing = std::env::var("BENCH_PACING_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut c = Cluster::launch(&dir, &db, slack, Setup { runbooks: BENCH_RUNBOOKS, extra, pacing_ms: pacing, lease_secs: 30, replicas: n }).await;
    println!("replicas: {n} runbot serve on one PostgreSQL (loopback; [slack] post_interval_ms = {pacing})");

    // A. Signed commands per second: /ops whoami, 64 clients, 5 s, round-robin.
    let secs = 5.0;
    let t = Instant::now();
    let clients: Vec<_> = (0..64)
        .map(|k| {
            let http = c.http.clone();
            let ports = c.ports.clone();
            let (body, _) = c.slack.command_form(ALICE, OPS, "/ops", "whoami");
            tokio::spawn(async move {
                let mut ok = 0u64;
                let mut j = k;
                while t.elapsed().as_secs_f64() < secs {
                    let ts = chrono::Utc::now().timestamp();
                    let r = http
                        .post(format!("http://127.0.0.1:{}/slack/commands", ports[j % ports.len()]))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("x-slack-request-timestamp", ts.to_string())
                        .header("x-slack-signature", sign(SECRET, ts, &body))
                        .body(body.clone())
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        ok += 1;
                    }
                    j += 1;
                }
                ok
            })
        })
        .collect();
    let mut acks = 0;
    for h in clients {
        acks += h.await.expect("client");
    }
    println!("signed commands: {:.0} acks/s ({acks} in {:.1} s, 64 clients)", acks as f64 / t.elapsed().as_secs_f64(), t.elapsed().as_secs_f64());

    // B. Full executions per second: 200 quick executions, 32 at a time, in 50 channels.
    let t = Instant::now();
    let total = 200usize;
    let senders: Vec<_> = (0..32)
        .map(|k| {
            let http = c.http.clone();
            let ports = c.ports.clone();
            let forms: Vec<String> = (k..total)
                .step_by(32)
                .map(|i| c.slack.command_form(ALICE, &format!("C0B{}", i % 50), "/ops", &format!("run quick s{i}")).0)
                .collect();
            tokio::spawn(async move {
                for (m, body) in forms.iter().enumerate() {
                    let ts = chrono::Utc::now().timestamp();
                    let _ = http
                        .post(format!("http://127.0.0.1:{}/slack/commands", ports[(k + m) % ports.len()]))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("x-slack-request-timestamp", ts.to_string())
                        .header("x-slack-signature", sign(SECRET, ts, body))
                        .body(body.clone())
                        .send()
                        .await;
                }
            })
        })
        .collect();
    for h in senders {
        h.await.expect("sender");
    }
    loop {
        if count_state(&db, "succeeded").await >= total as i64 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "200 executions did not finish in 10 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "full executions: {:.1}/s ({total} created, run and finished in {:.1} s)",
        total as f64 / t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    // C. Click latency: 30 gated executions, one at a time; the click goes to the next replica.
    let (mut to_step, mut to_edit) = (Vec::new(), Vec::new());
    for i in 0..30 {
        let service = format!("s{}", 200 + i);
        c.command(&format!("run gated {service}")).await;
        let needle = format!("gated {service} ");
        let msg = loop {
            if let Some(m) =
                c.slack.top_level(OPS).into_iter().find(|m| m.text().contains(&needle) && m.buttons().iter().any(|(a, _)| a == "approve"))
            {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let versions = c.slack.top_level(OPS).into_iter().find(|m| m.ts == msg.ts).map(|m| m.versions.len()).unwrap_or(0);
        let clicked = c.click(&msg, "approve").await;
        let (mut step, mut edit) = (None, None);
        let mut conn = sqlx::PgConnection::connect(&db).await.expect("connect");
        while step.is_none() || edit.is_none() {
            if step.is_none() {
                let doc: String = sqlx::query("SELECT doc FROM executions WHERE target_name = $1")
                    .bind(&service)
                    .fetch_one(&mut conn)
                    .await
                    .expect("doc")
                    .try_get("doc")
                    .expect("doc");
                let d: Value = serde_json::from_str(&doc).expect("json");
                if step_status(&d, 1) != "pending" {
                    step = Some(clicked.elapsed());
                }
            }
            if edit.is_none() && c.slack.top_level(OPS).into_iter().find(|m| m.ts == msg.ts).is_some_and(|m| m.versions.len() > versions) {
                edit = Some(clicked.elapsed());
            }
            assert!(clicked.elapsed() < Duration::from_secs(60), "{service}: no step start or edit within 60 s of the click");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        to_step.extend(step);
        to_edit.extend(edit);
    }
    println!(
        "click → step start: p50 {} p99 {}; click → first edit: p50 {} p99 {} (30 clicks, each on another replica than the last)",
        ms(pct(&mut to_step, 0.5)),
        ms(pct(&mut to_step, 0.99)),
        ms(pct(&mut to_edit, 0.5)),
        ms(pct(&mut to_edit, 0.99))
    );

    // D. Storm: 100 executions of a 1 s step, in 10 channels, Slack limiting chat.update and
    // chat.postMessage to 50 calls a second each. Lag: from the state change in the store to
    // the message showing it.
    c.slack.limit("chat.update", 50, Duration::from_secs(1));
    c.slack.limit("chat.postMessage", 50, Duration::from_secs(1));
    let before_429 = c.slack.calls().iter().filter(|x| x.status == 429).count();
    let t = Instant::now();
    for i in 0..100 {
        let channel = format!("C0STORM{}", i % 10);
        let (body, _) = c.slack.command_form(ALICE, &channel, "/ops", &format!("run storm s{}", 300 + i));
        assert_eq!(c.signed("/slack/commands", &body).await, 200);
    }
    let mut seen: std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>> = Default::default();
    let mut conn = sqlx::PgConnection::connect(&db).await.expect("connect");
    while seen.len() < 100 {
        let now = chrono::Utc::now();
        for m in (0..10).flat_map(|k| c.slack.top_level(&format!("C0STORM{k}"))) {
            if m.text().contains("Succeeded")
                && let Some(s) = m.text().split_whitespace().find(|w| w.starts_with('s') && w[1..].parse::<u32>().is_ok())
            {
                seen.entry(s.to_string()).or_insert(now);
            }
        }
        assert!(t.elapsed() < Duration::from_secs(600), "the storm did not finish in 10 min ({} of 100 shown final)", seen.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lags = Vec::new();
    for (service, shown) in &seen {
        let doc: String = sqlx::query("SELECT doc FROM executions WHERE target_name = $1")
            .bind(service)
            .fetch_one(&mut conn)
            .await
            .expect("doc")
            .try_get("doc")
            .expect("doc");
        let d: Value = serde_json::from_str(&doc).expect("json");
        let finished: chrono::DateTime<chrono::Utc> = d["finished_at"].as_str().and_then(|s| s.parse().ok()).expect("finished_at");
        lags.push((*shown - finished).to_std().unwrap_or(Duration::ZERO));
    }
    let refused = c.slack.calls().iter().filter(|x| x.status == 429).count() - before_429;
    let p99 = pct(&mut lags, 0.99);
    println!(
        "storm of 100: final state shown p50 {} p99 {} max {} after it was stored (target ≤ 1.1 s: {}); {refused} × 429 (target 0: {}); {:.1} s in all",
        ms(pct(&mut lags, 0.5)),
        ms(p99),
        ms(pct(&mut lags, 1.0)),
        if p99 <= Duration::from_millis(1100) { "PASS" } else { "FAIL" },
        if refused == 0 { "PASS" } else { "FAIL" },
        t.elapsed().as_secs_f64()
    );
}
