//! Several replicas on one store: the status message is posted before any step (also when
//! the channel's pacing delays it and every replica sweeps), the channel always ends on the
//! newest state whatever the replicas' timing, a waiting message is not re-edited by every
//! sweep, and a cancel typed on a replica that is not the owner reaches the running step at
//! once.

use runbot_commands::engine::Engine;
use runbot_commands::model::ExecutionId;
use runbot_tests::harness::{Options, RUNBOOKS, RecordingChat, World, created};
use std::sync::Arc;
use std::time::Duration;

/// A read-only runbook without approval whose one step prints a line.
const LOOK: &str = r#"
[runbooks.look]
summary = "A read-only look"
target = "service"
mutating = false

[[runbooks.look.steps]]
name = "look"
kind = "probe"
idempotent = true
counter = "look"
output = "looked at {target}"
"#;

async fn world(interval_ms: u64) -> World {
    World::with(Options {
        runbooks: format!("{RUNBOOKS}{LOOK}"),
        update_interval_ms: interval_ms,
        patience: Duration::from_secs(300),
        ..Options::default()
    })
    .await
}

/// The world's engine and `n - 1` more replicas, each with its own chat fake.
async fn replicas(world: &World, n: usize) -> Vec<(Engine, Arc<RecordingChat>)> {
    let mut all = vec![(world.engine.clone(), world.chat.clone())];
    for i in 1..n {
        all.push(world.replica(&format!("test-{}", i + 1)).await);
    }
    all
}

/// Twenty commands at once into one paced channel (one new message per 500 ms), spread over
/// `n` replicas that all sweep every 100 ms: every step starts only once its execution's
/// status message is posted, so each step's output reaches that message's thread.
async fn burst(n: usize) {
    let world = world(20).await;
    let all = replicas(&world, n).await;
    for (_, chat) in &all {
        chat.pace_posts(Duration::from_millis(500));
    }
    let sweepers: Vec<_> = all.iter().map(|(e, _)| e.spawn_sweeper(Duration::from_millis(100))).collect();
    let replies = futures::future::join_all((0..20).map(|i| world.cmd_via(&all[i % n].0, "console:alice", "/ops run look promotions"))).await;
    let ids: Vec<ExecutionId> = replies.iter().map(created).collect();
    for id in &ids {
        let exec = world.wait_state(*id, "succeeded").await;
        let mid = &exec.messages[0].id;
        let thread: Vec<String> = all.iter().flat_map(|(_, c)| c.thread(mid)).map(|p| p.message.all_text()).collect();
        assert!(
            thread.iter().any(|t| t.contains("looked at promotions")),
            "{id}: the step's output did not reach its status message's thread (the step ran before the message existed?): {thread:?}"
        );
        assert_eq!(exec.steps[0].attempts, 1, "{id}: the step ran once");
    }
    assert_eq!(world.probes.count("look"), 20, "each execution's step ran once");
    for s in sweepers {
        s.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_into_a_paced_channel_posts_each_message_before_its_steps_with_one_replica() {
    burst(1).await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_into_a_paced_channel_posts_each_message_before_its_steps_with_three_replicas() {
    burst(3).await;
}

/// Bob's vote reaches a replica whose edits take 5 s to land; Carol's, on the fast one,
/// completes the approval and the execution finishes at once. The slow replica's older edit
/// lands after the final one — and is followed by the newest state again: the channel ends
/// on the final state.
#[tokio::test(start_paused = true)]
async fn a_slow_replicas_older_edit_never_has_the_last_word() {
    let world = world(20).await;
    let (slow, slow_chat) = world.replica("test-2").await;
    slow_chat.delay_updates(Duration::from_secs(5));
    let id = world.request("console:alice", "/ops run double promotions").await;
    let value = world.button(id, "approve").await;
    let mid = world.status_message_id(id).await;

    world.click_via(&slow, "console:bob", &value).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    world.click_via(&world.engine, "console:carol", &value).await;
    world.wait_state(id, "succeeded").await;
    world.wait_text(id, "Succeeded").await;
    let final_at = tokio::time::Instant::now();

    tokio::time::sleep(Duration::from_secs(30)).await;
    let late: Vec<_> = slow_chat.updates_of(&mid).into_iter().filter(|u| u.at > final_at).collect();
    assert!(
        late.first().is_some_and(|u| !u.message.all_text().contains("Succeeded")),
        "precondition: the slow replica's older edit landed after the final one: {:?}",
        late.iter().map(|u| u.message.text.clone()).collect::<Vec<_>>()
    );
    let shown = world.status_message(id).await;
    assert!(shown.text.contains("Succeeded"), "the channel must end on the final state, it shows:\n{}", shown.all_text());
    assert_eq!(world.probes.count("double-apply"), 1);
}

/// Edits wait for a budget (like Slack's `chat.update`, just spent) while the execution runs
/// to its end: the edit that gets the turn shows the final state — the state is read after
/// the turn, so the queued edit of the running state is never sent.
#[tokio::test(start_paused = true)]
async fn a_queued_edit_sends_the_newest_state_not_the_one_it_queued_with() {
    let world = world(20).await;
    world.chat.pace_edits(Duration::from_secs(2));
    let id = created(&world.cmd("console:alice", "/ops run look promotions").await);
    world.wait_state(id, "succeeded").await;
    world.wait_text(id, "Succeeded").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mid = world.status_message_id(id).await;
    let edits: Vec<String> = world.chat.updates_of(&mid).into_iter().map(|u| u.message.all_text()).collect();
    assert!(!edits.is_empty(), "the message was edited");
    assert!(edits.iter().all(|t| t.contains("Succeeded")), "an edit sent a state older than the newest when its turn came: {edits:?}");
}

/// Three replicas sweep every 100 ms while an execution waits for approval: its message is
/// edited when its content changes, not once per sweep of every replica.
#[tokio::test(start_paused = true)]
async fn sweeps_of_every_replica_leave_an_unchanged_waiting_message_alone() {
    let world = world(20).await;
    let all = replicas(&world, 3).await;
    let sweepers: Vec<_> = all.iter().map(|(e, _)| e.spawn_sweeper(Duration::from_millis(100))).collect();
    let id = world.request("console:alice", "/ops run double promotions").await;
    world.button(id, "approve").await;
    let mid = world.status_message_id(id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let edits = || all.iter().map(|(_, c)| c.updates_of(&mid).len()).sum::<usize>();
    let before = edits();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(edits(), before, "200 sweeps of an unchanged waiting execution edited its message");
    for s in sweepers {
        s.abort();
    }
}

/// A step runs on one replica; `/ops cancel` is typed on another. The owner hears of it at
/// once (a wake-up through the store) and stops the step, instead of at a sweep — which would
/// never stop a step that only ends when cancelled.
#[tokio::test(start_paused = true)]
async fn a_cancel_on_another_replica_stops_the_owners_running_step_at_once() {
    let world = world(20).await;
    let (other, _chat) = world.replica("test-2").await;
    let listeners: Vec<_> = [&world.engine, &other].iter().filter_map(|e| e.spawn_wake_listener()).collect();
    assert_eq!(listeners.len(), 2, "the memory store carries wake-ups");
    let id = world.request("console:alice", "/ops run slow promotions").await;
    world.click("console:bob", id, "approve").await;
    world.wait_for(id, "the drain running", |e| e.current == 2 && e.steps[2].status.as_str() == "running").await;
    assert!(world.engine.running_here().contains(&id), "precondition: the first replica drives it");

    let asked = tokio::time::Instant::now();
    world.cmd_via(&other, "console:alice", &format!("/ops cancel {id}")).await;
    world.wait_state(id, "cancelled").await;
    assert!(asked.elapsed() < Duration::from_secs(1), "the cancel took {:?} to reach the running step", asked.elapsed());
    for l in listeners {
        l.abort();
    }
}

/// Quotas hold across replicas: with `per_identity_per_minute = 3`, Alice's commands spread
/// over three replicas are refused from the fourth, not from the tenth.
#[tokio::test]
async fn a_quota_holds_across_replicas() {
    let world = World::with(Options { extra_config: "[limits]\nper_identity_per_minute = 3\n".into(), ..Options::default() }).await;
    let all = replicas(&world, 3).await;
    let mut answered = Vec::new();
    for i in 0..6 {
        answered.push(world.cmd_via(&all[i % 3].0, "console:alice", "/ops whoami").await.message.text);
    }
    let passed = answered.iter().filter(|t| t.starts_with("You are console:alice")).count();
    assert_eq!(passed, 3, "{answered:#?}");
    assert!(answered[3..].iter().all(|t| t.contains("faster than the configured limit")), "{answered:#?}");
}
