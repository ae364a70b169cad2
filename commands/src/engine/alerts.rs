//! Alerts into runbooks: a firing alert that a `[[triggers]]` entry matches is posted once in
//! its environment's incident channel — the alert, the runbook's plan for the target, the
//! result of its read-only diagnosis (the steps before the approval, run at once as a dry run,
//! within `[alerts] diagnosis_timeout`), and a [Run RUNBOOK TARGET] button. A repeat of the
//! alert (same fingerprint) edits that message, `resolved` edits it to resolved. The button's
//! click is a command typed by the clicking person: authorization and approvals apply
//! unchanged, and the execution notes the alert it came from.
//!
//! The alerts posted live in the store (`Store::alert`): a repeat, a `resolved` or a click
//! that reaches another replica, or this one after a restart, finds the same message. The
//! first process to store an alert's fingerprint posts it; the others edit.

use super::plan::resolve;
use super::{Click, Engine, Reply, Request};
use crate::alerts::{Alert, AlertStatus, Proposal, propose};
use crate::grammar::{self, ExecutionId};
use crate::message::{Button, ButtonStyle, Message};
use crate::model::{Identity, Origin, StepStatus};
use crate::ports::PostedAlert;
use crate::steps::{APPROVAL, ProcessLog, StepContext, StepOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The button value prefix of an alert's [Run …] button: `alert|<fingerprint>`.
pub const ALERT_BUTTON: &str = "alert|";

/// Resolved alerts are forgotten this long after they resolved.
const KEEP_RESOLVED: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// A diagnosis step still running at the deadline is cancelled and given this long to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Output lines of a diagnosis step shown in the message (the last ones).
const OUTPUT_LINES: usize = 8;

/// What became of one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOutcome {
    /// A new message was posted (its id).
    Posted(String),
    /// The message of the same alert was edited (a repeat).
    Edited,
    /// The message was edited to resolved.
    Resolved,
    /// Not posted, for this reason: `no_trigger` (no trigger matches), `bad_labels` (the
    /// matching trigger cannot be filled), `no_channel`, `unknown_resolved` (resolved before
    /// runbot saw it fire).
    Unmatched(&'static str),
    /// The chat platform or the store did not take it, or another process is posting the same
    /// alert right now (the sender should retry; the retry edits what was posted).
    Failed(String),
}

/// One step of the diagnosis, as it ran for the alert's target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Diagnosed {
    name: String,
    /// `succeeded`, `failed`, `timed out` or `not run`.
    outcome: String,
    summary: String,
    /// The last lines of its output.
    output: Vec<String>,
}

/// One alert runbot posted, as stored (`PostedAlert::doc`; the message id is beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Posted {
    alert: Alert,
    proposal: Proposal,
    platform: String,
    channel: String,
    #[serde(skip)]
    message: String,
    /// The execution started from it.
    execution: Option<ExecutionId>,
    /// The planned steps, or why the runbook cannot be planned for the target.
    plan: Result<Vec<String>, String>,
    /// The diagnosis' steps, or why there is none.
    diagnosis: Result<Vec<Diagnosed>, String>,
}

impl Posted {
    fn stored(&self, now: chrono::DateTime<chrono::Utc>) -> PostedAlert {
        PostedAlert {
            fingerprint: self.alert.fingerprint.clone(),
            message: self.message.clone(),
            firing: self.alert.status == AlertStatus::Firing,
            doc: serde_json::to_value(self).unwrap_or_default(),
            updated_at: now,
        }
    }

    fn read(a: PostedAlert) -> Result<Posted, String> {
        let mut p: Posted = serde_json::from_value(a.doc).map_err(|e| format!("the stored alert {} is unreadable: {e}", a.fingerprint))?;
        p.message = a.message;
        Ok(p)
    }
}

/// One process handles one alert at a time (the store orders them between processes).
pub(super) type Alerts = tokio::sync::Mutex<()>;

impl Engine {
    /// Handles one alert (firing or resolved).
    pub async fn handle_alert(&self, alert: Alert) -> AlertOutcome {
        let settings = self.settings();
        let Some(cfg) = settings.config.alerts.clone() else { return AlertOutcome::Unmatched("no_trigger") };
        let _one = self.inner.alerts.lock().await;
        let stored = match self.store().alert(&alert.fingerprint).await {
            Ok(s) => s,
            Err(e) => return AlertOutcome::Failed(e.to_string()),
        };
        let limit = crate::config::parse_duration(&cfg.diagnosis_timeout).unwrap_or(Duration::from_secs(30));
        if let Some(s) = stored {
            // Claimed by a process that has not posted it: it is posting now — or died
            // doing so, and then, well past its diagnosis' deadline, this one takes over.
            let stale = self.now() - s.updated_at > chrono::TimeDelta::from_std(limit + STOP_GRACE * 12).unwrap_or(chrono::TimeDelta::MAX);
            if s.message.is_empty() && !stale {
                return AlertOutcome::Failed(format!("alert {} is being posted by another process", alert.fingerprint));
            }
            // A resolved alert that fires again is a new incident: a new message, a new
            // diagnosis; anything else edits the message posted.
            let fires_again = !s.firing && alert.status == AlertStatus::Firing;
            if !s.message.is_empty() && !fires_again {
                return self.alert_again(alert, s).await;
            }
            if let Err(e) = self.store().forget_alert(&s.fingerprint, self.now() - KEEP_RESOLVED).await {
                return AlertOutcome::Failed(e.to_string());
            }
        }
        if alert.status == AlertStatus::Resolved {
            return AlertOutcome::Unmatched("unknown_resolved");
        }
        let proposal = match propose(&settings.config.triggers, &alert) {
            Ok(Some(p)) => p,
            Ok(None) => return AlertOutcome::Unmatched("no_trigger"),
            Err(why) => {
                tracing::warn!(fingerprint = %alert.fingerprint, alertname = alert.name(), %why, "a trigger matched an alert whose labels cannot fill it");
                return AlertOutcome::Unmatched("bad_labels");
            }
        };
        let Some(channel) = settings.incident_channel(&proposal.env, &cfg.platform).or(cfg.channel.as_deref()).map(str::to_string) else {
            tracing::warn!(env = %proposal.env, platform = %cfg.platform, "an alert's environment has no incident channel and [alerts] channel is not set");
            return AlertOutcome::Unmatched("no_channel");
        };
        let mut p = Posted {
            alert,
            proposal,
            platform: cfg.platform.clone(),
            channel,
            message: String::new(),
            execution: None,
            plan: Err("not planned yet".into()),
            diagnosis: Err("not run yet".into()),
        };
        // Claimed before the diagnosis runs: one process runs it and posts.
        match self.store().insert_alert(&p.stored(self.now())).await {
            Ok(true) => {}
            Ok(false) => return AlertOutcome::Failed(format!("alert {} is being posted by another process", p.alert.fingerprint)),
            Err(e) => return AlertOutcome::Failed(e.to_string()),
        }
        (p.plan, p.diagnosis) = self.alert_dry_run(&p, limit).await;
        let msg = alert_message(&p).map_text(|t| settings.redactor.redact(t));
        let posted = match self.chats().get(&p.platform) {
            Some(chat) => chat.post(&p.channel, None, &msg).await.map_err(|e| e.to_string()),
            None => Err(format!("no {} adapter is running", p.platform)),
        };
        match posted {
            Ok(id) => p.message = id,
            Err(e) => {
                // Unclaimed, so the sender's retry posts it.
                if let Err(f) = self.store().forget_alert(&p.alert.fingerprint, self.now() - KEEP_RESOLVED).await {
                    tracing::warn!(error = %f, "could not forget an alert whose message was not posted");
                }
                return AlertOutcome::Failed(e);
            }
        }
        if let Err(e) = self.store().save_alert(&p.stored(self.now())).await {
            tracing::error!(error = %e, fingerprint = %p.alert.fingerprint, "the alert was posted but its message id could not be stored");
        }
        self.audit("alert_fired", None, None, alert_detail(&p)).await;
        AlertOutcome::Posted(p.message)
    }

    /// A repeat or the resolution of an alert posted before (by any process): its message is
    /// edited, and the new state stored.
    async fn alert_again(&self, alert: Alert, stored: PostedAlert) -> AlertOutcome {
        let mut p = match Posted::read(stored) {
            Ok(p) => p,
            Err(e) => return AlertOutcome::Failed(e),
        };
        let resolved = alert.status == AlertStatus::Resolved;
        let was_resolved = p.alert.status == AlertStatus::Resolved;
        p.alert = alert;
        let settings = self.settings();
        let msg = alert_message(&p).map_text(|t| settings.redactor.redact(t));
        let Some(chat) = self.chats().get(&p.platform) else { return AlertOutcome::Failed(format!("no {} adapter is running", p.platform)) };
        if let Err(e) = chat.update(&p.channel, &p.message, &msg).await {
            return AlertOutcome::Failed(e.to_string());
        }
        if let Err(e) = self.store().save_alert(&p.stored(self.now())).await {
            return AlertOutcome::Failed(e.to_string());
        }
        if resolved {
            if !was_resolved {
                self.audit("alert_resolved", None, p.execution, alert_detail(&p)).await;
            }
            return AlertOutcome::Resolved;
        }
        AlertOutcome::Edited
    }

    /// The proposal's dry run: each planned step and its exact action (or why it cannot be
    /// planned), and the diagnosis — the steps before the approval, run now for the target.
    async fn alert_dry_run(&self, p: &Posted, limit: Duration) -> (Result<Vec<String>, String>, Result<Vec<Diagnosed>, String>) {
        let requester = Identity::new("console:alertmanager");
        let command = p.proposal.command(true);
        let planned = grammar::parse(&command)
            .map_err(|e| e.to_string())
            .and_then(|cmd| resolve(&self.settings(), self.kinds(), &cmd, "R-(alert)", &requester));
        let plan = match planned {
            Ok(plan) => plan,
            Err(why) => return (Err(why.clone()), Err(format!("nothing was run: {why}"))),
        };
        let gate = plan.steps.iter().position(|s| s.kind == APPROVAL);
        let lines = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let diagnosis = gate.is_some_and(|g| i < g);
                format!("{}. {} — {}{}", i + 1, s.name, s.action, if diagnosis { " (diagnosis, before approval)" } else { "" })
            })
            .collect();
        let runbook = &p.proposal.runbook;
        let diagnosis = match gate {
            None => Err(format!("the {runbook} runbook has no approval step, so none of its steps is known to be read-only; nothing was run")),
            Some(0) => Err(format!("the {runbook} runbook has no read-only step before its approval; nothing was run")),
            Some(g) => {
                let req = Request {
                    identity: requester,
                    origin: Origin { platform: p.platform.clone(), channel: p.channel.clone(), thread: None },
                    text: command,
                    roles: Vec::new(),
                };
                let exec = self.new_execution(&req, ExecutionId(0), plan, Vec::new(), None);
                Ok(self.diagnose(exec, g, limit).await)
            }
        };
        (Ok(lines), diagnosis)
    }

    /// Runs steps `..gate` of `exec` (never stored) one after the other, each as it would run
    /// before the approval, until one fails, ends the runbook, or `limit` is spent. Only
    /// idempotent (read-only) steps run; another is shown as not run and stops the diagnosis.
    async fn diagnose(&self, mut exec: crate::model::Execution, gate: usize, limit: Duration) -> Vec<Diagnosed> {
        let deadline = tokio::time::Instant::now() + limit;
        let redact = |t: &str| self.settings().redactor.redact(t);
        let mut out = Vec::new();
        let mut stop: Option<String> = None;
        for i in 0..gate {
            let step = exec.steps[i].clone();
            let not_run = |summary: String| Diagnosed { name: step.name.clone(), outcome: "not run".into(), summary, output: Vec::new() };
            if let Some(why) = &stop {
                out.push(not_run(why.clone()));
                continue;
            }
            if !step.idempotent {
                let why = "not marked idempotent (read-only), so not run before an approval".to_string();
                out.push(not_run(why));
                stop = Some(format!("step {} was not run", i + 1));
                continue;
            }
            let Some(kind) = self.kinds().get(&step.kind).cloned() else {
                out.push(not_run(format!("step kind '{}' is not available in this runbot", step.kind)));
                stop = Some(format!("step {} could not run", i + 1));
                continue;
            };
            exec.current = i;
            exec.steps[i].status = StepStatus::Running;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let (artifacts, _kept) = mpsc::unbounded_channel();
            let (cancel_tx, cancel) = watch::channel(false);
            let ctx = StepContext {
                execution: exec.clone(),
                step: i,
                output: tx,
                cancel,
                secrets: self.settings().secrets.clone(),
                artifacts,
                processes: unrecorded_processes(),
            };
            let run = kind.run(&step.params, ctx);
            tokio::pin!(run);
            let outcome = tokio::select! {
                o = &mut run => Some(o),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let (outcome, timed_out) = match outcome {
                Some(o) => (o, false),
                None => {
                    let _ = cancel_tx.send(true);
                    let o = tokio::time::timeout(STOP_GRACE, &mut run).await.unwrap_or(StepOutcome::Cancelled(String::new()));
                    (o, true)
                }
            };
            let mut lines = Vec::new();
            while let Ok(chunk) = rx.try_recv() {
                lines.extend(chunk.lines().map(&redact));
            }
            let lines = lines.split_off(lines.len().saturating_sub(OUTPUT_LINES));
            let summary = redact(outcome.summary());
            let (label, summary) = if timed_out {
                stop = Some("the diagnosis ran out of time".into());
                (
                    "timed out",
                    format!(
                        "still running after {}s, cancelled{}",
                        limit.as_secs(),
                        if summary.is_empty() { String::new() } else { format!(": {summary}") }
                    ),
                )
            } else {
                match outcome {
                    StepOutcome::Succeeded(_) => ("succeeded", summary),
                    StepOutcome::Resolved { targets, .. } => {
                        exec.resolved.extend(targets);
                        ("succeeded", summary)
                    }
                    StepOutcome::Finished(_) => {
                        stop = Some("an earlier step found nothing to do".into());
                        ("succeeded", summary)
                    }
                    StepOutcome::Failed(_) | StepOutcome::Cancelled(_) => {
                        stop = Some(format!("step {} failed", i + 1));
                        ("failed", summary)
                    }
                }
            };
            exec.steps[i].status = StepStatus::Succeeded;
            out.push(Diagnosed { name: step.name.clone(), outcome: label.into(), summary, output: lines });
        }
        out
    }

    /// The [Run RUNBOOK TARGET] button of an alert: the proposal as a command typed by the
    /// person who clicked, then the alert noted on the new execution and its message.
    pub(super) async fn alert_click(&self, click: &Click, fingerprint: &str) -> Reply {
        if fingerprint.is_empty() || fingerprint.len() > 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.audit("click_refused", Some(&click.identity), None, json!({"reason": "unreadable alert button"})).await;
            return Reply::private("That button is not one runbot understands; nothing was changed.");
        }
        self.audit("click", Some(&click.identity), None, json!({"action": "alert_run", "alert": fingerprint})).await;
        let _one = self.inner.alerts.lock().await;
        let stored = match self.store().alert(fingerprint).await {
            Ok(Some(s)) => Posted::read(s),
            Ok(None) => Err("runbot no longer knows this alert (it forgot it long after it resolved)".to_string()),
            Err(e) => Err(format!("the store did not answer ({e})")),
        };
        let mut p = match stored {
            Ok(p) => p,
            Err(why) => return Reply::private(format!("{why}; nothing was started. Type the command instead.")),
        };
        let p = &mut p;
        let command = p.proposal.command(false);
        if p.alert.status == AlertStatus::Resolved {
            return Reply::private(format!("This alert has resolved; nothing was started. If it is still needed, type {command}"));
        }
        if let Some(id) = p.execution {
            let active = matches!(self.store().load(id).await, Ok(Some(v)) if !v.value.state.is_terminal());
            if active {
                return Reply::private(format!("{id} was already started from this alert; /ops status {id} shows where it is."));
            }
        }
        let cmd = match grammar::parse(&command) {
            Ok(c) => c,
            Err(e) => return Reply::private(e.to_string()),
        };
        let req = Request { identity: click.identity.clone(), origin: click.origin.clone(), text: command, roles: click.roles.clone() };
        let (reply, id) = match self.plan_runbook(&req, cmd, Vec::new(), None).await {
            Ok((reply, Some(id))) => (reply, id),
            Ok((reply, None)) | Err(reply) => return reply,
        };
        p.execution = Some(id);
        let a = &p.alert;
        let note = format!(
            "Started from alert {} (fingerprint {}{}{}).",
            a.name(),
            a.fingerprint,
            a.starts_at.map(|t| format!(", firing since {}", t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default(),
            if a.generator_url.is_empty() { String::new() } else { format!(", {}", a.generator_url) }
        );
        if let Ok((saved, ())) = self
            .update(id, |ex| {
                ex.notes.push(note.clone());
                Ok(())
            })
            .await
        {
            self.publish(&saved);
        }
        if let Err(e) = self.store().save_alert(&p.stored(self.now())).await {
            tracing::warn!(error = %e, execution = %id, "could not store the execution an alert started");
        }
        self.audit("alert_run", Some(&click.identity), Some(id), alert_detail(p)).await;
        let settings = self.settings();
        let msg = alert_message(p).map_text(|t| settings.redactor.redact(t));
        if let Some(chat) = self.chats().get(&p.platform)
            && let Err(e) = chat.update(&p.channel, &p.message, &msg).await
        {
            tracing::warn!(error = %e, execution = %id, "could not mark the alert message with the execution it started");
        }
        reply
    }
}

/// What the audit log keeps about an alert's message.
fn alert_detail(p: &Posted) -> serde_json::Value {
    json!({
        "alert": p.alert.fingerprint,
        "alertname": p.alert.name(),
        "labels": p.alert.labels,
        "annotations": p.alert.annotations,
        "platform": p.platform,
        "runbook": p.proposal.runbook,
        "target": p.proposal.target,
        "env": p.proposal.env,
        "starts_at": p.alert.starts_at,
        "ends_at": p.alert.ends_at,
        "generator_url": p.alert.generator_url,
        "channel": p.channel,
        "message": p.message,
        "execution": p.execution.map(|e| e.to_string()),
    })
}

/// The alert's message: what fired, the plan for the target, the button while it fires.
fn alert_message(p: &Posted) -> Message {
    let a = &p.alert;
    let firing = a.status == AlertStatus::Firing;
    let summary = a.annotations.get("summary").or_else(|| a.annotations.get("description")).cloned().unwrap_or_default();
    let state = if firing {
        "🔥 Firing.".to_string()
    } else {
        format!("✅ Resolved{}.", a.ends_at.map(|t| format!(" at {}", t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default())
    };
    let mut m = Message::text(if summary.is_empty() { state } else { format!("{state} {summary}") }).with_title(format!(
        "Alert {}: {} {} ({})",
        a.name(),
        p.proposal.runbook,
        p.proposal.target,
        p.proposal.env
    ));
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    m.fields.push(("Labels".into(), labels.join(", ")));
    if let Some(t) = a.starts_at {
        m.fields.push(("Started at".into(), t.format("%Y-%m-%d %H:%M:%S UTC").to_string()));
    }
    if !a.generator_url.is_empty() {
        m.fields.push(("Source".into(), a.generator_url.clone()));
    }
    m.fields.push(("Proposed".into(), p.proposal.command(false)));
    if let Some(id) = p.execution {
        m.fields.push(("Execution".into(), format!("{id} (/ops status {id})")));
    }
    let plan = match &p.plan {
        Ok(steps) => format!("Dry run — what {} on {} would do:\n{}", p.proposal.runbook, p.proposal.target, steps.join("\n")),
        Err(why) => format!("runbot cannot plan {} on {} ({}): {why}", p.proposal.runbook, p.proposal.target, p.proposal.env),
    };
    m.code = Some(format!("{plan}\n\n{}", diagnosis_text(p)));
    if firing && p.plan.is_ok() {
        m.buttons.push(Button {
            label: format!("Run {} {}", p.proposal.runbook, p.proposal.target),
            action_id: "alert_run".into(),
            value: format!("{ALERT_BUTTON}{}", a.fingerprint),
            style: Some(ButtonStyle::Primary),
        });
    }
    m.footer = Some(format!("Alert {} · the button runs it as you: approvals apply as for a typed command.", a.fingerprint));
    m
}

/// The diagnosis as the message shows it: each step's outcome, summary and last output lines.
fn diagnosis_text(p: &Posted) -> String {
    let steps = match &p.diagnosis {
        Ok(steps) => steps,
        Err(why) => return format!("Diagnosis: none — {why}."),
    };
    let mut out = format!("Diagnosis of {} (read-only steps before the approval, run when the alert fired):", p.proposal.target);
    for (i, d) in steps.iter().enumerate() {
        out.push_str(&format!(
            "\n{}. {} — {}{}",
            i + 1,
            d.name,
            d.outcome.to_uppercase(),
            if d.summary.is_empty() { String::new() } else { format!(": {}", d.summary) }
        ));
        for line in &d.output {
            out.push_str(&format!("\n   | {line}"));
        }
    }
    out
}

/// A process log for steps run outside an execution (the diagnosis): processes are not
/// recorded (nothing resumes a diagnosis), and a step stops its process when cancelled.
fn unrecorded_processes() -> ProcessLog {
    let (tx, mut rx) = mpsc::unbounded_channel::<(crate::model::StepProcess, tokio::sync::oneshot::Sender<Result<(), String>>)>();
    tokio::spawn(async move {
        while let Some((_, ack)) = rx.recv().await {
            let _ = ack.send(Ok(()));
        }
    });
    ProcessLog(tx)
}
