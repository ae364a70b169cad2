//! Server-side printing: `meta.k8s.io/v1` `Table` responses, which `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`) and prints verbatim. The
//! columns and cell formats follow `pkg/printers/internalversion/printers.go` for the kinds
//! runbot deals with (pods: READY/STATUS/RESTARTS "3 (20s ago)"/AGE; deployments; replica
//! sets; jobs; cron jobs; events; namespaces; nodes; config maps; secrets; leases; services);
//! other kinds get NAME and AGE.

use super::resources::{ResId, res};
use super::select::LabelSelector;
use super::util::{at, human_duration, meta_str, parse_time};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

fn age(obj: &Value, now: DateTime<Utc>) -> String {
    ts_since(meta_str(obj, "creationTimestamp"), now)
}

fn ts_since(s: &str, now: DateTime<Utc>) -> String {
    match parse_time(s) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn none_if_empty(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn int(v: &Value, path: &[&str]) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn containers_images(pod_spec: Option<&Value>) -> (String, String) {
    let cs = pod_spec.and_then(|p| p.get("containers")).and_then(Value::as_array).cloned().unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

fn selector(v: Option<&Value>) -> String {
    match v {
        Some(sel) if sel.is_object() => none_if_empty(LabelSelector::from_object(sel).to_string_form()),
        _ => "<none>".into(),
    }
}

/// (name, type, format, priority)
type Col = (&'static str, &'static str, &'static str, u8);

fn columns(id: ResId) -> Vec<Col> {
    match res(id).kind {
        "Pod" => vec![
            ("Name", "string", "name", 0),
            ("Ready", "string", "", 0),
            ("Status", "string", "", 0),
            ("Restarts", "string", "", 0),
            ("Age", "string", "", 0),
            ("IP", "string", "", 1),
            ("Node", "string", "", 1),
            ("Nominated Node", "string", "", 1),
            ("Readiness Gates", "string", "", 1),
        ],
        "Deployment" => vec![
            ("Name", "string", "name", 0),
            ("Ready", "string", "", 0),
            ("Up-to-date", "string", "", 0),
            ("Available", "string", "", 0),
            ("Age", "string", "", 0),
            ("Containers", "string", "", 1),
            ("Images", "string", "", 1),
            ("Selector", "string", "", 1),
        ],
        "ReplicaSet" => vec![
            ("Name", "string", "name", 0),
            ("Desired", "integer", "", 0),
            ("Current", "integer", "", 0),
            ("Ready", "integer", "", 0),
            ("Age", "string", "", 0),
            ("Containers", "string", "", 1),
            ("Images", "string", "", 1),
            ("Selector", "string", "", 1),
        ],
        "Job" => vec![
            ("Name", "string", "name", 0),
            ("Status", "string", "", 0),
            ("Completions", "string", "", 0),
            ("Duration", "string", "", 0),
            ("Age", "string", "", 0),
            ("Containers", "string", "", 1),
            ("Images", "string", "", 1),
            ("Selector", "string", "", 1),
        ],
        "CronJob" => vec![
            ("Name", "string", "name", 0),
            ("Schedule", "string", "", 0),
            ("Timezone", "string", "", 0),
            ("Suspend", "boolean", "", 0),
            ("Active", "integer", "", 0),
            ("Last Schedule", "string", "", 0),
            ("Age", "string", "", 0),
            ("Containers", "string", "", 1),
            ("Images", "string", "", 1),
            ("Selector", "string", "", 1),
        ],
        "Event" => vec![
            ("Last Seen", "string", "", 0),
            ("Type", "string", "", 0),
            ("Reason", "string", "", 0),
            ("Object", "string", "", 0),
            ("Subobject", "string", "", 1),
            ("Source", "string", "", 1),
            ("Message", "string", "", 0),
            ("First Seen", "string", "", 1),
            ("Count", "string", "", 1),
            ("Name", "string", "name", 1),
        ],
        "Namespace" => vec![("Name", "string", "name", 0), ("Status", "string", "", 0), ("Age", "string", "", 0)],
        "Node" => vec![
            ("Name", "string", "name", 0),
            ("Status", "string", "", 0),
            ("Roles", "string", "", 0),
            ("Age", "string", "", 0),
            ("Version", "string", "", 0),
            ("Internal-IP", "string", "", 1),
            ("External-IP", "string", "", 1),
            ("OS-Image", "string", "", 1),
            ("Kernel-Version", "string", "", 1),
            ("Container-Runtime", "string", "", 1),
        ],
        "ConfigMap" => vec![("Name", "string", "name", 0), ("Data", "integer", "", 0), ("Age", "string", "", 0)],
        "Secret" => vec![("Name", "string", "name", 0), ("Type", "string", "", 0), ("Data", "integer", "", 0), ("Age", "string", "", 0)],
        "Lease" => vec![("Name", "string", "name", 0), ("Holder", "string", "", 0), ("Age", "string", "", 0)],
        "Service" => vec![
            ("Name", "string", "name", 0),
            ("Type", "string", "", 0),
            ("Cluster-IP", "string", "", 0),
            ("External-IP", "string", "", 0),
            ("Port(s)", "string", "", 0),
            ("Age", "string", "", 0),
            ("Selector", "string", "", 1),
        ],
        _ => vec![("Name", "string", "name", 0), ("Age", "string", "", 0)],
    }
}

/// The STATUS, READY and RESTARTS cells of a pod, like `printPod`.
fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let statuses = at(pod, &["status", "containerStatuses"]).and_then(Value::as_array).cloned().unwrap_or_default();
    let total = at(pod, &["spec", "containers"]).and_then(Value::as_array).map_or(0, Vec::len);
    let mut reason = s(at(pod, &["status", "phase"]));
    if let Some(r) = at(pod, &["status", "reason"]).and_then(Value::as_str).filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    let mut restarts = 0;
    let mut ready = 0;
    let mut has_running = false;
    let mut last_restart: Option<DateTime<Utc>> = None;
    for c in statuses.iter().rev() {
        restarts += c["restartCount"].as_i64().unwrap_or(0);
        if let Some(t) = at(c, &["lastState", "terminated", "finishedAt"]).and_then(Value::as_str).and_then(parse_time) {
            last_restart = Some(last_restart.map_or(t, |l| l.max(t)));
        }
        let waiting = at(c, &["state", "waiting", "reason"]).and_then(Value::as_str).filter(|r| !r.is_empty());
        let term = at(c, &["state", "terminated"]);
        if let Some(w) = waiting {
            reason = w.to_string();
        } else if let Some(t) = term {
            match t.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
                Some(r) => reason = r.to_string(),
                None => {
                    let sig = t["signal"].as_i64().unwrap_or(0);
                    reason = if sig != 0 { format!("Signal:{sig}") } else { format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)) };
                }
            }
        } else if c["ready"] == true && at(c, &["state", "running"]).is_some() {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        let pod_ready = at(pod, &["status", "conditions"])
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        reason = if pod_ready { "Running".into() } else { "NotReady".into() };
    }
    if !meta_str(pod, "deletionTimestamp").is_empty() {
        reason = "Terminating".into();
    }
    let restarts_s = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    vec![
        json!(meta_str(pod, "name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_s),
        json!(age(pod, now)),
        json!(none_if_empty(s(at(pod, &["status", "podIP"])))),
        json!(none_if_empty(s(at(pod, &["spec", "nodeName"])))),
        json!(none_if_empty(s(at(pod, &["status", "nominatedNodeName"])))),
        json!("<none>"),
    ]
}

fn job_status(job: &Value) -> String {
    let conds = at(job, &["status", "conditions"]).and_then(Value::as_array).cloned().unwrap_or_default();
    let has = |t: &str| conds.iter().any(|c| c["type"] == t && c["status"] == "True");
    if has("Complete") {
        "Complete".into()
    } else if has("Failed") {
        "Failed".into()
    } else if !meta_str(job, "deletionTimestamp").is_empty() {
        "Terminating".into()
    } else if has("FailureTarget") {
        "FailureTarget".into()
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet".into()
    } else if has("Suspended") {
        "Suspended".into()
    } else {
        "Running".into()
    }
}

fn cells(id: ResId, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(meta_str(obj, "name"));
    match res(id).kind {
        "Pod" => pod_cells(obj, now),
        "Deployment" => {
            let (c, i) = containers_images(at(obj, &["spec", "template", "spec"]));
            vec![
                name,
                json!(format!("{}/{}", int(obj, &["status", "readyReplicas"]), int(obj, &["spec", "replicas"]))),
                json!(int(obj, &["status", "updatedReplicas"])),
                json!(int(obj, &["status", "availableReplicas"])),
                json!(age(obj, now)),
                json!(c),
                json!(i),
                json!(selector(at(obj, &["spec", "selector"]))),
            ]
        }
        "ReplicaSet" => {
            let (c, i) = containers_images(at(obj, &["spec", "template", "spec"]));
            vec![
                name,
                json!(int(obj, &["spec", "replicas"])),
                json!(int(obj, &["status", "replicas"])),
                json!(int(obj, &["status", "readyReplicas"])),
                json!(age(obj, now)),
                json!(c),
                json!(i),
                json!(selector(at(obj, &["spec", "selector"]))),
            ]
        }
        "Job" => {
            let (c, i) = containers_images(at(obj, &["spec", "template", "spec"]));
            let start = at(obj, &["status", "startTime"]).and_then(Value::as_str).and_then(parse_time);
            let end = at(obj, &["status", "completionTime"]).and_then(Value::as_str).and_then(parse_time).unwrap_or(now);
            let duration = start.map_or(String::new(), |s| human_duration(end - s));
            vec![
                name,
                json!(job_status(obj)),
                json!(format!("{}/{}", int(obj, &["status", "succeeded"]), at(obj, &["spec", "completions"]).and_then(Value::as_i64).unwrap_or(1))),
                json!(duration),
                json!(age(obj, now)),
                json!(c),
                json!(i),
                json!(selector(at(obj, &["spec", "selector"]))),
            ]
        }
        "CronJob" => {
            let (c, i) = containers_images(at(obj, &["spec", "jobTemplate", "spec", "template", "spec"]));
            let last = at(obj, &["status", "lastScheduleTime"]).and_then(Value::as_str).map_or("<none>".to_string(), |t| ts_since(t, now));
            vec![
                name,
                json!(s(at(obj, &["spec", "schedule"]))),
                json!(none_if_empty(s(at(obj, &["spec", "timeZone"])))),
                json!(at(obj, &["spec", "suspend"]).and_then(Value::as_bool).unwrap_or(false)),
                json!(at(obj, &["status", "active"]).and_then(Value::as_array).map_or(0, Vec::len)),
                json!(last),
                json!(age(obj, now)),
                json!(c),
                json!(i),
                json!(selector(at(obj, &["spec", "jobTemplate", "spec", "selector"]))),
            ]
        }
        "Event" => {
            let last = at(obj, &["lastTimestamp"]).and_then(Value::as_str).or_else(|| at(obj, &["eventTime"]).and_then(Value::as_str)).unwrap_or("");
            let first = at(obj, &["firstTimestamp"]).and_then(Value::as_str).unwrap_or(last);
            let io = obj.get("involvedObject").cloned().unwrap_or(json!({}));
            vec![
                json!(ts_since(last, now)),
                json!(s(obj.get("type"))),
                json!(s(obj.get("reason"))),
                json!(format!("{}/{}", s(io.get("kind")).to_lowercase(), s(io.get("name")))),
                json!(s(io.get("fieldPath"))),
                json!(s(at(obj, &["source", "component"]))),
                json!(s(obj.get("message")).trim().to_string()),
                json!(ts_since(first, now)),
                json!(int(obj, &["count"]).to_string()),
                name,
            ]
        }
        "Namespace" => vec![name, json!(s(at(obj, &["status", "phase"]))), json!(age(obj, now))],
        "Node" => {
            let ready = at(obj, &["status", "conditions"])
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            let roles: Vec<String> = at(obj, &["metadata", "labels"])
                .and_then(Value::as_object)
                .map(|m| m.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from)).collect())
                .unwrap_or_default();
            let ip = at(obj, &["status", "addresses"])
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .map_or("<none>".to_string(), |x| s(x.get("address")));
            vec![
                name,
                json!(if ready { "Ready" } else { "NotReady" }),
                json!(none_if_empty(roles.join(","))),
                json!(age(obj, now)),
                json!(s(at(obj, &["status", "nodeInfo", "kubeletVersion"]))),
                json!(ip),
                json!("<none>"),
                json!(s(at(obj, &["status", "nodeInfo", "osImage"]))),
                json!(s(at(obj, &["status", "nodeInfo", "kernelVersion"]))),
                json!(s(at(obj, &["status", "nodeInfo", "containerRuntimeVersion"]))),
            ]
        }
        "ConfigMap" => {
            let n = obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len())
                + obj.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(n), json!(age(obj, now))]
        }
        "Secret" => {
            let n = obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(s(obj.get("type"))), json!(n), json!(age(obj, now))]
        }
        "Lease" => vec![name, json!(s(at(obj, &["spec", "holderIdentity"]))), json!(age(obj, now))],
        "Service" => {
            let ports: Vec<String> = at(obj, &["spec", "ports"])
                .and_then(Value::as_array)
                .map(|ps| ps.iter().map(|p| format!("{}/{}", s(p.get("port")), p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"))).collect())
                .unwrap_or_default();
            let sel: Vec<String> = at(obj, &["spec", "selector"])
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(Some(v)))).collect())
                .unwrap_or_default();
            vec![
                name,
                json!(at(obj, &["spec", "type"]).and_then(Value::as_str).unwrap_or("ClusterIP")),
                json!(none_if_empty(s(at(obj, &["spec", "clusterIP"])))),
                json!("<none>"),
                json!(none_if_empty(ports.join(","))),
                json!(age(obj, now)),
                json!(none_if_empty(sel.join(","))),
            ]
        }
        _ => vec![name, json!(age(obj, now))],
    }
}

/// `?includeObject=` of the Table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Include {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn row(id: ResId, obj: &Value, include: Include, now: DateTime<Utc>) -> Value {
    let object = match include {
        Include::None => Value::Null,
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        }),
        Include::Object => super::store::with_type(id, obj.clone()),
    };
    json!({"cells": cells(id, obj, now), "object": object})
}

/// A `Table` of `objs`. `headers` = include `columnDefinitions` (the first watch event and
/// every get/list).
pub fn table(id: ResId, objs: &[&Value], include: Include, headers: bool, list_meta: Value) -> Value {
    let now = Utc::now();
    let cols: Vec<Value> = if headers {
        columns(id)
            .into_iter()
            .map(|(n, t, f, p)| json!({"name": n, "type": t, "format": f, "description": format!("{} of the {}", n, res(id).kind), "priority": p}))
            .collect()
    } else {
        Vec::new()
    };
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": objs.iter().map(|o| row(id, o, include, now)).collect::<Vec<_>>(),
    });
    if headers {
        t["columnDefinitions"] = json!(cols);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::PODS;

    #[test]
    fn pod_status_column_like_kubectl() {
        let now = Utc::now();
        let finished = super::super::util::fmt_time(now - chrono::Duration::seconds(20));
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": super::super::util::fmt_time(now - chrono::Duration::seconds(65))},
            "spec": {"containers": [{"name": "app"}], "nodeName": "n"},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": finished}}
            }]}
        });
        let c = cells(PODS, &pod, now);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3 (20s ago)");
        assert_eq!(c[4], "65s");
        let t = table(PODS, &[&pod], Include::Metadata, true, json!({"resourceVersion": "5"}));
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 9);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
