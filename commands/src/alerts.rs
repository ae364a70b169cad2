//! Alerts as runbot sees them (whatever sent them — the receiver in `runbot-adapters` reads
//! Alertmanager's webhook into an [`Alert`]) and `[[triggers]]`: which alert proposes which
//! runbook on which target and environment.

use crate::config::TriggerConfig;
use crate::runbook::{Piece, parse};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Whether an alert is still going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    /// The sender's identity of the alert (Alertmanager's fingerprint, hex): a repeat of the
    /// same alert carries the same one.
    pub fingerprint: String,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Where the alert comes from (e.g. the Prometheus graph of its expression).
    pub generator_url: String,
}

impl Alert {
    /// `alertname`, or `alert` when it has none.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map(String::as_str).unwrap_or("alert")
    }
}

/// What a matching trigger proposes for an alert.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    pub runbook: String,
    pub target: String,
    pub env: String,
}

impl Proposal {
    /// The command the proposal stands for, as a person would type it: `/ops restart T --env
    /// E` for the restart runbook, `/ops run RUNBOOK T --env E` for the others.
    pub fn command(&self, dry_run: bool) -> String {
        let dry = if dry_run { " --dry-run" } else { "" };
        match self.runbook.as_str() {
            "restart" => format!("/ops restart {} --env {}{dry}", self.target, self.env),
            rb => format!("/ops run {rb} {} --env {}{dry}", self.target, self.env),
        }
    }
}

/// The label names a trigger template reads (`{labels.NAME}`); an error for any other
/// placeholder or a malformed template.
pub fn label_template(template: &str) -> Result<Vec<String>, String> {
    if template.trim().is_empty() {
        return Err("empty; write a name or {labels.NAME}".into());
    }
    let mut names = Vec::new();
    for piece in parse(template)? {
        if let Piece::Var(v) = piece {
            match v.strip_prefix("labels.") {
                Some(n) if is_label_name(n) => names.push(n.to_string()),
                _ => return Err(format!("{{{v}}} is not a label; write {{labels.NAME}} (e.g. {{labels.deployment}})")),
            }
        }
    }
    Ok(names)
}

/// Prometheus' label name shape: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A value that may stand in a command as a target or environment: 1–253 characters of
/// letters, digits, `.`, `_`, `-`, starting with a letter or digit — so a label can never add
/// a flag or a second argument.
fn is_name(s: &str) -> bool {
    s.len() <= 253
        && s.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// Fills a trigger template with the alert's labels.
fn fill(template: &str, labels: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Var(v) => {
                let name = v.strip_prefix("labels.").unwrap_or(&v);
                match labels.get(name) {
                    Some(value) => out.push_str(value),
                    None => return Err(format!("the alert has no label {name} (needed by \"{template}\")")),
                }
            }
        }
    }
    if is_name(&out) { Ok(out) } else { Err(format!("\"{template}\" gives '{out}', which is not a name (letters, digits, . _ -)")) }
}

/// The first trigger whose `labels` the alert all has, and what it proposes. `None`:
/// no trigger matches. `Err`: the first matching trigger cannot be filled from the labels.
pub fn propose(triggers: &[TriggerConfig], alert: &Alert) -> Result<Option<Proposal>, String> {
    let Some(t) = triggers.iter().find(|t| !t.labels.is_empty() && t.labels.iter().all(|(k, v)| alert.labels.get(k) == Some(v))) else {
        return Ok(None);
    };
    Ok(Some(Proposal { runbook: t.runbook.clone(), target: fill(&t.target, &alert.labels)?, env: fill(&t.env, &alert.labels)? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(target: &str, env: &str) -> TriggerConfig {
        TriggerConfig {
            labels: BTreeMap::from([("alertname".to_string(), "KubePodCrashLooping".to_string())]),
            runbook: "restart".into(),
            target: target.into(),
            env: env.into(),
        }
    }

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            fingerprint: "3f2a".into(),
            status: AlertStatus::Firing,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            generator_url: String::new(),
        }
    }

    #[test]
    fn a_matching_alert_proposes_the_runbook_on_its_labels() {
        let a = alert(&[("alertname", "KubePodCrashLooping"), ("deployment", "promotions-api"), ("namespace", "prod")]);
        let p = propose(&[trigger("{labels.deployment}", "{labels.namespace}")], &a).expect("fills").expect("matches");
        assert_eq!(p.command(false), "/ops restart promotions-api --env prod");
        assert_eq!(p.command(true), "/ops restart promotions-api --env prod --dry-run");
    }

    #[test]
    fn an_alert_without_the_matched_label_value_matches_nothing() {
        let a = alert(&[("alertname", "HighLatency"), ("deployment", "x")]);
        assert_eq!(propose(&[trigger("{labels.deployment}", "prod")], &a), Ok(None));
    }

    #[test]
    fn a_label_that_would_add_a_flag_or_argument_is_refused() {
        for bad in ["x --set a=b", "-x", "a\"b", ""] {
            let a = alert(&[("alertname", "KubePodCrashLooping"), ("deployment", bad)]);
            let err = propose(&[trigger("{labels.deployment}", "prod")], &a).expect_err(bad);
            assert!(err.contains("not a name"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_missing_label_is_named() {
        let a = alert(&[("alertname", "KubePodCrashLooping")]);
        let err = propose(&[trigger("{labels.deployment}", "prod")], &a).expect_err("no label");
        assert!(err.contains("no label deployment"), "{err}");
    }

    #[test]
    fn templates_read_only_labels() {
        assert_eq!(label_template("{labels.namespace}"), Ok(vec!["namespace".to_string()]));
        assert_eq!(label_template("prod"), Ok(vec![]));
        assert!(label_template("{target}").is_err());
        assert!(label_template("{labels.9x}").is_err());
        assert!(label_template("{labels.a").is_err());
    }
}
