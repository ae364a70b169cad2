//! The control plane's controllers, run by one tokio task on every tick of
//! [`super::Timing`] and right after every API write:
//!
//! - **Deployment**: the ReplicaSet for the current pod template (`<name>-<pod-template-hash>`,
//!   revision annotations, owner reference), rolling updates honouring
//!   `maxSurge`/`maxUnavailable` (ints or percentages, the controller's rounding), Recreate,
//!   `paused`, rollback to an older template (its ReplicaSet gets the next revision), status
//!   (`observedGeneration`, `replicas`, `updatedReplicas`, `readyReplicas`,
//!   `availableReplicas`, `unavailableReplicas`) and the `Available`/`Progressing` conditions
//!   exactly as `pkg/controller/deployment/progress.go` sets them, `ProgressDeadlineExceeded`
//!   included. Events `ScalingReplicaSet`.
//! - **ReplicaSet**: creates/deletes pods to match `spec.replicas` (deleting not-ready, more
//!   restarted, newer pods first), status, events `SuccessfulCreate`/`SuccessfulDelete`.
//! - **Job**: pods with the `job-name` labels, `backoffLimit`, `completions`/`parallelism`,
//!   status and conditions (`SuccessCriteriaMet`+`Complete`, `FailureTarget`+`Failed`),
//!   events. **CronJob**: `status.active` and `lastSuccessfulTime` from its Jobs (no schedule).
//! - **Garbage collector**: deletes objects whose owners are all gone (background
//!   propagation), and empties namespaces being deleted.
//!
//! Simplified: `minReadySeconds` is ignored (available = ready); no adoption of orphans by
//! selector; no `collisionCount` handling.

use super::kubelet;
use super::registry::{self, DeleteOpts, EventSpec, Target, emit_event};
use super::resources::{CRONJOBS, DEPLOYMENTS, JOBS, NAMESPACES, PODS, REPLICASETS, RESOURCES, ResId};
use super::util::{at, fmt_time, meta_str, parse_time, set, template_hash};
use super::{Shared, State};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

pub async fn run(sh: Arc<Shared>) {
    let tick = sh.timing.tick();
    loop {
        {
            let mut st = sh.lock();
            reconcile(&mut st);
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = sh.notify.notified() => {}
        }
    }
}

pub fn reconcile(st: &mut State) {
    namespaces(st);
    garbage_collect(st);
    kubelet::sync(st);
    replicasets(st);
    deployments(st);
    replicasets(st);
    jobs(st);
    cronjobs(st);
}

// ------------------------------------------------------------------ helpers

fn int(v: &Value, path: &[&str]) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn controller_uid(obj: &Value) -> Option<&str> {
    at(obj, &["metadata", "ownerReferences"])
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

fn owned(st: &State, id: ResId, ns: &str, owner_uid: &str) -> Vec<Value> {
    st.store.list(id, Some(ns)).filter(|o| controller_uid(o) == Some(owner_uid)).cloned().collect()
}

fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": meta_str(owner, "name"),
        "uid": meta_str(owner, "uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn deleting(obj: &Value) -> bool {
    !meta_str(obj, "deletionTimestamp").is_empty()
}

pub fn pod_ready(pod: &Value) -> bool {
    at(pod, &["status", "conditions"]).and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn phase(pod: &Value) -> &str {
    at(pod, &["status", "phase"]).and_then(Value::as_str).unwrap_or("")
}

fn event(st: &mut State, obj: &Value, type_: &str, reason: &str, message: String, component: &str) {
    emit_event(st, obj, EventSpec { type_, reason, message, component, field_path: None });
}

/// Writes `obj` with a new status if it changed (no-op writes keep the resourceVersion).
fn put_status(st: &mut State, id: ResId, obj: &Value, status: Value) {
    if obj.get("status") == Some(&status) {
        return;
    }
    let (ns, name) = (meta_str(obj, "namespace"), meta_str(obj, "name"));
    if let Some(cur) = st.store.get(id, ns, name).cloned() {
        let mut cur = cur;
        cur["status"] = status;
        st.store.update(id, cur);
    }
}

/// Drops zero integers, as the Go types' `omitempty` does.
fn omit_zero(status: &mut Value, keys: &[&str]) {
    if let Value::Object(m) = status {
        for k in keys {
            if m.get(*k).and_then(Value::as_i64) == Some(0) {
                m.remove(*k);
            }
        }
    }
}

// ------------------------------------------------------------------ namespaces & GC

fn namespaces(st: &mut State) {
    let doomed: Vec<String> = st.store.list(NAMESPACES, None).filter(|n| deleting(n)).map(|n| meta_str(n, "name").to_string()).collect();
    for ns in doomed {
        for (id, r) in RESOURCES.iter().enumerate() {
            if !r.namespaced {
                continue;
            }
            let names: Vec<String> = st.store.list(id, Some(&ns)).map(|o| meta_str(o, "name").to_string()).collect();
            for n in names {
                st.store.remove(id, &ns, &n);
            }
        }
        st.store.remove(NAMESPACES, "", &ns);
    }
}

fn garbage_collect(st: &mut State) {
    let uids: HashSet<String> = st.store.all().map(|(_, o)| meta_str(o, "uid").to_string()).collect();
    let mut orphans = Vec::new();
    for (k, o) in st.store.all() {
        let Some(refs) = at(o, &["metadata", "ownerReferences"]).and_then(Value::as_array) else { continue };
        if refs.is_empty() || deleting(o) {
            continue;
        }
        let alive = refs.iter().any(|r| r.get("uid").and_then(Value::as_str).is_some_and(|u| uids.contains(u)));
        if !alive {
            orphans.push(k.clone());
        }
    }
    for k in orphans {
        let _ = registry::delete(st, k.res, &k.ns, &k.name, &DeleteOpts::default(), false);
    }
}

// ------------------------------------------------------------------ ReplicaSets

fn pod_from_template(owner: &Value, template: &Value) -> Value {
    let name = meta_str(owner, "name");
    let mut meta = json!({
        "generateName": format!("{name}-"),
        "namespace": meta_str(owner, "namespace"),
        "ownerReferences": [owner_ref(owner)],
    });
    for k in ["labels", "annotations"] {
        if let Some(v) = at(template, &["metadata", k]) {
            meta[k] = v.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

fn replicasets(st: &mut State) {
    let rss: Vec<Value> = st.store.list(REPLICASETS, None).cloned().collect();
    for rs in rss {
        if deleting(&rs) {
            continue;
        }
        let (ns, uid) = (meta_str(&rs, "namespace").to_string(), meta_str(&rs, "uid").to_string());
        let want = int(&rs, &["spec", "replicas"]);
        let mut active: Vec<Value> =
            owned(st, PODS, &ns, &uid).into_iter().filter(|p| !deleting(p) && phase(p) != "Succeeded" && phase(p) != "Failed").collect();
        let have = active.len() as i64;
        if have < want {
            let template = at(&rs, &["spec", "template"]).cloned().unwrap_or(json!({}));
            for _ in 0..(want - have).min(500) {
                match registry::create(st, PODS, &ns, pod_from_template(&rs, &template), false) {
                    Ok(p) => {
                        event(st, &rs, "Normal", "SuccessfulCreate", format!("Created pod: {}", meta_str(&p, "name")), "replicaset-controller");
                        active.push(p);
                    }
                    Err(e) => {
                        event(st, &rs, "Warning", "FailedCreate", format!("Error creating: {}", e.message), "replicaset-controller");
                        break;
                    }
                }
            }
        } else if have > want {
            // Unscheduled < pending < running; not ready < ready; more restarts first; newer first.
            let restarts = |p: &Value| -> i64 {
                at(p, &["status", "containerStatuses"])
                    .and_then(Value::as_array)
                    .map(|cs| cs.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum())
                    .unwrap_or(0)
            };
            active.sort_by(|a, b| {
                let ka = (phase(a) == "Running", pod_ready(a), std::cmp::Reverse(restarts(a)));
                let kb = (phase(b) == "Running", pod_ready(b), std::cmp::Reverse(restarts(b)));
                ka.cmp(&kb).then_with(|| meta_str(b, "creationTimestamp").cmp(meta_str(a, "creationTimestamp")))
            });
            let doomed: Vec<Value> = active.drain(..(have - want) as usize).collect();
            for p in doomed {
                let name = meta_str(&p, "name").to_string();
                if registry::delete(st, PODS, &ns, &name, &DeleteOpts::default(), false).is_ok() {
                    event(st, &rs, "Normal", "SuccessfulDelete", format!("Deleted pod: {name}"), "replicaset-controller");
                }
            }
        }
        let ready = active.iter().filter(|p| pod_ready(p)).count() as i64;
        let n = active.len() as i64;
        let mut status = json!({
            "replicas": n,
            "fullyLabeledReplicas": n,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": int(&rs, &["metadata", "generation"]),
        });
        omit_zero(&mut status, &["fullyLabeledReplicas", "readyReplicas", "availableReplicas"]);
        put_status(st, REPLICASETS, &rs, status);
    }
}

// ------------------------------------------------------------------ Deployments

const REVISION: &str = "deployment.kubernetes.io/revision";

fn revision(obj: &Value) -> i64 {
    at(obj, &["metadata", "annotations", REVISION]).and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// `intstr.GetScaledValueFromIntOrPercent`.
fn int_or_percent(v: Option<&Value>, total: i64, round_up: bool, default_pct: i64) -> i64 {
    let pct = |p: i64| {
        let x = p * total;
        if round_up { (x + 99).div_euclid(100) } else { x.div_euclid(100) }
    };
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.strip_suffix('%') {
            Some(p) => pct(p.trim().parse().unwrap_or(default_pct)),
            None => s.trim().parse().unwrap_or_else(|_| pct(default_pct)),
        },
        _ => pct(default_pct),
    }
}

/// (maxSurge, maxUnavailable) resolved against `desired` like `ResolveFenceposts`.
fn fenceposts(d: &Value, desired: i64) -> (i64, i64) {
    let ru = at(d, &["spec", "strategy", "rollingUpdate"]);
    let surge = int_or_percent(ru.and_then(|r| r.get("maxSurge")), desired, true, 25).max(0);
    let mut unavail = int_or_percent(ru.and_then(|r| r.get("maxUnavailable")), desired, false, 25).max(0);
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    (surge, unavail.min(desired.max(0)))
}

fn scale_rs(st: &mut State, d: &Value, rs_name: &str, ns: &str, to: i64, desired: i64, surge: i64) {
    let Some(rs) = st.store.get(REPLICASETS, ns, rs_name).cloned() else { return };
    let from = int(&rs, &["spec", "replicas"]);
    let mut new = rs.clone();
    new["spec"]["replicas"] = json!(to);
    set(&mut new, &["metadata", "annotations", "deployment.kubernetes.io/desired-replicas"], json!(desired.to_string()));
    set(&mut new, &["metadata", "annotations", "deployment.kubernetes.io/max-replicas"], json!((desired + surge).to_string()));
    if new == rs {
        return;
    }
    // Through the registry so that generation is bumped like a client's update.
    if registry::replace(st, REPLICASETS, ns, rs_name, new, Target::Main, false).is_ok() && from != to {
        let dir = if to > from { "up" } else { "down" };
        event(st, d, "Normal", "ScalingReplicaSet", format!("Scaled {dir} replica set {rs_name} from {from} to {to}"), "deployment-controller");
    }
}

fn new_replica_set(st: &mut State, d: &Value, hash: &str, replicas: i64, rev: i64, desired: i64, surge: i64) -> Option<Value> {
    let (ns, name) = (meta_str(d, "namespace"), meta_str(d, "name"));
    let mut template = at(d, &["spec", "template"]).cloned().unwrap_or(json!({}));
    set(&mut template, &["metadata", "labels", "pod-template-hash"], json!(hash));
    let mut selector = at(d, &["spec", "selector"]).cloned().unwrap_or(json!({}));
    set(&mut selector, &["matchLabels", "pod-template-hash"], json!(hash));
    let labels = at(&template, &["metadata", "labels"]).cloned().unwrap_or(json!({}));
    let mut spec = json!({"replicas": replicas, "selector": selector, "template": template});
    if let Some(m) = at(d, &["spec", "minReadySeconds"]) {
        spec["minReadySeconds"] = m.clone();
    }
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"),
            "namespace": ns,
            "labels": labels,
            "annotations": {
                REVISION: rev.to_string(),
                "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                "deployment.kubernetes.io/max-replicas": (desired + surge).to_string(),
            },
            "ownerReferences": [owner_ref(d)],
        },
        "spec": spec,
    });
    let rs = registry::create(st, REPLICASETS, ns, rs, false).ok()?;
    if replicas > 0 {
        event(
            st,
            d,
            "Normal",
            "ScalingReplicaSet",
            format!("Scaled up replica set {} from 0 to {replicas}", meta_str(&rs, "name")),
            "deployment-controller",
        );
    }
    Some(rs)
}

fn condition<'a>(status: &'a Value, t: &str) -> Option<&'a Value> {
    status.get("conditions").and_then(Value::as_array)?.iter().find(|c| c["type"] == t)
}

/// `SetDeploymentCondition`: no change if status and reason are the same (unless `touch`,
/// which refreshes `lastUpdateTime` — the Progressing special case); `lastTransitionTime`
/// kept while the status stays the same.
fn set_condition(conds: &mut Vec<Value>, t: &str, status: &str, reason: &str, message: String, now: &str, touch: bool) {
    let pos = conds.iter().position(|c| c["type"] == t);
    let mut transition = now.to_string();
    if let Some(i) = pos {
        let cur = &conds[i];
        if cur["status"] == status && cur["reason"] == reason && !touch {
            return;
        }
        if cur["status"] == status
            && let Some(lt) = cur["lastTransitionTime"].as_str()
        {
            transition = lt.to_string();
        }
    }
    let c = json!({"type": t, "status": status, "lastUpdateTime": now, "lastTransitionTime": transition, "reason": reason, "message": message});
    match pos {
        Some(i) => conds[i] = c,
        None => conds.push(c),
    }
}

fn deployments(st: &mut State) {
    let ds: Vec<Value> = st.store.list(DEPLOYMENTS, None).cloned().collect();
    for d in ds {
        if deleting(&d) {
            continue;
        }
        deployment(st, d);
    }
}

/// What one pass over a Deployment works from: where it is and its spec's rollout settings.
struct Rollout {
    ns: String,
    uid: String,
    desired: i64,
    surge: i64,
    unavail: i64,
    paused: bool,
    recreate: bool,
    hash: String,
}

impl Rollout {
    fn of(d: &Value) -> Self {
        let desired = at(d, &["spec", "replicas"]).and_then(Value::as_i64).unwrap_or(1);
        let (surge, unavail) = fenceposts(d, desired);
        Rollout {
            ns: meta_str(d, "namespace").to_string(),
            uid: meta_str(d, "uid").to_string(),
            desired,
            surge,
            unavail,
            paused: at(d, &["spec", "paused"]).and_then(Value::as_bool) == Some(true),
            recreate: at(d, &["spec", "strategy", "type"]).and_then(Value::as_str) == Some("Recreate"),
            hash: template_hash(at(d, &["spec", "template"]).unwrap_or(&Value::Null)),
        }
    }

    /// The Deployment's ReplicaSets, oldest revision first.
    fn by_rev(&self, st: &State) -> Vec<Value> {
        let mut v = owned(st, REPLICASETS, &self.ns, &self.uid);
        v.sort_by_key(|r| (revision(r), meta_str(r, "creationTimestamp").to_string()));
        v
    }

    /// The ReplicaSets other than the one for the current template, oldest revision first.
    fn olds(&self, st: &State, new_name: &str) -> Vec<Value> {
        self.by_rev(st).into_iter().filter(|r| meta_str(r, "name") != new_name).collect()
    }

    fn spec_of(&self, st: &State, rs_name: &str) -> i64 {
        st.store.get(REPLICASETS, &self.ns, rs_name).map_or(0, |r| int(r, &["spec", "replicas"]))
    }

    fn scale(&self, st: &mut State, d: &Value, rs_name: &str, to: i64) {
        scale_rs(st, d, rs_name, &self.ns, to, self.desired, self.surge);
    }
}

/// The ReplicaSet for the current template, as `getNewReplicaSet` finds or makes it.
struct NewRs {
    name: Option<String>,
    created: bool,
}

fn deployment(st: &mut State, mut d: Value) {
    let ro = Rollout::of(&d);
    let new = sync_new_replica_set(st, &ro, &mut d);
    if !ro.paused
        && let Some(new_name) = &new.name
    {
        if ro.recreate {
            rollout_recreate(st, &ro, &d, new_name);
        } else if ro.olds(st, new_name).iter().all(|o| int(o, &["spec", "replicas"]) == 0) {
            if ro.spec_of(st, new_name) != ro.desired {
                ro.scale(st, &d, new_name, ro.desired);
            }
        } else {
            rollout_rolling(st, &ro, &d, new_name);
        }
        prune_history(st, &ro, &d, new_name);
    }
    sync_status(st, &ro, &d, &new);
}

/// Finds the ReplicaSet for the current template, creating it (sized for the strategy) unless
/// paused; a rollback to an older template gives its ReplicaSet the next revision. The
/// Deployment's revision annotation follows the new ReplicaSet's.
fn sync_new_replica_set(st: &mut State, ro: &Rollout, d: &mut Value) -> NewRs {
    let rss = ro.by_rev(st);
    let max_rev = rss.iter().map(revision).max().unwrap_or(0);
    let is_new = |r: &Value| at(r, &["metadata", "labels", "pod-template-hash"]).and_then(Value::as_str) == Some(ro.hash.as_str());
    let mut new_rs = rss.iter().find(|r| is_new(r)).cloned();
    let mut created = false;
    if new_rs.is_none() && !ro.paused {
        let old_spec: i64 = rss.iter().map(|r| int(r, &["spec", "replicas"])).sum();
        let old_pods: i64 = rss.iter().map(|r| int(r, &["status", "replicas"])).sum();
        let initial = if old_spec == 0 && old_pods == 0 {
            ro.desired
        } else if ro.recreate {
            0
        } else {
            (ro.desired + ro.surge - old_spec).clamp(0, ro.desired)
        };
        new_rs = new_replica_set(st, d, &ro.hash, initial, max_rev + 1, ro.desired, ro.surge);
        created = new_rs.is_some();
    } else if let Some(rs) = &new_rs
        && revision(rs) < max_rev
    {
        // Rollback to an older template: it becomes the newest revision.
        let mut r = rs.clone();
        set(&mut r, &["metadata", "annotations", REVISION], json!((max_rev + 1).to_string()));
        new_rs = Some(st.store.update(REPLICASETS, r));
    }
    if let Some(rs) = &new_rs {
        let rev = revision(rs).to_string();
        if at(d, &["metadata", "annotations", REVISION]).and_then(Value::as_str) != Some(rev.as_str()) {
            let mut nd = d.clone();
            set(&mut nd, &["metadata", "annotations", REVISION], json!(rev));
            *d = st.store.update(DEPLOYMENTS, nd);
        }
    }
    NewRs { name: new_rs.as_ref().map(|r| meta_str(r, "name").to_string()), created }
}

/// Recreate: scale every old ReplicaSet to zero, and only once their pods are gone the new one up.
fn rollout_recreate(st: &mut State, ro: &Rollout, d: &Value, new_name: &str) {
    let mut any_old = false;
    for o in &ro.olds(st, new_name) {
        if int(o, &["spec", "replicas"]) > 0 {
            ro.scale(st, d, meta_str(o, "name"), 0);
            any_old = true;
        }
        any_old |= !owned(st, PODS, &ro.ns, meta_str(o, "uid")).is_empty();
    }
    if !any_old && ro.spec_of(st, new_name) != ro.desired {
        ro.scale(st, d, new_name, ro.desired);
    }
}

/// RollingUpdate while old ReplicaSets still have replicas: `reconcileNewReplicaSet` (grow the
/// new one within maxSurge) then `reconcileOldReplicaSets` (shrink the old within maxUnavailable).
fn rollout_rolling(st: &mut State, ro: &Rollout, d: &Value, new_name: &str) {
    let new_spec = ro.spec_of(st, new_name);
    if new_spec > ro.desired {
        ro.scale(st, d, new_name, ro.desired);
    } else if new_spec < ro.desired {
        let total: i64 = ro.by_rev(st).iter().map(|r| int(r, &["spec", "replicas"])).sum();
        let room = ro.desired + ro.surge - total;
        if room > 0 {
            ro.scale(st, d, new_name, (new_spec + room).min(ro.desired));
        }
    }
    let all = ro.by_rev(st);
    let new_now = all.iter().find(|r| meta_str(r, "name") == new_name).cloned().unwrap_or(json!({}));
    let min_avail = ro.desired - ro.unavail;
    let all_pods: i64 = all.iter().map(|r| int(r, &["status", "replicas"])).sum();
    let new_unavail = int(&new_now, &["spec", "replicas"]) - int(&new_now, &["status", "availableReplicas"]);
    let mut max_down = all_pods - min_avail - new_unavail;
    if max_down <= 0 {
        return;
    }
    // cleanupUnhealthyReplicas
    for o in ro.olds(st, new_name) {
        if max_down <= 0 {
            break;
        }
        let spec = int(&o, &["spec", "replicas"]);
        let unhealthy = spec - int(&o, &["status", "availableReplicas"]);
        if spec == 0 || unhealthy <= 0 {
            continue;
        }
        let down = max_down.min(unhealthy);
        ro.scale(st, d, meta_str(&o, "name"), spec - down);
        max_down -= down;
    }
    // scaleDownOldReplicaSetsForRollingUpdate
    let avail: i64 = ro.by_rev(st).iter().map(|r| int(r, &["status", "availableReplicas"])).sum();
    let mut can = avail - min_avail;
    for o in ro.olds(st, new_name) {
        if can <= 0 {
            break;
        }
        let spec = int(&o, &["spec", "replicas"]);
        if spec == 0 {
            continue;
        }
        let down = spec.min(can);
        ro.scale(st, d, meta_str(&o, "name"), spec - down);
        can -= down;
    }
}

/// Old ReplicaSets beyond revisionHistoryLimit (scaled to zero, no pods) are pruned, oldest first.
fn prune_history(st: &mut State, ro: &Rollout, d: &Value, new_name: &str) {
    let limit = at(d, &["spec", "revisionHistoryLimit"]).and_then(Value::as_i64).unwrap_or(10).max(0) as usize;
    let idle: Vec<Value> =
        ro.olds(st, new_name).into_iter().filter(|o| int(o, &["spec", "replicas"]) == 0 && int(o, &["status", "replicas"]) == 0).collect();
    if idle.len() > limit {
        for o in &idle[..idle.len() - limit] {
            let _ = registry::delete(st, REPLICASETS, &ro.ns, meta_str(o, "name"), &DeleteOpts::default(), false);
        }
    }
}

/// The Deployment's pods summed over its ReplicaSets, as `calculateStatus` counts them.
struct Counts {
    replicas: i64,
    updated: i64,
    ready: i64,
    available: i64,
}

/// Writes the Deployment's status: the counts, `Available`, and `Progressing` unless paused.
fn sync_status(st: &mut State, ro: &Rollout, d: &Value, new: &NewRs) {
    let now: DateTime<Utc> = Utc::now();
    let now_s = fmt_time(now);
    let all = ro.by_rev(st);
    let new_now = new.name.as_ref().and_then(|n| all.iter().find(|r| meta_str(r, "name") == n)).cloned();
    let c = Counts {
        replicas: all.iter().map(|r| int(r, &["status", "replicas"])).sum(),
        updated: new_now.as_ref().map_or(0, |r| int(r, &["status", "replicas"])),
        ready: all.iter().map(|r| int(r, &["status", "readyReplicas"])).sum(),
        available: all.iter().map(|r| int(r, &["status", "availableReplicas"])).sum(),
    };
    let total_spec: i64 = all.iter().map(|r| int(r, &["spec", "replicas"])).sum();
    let old_status = d.get("status").cloned().unwrap_or(json!({}));
    let mut conds: Vec<Value> = old_status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();

    if c.available >= ro.desired - ro.unavail {
        set_condition(&mut conds, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into(), &now_s, false);
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            &now_s,
            false,
        );
    }
    let mut new_status = json!({
        "observedGeneration": int(d, &["metadata", "generation"]),
        "replicas": c.replicas,
        "updatedReplicas": c.updated,
        "readyReplicas": c.ready,
        "availableReplicas": c.available,
        "unavailableReplicas": (total_spec - c.available).max(0),
    });
    if ro.paused {
        set_condition(&mut conds, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into(), &now_s, false);
    } else {
        progressing(&mut conds, d, &old_status, &c, ro.desired, new, now);
    }
    conds.sort_by_key(|c| if c["type"] == "Available" { 0 } else { 1 });
    new_status["conditions"] = json!(conds);
    omit_zero(&mut new_status, &["replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas", "observedGeneration"]);
    put_status(st, DEPLOYMENTS, d, new_status);
}

/// The `Progressing` condition of an unpaused Deployment: a new or found ReplicaSet, a resume,
/// then `syncRolloutStatus` (complete, progressing, or past `progressDeadlineSeconds`).
fn progressing(conds: &mut Vec<Value>, d: &Value, old_status: &Value, c: &Counts, desired: i64, new: &NewRs, now: DateTime<Utc>) {
    let now_s = fmt_time(now);
    let rs_label = new.name.clone().unwrap_or_default();
    let cur_reason = condition(old_status, "Progressing").and_then(|c| c["reason"].as_str()).map(String::from);
    if new.created {
        set_condition(conds, "Progressing", "True", "NewReplicaSetCreated", format!("Created new replica set \"{rs_label}\""), &now_s, false);
    } else if cur_reason.is_none() && new.name.is_some() {
        set_condition(conds, "Progressing", "True", "FoundNewReplicaSet", format!("Found new replica set \"{rs_label}\""), &now_s, false);
    } else if cur_reason.as_deref() == Some("DeploymentPaused") {
        set_condition(conds, "Progressing", "True", "DeploymentResumed", "Deployment is resumed".into(), &now_s, false);
    }
    // syncRolloutStatus
    let cur = conds.iter().find(|c| c["type"] == "Progressing").cloned();
    let complete_already = c.replicas == c.updated && cur.as_ref().is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
    if complete_already || new.created {
        return;
    }
    let complete = c.updated == desired && c.replicas == desired && c.available == desired;
    let old_old = int(old_status, &["replicas"]) - int(old_status, &["updatedReplicas"]);
    let progressing = c.updated > int(old_status, &["updatedReplicas"])
        || c.ready > int(old_status, &["readyReplicas"])
        || c.available > int(old_status, &["availableReplicas"])
        || old_old > c.replicas - c.updated;
    let deadline = at(d, &["spec", "progressDeadlineSeconds"]).and_then(Value::as_i64);
    let timed_out = match (&cur, deadline) {
        (Some(c), _) if c["reason"] == "ProgressDeadlineExceeded" => true,
        (Some(c), Some(secs)) => c["lastUpdateTime"].as_str().and_then(parse_time).is_some_and(|t| t + chrono::Duration::seconds(secs) < now),
        _ => false,
    };
    if complete {
        let message = format!("ReplicaSet \"{rs_label}\" has successfully progressed.");
        set_condition(conds, "Progressing", "True", "NewReplicaSetAvailable", message, &now_s, false);
    } else if progressing {
        set_condition(conds, "Progressing", "True", "ReplicaSetUpdated", format!("ReplicaSet \"{rs_label}\" is progressing."), &now_s, true);
    } else if timed_out && deadline.is_some() {
        let message = format!("ReplicaSet \"{rs_label}\" has timed out progressing.");
        set_condition(conds, "Progressing", "False", "ProgressDeadlineExceeded", message, &now_s, false);
    }
}

// ------------------------------------------------------------------ Jobs & CronJobs

fn job_finished(job: &Value) -> bool {
    at(job, &["status", "conditions"])
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"))
}

fn job_cond(t: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": t, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason, "message": message})
}

fn jobs(st: &mut State) {
    let js: Vec<Value> = st.store.list(JOBS, None).cloned().collect();
    let now = fmt_time(Utc::now());
    for job in js {
        if deleting(&job) || job_finished(&job) {
            continue;
        }
        let (ns, uid) = (meta_str(&job, "namespace").to_string(), meta_str(&job, "uid").to_string());
        let pods = owned(st, PODS, &ns, &uid);
        let active: Vec<&Value> = pods.iter().filter(|p| !deleting(p) && phase(p) != "Succeeded" && phase(p) != "Failed").collect();
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let completions = at(&job, &["spec", "completions"]).and_then(Value::as_i64).unwrap_or(1);
        let parallelism = at(&job, &["spec", "parallelism"]).and_then(Value::as_i64).unwrap_or(1);
        let backoff = at(&job, &["spec", "backoffLimit"]).and_then(Value::as_i64).unwrap_or(6);
        let suspended = at(&job, &["spec", "suspend"]).and_then(Value::as_bool) == Some(true);
        let mut status = job.get("status").cloned().unwrap_or(json!({}));
        if !status.is_object() {
            status = json!({});
        }
        if status.get("startTime").is_none() && !suspended {
            status["startTime"] = json!(now);
        }
        let mut n_active = active.len() as i64;
        if succeeded >= completions {
            let mut conds = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            conds.push(job_cond("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods", &now));
            conds.push(job_cond("Complete", "CompletionsReached", "Reached expected number of succeeded pods", &now));
            status["conditions"] = json!(conds);
            status["completionTime"] = json!(now);
            event(st, &job, "Normal", "Completed", "Job completed".into(), "job-controller");
        } else if failed > backoff {
            for p in &active {
                let _ = registry::delete(st, PODS, &ns, meta_str(p, "name"), &DeleteOpts::default(), false);
            }
            n_active = 0;
            let mut conds = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            conds.push(job_cond("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit", &now));
            conds.push(job_cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit", &now));
            status["conditions"] = json!(conds);
            event(st, &job, "Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit".into(), "job-controller");
        } else if !suspended {
            let want = parallelism.min(completions - succeeded);
            let template = at(&job, &["spec", "template"]).cloned().unwrap_or(json!({}));
            for _ in 0..(want - n_active).max(0) {
                match registry::create(st, PODS, &ns, pod_from_template(&job, &template), false) {
                    Ok(p) => {
                        event(st, &job, "Normal", "SuccessfulCreate", format!("Created pod: {}", meta_str(&p, "name")), "job-controller");
                        n_active += 1;
                    }
                    Err(e) => {
                        event(st, &job, "Warning", "FailedCreate", format!("Error creating: {}", e.message), "job-controller");
                        break;
                    }
                }
            }
        }
        status["active"] = json!(n_active);
        status["succeeded"] = json!(succeeded);
        status["failed"] = json!(failed);
        status["ready"] = json!(active.iter().filter(|p| pod_ready(p)).count());
        status["terminating"] = json!(pods.iter().filter(|p| deleting(p)).count());
        status["uncountedTerminatedPods"] = json!({});
        omit_zero(&mut status, &["active", "succeeded", "failed", "terminating"]);
        put_status(st, JOBS, &job, status);
    }
}

fn cronjobs(st: &mut State) {
    let cjs: Vec<Value> = st.store.list(CRONJOBS, None).cloned().collect();
    for cj in cjs {
        let (ns, uid) = (meta_str(&cj, "namespace").to_string(), meta_str(&cj, "uid").to_string());
        let jobs = owned(st, JOBS, &ns, &uid);
        let active: Vec<Value> = jobs
            .iter()
            .filter(|j| !job_finished(j))
            .map(|j| {
                json!({"kind": "Job", "namespace": ns, "name": meta_str(j, "name"), "uid": meta_str(j, "uid"), "apiVersion": "batch/v1", "resourceVersion": meta_str(j, "resourceVersion")})
            })
            .collect();
        let last_ok = jobs
            .iter()
            .filter(|j| at(j, &["status", "completionTime"]).is_some())
            .filter_map(|j| at(j, &["status", "completionTime"]).and_then(Value::as_str))
            .max()
            .map(String::from);
        let mut status = cj.get("status").cloned().filter(Value::is_object).unwrap_or(json!({}));
        if active.is_empty() {
            if let Some(m) = status.as_object_mut() {
                m.remove("active");
            }
        } else {
            // Keep `resourceVersion` of the refs stable so that this does not churn.
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("resourceVersion");
                }
                v
            };
            let same = status
                .get("active")
                .and_then(Value::as_array)
                .is_some_and(|cur| cur.len() == active.len() && cur.iter().zip(&active).all(|(a, b)| strip(a) == strip(b)));
            if !same {
                status["active"] = json!(active);
            }
        }
        if let Some(t) = last_ok {
            status["lastSuccessfulTime"] = json!(t);
        }
        put_status(st, CRONJOBS, &cj, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_like_the_controller() {
        let d = |s: Value, u: Value| json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": s, "maxUnavailable": u}}}});
        assert_eq!(fenceposts(&d(json!("25%"), json!("25%")), 3), (1, 0));
        assert_eq!(fenceposts(&d(json!("25%"), json!("25%")), 4), (1, 1));
        assert_eq!(fenceposts(&d(json!("25%"), json!("25%")), 10), (3, 2));
        assert_eq!(fenceposts(&d(json!(0), json!(0)), 3), (0, 1));
        assert_eq!(fenceposts(&d(json!(2), json!("50%")), 5), (2, 2));
        assert_eq!(fenceposts(&json!({"spec": {}}), 8), (2, 2));
    }
}
