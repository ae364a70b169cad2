//! An execution rendered as the neutral status message: title, state line, fields, the step
//! list, and the buttons that make sense in its state.

use super::plan::human;
use crate::message::{Button, ButtonStyle, Message, StepLine};
use crate::model::{ExecState, Execution, StepStatus};
use chrono::{DateTime, Utc};

/// The button value: execution, action and the plan fingerprint the person was shown.
pub fn button_value(exec: &Execution, action: &str) -> String {
    format!("{}|{}|{}", exec.id, action, exec.fingerprint)
}

fn button(exec: &Execution, label: &str, action: &str, style: Option<ButtonStyle>) -> Button {
    Button { label: label.into(), action_id: action.into(), value: button_value(exec, action), style }
}

/// The follow-up button applies: the execution failed or was cancelled after the step that
/// makes it necessary started, the step that would have undone it did not succeed, and the
/// button was not used (or found stale) already.
pub fn follow_up_applies(exec: &Execution) -> bool {
    let Some(f) = &exec.follow_up else { return false };
    f.spent.is_none()
        && matches!(exec.state, ExecState::Failed | ExecState::Cancelled)
        && exec.steps.get(f.after_step).is_some_and(|s| s.status != StepStatus::Pending)
        && f.unless_step.and_then(|u| exec.steps.get(u)).is_none_or(|s| s.status != StepStatus::Succeeded)
}

pub fn render(exec: &Execution, now: DateTime<Utc>) -> Message {
    let approvals: Vec<String> = exec.approvals_for_plan().map(|a| a.identity.0.clone()).collect();
    let interrupted = exec.steps.iter().position(|s| s.status == StepStatus::Interrupted);
    let state_line = match exec.state {
        ExecState::AwaitingApproval => {
            let p = exec.policy.as_ref();
            let left = exec.expires_at.map(|e| (e - now).num_seconds().max(0) as u64).unwrap_or(0);
            format!(
                "⏳ Waiting for approval: {} of {} from {} — expires in {}.",
                approvals.len(),
                p.map(|p| p.required).unwrap_or(1),
                p.map(|p| p.groups.join(" or ")).unwrap_or_default(),
                human(left.div_ceil(60) * 60)
            )
        }
        ExecState::Running if interrupted.is_some() => format!(
            "⚠ runbot restarted while step {} was running. It is not safe to repeat it blindly: Resume runs it again, Abort stops here.",
            interrupted.map(|i| i + 1).unwrap_or(0)
        ),
        ExecState::Running => format!("▶ Running step {} of {}.", (exec.current + 1).min(exec.steps.len()), exec.steps.len()),
        ExecState::Succeeded => format!("✅ Succeeded: {} of {} steps done.", done(exec), exec.steps.len()),
        ExecState::Failed => format!("❌ Failed at step {} of {}.", exec.current + 1, exec.steps.len()),
        ExecState::Cancelled => "⊘ Cancelled.".to_string(),
        ExecState::Rejected => "✋ Rejected.".to_string(),
        ExecState::Expired => "⌛ Expired: nobody approved in time. Nothing was changed after the approval step.".to_string(),
    };
    let mut fields = vec![
        ("Requested by".to_string(), exec.requester.0.clone()),
        ("Target".to_string(), format!("{} {} ({})", exec.target.kind, exec.target.name, exec.target.env)),
        ("State".to_string(), exec.state.as_str().replace('_', " ")),
        ("Command".to_string(), exec.command.clone()),
    ];
    if !exec.resolved.is_empty() {
        // What the approvers approve: the diagnosis's result, bound into the fingerprint.
        fields.push(("Acts on".to_string(), exec.resolved.join(", ")));
    }
    if exec.policy.is_some() {
        let who = if approvals.is_empty() { "none yet".to_string() } else { approvals.join(", ") };
        fields.push(("Approvals".to_string(), who));
    }
    let steps = exec
        .steps
        .iter()
        .map(|s| StepLine { status: s.status, name: s.name.clone(), detail: s.summary.clone().unwrap_or_else(|| s.action.clone()) })
        .collect();
    let mut buttons = Vec::new();
    match exec.state {
        ExecState::AwaitingApproval => {
            buttons.push(button(exec, "Approve", "approve", Some(ButtonStyle::Primary)));
            buttons.push(button(exec, "Reject", "reject", Some(ButtonStyle::Danger)));
        }
        ExecState::Running if interrupted.is_some() => {
            buttons.push(button(exec, "Resume", "resume", Some(ButtonStyle::Primary)));
            buttons.push(button(exec, "Abort", "abort", Some(ButtonStyle::Danger)));
        }
        _ => {}
    }
    if follow_up_applies(exec)
        && let Some(f) = &exec.follow_up
    {
        buttons.push(button(exec, &f.label, "follow_up", Some(ButtonStyle::Primary)));
    }
    if !exec.artifacts.is_empty() {
        let list: Vec<String> = exec.artifacts.iter().map(|a| format!("{} ({})", a.name, bytes(a.bytes as u64))).collect();
        fields.push(("Artifacts".to_string(), list.join(", ")));
        buttons.push(button(exec, "Show artifacts", "artifacts", None));
    }
    let mut text = state_line;
    for n in &exec.notes {
        text.push_str("\n• ");
        text.push_str(n);
    }
    Message {
        title: exec.title(),
        text,
        fields,
        steps,
        code: None,
        buttons,
        footer: Some(format!("plan {} · {}", exec.fingerprint, exec.updated_at.format("%Y-%m-%d %H:%M:%S UTC"))),
    }
}

/// `812 B`, `14.2 MiB`, `3.1 GiB`.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn done(exec: &Execution) -> usize {
    exec.steps.iter().filter(|s| s.status == StepStatus::Succeeded).count()
}
