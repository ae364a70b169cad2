//! The web console end to end against the real `runbot demo`: the page and its test hooks, the
//! state API, the SSE stream of one status message being posted and then edited through an
//! approval until it succeeds, dry runs that change nothing, and the requests it refuses.

use crate::common::{Events, Runbot, button, text};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A demo in a fresh state directory (kept alive by the returned `TempDir`).
async fn demo() -> (Runbot, tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let state = root.path().join("state");
    let bot = Runbot::demo(&state, &root.path().join("runbot.log")).await;
    let state = std::fs::canonicalize(&state).expect("state dir");
    (bot, root, state)
}

fn cache_files(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state.join("cache/promotions"))
        .expect("cache dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const DEMO_FILES: [&str; 3] = ["page-1.bin", "page-2.bin", "page-3.bin"];

#[tokio::test(flavor = "multi_thread")]
async fn page_state_and_health_endpoints() {
    let (bot, _root, _state) = demo().await;

    let r = bot.get("/console").await;
    assert_eq!(r.status(), 200);
    let ct = r.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(ct, "text/html; charset=utf-8");
    let page = r.text().await.expect("page");
    for hook in ["command-input", "identity-select"] {
        assert!(page.contains(&format!("data-testid=\"{hook}\"")), "the page lacks data-testid={hook}");
    }

    let st: Value = bot.get("/console/api/state").await.json().await.expect("state JSON");
    assert_eq!(st["identities"], json!(["console:alice", "console:bob", "console:carol"]), "{st}");
    assert_eq!(st["pick"], json!(true), "the demo's console offers its identity picker: {st}");
    let channels: Vec<&str> = st["channels"].as_array().expect("channels").iter().filter_map(|c| c.as_str()).collect();
    assert!(channels.contains(&"ops") && channels.contains(&"inc-prod"), "{st}");
    assert_eq!(st["default_channel"], "ops");

    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready: store, console")] {
        let r = bot.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.expect("body"), body, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_flow_streams_one_status_message_and_its_edits_until_succeeded() {
    let (bot, _root, state) = demo().await;
    assert_eq!(cache_files(&state), DEMO_FILES, "the demo starts with cache files");
    let mut events = Events::connect(&bot).await;

    let reply = bot.command("console:alice", "ops", "/ops run cache-flush promotions").await;
    assert!(text(&reply).contains("R-1 created"), "{reply}");

    // Follow the stream: one post of R-1's status message, then edits of that same message.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status_id: Option<String> = None;
    let mut edits_seen: Vec<u64> = Vec::new();
    let mut approved = false;
    let last = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = events.next(left).await else {
            panic!("no Succeeded status within 20 s; edits seen: {edits_seen:?}");
        };
        let is_status = m["thread"].is_null() && m["message"]["title"].as_str().is_some_and(|t| t.starts_with("R-1 "));
        if !is_status {
            // Step output goes into the status message's thread.
            if let Some(id) = &status_id {
                assert_eq!(m["thread"].as_str(), Some(id.as_str()), "other messages are replies to the status: {m}");
            }
            continue;
        }
        let edits = m["edits"].as_u64().expect("edits");
        match &status_id {
            None => {
                assert_eq!(edits, 0, "the first event for the status message is its post: {m}");
                assert_eq!(m["channel"], "inc-prod", "prod's incident channel: {m}");
                status_id = Some(m["id"].as_str().expect("id").to_string());
            }
            Some(id) => {
                assert_eq!(m["id"].as_str(), Some(id.as_str()), "a second status message was posted: {m}");
                assert!(edits > *edits_seen.last().expect("seen"), "edits must increase: {edits} after {edits_seen:?}");
            }
        }
        edits_seen.push(edits);
        if text(&m["message"]).contains("Succeeded") {
            break m;
        }
        if !approved && let Some(b) = button(&m, "approve") {
            let r = bot.click("console:bob", &m, &b).await;
            assert!(text(&r).contains("approved"), "{r}");
            approved = true;
        }
    };
    assert!(approved, "the approve button was offered before the run succeeded");
    assert!(edits_seen.len() >= 3, "a post and at least two edits: {edits_seen:?}");
    assert!(button(&last, "approve").is_none(), "no approve button on a finished run: {last}");
    let steps = last["message"]["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|s| s["status"] == "succeeded"), "{last}");

    // The API agrees with the stream, and the cache was really flushed.
    let api = bot.status("inc-prod", "R-1").await.expect("R-1 in the channel");
    assert_eq!(api["id"], last["id"]);
    assert_eq!(api["edits"], last["edits"]);
    assert!(cache_files(&state).is_empty(), "cache files left: {:?}", cache_files(&state));
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_shows_the_delete_argv_and_changes_nothing() {
    let (bot, _root, state) = demo().await;
    let reply = bot.command("console:alice", "ops", "/ops run cache-flush promotions --dry-run").await;
    assert!(text(&reply).contains("Dry run — nothing was changed"), "{reply}");
    let plan = reply["code"].as_str().expect("the plan is a code block");
    let cache = state.join("cache/promotions");
    let delete_argv = format!(r#"["find", "{}", "-mindepth", "1", "-type", "f", "-print", "-delete"]"#, cache.display());
    let delete_line = plan.lines().find(|l| l.contains("Delete cached files")).unwrap_or_else(|| panic!("no delete step in:\n{plan}"));
    assert!(delete_line.contains(&delete_argv), "the delete step shows its exact argv:\n{plan}");

    // Nothing ran and nothing was posted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cache_files(&state), DEMO_FILES);
    assert!(bot.messages("inc-prod").await.is_empty());
    assert!(bot.messages("ops").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_strangers_foreign_hosts_and_non_json_and_explains_bad_commands() {
    let (bot, _root, _state) = demo().await;
    let ok = json!({"identity": "console:alice", "channel": "ops", "text": "/ops help"});

    // Sanity: the same request is accepted as is.
    assert_eq!(bot.post_raw("command", &ok).await.status(), 200);

    let stranger = json!({"identity": "console:mallory", "channel": "ops", "text": "/ops help"});
    assert_eq!(bot.post_raw("command", &stranger).await.status(), 403, "an identity not offered by the console");
    let click = json!({"identity": "console:mallory", "channel": "ops", "message_id": "1", "action_id": "approve", "value": "R-1|approve|0"});
    assert_eq!(bot.post_raw("action", &click).await.status(), 403, "a click by an identity not offered by the console");

    for api in ["command", "action"] {
        let r = bot
            .http
            .post(bot.url(&format!("/console/api/{api}")))
            .header(reqwest::header::HOST, "evil.example")
            .json(&ok)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 403, "{api} addressed to a foreign host");
    }

    let r = bot
        .http
        .post(bot.url("/console/api/command"))
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .body(ok.to_string())
        .send()
        .await
        .expect("post");
    assert!(r.status().is_client_error(), "non-JSON content type: {}", r.status());

    let unknown_field = json!({"identity": "console:alice", "channel": "ops", "text": "/ops help", "as_admin": true});
    assert!(bot.post_raw("command", &unknown_field).await.status().is_client_error(), "unknown fields are refused");

    let bad_channel = json!({"identity": "console:alice", "channel": "ops/../x", "text": "/ops help"});
    assert_eq!(bot.post_raw("command", &bad_channel).await.status(), 400);

    for malformed in ["/ops run", "/ops run cache-flush"] {
        let reply = bot.command("console:alice", "ops", malformed).await;
        assert!(text(&reply).contains("Usage:"), "{malformed:?}: {reply}");
    }
}

/// The newcomer's path: the demo's sandbox cluster has one pod failing its liveness probe;
/// `/ops restart promotions-api` diagnoses exactly that pod, bob approves, it is replaced and
/// every pod is Ready; a second restart finds nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn demo_restart_heals_the_pod_failing_liveness() {
    let (bot, _root, _state) = demo().await;
    let reply = bot.command("console:alice", "ops", "/ops restart promotions-api").await;
    assert!(text(&reply).contains("R-1 created"), "{reply}");
    crate::common::until("R-1 offers Approve", 20, async || bot.status("inc-prod", "R-1").await.is_some_and(|m| button(&m, "approve").is_some()))
        .await;
    let m = bot.status("inc-prod", "R-1").await.expect("status");
    let acts_on = m["message"]["fields"].as_array().and_then(|f| f.iter().find(|kv| kv[0] == "Acts on")).map(|kv| kv[1].clone());
    let pod = acts_on.and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| panic!("no 'Acts on' field: {m}"));
    assert!(pod.starts_with("promotions-api-"), "{pod}");
    let diagnosis = m["message"]["steps"][0]["detail"].as_str().unwrap_or_default().to_string();
    assert!(diagnosis.contains("1 of 3 pods unhealthy") && diagnosis.contains("Unhealthy"), "{diagnosis}");

    let r = bot.click("console:bob", &m, &button(&m, "approve").expect("approve")).await;
    assert!(text(&r).contains("approved"), "{r}");
    crate::common::until("R-1 succeeded", 30, async || {
        bot.status("inc-prod", "R-1").await.is_some_and(|m| text(&m["message"]).contains("Succeeded"))
    })
    .await;
    let m = bot.status("inc-prod", "R-1").await.expect("status");
    let deleted = m["message"]["steps"][2]["detail"].as_str().unwrap_or_default();
    assert!(deleted.contains(&format!("deleted {pod}")), "{m}");

    let reply = bot.command("console:alice", "ops", "/ops restart promotions-api").await;
    assert!(text(&reply).contains("R-2 created"), "{reply}");
    crate::common::until("R-2 finds nothing to restart", 20, async || {
        bot.status("inc-prod", "R-2").await.is_some_and(|m| text(&m["message"]).contains("nothing to restart"))
    })
    .await;
}

/// The release path of the demo: `/ops deploy promotions v1.2.5` passes the preflight (the
/// sandbox registry has the tag) and the CI gate (the sandbox GitHub), bob approves from the
/// release group, runbot's own binary answers as `helm`, the pods roll to v1.2.5 and the smoke
/// test passes. Then v1.2.6 crashes on start: the deploy fails and offers [Rollback], which
/// carol approves, and v1.2.5 serves again.
#[tokio::test(flavor = "multi_thread")]
async fn demo_deploy_break_and_roll_back() {
    let (bot, _root, state) = demo().await;
    let reply = bot.command("console:alice", "ops", "/ops deploy promotions v1.2.5").await;
    assert!(text(&reply).contains("R-1 created"), "{reply}");
    crate::common::until("R-1 offers Approve", 30, async || bot.status("inc-prod", "R-1").await.is_some_and(|m| button(&m, "approve").is_some()))
        .await;
    let m = bot.status("inc-prod", "R-1").await.expect("status");
    let gate = m["message"]["steps"][1]["detail"].as_str().unwrap_or_default().to_string();
    assert!(gate.contains("CI green on main") && gate.contains("tag v1.2.5"), "{gate}");
    let r = bot.click("console:bob", &m, &button(&m, "approve").expect("approve")).await;
    assert!(text(&r).contains("approved"), "{r}");
    crate::common::until("R-1 succeeded", 120, async || {
        bot.status("inc-prod", "R-1").await.is_some_and(|m| text(&m["message"]).contains("Succeeded"))
    })
    .await;
    let m = bot.status("inc-prod", "R-1").await.expect("status");
    let steps = &m["message"]["steps"];
    assert!(steps[3]["detail"].as_str().unwrap_or_default().contains("helm upgrade succeeded"), "{m}");
    assert!(steps[4]["detail"].as_str().unwrap_or_default().contains("Ready on v1.2.5"), "{m}");
    assert!(steps[5]["detail"].as_str().unwrap_or_default().contains("200 in"), "{m}");

    let reply = bot.command("console:alice", "ops", "/ops deploy promotions v1.2.6").await;
    assert!(text(&reply).contains("R-2 created"), "{reply}");
    crate::common::until("R-2 offers Approve", 30, async || bot.status("inc-prod", "R-2").await.is_some_and(|m| button(&m, "approve").is_some()))
        .await;
    let m = bot.status("inc-prod", "R-2").await.expect("status");
    bot.click("console:bob", &m, &button(&m, "approve").expect("approve")).await;
    crate::common::until("R-2 failed with [Rollback]", 120, async || {
        bot.status("inc-prod", "R-2").await.is_some_and(|m| button(&m, "follow_up").is_some())
    })
    .await;
    let m = bot.status("inc-prod", "R-2").await.expect("status");
    assert!(text(&m["message"]).contains("Failed at step 4"), "{m}");
    let r = bot.click("console:bob", &m, &button(&m, "follow_up").expect("rollback")).await;
    assert!(text(&r).contains("R-3 created"), "{r}");
    crate::common::until("R-3 offers Approve", 30, async || bot.status("inc-prod", "R-3").await.is_some_and(|m| button(&m, "approve").is_some()))
        .await;
    let m = bot.status("inc-prod", "R-3").await.expect("status");
    let acts_on =
        m["message"]["fields"].as_array().and_then(|f| f.iter().find(|kv| kv[0] == "Acts on")).map(|kv| kv[1].to_string()).unwrap_or_default();
    assert!(acts_on.contains("version v1.2.6") && acts_on.contains("to revision 2 · version v1.2.5"), "{acts_on}");
    bot.click("console:carol", &m, &button(&m, "approve").expect("approve")).await;
    crate::common::until("R-3 succeeded", 120, async || {
        bot.status("inc-prod", "R-3").await.is_some_and(|m| text(&m["message"]).contains("Succeeded"))
    })
    .await;
    let m = bot.status("inc-prod", "R-3").await.expect("status");
    assert!(m["message"]["steps"][5]["detail"].as_str().unwrap_or_default().contains("200 in"), "smoke passes again: {m}");

    // The failed version's logs, exported from the store.
    let out = tempfile::tempdir().expect("out dir");
    let config = state.join("runbot.toml");
    let run = |id: &str| {
        std::process::Command::new(crate::common::BIN)
            .args(["artifacts", "export", "--config"])
            .arg(&config)
            .arg(id)
            .arg("--out")
            .arg(out.path())
            .output()
            .expect("runbot artifacts export")
    };
    let ok = run("R-3");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let file = out.path().join("logs-promotions-v1.2.6.txt");
    let logs = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(logs.contains("panic: config key PROMO_RULES is missing") && logs.contains("previous container"), "{logs}");
    let none = run("R-1");
    assert!(!none.status.success() && String::from_utf8_lossy(&none.stderr).contains("R-1 has no artifacts"));
    let bad = run("42");
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("is not an execution id"));
}

/// The console's Approve with its plan fingerprint removed or replaced — a hand-made
/// `/console/api/action` — is refused and approves nothing; the real button then does.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_without_the_plan_fingerprint_is_refused() {
    let (bot, _root, state) = demo().await;
    let reply = bot.command("console:alice", "ops", "/ops run cache-flush promotions").await;
    assert!(text(&reply).contains("R-1 created"), "{reply}");
    crate::common::until("R-1 waiting with an Approve button", 20, async || {
        bot.status("inc-prod", "R-1").await.is_some_and(|m| button(&m, "approve").is_some())
    })
    .await;
    let msg = bot.status("inc-prod", "R-1").await.expect("R-1");
    let real = button(&msg, "approve").expect("approve");
    let value = real["value"].as_str().expect("value").to_string();
    let (head, fp) = value.rsplit_once('|').expect("a value with a fingerprint");
    for forged in [format!("{head}|"), head.to_string(), format!("{head}|{}", "0".repeat(fp.len()))] {
        let mut b = real.clone();
        b["value"] = serde_json::Value::String(forged.clone());
        let r = bot.click("console:bob", &msg, &b).await;
        let t = text(&r);
        assert!(t.contains("carries no plan fingerprint") || t.contains("changed since that message was shown"), "{forged}: {r}");
    }
    let now = bot.status("inc-prod", "R-1").await.expect("R-1");
    assert!(text(&now["message"]).contains("Waiting for approval"), "still waiting: {now}");
    assert_eq!(cache_files(&state), DEMO_FILES, "nothing ran");
    let r = bot.click("console:bob", &msg, &real).await;
    assert!(text(&r).contains("approved"), "{r}");
}
