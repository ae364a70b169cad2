//! Live updates: one status message, edited in place, at most once per interval however fast
//! the state changes; 429s are waited out and the final state always arrives.

use runbot_tests::harness::{Options, RUNBOOKS, World, many_steps};
use std::time::Duration;

async fn world() -> World {
    World::with(Options {
        update_interval_ms: 1000,
        runbooks: format!("{RUNBOOKS}{}", many_steps(20, 100)),
        patience: Duration::from_secs(300),
        ..Options::default()
    })
    .await
}

/// Twenty quick steps (about 40 state changes in 2 s) make only a handful of edits, never two
/// within a second, and the last edit shows the final state.
#[tokio::test(start_paused = true)]
async fn edits_are_coalesced_and_the_final_state_is_sent() {
    let world = world().await;
    let t0 = tokio::time::Instant::now();
    let id = world.request("console:alice", "/ops run many promotions").await;
    world.click("console:bob", id, "approve").await;
    world.wait_state(id, "succeeded").await;
    let mid = world.status_message_id(id).await;
    let fin = world.wait_text(id, "Succeeded: 21 of 21 steps done").await;
    assert!(fin.buttons.is_empty());
    assert_eq!(world.probes.count("many"), 20);

    let updates = world.chat.updates_of(&mid);
    let last = updates.last().expect("at least one edit");
    let elapsed = last.at.duration_since(t0).as_secs_f64();
    assert!(updates.len() as f64 <= elapsed.ceil() + 2.0, "{} edits in {elapsed:.1} s: not coalesced to one per second", updates.len());
    for pair in updates.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(999), "two edits {gap:?} apart");
    }
    assert!(last.message.text.contains("Succeeded"), "the last edit is the final state: {}", last.message.text);
    // Each step's start and result are state changes (a result and the next start are saved,
    // and audited, together).
    let changes = world.audit().await.iter().filter(|r| r.entry.kind == "state" || r.entry.kind == "step").count();
    assert!(changes >= 40 && updates.len() < 10, "{changes} state changes, {} edits", updates.len());
    assert!(world.exec(id).await.messages[0].final_sent, "the final delivery is recorded");
    assert!(world.chat.posts().iter().filter(|p| p.thread.is_none()).count() == 1, "one status message");
}

/// A 429 storm: five refusals with Retry-After 2 s. runbot waits each out (no edit sooner),
/// and the final state still arrives.
#[tokio::test(start_paused = true)]
async fn rate_limits_are_waited_out() {
    let world = world().await;
    let id = world.request("console:alice", "/ops run many promotions").await;
    let approve = world.button(id, "approve").await;
    world.chat.rate_limit_next_updates(5, Duration::from_secs(2));
    let storm = tokio::time::Instant::now();
    world.click_value("console:bob", &approve, Some("d-1")).await;

    world.wait_state(id, "succeeded").await;
    world.wait_text(id, "Succeeded: 21 of 21 steps done").await;
    let refused = world.chat.refused_updates();
    assert_eq!(refused.len(), 5);
    for pair in refused.windows(2) {
        assert!(pair[1].duration_since(pair[0]) >= Duration::from_secs(2), "Retry-After not honoured");
    }
    let mid = world.status_message_id(id).await;
    let after: Vec<_> = world.chat.updates_of(&mid).into_iter().filter(|u| u.at >= storm).collect();
    assert!(!after.is_empty());
    assert!(after[0].at.duration_since(storm) >= Duration::from_secs(10), "an edit got through during the storm");
    assert!(world.exec(id).await.messages[0].final_sent);
}

/// Output longer than a message goes to the thread in pieces that fit, and nothing is lost.
#[tokio::test]
async fn long_output_is_split_never_cut() {
    let world = World::with(Options { max_text: 200, ..Options::default() }).await;
    let id = world.request("console:alice", "/ops run count promotions").await;
    world.click("console:bob", id, "approve").await;
    world.wait_state(id, "succeeded").await;
    let expected: String = (1..=400).map(|i| format!("{i}\n")).collect();
    assert_eq!(world.output(id, 1).await, expected, "the execution log has every line");

    let mid = world.status_message_id(id).await;
    let thread = world.chat.thread(&mid);
    assert!(thread.len() > 10, "{} replies", thread.len());
    assert!(thread[0].message.text.starts_with("Output of step 2 (count)"), "{:?}", thread[0].message.text);
    let codes: Vec<String> = thread.iter().map(|p| p.message.code.clone().unwrap_or_default()).collect();
    assert!(codes.iter().all(|c| c.chars().count() <= 200), "a reply exceeds the platform limit");
    assert_eq!(codes.concat(), expected, "the thread has every line, in order");
}
