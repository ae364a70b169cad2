//! The resource types the fake serves, and the discovery documents derived from them
//! (`/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`, `/version`).

use serde_json::{Value, json};

pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources (`status`, `scale`, `log`, `eviction`).
    pub subresources: &'static [&'static str],
    /// `metadata.generation` is tracked and bumped on spec changes.
    pub generation: bool,
    /// Extra field selectors besides `metadata.name` / `metadata.namespace`.
    pub fields: &'static [&'static str],
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Index into [`RESOURCES`] used as the type part of storage keys.
pub type ResId = usize;

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        categories: &["all"],
        subresources: &["status", "log", "eviction"],
        generation: true,
        fields: &[
            "status.phase",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        categories: &[],
        subresources: &[],
        generation: false,
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short: &[],
        categories: &[],
        subresources: &[],
        generation: false,
        fields: &["type"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
        categories: &[],
        subresources: &[],
        generation: false,
        fields: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        categories: &[],
        subresources: &["status"],
        generation: false,
        fields: &["status.phase"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        categories: &[],
        subresources: &["status"],
        generation: false,
        fields: &["spec.unschedulable"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
        categories: &["all"],
        subresources: &["status"],
        generation: false,
        fields: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
        categories: &[],
        subresources: &[],
        generation: false,
        fields: &[],
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short: &["deploy"],
        categories: &["all"],
        subresources: &["status", "scale"],
        generation: true,
        fields: &[],
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short: &["rs"],
        categories: &["all"],
        subresources: &["status", "scale"],
        generation: true,
        fields: &["status.replicas"],
    },
    Resource {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        short: &[],
        categories: &["all"],
        subresources: &["status"],
        generation: true,
        fields: &["status.successful"],
    },
    Resource {
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        singular: "cronjob",
        kind: "CronJob",
        namespaced: true,
        short: &["cj"],
        categories: &["all"],
        subresources: &["status"],
        generation: true,
        fields: &[],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short: &[],
        categories: &[],
        subresources: &[],
        generation: false,
        fields: &[],
    },
    Resource {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short: &["pdb"],
        categories: &[],
        subresources: &["status"],
        generation: true,
        fields: &[],
    },
    Resource {
        group: "autoscaling",
        version: "v1",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short: &["hpa"],
        categories: &["all"],
        subresources: &["status"],
        generation: false,
        fields: &[],
    },
];

pub const PODS: ResId = 0;
pub const EVENTS: ResId = 1;
pub const SECRETS: ResId = 2;
pub const NAMESPACES: ResId = 4;
pub const NODES: ResId = 5;
pub const DEPLOYMENTS: ResId = 8;
pub const REPLICASETS: ResId = 9;
pub const JOBS: ResId = 10;
pub const CRONJOBS: ResId = 11;

/// The API groups in discovery order (core is separate, under `/api`).
const GROUPS: &[&str] = &["apps", "authorization.k8s.io", "autoscaling", "batch", "coordination.k8s.io", "policy"];

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `pods`, `deployments.apps` — how error messages name the resource.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn has_sub(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

pub fn res(id: ResId) -> &'static Resource {
    &RESOURCES[id]
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<ResId> {
    RESOURCES.iter().position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// By `apiVersion` + `kind` (for seeding objects).
pub fn find_kind(api_version: &str, kind: &str) -> Option<ResId> {
    RESOURCES.iter().position(|r| r.api_version() == api_version && r.kind == kind)
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.4",
        "gitCommit": "74cdb426ba4f0e3fb6e8fc6d2a6f8e8c4b0f1d2e",
        "gitTreeState": "clean",
        "buildDate": "2025-08-12T18:05:12Z",
        "goVersion": "go1.24.5",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server }]
    })
}

fn group_doc(g: &str) -> Value {
    let gv = json!({ "groupVersion": format!("{g}/v1"), "version": "v1" });
    json!({ "name": g, "versions": [gv.clone()], "preferredVersion": gv })
}

pub fn api_group_list() -> Value {
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": GROUPS.iter().map(|g| group_doc(g)).collect::<Vec<_>>() })
}

pub fn api_group(g: &str) -> Option<Value> {
    GROUPS.contains(&g).then(|| {
        let mut d = group_doc(g);
        d["kind"] = json!("APIGroup");
        d["apiVersion"] = json!("v1");
        d
    })
}

/// `APIResourceList` for `/api/v1` (group "") or `/apis/{group}/{version}`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if version != "v1" || !(group.is_empty() || GROUPS.contains(&group)) {
        return None;
    }
    let mut out = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ALL_VERBS,
        });
        if !r.short.is_empty() {
            e["shortNames"] = json!(r.short);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for sub in r.subresources {
            let e = match *sub {
                "status" => {
                    json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]})
                }
                "scale" => {
                    json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
                }
                "log" => {
                    json!({"name": format!("{}/log", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": "Pod", "verbs": ["get"]})
                }
                "eviction" => {
                    json!({"name": format!("{}/eviction", r.plural), "singularName": "", "namespaced": r.namespaced, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]})
                }
                _ => continue,
            };
            out.push(e);
        }
    }
    // Virtual, create-only kinds: never stored, answered by `access.rs`.
    if group == "authorization.k8s.io" {
        out.push(super::access::discovery_entry());
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_point_at_the_right_rows() {
        assert_eq!(res(PODS).kind, "Pod");
        assert_eq!(res(EVENTS).kind, "Event");
        assert_eq!(res(SECRETS).kind, "Secret");
        assert_eq!(res(NAMESPACES).kind, "Namespace");
        assert_eq!(res(NODES).kind, "Node");
        assert_eq!(res(DEPLOYMENTS).kind, "Deployment");
        assert_eq!(res(REPLICASETS).kind, "ReplicaSet");
        assert_eq!(res(JOBS).kind, "Job");
        assert_eq!(res(CRONJOBS).kind, "CronJob");
        assert_eq!(find_kind("apps/v1", "Deployment"), Some(DEPLOYMENTS));
        assert_eq!(res(DEPLOYMENTS).group_resource(), "deployments.apps");
    }

    #[test]
    fn access_reviews_are_discoverable_as_create_only_and_cluster_scoped() {
        let groups = api_group_list();
        assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "authorization.k8s.io"));
        assert_eq!(api_group("authorization.k8s.io").unwrap()["preferredVersion"]["groupVersion"], "authorization.k8s.io/v1");
        let list = resource_list("authorization.k8s.io", "v1").unwrap();
        let r = &list["resources"].as_array().unwrap()[0];
        assert_eq!(
            (r["name"].as_str(), r["namespaced"].as_bool(), r["kind"].as_str()),
            (Some("selfsubjectaccessreviews"), Some(false), Some("SelfSubjectAccessReview"))
        );
        assert_eq!(r["verbs"], json!(["create"]));
        assert!(find("authorization.k8s.io", "v1", "selfsubjectaccessreviews").is_none(), "never stored");
    }
}
