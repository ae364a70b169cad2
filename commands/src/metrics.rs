//! A small metrics registry: labelled counters and one histogram kept in memory with atomics,
//! rendered in the Prometheus text exposition format (0.0.4). No SDK: the engine counts, the
//! binary serves `render()` at `GET /metrics`. Label values are bounded (outcomes, states,
//! runbook names from the config, step kinds, platforms).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the step duration histogram's buckets.
pub const STEP_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];

/// A label set: (name, value) pairs in a fixed order.
type Labels = Vec<(&'static str, String)>;

/// A counter family: one value per label set.
#[derive(Default)]
struct Family {
    values: Mutex<BTreeMap<Labels, Arc<AtomicU64>>>,
}

impl Family {
    fn inc(&self, labels: &[(&'static str, &str)]) {
        let key: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let cell = match self.values.lock() {
            Ok(mut m) => m.entry(key).or_default().clone(),
            Err(p) => p.into_inner().entry(key).or_default().clone(),
        };
        cell.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<(Labels, u64)> {
        let m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed))).collect()
    }
}

/// One histogram series: cumulative bucket counts, sum (micro-seconds) and count.
#[derive(Default)]
struct Series {
    buckets: [AtomicU64; STEP_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// The engine's metrics. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Default)]
pub struct Metrics {
    commands: Family,
    executions: Family,
    approvals: Family,
    chat_calls: Family,
    rate_limited: Family,
    steps: Mutex<BTreeMap<String, Arc<Series>>>,
}

/// How a typed command ended, for `runbot_commands_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    Ok,
    Refused,
    ParseError,
    RateLimited,
}

impl CommandOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandOutcome::Ok => "ok",
            CommandOutcome::Refused => "refused",
            CommandOutcome::ParseError => "parse_error",
            CommandOutcome::RateLimited => "rate_limited",
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn command(&self, outcome: CommandOutcome) {
        self.commands.inc(&[("outcome", outcome.as_str())]);
    }

    /// An execution reached a terminal state.
    pub fn execution_finished(&self, runbook: &str, state: &str) {
        self.executions.inc(&[("runbook", runbook), ("state", state)]);
    }

    /// An approval vote was recorded (`approve`, `reject`, `resume`, `abort`).
    pub fn approval(&self, decision: &str) {
        self.approvals.inc(&[("decision", decision)]);
    }

    /// A chat API call: `result` is `ok`, `rate_limited` (a 429) or `error`.
    pub fn chat_call(&self, platform: &str, result: &str) {
        self.chat_calls.inc(&[("platform", platform), ("result", result)]);
    }

    /// A command refused by a quota; `scope` is `identity` or `channel`.
    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited.inc(&[("scope", scope)]);
    }

    /// A step ran for `took`.
    pub fn step_duration(&self, kind: &str, took: Duration) {
        let series = {
            let mut m = self.steps.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(kind.to_string()).or_default().clone()
        };
        let secs = took.as_secs_f64();
        for (i, le) in STEP_BUCKETS.iter().enumerate() {
            if secs <= *le {
                series.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        series.sum_micros.fetch_add(took.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        series.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let families: [(&str, &str, &Family); 5] = [
            ("runbot_commands_total", "Typed commands by outcome.", &self.commands),
            ("runbot_executions_total", "Executions that reached a terminal state.", &self.executions),
            ("runbot_approvals_total", "Approval and interruption decisions recorded.", &self.approvals),
            ("runbot_chat_calls_total", "Chat API calls by platform and result (rate_limited is a 429).", &self.chat_calls),
            ("runbot_rate_limited_total", "Commands refused by a quota, by scope.", &self.rate_limited),
        ];
        for (name, help, family) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, v) in family.snapshot() {
                let _ = writeln!(out, "{name}{} {v}", label_text(&labels, None));
            }
        }
        let name = "runbot_step_duration_seconds";
        let _ = writeln!(out, "# HELP {name} How long steps ran, by step kind.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let steps: Vec<(String, Arc<Series>)> =
            self.steps.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (kind, s) in steps {
            let labels = vec![("kind", kind)];
            for (i, le) in STEP_BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{} {}", label_text(&labels, Some(&le.to_string())), s.buckets[i].load(Ordering::Relaxed));
            }
            let count = s.count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{} {count}", label_text(&labels, Some("+Inf")));
            let sum = s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{} {sum}", label_text(&labels, None));
            let _ = writeln!(out, "{name}_count{} {count}", label_text(&labels, None));
        }
        out
    }
}

/// `{a="x",b="y"}` with values escaped; empty when there are no labels.
fn label_text(labels: &[(&'static str, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::new();
        m.command(CommandOutcome::Ok);
        m.command(CommandOutcome::Ok);
        m.execution_finished("restart", "succeeded");
        m.step_duration("command", Duration::from_millis(700));
        let t = m.render();
        assert!(t.contains("runbot_commands_total{outcome=\"ok\"} 2\n"), "{t}");
        assert!(t.contains("runbot_executions_total{runbook=\"restart\",state=\"succeeded\"} 1\n"), "{t}");
        assert!(t.contains("runbot_step_duration_seconds_bucket{kind=\"command\",le=\"0.5\"} 0\n"), "{t}");
        assert!(t.contains("runbot_step_duration_seconds_bucket{kind=\"command\",le=\"1\"} 1\n"), "{t}");
        assert!(t.contains("runbot_step_duration_seconds_bucket{kind=\"command\",le=\"+Inf\"} 1\n"), "{t}");
        assert!(t.contains("# TYPE runbot_step_duration_seconds histogram\n"), "{t}");
    }
}
