//! Mirrors: an execution requested on one platform also has its status message in the other
//! platform's incident channel (`[environments.ENV] mirror`). Both update live to the final
//! state; clicks from either go through the same approval rules, one vote per person across
//! platforms; a mirror that cannot be posted is said, and the origin carries on.

use runbot_commands::model::{ExecState, ExecutionId};
use runbot_tests::harness::{CONFIG, Options, World};

/// The Slack channel commands are typed in; the Discord incident channel of `prod`.
const OPS: &str = "C0OPS";
const DISCORD_INC: &str = "900100";

/// ana and bruno each have a Slack and a Discord identity; carla is only on Discord.
fn mirrored_world_config() -> String {
    CONFIG
        .replace("[groups]\nsre = [", "[groups]\nsre = [\"slack:UANA\", \"discord:1001\", \"slack:UBRUNO\", \"discord:1002\", \"discord:1003\", ")
        .replace("[people]\n", "[people]\nana = [\"slack:UANA\", \"discord:1001\"]\nbruno = [\"slack:UBRUNO\", \"discord:1002\"]\n")
        .replace(
            "[environments.prod]\n",
            &format!("[environments.prod]\nincident_channel = {{ discord = \"{DISCORD_INC}\" }}\nmirror = [\"discord\"]\n"),
        )
}

async fn world() -> World {
    World::with(Options { config: mirrored_world_config(), platforms: vec!["slack", "discord"], ..Options::default() }).await
}

/// The button value of `action` on the Discord mirror, as a Discord user would see it.
async fn mirror_button(world: &World, id: ExecutionId, action: &str) -> String {
    let exec = world.wait_for(id, "a discord mirror", |e| e.messages.iter().any(|m| m.platform == "discord")).await;
    let r = exec.messages.iter().find(|m| m.platform == "discord").expect("discord ref").clone();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let msg = world.on("discord").latest(&r.id).expect("the discord chat knows the mirror");
        if let Some(b) = msg.buttons.iter().find(|b| b.action_id == action) {
            return b.value.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no {action} button on the mirror:\n{}", msg.all_text());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Requested on Slack, mirrored to Discord's incident channel, approved on Discord by someone
/// else: it runs, and both messages end in the final state (recorded as delivered).
#[tokio::test]
async fn requested_on_slack_approved_on_discord_both_messages_reach_the_final_state() {
    let world = world().await;
    let reply = world.cmd_from("slack", OPS, "slack:UANA", "/ops run hello promotions-api").await;
    assert!(reply.message.text.contains("created"), "{}", reply.message.text);
    let id = runbot_tests::harness::created(&reply);

    let exec = world.wait_for(id, "two status messages", |e| e.messages.len() == 2).await;
    let (origin, mirror) = (&exec.messages[0], &exec.messages[1]);
    assert_eq!((origin.platform.as_str(), origin.channel.as_str()), ("slack", OPS));
    assert_eq!((mirror.platform.as_str(), mirror.channel.as_str()), ("discord", DISCORD_INC));
    assert!(world.chat.posts().is_empty(), "nothing on the console");
    assert_eq!(world.on("slack").posts().iter().filter(|p| p.thread.is_none()).count(), 1);
    assert_eq!(world.on("discord").posts().iter().filter(|p| p.thread.is_none()).count(), 1);

    let value = mirror_button(&world, id, "approve").await;
    let reply = world.click_from("discord", DISCORD_INC, "discord:1003", &value).await;
    assert!(reply.message.text.contains("You approved"), "{}", reply.message.text);
    world.wait_state(id, "succeeded").await;
    let done = world.wait_for(id, "both final states delivered", |e| e.messages.iter().all(|m| m.final_sent)).await;
    for (r, chat) in [(&done.messages[0], world.on("slack")), (&done.messages[1], world.on("discord"))] {
        let latest = chat.latest(&r.id).expect("known message");
        assert!(latest.text.contains("Succeeded: 3 of 3 steps done"), "{} shows:\n{}", r.platform, latest.all_text());
        assert!(latest.buttons.is_empty());
        assert!(latest.fields.iter().any(|(k, v)| k == "Approvals" && v == "discord:1003"), "{:?}", latest.fields);
        // The step's output reaches the thread of both.
        assert!(chat.thread(&r.id).iter().any(|p| p.message.code.as_deref().is_some_and(|c| c.contains("hello promotions"))), "{}", r.platform);
    }
}

/// bruno approves on Slack and again on Discord: one person, one vote; with two required it
/// stays waiting. Someone else's approval then completes it.
#[tokio::test]
async fn one_person_on_two_platforms_votes_once() {
    let world = world().await;
    let id = runbot_tests::harness::created(&world.cmd_from("slack", OPS, "slack:UANA", "/ops run double promotions").await);
    let slack_value = world.button(id, "approve").await;
    let reply = world.click_from("slack", OPS, "slack:UBRUNO", &slack_value).await;
    assert!(reply.message.text.contains("(1 of 2)"), "{}", reply.message.text);

    let discord_value = mirror_button(&world, id, "approve").await;
    let reply = world.click_from("discord", DISCORD_INC, "discord:1002", &discord_value).await;
    assert!(reply.message.text.contains("already voted") && reply.message.text.contains("as slack:UBRUNO"), "{}", reply.message.text);
    let exec = world.exec(id).await;
    assert_eq!(exec.state, ExecState::AwaitingApproval);
    assert_eq!(exec.approvals.len(), 1);
    assert_eq!(exec.approvals[0].person, "bruno");

    let reply = world.click_from("discord", DISCORD_INC, "discord:1003", &discord_value).await;
    assert!(reply.message.text.contains("it is running"), "{}", reply.message.text);
    world.wait_state(id, "succeeded").await;
}

/// ana requests on Slack and tries to approve from her Discord identity: self-approval is off
/// across platforms, and nothing changes.
#[tokio::test]
async fn the_requester_cannot_approve_from_the_other_platform() {
    let world = world().await;
    let id = runbot_tests::harness::created(&world.cmd_from("slack", OPS, "slack:UANA", "/ops run hello promotions").await);
    let value = mirror_button(&world, id, "approve").await;
    let before = world.exec(id).await;
    let reply = world.click_from("discord", DISCORD_INC, "discord:1001", &value).await;
    assert!(reply.message.text.contains("someone else must approve") && reply.message.text.contains("as slack:UANA"), "{}", reply.message.text);
    let after = world.exec(id).await;
    assert_eq!(after.state, ExecState::AwaitingApproval);
    assert!(after.approvals.is_empty());
    assert_eq!(after.steps, before.steps);

    // A button from the mirror carrying another plan's fingerprint is refused too.
    let stale = format!("{id}|approve|{}", "0".repeat(16));
    let reply = world.click_from("discord", DISCORD_INC, "discord:1003", &stale).await;
    assert!(reply.message.text.contains("plan of") && reply.message.text.contains("changed"), "{}", reply.message.text);
    assert!(world.exec(id).await.approvals.is_empty());
}

/// Discord is down when the execution is created: the Slack message works, says the mirror is
/// missing, the requester is told, the audit log records it, and the execution runs to its end.
#[tokio::test]
async fn a_failed_mirror_is_said_and_the_origin_carries_on() {
    let world = world().await;
    world.on("discord").fail_next_posts(1);
    let reply = world.cmd_from("slack", OPS, "slack:UANA", "/ops run hello promotions").await;
    assert!(reply.message.text.contains("mirror on discord could not be posted: service_unavailable"), "{}", reply.message.text);
    let id = runbot_tests::harness::created(&reply);
    let exec = world.wait_for(id, "the status message", |e| !e.messages.is_empty()).await;
    assert_eq!(exec.messages.len(), 1, "only the origin");
    world.wait_text(id, "Could not mirror this message to discord (service_unavailable)").await;

    let value = world.button(id, "approve").await;
    let reply = world.click_from("slack", OPS, "slack:UBRUNO", &value).await;
    assert!(reply.message.text.contains("it is running"), "{}", reply.message.text);
    world.wait_state(id, "succeeded").await;
    let fin = world.wait_text(id, "Succeeded").await;
    assert!(fin.text.contains("Could not mirror"), "the note stays:\n{}", fin.text);
    let records = world.audit().await;
    assert!(records.iter().any(|r| r.entry.kind == "mirror_failed" && r.entry.detail["platform"] == "discord"), "no mirror_failed record");
}

/// A mirror whose final state was not delivered before the process stopped is re-sent by the
/// sweeper after a restart, like the origin's.
#[tokio::test]
async fn the_sweeper_delivers_a_mirrors_final_state_after_a_restart() {
    let mut world = world().await;
    let id = runbot_tests::harness::created(&world.cmd_from("slack", OPS, "slack:UANA", "/ops run hello promotions").await);
    let value = mirror_button(&world, id, "approve").await;
    // Discord refuses every edit for a while: the final state cannot reach the mirror.
    world.on("discord").rate_limit_next_updates(u32::MAX, std::time::Duration::from_secs(3600));
    world.click_from("discord", DISCORD_INC, "discord:1003", &value).await;
    let done = world.wait_for(id, "the origin's final state delivered", |e| e.state == ExecState::Succeeded && e.messages[0].final_sent).await;
    assert!(!done.messages[1].final_sent, "the mirror's final state is still pending");

    world.restart().await;
    let done = world.wait_for(id, "the mirror's final state delivered", |e| e.messages.iter().all(|m| m.final_sent)).await;
    let latest = world.on("discord").latest(&done.messages[1].id).expect("known");
    assert!(latest.text.contains("Succeeded"), "{}", latest.all_text());
}

/// A request typed on Discord itself is not mirrored to Discord again.
#[tokio::test]
async fn a_request_from_the_mirror_platform_is_not_mirrored_to_itself() {
    let world = world().await;
    let id = runbot_tests::harness::created(&world.cmd_from("discord", "900200", "discord:1001", "/ops run hello promotions").await);
    let exec = world.wait_for(id, "a status message", |e| !e.messages.is_empty()).await;
    assert_eq!(exec.messages.len(), 1);
    assert_eq!((exec.messages[0].platform.as_str(), exec.messages[0].channel.as_str()), ("discord", DISCORD_INC));
    assert!(world.on("slack").posts().is_empty());
}
