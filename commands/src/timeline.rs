//! A postmortem timeline of one execution, built from the audit trail: the alert that
//! proposed it (fired, resolved), who requested it and the plan, each vote, each step's start,
//! end and outcome with a link to its output, follow-ups, cancels and errors — every time in
//! UTC and, when the environment has a `time_zone`, in that zone too. Rendered as Markdown
//! (`/ops timeline R-5`, posted as a file in the execution's thread; `runbot audit timeline R-5
//! --format md`), JSON (`--format json`) or HTML (the console's timeline page).

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
    /// The time in the environment's time zone (`Timeline::in_zone`), e.g.
    /// `2026-12-06 03:10:00 CET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// The step it is about (1-based), for the link to its output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// Where the step's output is (`Timeline::with_output_links`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
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
    /// The IANA zone of `Event::local`, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
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
        let mut step = None;
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
                step = Some(n);
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
                    step = Some(n);
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
        events.push(Event { at: e.at, seq: r.seq, kind: kind.into(), actor: e.actor.clone(), text, local: None, step, output: None });
    }
    // A change without a state record (a cancel before approval) still ends the timeline.
    let final_state = exec.state.as_str();
    if exec.state.is_terminal() && last_state != final_state {
        // Last: the record that caused it (e.g. `cancel`) is written after the change.
        let at = events.iter().map(|e| e.at).chain([exec.finished_at.unwrap_or(exec.updated_at)]).max().unwrap_or(exec.updated_at);
        let text = format!("Execution {}", final_state.replace('_', " "));
        events.push(Event { at, seq: u64::MAX, kind: "state".into(), actor: None, text, local: None, step: None, output: None });
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
        time_zone: None,
    }
}

/// An IANA time zone name (`Europe/Madrid`), from the system's tz database, or why it is not
/// one.
pub fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name).map_err(|_| {
        format!("'{name}' is not an IANA time zone in this system's tz database (e.g. Europe/Madrid, America/New_York, UTC; package tzdata)")
    })
}

/// The path under the console where step `step` (1-based) of execution `id` shows its output.
pub fn output_path(id: &str, step: u64) -> String {
    format!("/console/executions/{id}/steps/{step}/output")
}

/// The path under the console of execution `id`'s timeline page.
pub fn page_path(id: &str) -> String {
    format!("/console/executions/{id}/timeline")
}

impl Timeline {
    /// The timeline as `settings` show it — `/ops timeline` and `runbot audit timeline` alike:
    /// each step linked to its output under `[console] url`, times also in the `time_zone` of
    /// `exec`'s environment, and every text redacted with the configured secrets.
    pub fn as_configured(self, exec: &Execution, settings: &crate::config::Settings) -> Timeline {
        let base = settings.config.console.url.clone().unwrap_or_default();
        let mut t = self.with_output_links(&base);
        if let Some(z) = settings.config.environments.get(&exec.target.env).and_then(|e| e.time_zone.as_deref()) {
            // Checked when the configuration was loaded.
            t = t.clone().in_zone(z).unwrap_or(t);
        }
        let r = &settings.redactor;
        t.command = r.redact(&t.command);
        for e in &mut t.events {
            e.text = r.redact(&e.text);
        }
        for st in &mut t.plan {
            st.action = r.redact(&st.action);
        }
        t
    }

    /// Each event's time also in zone `name` (IANA); `Err` when it is not a zone.
    pub fn in_zone(mut self, name: &str) -> Result<Timeline, String> {
        let tz = zone(name)?;
        for e in &mut self.events {
            e.local = jiff::Timestamp::from_microsecond(e.at.timestamp_micros())
                .ok()
                .map(|t| t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string());
        }
        self.time_zone = Some(name.to_string());
        Ok(self)
    }

    /// Each step event links to the step's output in the console at `base` (its public URL,
    /// or empty for a path on the console's own host).
    pub fn with_output_links(mut self, base: &str) -> Timeline {
        let base = base.trim_end_matches('/');
        for e in &mut self.events {
            if let Some(n) = e.step.filter(|n| *n > 0) {
                e.output = Some(format!("{base}{}", output_path(&self.execution, n)));
            }
        }
        self
    }

    /// The header of the time column(s).
    fn time_headers(&self) -> Vec<String> {
        let mut h = vec!["time (UTC)".to_string()];
        if let Some(z) = &self.time_zone {
            h.push(format!("time ({z})"));
        }
        h
    }

    /// An event's times: UTC, then the zone's.
    fn times(&self, e: &Event) -> Vec<String> {
        let mut t = vec![e.at.format("%Y-%m-%d %H:%M:%S").to_string()];
        if self.time_zone.is_some() {
            t.push(e.local.clone().unwrap_or_default());
        }
        t
    }

    /// The sentence under the title.
    fn intro(&self) -> String {
        let zones = match &self.time_zone {
            Some(z) => format!("Times are UTC and {z}."),
            None => "Times are UTC.".to_string(),
        };
        format!("Requested by {} as `{}`; final state: {}. {zones}", self.requester, self.command, self.state)
    }

    /// Markdown: a heading, the plan, then one table row per event.
    pub fn markdown(&self) -> String {
        let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
        let mut out = format!("# Timeline of {} — {} on {}\n\n{}\n\n## Plan\n\n", self.execution, self.runbook, self.target, self.intro());
        for (i, st) in self.plan.iter().enumerate() {
            out.push_str(&format!("{}. {} — {}\n", i + 1, st.name, st.action.replace('\n', " ")));
        }
        let headers = self.time_headers();
        out.push_str(&format!("\n## Events\n\n| {} | who | what | output |\n|{}---|---|---|\n", headers.join(" | "), "---|".repeat(headers.len())));
        for e in &self.events {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                self.times(e).join(" | "),
                cell(e.actor.as_deref().unwrap_or("runbot")),
                cell(&e.text),
                e.output.as_deref().map(|u| format!("[output]({})", cell(u))).unwrap_or_default()
            ));
        }
        out
    }

    /// HTML (a whole page, for the console): the same content as [`Timeline::markdown`], every
    /// text escaped.
    pub fn html(&self) -> String {
        let mut out = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Timeline of {id}</title></head><body>\n<h1>Timeline of {id} — {rb} on {target}</h1>\n<p>{intro}</p>\n<h2>Plan</h2>\n<ol>\n",
            id = escape(&self.execution),
            rb = escape(&self.runbook),
            target = escape(&self.target),
            intro = escape(&self.intro()),
        );
        for st in &self.plan {
            out.push_str(&format!("<li>{} — <code>{}</code></li>\n", escape(&st.name), escape(&st.action)));
        }
        out.push_str("</ol>\n<h2>Events</h2>\n<table>\n<tr>");
        for h in self.time_headers() {
            out.push_str(&format!("<th>{}</th>", escape(&h)));
        }
        out.push_str("<th>who</th><th>what</th><th>output</th></tr>\n");
        for e in &self.events {
            out.push_str("<tr>");
            for t in self.times(e) {
                out.push_str(&format!("<td>{}</td>", escape(&t)));
            }
            let link = e.output.as_deref().map(|u| format!("<a href=\"{}\">output</a>", escape(u))).unwrap_or_default();
            out.push_str(&format!("<td>{}</td><td>{}</td><td>{link}</td></tr>\n", escape(e.actor.as_deref().unwrap_or("runbot")), escape(&e.text)));
        }
        out.push_str("</table>\n</body></html>\n");
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Text as HTML text or attribute value.
pub fn escape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn sample() -> Timeline {
        let event = |t: &str, seq: u64, kind: &str, text: &str, step: Option<u64>| Event {
            at: at(t),
            seq,
            kind: kind.into(),
            actor: Some("console:<img src=x onerror=alert(1)>".into()),
            text: text.into(),
            local: None,
            step,
            output: None,
        };
        Timeline {
            execution: "R-5".into(),
            runbook: "restart".into(),
            target: "service promotions (prod)".into(),
            state: "succeeded".into(),
            requester: "console:ana".into(),
            command: "/ops restart promotions".into(),
            plan: vec![PlannedStep { name: "Diagnose".into(), action: "look at <b>pods</b> & \"logs\"".into() }],
            events: vec![
                event("2026-12-06T02:10:00Z", 1, "alert_fired", "Alert <script>alert('x')</script> fired", None),
                event("2026-07-01T09:00:00Z", 2, "step_ended", "Step 1 Diagnose succeeded — 1 | 2", Some(1)),
            ],
            time_zone: None,
        }
    }

    #[test]
    fn each_time_is_shown_in_utc_and_in_the_environments_zone_across_daylight_saving() {
        let t = sample().in_zone("Europe/Madrid").expect("a zone");
        assert_eq!(t.events[0].local.as_deref(), Some("2026-12-06 03:10:00 CET"), "winter: UTC+1");
        assert_eq!(t.events[1].local.as_deref(), Some("2026-07-01 11:00:00 CEST"), "summer: UTC+2");
        let md = t.markdown();
        assert!(md.contains("Times are UTC and Europe/Madrid."), "{md}");
        assert!(md.contains("| time (UTC) | time (Europe/Madrid) | who | what | output |"), "{md}");
        assert!(md.contains("| 2026-12-06 02:10:00 | 2026-12-06 03:10:00 CET |"), "{md}");
        assert!(sample().in_zone("Mars/Olympus").is_err());
        assert!(!sample().markdown().contains("time (Europe"), "no zone, no second column");
    }

    #[test]
    fn each_step_links_to_its_output_in_the_console() {
        let t = sample().with_output_links("https://runbot.example.com/");
        assert_eq!(t.events[0].output, None, "an alert has no output");
        assert_eq!(t.events[1].output.as_deref(), Some("https://runbot.example.com/console/executions/R-5/steps/1/output"));
        assert!(t.markdown().contains("[output](https://runbot.example.com/console/executions/R-5/steps/1/output)"));
        assert!(t.markdown().contains("1 \\| 2"), "a pipe in a cell is escaped");
    }

    #[test]
    fn the_html_page_escapes_every_text_it_shows() {
        let html = sample().with_output_links("").in_zone("UTC").expect("zone").html();
        for hostile in ["<script>", "<img src=x", "<b>pods</b>", "\"logs\"", "alert('x')"] {
            assert!(!html.contains(hostile), "{hostile} is escaped in:\n{html}");
        }
        assert!(html.contains("Alert &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; fired"), "{html}");
        assert!(html.contains("look at &lt;b&gt;pods&lt;/b&gt; &amp; &quot;logs&quot;"), "{html}");
        assert!(html.contains("<a href=\"/console/executions/R-5/steps/1/output\">output</a>"), "{html}");
    }
}
