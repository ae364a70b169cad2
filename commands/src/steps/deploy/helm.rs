//! Driver `helm`: `helm upgrade --install … --wait` of the `[..helm]` release; verified as a
//! Kubernetes rollout; rolled back along the release's history (`helm rollback`).

use super::rollout::{Call, secs};
use super::{DeployConnections, DeployDriver, DeployTarget, Tool};
use crate::config::HelmConfig;
use crate::model::{Deployed, RollbackTarget};
use crate::ports::HelmRevision;
use crate::steps::{StepContext, StepOutcome};
use async_trait::async_trait;
use std::collections::BTreeMap;

pub(super) struct Helm;

impl Helm {
    fn section(t: &DeployTarget) -> Result<&HelmConfig, String> {
        t.helm.as_ref().ok_or_else(|| t.driver_missing())
    }
}

#[async_trait]
impl DeployDriver for Helm {
    fn deploy_call(&self, t: &DeployTarget, version: &str, _vars: &BTreeMap<String, String>) -> Result<Call, String> {
        let h = Helm::section(t)?;
        let ns = t.namespace.clone().ok_or_else(|| format!("{} has no namespace", t.where_()))?;
        let timeout = secs(&h.timeout)?;
        let mut args: Vec<String> = ["upgrade", "--install", &h.release, &h.chart, "--namespace", &ns].iter().map(|s| s.to_string()).collect();
        args.extend(["--set".to_string(), format!("{}={version}", h.tag_key), "--wait".into(), "--timeout".into(), format!("{timeout}s")]);
        args.extend(h.args.iter().cloned());
        Ok(Call::Cli { tool: Tool::Helm, args, env: Vec::new(), timeout_secs: timeout + 30 })
    }

    fn preflight(&self, _t: &DeployTarget) -> (String, Vec<(String, String)>) {
        ("helm is installed".into(), super::gate::permissions(true))
    }

    fn preflight_run(&self, c: &DeployConnections) -> Result<Option<String>, String> {
        c.tools.get(Tool::Helm).map(|path| Some(format!("helm at {path}")))
    }

    fn verify_timeout(&self, t: &DeployTarget) -> Option<String> {
        t.helm.as_ref().map(|h| h.timeout.clone())
    }

    fn rollback_plan(&self, t: &DeployTarget, pick: &str, _to: &str) -> Result<String, String> {
        let h = Helm::section(t)?;
        let (cluster, ns, _, _) = t.k8s()?;
        Ok(format!("read the history of Helm release {} in {ns} on cluster {cluster} and pick {pick}", h.release))
    }

    async fn rollback_target(&self, c: &DeployConnections, t: &DeployTarget, to: &str, ctx: &StepContext) -> StepOutcome {
        let h = match Helm::section(t) {
            Ok(h) => h,
            Err(why) => return StepOutcome::Failed(why),
        };
        let history = match history(c, t, h).await {
            Ok(history) if history.is_empty() => {
                return StepOutcome::Failed(format!("there is no Helm release {} in {}", h.release, t.namespace.as_deref().unwrap_or_default()));
            }
            Ok(history) => history,
            Err(why) => return StepOutcome::Failed(why),
        };
        let _ = ctx.output.send("REVISION  STATUS       VERSION    APP VERSION  UPDATED                DESCRIPTION".into());
        for r in &history {
            let _ = ctx.output.send(format!(
                "{:<9} {:<12} {:<10} {:<12} {:<22} {}",
                r.revision,
                r.status,
                version_of(r, &h.tag_key),
                r.app_version,
                when(r),
                r.description
            ));
        }
        match pick(&history, &h.tag_key, to) {
            Ok((current, target)) => StepOutcome::Resolved {
                summary: format!(
                    "{}: revision {} ({}, {}) → revision {} ({}, {})",
                    h.release,
                    current.revision,
                    version_of(current, &h.tag_key),
                    current.status,
                    target.revision,
                    version_of(target, &h.tag_key),
                    when(target)
                ),
                targets: vec![format!("from {}", line(current, &h.tag_key)), format!("to {}", line(target, &h.tag_key))],
                rollback: Some(RollbackTarget { from: deployed(current, &h.tag_key), to: deployed(target, &h.tag_key) }),
            },
            Err(why) => StepOutcome::Failed(format!("cannot roll back {}: {why}", h.release)),
        }
    }

    async fn still_on(&self, c: &DeployConnections, t: &DeployTarget, version: &str, deployed_by: &str) -> Option<Result<(), String>> {
        let h = t.helm.as_ref()?;
        let history = match history(c, t, h).await {
            Ok(history) => history,
            Err(why) => return Some(Err(why)),
        };
        let current = history.last()?;
        let running = version_of(current, &h.tag_key);
        Some(if running == version {
            Ok(())
        } else {
            Err(format!(
                "release {} is no longer on {version} ({deployed_by} deployed it): its current revision {} runs {running} ({})",
                h.release, current.revision, current.status
            ))
        })
    }

    fn rollback_call(&self, t: &DeployTarget, to: Option<&Deployed>) -> Result<Call, String> {
        let h = Helm::section(t)?;
        let revision = match to {
            None => "<the target revision>".to_string(),
            Some(d) => d.revision.ok_or("the resolved rollback target names no revision")?.to_string(),
        };
        let ns = t.namespace.clone().unwrap_or_default();
        let timeout = secs(&h.timeout)?;
        let mut args: Vec<String> =
            ["rollback", &h.release, &revision, "--namespace", &ns, "--wait", "--timeout", &format!("{timeout}s")].map(String::from).to_vec();
        args.extend(h.args.iter().cloned());
        Ok(Call::Cli { tool: Tool::Helm, args, env: Vec::new(), timeout_secs: timeout + 30 })
    }
}

/// The release's history, oldest first (empty: no such release).
async fn history(c: &DeployConnections, t: &DeployTarget, h: &HelmConfig) -> Result<Vec<HelmRevision>, String> {
    let (cluster, ns, _, _) = t.connect(&c.clusters)?;
    cluster.helm_history(&ns, &h.release).await.map_err(|e| format!("could not read the history of {}: {e}", h.release))
}

fn version_of(r: &HelmRevision, tag_key: &str) -> String {
    r.value(tag_key).unwrap_or_else(|| r.app_version.clone())
}

fn deployed(r: &HelmRevision, tag_key: &str) -> Deployed {
    Deployed { revision: Some(r.revision), version: version_of(r, tag_key) }
}

fn when(r: &HelmRevision) -> String {
    r.updated.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "time unknown".into())
}

/// The resolved line of one revision: `revision 4 · version v1.2.5 · superseded · <time>`.
fn line(r: &HelmRevision, tag_key: &str) -> String {
    format!("revision {} · version {} · {} · app {} · {}", r.revision, version_of(r, tag_key), r.status, r.app_version, when(r))
}

/// Picks the rollback target in a Helm history (oldest first): `to` as a revision number, a
/// version, or empty for the newest earlier revision that was deployed successfully
/// (`deployed` or `superseded`) with another version than the current one.
pub(crate) fn pick<'a>(history: &'a [HelmRevision], tag_key: &str, to: &str) -> Result<(&'a HelmRevision, &'a HelmRevision), String> {
    let current = history.last().ok_or("the release has no history")?;
    let mut earlier = history.iter().rev().filter(|r| r.revision < current.revision);
    let target = if to.is_empty() {
        let cur = version_of(current, tag_key);
        earlier
            .find(|r| matches!(r.status.as_str(), "superseded" | "deployed") && version_of(r, tag_key) != cur)
            .ok_or_else(|| format!("no earlier revision was deployed successfully with another version than {cur}"))?
    } else if let Ok(n) = to.parse::<u32>() {
        if n == current.revision {
            return Err(format!("revision {n} is the current one"));
        }
        history.iter().find(|r| r.revision == n).ok_or_else(|| {
            let kept: Vec<String> = history.iter().map(|r| r.revision.to_string()).collect();
            format!("the release has no revision {n} (kept: {})", kept.join(", "))
        })?
    } else {
        let mut e = earlier.peekable();
        if e.peek().is_none() {
            return Err("the release has no earlier revision".into());
        }
        e.find(|r| version_of(r, tag_key) == to).ok_or_else(|| format!("no earlier revision of the release ran {to}"))?
    };
    Ok((current, target))
}
