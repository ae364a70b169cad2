//! Strict decoding of manifests into the Kubernetes API's own types (k8s-openapi, v1.33): an
//! object must decode, and encoding it again must give back exactly what was written, so a
//! misspelt or misplaced field (which the typed decoder would silently drop) or a value of the
//! wrong type fails — what the API server's strict field validation would refuse.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `kind/name` (with the namespace when there is one), for messages.
pub fn id(o: &Value) -> String {
    let name = o["metadata"]["name"].as_str().unwrap_or("?");
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{}/{ns}/{name}", o["kind"].as_str().unwrap_or("?")),
        None => format!("{}/{name}", o["kind"].as_str().unwrap_or("?")),
    }
}

fn strict<T: DeserializeOwned + Serialize>(o: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(o.clone()).map_err(|e| format!("does not decode: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut diffs = Vec::new();
    diff("", o, &back, &mut diffs);
    if diffs.is_empty() { Ok(()) } else { Err(format!("not what the API type holds: {}", diffs.join("; "))) }
}

/// Where `written` and `decoded` differ: fields the type does not have, changed values.
fn diff(at: &str, written: &Value, decoded: &Value, out: &mut Vec<String>) {
    match (written, decoded) {
        (Value::Object(w), Value::Object(d)) => {
            for (k, v) in w {
                let path = format!("{at}.{k}");
                match d.get(k) {
                    Some(dv) => diff(&path, v, dv, out),
                    None => out.push(format!("{path} is not a field of this kind")),
                }
            }
            for k in d.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{at}.{k} appeared"));
            }
        }
        (Value::Array(w), Value::Array(d)) if w.len() == d.len() => {
            for (i, (a, b)) in w.iter().zip(d).enumerate() {
                diff(&format!("{at}[{i}]"), a, b, out);
            }
        }
        (w, d) if w == d => {}
        (w, d) => out.push(format!("{at}: {w} became {d}")),
    }
}

/// Decodes one object strictly by its apiVersion and kind.
pub fn check(o: &Value) -> Result<(), String> {
    let api = o["apiVersion"].as_str().unwrap_or("");
    let kind = o["kind"].as_str().unwrap_or("");
    match (api, kind) {
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(o),
        ("v1", "ConfigMap") => strict::<ConfigMap>(o),
        ("v1", "Service") => strict::<Service>(o),
        ("v1", "PersistentVolumeClaim") => strict::<PersistentVolumeClaim>(o),
        ("apps/v1", "Deployment") => strict::<Deployment>(o),
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(o),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(o),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(o),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => strict::<ClusterRoleBinding>(o),
        _ => Err(format!("{api} {kind} is not a kind this check knows; add its k8s-openapi type here")),
    }
}

/// The objects of one kind.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of a kind.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let all = of_kind(objects, kind);
    assert_eq!(all.len(), 1, "expected one {kind} in deploy/manifests, found {}", all.len());
    all[0]
}
