//! Kubernetes RBAC, as the API server decides it, for the requests the sandbox recorded: each
//! request's attributes (verb, API group, resource/subresource, namespace, name) from its
//! method and path, and the rules that Roles, ClusterRoles and their bindings give a service
//! account.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What the authorizer sees of a resource request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attr {
    pub verb: String,
    pub group: String,
    /// `pods`, or `pods/log` for a subresource.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{} {} ({group})", self.verb, self.resource)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        Ok(())
    }
}

pub enum Request {
    Resource(Attr),
    /// Discovery and other non-resource paths (`/api`, `/apis/apps/v1`, `/openapi/v2`).
    NonResource(String),
}

/// The attributes of `method path?query`, as the API server's request-info resolver derives
/// them (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go).
pub fn attributes(method: &str, path_query: &str) -> Request {
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let (group, mut rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => (String::new(), rest.to_vec()),
        ["apis", g, _v, rest @ ..] if !rest.is_empty() => (g.to_string(), rest.to_vec()),
        _ => return Request::NonResource(path.to_string()),
    };
    let watch_param = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    // The deprecated `/watch/` path prefix.
    let watch_path = rest.first() == Some(&"watch");
    if watch_path {
        rest.remove(0);
    }
    let mut namespace = None;
    if rest.len() >= 3 && rest[0] == "namespaces" {
        namespace = Some(rest[1].to_string());
        rest.drain(..2);
    }
    let resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
    let name = rest.get(1).map(|s| s.to_string());
    let resource = match rest.get(2) {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource,
    };
    let verb = match (method.to_ascii_uppercase().as_str(), name.is_some()) {
        (_, _) if watch_path || (method.eq_ignore_ascii_case("GET") && watch_param) => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => panic!("unexpected method {m} on {path_query}"),
    };
    Request::Resource(Attr { verb: verb.into(), group, resource, namespace, name })
}

/// Non-resource paths every authenticated client may read (the built-in `system:discovery` and
/// `system:public-info-viewer` ClusterRoles).
pub fn discovery_allowed(path: &str) -> bool {
    matches!(path, "/api" | "/apis" | "/version" | "/openapi/v2" | "/openapi/v3" | "/healthz" | "/livez" | "/readyz")
        || ["/api/", "/apis/", "/openapi/v3/"].iter().any(|p| path.starts_with(p))
}

/// One PolicyRule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub names: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn rules(role: &Value) -> Vec<Rule> {
    role["rules"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| Rule {
                    groups: strings(&r["apiGroups"]),
                    resources: strings(&r["resources"]),
                    verbs: strings(&r["verbs"]),
                    names: strings(&r["resourceNames"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    fn matches(&self, a: &Attr) -> bool {
        let any = |v: &[String], x: &str| v.iter().any(|s| s == "*" || s == x);
        let resource = self
            .resources
            .iter()
            .any(|r| r == "*" || *r == a.resource || a.resource.split_once('/').is_some_and(|(_, sub)| *r == format!("*/{sub}")));
        let name = self.names.is_empty() || a.name.as_ref().is_some_and(|n| self.names.contains(n));
        any(&self.verbs, &a.verb) && any(&self.groups, &a.group) && resource && name
    }

    /// Every (group, resource, verb) the rule names (wildcards as written).
    pub fn triples(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for g in &self.groups {
            for r in &self.resources {
                for v in &self.verbs {
                    out.push((g.clone(), r.clone(), v.clone()));
                }
            }
        }
        out
    }
}

/// What the bindings in a set of objects give one service account.
#[derive(Debug, Default)]
pub struct Grants {
    /// From ClusterRoleBindings: every namespace, and cluster-scoped resources.
    pub cluster: Vec<Rule>,
    /// From RoleBindings: their namespace only.
    pub namespaced: BTreeMap<String, Vec<Rule>>,
}

impl Grants {
    pub fn for_service_account(objects: &[Value], namespace: &str, name: &str) -> Grants {
        let kind_named = |kind: &str, ns: Option<&str>, n: &str| {
            objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == n && ns.is_none_or(|ns| o["metadata"]["namespace"] == ns))
        };
        let binds_us = |b: &Value| {
            b["subjects"]
                .as_array()
                .is_some_and(|ss| ss.iter().any(|s| s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace))
        };
        let mut g = Grants::default();
        for b in objects.iter().filter(|o| binds_us(o)) {
            let role_name = b["roleRef"]["name"].as_str().unwrap_or("");
            let role_kind = b["roleRef"]["kind"].as_str().unwrap_or("");
            match b["kind"].as_str() {
                Some("ClusterRoleBinding") => {
                    let role = kind_named("ClusterRole", None, role_name)
                        .unwrap_or_else(|| panic!("ClusterRoleBinding {} refers to a missing ClusterRole {role_name}", b["metadata"]["name"]));
                    g.cluster.extend(rules(role));
                }
                Some("RoleBinding") => {
                    let ns = b["metadata"]["namespace"].as_str().expect("a RoleBinding has a namespace");
                    let role = match role_kind {
                        "Role" => kind_named("Role", Some(ns), role_name),
                        _ => kind_named("ClusterRole", None, role_name),
                    }
                    .unwrap_or_else(|| panic!("RoleBinding {ns}/{} refers to a missing {role_kind} {role_name}", b["metadata"]["name"]));
                    g.namespaced.entry(ns.to_string()).or_default().extend(rules(role));
                }
                _ => {}
            }
        }
        g
    }

    pub fn allows(&self, a: &Attr) -> bool {
        self.cluster.iter().any(|r| r.matches(a))
            || a.namespace.as_ref().is_some_and(|ns| self.namespaced.get(ns).is_some_and(|rs| rs.iter().any(|r| r.matches(a))))
    }

    /// Every (group, resource, verb) granted anywhere.
    pub fn triples(&self) -> BTreeSet<(String, String, String)> {
        self.cluster.iter().chain(self.namespaced.values().flatten()).flat_map(Rule::triples).collect()
    }
}

#[test]
fn request_attributes_follow_the_api_servers_rules() {
    let attr = |m: &str, p: &str| match attributes(m, p) {
        Request::Resource(a) => format!("{} {}/{} {:?} {:?}", a.verb, a.group, a.resource, a.namespace, a.name),
        Request::NonResource(p) => format!("non-resource {p}"),
    };
    assert_eq!(attr("GET", "/api/v1/namespaces/n/pods?labelSelector=app%3Dx"), "list /pods Some(\"n\") None");
    assert_eq!(attr("GET", "/api/v1/namespaces/n/pods?watch=true&resourceVersion=5"), "watch /pods Some(\"n\") None");
    assert_eq!(attr("GET", "/api/v1/namespaces/n/pods/p/log?previous=true"), "get /pods/log Some(\"n\") Some(\"p\")");
    assert_eq!(attr("PATCH", "/apis/apps/v1/namespaces/n/deployments/d/scale"), "patch apps/deployments/scale Some(\"n\") Some(\"d\")");
    assert_eq!(attr("POST", "/apis/batch/v1/namespaces/n/jobs"), "create batch/jobs Some(\"n\") None");
    assert_eq!(attr("DELETE", "/api/v1/namespaces/n/pods/p"), "delete /pods Some(\"n\") Some(\"p\")");
    assert_eq!(attr("GET", "/api/v1/namespaces/n"), "get /namespaces None Some(\"n\")");
    assert_eq!(attr("GET", "/api/v1/watch/namespaces/n/pods"), "watch /pods Some(\"n\") None");
    assert_eq!(attr("GET", "/apis/apps/v1"), "non-resource /apis/apps/v1");
    let rule = Rule { groups: vec!["".into()], resources: vec!["pods".into()], verbs: vec!["get".into()], names: vec![] };
    let get_log = Attr { verb: "get".into(), group: "".into(), resource: "pods/log".into(), namespace: None, name: None };
    assert!(!rule.matches(&get_log), "a rule on pods does not grant pods/log");
}
