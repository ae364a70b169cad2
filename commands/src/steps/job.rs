//! `k8s-job-from-cronjob`: creates a Job from a CronJob (as `kubectl create job --from=cronjob/…`),
//! streams its pod's log to the detail thread and succeeds or fails with the Job. Used by the
//! built-in `backup-now` runbook with the database's `backup_cronjob`.

use super::{Prepared, StepContext, StepKind, StepOutcome};
use crate::ports::cluster::Clusters;
use crate::runbook::render;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

const DEFAULT_TIMEOUT_SECS: u64 = 3600;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Def {
    cluster: Option<String>,
    /// `namespace/cronjob`; default `{backup_cronjob}`.
    cronjob: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Params {
    cluster: String,
    namespace: String,
    cronjob: String,
    timeout_secs: u64,
}

pub struct JobFromCronJob {
    pub clusters: Clusters,
}

/// A Job name from the CronJob's and the execution's: lowercase, ≤ 63 characters.
fn job_name(cronjob: &str, execution: &str) -> String {
    let suffix = format!("-manual-{}", execution.to_ascii_lowercase());
    let keep = 63usize.saturating_sub(suffix.len());
    let base: String = cronjob.chars().take(keep).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

#[async_trait]
impl StepKind for JobFromCronJob {
    fn kind(&self) -> &'static str {
        "k8s-job-from-cronjob"
    }

    /// Not repeated blindly after a crash: a second Job would take a second backup.
    fn default_idempotent(&self) -> bool {
        false
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let def: Def = super::definition(params)?;
        let cluster = super::k8s::locate(&def.cluster, "cluster", vars)?;
        let cronjob = match &def.cronjob {
            Some(t) => render(t, vars)?,
            None => vars.get("backup_cronjob").cloned().ok_or("the database has no `backup_cronjob` (namespace/name) configured")?,
        };
        // Blank values only come from config checking, which probes with blanks.
        let (namespace, name) = match cronjob.split_once('/') {
            Some((ns, n)) if !ns.is_empty() && !n.is_empty() => (ns.to_string(), n.to_string()),
            _ if cronjob.is_empty() => (String::new(), String::new()),
            _ => return Err(format!("'{cronjob}' is not namespace/cronjob")),
        };
        let timeout_secs = super::timeout_secs(&def.timeout, DEFAULT_TIMEOUT_SECS)?;
        let action =
            format!("create a Job from cronjob {namespace}/{name} on cluster {cluster}, follow its log, wait up to {timeout_secs}s for it to finish");
        Ok(Prepared { action, params: serde_json::to_value(Params { cluster, namespace, cronjob: name, timeout_secs }).map_err(|e| e.to_string())? })
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
        let job = job_name(&p.cronjob, &ctx.execution.id.to_string());
        let started = tokio::time::Instant::now();
        let run = c.run_job_from_cronjob(&p.namespace, &p.cronjob, &job, ctx.output.clone(), Duration::from_secs(p.timeout_secs));
        let Some(outcome) = super::unless_cancelled(&ctx.cancel, run).await else {
            return StepOutcome::Cancelled(format!("cancelled while job {job} ran; the Job itself was not deleted"));
        };
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(true) => StepOutcome::Succeeded(format!("job {job} succeeded in {secs:.0}s")),
            Ok(false) => StepOutcome::Failed(format!("job {job} failed after {secs:.0}s (its log is in the thread)")),
            Err(e) => StepOutcome::Failed(format!("job {job}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_names_fit_kubernetes() {
        assert_eq!(super::job_name("promotions-db-backup", "R-12"), "promotions-db-backup-manual-r-12");
        let long = "x".repeat(80);
        let n = super::job_name(&long, "R-123456");
        assert!(n.len() <= 63 && n.ends_with("-manual-r-123456"), "{n}");
    }
}
