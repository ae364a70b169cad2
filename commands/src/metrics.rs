//! The metrics: one registry of the maintained `prometheus-client` crate, encoded in the
//! OpenMetrics text format (every family with `# HELP` and `# TYPE`; Prometheus scrapes it).
//! The engine counts into [`Metrics`] (labelled counters and the step duration histogram);
//! other parts keep their own counters and register them as a [`Collector`] that describes
//! them through the crate's encoder ([`counter`], [`counters`], [`gauge`]). `runbot serve`
//! builds one [`Registry`] and serves [`encode`] at `GET /metrics`. Label values are bounded
//! (outcomes, states, runbook names from the config, step kinds, platforms).

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::registry::Registry;

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use std::time::Duration;

/// The `Content-Type` of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the step duration histogram's buckets.
pub const STEP_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];

/// A label set: (name, value) pairs in a fixed order.
type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

/// The engine's metrics. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    commands: Family<Labels, Counter>,
    executions: Family<Labels, Counter>,
    approvals: Family<Labels, Counter>,
    chat_calls: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    steps: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            commands: Family::default(),
            executions: Family::default(),
            approvals: Family::default(),
            chat_calls: Family::default(),
            rate_limited: Family::default(),
            steps: Family::new_with_constructor(step_histogram),
        }
    }
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
        self.commands.get_or_create(&labels(&[("outcome", outcome.as_str())])).inc();
    }

    /// An execution reached a terminal state.
    pub fn execution_finished(&self, runbook: &str, state: &str) {
        self.executions.get_or_create(&labels(&[("runbook", runbook), ("state", state)])).inc();
    }

    /// An approval vote was recorded (`approve`, `reject`, `resume`, `abort`).
    pub fn approval(&self, decision: &str) {
        self.approvals.get_or_create(&labels(&[("decision", decision)])).inc();
    }

    /// A chat API call: `result` is `ok`, `rate_limited` (a 429) or `error`.
    pub fn chat_call(&self, platform: &str, result: &str) {
        self.chat_calls.get_or_create(&labels(&[("platform", platform), ("result", result)])).inc();
    }

    /// A command refused by a quota; `scope` is `identity` or `channel`.
    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited.get_or_create(&labels(&[("scope", scope)])).inc();
    }

    /// A step ran for `took`.
    pub fn step_duration(&self, kind: &str, took: Duration) {
        self.steps.get_or_create(&labels(&[("kind", kind)])).observe(took.as_secs_f64());
    }

    /// Adds the engine's families to `registry` (counters are named without `_total`: the
    /// encoder appends it to their samples).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("runbot_commands", "Typed commands by outcome", self.commands.clone());
        registry.register("runbot_executions", "Executions that reached a terminal state", self.executions.clone());
        registry.register("runbot_approvals", "Approval and interruption decisions recorded", self.approvals.clone());
        registry.register("runbot_chat_calls", "Chat API calls by platform and result (rate_limited is a 429)", self.chat_calls.clone());
        registry.register("runbot_rate_limited", "Commands refused by a quota, by scope", self.rate_limited.clone());
        registry.register("runbot_step_duration_seconds", "How long steps ran, by step kind", self.steps.clone());
    }

    /// The engine's families alone, encoded (tests, tools).
    pub fn render(&self) -> String {
        let mut r = Registry::default();
        self.register(&mut r);
        encode(&r)
    }
}

/// `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        // Writing into a String does not fail; a metric that refuses to encode is left out.
        tracing::warn!("a metric could not be encoded");
    }
    out
}

/// One collector alone, encoded (tests of a part's counters).
pub fn encode_collector(c: impl Collector) -> String {
    let mut r = Registry::default();
    r.register_collector(Box::new(c));
    encode(&r)
}

/// The encoder ends each help text with a full stop: one given with its own loses it.
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

/// A counter kept elsewhere, described as family `name` (sample `name_total`).
pub fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help_text(help), None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

/// Counters kept elsewhere, one per value of `label`, as family `name`.
pub fn counters(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, label: &'static str, values: &[(&str, u64)]) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help_text(help), None, MetricType::Counter)?;
    for (v, n) in values {
        let set = [(label, *v)];
        ConstCounter::new(*n).encode(m.encode_family(&set)?)?;
    }
    Ok(())
}

/// A gauge kept elsewhere (or read at scrape time), as family `name`.
pub fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help_text(help), None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
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
        assert!(t.contains("# HELP runbot_commands Typed commands by outcome.\n# TYPE runbot_commands counter\n"), "{t}");
        assert!(t.contains("runbot_commands_total{outcome=\"ok\"} 2\n"), "{t}");
        assert!(t.contains("runbot_executions_total{runbook=\"restart\",state=\"succeeded\"} 1\n"), "{t}");
        assert!(t.contains("runbot_step_duration_seconds_bucket{le=\"0.5\",kind=\"command\"} 0\n"), "{t}");
        assert!(t.contains("runbot_step_duration_seconds_bucket{le=\"1.0\",kind=\"command\"} 1\n"), "{t}");
        assert!(t.contains("runbot_step_duration_seconds_bucket{le=\"+Inf\",kind=\"command\"} 1\n"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(t.contains("# TYPE runbot_step_duration_seconds histogram\n"), "{t}");
    }
}
