//! Operating runbot, with the real process: `/metrics` counts what happened (and parses as
//! Prometheus and OpenMetrics text, every family with HELP and TYPE), JSON logs carry the execution id and never a secret, and SIGTERM shuts
//! down cleanly mid-step — the next start applies the crash-safety rules.

use crate::common::{Runbot, button, free_port, text, until};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Parses `/metrics` twice: with `prometheus-parse` (a Prometheus text parser, as a scraper
/// reads it: every line must parse and every sample's family must have a `# HELP`), and
/// strictly line by line as OpenMetrics text: every sample belongs to a family with `# HELP`
/// and `# TYPE` before it (a counter's samples end in `_total`, a histogram's in `_bucket`,
/// `_sum`, `_count`), label values are quoted, and `# EOF` ends it. Returns the samples by
/// `name{labels}`, labels sorted by name.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse reads /metrics");
    assert!(!scrape.samples.is_empty(), "no samples:\n{text}");
    let family_of =
        |name: &str| -> String { ["_total", "_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name).to_string() };
    for s in &scrape.samples {
        assert!(scrape.docs.contains_key(&family_of(&s.metric)) || scrape.docs.contains_key(&s.metric), "no # HELP for {}:\n{text}", s.metric);
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    let mut ended = false;
    for line in text.lines() {
        assert!(!ended, "text after # EOF: {line}");
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line: {line}"));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "bad type: {line}");
            assert!(helps.contains(name), "# TYPE without # HELP before it: {line}");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("bad HELP line: {line}"));
            assert!(!help.trim().is_empty(), "empty help: {line}");
            helps.insert(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "a comment that is neither HELP, TYPE nor EOF: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value is not a number: {line}"));
        let (name, mut pairs) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let pairs: Vec<&str> = split_labels(labels);
                for pair in &pairs {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label {pair}: {line}"));
                    assert!(!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad label name {k}: {line}");
                    assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'), "label value not quoted: {line}");
                }
                (name, pairs)
            }
            None => (series, Vec::new()),
        };
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad metric name: {line}");
        let typed =
            |suffixes: &[&str], kind: &str| suffixes.iter().find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == kind)));
        let family = typed(&["_total"], "counter").or_else(|| typed(&["_bucket", "_sum", "_count"], "histogram")).unwrap_or(name);
        let kind = types.get(family).unwrap_or_else(|| panic!("no # TYPE line before {line}"));
        assert!(kind != "counter" || name.ends_with("_total"), "a counter sample without _total: {line}");
        pairs.sort();
        let key = if pairs.is_empty() { name.to_string() } else { format!("{name}{{{}}}", pairs.join(",")) };
        samples.insert(key, value);
    }
    assert!(ended, "no # EOF at the end:\n{text}");
    samples
}

/// Splits `a="x",b="y"` at the commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

async fn metrics(bot: &Runbot) -> (String, HashMap<String, f64>) {
    let r = bot.get("/metrics").await;
    assert_eq!(r.status(), 200, "GET /metrics");
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ct.starts_with("application/openmetrics-text; version=1.0.0"), "content type: {ct}");
    let body = r.text().await.expect("metrics body");
    let parsed = parse_prometheus(&body);
    (body, parsed)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_commands_approvals_executions_chat_calls_and_quota_refusals() {
    let root = tempfile::tempdir().expect("tempdir");
    let bot = Runbot::demo(&root.path().join("state"), &root.path().join("runbot.log")).await;

    let reply = bot.command("console:alice", "ops", "/ops run cache-flush promotions").await;
    assert!(text(&reply).contains("R-1 created"), "{reply}");
    let reply = bot.command("console:alice", "ops", "/ops frobnicate").await;
    assert!(!text(&reply).contains("created"), "{reply}");
    let reply = bot.command("console:carol", "ops", "/ops run cache-flush nowhere").await;
    assert!(!text(&reply).contains("created"), "{reply}");

    // Approve once the button is there, then wait for the end.
    let mut approved = false;
    until("R-1 succeeded", 30, async || {
        let Some(m) = bot.status("inc-prod", "R-1").await else { return false };
        if let Some(b) = button(&m, "approve").filter(|_| !approved) {
            let r = bot.click("console:bob", &m, &b).await;
            assert!(text(&r).contains("approved"), "{r}");
            approved = true;
        }
        text(&m["message"]).contains("Succeeded")
    })
    .await;
    // The final edit is delivered by the publisher; wait until it was counted.
    until("the final edit counted", 10, async || {
        let (_, m) = metrics(&bot).await;
        m.get("runbot_executions_total{runbook=\"cache-flush\",state=\"succeeded\"}") == Some(&1.0)
    })
    .await;

    // Over the per-identity quota (20 a minute, burst 20): the 21st is refused.
    let mut refused = 0;
    for _ in 0..21 {
        let r = bot.command("console:bob", "quota", "/ops whoami").await;
        if text(&r).contains("faster than the configured limit") {
            refused += 1;
        }
    }
    assert_eq!(refused, 1, "exactly one command over the quota");

    let (body, m) = metrics(&bot).await;
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no sample {k} in:\n{body}"));
    assert_eq!(get("runbot_commands_total{outcome=\"ok\"}"), 21.0, "the run and 20 whoami:\n{body}");
    assert_eq!(get("runbot_commands_total{outcome=\"parse_error\"}"), 1.0, "{body}");
    assert_eq!(get("runbot_commands_total{outcome=\"refused\"}"), 1.0, "{body}");
    assert_eq!(get("runbot_commands_total{outcome=\"rate_limited\"}"), 1.0, "{body}");
    assert_eq!(get("runbot_rate_limited_total{scope=\"identity\"}"), 1.0, "{body}");
    assert_eq!(get("runbot_approvals_total{decision=\"approve\"}"), 1.0, "{body}");
    assert_eq!(get("runbot_executions_total{runbook=\"cache-flush\",state=\"succeeded\"}"), 1.0, "{body}");
    assert!(get("runbot_chat_calls_total{platform=\"console\",result=\"ok\"}") >= 2.0, "{body}");
    // Three command steps ran (the approval is not a step run).
    assert_eq!(get("runbot_step_duration_seconds_count{kind=\"command\"}"), 3.0, "{body}");
    assert_eq!(get("runbot_step_duration_seconds_bucket{kind=\"command\",le=\"+Inf\"}"), 3.0, "{body}");
    assert!(body.contains("# TYPE runbot_step_duration_seconds histogram\n"), "{body}");
    assert!(body.contains("# HELP runbot_commands Typed commands by outcome.\n# TYPE runbot_commands counter\n"), "{body}");
}

const SECRET: &str = "s3cr3t-Zq9-marmalade-7781";

/// A `runbot serve` config in `dir` listening on `port`, with a secret from the environment and
/// two runbooks: `leak` echoes the secret (through env) and `slow` sleeps `sleep` seconds.
fn write_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    crate::common::serve_config(
        dir,
        port,
        "operate-test",
        "lease_secs = 3",
        &format!("[secrets]\napi_token = \"env:RUNBOT_TEST_API_TOKEN\"\n[services.alpha.environments.prod.vars]\nmarker = \"{d}/alpha.log\""),
    );
    std::fs::write(
        dir.join("runbooks.toml"),
        r#"
[runbooks.leak]
summary = "prints a secret (redacted everywhere)"
target = "service"
mutating = false
[[runbooks.leak.steps]]
name = "Use the token"
kind = "command"
idempotent = true
argv = ["sh", "-c", "echo token is $TOKEN; echo done"]
env = { TOKEN = "{secret.api_token}" }

[runbooks.slow]
summary = "append a line to the marker, then work for a while"
target = "service"
[[runbooks.slow.steps]]
name = "Approval"
kind = "approval"
[[runbooks.slow.steps]]
name = "Slow work"
kind = "command"
idempotent = false
argv = ["sh", "-c", "echo ran >> {marker}; sleep 3"]
"#,
    )
    .expect("write runbooks");
    dir.join("runbot.toml")
}

async fn serve(config: &Path, port: u16, log: &Path, json_logs: bool) -> Runbot {
    let mut args: Vec<OsString> = Vec::new();
    if json_logs {
        args.push("--log-json".into());
    }
    args.extend(["serve".into(), "--config".into(), config.as_os_str().to_owned()]);
    Runbot::spawn_with(args, &[("RUNBOT_TEST_API_TOKEN", SECRET)], port, log).await
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_execution_id_and_never_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let log = dir.path().join("runbot.log");
    let bot = serve(&config, port, &log, true).await;

    let reply = bot.command("console:alice", "ops", "/ops run leak alpha").await;
    assert!(text(&reply).contains("R-1 created"), "{reply}");
    until("R-1 succeeded", 30, async || bot.status("ops", "R-1").await.is_some_and(|m| text(&m["message"]).contains("Succeeded"))).await;
    // The step output (redacted) reached the thread.
    until("the step output in the thread", 10, async || bot.messages("ops").await.iter().any(|m| m.to_string().contains("token is ***"))).await;

    let messages = bot.get("/console/api/messages?channel=ops").await.text().await.expect("messages");
    assert!(!messages.contains(SECRET), "the secret is in a console message: {messages}");
    assert!(messages.contains("***"), "{messages}");

    let status = bot.terminate();
    assert!(status.success(), "{status}");
    let logs = std::fs::read_to_string(&log).expect("log file");
    assert!(!logs.contains(SECRET), "the secret is in the log:\n{logs}");
    let history = std::fs::read_to_string(dir.path().join("console.jsonl")).unwrap_or_default();
    assert!(!history.contains(SECRET), "the secret is in the console history");

    let lines: Vec<serde_json::Value> =
        logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))).collect();
    let about_steps: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["fields"]["message"].as_str().is_some_and(|m| m.starts_with("step "))).collect();
    assert!(about_steps.len() >= 2, "step started/finished lines:\n{logs}");
    for l in &about_steps {
        let s = l.to_string();
        assert!(s.contains("\"execution\":\"R-1\""), "a step log line without the execution id: {s}");
        assert_eq!(l["span"]["execution"], "R-1", "the driving span: {s}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_step_exits_cleanly_and_the_next_start_asks_resume_or_abort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let marker = dir.path().join("alpha.log");
    let bot = serve(&config, port, &dir.path().join("runbot-1.log"), false).await;

    let reply = bot.command("console:alice", "ops", "/ops run slow alpha").await;
    assert!(text(&reply).contains("R-1 created"), "{reply}");
    until("the approve button", 10, async || bot.status("ops", "R-1").await.is_some_and(|m| button(&m, "approve").is_some())).await;
    let m = bot.status("ops", "R-1").await.expect("status");
    let status_id = m["id"].clone();
    let r = bot.click("console:bob", &m, &button(&m, "approve").expect("approve")).await;
    assert!(text(&r).contains("running"), "{r}");
    until("the slow step started", 10, async || std::fs::read_to_string(&marker).is_ok_and(|s| s.lines().count() == 1)).await;

    // SIGTERM while the step sleeps: a clean, bounded exit.
    let t = Instant::now();
    let status = bot.terminate_within(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the port still accepts connections");

    // The next start: the non-idempotent step waits for a person, in the same status message.
    let bot = serve(&config, port, &dir.path().join("runbot-2.log"), false).await;
    until("R-1 offers Resume", 20, async || bot.status("ops", "R-1").await.is_some_and(|m| button(&m, "resume").is_some())).await;
    let m = bot.status("ops", "R-1").await.expect("status");
    assert_eq!(m["id"], status_id, "the status message survived the restart");
    assert!(text(&m["message"]).contains("Resume or Abort"), "{m}");
    assert_eq!(std::fs::read_to_string(&marker).expect("marker").lines().count(), 1, "not repeated without consent");

    let r = bot.click("console:alice", &m, &button(&m, "resume").expect("resume")).await;
    assert!(text(&r).contains("Resuming"), "{r}");
    until("R-1 succeeded", 30, async || bot.status("ops", "R-1").await.is_some_and(|m| text(&m["message"]).contains("Succeeded"))).await;
    assert_eq!(std::fs::read_to_string(&marker).expect("marker").lines().count(), 2, "resumed once");
    let status = bot.terminate();
    assert!(status.success(), "{status}");
}

/// `/readyz` is ready only when commands can arrive: with no chat adapter it says so (503);
/// with Slack Socket Mode it waits for the connection, naming the adapters once ready, and
/// says "not connected" while Slack cannot be reached.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_needs_a_chat_adapter_and_a_live_socket_mode_connection() {
    let root = tempfile::tempdir().expect("tempdir");
    let slack = runbot_sandbox::slack::FakeSlack::start("xoxb-ready", "xapp-ready").await.expect("fake Slack");
    let start = async |name: &str, extra: &str| {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).expect("dir");
        let port = free_port();
        let config = dir.join("runbot.toml");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}/state.db\"\n[console]\nenabled = false\n{extra}",
            dir.display()
        );
        std::fs::write(&config, text).expect("config");
        let args: Vec<OsString> = vec!["serve".into(), "--config".into(), config.into()];
        Runbot::spawn_with(args, &[("RUNBOT_TEST_SLACK_BOT", "xoxb-ready"), ("RUNBOT_TEST_SLACK_APP", "xapp-ready")], port, &dir.join("log")).await
    };
    let socket =
        |api: &str| format!("[slack]\nbot_token = \"env:RUNBOT_TEST_SLACK_BOT\"\napp_token = \"env:RUNBOT_TEST_SLACK_APP\"\napi_url = \"{api}\"\n");
    let ready = async |bot: &Runbot| {
        let r = bot.get("/readyz").await;
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };

    let none = start("none", "").await;
    let (code, body) = ready(&none).await;
    assert_eq!((code, body.contains("no chat adapter receives commands")), (503, true), "{body}");

    let dead = start("dead", &socket(&format!("http://127.0.0.1:{}/api", free_port()))).await;
    let (code, body) = ready(&dead).await;
    assert_eq!((code, body.as_str()), (503, "Slack Socket Mode is not connected"));

    let live = start("live", &socket(&slack.api_url())).await;
    until("ready once Socket Mode is connected", 20, async || ready(&live).await.0 == 200).await;
    assert_eq!(ready(&live).await.1, "ready: store, slack (Socket Mode)");
}
