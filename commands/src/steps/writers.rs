//! The database writers of the restore runbook, over the [`Cluster`] port:
//!
//! - `k8s-writers` (read-only, before the approval): records each writer Deployment's replica
//!   count as a resolved target `writer NS/NAME=N` — part of the plan the approvers approve, and
//!   stored before anything changes, so a crash later never loses the counts to restore.
//! - `k8s-stop-writers`: scales every recorded writer to 0 and waits until none of its pods is
//!   left (terminating ones included).
//! - `k8s-start-writers`: scales every writer back to its recorded count and waits until that
//!   many of its pods are Ready.
//!
//! All three are safe to repeat: scaling to a fixed number is idempotent and the counts come
//! from the execution, not from the cluster's current state.

use super::{Prepared, StepContext, StepKind, StepOutcome};
use crate::model::Execution;
use crate::ports::cluster::{ClusterError, Clusters};
use crate::runbook::render;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

const DEFAULT_TIMEOUT_SECS: u64 = 300;
const PREFIX: &str = "writer ";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Def {
    cluster: Option<String>,
    /// `ns/deployment,ns/deployment`; default `{writers}` (the database's `writers`).
    writers: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Params {
    cluster: String,
    writers: Vec<String>,
    timeout_secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Record,
    Stop,
    Start,
}

pub struct WritersStep {
    op: Op,
    clusters: Clusters,
}

impl WritersStep {
    pub fn all(clusters: &Clusters) -> Vec<std::sync::Arc<dyn StepKind>> {
        [Op::Record, Op::Stop, Op::Start]
            .into_iter()
            .map(|op| std::sync::Arc::new(WritersStep { op, clusters: clusters.clone() }) as std::sync::Arc<dyn StepKind>)
            .collect()
    }
}

/// `writer NS/NAME=N` entries of the execution's resolved targets.
fn recorded(resolved: &[String]) -> Result<Vec<(String, String, i32)>, String> {
    let mut out = Vec::new();
    for r in resolved.iter().filter_map(|r| r.strip_prefix(PREFIX)) {
        let parsed = r.split_once('=').and_then(|(w, n)| {
            let (ns, d) = w.split_once('/')?;
            Some((ns.to_string(), d.to_string(), n.parse::<i32>().ok()?))
        });
        out.push(parsed.ok_or_else(|| format!("unreadable recorded writer '{r}'"))?);
    }
    Ok(out)
}

fn wait_err(e: ClusterError) -> String {
    e.to_string()
}

#[async_trait]
impl StepKind for WritersStep {
    fn kind(&self) -> &'static str {
        match self.op {
            Op::Record => "k8s-writers",
            Op::Stop => "k8s-stop-writers",
            Op::Start => "k8s-start-writers",
        }
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let def: Def = super::definition(params)?;
        let cluster = super::k8s::locate(&def.cluster, "cluster", vars)?;
        let writers = match &def.writers {
            Some(t) => render(t, vars)?,
            None => vars.get("writers").cloned().unwrap_or_default(),
        };
        let writers: Vec<String> = writers.split(',').map(str::trim).filter(|w| !w.is_empty()).map(str::to_string).collect();
        if self.op == Op::Record && writers.is_empty() && !cluster.is_empty() {
            return Err("the database has no `writers` (namespace/deployment) configured".into());
        }
        if let Some(bad) = writers.iter().find(|w| !w.contains('/')) {
            return Err(format!("'{bad}' is not namespace/deployment"));
        }
        let timeout_secs = super::timeout_secs(&def.timeout, DEFAULT_TIMEOUT_SECS)?;
        let list = writers.join(", ");
        let action = match self.op {
            Op::Record => format!("record the replica counts of {list} on cluster {cluster}"),
            Op::Stop => format!("scale the recorded writers to 0 and wait up to {timeout_secs}s until none of their pods is left"),
            Op::Start => format!("scale the recorded writers back to their counts and wait up to {timeout_secs}s until they are Ready"),
        };
        Ok(Prepared { action, params: serde_json::to_value(Params { cluster, writers, timeout_secs }).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: Params = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        let c = match self.clusters.get(&p.cluster) {
            Ok(c) => c.clone(),
            Err(why) => return StepOutcome::Failed(why.to_string()),
        };
        let out = &ctx.output;
        let timeout = Duration::from_secs(p.timeout_secs);
        if self.op == Op::Record {
            let mut targets: Vec<String> = ctx.execution.resolved.iter().filter(|r| !r.starts_with(PREFIX)).cloned().collect();
            let mut counts = Vec::new();
            for w in &p.writers {
                let Some((ns, d)) = w.split_once('/') else { return StepOutcome::Failed(format!("'{w}' is not namespace/deployment")) };
                match c.deployment(ns, d).await {
                    Ok(info) => {
                        let _ = out.send(format!("{w}: {} replicas (pods {})", info.replicas, info.selector));
                        targets.push(format!("{PREFIX}{w}={}", info.replicas));
                        counts.push(format!("{w} ×{}", info.replicas));
                    }
                    Err(e) => return StepOutcome::Failed(format!("reading writer {w} failed: {e}")),
                }
            }
            return StepOutcome::Resolved { summary: format!("writers recorded: {}", counts.join(", ")), targets, rollback: None };
        }
        let writers = match recorded(&ctx.execution.resolved) {
            Ok(w) if !w.is_empty() => w,
            Ok(_) => return StepOutcome::Failed("no writer counts were recorded: a k8s-writers step must come before the approval".into()),
            Err(e) => return StepOutcome::Failed(e),
        };
        let mut done = Vec::new();
        for (ns, d, count) in &writers {
            let want = if self.op == Op::Stop { 0 } else { *count };
            let info = match c.deployment(ns, d).await {
                Ok(i) => i,
                Err(e) => return StepOutcome::Failed(format!("reading writer {ns}/{d} failed: {e}; done so far: {}", list(&done))),
            };
            let _ = out.send(format!("scaling {ns}/{d} from {} to {want}", info.replicas));
            if let Err(e) = c.scale(ns, d, want).await {
                return StepOutcome::Failed(format!("scaling {ns}/{d} to {want} failed: {e}; done so far: {}", list(&done)));
            }
            let waited = if want == 0 {
                c.wait_no_pods(ns, &info.selector, timeout).await
            } else {
                c.wait_ready(ns, &info.selector, want as usize, &[], timeout).await.map(|_| ())
            };
            if let Err(e) = waited {
                return StepOutcome::Failed(format!("{ns}/{d} scaled to {want} but: {}; done so far: {}", wait_err(e), list(&done)));
            }
            let _ = out.send(format!("{ns}/{d}: {}", if want == 0 { "no pods left".to_string() } else { format!("{want} Ready") }));
            done.push(format!("{ns}/{d} → {want}"));
        }
        StepOutcome::Succeeded(match self.op {
            Op::Stop => format!("writers stopped: {}", list(&done)),
            _ => format!("writers back at their recorded counts: {}", list(&done)),
        })
    }

    /// [Restart writers] still applies while a recorded writer runs below its recorded count;
    /// once every one is back (restarted by hand, or by another execution), there is nothing
    /// left to restart.
    async fn follow_up_applies(&self, params: &serde_json::Value, failed: &Execution) -> Option<Result<(), String>> {
        if self.op != Op::Start {
            return None;
        }
        let p: Params = serde_json::from_value(params.clone()).ok()?;
        let writers = recorded(&failed.resolved).ok().filter(|w| !w.is_empty())?;
        let c = match self.clusters.get(&p.cluster) {
            Ok(c) => c.clone(),
            Err(why) => return Some(Err(why.to_string())),
        };
        let mut running = Vec::new();
        for (ns, d, count) in &writers {
            match c.deployment(ns, d).await {
                Ok(info) if info.replicas >= *count => running.push(format!("{ns}/{d} ×{}", info.replicas)),
                Ok(_) => return Some(Ok(())),
                Err(e) => return Some(Err(format!("reading writer {ns}/{d} failed: {e}"))),
            }
        }
        Some(Err(format!("the writers already run at their recorded counts ({})", running.join(", "))))
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "nothing".into() } else { v.join(", ") }
}
