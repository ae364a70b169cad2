//! The Kubernetes step kinds of the restart runbook, written against the [`Cluster`] port:
//!
//! - `k8s-diagnose` (read-only): the service's unhealthy pods, or the one pod named in the
//!   command (which must belong to the service). Container states, restart counts, last
//!   termination, recent events and the previous container's last log lines go to the detail
//!   thread; a one-line summary to the status message. The pods found become the execution's
//!   resolved targets, which the approvers see and approve. With nothing unhealthy and no pod
//!   named, the execution ends there, changing nothing.
//! - `k8s-delete-pods`: deletes the resolved pods one at a time, each only after the previous
//!   one's replacement is Ready.
//! - `k8s-wait-ready`: waits until every pod of the service is Ready and none of the deleted
//!   ones remains.
//!
//! Where a step acts is the target's `cluster`, `namespace` and `selector` (configured per
//! service environment), overridable per step with templated parameters of the same names.

use super::{Prepared, StepContext, StepKind, StepOutcome, unless_cancelled};
use crate::ports::cluster::{Cluster, ClusterError, Clusters, EventInfo, PodInfo};
use crate::runbook::render;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_LOG_LINES: u32 = 20;
const DEFAULT_EVENTS: u32 = 10;
const DEFAULT_TIMEOUT_SECS: u64 = 300;
const DEFAULT_GRACE_SECS: u64 = 60;
/// Waiting reasons of a container that is still being set up, not failing.
const STARTING: [&str; 3] = ["ContainerCreating", "PodInitializing", "Pending"];
/// How many pods the one-line summary names before "and N more".
const SUMMARY_PODS: usize = 5;

/// Parameters as written in the runbooks file (every one optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Def {
    cluster: Option<String>,
    namespace: Option<String>,
    selector: Option<String>,
    /// `k8s-diagnose` only: lines of each container's log to show (default 20).
    log_lines: Option<u32>,
    /// `k8s-diagnose` only: events per pod to show (default 10).
    events: Option<u32>,
    /// `k8s-delete-pods` / `k8s-wait-ready`: how long to wait for Ready pods (default 5m).
    timeout: Option<String>,
    /// `k8s-diagnose` only: a pod younger than this that is merely not Ready yet (no restart,
    /// no warning event) is starting, not stuck, and is left alone (default 60s).
    grace: Option<String>,
}

/// Parameters as prepared and stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Params {
    cluster: String,
    namespace: String,
    selector: String,
    /// The pod named in the command (`/ops restart promotions-api-7d9f-x2k4q`), if any.
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    log_lines: u32,
    #[serde(default)]
    events: u32,
    #[serde(default)]
    timeout_secs: u64,
    #[serde(default)]
    grace_secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Diagnose,
    DeletePods,
    WaitReady,
}

/// One of the three Kubernetes step kinds, over the connected clusters.
pub struct K8sStep {
    op: Op,
    clusters: Clusters,
}

impl K8sStep {
    pub fn diagnose(clusters: Clusters) -> Self {
        K8sStep { op: Op::Diagnose, clusters }
    }
    pub fn delete_pods(clusters: Clusters) -> Self {
        K8sStep { op: Op::DeletePods, clusters }
    }
    pub fn wait_ready(clusters: Clusters) -> Self {
        K8sStep { op: Op::WaitReady, clusters }
    }
    /// All three, for [`super::StepKinds::with`].
    pub fn all(clusters: &Clusters) -> Vec<Arc<dyn StepKind>> {
        vec![
            Arc::new(K8sStep::diagnose(clusters.clone())),
            Arc::new(K8sStep::delete_pods(clusters.clone())),
            Arc::new(K8sStep::wait_ready(clusters.clone())),
        ]
    }
}

/// `{var}` from the target unless the step overrides it; a missing variable is explained.
pub(super) fn locate(param: &Option<String>, var: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    match param {
        Some(t) => render(t, vars),
        None => vars.get(var).cloned().ok_or_else(|| match var {
            "cluster" => "no Kubernetes cluster is configured for this target: add a [clusters.NAME] section (and `cluster = \"NAME\"` on the service's environment or the database if there are several)".to_string(),
            _ => format!("the target has no `{var}`: set `{var}` on the service's environment in the config (services.NAME.environments.ENV.{var})"),
        }),
    }
}

/// RFC 1123 names: lowercase letters, digits, '-' and (for pods) '.'.
fn valid_name(s: &str, dots: bool, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

fn valid_selector(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b" ._/-=!,()".contains(&b))
}

#[async_trait]
impl StepKind for K8sStep {
    fn kind(&self) -> &'static str {
        match self.op {
            Op::Diagnose => "k8s-diagnose",
            Op::DeletePods => "k8s-delete-pods",
            Op::WaitReady => "k8s-wait-ready",
        }
    }

    /// Reading and waiting can run again after a crash. Deleting the resolved pods can too:
    /// a pod already deleted is gone (deleting it again is a no-op), its replacement has a new
    /// name, and the step waits for Ready pods again before going on.
    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let def: Def = super::definition(params)?;
        if self.op != Op::Diagnose && (def.log_lines.is_some() || def.events.is_some() || def.grace.is_some()) {
            return Err("`log_lines`, `events` and `grace` belong to k8s-diagnose".into());
        }
        if self.op == Op::Diagnose && def.timeout.is_some() {
            return Err("k8s-diagnose takes no `timeout`".into());
        }
        let cluster = locate(&def.cluster, "cluster", vars)?;
        let namespace = locate(&def.namespace, "namespace", vars)?;
        let selector = locate(&def.selector, "selector", vars)?;
        // Empty values only come from config checking, which probes with blanks.
        if !namespace.is_empty() && !valid_name(&namespace, false, 63) {
            return Err(format!("'{namespace}' is not a valid namespace name"));
        }
        if !selector.is_empty() && !valid_selector(&selector) {
            return Err(format!("'{selector}' is not a label selector (e.g. app=promotions-api)"));
        }
        let pod = match self.op {
            Op::Diagnose => vars.get("pod").filter(|p| !p.is_empty()).cloned(),
            _ => None,
        };
        if let Some(p) = &pod
            && !valid_name(p, true, 253)
        {
            return Err(format!("'{p}' is not a valid pod name"));
        }
        let timeout_secs = super::timeout_secs(&def.timeout, DEFAULT_TIMEOUT_SECS)?;
        let grace_secs = match &def.grace {
            Some(g) => crate::config::parse_duration(g)?.as_secs(),
            None => DEFAULT_GRACE_SECS,
        };
        let log_lines = def.log_lines.unwrap_or(DEFAULT_LOG_LINES).min(1000);
        let events = def.events.unwrap_or(DEFAULT_EVENTS).min(100);
        let at = format!("in {namespace} on cluster {cluster}");
        let action = match (self.op, &pod) {
            (Op::Diagnose, Some(p)) => format!(
                "describe pod {p} {at} (it must match {selector}): container states, restarts, last termination, last {events} events, last {log_lines} log lines"
            ),
            (Op::Diagnose, None) => format!(
                "list pods {selector} {at}; describe the unhealthy ones (not Ready, failing liveness, CrashLoopBackOff; pods starting for under {grace_secs}s are left alone): container states, restarts, last termination, last {events} events, last {log_lines} log lines"
            ),
            (Op::DeletePods, _) => {
                format!("delete the diagnosed pods {at} one at a time, each after the previous replacement is Ready (up to {timeout_secs}s each)")
            }
            (Op::WaitReady, _) => format!("wait up to {timeout_secs}s until every pod {selector} {at} is Ready and none of the deleted ones remains"),
        };
        let params = Params { cluster, namespace, selector, pod, log_lines, events, timeout_secs, grace_secs };
        Ok(Prepared { action, params: serde_json::to_value(params).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: Params = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        if p.namespace.is_empty() || p.selector.is_empty() {
            return StepOutcome::Failed("the target's namespace or selector is empty in the config".into());
        }
        let cluster = match self.clusters.get(&p.cluster) {
            Ok(c) => c.clone(),
            Err(why) => return StepOutcome::Failed(why.to_string()),
        };
        match self.op {
            Op::Diagnose => diagnose(cluster.as_ref(), &p, &ctx).await,
            Op::DeletePods => delete_pods(cluster.as_ref(), &p, &ctx).await,
            Op::WaitReady => wait_ready(cluster.as_ref(), &p, &ctx).await,
        }
    }
}

// ---------------------------------------------------------------------------------- diagnose

async fn diagnose(c: &dyn Cluster, p: &Params, ctx: &StepContext) -> StepOutcome {
    let ns = &p.namespace;
    let service = &ctx.execution.target.name;
    let pods = match c.pods(ns, &p.selector).await {
        Ok(v) => v,
        Err(e) => return StepOutcome::Failed(format!("listing the pods of {service} ({}) in {ns} failed: {e}", p.selector)),
    };
    let live: Vec<&PodInfo> = pods.iter().filter(|x| !x.terminating).collect();
    // Events of the pods looked at, fetched once.
    let mut events: BTreeMap<String, Result<Vec<EventInfo>, ClusterError>> = BTreeMap::new();
    let mut starting: Vec<&PodInfo> = Vec::new();
    let targets: Vec<&PodInfo> = match &p.pod {
        Some(name) => match pods.iter().find(|x| &x.name == name) {
            Some(x) => vec![x],
            None => {
                return StepOutcome::Failed(match c.pod(ns, name).await {
                    Ok(Some(_)) => format!("pod {name} is not one of {service}'s pods (selector {}); refusing to touch it", p.selector),
                    Ok(None) => format!("there is no pod named {name} in {ns}"),
                    Err(e) => format!("looking up pod {name} in {ns} failed: {e}"),
                });
            }
        },
        None => {
            let now = chrono::Utc::now();
            let mut v = Vec::new();
            for pod in live.iter().copied().filter(|x| x.unhealthy()) {
                let young = pod.created_at.is_some_and(|t| (now - t).num_seconds() < p.grace_secs as i64);
                let crashed = pod.containers.iter().any(|ct| {
                    ct.restart_count > 0
                        || ct.last_termination.is_some()
                        || (ct.state.starts_with("waiting") && !STARTING.iter().any(|r| ct.state.ends_with(r)))
                });
                if young && !crashed {
                    let ev = c.events(ns, &pod.name).await;
                    let warned = ev.as_ref().is_ok_and(|v| v.iter().any(|e| e.kind == "Warning"));
                    events.insert(pod.name.clone(), ev);
                    if !warned {
                        starting.push(pod);
                        continue;
                    }
                }
                v.push(pod);
            }
            v
        }
    };
    if p.pod.is_none() && live.is_empty() {
        return StepOutcome::Failed(format!(
            "no running pods match {} in {ns}: there is nothing to restart (is the deployment scaled to 0?)",
            p.selector
        ));
    }
    let out = &ctx.output;
    for pod in &starting {
        let _ = out.send(format!("{}: starting (not Ready yet, no restart, no warning) — left alone", pod.name));
    }
    if targets.is_empty() {
        let ready = live.iter().filter(|x| !x.unhealthy()).count();
        for pod in live.iter().filter(|x| !x.unhealthy()) {
            let _ = out.send(format!("{}: {}, Ready, {} restarts", pod.name, pod.phase, restarts(pod)));
        }
        let also = if starting.is_empty() { String::new() } else { format!(", {} still starting", starting.len()) };
        return StepOutcome::Finished(format!("No unhealthy pods: {ready} of {} pods of {service} are Ready{also}; nothing to restart.", live.len()));
    }
    let mut lines = Vec::new();
    for pod in &targets {
        let fetched = match events.remove(&pod.name) {
            Some(e) => e,
            None => c.events(ns, &pod.name).await,
        };
        let events = match fetched {
            Ok(mut v) => {
                let keep = p.events as usize;
                if v.len() > keep {
                    v.drain(..v.len() - keep);
                }
                Ok(v)
            }
            Err(e) => Err(e),
        };
        let _ = out.send(format!("── pod {} — {}, {}", pod.name, pod.phase, if pod.ready { "Ready" } else { "not Ready" }));
        for ct in &pod.containers {
            let mut line = format!("   container {} ({}): {}, {} restarts", ct.name, ct.image, ct.state, ct.restart_count);
            if let Some(t) = &ct.last_termination {
                line.push_str(&format!("; last terminated: {}, exit code {}", t.reason, t.exit_code));
                if let Some(at) = t.finished_at {
                    line.push_str(&format!(" at {}", at.format("%H:%M:%S UTC")));
                }
            }
            let _ = out.send(line);
        }
        match &events {
            Ok(v) if v.is_empty() => {
                let _ = out.send("   events: none".into());
            }
            Ok(v) => {
                let _ = out.send("   events (newest last):".into());
                for e in v {
                    let _ = out.send(format!("     {} {} ×{}: {}", e.kind, e.reason, e.count.max(1), e.message));
                }
            }
            Err(e) => {
                let _ = out.send(format!("   events unavailable: {e}"));
            }
        }
        for ct in &pod.containers {
            let previous = ct.restart_count > 0 || ct.last_termination.is_some();
            let log = if previous {
                match c.logs(ns, &pod.name, &ct.name, true, p.log_lines).await {
                    Ok(l) => Ok(("previous container's", l)),
                    // No previous container (yet): fall back to the current one.
                    Err(_) => c.logs(ns, &pod.name, &ct.name, false, p.log_lines).await.map(|l| ("current", l)),
                }
            } else {
                c.logs(ns, &pod.name, &ct.name, false, p.log_lines).await.map(|l| ("current", l))
            };
            match log {
                Ok((which, text)) if text.trim().is_empty() => {
                    let _ = out.send(format!("   {} log of {}: empty", which, ct.name));
                }
                Ok((which, text)) => {
                    let _ = out.send(format!("   {which} log of {} (last {} lines):", ct.name, p.log_lines));
                    for l in text.lines() {
                        let _ = out.send(format!("     | {l}"));
                    }
                }
                Err(e) => {
                    let _ = out.send(format!("   log of {} unavailable: {e}", ct.name));
                }
            }
        }
        lines.push(format!("{} ({})", pod.name, why(pod, events.as_deref().unwrap_or(&[]))));
    }
    let names: Vec<String> = targets.iter().map(|x| x.name.clone()).collect();
    let mut shown: Vec<String> = lines.iter().take(SUMMARY_PODS).cloned().collect();
    if lines.len() > SUMMARY_PODS {
        shown.push(format!("and {} more", lines.len() - SUMMARY_PODS));
    }
    let summary = match &p.pod {
        Some(_) => format!("named pod: {}", shown.join("; ")),
        None => format!("{} of {} pods unhealthy: {}", targets.len(), live.len(), shown.join("; ")),
    };
    StepOutcome::Resolved { summary, targets: names, rollback: None }
}

fn restarts(pod: &PodInfo) -> i32 {
    pod.containers.iter().map(|c| c.restart_count).sum()
}

/// Why a pod is listed, in a few words: its worst container state, the last exit, the restart
/// count, and the most frequent warning.
fn why(pod: &PodInfo, events: &[EventInfo]) -> String {
    let mut parts = Vec::new();
    match pod.containers.iter().find(|c| c.state.starts_with("waiting") || c.state.starts_with("terminated")) {
        Some(c) => parts.push(c.state.split_once(": ").map(|(_, r)| r.to_string()).unwrap_or_else(|| c.state.clone())),
        None if !pod.ready => parts.push("not Ready".into()),
        None => parts.push("Ready".into()),
    }
    if let Some(t) = pod.containers.iter().filter_map(|c| c.last_termination.as_ref()).next() {
        parts.push(format!("last exit code {} ({})", t.exit_code, t.reason));
    }
    parts.push(format!("{} restarts", restarts(pod)));
    if let Some(e) = events.iter().filter(|e| e.kind == "Warning").max_by_key(|e| e.count) {
        let msg: String = e.message.chars().take(80).collect();
        parts.push(format!("{} ×{}: {msg}", e.reason, e.count.max(1)));
    }
    parts.join(", ")
}

// ------------------------------------------------------------------------ delete and wait

fn wait_error(e: ClusterError, timeout_secs: u64) -> String {
    match e {
        ClusterError::Timeout(_) => format!("no Ready replacement within {timeout_secs}s"),
        other => other.to_string(),
    }
}

async fn delete_pods(c: &dyn Cluster, p: &Params, ctx: &StepContext) -> StepOutcome {
    let targets = ctx.execution.resolved.clone();
    if targets.is_empty() {
        return StepOutcome::Failed("no pods to delete: a k8s-diagnose step must come first and find some".into());
    }
    let ns = &p.namespace;
    let n = targets.len();
    let out = &ctx.output;
    let pods = match c.pods(ns, &p.selector).await {
        Ok(v) => v,
        Err(e) => return StepOutcome::Failed(format!("listing the pods in {ns} failed before deleting any: {e}")),
    };
    // The pods that stay. After each deletion, wait until all of them and one replacement
    // per pod deleted so far are Ready, counting none of the targets. A target already gone
    // (deleted before runbot restarted mid-step) needs no new replacement: its replacement is
    // among the pods that stay.
    let live: Vec<&PodInfo> = pods.iter().filter(|x| !x.terminating).collect();
    let stay: Vec<String> = live.iter().filter(|x| !targets.contains(&x.name)).map(|x| x.name.clone()).collect();
    let mut goal = stay.len();
    let mut deleted: Vec<String> = Vec::new();
    let mut replacements: Vec<String> = Vec::new();
    let timeout = Duration::from_secs(p.timeout_secs);
    for (i, pod) in targets.iter().enumerate() {
        let done = |i: usize| if i == 0 { "no pod was deleted".to_string() } else { format!("{i} of {n} pods were deleted and replaced") };
        let present = live.iter().any(|x| &x.name == pod);
        let _ = out.send(format!("deleting pod {pod} ({} of {n}){}", i + 1, if present { "" } else { " — already gone" }));
        match unless_cancelled(&ctx.cancel, c.delete_pod(ns, pod)).await {
            None => return StepOutcome::Cancelled(format!("cancelled before deleting {pod}; {}", done(i))),
            Some(Err(e)) => return StepOutcome::Failed(format!("deleting {pod} failed: {e}; {}", done(i))),
            Some(Ok(())) => {}
        }
        deleted.push(pod.clone());
        if present {
            goal += 1;
        }
        let _ = out.send(format!("{pod} deleted; waiting up to {}s for a Ready replacement ({goal} Ready pods)", p.timeout_secs));
        let started = tokio::time::Instant::now();
        match unless_cancelled(&ctx.cancel, c.wait_ready(ns, &p.selector, goal, &targets, timeout)).await {
            None => return StepOutcome::Cancelled(format!("cancelled while waiting for {pod}'s replacement; {} deleted so far", i + 1)),
            Some(Err(e)) => {
                return StepOutcome::Failed(format!(
                    "{pod} was deleted but its replacement is not Ready: {}; stopped there, {} of {n} pods deleted",
                    wait_error(e, p.timeout_secs),
                    i + 1
                ));
            }
            Some(Ok(ready)) => {
                let new: Vec<String> = ready.into_iter().filter(|r| !stay.contains(r) && !replacements.contains(r)).collect();
                let _ = out.send(format!("replacement Ready after {:.1}s: {}", started.elapsed().as_secs_f64(), new.join(", ")));
                replacements.extend(new);
            }
        }
    }
    StepOutcome::Succeeded(format!(
        "deleted {} one at a time; replaced by {}",
        deleted.join(", "),
        if replacements.is_empty() { "pods that were already Ready".to_string() } else { replacements.join(", ") }
    ))
}

async fn wait_ready(c: &dyn Cluster, p: &Params, ctx: &StepContext) -> StepOutcome {
    let ns = &p.namespace;
    let gone = &ctx.execution.resolved;
    let pods = match c.pods(ns, &p.selector).await {
        Ok(v) => v,
        Err(e) => return StepOutcome::Failed(format!("listing the pods in {ns} failed: {e}")),
    };
    let want = pods.iter().filter(|x| !x.terminating && !gone.contains(&x.name)).count();
    if want == 0 {
        return StepOutcome::Failed(format!("no pods match {} in {ns}", p.selector));
    }
    let timeout = Duration::from_secs(p.timeout_secs);
    match unless_cancelled(&ctx.cancel, c.wait_ready(ns, &p.selector, want, gone, timeout)).await {
        None => StepOutcome::Cancelled("cancelled while waiting for Ready pods".into()),
        Some(Err(ClusterError::Timeout(_))) => {
            StepOutcome::Failed(format!("not all {want} pods of {} were Ready within {}s", ctx.execution.target.name, p.timeout_secs))
        }
        Some(Err(e)) => StepOutcome::Failed(format!("waiting for Ready pods failed: {e}")),
        Some(Ok(ready)) => {
            let _ = ctx.output.send(format!("Ready: {}", ready.join(", ")));
            StepOutcome::Succeeded(format!("all {want} pods Ready, none of the deleted ones left"))
        }
    }
}
