//! A postmortem timeline of one execution, built from the audit trail: the alert that
//! proposed it (fired, resolved), who requested it and the plan, each vote, each step's start,
//! end and outcome, follow-ups, cancels and errors — every time in UTC. Rendered as Markdown
//! (`/ops timeline R-5`, `runbot audit timeline R-5 --format md`) or JSON (`--format json`).

use crate::audit::AuditRecord;
use crate::model::Execution;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// The audit record it comes from (`seq`).
    pub seq: u64,
    /// `alert_fired`, `requested`, `vote`, `step_started`, `step_ended`, `follow_up`, `cancel`,
    /// `state`, `alert_resolved`, `refused`, `error`, ...
    pub kind: String,
    pub actor: Option<String>,
    pub text: String,
}

/// A step of the plan as the approvers saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    pub name: String,
    pub action: String,
}

/// The timeline of one execution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub execution: String,
    pub runbook: String,
    pub target: String,
    pub state: String,
    pub requester: String,
    pub command: String,
    pub plan: Vec<PlannedStep>,
    pub events: Vec<Event>,
}

fn s<'a>(d: &'a Value, key: &str) -> &'a str {
    d.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The timeline of `exec` from the whole audit trail `records` (in sequence order).
pub fn build(exec: &Execution, records: &[AuditRecord]) -> Timeline {
    let id = exec.id.to_string();
    let mine = |r: &&AuditRecord| r.entry.execution.as_deref() == Some(id.as_str());
    // The alerts it was started from (`alert_run`), whose fired/resolved records carry no
    // execution or a later one.
    let alerts: BTreeSet<String> =
        records.iter().filter(mine).filter(|r| r.entry.kind == "alert_run").map(|r| s(&r.entry.detail, "alert").to_string()).collect();
    let mut events = Vec::new();
    let mut started = BTreeSet::new();
    let mut last_state = String::new();
    for r in records {
        let e = &r.entry;
        let d = &e.detail;
        let of_alert = matches!(e.kind.as_str(), "alert_fired" | "alert_resolved") && alerts.contains(s(d, "alert"));
        if !of_alert && e.execution.as_deref() != Some(id.as_str()) {
            continue;
        }
        let (kind, text) = match e.kind.as_str() {
            "alert_fired" => (
                "alert_fired",
                format!(
                    "Alert {} fired{} ({})",
                    s(d, "alertname"),
                    d.get("starts_at").and_then(Value::as_str).map(|t| format!(", firing since {t}")).unwrap_or_default(),
                    s(d, "generator_url")
                ),
            ),
            "alert_resolved" => ("alert_resolved", format!("Alert {} resolved", s(d, "alertname"))),
            "alert_run" => ("requested", format!("Run from alert {} ({})", s(d, "alertname"), s(d, "alert"))),
            "execution" => ("requested", format!("Requested {} on {} (plan {})", s(d, "runbook"), s(d, "target"), s(d, "fingerprint"))),
            "approval" => (
                "vote",
                format!(
                    "{}{}",
                    if s(d, "decision") == "approve" { "Approved" } else { "Rejected" },
                    if d["voided_plan"] == true { " (the plan had changed: earlier votes voided)" } else { "" }
                ),
            ),
            "approval_refused" | "click_refused" | "lock_refused" => ("refused", format!("Refused: {}", s(d, "reason"))),
            "step" => {
                let n = d["step"].as_u64().unwrap_or(0);
                let summary = s(d, "summary");
                (
                    "step_ended",
                    format!(
                        "Step {n} {} {}{}",
                        s(d, "name"),
                        s(d, "status"),
                        if summary.is_empty() { String::new() } else { format!(" — {summary}") }
                    ),
                )
            }
            "state" => {
                let state = s(d, "state");
                let n = d["step"].as_u64().unwrap_or(0);
                if s(d, "step_status") == "running" && state == "running" && started.insert(n) {
                    let name = exec.steps.get((n as usize).saturating_sub(1)).map(|st| st.name.as_str()).unwrap_or("");
                    ("step_started", format!("Step {n} {name} started"))
                } else if state != last_state && state != "running" {
                    last_state = state.to_string();
                    ("state", format!("Execution {}", state.replace('_', " ")))
                } else {
                    continue;
                }
            }
            "follow_up" => ("follow_up", format!("Follow-up {} started as {}", s(d, "runbook"), s(d, "created"))),
            "cancel" => ("cancel", if d["immediate"] == true { "Cancelled before approval".into() } else { "Cancel requested".into() }),
            "interrupted" | "error" | "mirror_failed" => {
                ("error", format!("{}: {}", e.kind, if s(d, "error").is_empty() { d.to_string() } else { s(d, "error").to_string() }))
            }
            "artifact" => ("artifact", format!("Artifact {} kept", s(d, "name"))),
            _ => continue,
        };
        events.push(Event { at: e.at, seq: r.seq, kind: kind.into(), actor: e.actor.clone(), text });
    }
    // A change without a state record (a cancel before approval) still ends the timeline.
    let final_state = exec.state.as_str();
    if exec.state.is_terminal() && last_state != final_state {
        // Last: the record that caused it (e.g. `cancel`) is written after the change.
        let at = events.iter().map(|e| e.at).chain([exec.finished_at.unwrap_or(exec.updated_at)]).max().unwrap_or(exec.updated_at);
        events.push(Event { at, seq: u64::MAX, kind: "state".into(), actor: None, text: format!("Execution {}", final_state.replace('_', " ")) });
    }
    events.sort_by_key(|e| (e.at, e.seq));
    Timeline {
        execution: id,
        runbook: exec.runbook.clone(),
        target: format!("{} {} ({})", exec.target.kind, exec.target.name, exec.target.env),
        state: exec.state.as_str().replace('_', " "),
        requester: exec.requester.0.clone(),
        command: exec.command.clone(),
        plan: exec.steps.iter().map(|st| PlannedStep { name: st.name.clone(), action: st.action.clone() }).collect(),
        events,
    }
}

impl Timeline {
    /// Markdown: a heading, the plan, then one table row per event.
    pub fn markdown(&self) -> String {
        let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
        let mut out = format!(
            "# Timeline of {} — {} on {}\n\nRequested by {} as `{}`; final state: {}. Times are UTC.\n\n## Plan\n\n",
            self.execution, self.runbook, self.target, self.requester, self.command, self.state
        );
        for (i, st) in self.plan.iter().enumerate() {
            out.push_str(&format!("{}. {} — {}\n", i + 1, st.name, st.action.replace('\n', " ")));
        }
        out.push_str("\n## Events\n\n| time (UTC) | who | what |\n|---|---|---|\n");
        for e in &self.events {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                e.at.format("%Y-%m-%d %H:%M:%S"),
                cell(e.actor.as_deref().unwrap_or("runbot")),
                cell(&e.text)
            ));
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
