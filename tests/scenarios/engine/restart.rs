//! Restart recovery: runbot dies while a step is mid-flight. A step that is safe to repeat is
//! resumed; any other waits for a person to choose [Resume] or [Abort] — in the same status
//! message, which keeps being edited after the restart. Probe counters prove nothing ran twice
//! without consent.

use runbot_commands::model::{ExecState, ExecutionId, StepStatus};
use runbot_tests::harness::{Options, World};
use std::time::Duration;

async fn world() -> World {
    World::with(Options { update_interval_ms: 1000, patience: Duration::from_secs(120), ..Options::default() }).await
}

/// Requests `runbook` as alice, bob approves, and waits until step 2 is mid-flight (its probe
/// hangs on the first run). Returns the id and the status message id.
async fn mid_flight(world: &World, runbook: &str, counter: &str) -> (ExecutionId, String) {
    let id = world.request("console:alice", &format!("/ops run {runbook} promotions")).await;
    world.click("console:bob", id, "approve").await;
    world.wait_for(id, "step 2 running", |e| e.current == 1 && e.steps[1].status == StepStatus::Running).await;
    assert_eq!(world.probes.count(counter), 1);
    let mid = world.status_message_id(id).await;
    (id, mid)
}

/// Same instance name: the restarted process reclaims its own work at once; the idempotent
/// wait is run again, with a note, and the execution completes in the same message.
#[tokio::test(start_paused = true)]
async fn idempotent_step_is_resumed_after_restart() {
    let mut world = world().await;
    let (id, mid) = mid_flight(&world, "settle", "settle-wait").await;

    world.restart().await;
    let exec = world.wait_state(id, "succeeded").await;
    assert_eq!(world.probes.count("settle-wait"), 2, "the safe step ran again, once");
    assert_eq!(world.probes.count("settle-done"), 1);
    assert_eq!(exec.steps[1].attempts, 2);
    assert!(exec.notes.iter().any(|n| n.contains("safe to repeat and was resumed")), "{:?}", exec.notes);

    let msg = world.wait_text(id, "Succeeded").await;
    assert!(msg.text.contains("safe to repeat and was resumed"));
    assert_eq!(world.status_message_id(id).await, mid);
    assert!(!world.chat.updates_of(&mid).is_empty(), "the new process edited the old message");
    assert!(world.chat.posts().iter().all(|p| p.thread.is_some()), "no second status message was posted");
}

/// Another instance name: it waits for the dead process's lease to run out; then the
/// non-idempotent step is not run again but offered as Resume / Abort in the same message.
/// Resume runs it exactly once more.
#[tokio::test(start_paused = true)]
async fn non_idempotent_step_waits_for_resume() {
    let mut world = world().await;
    let (id, mid) = mid_flight(&world, "apply", "apply-apply").await;

    world.restart_as("test-2").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    world.engine.sweep().await;
    let exec = world.exec(id).await;
    assert_eq!(exec.steps[1].status, StepStatus::Running, "the lease of test-1 is still valid; hands off");
    assert!(world.chat.updates().is_empty());

    tokio::time::advance(Duration::from_secs(31)).await;
    world.engine.sweep().await;
    let exec = world.wait_for(id, "step 2 interrupted", |e| e.steps[1].status == StepStatus::Interrupted).await;
    assert_eq!(exec.state, ExecState::Running);
    assert!(exec.notes.iter().any(|n| n.contains("may have partly run")), "{:?}", exec.notes);
    let msg = world.wait_message(id, "Resume / Abort", |m| m.buttons.iter().any(|b| b.action_id == "resume")).await;
    let labels: Vec<&str> = msg.buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Resume", "Abort"]);
    assert!(msg.text.contains("restarted while step 2 was running"), "{}", msg.text);
    assert_eq!(world.status_message_id(id).await, mid, "same message id after the restart");
    assert!(world.chat.updates().iter().all(|u| u.id == mid));
    assert_eq!(world.probes.count("apply-apply"), 1, "not run again without consent");

    // A stranger cannot choose; bob (approver) resumes.
    let r = world.click("console:dave", id, "resume").await;
    assert!(r.message.text.contains("Only the requester or an approver"), "{}", r.message.text);
    let r = world.click("console:bob", id, "resume").await;
    assert_eq!(r.message.text, format!("Resuming {id}."));
    let exec = world.wait_state(id, "succeeded").await;
    assert_eq!(world.probes.count("apply-apply"), 2, "Resume ran it exactly once more");
    assert_eq!(world.probes.count("apply-after"), 1);
    assert!(exec.notes.iter().any(|n| n.contains("chose Resume")));
    world.wait_text(id, "Succeeded").await;
    assert!(world.chat.updates().iter().all(|u| u.id == mid));

    // A second Resume (stale button) changes nothing.
    let r = world.click_value("console:bob", &format!("{id}|resume|{}", exec.fingerprint), None).await;
    assert!(r.message.text.contains("no interrupted step"), "{}", r.message.text);
    assert_eq!(world.probes.count("apply-apply"), 2);
}

/// Abort after a restart: the step is not run again and the execution ends cancelled.
#[tokio::test(start_paused = true)]
async fn non_idempotent_step_can_be_aborted() {
    let mut world = world().await;
    let (id, mid) = mid_flight(&world, "apply", "apply-apply").await;

    world.restart().await;
    world.wait_for(id, "step 2 interrupted", |e| e.steps[1].status == StepStatus::Interrupted).await;
    let r = world.click("console:alice", id, "abort").await;
    assert_eq!(r.message.text, format!("Aborted {id}."));
    let exec = world.wait_state(id, "cancelled").await;
    assert_eq!(exec.steps[1].status, StepStatus::Cancelled);
    assert!(exec.notes.iter().any(|n| n.contains("chose Abort") && n.contains("may have partly run")), "{:?}", exec.notes);
    let msg = world.wait_text(id, "Cancelled.").await;
    assert!(msg.buttons.is_empty());
    assert_eq!(world.status_message_id(id).await, mid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(world.probes.count("apply-apply"), 1);
    assert_eq!(world.probes.count("apply-after"), 0);
    // The lock is released.
    world.request("console:bob", "/ops run apply promotions").await;
}

/// The process died after the last step but before the (coalesced) final edit went out: the
/// restarted process delivers the final state to the same message.
#[tokio::test(start_paused = true)]
async fn final_state_is_delivered_after_restart() {
    let mut world = world().await;
    let id = world.request("console:alice", "/ops run double promotions").await;
    world.click("console:bob", id, "approve").await;
    world.click("console:carol", id, "approve").await;
    world.wait_state(id, "succeeded").await;
    let mid = world.status_message_id(id).await;
    assert!(!world.status_message(id).await.text.contains("Succeeded"), "precondition: the final edit is still coalesced");
    assert!(!world.exec(id).await.messages[0].final_sent);

    world.restart().await;
    world.wait_text(id, "Succeeded").await;
    assert!(world.chat.updates_of(&mid).iter().any(|u| u.message.text.contains("Succeeded")), "sent by the new process");
    world.wait_for(id, "final delivery recorded", |e| e.messages[0].final_sent).await;
    assert_eq!(world.probes.count("double-apply"), 1);
}

/// A process cut off from the store for longer than its lease loses the execution to another
/// replica. When it comes back it must not drive on: the step after the handover runs once.
#[tokio::test(start_paused = true)]
async fn a_process_that_lost_its_lease_stops_driving() {
    let world = world().await;
    let id = world.request("console:alice", "/ops run handover promotions").await;
    world.click("console:bob", id, "approve").await;
    world.wait_for(id, "the wait running", |e| e.steps[1].status == StepStatus::Running).await;

    world.partition(true);
    tokio::time::sleep(Duration::from_secs(35)).await;
    let (_replica, _chat) = world.replica("test-2").await;
    world.wait_for(id, "test-2 resumed the safe wait", |e| e.steps[1].attempts == 2).await;
    world.partition(false);

    // test-1's wait ends first (t≈60 s), test-2's later (t≈95 s); only test-2 goes on.
    let exec = world.wait_state(id, "succeeded").await;
    assert_eq!(world.probes.count("handover-wait"), 2, "the safe wait ran in both processes");
    assert_eq!(world.probes.count("handover-apply"), 1, "the change ran once, by the lease holder");
    assert_eq!(exec.steps[2].attempts, 1);
}
