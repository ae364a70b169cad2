//! Approvals: the gate in front of every change — who may approve, how many, one vote per
//! person, repeated deliveries, rejection, and approvals bound to the plan they were shown.

use runbot_commands::model::{Decision, ExecState, StepStatus};
use runbot_tests::harness::{RUNBOOKS, World};

/// alice asks to greet promotions; she cannot approve her own request; bob can; the real
/// `echo` runs, its output lands in the status message's thread, and the audit log verifies.
#[tokio::test]
async fn request_approve_run_with_real_command() {
    let world = World::new().await;
    let id = world.request("console:alice", "/ops run hello promotions-api").await;

    // The plan is shown with Approve / Reject; the read-only check already ran.
    let plan = world.wait_text(id, "Waiting for approval").await;
    let labels: Vec<&str> = plan.buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Approve", "Reject"]);
    assert!(plan.all_text().contains(r#"run ["echo", "hello promotions"]"#), "the plan shows the exact argv:\n{}", plan.all_text());
    assert_eq!(world.probes.count("hello-check"), 1);

    // Self-approval is refused and changes nothing.
    let before = world.exec(id).await;
    let reply = world.click("console:alice", id, "approve").await;
    assert!(reply.ephemeral);
    assert!(reply.message.text.contains("someone else must approve"), "{}", reply.message.text);
    let after = world.exec(id).await;
    assert_eq!(after.state, ExecState::AwaitingApproval);
    assert!(after.approvals.is_empty());
    assert_eq!(after.steps, before.steps);

    // bob (sre) approves: the steps run.
    let reply = world.click("console:bob", id, "approve").await;
    assert!(reply.message.text.contains("approved"), "{}", reply.message.text);
    let done = world.wait_state(id, "succeeded").await;
    assert!(done.steps.iter().all(|s| s.status == StepStatus::Succeeded), "{:?}", done.steps);
    assert_eq!(done.approvals.len(), 1);
    assert_eq!(done.approvals[0].identity.0, "console:bob");
    assert_eq!(world.probes.count("hello-check"), 1, "the check did not run again after approval");

    // The final message says so, with every step done and no buttons left.
    let fin = world.wait_text(id, "Succeeded: 3 of 3 steps done").await;
    assert!(fin.buttons.is_empty());
    assert!(fin.steps.iter().all(|s| s.status == StepStatus::Succeeded));

    // The step's output is a thread reply of the status message.
    let mid = world.status_message_id(id).await;
    let thread = world.chat.thread(&mid);
    assert!(
        thread.iter().any(|p| p.message.code.as_deref().is_some_and(|c| c.contains("hello promotions"))),
        "no 'hello promotions' in the thread of {mid}: {thread:#?}"
    );
    assert_eq!(world.output(id, 2).await, "hello promotions\n");

    // The audit log verifies and tells the story.
    let records = world.audit().await;
    let kinds: Vec<&str> = records.iter().map(|r| r.entry.kind.as_str()).collect();
    for k in ["command", "execution", "approval", "approval_refused", "step", "state"] {
        assert!(kinds.contains(&k), "no {k} record in {kinds:?}");
    }
    let ours = |k: &str| records.iter().filter(|r| r.entry.kind == k && r.entry.execution.as_deref() == Some("R-1")).count();
    assert!(ours("step") >= 2, "each run step leaves a step record");
    assert!(records.iter().any(|r| r.entry.kind == "state" && r.entry.detail["state"] == "succeeded"));
}

/// Two approvals from sre: the same person twice (even from another identity) counts once,
/// a repeated delivery is ignored, a non-member is refused, and Reject ends it.
#[tokio::test]
async fn two_approvals_one_vote_per_person_then_reject() {
    let world = World::new().await;
    let id = world.request("console:alice", "/ops run double promotions").await;
    world.wait_text(id, "0 of 2").await;

    let value = world.button(id, "approve").await;
    let first = world.click_value("console:bob", &value, Some("delivery-1")).await;
    assert!(first.message.text.contains("(1 of 2)"), "{}", first.message.text);

    // The platform delivers the same click again: nothing changes.
    let again = world.click_value("console:bob", &value, Some("delivery-1")).await;
    assert_eq!(again.message.text, "Already handled.");
    // bob clicks again, and from his other identity: one vote per person.
    let twice = world.click("console:bob", id, "approve").await;
    assert!(twice.message.text.contains("already voted"), "{}", twice.message.text);
    let other_id = world.click("console:bob2", id, "approve").await;
    assert!(other_id.message.text.contains("already voted"), "{}", other_id.message.text);
    // Not in sre: refused, whether in another group or in none.
    for outsider in ["console:dave", "console:mallory"] {
        let r = world.click(outsider, id, "approve").await;
        assert!(r.message.text.contains("needs membership of sre"), "{outsider}: {}", r.message.text);
    }
    let exec = world.exec(id).await;
    assert_eq!(exec.state, ExecState::AwaitingApproval);
    assert_eq!(exec.approvals_for_plan().count(), 1);
    world.wait_text(id, "1 of 2").await;

    // carol rejects: it ends, and nothing after the approval ran.
    let r = world.click("console:carol", id, "reject").await;
    assert!(r.message.text.contains("rejected"), "{}", r.message.text);
    let exec = world.wait_state(id, "rejected").await;
    assert_eq!(exec.approvals.iter().filter(|a| a.decision == Decision::Reject).count(), 1);
    assert_eq!(exec.steps[1].status, StepStatus::Pending);
    world.wait_text(id, "Rejected").await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(world.probes.count("double-apply"), 0);
    // A late approval changes nothing.
    let late = world.click_value("console:carol", &value, Some("delivery-9")).await;
    assert!(late.message.text.contains("not waiting for approval"), "{}", late.message.text);
}

/// The plan changes under a waiting request (config reloaded, the step's action differs):
/// the approval already given is void, the message shows the new plan, and a click on the old
/// message is refused.
#[tokio::test]
async fn plan_change_voids_approvals() {
    let mut world = World::new().await;
    let id = world.request("console:alice", "/ops run double promotions").await;
    let old_value = world.button(id, "approve").await;
    let old_fp = world.exec(id).await.fingerprint;
    let r = world.click("console:bob", id, "approve").await;
    assert!(r.message.text.contains("(1 of 2)"), "{}", r.message.text);

    world.reload_runbooks(&RUNBOOKS.replace(r#"note = "v1""#, r#"note = "v2""#));

    // carol still sees the old message and clicks it: the change voids the earlier approval.
    let r = world.click_value("console:carol", &old_value, Some("c-1")).await;
    assert!(r.message.text.contains("approvals were voided"), "{}", r.message.text);
    let exec = world.exec(id).await;
    assert_ne!(exec.fingerprint, old_fp);
    assert_eq!(exec.approvals_for_plan().count(), 0);
    assert_eq!(exec.state, ExecState::AwaitingApproval);
    assert!(exec.steps[1].action.contains("(v2)"), "{}", exec.steps[1].action);
    let msg = world.wait_text(id, "approval(s) voided").await;
    assert!(msg.all_text().contains("(v2)") && msg.all_text().contains(&exec.fingerprint), "{}", msg.all_text());
    assert!(msg.buttons.iter().all(|b| b.value.ends_with(&exec.fingerprint)));

    // bob clicks his stale message again: refused, not counted.
    let r = world.click_value("console:bob", &old_value, Some("b-2")).await;
    assert!(r.message.text.contains("changed since that message was shown"), "{}", r.message.text);
    assert_eq!(world.exec(id).await.approvals_for_plan().count(), 0);

    // Approving the new plan twice runs it, once.
    world.click("console:bob", id, "approve").await;
    world.click("console:carol", id, "approve").await;
    world.wait_state(id, "succeeded").await;
    assert_eq!(world.probes.count("double-apply"), 1);
}

/// A button value with its fingerprint removed, shortened or from another plan is refused
/// privately and audited; the execution is unchanged and nothing runs. Only the exact value of
/// the status message's button counts.
#[tokio::test]
async fn a_vote_without_the_exact_plan_fingerprint_changes_nothing() {
    let world = World::new().await;
    let id = world.request("console:alice", "/ops run hello promotions").await;
    let value = world.button(id, "approve").await;
    let fp = world.exec(id).await.fingerprint;
    assert!(value.ends_with(&fp) && !fp.is_empty(), "{value}");
    let before = world.exec(id).await;
    let forged = [
        format!("{id}|approve|"),
        format!("{id}|approve"),
        format!("{id}|approve|{}", &fp[..fp.len() - 1]),
        format!("{id}|approve|{}", "0".repeat(fp.len())),
        format!("{id}|reject|"),
    ];
    for (n, v) in forged.iter().enumerate() {
        let r = world.click_value("console:bob", v, Some(&format!("forged-{n}"))).await;
        assert!(r.ephemeral, "refused privately");
        let t = &r.message.text;
        assert!(t.contains("carries no plan fingerprint") || t.contains("changed since that message was shown"), "{v}: {t}");
        let now = world.exec(id).await;
        assert_eq!((now.state, now.approvals.len(), &now.steps), (before.state, 0, &before.steps), "{v} changed the execution");
    }
    let refused = world.audit().await.into_iter().filter(|r| r.entry.kind == "approval_refused").count();
    assert_eq!(refused, forged.len(), "each forged vote is audited");
    assert_eq!(world.probes.count("hello-check"), 1, "the pre-approval check ran once");

    // The real button still works.
    let r = world.click_value("console:bob", &value, Some("real")).await;
    assert!(r.message.text.contains("it is running"), "{}", r.message.text);
    world.wait_state(id, "succeeded").await;
}
