//! The command surface as people meet it: dry runs, quotas, malformed input, and the
//! read-only answers (status, history, whoami, help).

use runbot_tests::harness::{Options, World};

/// `--dry-run` shows every step with its exact action and changes nothing.
#[tokio::test]
async fn dry_run_lists_every_step_and_changes_nothing() {
    let world = World::new().await;
    let r = world.cmd("console:alice", "/ops run hello promotions --dry-run").await;
    assert!(r.ephemeral);
    assert!(r.message.text.contains("Dry run — nothing was changed"), "{}", r.message.text);
    let plan = r.message.code.expect("the plan as a code block");
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 3, "{plan}");
    assert_eq!(lines[0], "1. check — probe hello-check → ok");
    assert!(lines[1].starts_with("2. approve — wait for 1 approval from sre (self-approval off), expires after 30m"), "{plan}");
    assert_eq!(lines[2], r#"3. greet — run ["echo", "hello promotions"], timeout 30s"#);

    assert!(world.executions().await.is_empty(), "no execution stored");
    assert_eq!(world.probes.count("hello-check"), 0, "not even the read-only check ran");
    assert!(world.chat.posts().is_empty(), "nothing posted in the channel");
    // And the target is not locked.
    world.request("console:bob", "/ops run hello promotions").await;
}

/// Past the per-identity quota, a polite refusal that says when to try again.
#[tokio::test]
async fn per_identity_quota() {
    let world = World::with(Options { extra_config: "[limits]\nper_identity_per_minute = 2\n".into(), ..Options::default() }).await;
    for _ in 0..2 {
        let r = world.cmd("console:alice", "/ops whoami").await;
        assert!(r.message.text.starts_with("You are console:alice"), "{}", r.message.text);
    }
    let r = world.cmd("console:alice", "/ops whoami").await;
    let text = &r.message.text;
    assert!(r.ephemeral);
    let secs: u64 = text
        .split("Try again in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'Try again in N s' in: {text}"));
    assert!((1..=60).contains(&secs), "{text}");
    assert!(text.ends_with(" s."), "{text}");
    // Someone else is not affected.
    assert!(world.cmd("console:bob", "/ops whoami").await.message.text.starts_with("You are console:bob"));
    assert!(world.audit().await.iter().any(|r| r.entry.kind == "limit"));
}

/// Malformed input gets the usage line; unknown names get a specific message.
#[tokio::test]
async fn malformed_and_unknown_input() {
    let world = World::new().await;
    for bad in ["/ops deploy", "/ops frobnicate promotions", "/ops run hello", "/ops cancel 42", "/ops run hello promotions --bogus"] {
        let r = world.cmd("console:alice", bad).await;
        assert!(r.ephemeral, "{bad}");
        assert!(r.message.text.contains("Usage:"), "{bad}: {}", r.message.text);
    }
    let r = world.cmd("console:alice", "/ops run hello nosuch").await;
    assert_eq!(r.message.text, "'nosuch' is not a configured service. Configured: billing, promotions.");
    // deploy is built in; a service without a driver is refused, saying what to configure.
    let r = world.cmd("console:alice", "/ops deploy promotions v1.2.5").await;
    assert!(
        r.message.text.contains("has no deploy driver") && r.message.text.contains("services.promotions.environments.prod"),
        "{}",
        r.message.text
    );
    let r = world.cmd("console:alice", "/ops run nosuch promotions").await;
    assert!(r.message.text.contains("not installed") && r.message.text.contains("hello"), "{}", r.message.text);
    let r = world.cmd("console:alice", "/ops run hello promotions --env qa").await;
    assert!(r.message.text.contains("has no environment 'qa'"), "{}", r.message.text);
    let r = world.cmd("console:mallory", "/ops run hello promotions").await;
    assert!(r.message.text.contains("not in any runbot group"), "{}", r.message.text);

    assert!(world.executions().await.is_empty());
    assert!(world.chat.privates().iter().all(|p| p.channel == "ops"));
    assert_eq!(world.chat.privates().len(), 10, "each answer went privately to its author");
}

/// status, history, whoami and help answer from the store and the config.
#[tokio::test]
async fn status_history_whoami_help() {
    let world = World::new().await;
    let r = world.cmd("console:carol", "/ops status").await;
    assert_eq!(r.message.text, "Nothing is running or waiting for approval.");
    let r = world.cmd("console:carol", "/ops history").await;
    assert_eq!(r.message.text, "No executions yet.");

    let waiting = world.request("console:alice", "/ops run double promotions").await;
    let other = world.request("console:bob", "/ops run hello billing").await;
    world.wait_text(waiting, "Waiting for approval").await;
    world.click("console:carol", other, "approve").await;
    world.wait_state(other, "succeeded").await;

    let r = world.cmd("console:carol", "/ops status").await;
    assert!(r.message.text.contains("R-1 double promotions (prod) — awaiting approval · requested by console:alice"), "{}", r.message.text);
    assert!(!r.message.text.contains("R-2"), "finished executions are not active: {}", r.message.text);
    let r = world.cmd("console:carol", "/ops status R-2").await;
    assert_eq!(r.message.title, "R-2 · hello billing (prod)");
    assert!(r.message.text.contains("Succeeded"), "{}", r.message.text);
    let r = world.cmd("console:carol", "/ops status R-99").await;
    assert_eq!(r.message.text, "There is no execution R-99.");

    let r = world.cmd("console:carol", "/ops history").await;
    assert!(r.message.text.starts_with("Last 2 executions:"), "{}", r.message.text);
    let r = world.cmd("console:carol", "/ops history promotions-api --limit 5").await;
    assert!(r.message.text.starts_with("Last 1 execution for promotions:"), "{}", r.message.text);
    assert!(r.message.text.contains("R-1") && !r.message.text.contains("R-2"), "{}", r.message.text);
    let r = world.cmd("console:carol", "/ops history nosuch").await;
    assert!(r.message.text.contains("not a configured service or database"), "{}", r.message.text);

    let r = world.cmd("console:bob2", "/ops whoami").await;
    assert_eq!(r.message.text, "You are console:bob2 (person: bob).");
    let fields: std::collections::BTreeMap<_, _> = r.message.fields.iter().cloned().collect();
    assert_eq!(fields["Groups"], "sre", "bob2 is bob, and bob is in sre");
    assert!(fields["May approve"].contains("double (all environments)"), "as bob, bob2 may approve: {fields:?}");
    let r = world.cmd("console:dave", "/ops whoami").await;
    let fields: std::collections::BTreeMap<_, _> = r.message.fields.iter().cloned().collect();
    assert_eq!((fields["Groups"].as_str(), fields["May approve"].as_str()), ("dev", "nothing"));
    assert!(fields["May request"].contains("hello (all environments)"), "dev may request what needs no named group: {fields:?}");

    let r = world.cmd("console:dave", "/ops help").await;
    for usage in ["/ops deploy <service> <version>", "/ops cancel <execution-id>", "/ops help [<runbook>]"] {
        assert!(r.message.text.contains(usage), "help lacks {usage}: {}", r.message.text);
    }
    let r = world.cmd("console:dave", "/ops help hello").await;
    let text = &r.message.text;
    assert!(text.contains("Runbook hello (service · changes things)"), "{text}");
    for step in ["1. check (probe)", "2. approve (approval)", "3. greet (command)"] {
        assert!(text.contains(step), "help hello lacks '{step}': {text}");
    }
    let r = world.cmd("console:dave", "/ops help nosuch").await;
    assert!(r.message.text.starts_with("No help for 'nosuch'"), "{}", r.message.text);
}

/// `--set` values are checked against the parameter's pattern as a whole value, even when the
/// pattern is written without ^…$.
#[tokio::test]
async fn set_values_must_match_the_whole_pattern() {
    let runbooks = format!(
        "{}\n{}",
        runbot_tests::harness::RUNBOOKS,
        r#"
[runbooks.regional]
summary = "Greets a region"
target = "service"
mutating = false

[runbooks.regional.params.region]
help = "a region like eu-1"
pattern = "[a-z]+-[0-9]"

[[runbooks.regional.steps]]
name = "greet"
kind = "command"
argv = ["echo", "{region}"]
"#
    );
    let world = World::with(Options { runbooks, ..Options::default() }).await;
    let ok = world.cmd("console:alice", "/ops run regional promotions --set region=eu-1 --dry-run").await;
    assert!(ok.message.text.contains("Dry run"), "{}", ok.message.text);
    for bad in ["eu-1;rm", "xeu-1x", "EU-1"] {
        let r = world.cmd("console:alice", &format!("/ops run regional promotions --set region={bad} --dry-run")).await;
        assert!(r.message.text.contains("is not allowed; it must match"), "{bad}: {}", r.message.text);
    }
}

/// `/ops whoami` is computed by the rules that decide: per runbook and environment, what the
/// person may request and approve. A generic policy that a runbook's own policy overrides gives
/// no right it does not; and each claim holds when tried.
#[tokio::test]
async fn whoami_says_per_runbook_and_environment_what_the_deciding_rules_allow() {
    let extra = r#"
[[approvals]]
runbook = "hello"
env = "prod"
approvers = ["dba"]
requesters = ["sre"]
required = 1
expiry = "30m"
"#;
    let world = World::with(Options { extra_config: extra.into(), ..Default::default() }).await;
    let fields = |r: &runbot_commands::engine::Reply| r.message.fields.iter().cloned().collect::<std::collections::BTreeMap<_, _>>();
    let carol = fields(&world.cmd("console:carol", "/ops whoami").await);
    assert!(carol["May approve"].contains("hello (staging)") && !carol["May approve"].contains("hello (all"), "{carol:?}");
    let dana = fields(&world.cmd("console:dana", "/ops whoami").await);
    assert!(dana["May approve"].contains("hello (prod)"), "{dana:?}");
    assert!(!dana["May request"].contains("hello (prod") && !dana["May request"].contains("hello (all"), "{dana:?}");

    // The claims hold: carol may not approve hello in prod, dana may.
    let id = world.request("console:alice", "/ops run hello promotions --env prod").await;
    let r = world.click("console:carol", id, "approve").await;
    assert!(r.message.text.contains("needs membership of dba"), "{}", r.message.text);
    let r = world.click("console:dana", id, "approve").await;
    assert!(r.message.text.contains("it is running"), "{}", r.message.text);
    // … and dana may not request it in prod.
    let r = world.cmd("console:dana", "/ops run hello promotions --env prod").await;
    assert!(r.message.text.contains("needs membership of sre"), "{}", r.message.text);
}

/// `/ops history` names who decided: the person who rejected (not the requester), who approved.
#[tokio::test]
async fn history_names_who_decided() {
    let world = World::new().await;
    let rejected = world.request("console:alice", "/ops run hello promotions").await;
    world.click("console:bob", rejected, "reject").await;
    world.wait_state(rejected, "rejected").await;
    let approved = world.request("console:alice", "/ops run hello billing").await;
    world.click("console:carol", approved, "approve").await;
    world.wait_state(approved, "succeeded").await;
    let text = world.cmd("console:dave", "/ops history").await.message.text;
    assert!(text.contains(&format!("{rejected} hello promotions (prod) — rejected by console:bob · requested by console:alice")), "{text}");
    assert!(text.contains(&format!("{approved} hello billing (prod) — succeeded, approved by console:carol · requested by console:alice")), "{text}");
}
