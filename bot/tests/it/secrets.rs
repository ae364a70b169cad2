//! Secrets and parameters, with the real process: a distinctive canary secret is pushed through
//! a command step (stdout, stderr, a prefix printed alone, a failure), a `--set` parameter (as
//! a `{secret.NAME}` placeholder and as the value itself), and then every sink is grepped for it
//! — text and JSON logs, the chat, the store, `runbot audit export`, `/metrics`, `runbot
//! artifacts export`, `runbot check-config` — for the whole value and any 8 characters of it.
//! And parameters are values, not paths: `..` is refused, a declared path parameter stays
//! under its root, symbolic links included.

use crate::common::{Runbot, free_port, text, until};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const CANARY: &str = "canary-7Qx9mZ4tLp2Vw8Kd3R";
const CANARY_ENV: &str = "RUNBOT_TEST_CANARY";

/// A second secret with characters JSON and Debug formatting escape (`"` and `\\`).
const QUOTED: &str = r#"qu"ot\ed-Lm3Np8Rs"#;
const QUOTED_ENV: &str = "RUNBOT_TEST_QUOTED";

/// The pieces of a secret a leak would show: every 8-character run of it as it is, and as JSON
/// or Debug formatting escapes it.
fn leaks_of(secret: &str, text: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).expect("JSON string");
    let debug = format!("{secret:?}");
    let forms = [secret, &json[1..json.len() - 1], &debug[1..debug.len() - 1]];
    let mut found: Vec<String> = Vec::new();
    for form in forms {
        let chars: Vec<char> = form.chars().collect();
        for w in chars.windows(8).map(|w| w.iter().collect::<String>()) {
            if text.contains(w.as_str()) && !found.contains(&w) {
                found.push(w);
            }
        }
    }
    found
}

/// What of either secret `text` shows.
fn leaks(text: &str) -> Vec<String> {
    let mut found = leaks_of(CANARY, text);
    found.extend(leaks_of(QUOTED, text));
    found
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    crate::common::serve_config(
        dir,
        port,
        "secrets-test",
        "",
        &format!(
            "[secrets]\ncanary = \"env:{CANARY_ENV}\"\nquoted = \"env:{QUOTED_ENV}\"\n[services.alpha.environments.prod.vars]\nreports = \"{d}/reports\""
        ),
    );
    std::fs::write(
        dir.join("runbooks.toml"),
        r#"
[runbooks.echoes]
summary = "uses the canary every way a command step can"
target = "service"
mutating = false
[[runbooks.echoes.steps]]
name = "Print it"
kind = "command"
idempotent = true
argv = ["sh", "-c", "echo out:$TOKEN; echo err:$TOKEN >&2; echo half:$(printf %s \"$TOKEN\" | cut -c1-12); echo tail:$(printf %s \"$TOKEN\" | cut -c13-)"]
env = { TOKEN = "{secret.canary}" }
[[runbooks.echoes.steps]]
name = "Fail with it"
kind = "command"
idempotent = true
argv = ["sh", "-c", "echo err:$TOKEN >&2; printf '%s\\n' \"quoted:$QUOTED\" >&2; exit 3"]
env = { TOKEN = "{secret.canary}", QUOTED = "{secret.quoted}" }

[runbooks.envparam]
summary = "passes a parameter to the program through env"
target = "service"
mutating = false
[runbooks.envparam.params.note]
pattern = '.*'
[[runbooks.envparam.steps]]
name = "Show the note"
kind = "command"
idempotent = true
argv = ["sh", "-c", "echo note=$NOTE"]
env = { NOTE = "{note}", TOKEN = "{secret.canary}" }

[runbooks.show]
summary = "posts a report file from the reports directory"
target = "service"
mutating = false
[runbooks.show.params.file]
help = "the report, relative to the reports directory"
[[runbooks.show.steps]]
name = "Post it"
kind = "command"
idempotent = true
cwd = "{reports}"
argv = ["cat", "{file}"]

[runbooks.showpath]
summary = "posts a report file, the path resolved by runbot"
target = "service"
mutating = false
[runbooks.showpath.params.file]
help = "the report, relative to the reports directory"
type = "path"
root = "{reports}"
[[runbooks.showpath.steps]]
name = "Post it"
kind = "command"
idempotent = true
argv = ["cat", "{file}"]
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
    Runbot::spawn_with(args, &[(CANARY_ENV, CANARY), (QUOTED_ENV, QUOTED)], port, log).await
}

/// `runbot <args>` with the canary in the environment; stdout and stderr together.
fn run_cli(args: &[&str]) -> String {
    let out = Command::new(crate::common::BIN)
        .args(args)
        .env(CANARY_ENV, CANARY)
        .env(QUOTED_ENV, QUOTED)
        .env_remove("RUNBOT_LOG_JSON")
        .output()
        .expect("run runbot");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The id in a `R-N created` reply.
fn created(reply: &Value) -> String {
    let t = text(reply);
    let id = t.split_whitespace().find(|w| w.starts_with("R-")).unwrap_or_else(|| panic!("no execution created: {reply}"));
    id.trim_end_matches(|c: char| !c.is_ascii_digit()).to_string()
}

async fn wait_state(bot: &Runbot, id: &str, state: &str) {
    until(&format!("{id} {state}"), 30, async || bot.status("ops", id).await.is_some_and(|m| text(&m["message"]).contains(state))).await;
}

/// Everything the console holds, as one text.
async fn chat(bot: &Runbot) -> String {
    bot.messages("ops").await.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("\n")
}

/// Drives the canary through every path once; returns the replies (they are a sink too) and
/// what did not behave.
async fn drive(bot: &Runbot) -> (String, Vec<String>) {
    let (mut replies, mut wrong) = (String::new(), Vec::new());
    let r = bot.command("console:alice", "ops", "/ops run echoes alpha").await;
    replies.push_str(&r.to_string());
    let echoes = created(&r);
    wait_state(bot, &echoes, "Failed").await;

    // A parameter naming a secret reaches the program as the text typed, not the secret.
    let r = bot.command("console:alice", "ops", "/ops run envparam alpha --set note={secret.canary}").await;
    replies.push_str(&r.to_string());
    let envparam = created(&r);
    wait_state(bot, &envparam, "Succeeded").await;
    // The thread (not the status message, which quotes the command) shows what the program got.
    let thread = async || -> String {
        bot.messages("ops").await.iter().filter(|m| !m["thread"].is_null()).map(|m| m.to_string()).collect::<Vec<_>>().join("\n")
    };
    until("the note in the thread", 10, async || thread().await.contains("note=")).await;
    if !thread().await.contains("note={secret.canary}") {
        wrong.push(format!("the program did not get the literal {{secret.canary}}: {}", thread().await));
    }

    // The secret itself, or part of it, typed as a parameter: refused, stored nowhere.
    for typed in [CANARY.to_string(), format!("x{}", &CANARY[3..14])] {
        let r = bot.command("console:alice", "ops", &format!("/ops run envparam alpha --set note={typed}")).await;
        if !text(&r).contains("holds (part of) a configured secret") {
            wrong.push(format!("a typed secret was not refused: {r}"));
        }
        replies.push_str(&r.to_string());
    }
    // The step output reached the thread, redacted.
    until("the output in the thread", 10, async || chat(bot).await.contains("tail:")).await;
    let c = chat(bot).await;
    for redacted in ["out:***", "half:***", "tail:***"] {
        if !c.contains(redacted) {
            wrong.push(format!("the thread lacks {redacted}"));
        }
    }
    (replies, wrong)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_secret_reaches_no_sink_whole_or_in_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let cfg = config.to_str().expect("utf-8 path");
    let mut sinks: Vec<(String, String)> = Vec::new();

    // Text logs.
    let log = dir.path().join("text.log");
    let bot = serve(&config, port, &log, false).await;
    let (replies, mut wrong) = drive(&bot).await;
    sinks.push(("replies (text run)".into(), replies));
    sinks.push(("chat (text run)".into(), chat(&bot).await));
    let status = bot.terminate();
    assert!(status.success(), "{status}");
    let text_log = std::fs::read_to_string(&log).expect("text log");
    assert!(text_log.contains("step finished") && text_log.contains("quoted:***"), "the failure is logged, redacted:\n{text_log}");
    sinks.push(("text log".into(), text_log));

    // JSON logs, and /metrics.
    let log = dir.path().join("json.log");
    let bot = serve(&config, port, &log, true).await;
    let (replies, more) = drive(&bot).await;
    wrong.extend(more);
    sinks.push(("replies (JSON run)".into(), replies));
    sinks.push(("chat (JSON run)".into(), chat(&bot).await));
    sinks.push(("/metrics".into(), bot.get("/metrics").await.text().await.expect("metrics")));
    let status = bot.terminate();
    assert!(status.success(), "{status}");
    let json_log = std::fs::read_to_string(&log).expect("JSON log");
    assert!(
        json_log.lines().any(|l| l.contains("step finished") && l.contains("exit code 3: err:*** | quoted:***")),
        "the failure is logged, redacted:\n{json_log}"
    );
    sinks.push(("JSON log".into(), json_log));

    // The store: every file of the SQLite database, raw.
    for entry in std::fs::read_dir(dir.path()).expect("read dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("state.db") {
            let bytes = std::fs::read(entry.path()).expect("read store file");
            sinks.push((format!("store file {name}"), String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    sinks.push(("console history".into(), std::fs::read_to_string(dir.path().join("console.jsonl")).unwrap_or_default()));

    // The command line: audit export, artifacts export, check-config (good and broken).
    let audit = run_cli(&["audit", "export", "--config", cfg]);
    assert!(audit.contains("\"kind\":\"step\""), "the audit export has the steps: {audit}");
    sinks.push(("audit export".into(), audit));
    let out = dir.path().join("artifacts");
    for id in ["R-1", "R-2", "R-3", "R-4"] {
        sinks.push((format!("artifacts export {id}"), run_cli(&["artifacts", "export", "--config", cfg, id, "--out", out.to_str().expect("utf-8")])));
    }
    sinks.push(("check-config".into(), run_cli(&["check-config", cfg])));
    // A problem that quotes what it found (here an env name) quotes no secret.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, format!("[secrets]\ncanary = \"env:{CANARY_ENV}\"\n[engine]\nrunbooks = \"broken-runbooks.toml\"\n")).expect("write");
    std::fs::write(
        dir.path().join("broken-runbooks.toml"),
        format!("[runbooks.b]\nsummary = \"b\"\ntarget = \"service\"\nmutating = false\n[[runbooks.b.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\nenv = {{ \"{CANARY}\" = \"x\" }}\n"),
    )
    .expect("write");
    let problems = run_cli(&["check-config", broken.to_str().expect("utf-8")]);
    assert!(problems.contains("is not a valid variable name"), "check-config reports the env name: {problems}");
    sinks.push(("check-config problems".into(), problems));

    let mut found: Vec<String> = sinks
        .iter()
        .filter_map(|(sink, text)| {
            let l = leaks(text);
            (!l.is_empty()).then(|| format!("{sink}: {l:?}"))
        })
        .collect();
    found.extend(wrong);
    assert!(found.is_empty(), "the canary (or 8 characters of it) leaked into:\n{}", found.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_are_values_and_a_path_parameter_stays_under_its_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(reports.join("sub")).expect("mkdir");
    std::fs::write(reports.join("sub/ok.txt"), "report-inside-ok\n").expect("write");
    std::fs::write(dir.path().join("outside.txt"), "OUTSIDE-THE-ROOT\n").expect("write");
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), reports.join("link")).expect("symlink");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let log = dir.path().join("runbot.log");
    let bot = serve(&config, port, &log, false).await;

    // The repro: a read-only runbook posting a file named by a parameter.
    for (value, why) in [
        ("sub/../../outside.txt", "may not contain a '..' segment"),
        ("sub/..", "may not contain a '..' segment"),
        ("-n", "must match"),
        ("/etc/hostname", "must match"),
    ] {
        let r = bot.command("console:alice", "ops", &format!("/ops run show alpha --set file={value}")).await;
        assert!(text(&r).contains(why), "file={value}: {r}");
        assert!(!text(&r).contains("created"), "file={value} started an execution: {r}");
    }
    let r = bot.command("console:alice", "ops", "/ops run show alpha --set file=sub/ok.txt").await;
    let id = created(&r);
    wait_state(&bot, &id, "Succeeded").await;

    // A declared path: resolved under the root, `..` allowed while it stays inside.
    let r = bot.command("console:alice", "ops", "/ops run showpath alpha --set file=sub/../sub/ok.txt").await;
    let id = created(&r);
    wait_state(&bot, &id, "Succeeded").await;
    let canonical = std::fs::canonicalize(reports.join("sub/ok.txt")).expect("canonical");
    let plan = bot.command("console:alice", "ops", "/ops run showpath alpha --set file=sub/../sub/ok.txt --dry-run").await.to_string();
    assert!(
        plan.contains(&format!("run [\\\"cat\\\", \\\"{}\\\"]", canonical.display())),
        "the plan shows the resolved path {}: {plan}",
        canonical.display()
    );
    for (value, why) in [("sub/../../outside.txt", "is outside"), ("link", "is outside"), ("missing.txt", "does not name anything")] {
        let r = bot.command("console:alice", "ops", &format!("/ops run showpath alpha --set file={value}")).await;
        assert!(text(&r).contains(why), "file={value}: {r}");
    }
    until("both reports posted", 10, async || chat(&bot).await.matches("report-inside-ok").count() >= 2).await;
    assert!(!chat(&bot).await.contains("OUTSIDE-THE-ROOT"), "a file outside the root reached the chat");
    let status = bot.terminate();
    assert!(status.success(), "{status}");
}
