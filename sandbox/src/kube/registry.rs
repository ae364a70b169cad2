//! What the API server's registries do between decoding a request and writing to etcd:
//! metadata (`uid`, `resourceVersion`, `creationTimestamp`, `generation`, `generateName`),
//! defaulting, validation (422 with causes), optimistic concurrency (409), the
//! spec/status split of the `status` subresource, `scale`, graceful pod deletion, finalizers,
//! evictions — and events (`core/v1` Events with counts, as the controllers and the kubelet
//! record them).

use super::State;
use super::patch::{self, PatchError, PatchType};
use super::resources::{self, CRONJOBS, DEPLOYMENTS, EVENTS, JOBS, NAMESPACES, NODES, PODS, REPLICASETS, ResId, SECRETS, res};
use super::select::LabelSelector;
use super::status::{ApiError, ApiResult, Cause, success};
use super::util::{at, b64_encode, fmt_time, meta_str, new_uid, rand_suffix, set};
use chrono::Utc;
use serde_json::{Map, Value, json};

/// The main resource or its `status` subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Main,
    Status,
}

pub const NODE_NAME: &str = "sandbox-node-1";
pub const NODE_IP: &str = "10.0.0.10";

pub fn seed(st: &mut State) {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure_namespace(st, ns);
    }
    let now = fmt_time(Utc::now());
    let node = json!({
        "metadata": {
            "name": NODE_NAME, "uid": new_uid(), "creationTimestamp": now,
            "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/control-plane": ""}
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE_NAME}],
            "nodeInfo": {"kubeletVersion": "v1.33.4", "containerRuntimeVersion": "containerd://1.7.27", "osImage": "Sandbox Linux", "operatingSystem": "linux", "architecture": "amd64", "kernelVersion": "6.1.0", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""}
        }
    });
    st.store.insert(NODES, node);
}

pub fn ensure_namespace(st: &mut State, ns: &str) {
    if ns.is_empty() || st.store.get(NAMESPACES, "", ns).is_some() {
        return;
    }
    let obj = json!({
        "metadata": {"name": ns, "uid": new_uid(), "creationTimestamp": fmt_time(Utc::now()), "labels": {"kubernetes.io/metadata.name": ns}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    });
    st.store.insert(NAMESPACES, obj);
}

// ------------------------------------------------------------------ validation helpers

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|p| !p.is_empty() && p.len() <= 63 && is_dns_label(p))
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn invalid(id: ResId, name: &str, causes: Vec<Cause>) -> ApiError {
    let r = res(id);
    ApiError::invalid(r.kind, r.group, name, causes)
}

fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    at(v, path).and_then(Value::as_i64)
}

fn validate_pod_spec(spec: Option<&Value>, prefix: &str, causes: &mut Vec<Cause>) {
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(&format!("{prefix}.containers"), "")),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(&format!("{prefix}.containers"), "")),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    causes.push(Cause::required(&format!("{prefix}.containers[{i}].name"), ""));
                } else if !is_dns_label(name) {
                    causes.push(Cause::invalid(&format!("{prefix}.containers[{i}].name"), format!("{name:?}"), LABEL_MSG));
                }
                if c.get("image").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
                    causes.push(Cause::required(&format!("{prefix}.containers[{i}].image"), ""));
                }
            }
        }
    }
}

fn labels_map(v: Option<&Value>) -> String {
    let mut parts: Vec<String> = v.and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| format!("{k:?}:{}", v)).collect()).unwrap_or_default();
    parts.sort();
    format!("map[string]string{{{}}}", parts.join(", "))
}

fn validate_replicated(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(n) = int_at(obj, &["spec", "replicas"])
        && n < 0
    {
        causes.push(Cause::invalid("spec.replicas", n, "must be greater than or equal to 0"));
    }
    match at(obj, &["spec", "selector"]) {
        None | Some(Value::Null) => causes.push(Cause::required("spec.selector", "")),
        Some(sel) => {
            let s = LabelSelector::from_object(sel);
            if s.is_empty() {
                causes.push(Cause::invalid(
                    "spec.selector",
                    "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}",
                    "empty selector is invalid for deployment",
                ));
            }
            let tpl = at(obj, &["spec", "template"]).cloned().unwrap_or(Value::Null);
            if !s.matches(&tpl) {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    labels_map(at(&tpl, &["metadata", "labels"])),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    validate_pod_spec(at(obj, &["spec", "template", "spec"]), "spec.template.spec", causes);
    if let Some(p) = at(obj, &["spec", "template", "spec", "restartPolicy"]).and_then(Value::as_str)
        && p != "Always"
    {
        causes.push(Cause {
            field: "spec.template.spec.restartPolicy".into(),
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: {p:?}: supported values: \"Always\""),
        });
    }
}

fn validate(id: ResId, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let name = meta_str(obj, "name");
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause::required("metadata.name", "name or generateName is required"));
    } else if id == NAMESPACES && !is_dns_label(name) {
        causes.push(Cause::invalid("metadata.name", format!("{name:?}"), LABEL_MSG));
    } else if id != NAMESPACES && !is_dns_subdomain(name) {
        causes.push(Cause::invalid("metadata.name", format!("{name:?}"), SUBDOMAIN_MSG));
    }
    match id {
        PODS => validate_pod_spec(obj.get("spec"), "spec", &mut causes),
        DEPLOYMENTS | REPLICASETS => {
            validate_replicated(obj, &mut causes);
            if let Some(old) = old
                && at(old, &["spec", "selector"]) != at(obj, &["spec", "selector"])
            {
                causes.push(Cause::invalid(
                    "spec.selector",
                    format!("{}", at(obj, &["spec", "selector"]).cloned().unwrap_or(Value::Null)),
                    "field is immutable",
                ));
            }
            if id == DEPLOYMENTS
                && let Some(p) = int_at(obj, &["spec", "progressDeadlineSeconds"])
                && p <= int_at(obj, &["spec", "minReadySeconds"]).unwrap_or(0)
            {
                causes.push(Cause::invalid("spec.progressDeadlineSeconds", p, "must be greater than minReadySeconds"));
            }
        }
        JOBS => {
            validate_pod_spec(at(obj, &["spec", "template", "spec"]), "spec.template.spec", &mut causes);
            let p = at(obj, &["spec", "template", "spec", "restartPolicy"]).and_then(Value::as_str).unwrap_or("Always");
            if p != "Never" && p != "OnFailure" {
                causes.push(Cause {
                    field: "spec.template.spec.restartPolicy".into(),
                    reason: "FieldValueNotSupported",
                    message: format!("Unsupported value: {p:?}: supported values: \"OnFailure\", \"Never\""),
                });
            }
            for f in ["backoffLimit", "parallelism", "completions"] {
                if let Some(n) = int_at(obj, &["spec", f])
                    && n < 0
                {
                    causes.push(Cause::invalid(&format!("spec.{f}"), n, "must be greater than or equal to 0"));
                }
            }
        }
        CRONJOBS => {
            if at(obj, &["spec", "schedule"]).and_then(Value::as_str).unwrap_or("").is_empty() {
                causes.push(Cause::required("spec.schedule", ""));
            }
            validate_pod_spec(at(obj, &["spec", "jobTemplate", "spec", "template", "spec"]), "spec.jobTemplate.spec.template.spec", &mut causes);
        }
        _ => {}
    }
    if causes.is_empty() { Ok(()) } else { Err(invalid(id, name, causes)) }
}

// ------------------------------------------------------------------ defaulting

fn default(v: &mut Value, key: &str, d: Value) {
    if let Value::Object(m) = v
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), d);
    }
}

fn default_probe(p: Option<&mut Value>) {
    if let Some(p @ Value::Object(_)) = p {
        default(p, "timeoutSeconds", json!(1));
        default(p, "periodSeconds", json!(10));
        default(p, "successThreshold", json!(1));
        default(p, "failureThreshold", json!(3));
        if let Some(h @ Value::Object(_)) = p.get_mut("httpGet") {
            default(h, "scheme", json!("HTTP"));
        }
    }
}

fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter(|c| c.is_object()) {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
                let tag = image.rsplit('/').next().unwrap_or("");
                let latest = !tag.contains(':') || tag.ends_with(":latest");
                default(c, "imagePullPolicy", json!(if latest && !image.contains('@') { "Always" } else { "IfNotPresent" }));
                default(c, "terminationMessagePath", json!("/dev/termination-log"));
                default(c, "terminationMessagePolicy", json!("File"));
                default(c, "resources", json!({}));
                if let Some(Value::Array(ports)) = c.get_mut("ports") {
                    for p in ports.iter_mut() {
                        default(p, "protocol", json!("TCP"));
                    }
                }
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    default_probe(c.get_mut(probe));
                }
            }
        }
    }
}

fn default_template(obj: &mut Value, path: &[&str]) {
    let mut p = path.to_vec();
    p.push("spec");
    if let Some(spec) = at(obj, &p).cloned() {
        let mut spec = spec;
        default_pod_spec(&mut spec);
        set(obj, &p, spec);
    }
}

/// `qosClass` as the kubelet computes it (simplified to requests/limits presence).
pub fn qos_class(spec: &Value) -> &'static str {
    let cs = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in &cs {
        let req = at(c, &["resources", "requests"]).and_then(Value::as_object).filter(|m| !m.is_empty());
        let lim = at(c, &["resources", "limits"]).and_then(Value::as_object).filter(|m| !m.is_empty());
        any |= req.is_some() || lim.is_some();
        let full = |m: Option<&Map<String, Value>>| m.is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"));
        if !(full(lim) && (req.is_none() || req == lim)) {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn apply_defaults(id: ResId, obj: &mut Value) {
    match id {
        PODS => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
                default(spec, "serviceAccountName", json!("default"));
                default(spec, "serviceAccount", json!("default"));
                default(spec, "enableServiceLinks", json!(true));
                default(spec, "priority", json!(0));
                default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
                default(
                    spec,
                    "tolerations",
                    json!([
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                    ]),
                );
            }
        }
        DEPLOYMENTS => {
            let spec = super::util::at_mut(obj, &["spec"]);
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            default(spec, "strategy", json!({"type": "RollingUpdate"}));
            if let Some(s) = spec.get_mut("strategy") {
                default(s, "type", json!("RollingUpdate"));
                if s.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    default(s, "rollingUpdate", json!({}));
                    if let Some(ru) = s.get_mut("rollingUpdate") {
                        default(ru, "maxSurge", json!("25%"));
                        default(ru, "maxUnavailable", json!("25%"));
                    }
                }
            }
            default_template(obj, &["spec", "template"]);
        }
        REPLICASETS => {
            default(super::util::at_mut(obj, &["spec"]), "replicas", json!(1));
            default_template(obj, &["spec", "template"]);
        }
        JOBS => {
            let spec = super::util::at_mut(obj, &["spec"]);
            default(spec, "parallelism", json!(1));
            default(spec, "completions", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            default_template(obj, &["spec", "template"]);
        }
        CRONJOBS => {
            let spec = super::util::at_mut(obj, &["spec"]);
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            default_template(obj, &["spec", "jobTemplate", "spec", "template"]);
        }
        SECRETS => {
            default(obj, "type", json!("Opaque"));
            if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                let data = super::util::at_mut(obj, &["data"]);
                if !data.is_object() {
                    *data = json!({});
                }
                for (k, v) in sd {
                    data[k.as_str()] = json!(b64_encode(v.as_str().unwrap_or_default().as_bytes()));
                }
            }
        }
        NAMESPACES => {
            let name = meta_str(obj, "name").to_string();
            set(obj, &["metadata", "labels", "kubernetes.io/metadata.name"], json!(name));
            default(super::util::at_mut(obj, &["spec"]), "finalizers", json!(["kubernetes"]));
        }
        _ => {}
    }
}

/// Status a new object starts with (the registries' `PrepareForCreate`).
fn initial_status(id: ResId, obj: &Value) -> Option<Value> {
    match id {
        PODS => Some(json!({"phase": "Pending", "qosClass": qos_class(obj.get("spec").unwrap_or(&Value::Null))})),
        NAMESPACES => Some(json!({"phase": "Active"})),
        DEPLOYMENTS | REPLICASETS | JOBS | CRONJOBS => Some(json!({})),
        _ => None,
    }
}

/// Everything but metadata and status (what bumps `generation`).
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        m.remove("metadata");
        m.remove("status");
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

// ------------------------------------------------------------------ create

fn check_type(id: ResId, body: &Value) -> ApiResult<()> {
    let r = res(id);
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && av != r.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && k != r.kind
    {
        return Err(ApiError::bad_request(format!("the kind in the data ({k}) does not match the expected kind ({})", r.kind)));
    }
    Ok(())
}

fn check_namespace(id: ResId, obj: &mut Value, url_ns: &str) -> ApiResult<()> {
    if !res(id).namespaced {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        return Ok(());
    }
    let body_ns = meta_str(obj, "namespace").to_string();
    if body_ns.is_empty() {
        set(obj, &["metadata", "namespace"], json!(url_ns));
    } else if body_ns != url_ns {
        return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
    }
    Ok(())
}

/// POST to a collection. `url_ns` is "" for cluster-scoped types.
pub fn create(st: &mut State, id: ResId, url_ns: &str, body: Value, dry_run: bool) -> ApiResult<Value> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!("Object 'Kind' is missing in '{body}'")));
    }
    check_type(id, &body)?;
    let mut obj = body;
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    check_namespace(id, &mut obj, url_ns)?;
    let ns = meta_str(&obj, "namespace").to_string();
    if meta_str(&obj, "name").is_empty() {
        let g = meta_str(&obj, "generateName").to_string();
        if !g.is_empty() {
            // The API server retries on a (rare) name clash; so do we.
            let mut name = format!("{g}{}", rand_suffix(5));
            while st.store.get(id, &ns, &name).is_some() {
                name = format!("{g}{}", rand_suffix(5));
            }
            obj["metadata"]["name"] = json!(name);
        }
    }
    let name = meta_str(&obj, "name").to_string();
    let uid = new_uid();
    {
        let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(fmt_time(Utc::now())));
        for k in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"] {
            m.remove(k);
        }
        if res(id).generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if id == JOBS && at(&obj, &["spec", "manualSelector"]).and_then(Value::as_bool) != Some(true) {
        // The Job registry generates the selector and pod labels from the uid.
        set(&mut obj, &["spec", "selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("controller-uid", uid.as_str()),
            ("job-name", name.as_str()),
        ] {
            set(&mut obj, &["spec", "template", "metadata", "labels", k], json!(v));
        }
    }
    apply_defaults(id, &mut obj);
    if let Some(s) = initial_status(id, &obj) {
        obj["status"] = s;
    }
    validate(id, &obj, None)?;
    if st.store.get(id, &ns, &name).is_some() {
        return Err(ApiError::already_exists(res(id), &name));
    }
    if id == PODS
        && let Some(nsobj) = st.store.get(NAMESPACES, "", &ns)
        && !meta_str(nsobj, "deletionTimestamp").is_empty()
    {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("pods \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"),
        ));
    }
    if dry_run {
        obj = super::store::with_type(id, obj);
        return Ok(obj);
    }
    ensure_namespace(st, &ns);
    Ok(st.store.insert(id, obj))
}

// ------------------------------------------------------------------ update

fn get_existing(st: &State, id: ResId, ns: &str, name: &str) -> ApiResult<Value> {
    st.store.get(id, ns, name).cloned().ok_or_else(|| ApiError::not_found(res(id), name))
}

/// Writes an updated object; an object being deleted whose last finalizer went away is
/// removed. (Pods are removed by the kubelet.)
pub fn write(st: &mut State, id: ResId, obj: Value) -> Value {
    let out = st.store.update(id, obj);
    let deleting = !meta_str(&out, "deletionTimestamp").is_empty();
    let finalizers = at(&out, &["metadata", "finalizers"]).and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    if deleting && !finalizers && id != PODS && id != NAMESPACES {
        let (ns, name) = (meta_str(&out, "namespace").to_string(), meta_str(&out, "name").to_string());
        return st.store.remove(id, &ns, &name).unwrap_or(out);
    }
    out
}

/// Common tail of PUT and PATCH: keeps what the client may not change, checks the
/// resourceVersion precondition, defaults, validates, bumps generation, writes.
fn finish_update(st: &mut State, id: ResId, old: Value, mut new: Value, target: Target, dry_run: bool) -> ApiResult<Value> {
    let r = res(id);
    let name = meta_str(&old, "name").to_string();
    if !new.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    let want_rv = meta_str(&new, "resourceVersion").to_string();
    if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(r, &name));
    }
    if target == Target::Status {
        // Only the status changes through the status subresource.
        let status = new.get("status").cloned().unwrap_or(json!({}));
        new = old.clone();
        new["status"] = status;
    } else {
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        for k in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "generation"] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        if r.has_sub("status") {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        apply_defaults(id, &mut new);
        validate(id, &new, Some(&old))?;
        if r.generation && spec_part(&new) != spec_part(&old) {
            let g = int_at(&old, &["metadata", "generation"]).unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if dry_run {
        return Ok(super::store::with_type(id, new));
    }
    Ok(write(st, id, new))
}

/// PUT.
pub fn replace(st: &mut State, id: ResId, ns: &str, name: &str, body: Value, target: Target, dry_run: bool) -> ApiResult<Value> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!("Object 'Kind' is missing in '{body}'")));
    }
    check_type(id, &body)?;
    let body_name = meta_str(&body, "name");
    if body_name != name {
        return Err(ApiError::bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
    }
    let body_ns = meta_str(&body, "namespace");
    if res(id).namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
    }
    let old = get_existing(st, id, ns, name)?;
    finish_update(st, id, old, body, target, dry_run)
}

fn patch_err(id: ResId, name: &str, e: PatchError) -> ApiError {
    match e {
        PatchError::Malformed(m) => ApiError::bad_request(m),
        PatchError::DoesNotApply(m) => {
            let r = res(id);
            ApiError::invalid(r.kind, r.group, name, vec![Cause::invalid("patch", "<patch>", &m)])
        }
    }
}

/// PATCH. Returns the object and whether it was created (server-side apply of a new object).
#[allow(clippy::too_many_arguments)]
pub fn patch(
    st: &mut State,
    id: ResId,
    ns: &str,
    name: &str,
    pt: PatchType,
    body: &Value,
    target: Target,
    field_manager: Option<&str>,
    dry_run: bool,
) -> ApiResult<(Value, bool)> {
    if pt == PatchType::Apply && field_manager.is_none_or(str::is_empty) {
        return Err(ApiError::invalid("PatchOptions", "meta.k8s.io", "", vec![Cause::required("fieldManager", "is required for apply patch")]));
    }
    let Some(old) = st.store.get(id, ns, name).cloned() else {
        if pt == PatchType::Apply && target == Target::Main {
            let mut obj = body.clone();
            if obj.get("apiVersion").is_none() || obj.get("kind").is_none() {
                return Err(ApiError::bad_request("apiVersion and kind must be set in an apply patch"));
            }
            let bn = meta_str(&obj, "name");
            if !bn.is_empty() && bn != name {
                return Err(ApiError::bad_request(format!("the name of the object ({bn}) does not match the name on the URL ({name})")));
            }
            set(&mut obj, &["metadata", "name"], json!(name));
            return create(st, id, ns, obj, dry_run).map(|o| (o, true));
        }
        return Err(ApiError::not_found(res(id), name));
    };
    if pt == PatchType::Apply {
        check_type(id, body)?;
    }
    let patched = patch::apply(pt, &old, body).map_err(|e| patch_err(id, name, e))?;
    // A resourceVersion in the patch is a precondition; otherwise the patch applies to the
    // current object.
    let mut patched = patched;
    if patched.get("metadata").and_then(|m| m.get("resourceVersion")).is_none()
        && let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut)
    {
        m.insert("resourceVersion".into(), old["metadata"]["resourceVersion"].clone());
    }
    if meta_str(&patched, "name") != name {
        return Err(invalid(id, name, vec![Cause::invalid("metadata.name", format!("{:?}", meta_str(&patched, "name")), "field is immutable")]));
    }
    finish_update(st, id, old, patched, target, dry_run).map(|o| (o, false))
}

// ------------------------------------------------------------------ scale

fn scale_of(id: ResId, obj: &Value) -> Value {
    let selector = if id == DEPLOYMENTS || id == REPLICASETS {
        LabelSelector::from_object(at(obj, &["spec", "selector"]).unwrap_or(&Value::Null)).to_string_form()
    } else {
        String::new()
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(obj, "name"),
            "namespace": meta_str(obj, "namespace"),
            "uid": meta_str(obj, "uid"),
            "resourceVersion": meta_str(obj, "resourceVersion"),
            "creationTimestamp": meta_str(obj, "creationTimestamp"),
        },
        "spec": {"replicas": int_at(obj, &["spec", "replicas"]).unwrap_or(0)},
        "status": {"replicas": int_at(obj, &["status", "replicas"]).unwrap_or(0), "selector": selector}
    })
}

pub fn get_scale(st: &State, id: ResId, ns: &str, name: &str) -> ApiResult<Value> {
    Ok(scale_of(id, &get_existing(st, id, ns, name)?))
}

fn set_scale(st: &mut State, id: ResId, ns: &str, name: &str, scale: Value, dry_run: bool) -> ApiResult<Value> {
    let old = get_existing(st, id, ns, name)?;
    let want_rv = meta_str(&scale, "resourceVersion");
    if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(res(id), name));
    }
    let replicas = match at(&scale, &["spec", "replicas"]) {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request(format!("spec.replicas: expected an integer, got {v}")))?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            vec![Cause::invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
        ));
    }
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    let out = finish_update(st, id, old, new, Target::Main, dry_run)?;
    Ok(scale_of(id, &out))
}

pub fn replace_scale(st: &mut State, id: ResId, ns: &str, name: &str, body: Value, dry_run: bool) -> ApiResult<Value> {
    let bn = meta_str(&body, "name");
    if !bn.is_empty() && bn != name {
        return Err(ApiError::bad_request(format!("the name of the object ({bn}) does not match the name on the URL ({name})")));
    }
    set_scale(st, id, ns, name, body, dry_run)
}

pub fn patch_scale(st: &mut State, id: ResId, ns: &str, name: &str, pt: PatchType, body: &Value, dry_run: bool) -> ApiResult<Value> {
    let cur = get_scale(st, id, ns, name)?;
    let patched = patch::apply(pt, &cur, body).map_err(|e| patch_err(id, name, e))?;
    set_scale(st, id, ns, name, patched, dry_run)
}

// ------------------------------------------------------------------ delete

#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOpts {
    /// From a `DeleteOptions` body (fields absent from the query string win from the body).
    pub fn merge_body(&mut self, body: &Value) {
        if self.grace_period.is_none() {
            self.grace_period = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        }
        if let Some(p) = body.get("preconditions") {
            self.uid = p.get("uid").and_then(Value::as_str).map(String::from);
            self.resource_version = p.get("resourceVersion").and_then(Value::as_str).map(String::from);
        }
    }
}

/// DELETE of one object: (HTTP code, body). Pods are deleted gracefully (the object comes back
/// with `deletionTimestamp`; the kubelet removes it after `Timing::terminate_after`); objects
/// with finalizers likewise wait; everything else goes at once and the answer is a Success
/// `Status`, as for the real registries.
pub fn delete(st: &mut State, id: ResId, ns: &str, name: &str, opts: &DeleteOpts, dry_run: bool) -> ApiResult<(u16, Value)> {
    let r = res(id);
    let old = get_existing(st, id, ns, name)?;
    for (want, field, label) in [(&opts.uid, "uid", "UID"), (&opts.resource_version, "resourceVersion", "ResourceVersion")] {
        if let Some(w) = want
            && w != meta_str(&old, field)
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {label} in precondition: {w}, {label} in object meta: {}",
                    r.group_resource(),
                    meta_str(&old, field)
                ),
            ));
        }
    }
    if dry_run {
        return Ok((200, old));
    }
    let now = Utc::now();
    if id == PODS {
        let phase = at(&old, &["status", "phase"]).and_then(Value::as_str).unwrap_or("");
        let unscheduled = at(&old, &["spec", "nodeName"]).and_then(Value::as_str).unwrap_or("").is_empty();
        let grace = opts.grace_period.or_else(|| int_at(&old, &["spec", "terminationGracePeriodSeconds"])).unwrap_or(30);
        let immediate = grace <= 0 || unscheduled || phase == "Succeeded" || phase == "Failed";
        if immediate {
            let gone = st.store.remove(id, ns, name).unwrap_or(old);
            return Ok((200, gone));
        }
        if !meta_str(&old, "deletionTimestamp").is_empty() {
            return Ok((200, old));
        }
        let mut new = old;
        new["metadata"]["deletionTimestamp"] = json!(fmt_time(now + chrono::Duration::seconds(grace)));
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        return Ok((200, st.store.update(id, new)));
    }
    let finalizers = at(&old, &["metadata", "finalizers"]).and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    if finalizers || id == NAMESPACES {
        if !meta_str(&old, "deletionTimestamp").is_empty() {
            return Ok((200, old));
        }
        let mut new = old;
        new["metadata"]["deletionTimestamp"] = json!(fmt_time(now));
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if id == NAMESPACES {
            new["status"]["phase"] = json!("Terminating");
        }
        return Ok((200, st.store.update(id, new)));
    }
    let gone = st.store.remove(id, ns, name).unwrap_or(old);
    let mut details = json!({"name": name, "kind": r.plural, "uid": meta_str(&gone, "uid")});
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    Ok((200, success(200, Some(details))))
}

/// POST `pods/{name}/eviction`: deletes the pod gracefully; `201` Success Status.
pub fn evict(st: &mut State, ns: &str, name: &str, body: &Value, dry_run: bool) -> ApiResult<Value> {
    let bn = meta_str(body, "name");
    if !bn.is_empty() && bn != name {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let mut opts = DeleteOpts::default();
    if let Some(d) = body.get("deleteOptions").filter(|d| d.is_object()) {
        opts.merge_body(d);
    }
    delete(st, PODS, ns, name, &opts, dry_run)?;
    Ok(success(201, None))
}

// ------------------------------------------------------------------ events

pub struct EventSpec<'a> {
    pub type_: &'a str,
    pub reason: &'a str,
    pub message: String,
    pub component: &'a str,
    pub field_path: Option<String>,
}

/// Records a core/v1 Event about `involved` (a stored object with `kind`), or bumps the
/// `count` and `lastTimestamp` of the same event (same object, reason, message, source).
pub fn emit_event(st: &mut State, involved: &Value, e: EventSpec<'_>) {
    let ns = {
        let n = meta_str(involved, "namespace");
        if n.is_empty() { "default".to_string() } else { n.to_string() }
    };
    let uid = meta_str(involved, "uid").to_string();
    let now = Utc::now();
    let existing = st
        .store
        .list(EVENTS, Some(&ns))
        .find(|ev| {
            at(ev, &["involvedObject", "uid"]).and_then(Value::as_str) == Some(uid.as_str())
                && ev.get("reason").and_then(Value::as_str) == Some(e.reason)
                && ev.get("message").and_then(Value::as_str) == Some(e.message.as_str())
                && at(ev, &["source", "component"]).and_then(Value::as_str) == Some(e.component)
        })
        .cloned();
    if let Some(mut ev) = existing {
        let c = ev.get("count").and_then(Value::as_i64).unwrap_or(1);
        ev["count"] = json!(c + 1);
        ev["lastTimestamp"] = json!(fmt_time(now));
        st.store.update(EVENTS, ev);
        return;
    }
    st.event_seq += 1;
    let nanos = now.timestamp_nanos_opt().unwrap_or(0) as u64;
    let name = format!("{}.{:016x}", meta_str(involved, "name"), nanos.wrapping_add(st.event_seq));
    let mut io = json!({
        "kind": involved.get("kind").cloned().unwrap_or(Value::Null),
        "namespace": meta_str(involved, "namespace"),
        "name": meta_str(involved, "name"),
        "uid": uid,
        "apiVersion": involved.get("apiVersion").cloned().unwrap_or(Value::Null),
        "resourceVersion": meta_str(involved, "resourceVersion"),
    });
    if let Some(fp) = e.field_path {
        io["fieldPath"] = json!(fp);
    }
    let mut source = json!({"component": e.component});
    if e.component == "kubelet" {
        source["host"] = json!(NODE_NAME);
    }
    let ev = json!({
        "metadata": {"name": name, "namespace": ns, "uid": new_uid(), "creationTimestamp": fmt_time(now)},
        "involvedObject": io,
        "reason": e.reason,
        "message": e.message,
        "source": source,
        "firstTimestamp": fmt_time(now),
        "lastTimestamp": fmt_time(now),
        "count": 1,
        "type": e.type_,
        "eventTime": null,
        "reportingComponent": e.component,
        "reportingInstance": if e.component == "kubelet" { NODE_NAME.to_string() } else { String::new() },
    });
    ensure_namespace(st, &ns);
    st.store.insert(EVENTS, ev);
}

// ------------------------------------------------------------------ test helpers

/// [`super::FakeCluster::deploy`].
pub fn deploy(st: &mut State, ns: &str, name: &str, image: &str, replicas: i32) -> ApiResult<Value> {
    if st.store.get(DEPLOYMENTS, ns, name).is_some() {
        let p = json!({"spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
        return patch(st, DEPLOYMENTS, ns, name, PatchType::Strategic, &p, Target::Main, None, false).map(|(o, _)| o);
    }
    let obj = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": image,
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5}
                }]}
            }
        }
    });
    create(st, DEPLOYMENTS, ns, obj, false)
}

/// [`super::FakeCluster::put_object`]: create or replace, keeping a given `status`.
pub fn put(st: &mut State, obj: Value) -> ApiResult<Value> {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let id = resources::find_kind(av, kind).ok_or_else(|| ApiError::bad_request(format!("the fake cluster does not serve {av} {kind}")))?;
    let ns = if res(id).namespaced {
        let n = meta_str(&obj, "namespace");
        if n.is_empty() { "default".to_string() } else { n.to_string() }
    } else {
        String::new()
    };
    let name = meta_str(&obj, "name").to_string();
    let status = obj.get("status").cloned();
    let mut stored = if st.store.get(id, &ns, &name).is_some() {
        let mut body = obj;
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        replace(st, id, &ns, &name, body, Target::Main, false)?
    } else {
        create(st, id, &ns, obj, false)?
    };
    if let Some(s) = status
        && res(id).has_sub("status")
    {
        stored["status"] = s;
        stored = st.store.update(id, stored);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("promotions-api-7d4b9c8f6c-x2x9k"));
        assert!(is_dns_subdomain("a.b"));
        assert!(!is_dns_subdomain("Bad"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn qos() {
        assert_eq!(qos_class(&json!({"containers": [{"name": "a"}]})), "BestEffort");
        assert_eq!(qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})), "Burstable");
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
    }
}
