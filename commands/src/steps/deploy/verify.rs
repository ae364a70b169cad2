//! `deploy-verify` and `smoke-test`: is the new (or rolled-back-to) version really serving?

use super::rollout::secs;
use super::{DeployConnections, DeployTarget};
use crate::ports::cluster::{PodInfo, Rollout};
use crate::steps::pace::Pace;
use crate::steps::{Prepared, StepContext, StepKind, StepOutcome, unless_cancelled};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) const POLL: Duration = Duration::from_millis(500);
const DEFAULT_TIMEOUT: &str = "5m";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyDef {
    /// How long to wait. Default: the driver's timeout (5m).
    timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VerifyParams {
    target: DeployTarget,
    /// The deployed version; a rollback's target comes from its resolved `to` line instead.
    version: String,
    timeout_secs: u64,
}

pub struct Verify(pub(super) Arc<DeployConnections>);

/// The version an execution expects to be running: a rollback's resolved target, else the
/// deploy's version.
fn expected(ctx: &StepContext, stored: &str) -> String {
    ctx.execution.rollback.as_ref().map_or_else(|| stored.to_string(), |r| r.to.version.clone())
}

#[async_trait]
impl StepKind for Verify {
    fn kind(&self) -> &'static str {
        "deploy-verify"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let def: VerifyDef = crate::steps::definition(params)?;
        let Some(t) = DeployTarget::of(&self.0.services, vars)? else {
            return Ok(Prepared { action: "verify the rollout".into(), params: serde_json::Value::Null });
        };
        let driver = t.driver()?;
        let driver_timeout = driver.verify_timeout(&t);
        let timeout_secs = secs(def.timeout.as_deref().or(driver_timeout.as_deref()).unwrap_or(DEFAULT_TIMEOUT))?;
        let version = vars.get("version").cloned().unwrap_or_default();
        let shown = if version.is_empty() { "the target version".to_string() } else { version.clone() };
        let action = driver.verify_action(&t, &shown, timeout_secs)?;
        super::prepared(action, VerifyParams { target: t, version, timeout_secs })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: VerifyParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let version = expected(&ctx, &p.version);
        if version.is_empty() {
            return StepOutcome::Failed("no version to verify".into());
        }
        let limit = Duration::from_secs(p.timeout_secs);
        let work = async {
            match p.target.driver() {
                Ok(driver) => driver.verify(&self.0, &p.target, &version, limit, &ctx).await,
                Err(why) => Err(why),
            }
        };
        match unless_cancelled(&ctx.cancel, work).await {
            None => StepOutcome::Cancelled("cancelled while verifying".into()),
            Some(Ok(summary)) => StepOutcome::Succeeded(summary),
            Some(Err(why)) => StepOutcome::Failed(why),
        }
    }
}

/// Does this image reference run `version` (`repo:version`, digest ignored)?
pub(super) fn runs_version(image: &str, repo: Option<&str>, version: &str) -> bool {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
        Some((r, tag)) => tag == version && repo.is_none_or(|want| r == want || r.ends_with(&format!("/{want}")) || want.ends_with(&format!("/{r}"))),
        None => false,
    }
}

/// Why a pod is not serving the version: not Ready, another image, a crash-looping container.
fn pod_problem(pod: &PodInfo, repo: Option<&str>, version: &str) -> Option<String> {
    if pod.terminating {
        return Some(format!("{}: terminating", pod.name));
    }
    let mut why = Vec::new();
    for c in &pod.containers {
        if !runs_version(&c.image, repo, version) {
            why.push(format!("{} runs {}", c.name, c.image));
        }
        if !c.ready {
            let mut s = format!("{} {}", c.name, c.state);
            if c.restart_count > 0 {
                s.push_str(&format!(", {} restarts", c.restart_count));
            }
            if let Some(t) = &c.last_termination {
                s.push_str(&format!(", last exit {} ({})", t.exit_code, t.reason));
            }
            why.push(s);
        }
    }
    if !pod.ready && why.is_empty() {
        why.push("not Ready".into());
    }
    (!why.is_empty()).then(|| format!("{}: {}", pod.name, why.join("; ")))
}

/// `deploy-verify`'s action on a Kubernetes Deployment.
pub(super) fn k8s_verify_action(t: &DeployTarget, shown: &str, timeout_secs: u64) -> Result<String, String> {
    let (cluster, ns, dep, sel) = t.k8s()?;
    Ok(format!(
        "wait until deployment {dep} in {ns} on cluster {cluster} has rolled out and every pod {sel} is Ready on {shown} (timeout {timeout_secs}s)"
    ))
}

/// `kubectl rollout status` semantics, and every pod of the selector Ready on `version`.
pub(super) async fn k8s_rolled_out(c: &DeployConnections, t: &DeployTarget, version: &str, limit: Duration) -> Result<String, String> {
    let (cluster, ns, dep, sel) = t.connect(&c.clusters)?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut pace = Pace::every(POLL);
    let mut last;
    loop {
        let rollout = cluster.rollout(&ns, &dep).await.map_err(|e| format!("could not read the rollout of {dep}: {e}"))?;
        let want = cluster.deployment(&ns, &dep).await.map_err(|e| format!("could not read deployment {dep}: {e}"))?.replicas.max(0) as usize;
        let pods = cluster.pods(&ns, &sel).await.map_err(|e| format!("could not list pods {sel}: {e}"))?;
        let problems: Vec<String> = pods.iter().filter_map(|p| pod_problem(p, t.image.as_deref(), version)).collect();
        let serving = pods.iter().filter(|p| pod_problem(p, t.image.as_deref(), version).is_none()).count();
        match &rollout {
            Rollout::Complete(_) if problems.is_empty() && serving >= want => {
                return Ok(format!("deployment {dep} rolled out: {serving}/{want} pods Ready on {version}"));
            }
            Rollout::Failed(msg) => {
                return Err(format!("the rollout of {dep} failed: {msg}. {}", problems.join(" | ")));
            }
            Rollout::Pending(m) | Rollout::Progressing(m) | Rollout::Complete(m) => last = format!("{m}; {serving}/{want} pods Ready on {version}"),
        }
        if tokio::time::Instant::now() >= deadline {
            let detail = if problems.is_empty() { last } else { problems.join(" | ") };
            return Err(format!("{dep} did not roll out to {version} within {}s: {detail}", limit.as_secs()));
        }
        pace.wait().await;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SmokeParams {
    /// None: no smoke check configured — the step says so and passes.
    check: Option<crate::config::SmokeConfig>,
}

pub struct Smoke(pub(super) Arc<DeployConnections>);

#[async_trait]
impl StepKind for Smoke {
    fn kind(&self) -> &'static str {
        "smoke-test"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::NoParams = crate::steps::definition(params)?;
        // A database's own smoke test (after a restore), else the service environment's.
        let (what, check, key) = match vars.get("database").filter(|d| !d.is_empty()) {
            Some(db) => {
                let cfg = self.0.databases.get(db).ok_or_else(|| format!("'{db}' is not a configured database"))?;
                (db.clone(), cfg.smoke.clone(), format!("databases.{db}.smoke"))
            }
            None => match DeployTarget::of(&self.0.services, vars)? {
                Some(t) => (t.where_(), t.smoke.clone(), format!("services.{}.environments.{}.smoke", t.service, t.env)),
                None => return Ok(Prepared { action: "smoke test".into(), params: serde_json::Value::Null }),
            },
        };
        let action = match &check {
            None => format!("no smoke check configured for {what} ({key}): skipped"),
            Some(s) => {
                secs(&s.backoff)?;
                secs(&s.timeout)?;
                format!(
                    "GET {} expecting {}{}, up to {} attempts (backoff from {}, timeout {} each)",
                    s.url,
                    s.status,
                    s.body.as_ref().map(|b| format!(" and body containing \"{b}\"")).unwrap_or_default(),
                    s.attempts,
                    s.backoff,
                    s.timeout
                )
            }
        };
        super::prepared(action, SmokeParams { check })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: SmokeParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let Some(s) = p.check else { return StepOutcome::Succeeded("skipped: no smoke check configured".into()) };
        let Some(http) = &self.0.http else { return StepOutcome::Failed("no HTTP client is connected".into()) };
        let backoff = crate::config::parse_duration(&s.backoff).unwrap_or(Duration::from_secs(2));
        let timeout = crate::config::parse_duration(&s.timeout).unwrap_or(Duration::from_secs(5));
        let mut pace = Pace::doubling(backoff, Duration::from_secs(60), s.attempts);
        let mut last = String::new();
        for attempt in 1..=s.attempts {
            let answer = match unless_cancelled(&ctx.cancel, http.get(&s.url, timeout)).await {
                None => return StepOutcome::Cancelled("cancelled during the smoke test".into()),
                Some(a) => a,
            };
            match answer {
                Ok(a) => {
                    let ms = a.elapsed.as_millis();
                    let body_ok = s.body.as_ref().is_none_or(|b| a.body.contains(b.as_str()));
                    if a.status == s.status && body_ok {
                        let _ = ctx.output.send(format!("attempt {attempt}: {} in {ms} ms", a.status));
                        return StepOutcome::Succeeded(format!("{} {} in {ms} ms (attempt {attempt} of {})", s.url, a.status, s.attempts));
                    }
                    let snippet: String = a.body.chars().take(200).collect();
                    last = if a.status != s.status {
                        format!("{} instead of {} in {ms} ms: {}", a.status, s.status, snippet.trim())
                    } else {
                        format!("{} in {ms} ms but the body lacks \"{}\": {}", a.status, s.body.as_deref().unwrap_or(""), snippet.trim())
                    };
                }
                Err(e) => last = e.to_string(),
            }
            let _ = ctx.output.send(format!("attempt {attempt}: {last}"));
            if unless_cancelled(&ctx.cancel, pace.wait()).await.is_none() {
                return StepOutcome::Cancelled("cancelled during the smoke test".into());
            }
        }
        StepOutcome::Failed(format!("smoke test failed after {} attempts: {last}", s.attempts))
    }
}
