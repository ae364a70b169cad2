//! An execution's life outside the happy path: approvals that expire, the one-change-per-target
//! lock, and cancelling a step that is running.

use runbot_commands::model::{ExecState, StepStatus};
use runbot_tests::harness::{Options, World, created};
use std::time::Duration;

fn paused() -> Options {
    Options { update_interval_ms: 1000, patience: Duration::from_secs(120), ..Options::default() }
}

/// Nobody approves within 30 minutes: the sweep marks it expired and the target is free again.
#[tokio::test(start_paused = true)]
async fn approval_expires_and_releases_the_lock() {
    let world = World::with(paused()).await;
    let id = world.request("console:alice", "/ops run double promotions").await;
    world.wait_text(id, "expires in 30m").await;

    tokio::time::advance(Duration::from_secs(29 * 60)).await;
    world.engine.sweep().await;
    assert_eq!(world.exec(id).await.state, ExecState::AwaitingApproval, "not yet at 29 minutes");

    tokio::time::advance(Duration::from_secs(2 * 60)).await;
    world.engine.sweep().await;
    let exec = world.exec(id).await;
    assert_eq!(exec.state, ExecState::Expired);
    assert_eq!(exec.steps[0].status, StepStatus::Failed);
    let msg = world.wait_text(id, "Expired: nobody approved in time").await;
    assert!(msg.buttons.is_empty());

    // A late click is refused; the lock is released, so a new request is accepted.
    let r = world.click_value("console:bob", &format!("{id}|approve|{}", exec.fingerprint), None).await;
    assert!(r.message.text.contains("not waiting for approval"), "{}", r.message.text);
    let next = world.request("console:alice", "/ops run double promotions").await;
    assert_ne!(next, id);
    assert_eq!(world.probes.count("double-apply"), 0);
}

/// Without a sweep, the first click after the deadline expires it.
#[tokio::test(start_paused = true)]
async fn a_click_after_the_deadline_expires_it() {
    let world = World::with(paused()).await;
    let id = world.request("console:alice", "/ops run double promotions").await;
    let value = world.button(id, "approve").await;
    tokio::time::advance(Duration::from_secs(31 * 60)).await;
    let r = world.click_value("console:bob", &value, None).await;
    assert!(r.message.text.contains("approval window of R-1 has closed"), "{}", r.message.text);
    world.wait_state(id, "expired").await;
    created(&world.cmd("console:carol", "/ops run double promotions").await);
}

/// One change per target and environment: a second request is refused, naming who holds it.
#[tokio::test]
async fn lock_conflict_names_the_running_execution() {
    let world = World::new().await;
    let first = world.request("console:alice", "/ops run slow promotions").await;
    world.wait_text(first, "Waiting for approval").await;

    let r = world.cmd("console:bob", "/ops run double promotions-api").await;
    let text = &r.message.text;
    assert!(r.ephemeral);
    assert!(text.contains("is busy") && text.contains("R-1") && text.contains("console:alice"), "{text}");
    assert!(text.contains("/ops status R-1"), "{text}");
    assert_eq!(world.executions().await.len(), 1, "nothing was created");

    // Another environment or another service is a different target.
    let staging = world.request("console:bob", "/ops run double promotions --env staging").await;
    let billing = world.request("console:bob", "/ops run double billing").await;
    assert_eq!(world.exec(staging).await.target.env, "staging");
    assert_eq!(world.exec(billing).await.target.name, "billing");

    // When the first one finishes (cancelled here), the target is free again.
    world.cmd("console:alice", &format!("/ops cancel {first}")).await;
    world.wait_state(first, "cancelled").await;
    world.request("console:bob", "/ops run double promotions").await;
}

/// Cancelling a running step: strangers may not; the requester may, the step stops, and the
/// message says which step was interrupted. Nothing after it runs.
#[tokio::test]
async fn cancel_interrupts_the_running_step() {
    let world = World::new().await;
    let id = world.request("console:alice", "/ops run slow promotions").await;
    world.click("console:bob", id, "approve").await;
    world.wait_for(id, "the drain step running", |e| e.current == 2 && e.steps[2].status == StepStatus::Running).await;
    assert_eq!(world.probes.count("slow-drain"), 1);

    for stranger in ["console:dave", "console:mallory"] {
        let r = world.cmd(stranger, &format!("/ops cancel {id}")).await;
        assert!(r.message.text.contains("Only the requester or an approver"), "{stranger}: {}", r.message.text);
    }
    assert_eq!(world.exec(id).await.state, ExecState::Running);
    assert_eq!(world.exec(id).await.cancel_requested, None);

    let r = world.cmd("console:alice", &format!("/ops cancel {id}")).await;
    assert_eq!(r.message.text, format!("Cancelling {id}."));
    let exec = world.wait_state(id, "cancelled").await;
    assert_eq!(exec.steps[1].status, StepStatus::Succeeded);
    assert_eq!(exec.steps[2].status, StepStatus::Cancelled);
    assert_eq!(exec.steps[3].status, StepStatus::Pending);
    let msg = world.wait_text(id, "Cancelled.").await;
    assert!(msg.text.contains("Cancelled by console:alice during step 3 (drain)"), "{}", msg.text);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(world.probes.count("slow-after"), 0);

    let again = world.cmd("console:alice", &format!("/ops cancel {id}")).await;
    assert!(again.message.text.contains("already finished (cancelled)"), "{}", again.message.text);
}

/// Cancelling a real process (`sleep 30`): it is killed, not waited for.
#[tokio::test]
async fn cancel_kills_a_real_process() {
    let world = World::new().await;
    let id = world.request("console:carol", "/ops run sleepy billing").await;
    world.click("console:alice", id, "approve").await;
    world.wait_for(id, "the nap running", |e| e.steps[1].status == StepStatus::Running).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    // An approver may cancel too.
    world.cmd("console:bob", &format!("/ops cancel {id}")).await;
    let exec = world.wait_state(id, "cancelled").await;
    assert!(started.elapsed() < Duration::from_secs(10), "the process was waited for instead of killed");
    assert_eq!(exec.steps[1].summary.as_deref(), Some("cancelled; the process was killed"));
    world.wait_text(id, "during step 2 (nap)").await;
}

/// The status message cannot be posted (chat down): the execution does not start, nothing
/// runs, the requester is told, and the target is not left locked.
#[tokio::test]
async fn no_status_message_no_execution() {
    let world = World::new().await;
    world.chat.fail_next_posts(1);
    let r = world.cmd("console:alice", "/ops run hello promotions").await;
    assert!(r.message.text.contains("R-1 was not started") && r.message.text.contains("Nothing was changed"), "{}", r.message.text);
    let exec = world.exec("R-1".parse().expect("an id")).await;
    assert_eq!(exec.state, ExecState::Cancelled);
    assert!(exec.notes.iter().any(|n| n.contains("service_unavailable")), "{:?}", exec.notes);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(world.probes.count("hello-check"), 0);
    world.request("console:alice", "/ops run hello promotions").await;
}
