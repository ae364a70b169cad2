//! Alerts into runbooks: a firing alert that a `[[triggers]]` entry matches is posted once in
//! its environment's incident channel — the alert, the runbook's plan for the target (the
//! dry run's), and a [Run RUNBOOK TARGET] button. A repeat of the alert (same fingerprint)
//! edits that message, `resolved` edits it to resolved. The button's click is a command typed
//! by the clicking person: authorization and approvals apply unchanged, and the execution
//! notes the alert it came from.
//!
//! The alerts posted are kept in memory, rebuilt from the audit trail (`alert_fired`,
//! `alert_run`, `alert_resolved`) at the first alert or click after a start: after a restart
//! a repeat still edits its message and the button still works.

use super::plan::resolve;
use super::{Click, Engine, Reply, Request};
use crate::alerts::{Alert, AlertStatus, Proposal, propose};
use crate::grammar::{self, ExecutionId};
use crate::message::{Button, ButtonStyle, Message};
use crate::model::Identity;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// The button value prefix of an alert's [Run …] button: `alert|<fingerprint>`.
pub const ALERT_BUTTON: &str = "alert|";

/// Alerts remembered at most; past it the resolved ones are forgotten.
const REMEMBERED: usize = 10_000;

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
    /// this process saw it fire).
    Unmatched(&'static str),
    /// The chat platform did not take the message (the sender should retry).
    Failed(String),
}

/// One alert this process posted.
#[derive(Debug, Clone)]
pub(super) struct Posted {
    alert: Alert,
    proposal: Proposal,
    platform: String,
    channel: String,
    message: String,
    /// The execution started from it.
    execution: Option<ExecutionId>,
    /// The planned steps, or why the runbook cannot be planned for the target.
    plan: Result<Vec<String>, String>,
}

/// The alerts posted, by fingerprint; `loaded` once the audit trail was read.
#[derive(Default)]
pub(super) struct Book {
    loaded: bool,
    by_fingerprint: HashMap<String, Posted>,
}

pub(super) type Alerts = tokio::sync::Mutex<Book>;

fn text(d: &serde_json::Value, key: &str) -> String {
    d.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

fn map(d: &serde_json::Value, key: &str) -> BTreeMap<String, String> {
    serde_json::from_value(d.get(key).cloned().unwrap_or_default()).unwrap_or_default()
}

impl Engine {
    /// Handles one alert (firing or resolved). Alerts are handled one at a time.
    pub async fn handle_alert(&self, alert: Alert) -> AlertOutcome {
        let settings = self.settings();
        let Some(cfg) = settings.config.alerts.clone() else { return AlertOutcome::Unmatched("no_trigger") };
        let mut book = self.alert_book().await;
        let posted = &mut book.by_fingerprint;
        if let Some(p) = posted.get_mut(&alert.fingerprint) {
            let resolved = alert.status == AlertStatus::Resolved;
            p.alert = alert;
            let msg = alert_message(p).map_text(|t| settings.redactor.redact(t));
            let Some(chat) = self.chats().get(&p.platform) else { return AlertOutcome::Failed(format!("no {} adapter is running", p.platform)) };
            if let Err(e) = chat.update(&p.channel, &p.message, &msg).await {
                return AlertOutcome::Failed(e.to_string());
            }
            if resolved {
                self.audit("alert_resolved", None, p.execution, alert_detail(p)).await;
                return AlertOutcome::Resolved;
            }
            return AlertOutcome::Edited;
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
        let plan = self.alert_plan(&proposal);
        let mut p = Posted { alert, proposal, platform: cfg.platform.clone(), channel, message: String::new(), execution: None, plan };
        let msg = alert_message(&p).map_text(|t| settings.redactor.redact(t));
        let Some(chat) = self.chats().get(&p.platform) else { return AlertOutcome::Failed(format!("no {} adapter is running", p.platform)) };
        match chat.post(&p.channel, None, &msg).await {
            Ok(id) => p.message = id.clone(),
            Err(e) => return AlertOutcome::Failed(e.to_string()),
        }
        self.audit("alert_fired", None, None, alert_detail(&p)).await;
        if posted.len() >= REMEMBERED {
            posted.retain(|_, p| p.alert.status == AlertStatus::Firing);
        }
        let id = p.message.clone();
        posted.insert(p.alert.fingerprint.clone(), p);
        AlertOutcome::Posted(id)
    }

    /// The alerts posted, read from the audit trail the first time (again later if the store
    /// did not answer).
    async fn alert_book(&self) -> tokio::sync::MutexGuard<'_, Book> {
        let mut book = self.inner.alerts.lock().await;
        if book.loaded {
            return book;
        }
        match self.store().audit_log().await {
            Ok((records, _)) => {
                for r in &records {
                    self.replay_alert(&mut book.by_fingerprint, &r.entry);
                }
                if book.by_fingerprint.len() >= REMEMBERED {
                    book.by_fingerprint.retain(|_, p| p.alert.status == AlertStatus::Firing);
                }
                book.loaded = true;
            }
            Err(e) => tracing::warn!(error = %e, "could not read the alerts posted before from the audit trail; trying again at the next alert"),
        }
        book
    }

    /// One audit record about an alert, applied to the alerts posted.
    fn replay_alert(&self, posted: &mut HashMap<String, Posted>, e: &crate::audit::AuditEntry) {
        let d = &e.detail;
        let fingerprint = text(d, "alert");
        match e.kind.as_str() {
            "alert_fired" => {
                let proposal = Proposal { runbook: text(d, "runbook"), target: text(d, "target"), env: text(d, "env") };
                let time = |k: &str| d.get(k).and_then(|v| serde_json::from_value(v.clone()).ok());
                let alert = Alert {
                    fingerprint: fingerprint.clone(),
                    status: AlertStatus::Firing,
                    labels: map(d, "labels"),
                    annotations: map(d, "annotations"),
                    starts_at: time("starts_at"),
                    ends_at: time("ends_at"),
                    generator_url: text(d, "generator_url"),
                };
                let plan = self.alert_plan(&proposal);
                let p = Posted {
                    alert,
                    proposal,
                    platform: text(d, "platform"),
                    channel: text(d, "channel"),
                    message: text(d, "message"),
                    execution: None,
                    plan,
                };
                posted.insert(fingerprint, p);
            }
            "alert_run" => {
                if let Some(p) = posted.get_mut(&fingerprint) {
                    p.execution = e.execution.as_deref().and_then(|x| x.parse().ok());
                }
            }
            "alert_resolved" => {
                if let Some(p) = posted.get_mut(&fingerprint) {
                    p.alert.status = AlertStatus::Resolved;
                }
            }
            _ => {}
        }
    }

    /// The proposal's dry run: each step and its exact action, or why it cannot be planned.
    fn alert_plan(&self, proposal: &Proposal) -> Result<Vec<String>, String> {
        let cmd = grammar::parse(&proposal.command(true)).map_err(|e| e.to_string())?;
        let plan = resolve(&self.settings(), self.kinds(), &cmd, "R-(alert)", &Identity::new("console:alertmanager"))?;
        // The steps before the approval are the diagnosis: they run once someone clicks.
        let gate = plan.steps.iter().position(|s| s.kind == crate::steps::APPROVAL).unwrap_or(plan.steps.len());
        Ok(plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {} — {}{}", i + 1, s.name, s.action, if i < gate { " (diagnosis, before approval)" } else { "" }))
            .collect())
    }

    /// The [Run RUNBOOK TARGET] button of an alert: the proposal as a command typed by the
    /// person who clicked, then the alert noted on the new execution and its message.
    pub(super) async fn alert_click(&self, click: &Click, fingerprint: &str) -> Reply {
        if fingerprint.is_empty() || fingerprint.len() > 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.audit("click_refused", Some(&click.identity), None, json!({"reason": "unreadable alert button"})).await;
            return Reply::private("That button is not one runbot understands; nothing was changed.");
        }
        self.audit("click", Some(&click.identity), None, json!({"action": "alert_run", "alert": fingerprint})).await;
        let mut book = self.alert_book().await;
        let Some(p) = book.by_fingerprint.get_mut(fingerprint) else {
            return Reply::private(
                "runbot no longer knows this alert (it forgot it long after it resolved); nothing was started. Type the command instead.",
            );
        };
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
    m.code = Some(match &p.plan {
        Ok(steps) => format!("Dry run — what {} on {} would do:\n{}", p.proposal.runbook, p.proposal.target, steps.join("\n")),
        Err(why) => format!("runbot cannot plan {} on {} ({}): {why}", p.proposal.runbook, p.proposal.target, p.proposal.env),
    });
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
