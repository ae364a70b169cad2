//! `probe`: a TEST-ONLY step kind (never shipped). Each run is counted in a shared [`Probes`]
//! counter; its parameters say whether it succeeds, fails, blocks until cancelled, sleeps
//! (honouring cancel), or hangs forever on its first runs (to stand for a process that dies).

use async_trait::async_trait;
use runbot_commands::runbook::render;
use runbot_commands::steps::{Prepared, StepContext, StepKind, StepOutcome};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Run counters by name, shared by the test and the step kind.
#[derive(Clone, Default)]
pub struct Probes(Arc<Mutex<BTreeMap<String, u32>>>);

impl Probes {
    /// How many times probes with this counter have started.
    pub fn count(&self, name: &str) -> u32 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied().unwrap_or(0)
    }
    fn hit(&self, name: &str) -> u32 {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(name.to_string()).or_default();
        *n += 1;
        *n
    }
}

/// Parameters, as written in the runbooks file and as stored (JSON with the same keys):
/// `counter` (template, required); `outcome` = `ok` (default) | `fail` | `block` (until
/// cancelled); `hang_runs` = hang forever, ignoring cancel, on the first N runs; `sleep_ms` =
/// sleep first (tokio time), stopping early when cancelled; `note` (template) is shown in the
/// action so a test can change the plan; `output` (template) is a line of output to emit;
/// `artifact_secret` names a secret the probe keeps as an artifact (`secret.txt`: the whole
/// value and its first half, for redaction tests).
#[derive(Debug, Clone, Default)]
struct Params {
    counter: String,
    outcome: String,
    hang_runs: u32,
    sleep_ms: u64,
    note: String,
    output: Option<String>,
    artifact_secret: Option<String>,
}

impl Params {
    fn from_json(v: &serde_json::Value) -> Result<Params, String> {
        let obj = v.as_object().ok_or("probe parameters must be a table")?;
        let mut p = Params { outcome: "ok".into(), ..Params::default() };
        for (k, v) in obj {
            let text = || v.as_str().map(str::to_string).ok_or(format!("{k} must be a string"));
            let num = || v.as_u64().ok_or(format!("{k} must be a whole number"));
            match k.as_str() {
                "counter" => p.counter = text()?,
                "outcome" => p.outcome = text()?,
                "hang_runs" => p.hang_runs = num()? as u32,
                "sleep_ms" => p.sleep_ms = num()?,
                "note" => p.note = text()?,
                "output" => p.output = Some(text()?),
                "artifact_secret" => p.artifact_secret = Some(text()?),
                other => return Err(format!("unknown probe parameter '{other}'")),
            }
        }
        if p.counter.is_empty() {
            return Err("probe needs a counter".into());
        }
        if !matches!(p.outcome.as_str(), "ok" | "fail" | "block") {
            return Err(format!("outcome '{}' is not ok, fail or block", p.outcome));
        }
        Ok(p)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "counter": self.counter,
            "outcome": self.outcome,
            "hang_runs": self.hang_runs,
            "sleep_ms": self.sleep_ms,
            "note": self.note,
            "output": self.output,
            "artifact_secret": self.artifact_secret,
        })
    }
}

pub struct Probe {
    pub probes: Probes,
}

/// Waits until the execution is cancelled.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    while !*cancel.borrow_and_update() {
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl StepKind for Probe {
    fn kind(&self) -> &'static str {
        "probe"
    }

    fn default_idempotent(&self) -> bool {
        false
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let json = serde_json::to_value(params).map_err(|e| e.to_string())?;
        let mut p = Params::from_json(&json)?;
        p.counter = render(&p.counter, vars)?;
        p.note = render(&p.note, vars)?;
        p.output = p.output.as_deref().map(|o| render(o, vars)).transpose()?;
        let mut action = format!("probe {} → {}", p.counter, p.outcome);
        if !p.note.is_empty() {
            action.push_str(&format!(" ({})", p.note));
        }
        Ok(Prepared { action, params: p.to_json() })
    }

    async fn run(&self, params: &serde_json::Value, mut ctx: StepContext) -> StepOutcome {
        let p = match Params::from_json(&serde_json::Value::Object(
            params.as_object().cloned().unwrap_or_default().into_iter().filter(|(_, v)| !v.is_null()).collect(),
        )) {
            Ok(p) => p,
            Err(e) => return StepOutcome::Failed(format!("unreadable probe params: {e}")),
        };
        let n = self.probes.hit(&p.counter);
        if let Some(line) = &p.output {
            let _ = ctx.output.send(line.clone());
        }
        if let Some(secret) = p.artifact_secret.as_deref().and_then(|name| ctx.secrets.get(name)) {
            let v = secret.expose();
            let half: String = v.chars().take(v.chars().count() / 2).collect();
            let _ = ctx.artifacts.send(("secret.txt".into(), format!("whole:{v}\nhalf:{half}\n")));
        }
        if n <= p.hang_runs {
            std::future::pending::<()>().await;
        }
        if p.sleep_ms > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(p.sleep_ms)) => {}
                _ = cancelled(&mut ctx.cancel) => return StepOutcome::Cancelled("stopped by cancel while sleeping".into()),
            }
        }
        match p.outcome.as_str() {
            "fail" => StepOutcome::Failed(format!("probe {} failed as told", p.counter)),
            "block" => {
                cancelled(&mut ctx.cancel).await;
                StepOutcome::Cancelled("stopped by cancel".into())
            }
            _ => StepOutcome::Succeeded(format!("probe {} run {n}", p.counter)),
        }
    }
}
