//! Clicks: Approve / Reject on a waiting execution, Resume / Abort on an interrupted step.
//! The button value only says which execution and action; everything else — state, expiry,
//! plan fingerprint, group membership, requester, earlier votes — is re-read and re-checked.

use super::plan::{self, resolve};
use super::runner::finish;
use super::{Click, Engine, Reply};
use crate::grammar::{self, ExecutionId};
use crate::model::{Approval, Decision, ExecState, Execution, FollowUp, StepStatus};
use crate::ports::ListFilter;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Approve,
    Reject,
    Resume,
    Abort,
    /// The execution's follow-up button ([Rollback], [Restart writers], ...).
    FollowUp,
    /// [Show artifacts]: the kept artifacts posted into the detail thread.
    Artifacts,
}

fn parse_value(v: &str) -> Option<(ExecutionId, Action, String)> {
    let mut parts = v.splitn(3, '|');
    let id: ExecutionId = parts.next()?.parse().ok()?;
    let action = match parts.next()? {
        "approve" => Action::Approve,
        "reject" => Action::Reject,
        "resume" => Action::Resume,
        "abort" => Action::Abort,
        "follow_up" | "restart_writers" => Action::FollowUp,
        "artifacts" => Action::Artifacts,
        _ => return None,
    };
    let fp = parts.next().unwrap_or("").to_string();
    (fp.len() <= 64 && fp.bytes().all(|b| b.is_ascii_hexdigit())).then_some((id, action, fp))
}

impl Engine {
    /// Handles one click. The click is in the audit log before anything changes.
    pub async fn handle_click(&self, click: Click) -> Reply {
        if let Some(alert) = click.value.strip_prefix(super::alerts::ALERT_BUTTON) {
            if let Some(r) = self.repeated_delivery(&click).await {
                return r;
            }
            return self.alert_click(&click, alert).await;
        }
        let Some((id, action, fp)) = parse_value(&click.value) else {
            self.audit("click_refused", Some(&click.identity), None, json!({"reason": "unreadable button value"})).await;
            return Reply::private("That button is not one runbot understands; nothing was changed.");
        };
        if let Some(r) = self.repeated_delivery(&click).await {
            return r;
        }
        self.audit("click", Some(&click.identity), Some(id), json!({"action": format!("{action:?}").to_lowercase(), "fingerprint": fp})).await;
        match action {
            Action::Approve | Action::Reject => self.vote(&click, id, action == Action::Approve, &fp).await,
            Action::Resume | Action::Abort => self.interrupted(&click, id, action == Action::Resume, &fp).await,
            Action::FollowUp => self.follow_up(&click, id, &fp).await,
            Action::Artifacts => self.show_artifacts(id).await,
        }
    }

    /// The follow-up button of a failed execution ([Rollback] on a deploy, [Restart writers]
    /// on a restore): a new execution of the follow-up runbook on the same target and
    /// environment, under its own approval policy, seeded with the carried resolved targets.
    ///
    /// The button is single-use and bound to the state it was offered for: it is refused once
    /// used, once a newer execution acted on the same target, or when the follow-up's plan,
    /// recomputed now, finds that what the failed execution left is no longer there (the
    /// release moved on, the writers run again). A refused follow-up creates nothing, and the
    /// failed execution's message loses the button.
    async fn follow_up(&self, click: &Click, id: ExecutionId, fp: &str) -> Reply {
        let exec = match self.store().load(id).await {
            Ok(Some(v)) => v.value,
            Ok(None) => return Reply::private(format!("There is no execution {id}.")),
            Err(e) => return super::UpdateError::Store(e).reply(),
        };
        if let Err(why) = plan_shown(&exec, fp) {
            return self.click_refused(click, id, why).await;
        }
        let label = exec.follow_up.as_ref().map(|f| f.label.clone()).unwrap_or_default();
        if let Some(spent) = exec.follow_up.as_ref().and_then(|f| f.spent.clone()) {
            // Its message lost the button when it was spent: nothing to edit.
            return self.click_refused(click, id, format!("The [{label}] of {id} was {spent}; it works once. Nothing was started.")).await;
        }
        let Some(f) = exec.follow_up.clone().filter(|_| super::render::follow_up_applies(&exec)) else {
            return self.click_refused(click, id, format!("{id} offers no follow-up in its current state; nothing was started.")).await;
        };
        if let Some(stale) = self.follow_up_stale(&exec, &f).await {
            self.spend_follow_up(id, &format!("withdrawn: {stale}")).await;
            return self.click_refused(click, id, format!("The [{label}] of {id} no longer applies: {stale}. Nothing was started.")).await;
        }
        // Claim the button before creating anything: of two clicks, one wins.
        let claim = format!("being used by {}", click.identity);
        let claimed = self
            .update(id, |ex| match ex.follow_up.as_mut() {
                Some(f) if f.spent.is_none() => {
                    f.spent = Some(claim.clone());
                    Ok(())
                }
                Some(f) => Err(format!("The [{label}] of {id} was {}; it works once. Nothing was started.", f.spent.clone().unwrap_or_default())),
                None => Err(format!("{id} offers no follow-up; nothing was started.")),
            })
            .await;
        if let Err(e) = claimed {
            let why = e.reply().message.text;
            return self.click_refused(click, id, why).await;
        }
        let seed: Vec<String> = match &f.carry {
            Some(prefix) => exec.resolved.iter().filter(|r| r.starts_with(prefix.as_str())).cloned().collect(),
            None => Vec::new(),
        };
        let cmd = follow_up_command(&exec, &f);
        let req = super::Request {
            identity: click.identity.clone(),
            origin: click.origin.clone(),
            text: format!("/ops run {} {} --env {} (from {id})", f.runbook, exec.target.name, exec.target.env),
            roles: click.roles.clone(),
        };
        match self.plan_runbook(&req, cmd, seed, None).await {
            Ok((reply, Some(new))) => {
                let used = format!("used by {new} ({})", click.identity);
                self.spend_follow_up(id, &used).await;
                self.audit("follow_up", Some(&click.identity), Some(id), json!({"runbook": f.runbook, "created": new.to_string()})).await;
                reply
            }
            Ok((reply, None)) | Err(reply) => {
                // Nothing was created: the button stays for someone who may use it.
                let _ = self
                    .update(id, |ex| {
                        if let Some(f) = ex.follow_up.as_mut().filter(|f| f.spent.as_deref() == Some(claim.as_str())) {
                            f.spent = None;
                        }
                        Ok(())
                    })
                    .await;
                reply
            }
        }
    }

    /// Why a follow-up of `exec` no longer applies, if it does not: a newer execution acted on
    /// the same target since, or a step of the follow-up's plan (recomputed under the current
    /// configuration) reads that what `exec` left is gone.
    async fn follow_up_stale(&self, exec: &Execution, f: &FollowUp) -> Option<String> {
        let filter = ListFilter { active_only: false, target: Some(exec.target.name.clone()), limit: 50 };
        match self.store().list(&filter).await {
            Ok(list) => {
                let newer =
                    list.iter().find(|e| e.id != exec.id && e.target == exec.target && e.mutating && e.created_at >= exec.created_at && acted(e));
                if let Some(n) = newer {
                    return Some(format!(
                        "{} ({} by {}, {}) acted on {} after it",
                        n.id,
                        n.runbook,
                        n.requester,
                        n.state.as_str().replace('_', " "),
                        exec.target.name
                    ));
                }
            }
            Err(e) => return Some(format!("runbot could not read the target's history ({e})")),
        }
        let settings = self.settings();
        let plan = match resolve(&settings, self.kinds(), &follow_up_command(exec, f), "R-(follow-up)", &exec.requester) {
            Ok(p) => p,
            Err(why) => return Some(why),
        };
        for step in &plan.steps {
            let Some(kind) = self.kinds().get(&step.kind) else { continue };
            if let Some(Err(why)) = kind.follow_up_applies(&step.params, exec).await {
                return Some(why);
            }
        }
        None
    }

    /// Marks the follow-up of `id` spent (`why`) and re-renders its message without the button.
    async fn spend_follow_up(&self, id: ExecutionId, why: &str) {
        let res = self
            .update(id, |ex| {
                if let Some(f) = ex.follow_up.as_mut() {
                    f.spent = Some(why.to_string());
                    ex.notes.push(format!("[{}] {why}.", f.label));
                }
                // The final state was delivered already; this edit takes the button away.
                for m in ex.messages.iter_mut() {
                    m.final_sent = false;
                }
                Ok(())
            })
            .await;
        if let Ok((saved, ())) = res {
            self.publish(&saved);
        }
    }

    /// The answer to a click whose delivery was handled before (nothing is done again).
    async fn repeated_delivery(&self, click: &Click) -> Option<Reply> {
        let d = click.delivery.as_ref()?;
        match self.store().first_delivery(d, self.now()).await {
            Ok(true) => None,
            Ok(false) => {
                tracing::info!(delivery = %d, "repeated delivery ignored");
                Some(Reply::private("Already handled."))
            }
            Err(e) => Some(super::UpdateError::Store(e).reply()),
        }
    }

    /// A refused click: audited with its reason, answered privately; nothing changed.
    async fn click_refused(&self, click: &Click, id: ExecutionId, why: String) -> Reply {
        self.audit("click_refused", Some(&click.identity), Some(id), json!({"reason": why})).await;
        Reply::private(why)
    }

    /// [Show artifacts]: posts each kept artifact into the execution's detail thread(s).
    async fn show_artifacts(&self, id: ExecutionId) -> Reply {
        let exec = match self.store().load(id).await {
            Ok(Some(v)) => v.value,
            Ok(None) => return Reply::private(format!("There is no execution {id}.")),
            Err(e) => return super::UpdateError::Store(e).reply(),
        };
        let artifacts = match self.store().artifacts(id).await {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => return Reply::private(format!("{id} has no artifacts.")),
            Err(e) => return super::UpdateError::Store(e).reply(),
        };
        let names: Vec<String> = artifacts.iter().map(|(n, _)| n.clone()).collect();
        let engine = self.clone();
        tokio::spawn(async move {
            for (name, content) in artifacts {
                engine.post_to_threads(&exec, &format!("Artifact {name} of {id}:"), &content).await;
            }
        });
        Reply::private(format!(
            "Posting {} into the thread of {id}. To keep them as files: runbot artifacts export {id} --config <your runbot.toml> --out <directory>",
            names.join(", ")
        ))
    }

    async fn vote(&self, click: &Click, id: ExecutionId, approve: bool, fp: &str) -> Reply {
        let settings = self.settings();
        let who = click.identity.clone();
        let person = settings.person(&who);
        let now = self.now();
        // Re-plan under the current settings: a plan that changed voids the votes it had.
        let replanned = match self.store().load(id).await {
            Ok(Some(v)) if v.value.state == ExecState::AwaitingApproval => {
                let cmd = grammar::parse(&v.value.command).ok();
                cmd.map(|c| resolve(&settings, self.kinds(), &c, &id.to_string(), &v.value.requester))
            }
            _ => None,
        };
        let res = self
            .update(id, |exec| {
                if exec.state != ExecState::AwaitingApproval {
                    return Err(format!("{id} is not waiting for approval (it is {}); nothing was changed.", exec.state.as_str().replace('_', " ")));
                }
                if exec.expires_at.is_some_and(|e| now >= e) {
                    return Err(format!("The approval window of {id} has closed; it will be marked expired."));
                }
                // A vote counts only for the exact plan the person was shown.
                plan_shown(exec, fp)?;
                match &replanned {
                    Some(Ok(p)) => {
                        let new_fp = plan::fingerprint(&p.runbook, &p.target, &p.vars, &p.steps, &p.policy, &exec.resolved);
                        if new_fp != exec.fingerprint {
                            let voided = exec.approvals_for_plan().count();
                            let waiting = exec.current;
                            let mut steps = p.steps.clone();
                            // Steps already done keep their record; the approval waits again.
                            for (j, s) in steps.iter_mut().enumerate().take(waiting + 1) {
                                if let Some(old) = exec.steps.get(j) {
                                    *s = old.clone();
                                }
                            }
                            exec.steps = steps;
                            exec.fingerprint = new_fp;
                            exec.policy = p.policy.clone();
                            exec.notes.push(format!(
                                "The plan changed since it was shown (configuration reloaded): {voided} approval(s) voided. Review the new plan."
                            ));
                            return Ok(Some(true));
                        }
                    }
                    Some(Err(why)) => return Err(format!("{id} can no longer be planned under the current configuration: {why}")),
                    None => {}
                }
                let Some(policy) = exec.policy.clone() else {
                    return Err(format!("{id} has no approval policy; nothing to approve."));
                };
                if !settings.may_approve(&who, &click.roles, &policy) {
                    return Err(format!("Approving {id} needs membership of {}; you ({who}) are not a member.", policy.groups.join(" or ")));
                }
                // One person, whichever platform they click on (`[people]`); the mapping as it
                // is now also covers identities recorded before they were declared one person.
                let is_requester = person == exec.requester_person || person == settings.person(&exec.requester);
                if is_requester && !policy.self_approval && approve {
                    let how = if who == exec.requester { String::new() } else { format!(" as {}", exec.requester) };
                    return Err(format!("You requested {id}{how}; someone else must approve it (self-approval is off)."));
                }
                let earlier = exec
                    .approvals
                    .iter()
                    .find(|a| a.fingerprint == exec.fingerprint && (a.person == person || settings.person(&a.identity) == person));
                if let Some(a) = earlier {
                    let how = if a.identity == who { String::new() } else { format!(" as {}", a.identity) };
                    return Err(format!("You already voted on {id}{how}; one vote per person."));
                }
                exec.approvals.push(Approval {
                    person: person.clone(),
                    identity: who.clone(),
                    decision: if approve { Decision::Approve } else { Decision::Reject },
                    at: now,
                    fingerprint: exec.fingerprint.clone(),
                });
                if !approve {
                    exec.notes.push(format!("Rejected by {who}."));
                    let i = exec.current;
                    exec.steps[i].status = StepStatus::Failed;
                    exec.steps[i].summary = Some(format!("rejected by {who}"));
                    finish(exec, ExecState::Rejected);
                } else if exec.approvals_for_plan().count() as u32 >= policy.required {
                    let i = exec.current;
                    let names: Vec<String> = exec.approvals_for_plan().map(|a| a.identity.0.clone()).collect();
                    exec.steps[i].status = StepStatus::Succeeded;
                    exec.steps[i].summary = Some(format!("approved by {}", names.join(", ")));
                    exec.steps[i].finished_at = Some(now);
                    exec.current = i + 1;
                    exec.state = ExecState::Running;
                    exec.expires_at = None;
                }
                Ok(None)
            })
            .await;
        match res {
            Ok((exec, voided)) => {
                self.audit(
                    "approval",
                    Some(&who),
                    Some(id),
                    json!({"decision": if approve { "approve" } else { "reject" }, "fingerprint": exec.fingerprint, "voided_plan": voided.is_some(), "state": exec.state.as_str()}),
                )
                .await;
                self.publish(&exec);
                if voided.is_none() {
                    self.inner.metrics.approval(if approve { "approve" } else { "reject" });
                    self.count_finished(&exec);
                }
                if voided.is_some() {
                    return Reply::private(format!(
                        "The plan of {id} changed since it was shown; earlier approvals were voided. Review the updated message and click again."
                    ));
                }
                if exec.state == ExecState::Running {
                    self.kick_and_wake(id);
                }
                Reply::private(match (approve, exec.state) {
                    (false, _) => format!("You rejected {id}."),
                    (true, ExecState::Running) => format!("You approved {id}; it is running."),
                    (true, _) => {
                        let p = exec.policy.as_ref().map(|p| p.required).unwrap_or(1);
                        format!("You approved {id} ({} of {p}).", exec.approvals_for_plan().count())
                    }
                })
            }
            Err(e) => {
                let reply = e.reply();
                self.audit("approval_refused", Some(&who), Some(id), json!({"reason": reply.message.text})).await;
                if reply.message.text.contains("has closed") {
                    self.expire_due().await;
                }
                reply
            }
        }
    }

    async fn interrupted(&self, click: &Click, id: ExecutionId, resume: bool, fp: &str) -> Reply {
        let settings = self.settings();
        let who = click.identity.clone();
        let res = self
            .update(id, |exec| {
                plan_shown(exec, fp)?;
                let Some(i) = exec.steps.iter().position(|s| s.status == StepStatus::Interrupted) else {
                    return Err(format!("{id} has no interrupted step; nothing was changed."));
                };
                let allowed = settings.person(&who) == exec.requester_person
                    || exec.policy.as_ref().is_some_and(|p| settings.in_any_group(&who, &click.roles, &p.groups));
                if !allowed {
                    return Err(format!("Only the requester or an approver of {id} may resume or abort it."));
                }
                if resume {
                    exec.steps[i].status = StepStatus::Pending;
                    exec.notes.push(format!("{who} chose Resume: step {} runs again.", i + 1));
                } else {
                    exec.steps[i].status = StepStatus::Cancelled;
                    exec.notes.push(format!("{who} chose Abort: stopped at step {} ({}), which may have partly run.", i + 1, exec.steps[i].name));
                    finish(exec, ExecState::Cancelled);
                }
                Ok(())
            })
            .await;
        match res {
            Ok((exec, ())) => {
                self.audit("interrupted", Some(&who), Some(id), json!({"decision": if resume { "resume" } else { "abort" }})).await;
                self.inner.metrics.approval(if resume { "resume" } else { "abort" });
                self.count_finished(&exec);
                self.publish(&exec);
                if resume {
                    self.kick_and_wake(id);
                }
                Reply::private(if resume { format!("Resuming {id}.") } else { format!("Aborted {id}.") })
            }
            Err(e) => self.click_refused(click, id, e.reply().message.text).await,
        }
    }
}

/// The button carried the fingerprint of the plan `exec` has now: a value with the part
/// removed or from another plan changes nothing.
fn plan_shown(exec: &Execution, fp: &str) -> Result<(), String> {
    if fp.is_empty() {
        return Err(format!(
            "That button of {} carries no plan fingerprint; only the buttons of its status message are accepted. Nothing was changed.",
            exec.id
        ));
    }
    if fp != exec.fingerprint {
        return Err(format!("The plan of {} changed since that message was shown; review the updated message and click again.", exec.id));
    }
    Ok(())
}

/// The follow-up's runbook on the failed execution's target and environment.
fn follow_up_command(exec: &Execution, f: &FollowUp) -> grammar::Command {
    grammar::Command::Run {
        runbook: f.runbook.clone(),
        target: exec.target.name.clone(),
        params: Default::default(),
        env: Some(exec.target.env.clone()),
        dry_run: false,
    }
}

/// Whether an execution got past its approval (or had none) into the steps that change things.
fn acted(e: &Execution) -> bool {
    let first = e.steps.iter().position(|s| s.kind == crate::steps::APPROVAL).map(|i| i + 1).unwrap_or(0);
    e.steps.iter().skip(first).any(|s| s.status != StepStatus::Pending)
}
