//! `helm upgrade [--install]` and `helm rollback` for the stand-in: the revision's record in
//! Helm's storage, the image set on the workload's Deployment, `--wait`, and the statuses and
//! descriptions helm v3.21's `action.Upgrade`/`action.Rollback`/`action.Install` leave behind
//! (pending → deployed, the previous deployed one superseded; on failure the new revision
//! `failed` with helm's description and the previous one untouched).

use super::chart::{self, Chart, Workload};
use super::helm::{Ctx, Failure, ctx, flags, status_block, timeout, validate_release_name};
use super::release::{Info, Release, go_time};
use super::{Flag, flag, parse_flags};
use chrono::Local;
use serde_json::{Value, json};
use std::time::Duration;
const UPGRADE_FLAGS: [Flag; 21] = [
    flag("install", Some('i'), false),
    flag("set", None, true),
    flag("set-string", None, true),
    flag("values", Some('f'), true),
    flag("wait", None, false),
    flag("timeout", None, true),
    flag("history-max", None, true),
    flag("atomic", None, false),
    flag("create-namespace", None, false),
    flag("reset-values", None, false),
    flag("reuse-values", None, false),
    flag("description", None, true),
    flag("cleanup-on-fail", None, false),
    flag("force", None, false),
    flag("no-hooks", None, false),
    flag("version", None, true),
    flag("output", Some('o'), true),
    flag("wait-for-jobs", None, false),
    flag("dependency-update", None, false),
    flag("skip-crds", None, false),
    flag("devel", None, false),
];

pub(super) fn upgrade(args: &[String]) -> Result<String, Failure> {
    let p = parse_flags(args, &flags(&UPGRADE_FLAGS))?;
    let [name, chart_ref] = p.args.as_slice() else {
        return Err("\"helm upgrade\" requires 2 arguments\n\nUsage:  helm upgrade [RELEASE] [CHART] [flags]".to_string().into());
    };
    if p.on("atomic") {
        return Err("--atomic is not supported by the sandbox helm stand-in".to_string().into());
    }
    validate_release_name(name)?;
    let c = ctx(&p)?;
    let timeout = timeout(&p)?;
    let rt = super::runtime().map_err(|e| e.to_string())?;
    rt.block_on(async {
        c.kube.reachable().await?;
        let storage = c.storage();
        let history = storage.history(name).await?;
        let mut out = String::new();
        let installing = history.is_empty();
        if installing {
            if !p.on("install") {
                return Err(format!("UPGRADE FAILED: \"{name}\" has no deployed releases").into());
            }
            out.push_str(&format!("Release \"{name}\" does not exist. Installing it now.\n"));
        }
        let fail = |out: &str, message: String| Failure { stdout: out.to_string(), message };
        let prefix = if installing { "" } else { "UPGRADE FAILED: " };
        let chart = Chart::load(chart_ref).map_err(|e| fail(&out, e))?;
        let supplied = chart::user_values(&p.values("values"), &p.values("set"), &p.values("set-string")).map_err(|e| fail(&out, e))?;
        let now = go_time(Local::now());
        let (current, config, first_deployed, revision) = if installing {
            (None, supplied, now.clone(), 1)
        } else {
            let last = history[history.len() - 1].clone();
            if last.info.status.starts_with("pending-") {
                return Err(fail(&out, format!("{prefix}another operation (install/upgrade/rollback) is in progress")));
            }
            let current = history.iter().rev().find(|r| r.info.status == "deployed").cloned();
            let current = match current {
                Some(c) => c,
                None if matches!(last.info.status.as_str(), "failed" | "superseded") => last.clone(),
                None => {
                    return Err(fail(&out, format!("{prefix}\"{name}\" has no deployed releases")));
                }
            };
            let empty = supplied.as_object().is_none_or(|m| m.is_empty());
            let config = if p.on("reuse-values") {
                let mut c = current.config.clone();
                chart::merge_maps(&mut c, &supplied);
                c
            } else if empty && !p.on("reset-values") && current.config.as_object().is_some_and(|m| !m.is_empty()) {
                current.config.clone()
            } else {
                supplied
            };
            let first = current.info.first_deployed.clone();
            (Some(current), config, first, last.version + 1)
        };
        let chart_name = chart.metadata.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let values = chart::coalesce(&chart.values, &config);
        let workload = Workload::from_values(name, &chart_name, &chart.metadata, &values).map_err(|e| fail(&out, format!("{prefix}{e}")))?;
        let (pending, underway) = if installing { ("pending-install", "Initial install underway") } else { ("pending-upgrade", "Preparing upgrade") };
        let mut rel = Release {
            name: name.clone(),
            info: Info {
                first_deployed,
                last_deployed: now,
                deleted: String::new(),
                description: underway.into(),
                status: pending.into(),
                notes: String::new(),
            },
            chart: chart.to_release_json(),
            config: if config.is_null() { chart::empty() } else { config },
            manifest: String::new(),
            hooks: json!([]),
            version: revision,
            namespace: c.namespace.clone(),
        };
        let (existing, container) = resolve(&c, &workload).await.map_err(|e| fail(&out, format!("{prefix}{e}")))?;
        rel.manifest = workload.manifest(&chart_name, &container);
        storage.create(&rel, &history).await.map_err(|e| fail(&out, format!("{prefix}{e}")))?;
        let result = match set_image(&c, &workload, existing, &container, name).await {
            Ok(()) if p.on("wait") => wait_rollout(&c, &workload, timeout).await,
            other => other,
        };
        if let Err(e) = result {
            let description = if installing { format!("Release \"{name}\" failed: {e}") } else { format!("Upgrade \"{name}\" failed: {e}") };
            rel.set_status("failed", &description);
            if let Some(cur) = &current {
                let _ = storage.update(cur).await;
            }
            let _ = storage.update(&rel).await;
            return Err(fail(&out, format!("{prefix}{e}")));
        }
        if let Some(mut cur) = current {
            cur.info.status = "superseded".into();
            storage.update(&cur).await.map_err(|e| fail(&out, format!("{prefix}{e}")))?;
        }
        let done = p
            .value("description")
            .map(String::from)
            .unwrap_or_else(|| if installing { "Install complete".into() } else { "Upgrade complete".into() });
        rel.set_status("deployed", &done);
        storage.update(&rel).await.map_err(|e| fail(&out, format!("{prefix}{e}")))?;
        if !installing {
            out.push_str(&format!("Release \"{name}\" has been upgraded. Happy Helming!\n"));
        }
        out.push_str(&status_block(&rel));
        Ok(out)
    })
}

/// The workload's Deployment as it is now, and the container the image goes to.
async fn resolve(c: &Ctx, w: &Workload) -> Result<(Option<Value>, String), String> {
    let path = format!("/apis/apps/v1/namespaces/{}/deployments/{}", c.namespace, w.deployment);
    let existing =
        c.kube.get(&path).await.map_err(|e| {
            format!("could not get information about the resource Deployment \"{}\" in namespace \"{}\": {e}", w.deployment, c.namespace)
        })?;
    let container = match (&w.container, &existing) {
        (Some(name), _) => name.clone(),
        (None, Some(d)) => d.pointer("/spec/template/spec/containers/0/name").and_then(Value::as_str).unwrap_or("app").to_string(),
        (None, None) => "app".into(),
    };
    Ok((existing, container))
}

/// Sets the workload's image on the cluster (creating the Deployment if there is none).
async fn set_image(c: &Ctx, w: &Workload, existing: Option<Value>, container: &str, release: &str) -> Result<(), String> {
    let annotations = json!({"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": c.namespace});
    let Some(d) = existing else {
        let d = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": w.deployment, "namespace": c.namespace,
                         "labels": {"app": w.deployment, "app.kubernetes.io/managed-by": "Helm"}, "annotations": annotations},
            "spec": {
                "replicas": w.replicas,
                "selector": {"matchLabels": {"app": w.deployment}},
                "template": {
                    "metadata": {"labels": {"app": w.deployment}},
                    "spec": {"containers": [{"name": container, "image": w.image, "ports": [{"containerPort": 8080, "name": "http"}]}]}
                }
            }
        });
        let path = format!("/apis/apps/v1/namespaces/{}/deployments", c.namespace);
        c.kube.post(&path, &d).await.map_err(|e| format!("failed to create resource: {e}"))?;
        return Ok(());
    };
    let has = d
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|x| x.get("name").and_then(Value::as_str) == Some(container)));
    if !has {
        return Err(format!(
            "cannot patch \"{}\" with kind Deployment: the Deployment has no container \"{container}\" (value `container`)",
            w.deployment
        ));
    }
    let patch = json!({
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"}, "annotations": annotations},
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": w.image}]}}}
    });
    let path = format!("/apis/apps/v1/namespaces/{}/deployments/{}", c.namespace, w.deployment);
    c.kube.patch(&path, &patch).await.map_err(|e| format!("cannot patch \"{}\" with kind Deployment: {e}", w.deployment))?;
    Ok(())
}

/// Polls until the rollout is complete with every pod Ready on the image, or the deadline.
async fn wait_rollout(c: &Ctx, w: &Workload, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let path = format!("/apis/apps/v1/namespaces/{}/deployments/{}", c.namespace, w.deployment);
    loop {
        if rollout_done(c, w, &path).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("context deadline exceeded".into());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

async fn rollout_done(c: &Ctx, w: &Workload, path: &str) -> Result<bool, String> {
    let Some(d) = c.kube.get(path).await.map_err(|e| e.to_string())? else {
        return Err(format!("deployments.apps \"{}\" not found", w.deployment));
    };
    let int = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    if int("/status/observedGeneration") < int("/metadata/generation")
        || int("/status/updatedReplicas") != want
        || int("/status/availableReplicas") != want
        || int("/status/replicas") != want
    {
        return Ok(false);
    }
    let selector = d
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let pods = c.kube.list(&format!("/api/v1/namespaces/{}/pods", c.namespace), &selector).await.map_err(|e| e.to_string())?;
    let ready_on_image = |p: &Value| {
        p.pointer("/metadata/deletionTimestamp").is_none()
            && p.pointer("/spec/containers")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|x| x.get("image").and_then(Value::as_str) == Some(w.image.as_str())))
            && p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
                cs.iter().any(|x| x.get("type").and_then(Value::as_str) == Some("Ready") && x.get("status").and_then(Value::as_str) == Some("True"))
            })
    };
    Ok(pods.len() as i64 == want && pods.iter().all(ready_on_image))
}

pub(super) fn rollback(args: &[String]) -> Result<String, String> {
    let p = parse_flags(
        args,
        &flags(&[
            flag("wait", None, false),
            flag("timeout", None, true),
            flag("history-max", None, true),
            flag("cleanup-on-fail", None, false),
            flag("force", None, false),
            flag("no-hooks", None, false),
            flag("recreate-pods", None, false),
            flag("wait-for-jobs", None, false),
        ]),
    )?;
    let (name, wanted) = match p.args.as_slice() {
        [name] => (name, 0),
        [name, rev] => (
            name,
            rev.parse::<i64>().map_err(|_| format!("could not convert revision to a number: strconv.Atoi: parsing \"{rev}\": invalid syntax"))?,
        ),
        _ => return Err("This command needs 1 argument: release name (revision is optional)".into()),
    };
    if wanted < 0 {
        return Err("invalid release revision number".into());
    }
    validate_release_name(name).map_err(|_| format!("prepareRollback: Release name is invalid: {name}"))?;
    let c = ctx(&p)?;
    let timeout = timeout(&p)?;
    let rt = super::runtime().map_err(|e| e.to_string())?;
    rt.block_on(async {
        c.kube.reachable().await?;
        let storage = c.storage();
        let history = storage.history(name).await?;
        let Some(mut current) = history.last().cloned() else {
            return Err("release: not found".to_string());
        };
        let target = if wanted == 0 { i64::from(current.version) - 1 } else { wanted };
        let Some(previous) = history.iter().find(|r| i64::from(r.version) == target) else {
            return Err(format!("release has no {target} version"));
        };
        let mut rel = Release {
            name: name.clone(),
            info: Info {
                first_deployed: current.info.first_deployed.clone(),
                last_deployed: go_time(Local::now()),
                deleted: String::new(),
                description: format!("Rollback to {target}"),
                status: "pending-rollback".into(),
                notes: previous.info.notes.clone(),
            },
            chart: previous.chart.clone(),
            config: previous.config.clone(),
            manifest: previous.manifest.clone(),
            hooks: previous.hooks.clone(),
            version: current.version + 1,
            namespace: current.namespace.clone(),
        };
        let chart_name = rel.chart_name().to_string();
        let metadata = rel.chart.get("metadata").cloned().unwrap_or(Value::Null);
        let values = chart::coalesce(rel.chart.get("values").unwrap_or(&Value::Null), &rel.config);
        let workload = Workload::from_values(name, &chart_name, &metadata, &values)?;
        let (existing, container) = resolve(&c, &workload).await?;
        if rel.manifest.is_empty() {
            rel.manifest = workload.manifest(&chart_name, &container);
        }
        storage.create(&rel, &history).await?;
        if let Err(e) = set_image(&c, &workload, existing, &container, name).await {
            // performRollback: the old current is superseded, the new revision failed.
            current.info.status = "superseded".into();
            rel.set_status("failed", &format!("Rollback \"{name}\" failed: {e}"));
            let _ = storage.update(&current).await;
            let _ = storage.update(&rel).await;
            return Err(e);
        }
        if p.on("wait")
            && let Err(e) = wait_rollout(&c, &workload, timeout).await
        {
            rel.set_status("failed", &format!("Release \"{name}\" failed: {e}"));
            let _ = storage.update(&current).await;
            let _ = storage.update(&rel).await;
            return Err(format!("release {name} failed: {e}"));
        }
        // Supersede every previously deployed revision (helm issue #2941).
        for r in storage.history(name).await? {
            if r.info.status == "deployed" && r.version != rel.version {
                let mut r = r;
                r.info.status = "superseded".into();
                storage.update(&r).await?;
            }
        }
        rel.info.status = "deployed".into();
        storage.update(&rel).await?;
        Ok("Rollback was a success! Happy Helming!\n".to_string())
    })
}
