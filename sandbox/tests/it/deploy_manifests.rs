//! deploy/: the Helm chart (deploy/helm/runbot) and the plain manifests rendered from it
//! (deploy/manifests), checked without Helm — which is not installed here — in four ways:
//!
//! 1. **Valid objects.** The real `kubectl` reads the manifests (YAML → objects, no server);
//!    each object decodes strictly into k8s-openapi's type of its kind (unknown or misplaced
//!    fields and wrongly typed values fail). The kinds the sandbox's API server serves
//!    (ServiceAccount, ConfigMap, Service, Deployment) are applied to it with
//!    `kubectl apply --dry-run=server`, then for real: the Deployment's pod must come up
//!    Ready under the chart's service account. RBAC kinds and the PersistentVolumeClaim are
//!    not served by the sandbox, so for them the strict decoding is the check.
//! 2. **Safe to run.** Probes on /healthz (liveness) and /readyz (readiness) at the port the
//!    config listens on; non-root, read-only root filesystem, no privilege escalation, no
//!    capabilities, resources; secrets only by reference to `existingSecret`, and every
//!    `env:NAME` the config names is set; the store and /tmp are writable volumes.
//! 3. **The chart, rendered.** Every value in values.yaml shows in the manifests where the
//!    templates put it (image, replicas, security contexts, probes, resources, env, config,
//!    config checksum, service, volume, RBAC namespaces); every template has its manifest file
//!    and each rendered document names its template; the Role's rules are exactly the rules
//!    the chart's `_helpers.tpl` defines; the kinds a template makes that are absent from the
//!    manifests are exactly those behind a switch that is off by default.
//! 4. **RBAC covers what runbot does.** The Kubernetes driver (every method of the `Cluster`
//!    port, which the test lists and compares with the trait) and the `kubectl` steps of the
//!    example team runbooks run against the sandbox's API server; every request it recorded
//!    must be allowed by the manifests' Roles/bindings for runbot's service account, evaluated
//!    as the API server's RBAC authorizer would. And the other way round: whatever the rules
//!    grant beyond those requests must be named, with its reason, in [`GRANTED_FOR`].

use crate::deploy::chart::{self, manifests_dir};
use crate::deploy::exercise::{EXERCISED, cluster_port_methods, drive, run_example_runbooks};
use crate::deploy::kubectl::Kubectl;
use crate::deploy::objects::{self, id, of_kind, one};
use crate::deploy::rbac::{Attr, Grants, Request, attributes, discovery_allowed};
use runbot_sandbox::kube::{FakeCluster, Timing};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the rules grant that the driver and the example runbooks did not use in this test,
/// and why runbot may need it: (API group, resource, verb, reason).
const GRANTED_FOR: &[(&str, &str, &str, &str)] = &[
    ("", "pods/eviction", "create", "kubectl drain / kubectl evict in team runbooks: an eviction honours PodDisruptionBudgets"),
    ("", "events", "get", "kubectl describe / kubectl get events in team runbooks"),
    ("", "events", "watch", "kubectl get events --watch in team runbooks"),
    ("apps", "deployments", "list", "kubectl rollout status and kubectl get deployments list Deployments"),
    ("apps", "deployments", "watch", "kubectl rollout status watches the Deployment"),
    ("apps", "deployments/scale", "update", "kubectl scale replaces the scale subresource when it cannot patch it"),
    ("apps", "replicasets", "get", "kubectl rollout history|undo and kubectl describe deployment read ReplicaSets"),
    ("apps", "replicasets", "list", "kubectl rollout history|undo and kubectl describe deployment list ReplicaSets"),
    ("apps", "replicasets", "watch", "kubectl get replicasets --watch in team runbooks"),
    ("batch", "jobs", "list", "kubectl wait --for=condition=complete job/NAME and kubectl get jobs"),
    ("batch", "jobs", "watch", "kubectl wait --for=condition=complete job/NAME"),
    ("batch", "cronjobs", "list", "kubectl get cronjobs in team runbooks"),
    ("", "secrets", "get", "Helm's release Secrets: helm status / history / the revision a rollback returns to"),
    ("", "secrets", "list", "Helm's release Secrets: helm list / history"),
];

fn local() -> Kubectl {
    Kubectl::new(None, &[])
}

fn manifests(k: &Kubectl) -> Vec<Value> {
    k.read_objects(&manifests_dir())
}

/// The chart's values.yaml and Chart.yaml.
fn values(k: &Kubectl) -> (Value, Value) {
    (k.read_yaml(&chart::chart_dir().join("values.yaml")), k.read_yaml(&chart::chart_dir().join("Chart.yaml")))
}

fn container(d: &Value) -> &Value {
    let cs = d["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(cs.len(), 1, "one container: {cs:?}");
    &cs[0]
}

/// `key = "value"` lines of the config (the chart's runbot.toml is ours; its shape is simple).
fn config_values<'a>(config: &'a str, key: &str) -> Vec<&'a str> {
    config.lines().filter_map(|l| l.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?.trim().strip_prefix('"')?.strip_suffix('"')).collect()
}

fn config_of(objects: &[Value]) -> (String, String) {
    let cm = one(objects, "ConfigMap");
    let text = |k: &str| cm["data"][k].as_str().unwrap_or_else(|| panic!("the ConfigMap has no {k}")).to_string();
    (text("runbot.toml"), text("runbooks.toml"))
}

#[test]
fn manifests_are_valid_kubernetes_objects() {
    let k = local();
    let objects = manifests(&k);
    let documents: usize = std::fs::read_dir(manifests_dir())
        .expect("deploy/manifests")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .map(|t| t.lines().filter(|l| l.starts_with("kind: ")).count())
        .sum();
    assert_eq!(objects.len(), documents, "kubectl read every document");
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for want in ["ServiceAccount", "ConfigMap", "Service", "Deployment", "Role", "RoleBinding", "PersistentVolumeClaim"] {
        assert!(kinds.contains(want), "deploy/manifests has no {want}: {kinds:?}");
    }
    let problems: Vec<String> = objects.iter().filter_map(|o| objects::check(o).err().map(|e| format!("{}: {e}", id(o)))).collect();
    assert!(problems.is_empty(), "{problems:#?}");

    // The strict decoding is a real check: a misspelt field and a wrongly typed value fail it.
    let mut typo = one(&objects, "Deployment").clone();
    typo["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = json!({"httpGet": {"path": "/readyz"}});
    assert!(objects::check(&typo).unwrap_err().contains("readinessprobe is not a field"));
    let mut wrong = one(&objects, "Service").clone();
    wrong["spec"]["ports"][0]["port"] = json!("eighty");
    assert!(objects::check(&wrong).unwrap_err().contains("does not decode"));
    assert!(objects.iter().all(|o| o["kind"] != "Secret"), "the manifests never carry a Secret");
}

#[test]
fn the_deployment_runs_runbot_safely() {
    let objects = manifests(&local());
    let d = one(&objects, "Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let c = container(d);
    let (config, runbooks) = config_of(&objects);

    // Probes at the port the config listens on.
    let listen = config_values(&config, "listen");
    assert_eq!(listen.len(), 1, "[server] listen: {listen:?}");
    let port: u64 = listen[0].rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("listen port");
    assert!(listen[0].starts_with("0.0.0.0:"), "in a pod runbot listens on all interfaces: {}", listen[0]);
    let http = c["ports"].as_array().expect("ports").iter().find(|p| p["name"] == "http").expect("a port named http");
    assert_eq!(http["containerPort"], port);
    assert_eq!((c["livenessProbe"]["httpGet"]["path"].as_str(), c["livenessProbe"]["httpGet"]["port"].as_str()), (Some("/healthz"), Some("http")));
    assert_eq!((c["readinessProbe"]["httpGet"]["path"].as_str(), c["readinessProbe"]["httpGet"]["port"].as_str()), (Some("/readyz"), Some("http")));
    let svc = one(&objects, "Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(svc["spec"]["selector"].as_object().map(|m| m.len()), d["spec"]["selector"]["matchLabels"].as_object().map(|m| m.len()));
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&d["spec"]["template"]["metadata"]["labels"][k], v, "the Service selects the pods");
    }

    // Non-root, read-only, nothing extra.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().is_some_and(|u| u > 0));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    for k in ["requests", "limits"] {
        assert!(c["resources"][k]["memory"].is_string(), "resources.{k}.memory is set");
    }

    // The config and runbooks come from the ConfigMap, where the args say.
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(&args[..2], ["serve", "--config"]);
    let config_path = std::path::Path::new(args[2]);
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mount_of = |dir: &str| mounts.iter().find(|m| m["mountPath"] == dir).map(|m| m["name"].as_str().unwrap_or("").to_string());
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).cloned().unwrap_or_else(|| panic!("no volume {name}"));
    let config_dir = config_path.parent().and_then(|p| p.to_str()).expect("config dir");
    let cfg_volume = volume(&mount_of(config_dir).expect("the config directory is mounted"));
    assert_eq!(cfg_volume["configMap"]["name"], one(&objects, "ConfigMap")["metadata"]["name"]);
    assert!(!runbooks.is_empty());
    assert_eq!(config_values(&config, "runbooks"), ["runbooks.toml"], "[engine] runbooks names the ConfigMap's runbooks.toml");
    assert_eq!(config_path.file_name().and_then(|f| f.to_str()), Some("runbot.toml"));

    // The root filesystem is read-only: the SQLite store and /tmp are volumes.
    let store = config_values(&config, "url");
    assert_eq!(store.len(), 1, "{store:?}");
    if let Some(file) = store[0].strip_prefix("sqlite://") {
        let dir = std::path::Path::new(file).parent().and_then(|p| p.to_str()).expect("an absolute SQLite path");
        let data = volume(&mount_of(dir).unwrap_or_else(|| panic!("the SQLite directory {dir} is not a volume")));
        let claim = data["persistentVolumeClaim"]["claimName"].as_str().expect("the store is on a PersistentVolumeClaim");
        assert_eq!(one(&objects, "PersistentVolumeClaim")["metadata"]["name"], claim);
        assert_eq!(d["spec"]["replicas"], 1, "a SQLite file belongs to one process");
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "the old pod lets go of the file before the new one opens it");
    }
    assert!(mount_of("/tmp").is_some(), "command steps get a writable /tmp");

    // Secrets only by reference: every env var with a secret comes from existingSecret, and
    // every env:NAME of the config is set.
    let env = c["env"].as_array().expect("env");
    let names: BTreeSet<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
    for e in env {
        if e.get("value").is_some() {
            assert_eq!(e["name"], "RUNBOT_LOG", "only plain settings are written as values: {e}");
        } else {
            assert!(e["valueFrom"]["secretKeyRef"]["name"].is_string(), "{e}");
        }
    }
    for line in config.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for part in line.split("\"env:").skip(1) {
            let var = part.split('"').next().unwrap_or_default();
            assert!(names.contains(var), "the config reads env:{var} but the container does not set it");
        }
    }
}

#[test]
fn manifests_are_the_chart_rendered_with_its_values() {
    let k = local();
    let objects = manifests(&k);
    let (v, chart_yaml) = values(&k);
    let app_version = chart_yaml["appVersion"].as_str().expect("appVersion");
    let chart_label = format!("runbot-{}", chart_yaml["version"].as_str().expect("version"));

    // Names and labels (release `runbot`: the full name is `runbot`).
    for o in &objects {
        let l = &o["metadata"]["labels"];
        assert_eq!(
            (l["helm.sh/chart"].as_str(), l["app.kubernetes.io/version"].as_str()),
            (Some(chart_label.as_str()), Some(app_version)),
            "{}",
            id(o)
        );
        assert_eq!((l["app.kubernetes.io/name"].as_str(), l["app.kubernetes.io/instance"].as_str()), (Some("runbot"), Some("runbot")), "{}", id(o));
        assert_eq!(o["metadata"]["name"], "runbot", "{}", id(o));
    }
    for kind in ["ServiceAccount", "ConfigMap", "Service", "Deployment", "PersistentVolumeClaim"] {
        assert_eq!(one(&objects, kind)["metadata"]["namespace"], "runbot", "{kind} is in the release namespace");
    }

    // The Deployment: what values.yaml says, where the template puts it.
    let d = one(&objects, "Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let c = container(d);
    let tag = v["image"]["tag"].as_str().filter(|t| !t.is_empty()).unwrap_or(app_version);
    assert_eq!(c["image"], format!("{}:{tag}", v["image"]["repository"].as_str().expect("repository")));
    assert_eq!(c["imagePullPolicy"], v["image"]["pullPolicy"]);
    assert_eq!(d["spec"]["replicas"], v["replicaCount"]);
    assert_eq!(pod["securityContext"], v["podSecurityContext"]);
    assert_eq!(c["securityContext"], v["securityContext"]);
    assert_eq!(c["resources"], v["resources"]);
    assert_eq!(pod["terminationGracePeriodSeconds"], v["terminationGracePeriodSeconds"]);
    assert_eq!(pod["serviceAccountName"], one(&objects, "ServiceAccount")["metadata"]["name"]);
    for probe in ["livenessProbe", "readinessProbe"] {
        let mut p = c[probe].clone();
        p.as_object_mut().expect("probe").remove("httpGet");
        assert_eq!(p, v[probe], "{probe}");
    }
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(args.contains(&"--log-json"), v["log"]["json"] == true);
    let env = c["env"].as_array().expect("env");
    assert_eq!(env.iter().find(|e| e["name"] == "RUNBOT_LOG").map(|e| &e["value"]), Some(&v["log"]["level"]));
    let from_secret: BTreeMap<&str, (&str, &str)> = env
        .iter()
        .filter_map(|e| {
            let r = &e["valueFrom"]["secretKeyRef"];
            Some((e["name"].as_str()?, (r["name"].as_str()?, r["key"].as_str()?)))
        })
        .collect();
    let secret = v["existingSecret"].as_str().expect("existingSecret");
    let wanted: BTreeMap<&str, (&str, &str)> =
        v["secretEnv"].as_object().expect("secretEnv").iter().map(|(n, key)| (n.as_str(), (secret, key.as_str().expect("key")))).collect();
    assert_eq!(from_secret, wanted);

    // Config, runbooks and the checksum that rolls the pods when they change.
    let (config, runbooks) = config_of(&objects);
    assert_eq!(config, v["config"].as_str().expect("config"));
    assert_eq!(runbooks, v["runbooks"].as_str().expect("runbooks"));
    let sum = hex::encode(Sha256::digest(format!("{config}\n---\n{runbooks}").as_bytes()));
    assert_eq!(d["spec"]["template"]["metadata"]["annotations"]["checksum/config"], sum);

    // Service and volume.
    let svc = one(&objects, "Service");
    assert_eq!((&svc["spec"]["type"], &svc["spec"]["ports"][0]["port"]), (&v["service"]["type"], &v["service"]["port"]));
    assert_eq!(v["persistence"]["enabled"], true);
    assert_eq!(one(&objects, "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"], v["persistence"]["size"]);

    // RBAC: a Role and a RoleBinding per namespace, with exactly the chart's rules.
    assert_eq!(v["rbac"]["clusterWide"], false);
    let namespaces: Vec<&str> = v["rbac"]["namespaces"].as_array().expect("namespaces").iter().filter_map(Value::as_str).collect();
    for kind in ["Role", "RoleBinding"] {
        let mut got: Vec<&str> = of_kind(&objects, kind).iter().filter_map(|o| o["metadata"]["namespace"].as_str()).collect();
        got.sort();
        let mut want = namespaces.clone();
        want.sort();
        assert_eq!(got, want, "one {kind} per rbac.namespaces");
    }
    let mut rules = chart::define(&k, "runbot.workloadRules").as_array().cloned().expect("workload rules");
    rules.extend(v["rbac"]["extraRules"].as_array().cloned().unwrap_or_default());
    if v["rbac"]["helmReleaseSecrets"] == true {
        rules.extend(chart::define(&k, "runbot.helmSecretRules").as_array().cloned().expect("secret rules"));
    }
    if v["rbac"]["helmDeploys"] == true {
        rules.extend(chart::define(&k, "runbot.helmDeployRules").as_array().cloned().expect("helm deploy rules"));
    }
    for role in of_kind(&objects, "Role") {
        assert_eq!(role["rules"], Value::Array(rules.clone()), "{}: the rules of _helpers.tpl", id(role));
    }

    // Templates and manifest files correspond; what the templates make and the manifests lack
    // is behind a switch that is off by default.
    let templates = chart::templates();
    let sources = chart::manifest_sources();
    assert_eq!(sources.keys().collect::<Vec<_>>(), templates.keys().collect::<Vec<_>>(), "one manifest file per template");
    for (file, docs) in &sources {
        assert!(!docs.is_empty() && docs.iter().all(|s| s == file), "{file}: every document comes from templates/{file}: {docs:?}");
        let rendered: BTreeSet<String> = std::fs::read_to_string(manifests_dir().join(file))
            .expect("read")
            .lines()
            .filter_map(|l| l.strip_prefix("kind: ").map(str::to_string))
            .collect();
        let made: BTreeSet<String> = chart::kinds(&templates[file]).into_iter().collect();
        let off: BTreeSet<String> = made.difference(&rendered).cloned().collect();
        let expected_off: BTreeSet<String> = match file.as_str() {
            "rbac.yaml" => ["ClusterRole", "ClusterRoleBinding"].map(String::from).into(),
            _ => BTreeSet::new(),
        };
        assert_eq!(off, expected_off, "{file}: kinds the template makes that the manifests lack");
        assert!(rendered.is_subset(&made), "{file}: rendered kinds {rendered:?} not in the template {made:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_apply_to_the_api_server() {
    let objects = manifests(&local());
    let c = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox");
    let k = Kubectl::new(Some(&c.url()), &["sandbox"]);

    // What the sandbox serves, from its discovery documents.
    let client = kube::Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client");
    let discovery = kube::Discovery::new(client).run().await.expect("discovery");
    let served: BTreeSet<(String, String)> =
        discovery.groups().flat_map(|g| g.recommended_resources().into_iter().map(|(r, _)| (r.api_version.clone(), r.kind.clone()))).collect();
    let (apply, skipped): (Vec<&Value>, Vec<&Value>) =
        objects.iter().partition(|o| served.contains(&(o["apiVersion"].as_str().unwrap_or("").into(), o["kind"].as_str().unwrap_or("").into())));
    let applied_kinds: BTreeSet<&str> = apply.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        applied_kinds,
        ["ConfigMap", "Deployment", "Service", "ServiceAccount"].into(),
        "skipped: {:?}",
        skipped.iter().map(|o| id(o)).collect::<Vec<_>>()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, o) in apply.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:02}.json")), serde_json::to_string_pretty(o).expect("json")).expect("write");
    }
    let path = dir.path().to_str().expect("utf-8");

    let dry = tokio::task::block_in_place(|| k.ok(&["apply", "--dry-run=server", "--validate=false", "-f", path]));
    assert_eq!(dry.lines().filter(|l| l.ends_with("created (server dry run)")).count(), apply.len(), "{dry}");
    let stored = |o: &Value| {
        c.object(
            o["apiVersion"].as_str().unwrap_or(""),
            o["kind"].as_str().unwrap_or(""),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or(""),
        )
    };
    assert!(apply.iter().all(|o| stored(o).is_none()), "a dry run stores nothing");

    let out = tokio::task::block_in_place(|| k.ok(&["apply", "--validate=false", "-f", path]));
    assert_eq!(out.lines().filter(|l| l.ends_with(" created")).count(), apply.len(), "{out}");
    for o in &apply {
        let s = stored(o).unwrap_or_else(|| panic!("{} was not stored", id(o)));
        assert!(s["metadata"]["uid"].is_string(), "{}", id(o));
    }
    let got: Value =
        serde_json::from_str(&tokio::task::block_in_place(|| k.ok(&["get", "deployment", "runbot", "-n", "runbot", "-o", "json"]))).expect("json");
    assert_eq!(container(&got)["securityContext"], container(one(&objects, "Deployment"))["securityContext"], "stored as written");

    // The Deployment's controller runs it: a pod under runbot's service account, Ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pods = c.pods("runbot");
        let ready =
            |p: &Value| p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if let [p] = pods.as_slice()
            && ready(p)
        {
            assert_eq!(p["spec"]["serviceAccountName"], "runbot");
            assert_eq!(p["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"], "/readyz");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Ready runbot pod: {pods:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_every_call_runbot_makes_and_nothing_unexplained() {
    let methods = cluster_port_methods();
    let exercised: BTreeSet<String> = EXERCISED.iter().map(|s| s.to_string()).collect();
    assert_eq!(methods, exercised, "the Cluster port changed: call every method in drive() so its API requests are checked against RBAC");

    let k = local();
    let objects = manifests(&k);
    let (v, _) = values(&k);
    let account = one(&objects, "ServiceAccount");
    let grants = Grants::for_service_account(
        &objects,
        account["metadata"]["namespace"].as_str().expect("namespace"),
        account["metadata"]["name"].as_str().expect("name"),
    );
    // Every namespace the chart's config acts in is covered.
    let (config, _) = config_of(&objects);
    let mut acted_in: Vec<String> = config_values(&config, "namespace").into_iter().map(str::to_string).collect();
    for line in config.lines().filter(|l| ["writers", "backup_cronjob"].iter().any(|k| l.trim_start().starts_with(k))) {
        acted_in.extend(line.split('"').skip(1).step_by(2).filter_map(|w| w.split_once('/')).map(|(ns, _)| ns.to_string()));
    }
    assert!(!acted_in.is_empty(), "the chart's config names a namespace");
    let rbac_ns: Vec<&str> = v["rbac"]["namespaces"].as_array().expect("namespaces").iter().filter_map(Value::as_str).collect();
    for ns in &acted_in {
        assert!(rbac_ns.contains(&ns.as_str()), "the config acts in {ns}, which rbac.namespaces does not list");
    }

    let ns = acted_in[0].clone();
    let c = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox");
    drive(&c, &ns).await;
    run_example_runbooks(&c, &ns).await;

    let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut denied: BTreeSet<String> = BTreeSet::new();
    for (method, path) in c.requests() {
        match attributes(&method, &path) {
            Request::NonResource(p) => assert!(discovery_allowed(&p), "{method} {path}: a non-resource path runbot may not read"),
            // Every authenticated identity may ask what it may do (the built-in
            // system:basic-user ClusterRole); the deploy preflight does.
            Request::Resource(a) if a.group == "authorization.k8s.io" && a.resource == "selfsubjectaccessreviews" && a.verb == "create" => {}
            Request::Resource(a) => {
                if !grants.allows(&a) {
                    denied.insert(format!("{a}  ({method} {path})"));
                }
                used.insert((a.group.clone(), a.resource.clone(), a.verb.clone()));
            }
        }
    }
    assert!(
        denied.is_empty(),
        "runbot's service account may not do these (add them to runbot.workloadRules in deploy/helm/runbot/templates/_helpers.tpl, then render deploy/manifests again):\n{}",
        denied.into_iter().collect::<Vec<_>>().join("\n")
    );
    for want in [
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
        ("apps", "deployments/scale", "patch"),
        ("batch", "jobs", "create"),
        ("apps", "deployments", "patch"),
    ] {
        assert!(
            used.contains(&(want.0.into(), want.1.into(), want.2.into())),
            "the driver and runbooks were exercised: {want:?} missing from {used:?}"
        );
    }

    // Least privilege: what is granted and was not used must be named, with its reason.
    let granted = grants.triples();
    assert!(granted.iter().all(|(g, r, v)| g != "*" && r != "*" && v != "*"), "no wildcards: {granted:?}");
    let named: BTreeSet<(String, String, String)> = GRANTED_FOR.iter().map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string())).collect();
    let unexplained: Vec<_> = granted.iter().filter(|t| !used.contains(*t) && !named.contains(*t)).collect();
    assert!(unexplained.is_empty(), "granted but neither used nor explained in GRANTED_FOR: {unexplained:?}");
    let stale: Vec<_> = named.iter().filter(|t| !granted.contains(*t)).collect();
    assert!(stale.is_empty(), "GRANTED_FOR names what the chart does not grant: {stale:?}");
    // And the check can fail: a call outside the rules is refused.
    let outside =
        Attr { verb: "delete".into(), group: "apps".into(), resource: "deployments".into(), namespace: Some(ns.clone()), name: Some("x".into()) };
    assert!(!grants.allows(&outside));
    let elsewhere = Attr { verb: "list".into(), group: "".into(), resource: "pods".into(), namespace: Some("kube-system".into()), name: None };
    assert!(!grants.allows(&elsewhere), "nothing outside rbac.namespaces");
    c.shutdown().await;
}

/// What `rbac.helmDeploys` grants that the helm stand-in did not use in
/// [`helm_deploys_grants_what_helm_upgrade_and_rollback_do`], and why Helm may need it.
const HELM_GRANTED_FOR: &[(&str, &str, &str, &str)] = &[
    ("", "secrets", "delete", "helm upgrade deletes revisions past --history-max"),
    ("apps", "deployments", "create", "helm upgrade --install creates a Deployment the release did not have yet"),
    ("apps", "deployments", "update", "helm upgrade --force replaces objects"),
    ("apps", "deployments", "delete", "an upgrade that drops a Deployment from the chart deletes it"),
];

/// `rbac.helmDeploys` (off by default, so not in deploy/manifests): a Role with the workload
/// rules, Helm's release Secrets and `runbot.helmDeployRules` allows every request of an
/// in-cluster `helm upgrade --install`, a second upgrade and a `helm rollback` (the helm
/// stand-in, which writes Helm's real release storage, against the sandbox API server); without
/// `helmDeployRules` the same requests are refused — the switch is what makes them possible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_deploys_grants_what_helm_upgrade_and_rollback_do() {
    let k = local();
    let (v, _) = values(&k);
    assert_eq!(v["rbac"]["helmDeploys"], false, "off by default: deploy/manifests do not grant Helm's writes");
    let ns = "promotions-ns";
    let rules = |deploys: bool| {
        let mut r = chart::define(&k, "runbot.workloadRules").as_array().cloned().expect("workload rules");
        r.extend(chart::define(&k, "runbot.helmSecretRules").as_array().cloned().expect("secret rules"));
        if deploys {
            r.extend(chart::define(&k, "runbot.helmDeployRules").as_array().cloned().expect("helm deploy rules"));
        }
        r
    };
    let grants = |deploys: bool| {
        let objects = [
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "runbot", "namespace": ns}, "rules": rules(deploys)}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "runbot", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "runbot"},
                "subjects": [{"kind": "ServiceAccount", "name": "runbot", "namespace": "runbot"}]}),
        ];
        Grants::for_service_account(&objects, "runbot", "runbot")
    };
    let (with, without) = (grants(true), grants(false));

    let c = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox");
    c.deploy(ns, "promotions-api", "registry.example.com/promotions:1.2.3", 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let chart_dir = dir.path().join("promotions");
    std::fs::create_dir_all(&chart_dir).expect("mkdir");
    std::fs::write(chart_dir.join("Chart.yaml"), "apiVersion: v2\nname: promotions\nversion: 0.3.1\nappVersion: \"1.2.3\"\n").expect("write");
    std::fs::write(chart_dir.join("values.yaml"), "deployment: promotions-api\nimage:\n  repository: registry.example.com/promotions\n  tag: \"\"\n")
        .expect("write");
    let chart_ref = chart_dir.display().to_string();
    let before = c.requests().len();
    for args in [
        vec!["upgrade", "--install", "promotions", &chart_ref, "-n", ns, "--set", "image.tag=1.2.4", "--wait", "--timeout", "30s"],
        vec!["upgrade", "promotions", &chart_ref, "-n", ns, "--set", "image.tag=1.2.5", "--wait", "--timeout", "30s"],
        vec!["rollback", "promotions", "1", "-n", ns, "--wait", "--timeout", "30s"],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_helm"))
            .args(&args)
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_MAX_HISTORY")
            .env("HELM_KUBEAPISERVER", c.url())
            .output()
            .await
            .expect("run helm");
        assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let mut used = BTreeSet::new();
    let (mut denied, mut refused_without) = (Vec::new(), Vec::new());
    for (method, path) in c.requests().into_iter().skip(before) {
        let Request::Resource(a) = attributes(&method, &path) else { continue };
        if !with.allows(&a) {
            denied.push(format!("{a}  ({method} {path})"));
        }
        if !without.allows(&a) {
            refused_without.push(format!("{a}"));
        }
        used.insert((a.group.clone(), a.resource.clone(), a.verb.clone()));
    }
    assert!(denied.is_empty(), "rbac.helmDeploys does not cover what helm did (add it to runbot.helmDeployRules):\n{}", denied.join("\n"));
    assert!(
        refused_without.iter().any(|a| a.contains("secrets") && a.contains("create")),
        "without helmDeployRules, writing the release Secret must be refused: {refused_without:?}"
    );
    // Least privilege: what helmDeployRules adds and helm did not use is named with its reason.
    let added: BTreeSet<(String, String, String)> = with.triples().difference(&without.triples()).cloned().collect();
    let named: BTreeSet<(String, String, String)> =
        HELM_GRANTED_FOR.iter().map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string())).collect();
    // Services, ConfigMaps and ServiceAccounts: what an application chart commonly renders
    // besides its Deployment; the stand-in's sandbox charts render only the Deployment.
    let unexplained: Vec<_> = added
        .iter()
        .filter(|t| !used.contains(*t) && !named.contains(*t) && !matches!(t.1.as_str(), "services" | "configmaps" | "serviceaccounts"))
        .collect();
    assert!(unexplained.is_empty(), "helmDeployRules grant, unused and unexplained: {unexplained:?}");
    let stale: Vec<_> = named.iter().filter(|t| !added.contains(*t)).collect();
    assert!(stale.is_empty(), "HELM_GRANTED_FOR names what helmDeployRules no longer grant: {stale:?}");
    c.shutdown().await;
}
